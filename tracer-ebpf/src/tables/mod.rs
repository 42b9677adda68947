//! The kernel tables the programs share with user space: every map (`maps`), the per-thread
//! task storage, and the two open-addressing tables over BPF arrays, the in-flight blocks
//! (`live`) and the allocation sites (`sites`).
pub mod live;
pub mod maps;
pub mod sites;
pub mod task_storage;

use core::intrinsics::{atomic_xadd, AtomicOrdering};

/// `bpf_map_update_elem`'s flag: insert only if the key is absent.
pub const BPF_NOEXIST: u64 = 1;

/// Adds `v` to a counter in a map value.
#[inline(always)]
pub fn add(counter: &mut u64, v: u64) {
    // SAFETY: `counter` points into a map value that lives as long as the map; the add is a
    // single atomic instruction (BPF XADD: core's AtomicU64 has no fetch_add on the BPF target),
    // so concurrent CPUs never lose an increment.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, v) };
}
