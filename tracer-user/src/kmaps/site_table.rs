//! User space's side of the kernel's site table (map SITES, a BPF array of `SiteSlot`s it
//! mmaps): reading every site's counters in place (a site's lanes added up), and retiring the
//! sites of processes that exited so their slots serve new sites. Same protocol as the
//! kernel's (alloctrace_common's `SiteSlot`).
//!
//! A drain reads only the slots in use, found by a scan of the slots' headers when the
//! kernel's count of claims has moved since the last one: its cost follows the sites, not
//! the table's capacity. An interval's drain ([`SiteTable::read_counters`]) sums each site's
//! histograms in place into its four counters, with no copy of the histograms, and says which
//! sites moved since the last read, so that only those cost more than the read. A quick read
//! (the drains between intervals, every `--resolution`) sums a slot's histograms only when its
//! byte counters moved: an idle site costs one cache line.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use alloctrace_common::{sites, SiteSlot, SiteStats, StackKey, HIST_BUCKETS};
use aya::maps::Map;

use crate::kmaps::shared_array::SharedArray;
use crate::model::Counters;

#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error("map SITES is not an array")]
    NotArray,
    #[error("cannot map the site table: {0}")]
    Mmap(std::io::Error),
    #[error("map SITE_CLAIMS is not an array")]
    ClaimsNotArray,
    #[error("cannot map the site table's counts: {0}")]
    ClaimsMmap(std::io::Error),
}

pub struct SiteTable {
    slots: SharedArray<SiteSlot>,
    /// The map SITE_CLAIMS: `sites::CLAIMS` and `sites::SPREAD_LEFT`.
    counts: SharedArray<u64>,
    /// Slots in use at the last scan.
    known: Vec<usize>,
    /// The sites of `known`'s slots: `sites_of[j]` is the index in `keys` of slot
    /// `known[j]`'s site (a site with lanes has several slots).
    sites_of: Vec<usize>,
    keys: Vec<StackKey>,
    /// Each site's counters at the last `read_counters` (None: not read since grouping).
    last: Vec<Option<Counters>>,
    /// Each slot of `known`'s counters at the last `read_counters` (None: not read since
    /// grouping).
    slot_last: Vec<Option<Counters>>,
    /// The kernel's count of claims the last scan saw.
    scanned_at: Option<u64>,
}

/// The words of a `SiteStats`, in order: every field is a u64.
const STATS_WORDS: usize = size_of::<SiteStats>() / 8;
const _: () = assert!(STATS_WORDS == 2 + 2 * HIST_BUCKETS);
/// Where `SiteStats`' histograms lie among its words (after `bytes` and `freed_bytes`).
const SIZE_HIST: std::ops::Range<usize> = 2..2 + HIST_BUCKETS;
const LIFE_HIST: std::ops::Range<usize> = 2 + HIST_BUCKETS..STATS_WORDS;
const _: () = assert!(std::mem::offset_of!(SiteStats, size_hist) == 8 * SIZE_HIST.start);
const _: () = assert!(std::mem::offset_of!(SiteStats, life_hist) == 8 * LIFE_HIST.start);
const _: () = assert!(std::mem::offset_of!(SiteStats, freed_bytes) == 8);

/// One site's counters from [`SiteTable::read_counters`].
#[derive(Clone, Copy, Debug)]
pub struct SiteCounters {
    pub key: StackKey,
    pub counters: Counters,
    /// Different from the previous read's (or not read since the slots were last scanned).
    pub changed: bool,
}

/// The header fields of slot `s`, as atomics.
///
/// SAFETY: `s` points into the live mapping; the fields are naturally aligned and the
/// kernel's programs access them atomically or with aligned stores.
unsafe fn header(s: *mut SiteSlot) -> (&'static AtomicU64, &'static AtomicU32) {
    unsafe {
        (
            AtomicU64::from_ptr(&raw mut (*s).hash),
            AtomicU32::from_ptr(&raw mut (*s).tgid),
        )
    }
}

/// The lane of slot `s` (written by the kernel before its owner).
///
/// SAFETY: as `header`.
unsafe fn lane(s: *mut SiteSlot) -> u32 {
    unsafe { AtomicU32::from_ptr(&raw mut (*s).lane) }.load(Ordering::Relaxed)
}

/// Word `w` of slot `s`'s counters, as an atomic.
///
/// SAFETY: as `header`; `w < STATS_WORDS`.
unsafe fn stat_word(s: *mut SiteSlot, w: usize) -> &'static AtomicU64 {
    unsafe { AtomicU64::from_ptr((&raw mut (*s).stats).cast::<u64>().add(w)) }
}

