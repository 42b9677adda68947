//! The site table: find the counters a site counts in on this CPU, claim a slot for a new
//! site. The layout and the protocol (lanes included) are in alloctrace_common (`SiteSlot`),
//! shared with user space, which reads the counters in place and retires exited processes'
//! slots.
use core::intrinsics::{atomic_cxchg, atomic_xadd, AtomicOrdering};
use core::ptr::{read_volatile, write_volatile};

use alloctrace_common::{sites, SiteSlot};
use aya_ebpf::{cty::c_void, helpers::bpf_get_smp_processor_id};

use crate::bounded::repeat;
use crate::config::{global, SITE_HOMES};
use crate::tables::maps::{SITES, SITE_CLAIMS};

#[inline(always)]
fn slot(i: u64) -> Option<&'static mut SiteSlot> {
    // SAFETY: an array slot lives as long as the map; its counters are updated atomically.
    SITES.get_ptr_mut(i as u32).map(|p| unsafe { &mut *p })
}

/// The slot this CPU counts site (tgid, hash) in: its lane's, claimed now if it has none and
/// the spread budget allows, else lane 0's. None when the site has no slot at all (a new
/// stack).
#[inline(always)]
pub fn counters(tgid: u32, hash: u64) -> Option<&'static mut SiteSlot> {
    let i = counters_index(tgid, hash);
    if i == NOT_FOUND {
        return None;
    }
    slot(i)
}

/// `counters`' search: the index of the slot, or NOT_FOUND.
///
/// A BPF-to-BPF call, not inlined: its many paths (lanes, budget, three searches) end in
/// one scalar, so the verifier walks the caller's rest once, not once per path.
#[inline(never)]
fn counters_index(tgid: u32, hash: u64) -> u64 {
    // SAFETY: a helper without preconditions; the program cannot migrate while it runs.
    let lane = unsafe { bpf_get_smp_processor_id() } & (sites::LANES - 1);
    if lane != 0 {
        if let Some(i) = search::<{ sites::LANE_WINDOW }>(tgid, hash, lane) {
            return i;
        }
    }
    let Some(first) = search::<{ sites::WINDOW }>(tgid, hash, 0) else {
        return NOT_FOUND;
    };
    if lane != 0 && take_spread() {
        if let Some((i, new)) = take::<{ sites::LANE_WINDOW }>(tgid, hash, lane) {
            if !new {
                // Another CPU of this lane claimed it first.
                give_spread();
            }
            return i;
        }
        give_spread();
    }
    first
}

/// The spread budget's counter (`sites::SPREAD_LEFT`): added to atomically, as user space and
/// other CPUs add to it too.
#[inline(always)]
fn spread_left() -> Option<&'static mut u64> {
    // SAFETY: a map value that lives as long as the map.
    SITE_CLAIMS
        .get_ptr_mut(sites::SPREAD_LEFT)
        .map(|p| unsafe { &mut *p })
}

/// Takes a unit of the spread budget: whether there was one. By compare-and-swap: an atomic
/// add whose result is used compiles here to a plain one whose result is lost.
#[inline(always)]
fn take_spread() -> bool {
    let Some(left) = spread_left() else {
        return false;
    };
    // A few tries: losing them all to other CPUs only leaves this lane in lane 0's slot.
    for _ in 0..4 {
        // SAFETY: reads a map value other CPUs and user space change atomically.
        let seen = unsafe { read_volatile(left) };
        if seen as i64 <= 0 {
            return false;
        }
        // SAFETY: a compare-and-swap on a map value.
        let (_, won) = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
                left,
                seen,
                seen - 1,
            )
        };
        if won {
            return true;
        }
    }
    false
}

/// Gives back a unit `take_spread` took.
#[inline(always)]
fn give_spread() {
    if let Some(left) = spread_left() {
        // SAFETY: an atomic add on a map value.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(left, 1) };
    }
}

