//! The ABI between alloctrace's eBPF programs and its user-space daemon.
//!
//! Every type that crosses the kernel/user boundary is defined here, once: `#[repr(C)]`, `Copy`,
//! explicit padding, and a size assertion so a layout change fails the build on both sides.
#![no_std]

use core::mem::size_of;

/// Deepest user stack recorded per allocation site. The walk is a bounded loop in the kernel,
/// so this is also the verifier's loop bound.
pub const MAX_FRAMES: usize = 32;
/// Buckets of the log2 size and lifetime histograms: bucket 0 holds zero, bucket `i` holds
/// values in `[2^(i-1), 2^i)`, and the last bucket also holds everything above.
pub const HIST_BUCKETS: usize = 64;

// Map names, as the loader looks them up.
pub const MAP_STACKS: &str = "STACKS";
pub const MAP_SITES: &str = "SITES";
pub const MAP_LIVE: &str = "LIVE";
pub const MAP_CALLS: &str = "CALLS";
pub const MAP_PROCS: &str = "PROCS";
pub const MAP_LOSSES: &str = "LOSSES";
pub const MAP_EVENTS: &str = "EVENTS";
pub const MAP_SITE_CLAIMS: &str = "SITE_CLAIMS";
pub const MAP_STACK_SCRATCH: &str = "STACK_SCRATCH";
pub const MAP_CONTROL: &str = "CONTROL";
pub const MAP_SAMPLER: &str = "SAMPLER";
pub const MAP_OWNED: &str = "OWNED";

/// Index in the CONTROL array: non-zero once user space stops tracing. Uprobe removal waits a
/// kernel grace period per probe (~0.1 s each here), so the probes are first told to stop
/// counting, which makes the final drain a consistent end state at once, and detached after
/// the report is out.
pub const CONTROL_STOPPED: u32 = 0;

// Globals set by the loader.
/// tgid of alloctrace itself: never traced, so system-wide mode does not trace its own drain.
pub const GLOBAL_SELF_TGID: &str = "SELF_TGID";
/// tgid of the one process traced (--pid, or a command); 0 when every process is.
pub const GLOBAL_TARGET_TGID: &str = "TARGET_TGID";
/// Mean bytes between sampled allocations (`--sample-bytes`); 0 samples every allocation.
pub const GLOBAL_SAMPLE_BYTES: &str = "SAMPLE_BYTES";
/// Slots of the in-flight table minus one (`live::slots`: a power of two).
pub const GLOBAL_LIVE_MASK: &str = "LIVE_MASK";
/// Homes of the site table (`sites::homes`).
pub const GLOBAL_SITE_HOMES: &str = "SITE_HOMES";
/// Offset of `vm_flags` in the running kernel's `struct vm_area_struct` (read from its BTF):
/// the stack check asks whether a frame lies in a mapping with `VM_EXEC`.
pub const GLOBAL_VMA_FLAGS_OFFSET: &str = "VMA_FLAGS_OFFSET";
/// `VM_EXEC` in `vm_area_struct::vm_flags` (include/linux/mm.h; unchanged since 2.6).
pub const VM_EXEC: u64 = 0x4;

// Program names (the eBPF function names).
pub const PROG_MALLOC_ENTER: &str = "malloc_enter";
pub const PROG_CALLOC_ENTER: &str = "calloc_enter";
pub const PROG_REALLOC_ENTER: &str = "realloc_enter";
pub const PROG_REALLOCARRAY_ENTER: &str = "reallocarray_enter";
pub const PROG_POSIX_MEMALIGN_ENTER: &str = "posix_memalign_enter";
pub const PROG_ALIGNED_ALLOC_ENTER: &str = "aligned_alloc_enter";
pub const PROG_VALLOC_ENTER: &str = "valloc_enter";
pub const PROG_ALLOC_RETURN: &str = "alloc_return";
pub const PROG_FREE_ENTER: &str = "free_enter";

// The alloc-only mode's entry programs: they count a request at entry, with no return or
// free probe. glibc's own calls between these functions are left to the callee (see
// tracer-ebpf's `alloc::count_request`).
pub const PROG_MALLOC_COUNT: &str = "malloc_count";
pub const PROG_CALLOC_COUNT: &str = "calloc_count";
pub const PROG_REALLOC_COUNT: &str = "realloc_count";
pub const PROG_POSIX_MEMALIGN_COUNT: &str = "posix_memalign_count";
pub const PROG_ALIGNED_ALLOC_COUNT: &str = "aligned_alloc_count";
pub const PROG_VALLOC_COUNT: &str = "valloc_count";

