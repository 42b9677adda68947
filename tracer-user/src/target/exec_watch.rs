//! What a traced process executes while traced: each exec said once, and whether its new
//! program is still traced (maps the probed libc) or may still be shown (not setuid).
use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::command::is_static_elf;
use super::privilege::{check_may_trace, real_ids};
use super::TargetError;
use crate::process::mmap_watch::{ExecLog, ExecSeen};
use crate::process::procmaps::MapsLine;

/// Notices when a traced process replaces its program (execve), says so once per exec, and
/// whether tracing goes on: the uprobes are on one libc file, so they follow the process into
/// a new program that maps that libc again, and see nothing of one that does not (a
/// statically linked program, or one on another libc). Execs come from the mmap watch's
/// records (`ExecLog`: an exec and exit within one interval is not missed), or, without it,
/// from `/proc/PID/exe` at each look.
pub struct ExeWatch {
    pid: u32,
    /// (device, inode) of the probed libc.
    libc: (u64, u64),
    /// CLOCK_MONOTONIC nanoseconds at the start of the run.
    start_ns: u64,
    log: Arc<Mutex<ExecLog>>,
    /// Whether `log` is filled by the watch; if not, by polling `/proc/PID/exe`.
    recorded: bool,
    /// (device, inode) of the program last seen by polling.
    polled: Option<(u64, u64)>,
    /// Execs of the log dealt with.
    handled: usize,
    /// The program the process runs, as last announced; None for a launched command before
    /// its own exec (which is the launch, not announced unless its program is unseen).
    current: Option<String>,
    /// Looks at an exec's program that may not have mapped its libc yet (its loader was still
    /// at work).
    waited: u32,
    /// From when (and why) its allocations went unseen, for the report.
    pub unseen: Option<crate::model::Unseen>,
    /// It executed a program the real user may not trace (a setuid one): nothing of it may
    /// be shown any more.
    pub revoked: bool,
}

/// The reason a process is marked unseen once it ran a program its user may not trace.
pub const NOT_PERMITTED: &str = "not permitted after exec of a setuid program";

/// Whether the real user may still trace `pid` after it executed the program at `exe` (None:
/// no mapping of it was recorded): root always; else the kernel's rule (`check_may_trace`)
/// while `pid` still runs that program (`now`); for a program it has left, or once it has
/// exited, whether the file raises ids (setuid or setgid to another user or group). Without
/// the file's path (the kernel records nothing more of a process once a setuid exec made it
/// undumpable) nothing can be verified: not permitted, the safe side.
fn permitted_after_exec(pid: u32, exe: Option<&str>, now: bool) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (uid, gid) = real_ids();
    if uid == 0 {
        return true;
    }
    if now {
        match check_may_trace(pid) {
            Ok(()) => return true,
            Err(TargetError::NoSuchPid(_)) => {}
            Err(_) => return false,
        }
    }
    exe.is_some_and(|path| {
        fs::metadata(path).is_ok_and(|m| {
            !((m.mode() & libc::S_ISUID != 0 && m.uid() != uid)
                || (m.mode() & libc::S_ISGID != 0 && m.gid() != gid))
        })
    })
}

/// (device, inode) of a file, (0, 0) if it cannot be read.
pub fn file_id(path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).map_or((0, 0), |m| (m.dev(), m.ino()))
}

/// CLOCK_MONOTONIC in nanoseconds: `Instant`'s clock, and the mmap watch's records'.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes a timespec into the pointer it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec.max(0) as u64 * 1_000_000_000 + ts.tv_nsec.max(0) as u64
}

fn exe_of(pid: &str) -> Option<((u64, u64), String)> {
    use std::os::unix::fs::MetadataExt;
    let link = format!("/proc/{pid}/exe");
    let m = fs::metadata(&link).ok()?;
    let path = fs::read_link(&link).ok()?.display().to_string();
    Some(((m.dev(), m.ino()), path))
}