/// One search of a window of the site table: the slot to look at next, the site, and what
/// was found. The steps run in a `bpf_loop` (`bounded`), verified once: a search returns
/// an index, looked up once after it (a pointer per exit would be a distinct value to the
/// verifier, which would walk the rest of the program once per exit).
#[repr(C)]
struct Search {
    /// The slot of the current step (the window's first at step 0).
    i: u64,
    hash: u64,
    tgid: u32,
    lane: u32,
    /// The slot found, or NOT_FOUND.
    found: u64,
    /// `take`: whether it claimed the slot found (1) or another CPU had (0).
    new: u64,
}

const NOT_FOUND: u64 = u64::MAX;

impl Search {
    #[inline(always)]
    fn new(tgid: u32, hash: u64, lane: u32) -> Self {
        Search {
            i: sites::home(tgid, hash, lane, global(&SITE_HOMES)),
            hash,
            tgid,
            lane,
            found: NOT_FOUND,
            new: 0,
        }
    }

    /// The slot found: stopped at the slot of the current step.
    #[inline(always)]
    fn found(&mut self, new: u64) -> i64 {
        self.found = self.i;
        self.new = new;
        1
    }
}

/// The index of site (tgid, hash)'s slot on `lane`, among the first W slots from its home.
#[inline(always)]
fn search<const W: u64>(tgid: u32, hash: u64, lane: u32) -> Option<u64> {
    let mut s = Search::new(tgid, hash, lane);
    repeat(W as u32, search_step, &mut s);
    (s.found != NOT_FOUND).then_some(s.found)
}

/// `search`'s step: stops (1) at the site's slot, at an empty slot (the site has none: an
/// empty slot is never claimed behind a used one) or at one the map cannot give.
extern "C" fn search_step(_: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Search` `search` passed.
    let w = unsafe { &mut *(ctx as *mut Search) };
    let Some(s) = slot(w.i) else {
        return 1;
    };
    // SAFETY: `s` points into the map; volatile keeps the reads where they are.
    let seen = unsafe { read_volatile(&s.hash) };
    if seen == sites::EMPTY {
        return 1;
    }
    if seen == w.hash && unsafe { read_volatile(&s.tgid) } == w.tgid {
        return w.found(0);
    }
    w.i += 1;
    0
}

/// Lane 0's slot of a new site (tgid, hash), claimed now: the slot, and whether it is new.
/// None when every slot of its window is taken (a loss to count).
#[inline(always)]
pub fn claim(tgid: u32, hash: u64) -> Option<(&'static mut SiteSlot, bool)> {
    let (i, new) = take::<{ sites::WINDOW }>(tgid, hash, 0)?;
    // SAFETY: reads a local (one lookup for both outcomes, as in `counters`).
    Some((slot(unsafe { read_volatile(&i) })?, new))
}

/// `claim`'s search on `lane`: the slot's index, and whether it is new.
#[inline(always)]
fn take<const W: u64>(tgid: u32, hash: u64, lane: u32) -> Option<(u64, bool)> {
    let mut s = Search::new(tgid, hash, lane);
    repeat(W as u32, take_step, &mut s);
    (s.found != NOT_FOUND).then_some((s.found, s.new != 0))
}

/// `take`'s step: stops (1) at the site's slot (claimed by another CPU since this one's
/// search), at a free slot it claims, or at one the map cannot give.
extern "C" fn take_step(_: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Search` `take` passed.
    let w = unsafe { &mut *(ctx as *mut Search) };
    let Some(s) = slot(w.i) else {
        return 1;
    };
    let (hash, tgid) = (w.hash, w.tgid);
    // SAFETY: as in `search_step`.
    let seen = unsafe { read_volatile(&s.hash) };
    if seen == hash && unsafe { read_volatile(&s.tgid) } == tgid {
        // Another CPU claimed it since this one's search.
        return w.found(0);
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
            // user space before it was marked dead). The lane before the owner: the slot
            // matches only once `tgid` is set.
            unsafe {
                write_volatile(&mut s.lane, w.lane);
                write_volatile(&mut s.tgid, tgid);
            }
            if let Some(c) = SITE_CLAIMS.get_ptr_mut(sites::CLAIMS) {
                // SAFETY: a map value; tells user space to look for new slots.
                unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Release }>(c, 1) };
            }
            return w.found(1);
        }
    }
    w.i += 1;
    0
}