/// glibc's MALLOC_ALIGNMENT on x86-64: the aligned functions hand smaller alignments to
/// malloc itself.
pub const MALLOC_ALIGNMENT: u64 = 16;
/// glibc refuses larger requests at once (ENOMEM) without calling anything else.
pub const PTRDIFF_MAX: u64 = i64::MAX as u64;

/// Which allocator function an in-flight call belongs to; decides how its return is read.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallKind {
    /// malloc, calloc, aligned_alloc, memalign, valloc, pvalloc: the return value is the block.
    Plain = 0,
    /// realloc and reallocarray: frees `ptr_arg` (when not NULL) and returns the new block.
    Realloc = 1,
    /// posix_memalign: returns 0 on success and stores the block at `*ptr_arg`.
    PosixMemalign = 2,
}

/// Key of a per-process stack: the same addresses in two processes are two different stacks.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackKey {
    pub tgid: u32,
    pub _pad: u32,
    /// FNV-1a of the stack's return addresses; never 0 (0 means "no stack") nor 1 (see
    /// `sites::DEAD`).
    pub hash: u64,
}
const _: () = assert!(size_of::<StackKey>() == 16);

/// A user stack, innermost frame first. `ips[0]` is the allocator's immediate caller, read
/// from the return address on top of the stack at the probe. Every frame is an address inside
/// an executable mapping of the process (checked by the kernel side when the stack is
/// stored); the walk stops at the first value that is not, and `cut` says why it stopped.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StackTrace {
    pub len: u32,
    /// One of `stack_cut::*`: `NONE` when the walk ended on its own (a zero frame pointer or
    /// return address, a frame pointer not above the last, an unreadable frame, or
    /// `MAX_FRAMES`).
    pub cut: u32,
    pub ips: [u64; MAX_FRAMES],
}
const _: () = assert!(size_of::<StackTrace>() == 8 + 8 * MAX_FRAMES);

/// Cumulative counters of one allocation site (process + stack). Never reset by the kernel:
/// user space takes deltas between drains, so no increment can be lost between two reads.
/// The counts of allocations and frees are the histograms' sums ([`SiteStats::allocs`],
/// [`SiteStats::frees`]): one atomic add fewer per allocation and per free.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SiteStats {
    pub bytes: u64,
    /// Bytes of the blocks this site allocated that were freed (or moved by realloc),
    /// wherever they were freed.
    pub freed_bytes: u64,
    /// log2 histogram of requested sizes.
    pub size_hist: [u64; HIST_BUCKETS],
    /// log2 histogram of lifetimes in nanoseconds, for blocks that were freed.
    pub life_hist: [u64; HIST_BUCKETS],
}
const _: () = assert!(size_of::<SiteStats>() == 16 + 16 * HIST_BUCKETS);

impl SiteStats {
    /// Allocations at this site: every one lands in one size bucket.
    pub fn allocs(&self) -> u64 {
        self.size_hist.iter().fold(0, |a, &n| a.wrapping_add(n))
    }

    /// Frees of this site's blocks: every one lands in one lifetime bucket.
    pub fn frees(&self) -> u64 {
        self.life_hist.iter().fold(0, |a, &n| a.wrapping_add(n))
    }
}

