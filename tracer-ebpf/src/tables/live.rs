//! The in-flight table: insert a new block, take a freed one. The layout and the protocol
//! are in alloctrace_common (`LiveSlot`), shared with user space, which retires exited
//! processes' slots.
use core::intrinsics::{atomic_cxchg, AtomicOrdering};
use core::ptr::{read_volatile, write_volatile};

use alloctrace_common::{live, AllocInfo, LiveSlot};

use crate::config::{global, LIVE_MASK};
use crate::tables::maps::LIVE;

/// Where the search for (tgid, addr) starts, and the table's index mask: computed once per
/// search, not per slot.
#[inline(always)]
fn window(tgid: u32, addr: u64) -> (u64, u64) {
    let mask = global(&LIVE_MASK);
    (live::home(tgid, addr, mask), mask)
}

#[inline(always)]
fn slot((home, mask): (u64, u64), i: u64) -> Option<&'static mut LiveSlot> {
    // SAFETY: an array slot lives as long as the map.
    LIVE.get_ptr_mut(((home + i) & mask) as u32)
        .map(|p| unsafe { &mut *p })
}

/// What became of a block `insert` was given.
pub enum Inserted {
    Stored,
    /// Stored over a stale record of the same address (see `LiveSlot`): a loss to count.
    OverStale,
    /// Every slot of its window is taken: a loss to count.
    Full,
}

/// Records a new block.
#[inline(always)]
pub fn insert(tgid: u32, addr: u64, info: &AllocInfo) -> Inserted {
    let w = window(tgid, addr);
    for i in 0..live::WINDOW {
        let Some(s) = slot(w, i) else {
            return Inserted::Full;
        };
        // SAFETY: `s` points into the map; volatile keeps these accesses where they are.
        let seen = unsafe { read_volatile(&s.addr) };
        if seen != live::EMPTY && seen != live::DEAD {
            // SAFETY: as above. The stale record is this process's, whose threads cannot be
            // freeing a block at this address: nothing else writes the slot.
            if seen == addr && unsafe { read_volatile(&s.tgid) } == tgid {
                unsafe { write_info(s, info) };
                return Inserted::OverStale;
            }
            continue;
        }
        // SAFETY: a compare-and-swap on a map value; losing the race means another insert
        // took the slot first.
        let (_, won) = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
                &mut s.addr,
                seen,
                addr,
            )
        };
        if !won {
            continue;
        }
        // SAFETY: the slot is ours until `tgid` publishes it.
        unsafe {
            write_info(s, info);
            write_volatile(&mut s.tgid, tgid);
        }
        return Inserted::Stored;
    }
    Inserted::Full
}

/// # Safety
/// Only the thread that owns the slot writes it.
#[inline(always)]
unsafe fn write_info(s: &mut LiveSlot, info: &AllocInfo) {
    // SAFETY: per the caller.
    unsafe {
        write_volatile(&mut s.info.size, info.size);
        write_volatile(&mut s.info.stack_hash, info.stack_hash);
        write_volatile(&mut s.info.ts_ns, info.ts_ns);
    }
}

/// Removes the block (tgid, addr) and returns its record, if it is in the table.
#[inline(always)]
pub fn take(tgid: u32, addr: u64) -> Option<AllocInfo> {
    let w = window(tgid, addr);
    for i in 0..live::WINDOW {
        let s = slot(w, i)?;
        // SAFETY: as in `insert`.
        let seen = unsafe { read_volatile(&s.addr) };
        if seen == live::EMPTY {
            return None;
        }
        if seen != addr || unsafe { read_volatile(&s.tgid) } != tgid {
            continue;
        }
        // SAFETY: the block is this process's and being freed by this thread: nothing else
        // writes the slot until it is marked dead.
        unsafe {
            let info = AllocInfo {
                size: read_volatile(&s.info.size),
                stack_hash: read_volatile(&s.info.stack_hash),
                ts_ns: read_volatile(&s.info.ts_ns),
            };
            write_volatile(&mut s.tgid, 0);
            write_volatile(&mut s.addr, live::DEAD);
            return Some(info);
        }
    }
    None
}
