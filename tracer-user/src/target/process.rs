//! Whether a pid is a process alloctrace can trace (not a thread, itself, or a zombie), and
//! whether one ended while tracing was starting.
use std::fs;

use super::TargetError;

/// Refuses a pid that is not a process of its own: a thread's id (the probes and the
/// report go by process), alloctrace's own, or a zombie. Returns the thread to read the
/// process's mappings through: the pid itself, or for a process whose main thread has exited
/// while others live, one of those (the exited one has no mappings left; see `Scope::Only`
/// for how such a process is probed).
pub fn check_process(pid: u32) -> Result<u32, TargetError> {
    if pid == std::process::id() {
        return Err(TargetError::SelfPid(pid));
    }
    let status = match fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(s) => s,
        // mapped_files names the missing pid.
        Err(_) => return Ok(pid),
    };
    let tgid = status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse::<u32>().ok());
    match tgid {
        Some(tgid) if tgid != pid => return Err(TargetError::Thread { pid, tgid }),
        _ => {}
    }
    if !task_state(&format!("/proc/{pid}/stat")).is_some_and(exited_state) {
        return Ok(pid);
    }
    let live = fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|&tid| {
            tid != pid
                && task_state(&format!("/proc/{pid}/task/{tid}/stat"))
                    .is_some_and(|s| !exited_state(s))
        });
    match live {
        Some(tid) => Ok(tid),
        None => Err(TargetError::Zombie(pid)),
    }
}

/// The state letter of a `/proc/.../stat` file (after the command name, which may hold
/// spaces and parentheses).
fn task_state(stat_path: &str) -> Option<u8> {
    let stat = fs::read(stat_path).ok()?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    stat.get(close + 2).copied()
}

/// Zombie or dead: the task has exited.
fn exited_state(state: u8) -> bool {
    matches!(state, b'Z' | b'X' | b'x')
}

/// Whether a failure to attach to `pid` came from the process being gone (the kernel's ESRCH,
/// or no live process with that pid now).
pub fn exited_during_start(pid: u32, err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.raw_os_error() == Some(libc::ESRCH) {
                return true;
            }
        }
        cur = e.source();
    }
    task_state(&format!("/proc/{pid}/stat")).is_none_or(exited_state)
}