/// murmur3's 64-bit finalizer: every input bit reaches every output bit, so keys that differ
/// in a few bits (one process's neighbouring blocks, one address in many processes) spread
/// over the in-flight table's slots (`live::home`; the site table's stack hashes are mixed
/// already, see `sites::home`).
#[inline(always)]
pub fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The site table (map SITES): every allocation site's counters, in an open-addressing hash
/// table over a BPF array, found by (tgid, stack hash). A BPF hash map lookup (jhash of the
/// key, a bucket walk, a key compare) measured ~13 ns here, on every allocation and every
/// free; a probe of this table's home slot costs a few.
///
/// The protocol (x86-64: stores are seen in program order), as the in-flight table's:
/// - A site lives in one of the `sites::WINDOW` slots from `sites::home`.
/// - Claim: compare-and-swap the first empty or dead slot's `hash` to the site's, then write
///   `tgid`; the slot matches only once `tgid` is set, and its counters start at zero. Two
///   CPUs that claim one new site at once can both succeed: user space adds such slots up.
/// - Retire (user space, once the process has exited): `tgid` to 0, the counters to zero,
///   then `hash` to `sites::DEAD` (reusable; searches go on past it), and a lane slot's unit
///   back to the spread budget. An empty slot ends a search: it never comes back, so a claim
///   would have taken it.
/// - Lanes: threads of one process that allocate at one site from different CPUs would
///   contend for its counters' cache lines on every allocation (an atomic add moves the line
///   between CPUs). So a site may have a slot per lane (lane = CPU mod `sites::LANES`), each
///   searched from its own home: lane 0's is claimed with the site and lives as long as its
///   process; another lane's is claimed by the first allocation or free counted on that lane,
///   while the spread budget (`sites::SPREAD_LEFT`, taken atomically) lasts, and otherwise
///   that lane counts in lane 0's slot. User space adds a site's slots up.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SiteSlot {
    /// `sites::EMPTY`, `sites::DEAD`, or the site's stack hash.
    pub hash: u64,
    /// The owning process; 0 while the slot is being claimed or retired.
    pub tgid: u32,
    /// The lane whose slot this is (written before `tgid`).
    pub lane: u32,
    pub stats: SiteStats,
}
const _: () = assert!(size_of::<SiteSlot>() == 16 + size_of::<SiteStats>());

pub mod sites {
    /// A slot never used.
    pub const EMPTY: u64 = 0;
    /// A slot whose process exited: reusable, but searches go on past it.
    pub const DEAD: u64 = 1;
    /// Slots a site may occupy from its home (the verifier's loop bound). Linear probing's
    /// runs at the table's load of at most two thirds were ~70 slots long in tables of tens
    /// of thousands (the test below); a site beyond its window is a counted loss
    /// (site_map_full).
    pub const WINDOW: u64 = 256;

    /// Lanes a site's counters may be spread over (a power of two; see `SiteSlot`). CPUs
    /// beyond it share lanes: fewer CPUs per line, not none.
    pub const LANES: u32 = 4;
    /// Slots a lane slot past lane 0 may occupy from its home: it is optional (without it the
    /// CPU counts in lane 0's), so a short window keeps the programs within the verifier's
    /// budget.
    pub const LANE_WINDOW: u64 = 4;

    /// Words of the map SITE_CLAIMS (mmapable: the kernel and user space both add to it).
    /// Slots claimed so far: user space looks for new slots when it moved.
    pub const CLAIMS: u32 = 0;
    /// Lane slots past lane 0 that may still be claimed (as i64): taken by the kernel, given
    /// back by user space when it retires one. The loader sets it to `spread_budget`.
    pub const SPREAD_LEFT: u32 = 1;
    pub const CLAIM_WORDS: u32 = 2;

