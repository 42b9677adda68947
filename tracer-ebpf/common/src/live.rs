//! The in-flight table (map LIVE): every allocated block not yet freed (`AllocInfo`) in slots
//! (`LiveSlot`) of an open-addressing hash table, where a block's search starts, and how big
//! the table is for a number of blocks.
use core::mem::size_of;

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
    crate::hash::fmix64((addr >> 4) ^ (tgid as u64).rotate_right(20)) & mask
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