impl SiteTable {
    pub fn new(map: Map, claims: Map, slots: u32) -> Result<Self, SiteError> {
        let Map::Array(map) = map else {
            return Err(SiteError::NotArray);
        };
        let Map::Array(claims) = claims else {
            return Err(SiteError::ClaimsNotArray);
        };
        Ok(SiteTable {
            slots: SharedArray::owning(map, slots as usize).map_err(SiteError::Mmap)?,
            counts: SharedArray::owning(claims, sites::CLAIM_WORDS as usize)
                .map_err(SiteError::ClaimsMmap)?,
            known: Vec::new(),
            sites_of: Vec::new(),
            keys: Vec::new(),
            last: Vec::new(),
            slot_last: Vec::new(),
            scanned_at: None,
        })
    }

    /// Brings `known` (the slots in use) up to date: rescanned when slots were claimed since
    /// the last scan.
    fn in_use(&mut self) {
        // Read before the scan: a claim the scan misses moves the count past this value,
        // and the next read scans again. The kernel counts a claim after writing its slot.
        let claims = Some(self.count(sites::CLAIMS).load(Ordering::Acquire));
        if claims != self.scanned_at {
            self.known.clear();
            for i in 0..self.slots.count() {
                // SAFETY: `i` is within the mapping.
                let (hash, tgid) = unsafe { header(self.slots.slot(i)) };
                let h = hash.load(Ordering::Acquire);
                if h != sites::EMPTY && h != sites::DEAD && tgid.load(Ordering::Acquire) != 0 {
                    self.known.push(i);
                }
            }
            self.scanned_at = claims;
            self.regroup();
        }
    }

    /// Groups `known` by site (after a scan or a retirement: only then do slots change
    /// hands, as a claim moves the kernel's count and rescans).
    fn regroup(&mut self) {
        let mut index: HashMap<StackKey, usize> = HashMap::with_capacity(self.known.len());
        self.keys.clear();
        self.sites_of.clear();
        for &i in &self.known {
            // SAFETY: a known slot is within the mapping.
            let (hash, tgid) = unsafe { header(self.slots.slot(i)) };
            let key = StackKey {
                tgid: tgid.load(Ordering::Acquire),
                _pad: 0,
                hash: hash.load(Ordering::Acquire),
            };
            let keys = &mut self.keys;
            let site = *index.entry(key).or_insert_with(|| {
                keys.push(key);
                keys.len() - 1
            });
            self.sites_of.push(site);
        }
        self.last = vec![None; self.keys.len()];
        self.slot_last = vec![None; self.known.len()];
    }