    /// The slot a site's search starts at on `lane`, in [0, n) for a table of `n` homes
    /// (n < 2^32). Every bit of the stack hash, the process and the lane reaches it:
    /// processes of one binary without address randomization, or forks, share stack hashes
    /// and must still spread, and a site's lanes must not share a run.
    #[inline(always)]
    pub fn home(tgid: u32, hash: u64, lane: u32, n: u64) -> u64 {
        // The stack hash is already mixed (`stack_hash_step`): one multiply by an odd
        // constant carries every bit of it and of the process into the high half, which is
        // all multiply-shift uses. The in-flight table's addresses need the full finalizer.
        let who = ((lane as u64) << 32) | tgid as u64;
        let h =
            (hash ^ who.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        // Multiply-shift maps the high 32 bits onto [0, n) without a division.
        ((h >> 32) * n) >> 32
    }

    /// Lane slots past lane 0 the table holds for `max_stacks` sites: a quarter as many.
    pub fn spread_budget(max_stacks: u32) -> u32 {
        max_stacks / 4
    }

    /// Homes for `max_stacks` sites and the spread budget's lane slots: half as many again,
    /// so runs stay short.
    pub fn homes(max_stacks: u32) -> u32 {
        let n = max_stacks.max(1) as u64 + spread_budget(max_stacks) as u64;
        (n + n / 2).min(u32::MAX as u64 / 2) as u32
    }

    /// The table's slots: its homes and one window past the last, so a search never wraps
    /// around (a wrap would give the verifier a path per iteration to walk).
    pub fn slots(max_stacks: u32) -> u32 {
        homes(max_stacks) + WINDOW as u32
    }

    #[cfg(test)]
    mod tests {
        extern crate std;
        use super::*;

        /// One stack hash in many processes (forks, or one binary without address
        /// randomization) spreads over the table: no slot is the home of many.
        #[test]
        fn one_stack_in_many_processes_spreads() {
            let n = homes(16384) as u64;
            let mut starts = std::collections::HashMap::new();
            for tgid in 1000..9000u32 {
                let h = home(tgid, 0x1234_5678_9abc_def1, 0, n);
                assert!(h < n);
                *starts.entry(h).or_insert(0u32) += 1;
            }
            let most = starts.values().max().copied().unwrap_or(0);
            assert!(most <= 6, "{most} sites start at one slot");
        }

        /// A site's lanes start far apart: each lane's slot is found from its own home, not
        /// by walking past the others'.
        #[test]
        fn a_sites_lanes_have_their_own_homes() {
            let n = homes(16384) as u64;
            let mut close = 0;
            for k in 0..1000u64 {
                let hash = crate::stack_hash_step(crate::FNV_OFFSET, 0x5555_5555_4000 + 7 * k);
                let starts: std::vec::Vec<u64> =
                    (0..LANES).map(|lane| home(4242, hash, lane, n)).collect();
                for (a, x) in starts.iter().enumerate() {
                    for y in &starts[a + 1..] {
                        if x.abs_diff(*y) < WINDOW {
                            close += 1;
                        }
                    }
                }
            }
            // Random homes: 6 pairs per site, each within a window with probability ~2W/n.
            let expected = 6_000 * 2 * WINDOW / n;
            assert!(
                close <= 2 * expected + 5,
                "{close} lane pairs within a window"
            );
        }

        /// The farthest any of `keys` (tgid, stack hash, lane) lands from its home when
        /// inserted in turn, by linear probing, into an empty table sized for `max` sites.
        fn farthest_from_home(max: u32, keys: impl Iterator<Item = (u32, u64, u32)>) -> u64 {
            let n = homes(max) as u64;
            let mut used = std::vec![false; slots(max) as usize];
            let mut worst = 0;
            for (tgid, hash, lane) in keys {
                let mut i = home(tgid, hash, lane, n);
                let mut d = 0;
                while used[i as usize] {
                    i += 1;
                    d += 1;
                }
                used[i as usize] = true;
                worst = worst.max(d);
            }
            worst
        }

        /// `max` sites in lane 0, then the spread budget's lane slots for the first of them
        /// (lanes 1, 2, 3 in turn): the table full as the kernel can fill it.
        fn with_lanes(
            max: u32,
            sites: std::vec::Vec<(u32, u64)>,
        ) -> std::vec::Vec<(u32, u64, u32)> {
            let mut keys: std::vec::Vec<(u32, u64, u32)> =
                sites.iter().map(|&(t, h)| (t, h, 0)).collect();
            let spread = spread_budget(max) as usize;
            keys.extend((0..spread).map(|k| (sites[k / 3].0, sites[k / 3].1, 1 + (k % 3) as u32)));
            keys
        }

        /// A full table's sites fit their windows: the longest run of linear probing at the
        /// load `slots` allows stays well inside WINDOW.
        #[test]
        fn a_full_table_fits_its_windows() {
            for max in [64u32, 1000, 16384, 100_000] {
                let mut h = 0x9e37_79b9_7f4a_7c15u64;
                let sites = (0..max)
                    .map(|k| {
                        h = h
                            .wrapping_mul(0x5851_f42d_4c95_7f2d)
                            .wrapping_add(1442695040888963407);
                        (k % 97, h | 2)
                    })
                    .collect();
                let worst = farthest_from_home(max, with_lanes(max, sites).into_iter());
                assert!(
                    worst < WINDOW / 2,
                    "max {max}: a site {worst} slots from home"
                );
            }
        }

        /// As above with the hashes of real-looking stacks: call sites of one binary a few
        /// bytes apart under one caller, in a handful of processes. `home` relies on the stack
        /// hash's own mixing here, not on a random-looking input.
        #[test]
        fn stacks_of_one_binary_fit_their_windows() {
            for max in [1000u32, 16384, 100_000] {
                let sites = (0..max as u64)
                    .map(|k| {
                        let (tgid, site) = (4000 + (k % 5) as u32, k / 5);
                        let ips = [
                            0x5555_5555_4000 + 7 * site,
                            0x5555_5555_9abc,
                            0x7fff_f7dc_f24a,
                        ];
                        let mut h = crate::FNV_OFFSET;
                        for ip in ips {
                            h = crate::stack_hash_step(h, ip);
                        }
                        (tgid, crate::stack_hash_step(h, ips.len() as u64).max(2))
                    })
                    .collect();
                let worst = farthest_from_home(max, with_lanes(max, sites).into_iter());
                assert!(
                    worst < WINDOW / 2,
                    "max {max}: a site {worst} slots from home"
                );
            }
        }
    }
}

/// The in-flight table (map LIVE): every allocated block not yet freed, in an open-addressing
/// hash table over a BPF array. A hash map would cost a bucket lock and a free-list operation
/// per insert and per delete; here an insert is one compare-and-swap and a delete two stores.
///
/// The protocol, on x86-64 (stores are seen in program order, loads are not reordered):
/// - A block of (tgid, addr) lives in one of the `live::WINDOW` slots from its hash.
/// - Insert: claim the first empty or dead slot of the window by a compare-and-swap of its
///   `addr`, write the record, then `tgid` last; the slot matches only once `tgid` is set.
///   A slot before it that already holds (tgid, addr) is stale (the allocator cannot hand
///   out a live block's address: that block's free was never seen, or it died in an exec):
///   the new record replaces it there, where a take would find it first.
/// - Take (free): find the slot whose `addr` and `tgid` match, copy the record, set `tgid`
///   to 0 (matches nothing), then `addr` to `live::DEAD`. An empty slot ends the search: an
///   empty slot never comes back, so an insert would have taken it.
/// - User space retires exited processes' blocks the same way (its map is mmapped).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct LiveSlot {
    /// `live::EMPTY`, `live::DEAD`, or the block's address.
    pub addr: u64,
    /// The owning process; 0 while the slot is being written or emptied.
    pub tgid: u32,
    pub _pad: u32,
    pub info: AllocInfo,
}
const _: () = assert!(size_of::<LiveSlot>() == 40);

