//! The in-flight table: insert a new block, take a freed one. The layout and the protocol
//! are in alloctrace_common (`LiveSlot`), shared with user space, which retires exited
//! processes' slots.
use core::intrinsics::{atomic_cxchg, AtomicOrdering};
use core::ptr::{read_volatile, write_volatile};

use alloctrace_common::{live, AllocInfo, LiveSlot};
use aya_ebpf::cty::c_void;

use crate::bounded::repeat;

use crate::config::{global, LIVE_MASK};
use crate::tables::maps::LIVE;

/// One search of the table for (tgid, addr): its window's start and the table's index
/// mask, computed once per search, the block's record (to insert, or as taken), and what
/// the search found. The steps run in a `bpf_loop` (`bounded`), verified once.
#[repr(C)]
struct Search {
    home: u64,
    mask: u64,
    addr: u64,
    tgid: u64,
    info: AllocInfo,
    /// `insert`: an `Inserted` as u64; `take`: 1 when the block was found (in `info`).
    outcome: u64,
}

impl Search {
    #[inline(always)]
    fn new(tgid: u32, addr: u64, info: AllocInfo, outcome: u64) -> Self {
        let mask = global(&LIVE_MASK);
        Search {
            home: live::home(tgid, addr, mask),
            mask,
            addr,
            tgid: tgid as u64,
            info,
            outcome,
        }
    }

    /// Slot `i` of the window.
    #[inline(always)]
    fn slot(&self, i: u64) -> Option<&'static mut LiveSlot> {
        // SAFETY: an array slot lives as long as the map.
        LIVE.get_ptr_mut(((self.home + i) & self.mask) as u32)
            .map(|p| unsafe { &mut *p })
    }
}

/// What became of a block `insert` was given.
#[derive(Clone, Copy)]
pub enum Inserted {
    Stored = 0,
    /// Stored over a stale record of the same address (see `LiveSlot`): a loss to count.
    OverStale = 1,
    /// Every slot of its window is taken: a loss to count.
    Full = 2,
}

/// Records a new block.
#[inline(always)]
pub fn insert(tgid: u32, addr: u64, info: &AllocInfo) -> Inserted {
    let mut s = Search::new(tgid, addr, *info, Inserted::Full as u64);
    repeat(live::WINDOW as u32, insert_step, &mut s);
    match s.outcome {
        0 => Inserted::Stored,
        1 => Inserted::OverStale,
        _ => Inserted::Full,
    }
}

/// `insert`'s step `i`: tries slot `i` of the window; stops (1) once the block is stored,
/// or at a slot the map cannot give (then Full).
extern "C" fn insert_step(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Search` `insert` passed.
    let w = unsafe { &mut *(ctx as *mut Search) };
    let Some(s) = w.slot(i) else {
        return 1;
    };
    let (addr, tgid) = (w.addr, w.tgid as u32);
    // SAFETY: `s` points into the map; volatile keeps these accesses where they are.
    let seen = unsafe { read_volatile(&s.addr) };
    if seen != live::EMPTY && seen != live::DEAD {
        // SAFETY: as above. The stale record is this process's, whose threads cannot be
        // freeing a block at this address: nothing else writes the slot.
        if seen == addr && unsafe { read_volatile(&s.tgid) } == tgid {
            unsafe { write_info(s, &w.info) };
            w.outcome = Inserted::OverStale as u64;
            return 1;
        }
        return 0;
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
        return 0;
    }
    // SAFETY: the slot is ours until `tgid` publishes it.
    unsafe {
        write_info(s, &w.info);
        write_volatile(&mut s.tgid, tgid);
    }
    w.outcome = Inserted::Stored as u64;
    1
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
    let mut s = Search::new(tgid, addr, AllocInfo::default(), 0);
    repeat(live::WINDOW as u32, take_step, &mut s);
    (s.outcome != 0).then_some(s.info)
}

/// `take`'s step `i`: takes the block if slot `i` holds it; stops (1) there, at an empty
/// slot (the block is not in the table), or at a slot the map cannot give.
extern "C" fn take_step(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Search` `take` passed.
    let w = unsafe { &mut *(ctx as *mut Search) };
    let Some(s) = w.slot(i) else {
        return 1;
    };
    // SAFETY: as in `insert_step`.
    let seen = unsafe { read_volatile(&s.addr) };
    if seen == live::EMPTY {
        return 1;
    }
    if seen != w.addr || unsafe { read_volatile(&s.tgid) } != w.tgid as u32 {
        return 0;
    }
    // SAFETY: the block is this process's and being freed by this thread: nothing else
    // writes the slot until it is marked dead.
    unsafe {
        w.info = AllocInfo {
            size: read_volatile(&s.info.size),
            stack_hash: read_volatile(&s.info.stack_hash),
            ts_ns: read_volatile(&s.info.ts_ns),
        };
        write_volatile(&mut s.tgid, 0);
        write_volatile(&mut s.addr, live::DEAD);
    }
    w.outcome = 1;
    1
}
