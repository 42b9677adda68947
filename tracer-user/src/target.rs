//! What to probe: the privileges and kernel support tracing needs, the libc a target really
//! maps, and the executable a launch command names.
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("alloctrace needs root, or CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN, to load and attach eBPF uprobes: run it with sudo")]
    NotPrivileged,
    #[error(
        "this kernel has no uprobe support ({0} is missing): alloctrace needs CONFIG_UPROBE_EVENTS"
    )]
    NoUprobes(&'static str),
    #[error("this kernel has no BTF ({0} is missing): alloctrace needs CONFIG_DEBUG_INFO_BTF")]
    NoBtf(&'static str),
    #[error("no process with pid {0}")]
    NoSuchPid(u32),
    #[error("pid {pid} is a thread of process {tgid}: trace the process, --pid {tgid}")]
    Thread { pid: u32, tgid: u32 },
    #[error("pid {0} is alloctrace itself")]
    SelfPid(u32),
    #[error("pid {0} is a kernel thread: it has no user-space allocator to trace")]
    KernelThread(u32),
    #[error("cannot read the mappings of pid {pid}: {source}")]
    Maps { pid: u32, source: std::io::Error },
    #[error("pid {pid} ({exe}) maps no libc (a statically linked binary?): alloctrace probes the allocator of a dynamically linked libc")]
    NoLibc { pid: u32, exe: String },
    #[error("command not found: {0}")]
    CommandNotFound(String),
    #[error("cannot execute {path}: {reason}")]
    NotExecutable { path: String, reason: String },
    #[error("{0} is statically linked: it maps no libc whose allocator alloctrace could probe")]
    StaticBinary(String),
    #[error("cannot find the libc alloctrace itself uses in /proc/self/maps")]
    NoOwnLibc,
    #[error("pid {pid} belongs to another user (uid {uid}): {TRACE_RULE}")]
    OtherUser { pid: u32, uid: u32 },
    #[error("pid {pid} runs with another group (gid {gid}): {TRACE_RULE}")]
    OtherGroup { pid: u32, gid: u32 },
    #[error("pid {0} is not dumpable or holds capabilities its user lacks (a setuid or capability-holding program, or one that made itself undumpable): {TRACE_RULE}")]
    Undumpable(u32),
    #[error("cannot tell whether you may trace pid {pid}: kcmp(2) failed ({source}); run alloctrace as root or with CAP_SYS_PTRACE")]
    AccessCheck { pid: u32, source: std::io::Error },
    #[error("system-wide mode traces every user's processes: it needs root (real uid 0) or CAP_SYS_PTRACE (e.g. setcap cap_bpf,cap_perfmon,cap_sys_admin,cap_sys_ptrace+ep); trace your own processes with --pid PID or -- CMD")]
    SystemWide,
}

/// How every refusal of a target ends: the rule, and what lifts it.
const TRACE_RULE: &str =
    "alloctrace traces only processes its real user could ptrace; CAP_SYS_PTRACE allows others";

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

pub fn check_kernel() -> Result<(), TargetError> {
    const UPROBE_PMU: &str = "/sys/bus/event_source/devices/uprobe";
    const BTF: &str = "/sys/kernel/btf/vmlinux";
    if !Path::new(UPROBE_PMU).exists() {
        return Err(TargetError::NoUprobes(UPROBE_PMU));
    }
    if !Path::new(BTF).exists() {
        return Err(TargetError::NoBtf(BTF));
    }
    Ok(())
}

/// Whether a mapped file is the C library (glibc's `libc.so.6`, older `libc-2.x.so`, musl's
/// `libc.so`/`ld-musl-*.so.1`).
fn is_libc(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name == "libc.so.6"
        || name == "libc.so"
        || (name.starts_with("libc-") && name.ends_with(".so"))
        || (name.starts_with("ld-musl-") && name.ends_with(".so.1"))
}

/// Refuses a pid that is not a process of its own: a thread's id (the probes and the
/// report go by process), or alloctrace's own.
pub fn check_process(pid: u32) -> Result<(), TargetError> {
    if pid == std::process::id() {
        return Err(TargetError::SelfPid(pid));
    }
    let status = match fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(s) => s,
        // libc_of_pid names the missing pid.
        Err(_) => return Ok(()),
    };
    let tgid = status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse::<u32>().ok());
    match tgid {
        Some(tgid) if tgid != pid => Err(TargetError::Thread { pid, tgid }),
        _ => Ok(()),
    }
}

