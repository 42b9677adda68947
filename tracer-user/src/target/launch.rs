//! Launch mode without a race: the command is forked first and waits on a pipe until the
//! probes are attached to its pid, then execs, so not one allocation of its start-up is missed
//! (BCC memleak's `-c` starts the command before attaching).
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot launch {cmd}: {source}")]
    Os { cmd: String, source: io::Error },
    #[error("an argument of the command contains a NUL byte")]
    Nul,
    #[error("cannot execute {cmd}: {source}")]
    Exec { cmd: String, source: io::Error },
    #[error("cannot run {cmd} as the user who started alloctrace: {source}")]
    Demote { cmd: String, source: io::Error },
}

/// A forked command held before its exec.
pub struct Held {
    pub pid: u32,
    cmd: String,
    go: Option<OwnedFd>,
    exec_err: OwnedFd,
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned these two descriptors, owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The credentials a launched command runs with when alloctrace was not started by root: the
/// real user's and group's, with no capability and no way to gain one (`no_new_privs`), as
/// strace and gdb run theirs. A capability-holding or setuid copy of alloctrace must not hand
/// its privileges to the command, nor let a setuid program it runs elevate under the tracer.
/// Supplementary groups are left as they are: exec (of a setuid or capability-holding
/// alloctrace too) never changes them, so they are already the real user's own.
#[derive(Clone, Copy)]
struct Demote {
    uid: libc::uid_t,
    gid: libc::gid_t,
}

impl Demote {
    /// None when the real user is root (under sudo, say): the command runs as alloctrace does.
    fn for_caller() -> Option<Demote> {
        let (uid, gid) = crate::target::real_ids();
        (uid != 0).then_some(Demote { uid, gid })
    }

    /// In the forked child, before exec: only async-signal-safe system calls. Returns the
    /// errno of the first that fails.
    ///
    /// # Safety
    /// Call only in the child of a fork, before exec.
    unsafe fn apply(self) -> Result<(), i32> {
        // _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set; all zero clears every set.
        #[repr(C)]
        struct CapHeader {
            version: u32,
            pid: libc::c_int,
        }
        let header = CapHeader {
            version: 0x2008_0522,
            pid: 0,
        };
        let data = [0u32; 6];
        let errno = || unsafe { *libc::__errno_location() };
        // SAFETY (each call): plain system calls on our own process with valid arguments.
        unsafe {
            // Ambient capabilities would survive the exec of an ordinary program; EINVAL on
            // kernels before 4.3, which have none.
            if libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            ) != 0
                && errno() != libc::EINVAL
            {
                return Err(errno());
            }
            // Group first: once the uid is the user's, changing the gid may be refused.
            if libc::setresgid(self.gid, self.gid, self.gid) != 0 {
                return Err(errno());
            }
            if libc::setresuid(self.uid, self.uid, self.uid) != 0 {
                return Err(errno());
            }
            // A capability-holding alloctrace keeps its capabilities across the setresuid
            // above (its uids did not change): drop them all.
            if libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()) != 0 {
                return Err(errno());
            }
            // No setuid bit or file capability of the command's takes effect.
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(errno());
            }
        }
        Ok(())
    }
}

/// Forks `exe` with `argv`; the child blocks until [`Held::release`], then takes the real
/// user's credentials (see [`Demote`]) and execs. Must be called while the process is
/// single-threaded or with care: the child only calls async-signal-safe functions (read,
/// the credential calls, execv, write, _exit).
pub fn hold(exe: &Path, argv: &[OsString]) -> Result<Held, SpawnError> {
    let demote = Demote::for_caller();
    let cmd = argv
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let os = |source| SpawnError::Os {
        cmd: cmd.clone(),
        source,
    };
    let c_exe = CString::new(exe.as_os_str().as_bytes()).map_err(|_| SpawnError::Nul)?;
    let c_args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| SpawnError::Nul))
        .collect::<Result<_, _>>()?;
    let mut c_argv: Vec<*const libc::c_char> = c_args.iter().map(|a| a.as_ptr()).collect();
    c_argv.push(std::ptr::null());
    let (go_r, go_w) = pipe().map_err(os)?;
    let (err_r, err_w) = pipe().map_err(os)?;
    // SAFETY: fork has no preconditions; the child below touches only async-signal-safe calls
    // and memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(os(io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: child side. Blocks until the parent writes (probes attached) or closes the
        // pipe (it failed or died): then exec, or leave without running the command.
        unsafe {
            // The parent's ends, inherited by the fork: holding `go_w` would keep the read
            // below from ever seeing EOF if the parent gives up.
            libc::close(go_w.as_raw_fd());
            libc::close(err_r.as_raw_fd());
            let mut b = 0u8;
            if libc::read(go_r.as_raw_fd(), (&raw mut b).cast(), 1) != 1 {
                libc::_exit(127);
            }
            // A failure is reported as the negated errno, told apart from exec's own.
            if let Some(d) = demote {
                if let Err(errno) = d.apply() {
                    let neg = -errno;
                    libc::write(err_w.as_raw_fd(), (&raw const neg).cast(), size_of::<i32>());
                    libc::_exit(127);
                }
            }
            libc::execv(c_exe.as_ptr(), c_argv.as_ptr());
            let errno = *libc::__errno_location();
            libc::write(
                err_w.as_raw_fd(),
                (&raw const errno).cast(),
                size_of::<i32>(),
            );
            libc::_exit(127);
        }
    }
    drop(go_r);
    drop(err_w);
    Ok(Held {
        pid: pid as u32,
        cmd,
        go: Some(go_w),
        exec_err: err_r,
    })
}

