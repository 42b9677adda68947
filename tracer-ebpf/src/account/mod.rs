//! Accounting: an allocation or a free counted at its site (counters and histograms), or,
//! without one, in its process's unattributed totals. User space adds the two for a process's
//! totals.
pub mod blocks;
pub mod loss;
pub mod process;

use alloctrace_common::{log2_bucket_searched, AllocInfo, SiteStats, HIST_BUCKETS};
use aya_ebpf::EbpfContext;

use crate::account::blocks::Now;
use crate::account::process::{proc_stats, unattributed};
use crate::tables::{add, sites};

/// Counts one allocation at its site, or, when it has none (unsampled, or its stack could not
/// be stored), in its process's unattributed totals. User space adds the two for the
/// process's totals, so an allocation with a site costs one map update, not two.
#[inline(always)]
pub fn count_alloc<C: EbpfContext>(ctx: &C, tgid: u32, site: Option<&mut SiteStats>, size: u64) {
    tally_alloc(ctx, tgid, site, size, 1);
}

/// Adds `n` allocations of `size` bytes (n = u64::MAX: takes one back, as two's complement).
#[inline(always)]
fn tally_alloc<C: EbpfContext>(
    ctx: &C,
    tgid: u32,
    site: Option<&mut SiteStats>,
    size: u64,
    n: u64,
) {
    let bytes = size.wrapping_mul(n);
    match site {
        Some(site) => {
            add(&mut site.bytes, bytes);
            add(&mut site.size_hist[hist_index(size)], n);
        }
        None => {
            if let Some(u) = unattributed(ctx, tgid) {
                add(&mut u.allocs, n);
                add(&mut u.bytes, bytes);
            }
        }
    }
}

/// `log2_bucket(v)`, bounded where the verifier can see it: it cannot follow the search's
/// arithmetic, and LLVM drops a plain mask it proves redundant, so the mask follows a
/// volatile read.
#[inline(always)]
fn hist_index(v: u64) -> usize {
    let i = log2_bucket_searched(v);
    // SAFETY: reads a local.
    unsafe { core::ptr::read_volatile(&i) & (HIST_BUCKETS - 1) }
}

/// The site of (tgid, stack hash), if it has one.
#[inline(always)]
fn site(tgid: u32, stack_hash: u64) -> Option<&'static mut SiteStats> {
    if stack_hash == 0 {
        return None;
    }
    sites::counters(tgid, stack_hash).map(|s| &mut s.stats)
}

/// Takes back what `count_alloc` counted at the entry of a call that failed (NULL, an error,
/// realloc(p, 0)): the counters end exact, and a drain between the two sees one allocation
/// in flight.
#[inline(always)]
pub fn uncount_alloc<C: EbpfContext>(ctx: &C, tgid: u32, stack_hash: u64, size: u64) {
    tally_alloc(ctx, tgid, site(tgid, stack_hash), size, u64::MAX);
}

/// As `count_alloc`, for a free: at the block's site, or in the process's unattributed totals.
#[inline(always)]
pub fn record_freed<C: EbpfContext>(ctx: &C, tgid: u32, info: &AllocInfo, now: &mut Now) {
    match site(tgid, info.stack_hash) {
        Some(site) => {
            add(&mut site.freed_bytes, info.size);
            let life = now.get().saturating_sub(info.ts_ns);
            add(&mut site.life_hist[hist_index(life)], 1);
        }
        None => {
            if let Some(u) = unattributed(ctx, tgid) {
                add(&mut u.frees, 1);
                add(&mut u.freed_bytes, info.size);
            }
        }
    }
}

#[inline(always)]
pub fn count_unknown_free<C: EbpfContext>(ctx: &C, tgid: u32) {
    if let Some(p) = proc_stats(ctx, tgid) {
        add(&mut p.unknown_frees, 1);
    }
}
