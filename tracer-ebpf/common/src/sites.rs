//! The site table (map SITES): every allocation site's counters (`SiteStats`) in slots
//! (`SiteSlot`) of an open-addressing hash table, where a site's search starts, and how big
//! the table is for a number of sites.
use core::mem::size_of;

use crate::hist::HIST_BUCKETS;

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
    let h = (hash ^ who.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0xff51_afd7_ed55_8ccd);
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
    fn with_lanes(max: u32, sites: std::vec::Vec<(u32, u64)>) -> std::vec::Vec<(u32, u64, u32)> {
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