    /// The slots of `known` that still hold the site they were grouped under, each with that
    /// site's index in `keys` (a slot retired and claimed again since the scan is left out:
    /// the next read rescans).
    fn held_slots(&self) -> impl Iterator<Item = (usize, *mut SiteSlot)> + '_ {
        self.held_slots_at().map(|(_, site, s)| (site, s))
    }

    /// As `held_slots`, each with its index in `known`.
    fn held_slots_at(&self) -> impl Iterator<Item = (usize, usize, *mut SiteSlot)> + '_ {
        self.known
            .iter()
            .zip(&self.sites_of)
            .enumerate()
            .filter_map(|(j, (&i, &site))| {
                let key = self.keys[site];
                let s = self.slots.slot(i);
                // SAFETY: a known slot is within the mapping.
                let (hash, tgid) = unsafe { header(s) };
                let held = tgid.load(Ordering::Acquire) == key.tgid
                    && hash.load(Ordering::Acquire) == key.hash;
                held.then_some((j, site, s))
            })
    }

    /// Every site's four counters (its lanes added up), read in place, and whether they
    /// changed since the last call: what an interval's drain needs, at a fraction of
    /// [`SiteTable::read`]'s cost (no copy of the histograms, no per-site allocation). The
    /// slots are read in table order, which the memory system streams.
    ///
    /// `quick`: a slot whose bytes and freed bytes did not move since the last read is taken
    /// as unchanged without summing its histograms. Only an allocation or a free of zero
    /// bytes moves neither: it is seen at the next read that is not quick.
    pub fn read_counters(&mut self, quick: bool) -> Vec<SiteCounters> {
        self.in_use();
        let mut sums: Vec<Option<Counters>> = vec![None; self.keys.len()];
        let mut slot_now = Vec::with_capacity(self.slot_last.len());
        for (j, site, s) in self.held_slots_at() {
            // SAFETY: a known slot is within the mapping; `w < STATS_WORDS`.
            let w = |w: usize| unsafe { stat_word(s, w) }.load(Ordering::Relaxed);
            let (bytes, freed_bytes) = (w(0), w(1));
            let c = match self.slot_last[j] {
                Some(c) if quick && c.bytes == bytes && c.freed_bytes == freed_bytes => c,
                _ => {
                    let sum = |r: std::ops::Range<usize>| r.fold(0u64, |a, i| a.wrapping_add(w(i)));
                    Counters {
                        allocs: sum(SIZE_HIST),
                        bytes,
                        frees: sum(LIFE_HIST),
                        freed_bytes,
                    }
                }
            };
            slot_now.push((j, c));
            sums[site]
                .get_or_insert_with(Counters::default)
                .add_wrapping(&c);
        }
        for (j, c) in slot_now {
            self.slot_last[j] = Some(c);
        }
        let mut out = Vec::with_capacity(self.keys.len());
        for (site, c) in sums.into_iter().enumerate() {
            let Some(c) = c else { continue };
            let changed = self.last[site] != Some(c);
            self.last[site] = Some(c);
            out.push(SiteCounters {
                key: self.keys[site],
                counters: c,
                changed,
            });
        }
        out
    }

    /// Every site's key and counters. Two slots of one site (two CPUs claimed it at once)
    /// are added up.
    pub fn read(&mut self) -> Vec<(StackKey, SiteStats)> {
        self.in_use();
        let mut sums: Vec<Option<SiteStats>> = vec![None; self.keys.len()];
        for (site, s) in self.held_slots() {
            let mut words = [0u64; STATS_WORDS];
            for (w, v) in words.iter_mut().enumerate() {
                // SAFETY: a known slot is within the mapping; `w < STATS_WORDS`.
                *v = unsafe { stat_word(s, w) }.load(Ordering::Relaxed);
            }
            // SAFETY: SiteStats is repr(C), all u64: any words are a valid value.
            let stats: SiteStats = unsafe { std::mem::transmute(words) };
            match &mut sums[site] {
                Some(sum) => add_stats(sum, &stats),
                none => *none = Some(stats),
            }
        }
        self.keys
            .iter()
            .zip(sums)
            .filter_map(|(&key, stats)| Some((key, stats?)))
            .collect()
    }

    /// Word `w` of the map SITE_CLAIMS.
    fn count(&self, w: u32) -> &AtomicU64 {
        // SAFETY: within the mapping, aligned; the kernel adds to it atomically.
        unsafe { AtomicU64::from_ptr(self.counts.slot(w as usize)) }
    }

    /// Slots of lanes past lane 0 still claimable (the kernel's spread budget).
    pub fn spread_left(&self) -> i64 {
        self.count(sites::SPREAD_LEFT).load(Ordering::Relaxed) as i64
    }

    /// Slots in use at the last scan, and how many of them are lanes past lane 0.
    pub fn slots_in_use(&self) -> (usize, usize) {
        let lanes = self
            .known
            .iter()
            // SAFETY: a known slot is within the mapping.
            .filter(|&&i| unsafe { lane(self.slots.slot(i)) } != 0)
            .count();
        (self.known.len(), lanes)
    }

    /// Frees the slots of sites whose process `gone` says has exited (nothing of it runs
    /// any more, so nothing adds to them): owner cleared, counters zeroed, then marked dead;
    /// a lane slot's unit goes back to the spread budget. Returns how many.
    pub fn retire(&mut self, gone: impl Fn(u32) -> bool) -> usize {
        self.in_use();
        let mut n = 0;
        // SAFETY: as `count`.
        let spread_left =
            unsafe { AtomicU64::from_ptr(self.counts.slot(sites::SPREAD_LEFT as usize)) };
        let slots = &self.slots;
        self.known.retain(|&i| {
            let s = slots.slot(i);
            // SAFETY: `i` is within the mapping.
            let (hash, tgid) = unsafe { header(s) };
            let t = tgid.load(Ordering::Acquire);
            if t == 0 || !gone(t) {
                return true;
            }
            if tgid
                .compare_exchange(t, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                return true;
            }
            for w in 0..STATS_WORDS {
                // SAFETY: `w < STATS_WORDS`.
                unsafe { stat_word(s, w) }.store(0, Ordering::Relaxed);
            }
            // SAFETY: `i` is within the mapping.
            let lane = unsafe { lane(s) };
            // Release: a claim of the dead slot sees the zeroed counters.
            hash.store(sites::DEAD, Ordering::Release);
            if lane != 0 {
                spread_left.fetch_add(1, Ordering::Relaxed);
            }
            n += 1;
            false
        });
        if n > 0 {
            self.regroup();
        }
        n
    }
}

/// `a += b`, field by field (the kernel's counters wrap).
pub fn add_stats(a: &mut SiteStats, b: &SiteStats) {
    a.bytes = a.bytes.wrapping_add(b.bytes);
    a.freed_bytes = a.freed_bytes.wrapping_add(b.freed_bytes);
    for (x, y) in a.size_hist.iter_mut().zip(&b.size_hist) {
        *x = x.wrapping_add(*y);
    }
    for (x, y) in a.life_hist.iter_mut().zip(&b.life_hist) {
        *x = x.wrapping_add(*y);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_stats_adds_every_field() {
        let mut a: SiteStats = unsafe { std::mem::zeroed() };
        let mut b = a;
        a.bytes = 5;
        a.size_hist[3] = 2;
        b.bytes = 7;
        b.freed_bytes = 1;
        b.size_hist[3] = 1;
        b.life_hist[63] = 4;
        add_stats(&mut a, &b);
        assert_eq!((a.bytes, a.freed_bytes), (12, 1));
        assert_eq!((a.size_hist[3], a.life_hist[63]), (3, 4));
        assert_eq!(a.allocs(), 3);
        assert_eq!(a.frees(), 4);
    }
}
