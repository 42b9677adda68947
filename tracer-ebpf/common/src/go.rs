//! Go runtime events counted in the kernel: completed GC cycles per process.
use core::mem::size_of;

/// tgid -> `GoGc`: the cycles a Go process completed while traced.
pub const MAP_GO_GC: &str = "GO_GC";
/// Go processes tracked at once (system-wide mode), and the entry at key 0.
pub const GO_GC_PROCS: u32 = 4097;
/// The key (no process has tgid 0) of the entry user space inserts before tracing, whose
/// `cycles` counts the cycles not recorded because the table was full.
pub const GO_GC_LOST: u32 = 0;

/// One process's GC cycles: how many ended (entries of `runtime.gcMarkTermination`, where the
/// runtime counts `NumGC`), and when the first and the last did (kernel monotonic ns).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoGc {
    pub cycles: u64,
    pub first_ns: u64,
    pub last_ns: u64,
}
const _: () = assert!(size_of::<GoGc>() == 24);
