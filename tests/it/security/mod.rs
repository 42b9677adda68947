//! Who may trace what, and outputs that can neither hang alloctrace nor cancel each other.
//!
//! The privilege tests run a copy of alloctrace holding the capabilities the README
//! recommends (`setcap cap_bpf,cap_perfmon,cap_sys_admin+ep`) as nobody (`setpriv`), against
//! a root-owned process, in system-wide mode, on a setuid-root program it launches, and on a
//! process of nobody's own. The output tests run alloctrace as root with a FIFO nobody reads
//! and with an output on a full file system.
//!
//! Privileged: run with `cargo xtask test` (root, `ALLOCTRACE_BIN`, `--include-ignored`).
use std::ffi::{CString, OsString};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;

mod outputs;
mod privileges;

// =============================================================================================
// An unprivileged user with a capability-holding copy of alloctrace
// =============================================================================================

/// nobody's uid and primary gid.
fn nobody() -> (u32, u32) {
    let name = CString::new("nobody").unwrap();
    // SAFETY: getpwnam takes a NUL-terminated name; the record it returns is read at once,
    // before any other call could reuse its static storage (tests run one at a time).
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!pw.is_null(), "this system has no user nobody");
    // SAFETY: non-null, checked above.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

/// The first of `paths` that is a file; panics with `hint` when none is.
fn tool(paths: &[&str], hint: &str) -> PathBuf {
    paths
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("none of {paths:?} exists: {hint}"))
}

fn setpriv() -> PathBuf {
    tool(
        &["/usr/bin/setpriv", "/bin/setpriv"],
        "setpriv (util-linux) runs alloctrace as nobody",
    )
}

/// Why `dir` cannot hold the unprivileged copy, if it cannot: nobody must be able to reach it
/// (every directory above it searchable by others), and its file system must honour setuid
/// bits and file capabilities (not mounted nosuid).
fn unusable(dir: &Path) -> Option<String> {
    let dir = match dir.canonicalize() {
        Ok(d) => d,
        Err(e) => return Some(format!("{}: {e}", dir.display())),
    };
    for a in dir.ancestors() {
        let mode = std::fs::metadata(a)
            .map(|m| m.permissions().mode())
            .unwrap_or(0);
        if mode & 0o001 == 0 {
            return Some(format!("{} is not searchable by others", a.display()));
        }
    }
    let c = CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: a valid path and a statvfs to fill.
    if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Some(format!("statvfs {}: failed", dir.display()));
    }
    // SAFETY: filled by the successful call above.
    if unsafe { st.assume_init() }.f_flag & libc::ST_NOSUID != 0 {
        return Some(format!("{} is on a nosuid mount", dir.display()));
    }
    None
}

/// A directory nobody can execute from, holding `alloctrace` (a copy of `$ALLOCTRACE_BIN`
/// with CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN) and `out/`, a directory nobody owns.
struct Unprivileged {
    dir: tempfile::TempDir,
    bin: PathBuf,
    out: PathBuf,
    uid: u32,
    gid: u32,
}

impl Unprivileged {
    fn new() -> Unprivileged {
        Unprivileged::with_caps("cap_bpf,cap_perfmon,cap_sys_admin+ep")
    }

