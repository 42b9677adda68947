//! Whether alloctrace may trace at all (root or the capabilities uprobes need), and whether its
//! real user may trace a given process or every process (the kernel's ptrace rule).
use std::fs;

use super::TargetError;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Root, or the capabilities loading and attaching uprobe programs needs: CAP_BPF and
/// CAP_PERFMON are not enough on 6.x kernels, where opening a uprobe perf event as non-root
/// is refused without CAP_SYS_ADMIN (measured: EACCES with only the first two).
pub fn check_privileges() -> Result<(), TargetError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let need = (1u64 << CAP_BPF) | (1u64 << CAP_PERFMON) | (1u64 << CAP_SYS_ADMIN);
    if caps & need == need {
        Ok(())
    } else {
        Err(TargetError::NotPrivileged)
    }
}

const CAP_SYS_PTRACE: u32 = 19;

/// The user and group that ran alloctrace: its real ids, which neither a capability-holding
/// copy (whose effective ids stay the user's anyway) nor a setuid one changes.
pub fn real_ids() -> (u32, u32) {
    // SAFETY: getuid and getgid have no preconditions and cannot fail.
    unsafe { (libc::getuid(), libc::getgid()) }
}

/// One of alloctrace's capability sets (`CapEff`, `CapPrm`) as /proc/self/status shows it.
fn own_caps(set: &str) -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(set)?.strip_prefix(':'))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

/// Whether the invoking user may look into any process: root, or CAP_SYS_PTRACE held,
/// effective or only permitted (a process can raise a permitted capability at will).
fn may_inspect_anyone() -> bool {
    let ptrace = 1u64 << CAP_SYS_PTRACE;
    real_ids().0 == 0 || (own_caps("CapEff") | own_caps("CapPrm")) & ptrace != 0
}

/// Refuses system-wide mode unless the real user is root or holds CAP_SYS_PTRACE: it shows
/// every user's allocations and code addresses, which only those may read (the capabilities
/// that load the probes, CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN, do not say whose processes
/// their holder may inspect).
pub fn check_system_wide() -> Result<(), TargetError> {
    if may_inspect_anyone() {
        Ok(())
    } else {
        Err(TargetError::SystemWide)
    }
}

/// Refuses `--pid` of a process alloctrace's real user could not inspect with ptrace: the
/// kernel's rule PTRACE_MODE_READ_REALCREDS, as asked of the kernel itself with kcmp(2),
/// which applies exactly that check to both processes (ours always passes). It is the rule
/// and nothing like it: the target's real, effective and saved uids and gids all the
/// caller's real ones, the target dumpable, no capability of the target's beyond the
/// caller's permitted set, any security module's say, or CAP_SYS_PTRACE.
///
/// Why not a check of our own, or a read of /proc/PID/maps: Uid:/Gid: in /proc/PID/status
/// are easy to compare, but dumpability and the capability subset are not shown there; and
/// /proc/PID/maps is a wrong oracle with the capabilities alloctrace is given (the kernel
/// lets CAP_PERFMON or CAP_SYS_ADMIN read any process's maps: measured on 6.18 as nobody,
/// with either capability alone, on a root process), and it uses the file-system ids, not
/// the real ones. Root (real uid 0) passes as before. On a kernel without kcmp
/// (CONFIG_KCMP) only root or CAP_SYS_PTRACE pass: refusing is the safe side.
pub fn check_may_trace(pid: u32) -> Result<(), TargetError> {
    if real_ids().0 == 0 {
        return Ok(());
    }
    const KCMP_VM: libc::c_long = 1;
    // SAFETY: kcmp takes two pids, a type and two type-specific values (unused for KCMP_VM);
    // it reads and writes no memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            std::process::id() as libc::pid_t,
            pid as libc::pid_t,
            KCMP_VM,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    };
    if r >= 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ESRCH) => Err(TargetError::NoSuchPid(pid)),
        // A permitted CAP_SYS_PTRACE not raised into the effective set.
        _ if may_inspect_anyone() => Ok(()),
        Some(libc::EPERM) => Err(why_not_traceable(pid)),
        _ => Err(TargetError::AccessCheck { pid, source: err }),
    }
}

/// Which part of the rule refused `pid`, for the error: another user, another group, or
/// (ids the same) not dumpable or more privileged than the caller.
fn why_not_traceable(pid: u32) -> TargetError {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    // Real, effective and saved ids (the fourth is the file-system id).
    let ids = |key: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| {
                v.split_ascii_whitespace()
                    .take(3)
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (uid, gid) = real_ids();
    if let Some(&other) = ids("Uid:").iter().find(|&&u| u != uid) {
        return TargetError::OtherUser { pid, uid: other };
    }
    if let Some(&other) = ids("Gid:").iter().find(|&&g| g != gid) {
        return TargetError::OtherGroup { pid, gid: other };
    }
    TargetError::Undumpable(pid)
}
