//! What user space sets for the programs: the loader's globals (before loading) and the
//! CONTROL array's switches (while tracing).

// Globals set by the loader.
/// tgid of alloctrace itself: never traced, so system-wide mode does not trace its own drain.
pub const GLOBAL_SELF_TGID: &str = "SELF_TGID";
/// tgid of the one process traced (--pid, or a command); 0 when every process is.
pub const GLOBAL_TARGET_TGID: &str = "TARGET_TGID";
/// Non-zero when some links count one process only, named by their probes' cookies (a
/// `--pid` target whose main thread has exited): the programs read the cookie only then.
pub const GLOBAL_BY_COOKIE: &str = "BY_COOKIE";
/// Mean bytes between sampled allocations (`--sample-bytes`); 0 samples every allocation.
pub const GLOBAL_SAMPLE_BYTES: &str = "SAMPLE_BYTES";
/// Slots of the in-flight table minus one (`live::slots`: a power of two).
pub const GLOBAL_LIVE_MASK: &str = "LIVE_MASK";
/// Homes of the site table (`sites::homes`).
pub const GLOBAL_SITE_HOMES: &str = "SITE_HOMES";
/// Offset of `vm_flags` in the running kernel's `struct vm_area_struct` (read from its BTF):
/// the stack check asks whether a frame lies in a mapping with `VM_EXEC`.
pub const GLOBAL_VMA_FLAGS_OFFSET: &str = "VMA_FLAGS_OFFSET";

/// Index in the CONTROL array: non-zero once user space stops tracing. Uprobe removal waits a
/// kernel grace period per probe (~0.1 s each here), so the probes are first told to stop
/// counting, which makes the final drain a consistent end state at once, and detached after
/// the report is out.
pub const CONTROL_STOPPED: u32 = 0;