/// The libc `pid` really maps, as a path alloctrace can open that leads to that very file
/// (checked by device and inode): through `/proc/PID/root` (a process in another mount
/// namespace gets its own copy probed), as printed (a chrooted process: the kernel prints the
/// path from our root), or through `/proc/PID/map_files` (deleted or replaced on disk since it
/// was mapped, or reachable no other way).
pub fn libc_of_pid(pid: u32) -> Result<PathBuf, TargetError> {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    if pid == 0 || !proc_dir.exists() {
        return Err(TargetError::NoSuchPid(pid));
    }
    let maps = fs::read_to_string(proc_dir.join("maps")).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            TargetError::NoSuchPid(pid)
        } else {
            TargetError::Maps { pid, source }
        }
    })?;
    if maps.trim().is_empty() {
        // Kernel threads have no mm: an empty maps file (and no exe link).
        if fs::read_link(proc_dir.join("exe")).is_err() {
            return Err(TargetError::KernelThread(pid));
        }
    }
    for line in maps.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(range), Some(_perms), Some(_off), Some(dev), Some(inode)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        let rest: Vec<&str> = fields.collect();
        if rest.is_empty() {
            continue;
        }
        let deleted = rest.last() == Some(&"(deleted)");
        let path = if deleted {
            rest[..rest.len() - 1].join(" ")
        } else {
            rest.join(" ")
        };
        if !path.starts_with('/') || !is_libc(&path) {
            continue;
        }
        let map_file = proc_dir.join("map_files").join(range);
        if deleted {
            return Ok(map_file);
        }
        // The kernel prints the path as seen from *our* root when it can (a chrooted process's
        // libc shows as /srv/jail/lib/...), and from the process's namespace root otherwise: the
        // first of the two that is the mapped file (same device and inode) is it; failing
        // both, the mapping itself, which always is.
        let (Some(dev), Ok(inode)) = (parse_dev(dev), inode.parse::<u64>()) else {
            return Ok(map_file);
        };
        let in_root = proc_dir.join("root").join(path.trim_start_matches('/'));
        for candidate in [in_root, PathBuf::from(&path)] {
            if is_file_at(&candidate, dev, inode) {
                return Ok(candidate);
            }
        }
        return Ok(map_file);
    }
    let exe = fs::read_link(proc_dir.join("exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "?".into());
    Err(TargetError::NoLibc { pid, exe })
}

/// `MAJ:MIN` (hex) of a maps line as a dev_t.
fn parse_dev(s: &str) -> Option<u64> {
    let (maj, min) = s.split_once(':')?;
    let (maj, min) = (
        u32::from_str_radix(maj, 16).ok()?,
        u32::from_str_radix(min, 16).ok()?,
    );
    Some(libc::makedev(maj, min))
}

/// Whether `path` is the file with this device and inode.
fn is_file_at(path: &Path, dev: u64, inode: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).is_ok_and(|m| m.ino() == inode && m.dev() == dev)
}

/// The libc alloctrace itself maps: the system's, which a launched command or system-wide
/// mode probes.
pub fn own_libc() -> Result<PathBuf, TargetError> {
    let maps = fs::read_to_string("/proc/self/maps").map_err(|_| TargetError::NoOwnLibc)?;
    maps.lines()
        .filter_map(|l| l.split_ascii_whitespace().nth(5))
        .find(|p| p.starts_with('/') && is_libc(p))
        .map(PathBuf::from)
        .ok_or(TargetError::NoOwnLibc)
}

/// Resolves `argv0` the way execvp would, and refuses what cannot be traced: a file that is
/// not executable, or a statically linked ELF (no libc to probe).
pub fn resolve_command(argv0: &str) -> Result<PathBuf, TargetError> {
    let path = if argv0.contains('/') {
        PathBuf::from(argv0)
    } else {
        std::env::var_os("PATH")
            .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into())
            .to_string_lossy()
            .split(':')
            .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(argv0))
            .find(|p| p.is_file() && executable(p))
            .ok_or_else(|| TargetError::CommandNotFound(argv0.to_string()))?
    };
    let not_exec = |reason: String| TargetError::NotExecutable {
        path: path.display().to_string(),
        reason,
    };
    let meta = fs::metadata(&path).map_err(|e| not_exec(e.to_string()))?;
    if meta.is_dir() {
        return Err(not_exec("it is a directory".into()));
    }
    if !executable(&path) {
        return Err(not_exec("permission denied (not executable)".into()));
    }
    let data = fs::read(&path).map_err(|e| not_exec(e.to_string()))?;
    if data.starts_with(b"\x7fELF") && is_static_elf(&data) {
        return Err(TargetError::StaticBinary(path.display().to_string()));
    }
    Ok(path)
}