pub mod live {
    /// A slot never used.
    pub const EMPTY: u64 = 0;
    /// A slot whose block was freed: reusable, but the search goes on past it. Odd, so never
    /// an allocator's address.
    pub const DEAD: u64 = 1;
    /// Slots a block may occupy from its hash (the verifier's loop bound). At the table's
    /// load of at most one half, 16 was measured to lose a block now and then (linear
    /// probing's runs grow long); a run of 64 occupied slots is vanishingly rare.
    pub const WINDOW: u64 = 64;

    /// The slot a block's search starts at, for a table of `mask + 1` (a power of two) slots.
    /// Every bit of both the address and the process reaches the slot index (murmur3's
    /// finalizer): processes of one binary without address randomization, or forked from one
    /// another, hold the same addresses, and must still land in different windows.
    #[inline(always)]
    pub fn home(tgid: u32, addr: u64, mask: u64) -> u64 {
        // Blocks are 16-byte aligned: the low bits carry nothing.
        super::fmix64((addr >> 4) ^ (tgid as u64).rotate_right(20)) & mask
    }

    /// Slots for `max_live` blocks: twice as many, rounded up to a power of two, so windows
    /// stay short.
    pub fn slots(max_live: u32) -> u32 {
        (max_live.max(1) as u64 * 2)
            .next_power_of_two()
            .min(1 << 31) as u32
    }

    #[cfg(test)]
    mod tests {
        extern crate std;
        use super::*;

        /// The same heap addresses in many processes (one binary without address
        /// randomization, or forks of one process) spread over the table like random keys: no
        /// slot is the start of many windows.
        #[test]
        fn same_addresses_in_many_processes_spread() {
            let mask = (1u64 << 20) - 1;
            let mut starts = std::collections::HashMap::new();
            for tgid in 1000..3000u32 {
                for k in 0..8u64 {
                    let h = home(tgid, 0x5555_5555_9000 + 64 * k, mask);
                    *starts.entry(h).or_insert(0u32) += 1;
                }
            }
            let most = starts.values().max().copied().unwrap_or(0);
            assert!(most <= 4, "{most} blocks start at one slot");
        }
    }
}