    /// The same, with the file capabilities `caps` (setcap syntax).
    fn with_caps(caps: &str) -> Unprivileged {
        let original = alloctrace_bin();
        let (uid, gid) = nobody();
        let candidates = [env!("CARGO_TARGET_TMPDIR"), "/var/tmp", "/tmp"];
        let mut rejected = Vec::new();
        let base = candidates.iter().find(|c| {
            let _ = std::fs::create_dir_all(c);
            match unusable(Path::new(c)) {
                None => true,
                Some(why) => {
                    rejected.push(why);
                    false
                }
            }
        });
        let base = base.unwrap_or_else(|| {
            panic!(
                "no directory to run a capability-holding alloctrace as nobody from: {rejected:?}"
            )
        });
        let dir = tempfile::Builder::new()
            .prefix("alloctrace-security-")
            .tempdir_in(base)
            .expect("create a temp dir");
        chmod(dir.path(), 0o755);
        let bin = dir.path().join("alloctrace");
        std::fs::copy(&original, &bin).expect("copy alloctrace");
        chmod(&bin, 0o755);
        let setcap = tool(
            &["/usr/sbin/setcap", "/sbin/setcap", "/usr/bin/setcap"],
            "setcap gives the copy its capabilities (Debian: apt-get install libcap2-bin; \
             `cargo xtask setup` installs it)",
        );
        let out = Command::new(&setcap)
            .arg(caps)
            .arg(&bin)
            .output()
            .expect("run setcap");
        assert!(
            out.status.success(),
            "setcap failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let c = CString::new(out.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid path.
        assert_eq!(
            unsafe { libc::chown(c.as_ptr(), uid, gid) },
            0,
            "chown out/"
        );
        Unprivileged {
            dir,
            bin,
            out,
            uid,
            gid,
        }
    }

    /// A copy of workload `name` in the directory, with `mode` (root owns it).
    fn copy_workload(&self, name: &str, mode: u32) -> PathBuf {
        let to = self.dir.path().join(name);
        std::fs::copy(workload(name), &to).expect("copy a workload");
        chmod(&to, mode);
        to
    }

    /// `setpriv` arguments that make the next program run as nobody, with no other group.
    fn as_nobody(&self) -> Vec<OsString> {
        vec![
            format!("--reuid={}", self.uid).into(),
            format!("--regid={}", self.gid).into(),
            "--clear-groups".into(),
        ]
    }

    /// Starts the capability-holding copy as nobody with `args`.
    /// `/bin/sh -c SCRIPT` run as nobody (started by the test, not by alloctrace).
    fn nobody_sh(&self, script: &str) -> Workload {
        let mut args: Vec<String> = self
            .as_nobody()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        args.extend(["/bin/sh".into(), "-c".into(), script.into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Workload::start_path(&setpriv(), &args, &[])
    }

    fn spawn(&self, args: &[OsString]) -> Tracer {
        let mut argv = self.as_nobody();
        argv.push(self.bin.clone().into());
        argv.extend(args.iter().cloned());
        let mut child = Command::new(setpriv())
            .args(&argv)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start setpriv");
        let (stdout, _) = Lines::collect(child.stdout.take().unwrap());
        let (stderr, _) = Lines::collect(child.stderr.take().unwrap());
        Tracer {
            child,
            stdout,
            stderr,
            args: args.to_vec(),
        }
    }

    /// Runs the copy as nobody to its end.
    fn run(&self, args: &[OsString]) -> Finished {
        self.spawn(args).wait(RUN_TIMEOUT)
    }
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// alloctrace run as nobody; killed if dropped while running.
struct Tracer {
    child: Child,
    stdout: Lines,
    stderr: Lines,
    args: Vec<OsString>,
}

impl Tracer {
    /// Waits for the line saying every probe is attached; panics with stderr otherwise.
    fn wait_until_tracing(&self) {
        if let Err(why) = self.stderr.wait_for(TRACING_PREFIX, STARTUP_TIMEOUT) {
            panic!(
                "nobody's alloctrace never said it was tracing: {why}\n{}",
                self.stderr.text()
            );
        }
    }

    fn wait(mut self, timeout: Duration) -> Finished {
        let timed_out = wait_timeout(&mut self.child, timeout).is_none();
        if timed_out {
            let _ = self.child.kill();
        }
        let status = self.child.wait().expect("wait for alloctrace");
        // The pipes close when alloctrace exits: waiting for a line nobody writes returns at
        // their end (or after 2 s), with everything collected.
        let _ = self.stderr.wait_for("\u{0}", Duration::from_secs(2));
        let _ = self.stdout.wait_for("\u{0}", Duration::from_secs(2));
        let finished = Finished {
            status,
            stdout: self.stdout.text(),
            stderr: self.stderr.text(),
            args: std::mem::take(&mut self.args),
        };
        assert!(
            !timed_out,
            "alloctrace did not exit within {timeout:?}; killed it\n{}",
            finished.describe()
        );
        finished
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}
