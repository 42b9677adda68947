//! What to probe: the privileges and kernel support tracing needs, the libc a target really
//! maps, and the executable a launch command names.
pub mod launch;

use std::ffi::{CString, OsStr};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::process::mmap_watch::{ExecLog, ExecSeen};

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
    #[error("pid {0} is a zombie (exited, not yet reaped by its parent): it allocates no more")]
    Zombie(u32),
    #[error("pid {0} exited while alloctrace was starting")]
    ExitedWhileStarting(u32),
    #[error("cannot read the mappings of pid {pid}: {source}")]
    Maps { pid: u32, source: std::io::Error },
    #[error("pid {pid} ({exe}) maps no libc (a statically linked binary?): alloctrace probes the allocator of a dynamically linked libc")]
    NoLibc { pid: u32, exe: String },
    #[error("command not found: {0}")]
    CommandNotFound(String),
    #[error("cannot execute {path}: {reason}")]
    NotExecutable { path: String, reason: String },
    #[error("cannot execute {path}: it is neither an ELF binary nor a script starting with #! (the kernel refuses it: Exec format error); run it through its interpreter, e.g. -- sh {path}")]
    NotElfNorScript { path: String },
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
fn is_libc(path: &[u8]) -> bool {
    let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    name == b"libc.so.6"
        || name == b"libc.so"
        || (name.starts_with(b"libc-") && name.ends_with(b".so"))
        || (name.starts_with(b"ld-musl-") && name.ends_with(b".so.1"))
}