/// An allocated block not yet freed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AllocInfo {
    pub size: u64,
    /// The allocating site's stack hash; 0 when the block has no site (unsampled, or its
    /// stack could not be recorded: counted as a loss).
    pub stack_hash: u64,
    /// `bpf_ktime_get_ns` at the allocator's return; 0 for a block without a site, whose
    /// lifetime nothing records.
    pub ts_ns: u64,
}
const _: () = assert!(size_of::<AllocInfo>() == 24);

/// State of an allocator call between its entry and its return: one per thread, in the
/// kernel's task storage. Kernel-only, kept here with the other layouts.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CallState {
    /// Requested bytes.
    pub size: u64,
    /// realloc: the old block; posix_memalign: where the block's address is stored.
    pub ptr_arg: u64,
    pub stack_hash: u64,
    /// Stack pointer at the outermost entry: an entry above it means the previous call never
    /// returned through our uretprobe; at or below it, a call nested inside this one.
    pub sp: u64,
    /// realloc: the old block, taken out of the in-flight map at entry (while the caller still
    /// owns it, so another thread reusing the address after realloc freed it cannot be confused
    /// with it) and put back if realloc fails.
    pub old: AllocInfo,
    /// `CallKind` as u32.
    pub kind: u32,
    /// Allocator calls nested inside this one on the same thread (glibc's realloc(NULL, n)
    /// calls malloc): only the outermost is counted.
    pub depth: u32,
    /// 1 when `old` holds the realloc'd block's record.
    pub old_known: u32,
    /// 1 between an outermost call's entry and its return; the storage outlives calls.
    pub active: u32,
}
const _: () = assert!(size_of::<CallState>() == 72);

/// Per thread (task storage): the allocator call in progress (`outer`), and one a signal
/// handler made while `outer` was in progress (`inner`): told apart from glibc's own nesting
/// by how far below the outer call's stack pointer it runs (see the kernel side's
/// `NEST_MAX`). Kernel-only.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CallStates {
    pub outer: CallState,
    pub inner: CallState,
}
const _: () = assert!(size_of::<CallStates>() == 144);

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

/// Indices of the loss counters (a per-CPU array summed by user space).
pub mod loss {
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
    pub const COUNT: u32 = 14;
}

/// Why a stored stack ends where it does (`StackTrace::cut`).
pub mod stack_cut {
    /// The walk ended on its own.
    pub const NONE: u32 = 0;
    /// A value the walk took for a return address is not inside an executable mapping of the
    /// process (code without frame pointers keeps other data in `rbp`): it and everything
    /// beyond it were dropped.
    pub const NOT_CODE: u32 = 1;
    /// The kernel could not look the address up (`bpf_find_vma`: the process's mapping lock
    /// was contended). Such a stack is never stored (`loss::STACK_UNCHECKED`): stored, it
    /// would keep the cut for the rest of the run.
    pub const UNCHECKED: u32 = 2;
}

/// Why the kernel side woke user space. Rare by construction (once per new process or stack),
/// so user space can snapshot a short-lived process's mappings while it still lives.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Event {
    pub tgid: u32,
    pub kind: u32,
}
const _: () = assert!(size_of::<Event>() == 8);

pub mod event {
    pub const NEW_PROCESS: u32 = 0;
    pub const NEW_STACK: u32 = 1;
}

/// FNV-1a offset basis and prime, for stack hashing (kernel side) and tests (user side).
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
pub const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// One step of the stack hash: folds in a return address (then, last, the frame count),
/// starting from FNV_OFFSET. The fold of the high half into the low keeps the low bits
/// dependent on every address bit.
#[inline(always)]
pub fn stack_hash_step(h: u64, v: u64) -> u64 {
    let h = (h ^ v).wrapping_mul(FNV_PRIME);
    h ^ (h >> 32)
}

/// The log2 bucket of `v`: 0 for 0, else the number of significant bits, capped at the last.
#[inline(always)]
pub fn log2_bucket(v: u64) -> usize {
    let bits = (64 - v.leading_zeros()) as usize;
    if bits >= HIST_BUCKETS {
        HIST_BUCKETS - 1
    } else {
        bits
    }
}

