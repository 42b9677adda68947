//! User space's side of the kernel's owned totals (map OWNED: one `OwnedTotals` per CPU id,
//! claimed by the first process that counts an unattributed allocation or free on that CPU):
//! reading them into their owners' totals, and freeing the slots of owners that exited so
//! other processes can claim them. Mapped shared, so a slot is freed field by field in an
//! order the kernel's programs can rely on: counters zeroed first, owner cleared last.
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use alloctrace_common::{OwnedTotals, Unattributed};
use aya::maps::Map;

use crate::kmaps::shared_array::SharedArray;

pub struct OwnedSlots {
    slots: SharedArray<OwnedTotals>,
}

#[derive(Debug, thiserror::Error)]
pub enum OwnedError {
    #[error("map OWNED is not an array")]
    NotArray,
    #[error("cannot count the possible CPUs ({0}): {1}")]
    Cpus(&'static str, std::io::Error),
    #[error("cannot map the per-CPU owned totals: {0}")]
    Mmap(std::io::Error),
}

/// The OWNED array's size: one slot per possible CPU id (the loader sizes the map with it).
pub fn slots() -> Result<u32, OwnedError> {
    aya::util::nr_cpus()
        .map(|n| n as u32)
        .map_err(|(what, e)| OwnedError::Cpus(what, e))
}

/// The fields of slot `s`, as atomics.
///
/// SAFETY: `s` points into the live mapping; the fields are naturally aligned and the
/// kernel's programs access them atomically.
unsafe fn fields(s: *mut OwnedTotals) -> (&'static AtomicU32, [&'static AtomicU64; 4]) {
    unsafe {
        (
            AtomicU32::from_ptr(&raw mut (*s).tgid),
            [
                AtomicU64::from_ptr(&raw mut (*s).totals.allocs),
                AtomicU64::from_ptr(&raw mut (*s).totals.bytes),
                AtomicU64::from_ptr(&raw mut (*s).totals.frees),
                AtomicU64::from_ptr(&raw mut (*s).totals.freed_bytes),
            ],
        )
    }
}

impl OwnedSlots {
    pub fn new(map: Map) -> Result<Self, OwnedError> {
        let Map::Array(map) = map else {
            return Err(OwnedError::NotArray);
        };
        let n = slots()? as usize;
        Ok(OwnedSlots {
            slots: SharedArray::owning(map, n).map_err(OwnedError::Mmap)?,
        })
    }

    /// The owner and counters of every claimed slot (an owner may hold several CPUs').
    pub fn read(&self) -> Vec<(u32, Unattributed)> {
        let mut out = Vec::new();
        for i in 0..self.slots.count() {
            // SAFETY: `i` is within the mapping.
            let (tgid, c) = unsafe { fields(self.slots.slot(i)) };
            let owner = tgid.load(Ordering::Acquire);
            if owner == 0 {
                continue;
            }
            let [allocs, bytes, frees, freed_bytes] = c.map(|v| v.load(Ordering::Relaxed));
            out.push((
                owner,
                Unattributed {
                    allocs,
                    bytes,
                    frees,
                    freed_bytes,
                },
            ));
        }
        out
    }

    /// Frees the slots whose owner `gone` says has exited (nothing of it runs any more, so
    /// nothing adds to its slots). Returns the (CPU, owner) of each.
    pub fn release(&self, gone: impl Fn(u32) -> bool) -> Vec<(usize, u32)> {
        let mut freed = Vec::new();
        for i in 0..self.slots.count() {
            // SAFETY: `i` is within the mapping.
            let (tgid, c) = unsafe { fields(self.slots.slot(i)) };
            let owner = tgid.load(Ordering::Acquire);
            if owner == 0 || !gone(owner) {
                continue;
            }
            for v in c {
                v.store(0, Ordering::Relaxed);
            }
            // Release: the next owner's compare-and-swap sees the zeroed counters.
            if tgid
                .compare_exchange(owner, 0, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                freed.push((i, owner));
            }
        }
        freed
    }
}