/// Refuses a pid that is not a process of its own: a thread's id (the probes and the
/// report go by process), alloctrace's own, or a zombie. Returns the thread to read the
/// process's mappings through and to attach to: the pid itself, or, once its main thread has
/// exited while others live (its maps, root and exe then read as empty), a live thread's id
/// (the kernel's uprobe filter goes by the thread's memory, which every thread shares).
pub fn check_process(pid: u32) -> Result<u32, TargetError> {
    if pid == std::process::id() {
        return Err(TargetError::SelfPid(pid));
    }
    let status = match fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(s) => s,
        // libc_of_pid names the missing pid.
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
        Some(tid) => {
            eprintln!(
                "alloctrace: pid {pid}'s main thread has exited; its other threads live: \
                 tracing it through thread {tid}"
            );
            Ok(tid)
        }
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
    // Bytes: a path may be any bytes but NUL and newline.
    let maps = fs::read(proc_dir.join("maps")).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            TargetError::NoSuchPid(pid)
        } else {
            TargetError::Maps { pid, source }
        }
    })?;
    if maps.trim_ascii().is_empty() {
        // Kernel threads have no mm: an empty maps file (and no exe link).
        if fs::read_link(proc_dir.join("exe")).is_err() {
            return Err(TargetError::KernelThread(pid));
        }
    }
    for line in maps.split(|&b| b == b'\n') {
        let Some((range, dev, inode, path)) = maps_line_fields(line) else {
            continue;
        };
        let (path, deleted) = match path.strip_suffix(b" (deleted)") {
            Some(p) => (p, true),
            None => (path, false),
        };
        if !path.starts_with(b"/") || !is_libc(path) {
            continue;
        }
        let path = Path::new(OsStr::from_bytes(path));
        let map_file = proc_dir.join("map_files").join(range);
        if deleted {
            return Ok(map_file);
        }
        // The kernel prints the path as seen from *our* root when it can (a chrooted process's
        // libc shows as /srv/jail/lib/...), and from the process's namespace root otherwise: the
        // first of the two that is the mapped file (same device and inode) is it; failing
        // both, the mapping itself, which always is.
        let (Some(dev), Some(inode)) = (parse_dev(dev), inode.parse::<u64>().ok()) else {
            return Ok(map_file);
        };
        let in_root = proc_dir
            .join("root")
            .join(path.strip_prefix("/").unwrap_or(path));
        for candidate in [in_root, path.to_path_buf()] {
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

/// The range, device, inode and path (bytes, possibly with spaces) of a `/proc/PID/maps` line
/// that names a file; None for anonymous mappings and lines that do not parse.
fn maps_line_fields(line: &[u8]) -> Option<(&str, &str, &str, &[u8])> {
    let mut rest = line;
    let mut field = || -> Option<&str> {
        let start = rest.iter().position(|&b| b != b' ')?;
        let s = &rest[start..];
        let end = s.iter().position(|&b| b == b' ').unwrap_or(s.len());
        rest = &s[end..];
        std::str::from_utf8(&s[..end]).ok()
    };
    let range = field()?;
    let _perms = field()?;
    let _offset = field()?;
    let dev = field()?;
    let inode = field()?;
    let path = rest.trim_ascii_start();
    (!path.is_empty()).then_some((range, dev, inode, path))
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
    let maps = fs::read("/proc/self/maps").map_err(|_| TargetError::NoOwnLibc)?;
    maps.split(|&b| b == b'\n')
        .filter_map(|l| maps_line_fields(l).map(|f| f.3))
        .find(|p| p.starts_with(b"/") && is_libc(p))
        .map(|p| PathBuf::from(OsStr::from_bytes(p)))
        .ok_or(TargetError::NoOwnLibc)
}

/// Resolves `argv0` the way execvp would, and refuses what cannot be traced or run: a file
/// that is not executable, a statically linked ELF (no libc to probe), or a file the kernel
/// cannot execute (neither ELF nor `#!` script: execv, unlike a shell, does not fall back to
/// running it with sh), or whose `#!` interpreter is missing.
pub fn resolve_command(argv0: &OsStr) -> Result<PathBuf, TargetError> {
    let shown = || Path::new(argv0).display().to_string();
    let path = if argv0.as_bytes().contains(&b'/') {
        PathBuf::from(argv0)
    } else {
        std::env::var_os("PATH")
            .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into())
            .as_bytes()
            .split(|&b| b == b':')
            .map(|dir| {
                Path::new(if dir.is_empty() {
                    OsStr::new(".")
                } else {
                    OsStr::from_bytes(dir)
                })
                .join(argv0)
            })
            .find(|p| p.is_file() && executable(p))
            .ok_or_else(|| TargetError::CommandNotFound(shown()))?
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
    if data.starts_with(b"\x7fELF") {
        if is_static_elf(&data) {
            return Err(TargetError::StaticBinary(path.display().to_string()));
        }
    } else if let Some(line) = data.strip_prefix(b"#!") {
        let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())];
        let interp = line
            .split(|&b| b == b' ' || b == b'\t')
            .find(|w| !w.is_empty())
            .unwrap_or_default();
        let interp = Path::new(OsStr::from_bytes(interp));
        if !interp.is_file() || !executable(interp) {
            return Err(not_exec(format!(
                "its interpreter (#!{}) is not an executable file",
                interp.display()
            )));
        }
    } else {
        return Err(TargetError::NotElfNorScript {
            path: path.display().to_string(),
        });
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
    maps.split(|&b| b == b'\n')
        .filter_map(maps_line_fields)
        .any(|(_, dev, inode, _)| {
            parse_dev(dev) == Some(id.0) && inode.parse::<u64>().ok() == Some(id.1)
        })
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
    fn libc_names() {
        assert!(is_libc(b"/usr/lib/x86_64-linux-gnu/libc.so.6"));
        assert!(is_libc(b"/lib/libc-2.31.so"));
        assert!(is_libc(b"/lib/ld-musl-x86_64.so.1"));
        assert!(is_libc(b"/tmp/x\xff/libc.so.6"));
        assert!(!is_libc(b"/usr/lib/libcrypt.so.1"));
        assert!(!is_libc(b"/usr/lib/libc++.so.1"));
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
        let r = |s: &str| resolve_command(OsStr::new(s));
        let sh = r("sh").expect("sh is on PATH");
        assert!(sh.is_absolute(), "{sh:?}");
        assert!(matches!(
            r("no-such-command-xyz"),
            Err(TargetError::CommandNotFound(_))
        ));
        assert!(matches!(
            r("/etc/passwd"),
            Err(TargetError::NotExecutable { .. })
        ));
        assert!(matches!(r("/tmp"), Err(TargetError::NotExecutable { .. })));
    }

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

    #[test]
    fn maps_lines_keep_path_bytes() {
        let line = b"7f00-7f10 r-xp 00001000 fe:01 42    /tmp/x\xff y/libc.so.6 (deleted)";
        let (range, dev, inode, path) = maps_line_fields(line).unwrap();
        assert_eq!((range, dev, inode), ("7f00-7f10", "fe:01", "42"));
        assert_eq!(path, b"/tmp/x\xff y/libc.so.6 (deleted)");
        assert_eq!(maps_line_fields(b"7f00-7f10 rw-p 00000000 00:00 0 "), None);
    }

    #[test]
    fn scripts_need_a_shebang_and_its_interpreter() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("alloctrace-target-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let script = |name: &str, text: &str| {
            let p = dir.join(name);
            fs::write(&p, text).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
            p
        };
        let ok = script("ok", "#! /bin/sh -e\nexit 0\n");
        let bare = script("bare", "exit 0\n");
        let lost = script("lost", "#!/nonexistent/interp\n");
        assert_eq!(resolve_command(ok.as_os_str()).unwrap(), ok);
        let e = resolve_command(bare.as_os_str()).unwrap_err().to_string();
        assert!(
            e.contains("neither an ELF binary nor a script starting with #!"),
            "{e}"
        );
        let e = resolve_command(lost.as_os_str()).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/interp"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