/// [`log2_bucket`] for the eBPF programs: BPF has no count-leading-zeros instruction, and
/// LLVM's expansion of `leading_zeros` is a chain of ~30 dependent instructions; a binary
/// search on the bit count is six compares, which the CPU predicts for a site's usual sizes.
#[inline(always)]
pub fn log2_bucket_searched(v: u64) -> usize {
    let mut bits = 0u64;
    let mut x = v;
    if x >> 32 != 0 {
        bits += 32;
        x >>= 32;
    }
    if x >> 16 != 0 {
        bits += 16;
        x >>= 16;
    }
    if x >> 8 != 0 {
        bits += 8;
        x >>= 8;
    }
    if x >> 4 != 0 {
        bits += 4;
        x >>= 4;
    }
    if x >> 2 != 0 {
        bits += 2;
        x >>= 2;
    }
    if x >> 1 != 0 {
        bits += 1;
        x >>= 1;
    }
    // x is now 0 (v was 0) or 1.
    let bits = (bits + x) as usize;
    if bits >= HIST_BUCKETS {
        HIST_BUCKETS - 1
    } else {
        bits
    }
}

/// Lower bound of histogram bucket `i` (see [`log2_bucket`]).
pub fn bucket_floor(i: usize) -> u64 {
    if i == 0 {
        0
    } else {
        1u64 << (i - 1)
    }
}

/// nmemb × size for calloc/reallocarray; on overflow the call fails and records nothing, so
/// the value then only has to be above PTRDIFF_MAX (it is never counted).
///
/// Without a branch: a branch gives the verifier two states for the size (a constant and an
/// unknown), and it walked the rest of the program once for each (calloc's and
/// reallocarray's programs took 0.6 s each to load, malloc's 0.19 s).
#[inline(always)]
pub fn array_bytes(n: u64, size: u64) -> u64 {
    // The high half of the 128-bit product from 32-bit halves: checked_mul or u128 lower to
    // a 128-bit multiply, which BPF lacks, and LLVM recognizes this sum as one too unless
    // each half comes from its own (volatile) read.
    const LOW: u64 = 0xffff_ffff;
    // SAFETY: reads locals.
    let [n_lo, n_hi, s_lo, s_hi] = unsafe {
        use core::ptr::read_volatile as read;
        [
            read(&n) & LOW,
            read(&n) >> 32,
            read(&size) & LOW,
            read(&size) >> 32,
        ]
    };
    let (ll, lh, hl) = (n_lo * s_lo, n_lo * s_hi, n_hi * s_lo);
    let mid = (ll >> 32) + (lh & LOW) + (hl & LOW);
    let high = (n_hi * s_hi) + (lh >> 32) + (hl >> 32) + (mid >> 32);
    // Bit 63 of high | -high is set exactly when high is not 0. Read twice through volatile
    // reads, so LLVM cannot see the idiom and turn it back into a compare (a branch in BPF).
    // SAFETY: reads a local.
    let (a, b) = unsafe {
        (
            core::ptr::read_volatile(&high),
            core::ptr::read_volatile(&high),
        )
    };
    n.wrapping_mul(size) | ((a | b.wrapping_neg()) & (1 << 63))
}

/// Sampling by bytes (`--sample-bytes N`): the distance in bytes between two sampled
/// allocations is drawn from an exponential distribution of mean N, as Go's MemProfileRate
/// and tcmalloc do, so an allocation of `s` bytes is sampled with probability 1 − e^(−s/N)
/// whatever the sizes around it. Integer arithmetic only: this runs in the kernel.
pub mod sampling {
    /// The largest mean interval (`--sample-bytes`) the arithmetic below is exact for.
    pub const MAX_MEAN: u64 = 1 << 40;

    /// log2(1 + x) for x in [0, 1) as Q16 (x = f / 65536): a quartic with p(0) = 0 and
    /// p(1) = 1, least-squares fitted; error below 1.5e-4.
    #[inline(always)]
    fn log2_1p_q16(f: u64) -> u64 {
        const C: [i64; 4] = [94246, -44222, 20775, -5263];
        let x = f as i64;
        let mut p = C[3];
        p = C[2] + ((p * x) >> 16);
        p = C[1] + ((p * x) >> 16);
        p = C[0] + ((p * x) >> 16);
        ((p * x) >> 16).clamp(0, 65536) as u64
    }

