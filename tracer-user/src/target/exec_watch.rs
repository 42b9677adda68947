//! What a traced process executes while traced: each exec said once, with what its new
//! program is traced through (or why it is unseen), and whether it may still be shown (not
//! setuid).
use std::fs;
use std::sync::{Arc, Mutex};

use super::privilege::{check_may_trace, real_ids};
use super::TargetError;
use crate::process::mmap_watch::{ExecLog, ExecProbed, ExecSeen};

/// Notices when a traced process replaces its program (execve), says so once per exec, and
/// what tracing goes on through: the new program's allocators are resolved again and their
/// sets attached (`probe::reprobe`, by the caller, which fills each exec's `probed`), or its
/// allocations are unseen from then on (none can be probed). Execs come from the mmap watch's
/// records (`ExecLog`: an exec and exit within one interval is not missed), or, without it,
/// from `/proc/PID/exe` at each look.
pub struct ExeWatch {
    pid: u32,
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
pub(crate) fn permitted_after_exec(pid: u32, exe: Option<&str>, now: bool) -> bool {
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

impl ExeWatch {
    /// Watches `pid`; `log` is the mmap watch's record of its execs, if there is a watch.
    pub fn new(pid: u32, log: Option<Arc<Mutex<ExecLog>>>, start_ns: u64) -> ExeWatch {
        let own = exe_of("self").map(|(id, _)| id);
        let cur = exe_of(&pid.to_string()).filter(|(id, _)| Some(*id) != own);
        ExeWatch {
            pid,
            start_ns,
            recorded: log.is_some(),
            log: log.unwrap_or_default(),
            polled: cur.as_ref().map(|(id, _)| *id),
            handled: 0,
            current: cur.map(|(_, path)| path),
            unseen: None,
            revoked: false,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The log of its execs, whose `probed` the caller fills (`probe::reprobe`).
    pub fn log(&mut self) -> Arc<Mutex<ExecLog>> {
        if !self.recorded {
            self.poll();
        }
        self.log.clone()
    }

    /// None of the allocators of `program`, which it runs from the start of the run, can be
    /// probed (said at start-up): unseen from the start.
    pub fn unseen_from_start(&mut self, program: String, reason: String) {
        self.unseen = Some(crate::model::Unseen {
            since: std::time::Duration::ZERO,
            program,
            reason,
        });
    }

    /// A started process (`--follow-forks`) runs its parent's program until its first exec,
    /// which is then announced like any other, not taken for a launch.
    pub fn started_with(&mut self, program: String) {
        self.current = Some(program);
    }

    /// Lines to print for the execs seen since the last call, each decided (`probed`) by the
    /// caller; one not decided yet waits for the next call. `last` is the run's last look: no
    /// exec is left undecided.
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
            let is_last = i + 1 == log.execs.len();
            let program = exec
                .exe
                .clone()
                .or_else(|| {
                    is_last
                        .then(|| exe_of(&self.pid.to_string()).map(|e| e.1))
                        .flatten()
                })
                .unwrap_or_else(|| exec.comm.clone());
            let probed = match (&exec.probed, last) {
                (Some(p), _) => p.clone(),
                (None, false) => break,
                (None, true) => {
                    ExecProbed::Unseen("the run ended before its allocators could be probed".into())
                }
            };
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
            let reason = match probed {
                ExecProbed::Through { sets, late_us } => {
                    if !launch {
                        let late = match late_us {
                            Some(us) => format!(
                                " (probes added {:.2} ms after the exec: its allocations in \
                                 between were not seen)",
                                us as f64 / 1e3
                            ),
                            None => String::new(),
                        };
                        lines.push(format!(
                            "alloctrace: pid {} executed {program}{was}: still tracing it, \
                             through {}{late}; the sites of both programs are kept",
                            self.pid,
                            sets.join(", ")
                        ));
                    }
                    continue;
                }
                ExecProbed::Unseen(reason) => reason,
            };
            // A launched command whose allocators were found unprobeable at start-up: said then.
            if launch && self.unseen.is_some() {
                continue;
            }
            lines.push(format!(
                "alloctrace: pid {} executed {program}{was}: {reason}: its allocations are \
                 unseen from here on",
                self.pid
            ));
            self.unseen.get_or_insert(crate::model::Unseen {
                since: std::time::Duration::from_nanos(exec.time.saturating_sub(self.start_ns)),
                program,
                reason,
            });
        }
        // What is decided is dropped: a process that execs again and again costs no more
        // memory, nor time per look.
        log.execs.drain(..self.handled);
        self.handled = 0;
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
            probed: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exe_watch_announces_every_exec_and_marks_a_program_without_allocator_unseen() {
        let log = Arc::new(Mutex::new(ExecLog::default()));
        // No such process: everything is decided from the records, as after its exit.
        let mut w = ExeWatch::new(999_999_999, Some(log.clone()), 1_000);
        let exec = |time, exe: &str, probed: Option<ExecProbed>| ExecSeen {
            time,
            comm: "x".into(),
            exe: Some(exe.into()),
            probed,
        };
        let through = |late_us| {
            Some(ExecProbed::Through {
                sets: vec!["glibc in /lib/libc.so.6".into()],
                late_us,
            })
        };
        {
            let mut l = log.lock().unwrap();
            // The launch: not announced.
            l.execs.push(exec(2_000, "/bin/sh", through(None)));
            l.execs
                .push(exec(3_000, "/usr/bin/dynamic", through(Some(1500))));
            l.execs.push(exec(
                500_001_000,
                "/tmp/static",
                Some(ExecProbed::Unseen("statically linked and stripped".into())),
            ));
            l.execs.push(exec(600_000_000, "/tmp/undecided", None));
        }
        // An undecided exec waits, unless the run is over.
        let lines = w.check(false);
        assert_eq!(
            lines,
            [
                "alloctrace: pid 999999999 executed /usr/bin/dynamic (was /bin/sh): still \
                 tracing it, through glibc in /lib/libc.so.6 (probes added 1.50 ms after the \
                 exec: its allocations in between were not seen); the sites of both programs \
                 are kept",
                "alloctrace: pid 999999999 executed /tmp/static (was /usr/bin/dynamic): \
                 statically linked and stripped: its allocations are unseen from here on"
            ]
        );
        let unseen = w.unseen.clone().expect("marked unseen");
        assert_eq!(unseen.since, std::time::Duration::from_millis(500));
        assert_eq!(unseen.program, "/tmp/static");
        assert_eq!(log.lock().unwrap().execs.len(), 1);
        let lines = w.check(true);
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].contains("the run ended before its allocators could be probed"),
            "{lines:?}"
        );
        // Decided execs are dropped; nothing is said twice; the first unseen mark stays.
        assert!(log.lock().unwrap().execs.is_empty());
        assert!(w.check(true).is_empty());
        assert_eq!(w.unseen.unwrap().program, "/tmp/static");
    }

    #[test]
    fn a_launch_unseen_from_the_start_is_not_said_again() {
        let log = Arc::new(Mutex::new(ExecLog::default()));
        let mut w = ExeWatch::new(999_999_999, Some(log.clone()), 0);
        w.unseen_from_start("/tmp/static".into(), "why".into());
        log.lock().unwrap().execs.push(ExecSeen {
            time: 5,
            comm: "static".into(),
            exe: Some("/tmp/static".into()),
            probed: Some(ExecProbed::Unseen("why".into())),
        });
        assert!(w.check(false).is_empty());
        assert_eq!(w.unseen.unwrap().since, std::time::Duration::ZERO);
    }
}
