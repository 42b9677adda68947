//! A process's counts that no site holds: its entry in the process map, and the per-CPU slots
//! a process may own for them.
use core::mem::size_of;

/// Cumulative counts of what a process allocated and freed that no site holds (unsampled, or
/// its stack could not be stored): user space adds its sites' counters for its totals.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Unattributed {
    pub allocs: u64,
    pub bytes: u64,
    pub frees: u64,
    pub freed_bytes: u64,
}

/// Per-process entry of the kernel's process map (per CPU): unattributed counts, and what
/// the process is.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcStats {
    pub totals: Unattributed,
    /// Frees of addresses this tracer never saw allocated (allocated before attach, or lost).
    pub unknown_frees: u64,
    /// `comm` of the thread that made the process's first traced call.
    pub comm: [u8; 16],
}
const _: () = assert!(size_of::<ProcStats>() == 56);

/// One CPU's slot of the OWNED array, indexed by CPU id: the first process to count an
/// unattributed allocation or free on that CPU claims it (`tgid`, by compare-and-swap from 0)
/// and counts there from then on, without the process map's hash lookup: the hot path of
/// sampling, where most allocations have no site. User space adds a slot to its owner's
/// totals, and frees it (zeroes it, `tgid` last) once the owner has exited. Other processes
/// count in the process map, as before.
///
/// One cache line per slot: CPUs add to their own slots all the time (every unsampled
/// allocation), and slots sharing a line would move it between them on every add.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OwnedTotals {
    pub tgid: u32,
    pub _pad: u32,
    pub totals: Unattributed,
    pub _line: [u64; 3],
}
const _: () = assert!(size_of::<OwnedTotals>() == 64);