/// Whether `pid` maps the file (device, inode) now.
fn maps_file(pid: u32, id: (u64, u64)) -> bool {
    let Ok(maps) = fs::read(format!("/proc/{pid}/maps")) else {
        return false;
    };
    let found = MapsLine::all(&maps).any(|l| (l.dev, l.inode) == id);
    found
}

/// Whether the program `pid` runs now is a statically linked ELF.
fn runs_static(pid: u32) -> bool {
    fs::read(format!("/proc/{pid}/exe"))
        .is_ok_and(|d| d.starts_with(b"\x7fELF") && is_static_elf(&d))
}

impl ExeWatch {
    /// Watches `pid`, traced through uprobes on `libc`; `log` is the mmap watch's record of
    /// its execs, if there is a watch.
    pub fn new(pid: u32, libc: &Path, log: Option<Arc<Mutex<ExecLog>>>, start_ns: u64) -> ExeWatch {
        let libc = file_id(libc);
        let own = exe_of("self").map(|(id, _)| id);
        let cur = exe_of(&pid.to_string()).filter(|(id, _)| Some(*id) != own);
        ExeWatch {
            pid,
            libc,
            start_ns,
            recorded: log.is_some(),
            log: log.unwrap_or_default(),
            polled: cur.as_ref().map(|(id, _)| *id),
            handled: 0,
            current: cur.map(|(_, path)| path),
            waited: 0,
            unseen: None,
            revoked: false,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A started process (`--follow-forks`) runs its parent's program until its first exec,
    /// which is then announced like any other, not taken for a launch.
    pub fn started_with(&mut self, program: String) {
        self.current = Some(program);
    }

    /// Lines to print for the execs seen since the last call. `last` is the run's last look:
    /// no exec is left undecided.
    pub fn check(&mut self, last: bool) -> Vec<String> {
        if !self.recorded {
            self.poll();
        }
        let log = self.log.clone();
        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
        let mut lines = Vec::new();
        while self.handled < log.execs.len() {
            let i = self.handled;
            let exec = &log.execs[i];
            let next = log.execs.get(i + 1).map(|e| e.time);
            let is_last = next.is_none();
            let in_range = |t: u64| t > exec.time && next.is_none_or(|n| t < n);
            let program = exec
                .exe
                .clone()
                .or_else(|| {
                    is_last
                        .then(|| exe_of(&self.pid.to_string()).map(|e| e.1))
                        .flatten()
                })
                .unwrap_or_else(|| exec.comm.clone());
            let mut maps_libc = log.libc_mapped.iter().any(|&t| in_range(t));
            let mut static_elf = false;
            if !maps_libc && is_last {
                // The records may lag behind the process: it may have mapped libc since.
                maps_libc = maps_file(self.pid, self.libc);
                static_elf = runs_static(self.pid)
                    || exec.exe.as_ref().is_some_and(|p| {
                        fs::read(p).is_ok_and(|d| d.starts_with(b"\x7fELF") && is_static_elf(&d))
                    });
                let alive = Path::new(&format!("/proc/{}/exe", self.pid)).exists();
                // A dynamically linked program's loader maps its libc within moments of the
                // exec: give it until the next look.
                if !maps_libc && alive && !static_elf && !last && self.waited == 0 {
                    self.waited += 1;
                    break;
                }
            }
            self.waited = 0;
            self.handled += 1;
            let was = match &self.current {
                Some(old) => format!(" (was {old})"),
                None => String::new(),
            };
            let launch = self.current.is_none();
            self.current = Some(program.clone());
            if !self.revoked && !permitted_after_exec(self.pid, exec.exe.as_deref(), is_last) {
                self.revoked = true;
                lines.push(format!(
                    "alloctrace: pid {} executed {program}{was}: {NOT_PERMITTED}: no longer \
                     counted, and left out of the report (what it allocated after the exec \
                     cannot be told apart from what it allocated before)",
                    self.pid
                ));
                self.unseen = Some(crate::model::Unseen {
                    since: std::time::Duration::from_nanos(exec.time.saturating_sub(self.start_ns)),
                    program,
                    reason: NOT_PERMITTED.to_string(),
                });
                continue;
            }
            if maps_libc {
                if !launch {
                    lines.push(format!(
                        "alloctrace: pid {} executed {program}{was}: still tracing it; the \
                         sites of both programs are kept",
                        self.pid
                    ));
                }
                continue;
            }
            let reason = if static_elf {
                "it maps no libc alloctrace probes (statically linked)"
            } else {
                "it maps no libc alloctrace probes (statically linked, or on another libc?)"
            };
            lines.push(format!(
                "alloctrace: pid {} executed {program}{was}: {reason}: its allocations are \
                 unseen from here on",
                self.pid
            ));
            self.unseen.get_or_insert(crate::model::Unseen {
                since: std::time::Duration::from_nanos(exec.time.saturating_sub(self.start_ns)),
                program,
                reason: reason.to_string(),
            });
        }
        // What is decided is dropped: a process that execs again and again costs no more
        // memory, nor time per look. Mappings before the first exec left are of no use.
        log.execs.drain(..self.handled);
        self.handled = 0;
        match log.execs.first().map(|e| e.time) {
            Some(first) => log.libc_mapped.retain(|&t| t > first),
            None => log.libc_mapped.clear(),
        }
        lines
    }

    /// Without the watch's records: an exec is a change of `/proc/PID/exe`, seen now.
    fn poll(&mut self) {
        let own = exe_of("self").map(|(id, _)| id);
        let Some((id, path)) = exe_of(&self.pid.to_string()) else {
            return;
        };
        if Some(id) == own || Some(id) == self.polled {
            return;
        }
        self.polled = Some(id);
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.execs.push(ExecSeen {
            time: monotonic_ns(),
            comm: String::new(),
            exe: Some(path),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exe_watch_announces_every_exec_and_marks_a_program_without_libc_unseen() {
        let libc = (1, 2);
        let log = Arc::new(Mutex::new(ExecLog::default()));
        // No such process: everything is decided from the records, as after its exit.
        let mut w = ExeWatch {
            pid: 999_999_999,
            libc,
            start_ns: 1_000,
            log: log.clone(),
            recorded: true,
            polled: None,
            handled: 0,
            current: None,
            waited: 0,
            unseen: None,
            revoked: false,
        };
        let exec = |time, exe: &str| ExecSeen {
            time,
            comm: "x".into(),
            exe: Some(exe.into()),
        };
        {
            let mut l = log.lock().unwrap();
            // The launch (sh maps libc): not announced.
            l.execs.push(exec(2_000, "/bin/sh"));
            l.libc_mapped.push(2_500);
            l.execs.push(exec(3_000, "/usr/bin/dynamic"));
            l.libc_mapped.push(3_500);
            l.execs.push(exec(500_001_000, "/tmp/static"));
        }
        let lines = w.check(true);
        assert_eq!(
            lines,
            [
                "alloctrace: pid 999999999 executed /usr/bin/dynamic (was /bin/sh): still \
                 tracing it; the sites of both programs are kept",
                "alloctrace: pid 999999999 executed /tmp/static (was /usr/bin/dynamic): it maps \
                 no libc alloctrace probes (statically linked, or on another libc?): its \
                 allocations are unseen from here on"
            ]
        );
        let unseen = w.unseen.clone().expect("marked unseen");
        assert_eq!(unseen.since, std::time::Duration::from_millis(500));
        assert_eq!(unseen.program, "/tmp/static");
        // Decided execs are dropped; nothing is said twice.
        assert!(log.lock().unwrap().execs.is_empty());
        assert!(w.check(true).is_empty());
    }
}