    /// log2(v) as Q16, for v ≥ 1.
    #[inline(always)]
    pub fn log2_q16(v: u64) -> u64 {
        let v = if v == 0 { 1 } else { v };
        let e = 63 - v.leading_zeros() as u64;
        // The 16 bits below the leading one, as the fraction of the mantissa.
        let frac = if e >= 16 {
            (v >> (e - 16)) & 0xffff
        } else {
            (v << (16 - e)) & 0xffff
        };
        (e << 16) + log2_1p_q16(frac)
    }

    /// ln 2 in Q16.
    const LN2_Q16: u64 = 45426;

    /// An exponentially distributed interval of mean `mean` bytes (at least 1) from 32 random
    /// bits: −ln(U) · mean with U = (r + 1) / 2³² uniform in (0, 1].
    #[inline(always)]
    pub fn next_interval(r: u32, mean: u64) -> u64 {
        let mean = if mean > MAX_MEAN { MAX_MEAN } else { mean };
        // −log2(U) = 32 − log2(r + 1), in Q16: at most 32 << 16.
        let neg_log2 = (32u64 << 16).saturating_sub(log2_q16(r as u64 + 1));
        let neg_ln = (neg_log2 * LN2_Q16) >> 16;
        let v = (neg_ln * mean) >> 16;
        if v == 0 {
            1
        } else {
            v
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn log2_is_close() {
            for v in [
                1u64,
                2,
                3,
                5,
                1000,
                65535,
                65536,
                1 << 31,
                (1 << 32) - 1,
                1 << 32,
            ] {
                let got = log2_q16(v) as f64 / 65536.0;
                let want = (v as f64).log2();
                assert!((got - want).abs() < 2e-4, "log2({v}) = {got}, want {want}");
            }
        }

        /// The mean of the intervals over evenly spread random values is the requested mean
        /// (the integral of −ln U over (0, 1] is 1), to 0.1%.
        #[test]
        fn intervals_average_the_mean() {
            for mean in [1u64 << 12, 512 * 1024, 1 << 30] {
                let n = 1u64 << 20;
                let step = (1u64 << 32) / n;
                let sum: f64 = (0..n)
                    .map(|i| next_interval((i * step + step / 2) as u32, mean) as f64)
                    .sum();
                let avg = sum / n as f64;
                assert!(
                    (avg / mean as f64 - 1.0).abs() < 1e-3,
                    "mean {mean}: average interval {avg}"
                );
            }
            assert_eq!(next_interval(u32::MAX, 1), 1);
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all these are #[repr(C)] plain-old-data with explicit padding and no pointers.
    unsafe impl aya::Pod for StackKey {}
    unsafe impl aya::Pod for StackTrace {}
    unsafe impl aya::Pod for SiteStats {}
    unsafe impl aya::Pod for LiveSlot {}
    unsafe impl aya::Pod for AllocInfo {}
    unsafe impl aya::Pod for CallState {}
    unsafe impl aya::Pod for ProcStats {}
    unsafe impl aya::Pod for OwnedTotals {}
    unsafe impl aya::Pod for Event {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    /// calloc's size: the product when it fits in 64 bits, else a value above PTRDIFF_MAX
    /// (never counted), for operands around every power of two and the extremes.
    #[test]
    fn array_bytes_is_the_product_or_above_ptrdiff_max() {
        let mut values = std::vec![0u64, 1, 2, 3, u64::MAX, u64::MAX - 1, 0xffff_ffff];
        for b in 0..64 {
            let p = 1u64 << b;
            values.extend([p - 1, p, p + 1, p.wrapping_mul(3)]);
        }
        for &n in &values {
            for &size in &values {
                let got = array_bytes(n, size);
                match n.checked_mul(size) {
                    Some(product) => assert_eq!(got, product, "{n} x {size}"),
                    None => assert!(got > i64::MAX as u64, "{n} x {size} overflows: {got}"),
                }
            }
        }
    }

    /// The eBPF programs' bucket is user space's: every power of two, its neighbours, and
    /// the extremes.
    #[test]
    fn searched_log2_matches_leading_zeros() {
        let mut values = std::vec![0u64, 1, u64::MAX];
        for s in 0..64 {
            let p = 1u64 << s;
            values.extend([p - 1, p, p + 1, p | (p >> 1), p.wrapping_mul(3)]);
        }
        for v in values {
            assert_eq!(log2_bucket_searched(v), log2_bucket(v), "v = {v}");
        }
    }
}