fn executable(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::X_OK) == 0 }
}

/// An ELF with no program interpreter (PT_INTERP) is loaded without ld.so, so it maps no
/// shared libc. (A static-pie is ET_DYN without PT_INTERP too, and is rightly refused.)
fn is_static_elf(data: &[u8]) -> bool {
    use object::read::elf::{ElfFile64, ProgramHeader};
    let Ok(elf) = ElfFile64::<object::Endianness>::parse(data) else {
        return false;
    };
    let endian = elf.endian();
    !elf.elf_program_headers()
        .iter()
        .any(|ph| ph.p_type(endian) == object::elf::PT_INTERP)
}

/// Notices when a traced process replaces its program (execve): the probes follow the
/// process into the new program (it maps the same libc again, and the uprobes are tied to the
/// pid, not to the program), so tracing goes on; alloctrace says so once per exec.
pub struct ExeWatch {
    pid: u32,
    /// (device, inode) and path of the program the process last ran; None until it runs one
    /// other than alloctrace itself (a launched command, before its exec).
    last: Option<((u64, u64), String)>,
}

fn exe_of(pid: &str) -> Option<((u64, u64), String)> {
    use std::os::unix::fs::MetadataExt;
    let link = format!("/proc/{pid}/exe");
    let m = fs::metadata(&link).ok()?;
    let path = fs::read_link(&link).ok()?.display().to_string();
    Some(((m.dev(), m.ino()), path))
}

impl ExeWatch {
    pub fn new(pid: u32) -> ExeWatch {
        let mut w = ExeWatch { pid, last: None };
        w.last = w.current();
        w
    }

    fn current(&self) -> Option<((u64, u64), String)> {
        let cur = exe_of(&self.pid.to_string())?;
        let own = exe_of("self").map(|(id, _)| id);
        (Some(cur.0) != own).then_some(cur)
    }

    /// A line to print when the process has exec'd another program since the last call.
    pub fn check(&mut self) -> Option<String> {
        let cur = self.current()?;
        let line = match &self.last {
            Some((id, old)) if *id != cur.0 => Some(format!(
                "alloctrace: pid {} executed {} (was {old}): still tracing it; the sites of both \
                 programs are kept",
                self.pid, cur.1
            )),
            _ => None,
        };
        self.last = Some(cur);
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libc_names() {
        assert!(is_libc("/usr/lib/x86_64-linux-gnu/libc.so.6"));
        assert!(is_libc("/lib/libc-2.31.so"));
        assert!(is_libc("/lib/ld-musl-x86_64.so.1"));
        assert!(!is_libc("/usr/lib/libcrypt.so.1"));
        assert!(!is_libc("/usr/lib/libc++.so.1"));
    }

    #[test]
    fn own_process_has_a_libc() {
        let libc = libc_of_pid(std::process::id()).expect("the test binary maps libc");
        assert!(
            libc.starts_with(format!("/proc/{}/root", std::process::id())),
            "{libc:?}"
        );
        assert!(libc.exists());
        assert!(own_libc().unwrap().exists());
    }

    #[test]
    fn missing_pid_is_named() {
        let e = libc_of_pid(999_999_999).unwrap_err();
        assert_eq!(e.to_string(), "no process with pid 999999999");
    }

    #[test]
    fn kernel_thread_is_refused() {
        // kthreadd is pid 2 on every Linux system.
        match libc_of_pid(2) {
            Err(TargetError::KernelThread(2)) => {}
            // Without CAP_SYS_PTRACE-like access the maps may be unreadable instead.
            Err(TargetError::Maps { .. }) => {}
            other => panic!("pid 2: {other:?}"),
        }
    }

    #[test]
    fn commands_resolve_through_path() {
        let sh = resolve_command("sh").expect("sh is on PATH");
        assert!(sh.is_absolute(), "{sh:?}");
        assert!(matches!(
            resolve_command("no-such-command-xyz"),
            Err(TargetError::CommandNotFound(_))
        ));
        assert!(matches!(
            resolve_command("/etc/passwd"),
            Err(TargetError::NotExecutable { .. })
        ));
        assert!(matches!(
            resolve_command("/tmp"),
            Err(TargetError::NotExecutable { .. })
        ));
    }
}
