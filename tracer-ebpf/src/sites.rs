//! The site table: find a site's counters, claim a slot for a new one. The layout and the
//! protocol are in alloctrace_common (`SiteSlot`), shared with user space, which reads the
//! counters in place and retires exited processes' slots.
use core::intrinsics::{atomic_cxchg, atomic_xadd, AtomicOrdering};
use core::ptr::{read_volatile, write_volatile};

use alloctrace_common::{sites, SiteSlot};

use crate::maps::{SITES, SITE_CLAIMS};
use crate::{global, SITE_HOMES};

#[inline(always)]
fn slot(i: u64) -> Option<&'static mut SiteSlot> {
    // SAFETY: an array slot lives as long as the map; its counters are updated atomically.
    SITES.get_ptr_mut(i as u32).map(|p| unsafe { &mut *p })
}

/// The slot of site (tgid, hash), if it has one.
#[inline(always)]
pub fn find(tgid: u32, hash: u64) -> Option<&'static mut SiteSlot> {
    slot(search(tgid, hash)?)
}

/// The index of site (tgid, hash)'s slot. The searches return an index, looked up once
/// after the loop: a pointer from each iteration would be a distinct value to the verifier,
/// which would then walk the rest of the program once per iteration.
#[inline(always)]
fn search(tgid: u32, hash: u64) -> Option<u64> {
    let n = global(&SITE_HOMES);
    let mut i = sites::home(tgid, hash, n);
    for _ in 0..sites::WINDOW {
        let s = slot(i)?;
        // SAFETY: `s` points into the map; volatile keeps the reads where they are.
        let seen = unsafe { read_volatile(&s.hash) };
        if seen == sites::EMPTY {
            return None;
        }
        if seen == hash && unsafe { read_volatile(&s.tgid) } == tgid {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// The slot of site (tgid, hash), claimed now if it has none: the slot, and whether it is
/// new. None when every slot of its window is taken (a loss to count).
#[inline(always)]
pub fn claim(tgid: u32, hash: u64) -> Option<(&'static mut SiteSlot, bool)> {
    let (i, new) = take(tgid, hash)?;
    Some((slot(i)?, new))
}

/// `claim`'s search: the slot's index, and whether it is new.
#[inline(always)]
fn take(tgid: u32, hash: u64) -> Option<(u64, bool)> {
    let n = global(&SITE_HOMES);
    let mut i = sites::home(tgid, hash, n);
    for _ in 0..sites::WINDOW {
        let s = slot(i)?;
        // SAFETY: as in `find`.
        let seen = unsafe { read_volatile(&s.hash) };
        if seen == hash && unsafe { read_volatile(&s.tgid) } == tgid {
            // Another CPU claimed it since this one's search.
            return Some((i, false));
        }
        if seen == sites::EMPTY || seen == sites::DEAD {
            // SAFETY: a compare-and-swap on a map value; losing the race means another
            // claim took the slot first.
            let (_, won) = unsafe {
                atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
                    &mut s.hash,
                    seen,
                    hash,
                )
            };
            if won {
                // SAFETY: the slot is ours; its counters are zero (never used, or zeroed by
                // user space before it was marked dead).
                unsafe { write_volatile(&mut s.tgid, tgid) };
                if let Some(c) = SITE_CLAIMS.get_ptr_mut(0) {
                    // SAFETY: a map value; tells user space to look for new slots.
                    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Release }>(c, 1) };
                }
                return Some((i, true));
            }
        }
        i += 1;
    }
    None
}