impl Held {
    /// Lets the command exec, and reports whether the exec succeeded: the error pipe is
    /// close-on-exec, so it reads EOF on success and the child's errno on failure.
    pub fn release(&mut self) -> Result<(), SpawnError> {
        let go = self.go.take().expect("released once");
        // SAFETY: writes one byte from a local to a pipe we own.
        let n = unsafe { libc::write(go.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        if n != 1 {
            return Err(SpawnError::Os {
                cmd: self.cmd.clone(),
                source: io::Error::last_os_error(),
            });
        }
        drop(go);
        let mut errno = 0i32;
        // SAFETY: reads at most 4 bytes into a local i32.
        let n = unsafe {
            libc::read(
                self.exec_err.as_raw_fd(),
                (&raw mut errno).cast(),
                size_of::<i32>(),
            )
        };
        if n == size_of::<i32>() as isize {
            self.reap();
            let cmd = self.cmd.clone();
            return Err(if errno < 0 {
                SpawnError::Demote {
                    cmd,
                    source: io::Error::from_raw_os_error(-errno),
                }
            } else {
                SpawnError::Exec {
                    cmd,
                    source: io::Error::from_raw_os_error(errno),
                }
            });
        }
        Ok(())
    }

    /// Waits for the child to end and returns its exit code as a shell would report it.
    pub fn reap(&self) -> i32 {
        let mut status = 0;
        loop {
            // SAFETY: waits for our own child; status is a local.
            let r = unsafe { libc::waitpid(self.pid as i32, &mut status, 0) };
            if r == -1 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if r == -1 {
                return 1;
            }
            break;
        }
        exit_code(status)
    }

    /// The exit code if the child has already ended, without blocking.
    pub fn try_reap(&self) -> Option<i32> {
        let mut status = 0;
        // SAFETY: as in `reap`.
        let r = unsafe { libc::waitpid(self.pid as i32, &mut status, libc::WNOHANG) };
        (r == self.pid as i32).then(|| exit_code(status))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Never released (set-up failed): closing the pipe makes the child exit unrun.
        if self.go.take().is_some() {
            self.reap();
        }
    }
}

fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_child_runs_only_when_released() {
        let mut h = hold(
            Path::new("/bin/sh"),
            &["sh".into(), "-c".into(), "exit 7".into()],
        )
        .unwrap();
        assert_eq!(h.try_reap(), None, "the child ran before release");
        h.release().unwrap();
        assert_eq!(h.reap(), 7);
    }

    /// In a forked child (the tests run as root), taking nobody's credentials leaves every
    /// uid and gid nobody's, no capability in any set, and no_new_privs on.
    #[test]
    fn demoting_drops_ids_capabilities_and_new_privileges() {
        // SAFETY: the child below only makes system calls and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            // SAFETY: in the child, as apply requires.
            let ok = unsafe {
                let d = Demote {
                    uid: 65534,
                    gid: 65534,
                };
                let applied = d.apply().is_ok();
                let (mut r, mut e, mut s) = (0, 0, 0);
                libc::getresuid(&mut r, &mut e, &mut s);
                let uids = [r, e, s] == [65534; 3];
                libc::getresgid(&mut r, &mut e, &mut s);
                let gids = [r, e, s] == [65534; 3];
                let nnp = libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1;
                let mut header = [0x2008_0522u32, 0];
                let mut data = [1u32; 6];
                let caps = libc::syscall(libc::SYS_capget, header.as_mut_ptr(), data.as_mut_ptr())
                    == 0
                    && data == [0; 6];
                applied && uids && gids && nnp && caps
            };
            // SAFETY: leaves the child without running the test harness's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(
            exit_code(status),
            0,
            "the demoted child kept an id, a capability or the right to gain one"
        );
    }

    #[test]
    fn exec_failure_is_reported() {
        let mut h = hold(Path::new("/nonexistent/prog"), &["prog".into()]).unwrap();
        let e = h.release().unwrap_err().to_string();
        assert!(
            e.contains("cannot execute prog") && e.contains("No such file"),
            "{e}"
        );
    }

    #[test]
    fn dropping_unreleased_child_does_not_run_it() {
        let h = hold(
            Path::new("/bin/sh"),
            &["sh".into(), "-c".into(), "exit 7".into()],
        )
        .unwrap();
        let pid = h.pid;
        drop(h);
        // SAFETY: kill with signal 0 only checks existence.
        assert_eq!(
            unsafe { libc::kill(pid as i32, 0) },
            -1,
            "child still exists after drop"
        );
    }
}
