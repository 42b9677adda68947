//! Indices of the loss counters (a per-CPU array summed by user space).
/// A new stack could not be stored: the stack map is full (raise --max-stacks).
pub const STACK_MAP_FULL: u32 = 0;
/// A new site could not be stored: the site map is full (raise --max-stacks).
pub const SITE_MAP_FULL: u32 = 1;
/// A block could not be tracked: the in-flight map is full (raise --max-live).
pub const LIVE_MAP_FULL: u32 = 2;
/// The entry state of a call could not be stored: the kernel could not allocate the
/// thread's task storage (or it was busy on that CPU).
pub const CALL_MAP_FULL: u32 = 3;
/// A process could not be stored: the process map is full.
pub const PROC_MAP_FULL: u32 = 4;
/// The caller's return address could not be read from the stack: the site has no frames.
pub const STACK_READ_FAILED: u32 = 5;
/// A call's entry state was found stale (its return was never seen) and replaced.
pub const STALE_CALL: u32 = 6;
/// A notification to user space was dropped: the event ring buffer was full.
pub const EVENT_DROPPED: u32 = 7;
/// A stack was not captured: the program was preempted by (or preempted) another traced
/// thread's on the same CPU, which held the CPU's stack scratch. Only kernels that
/// preempt kernel code (preempt=full or lazy) can; the allocation has no site.
pub const STACK_PREEMPTED: u32 = 8;
/// A block's address was handed out again while the block was still in the in-flight
/// table: its free was never seen (it died in an exec, or was freed where no probe
/// looks). It stays counted live at its site; the new block takes its slot.
pub const STALE_BLOCK: u32 = 9;
/// User space's, never the programs': times the probes were moved to another task of the
/// traced process because the one they watched ended (the main thread's pthread_exit,
/// another thread's exec). Allocations until each move were not seen.
pub const RETARGETS: u32 = 10;
/// User space's: microseconds those moves took, from the end of the old task as
/// alloctrace learned it to the new probes' attach.
pub const RETARGET_GAP_US: u32 = 11;
/// An allocator call made by a signal handler that interrupted another handler's
/// allocator call, itself inside an interrupted allocator call (three deep on one
/// thread): not counted.
pub const REENTRY_TOO_DEEP: u32 = 12;
/// A new stack was not stored: the kernel could not check its frames (`bpf_find_vma`
/// found the process's mapping lock held by a writer). The allocation has no site; the
/// next call from that stack tries again.
pub const STACK_UNCHECKED: u32 = 13;
/// User space's: processes followed (`--follow-forks`) whose probes went in after their
/// fork, not at it: their allocations in between were not seen.
pub const FOLLOW_LATE: u32 = 14;
/// User space's: microseconds from those forks to their probes going in, added up.
pub const FOLLOW_GAP_US: u32 = 15;
/// User space's: execs of traced processes whose new program needed probe sets not attached
/// yet (its allocators, resolved again), attached after the exec: its allocations in between
/// were not seen. Also new allocator files found in system-wide mode after they were mapped.
pub const EXEC_LATE: u32 = 16;
/// User space's: microseconds from those execs (or mappings) to their probes, added up.
pub const EXEC_GAP_US: u32 = 17;
pub const COUNT: u32 = 18;
