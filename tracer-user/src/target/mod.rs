//! What to probe: the privileges and kernel support tracing needs, the process or command to
//! trace, the allocators' files it really maps (or will), and what it executes while traced.
pub mod allocators_of;
pub mod command;
pub mod elf_deps;
pub mod exec_watch;
pub mod kernel;
pub mod launch;
pub mod privilege;
pub mod process;

#[cfg(test)]
pub use allocators_of::own_libc;
pub use command::resolve_command;
pub use exec_watch::{monotonic_ns, ExeWatch};
pub use kernel::check_kernel;
pub use privilege::{check_may_trace, check_privileges, check_system_wide, real_ids};
pub use process::{check_process, exited_during_start};

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
    #[error("kernel {0} has no uprobe_multi links, which alloctrace probes through: it needs Linux 6.6 or later")]
    OldKernel(String),
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
    #[error("command not found: {0}")]
    CommandNotFound(String),
    #[error("cannot execute {path}: {reason}")]
    NotExecutable { path: String, reason: String },
    #[error("cannot execute {path}: it is neither an ELF binary nor a script starting with #! (the kernel refuses it: Exec format error); run it through its interpreter, e.g. -- sh {path}")]
    NotElfNorScript { path: String },
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
