//! User space's side of the kernel's in-flight table (map LIVE, a BPF array of `LiveSlot`s
//! it can mmap): retiring the blocks of processes that exited, whose frees can never come, so
//! their slots serve new blocks. Same protocol as the kernel's take (alloctrace_common's
//! `LiveSlot`): clear `tgid` by compare-and-swap, then mark the slot dead.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use alloctrace_common::{live, LiveSlot};
use aya::maps::{Map, MapData};

use crate::kmaps::shared_array::SharedArray;

pub struct LiveTable {
    map: MapData,
    slots: usize,
    /// Mapped at the first sweep only (system-wide mode): a mapping counts the whole table
    /// (kernel memory) in alloctrace's resident set.
    mapping: Option<SharedArray<LiveSlot>>,
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("map LIVE is not an array")]
    NotArray,
    #[error("cannot map the in-flight table: {0}")]
    Mmap(std::io::Error),
}

impl LiveTable {
    pub fn new(map: Map, slots: u32) -> Result<Self, LiveError> {
        let Map::Array(map) = map else {
            return Err(LiveError::NotArray);
        };
        Ok(LiveTable {
            map,
            slots: slots as usize,
            mapping: None,
        })
    }

    fn mapped(&mut self) -> Result<&SharedArray<LiveSlot>, LiveError> {
        if self.mapping.is_none() {
            self.mapping = Some(SharedArray::map(&self.map, self.slots).map_err(LiveError::Mmap)?);
        }
        Ok(self.mapping.as_ref().expect("mapped above"))
    }

    /// Frees the slots of blocks whose process `gone` says is gone. Returns how many, per
    /// process.
    pub fn retire(
        &mut self,
        gone: impl Fn(u32) -> bool,
    ) -> Result<BTreeMap<u32, usize>, LiveError> {
        let slots = self.slots;
        let m = self.mapped()?;
        let mut n = BTreeMap::new();
        for i in 0..slots {
            // SAFETY: `i` is within the mapping; the fields are naturally aligned, and the
            // kernel's programs access them atomically or with plain aligned stores.
            let (addr, tgid) = unsafe {
                let s = m.slot(i);
                (
                    AtomicU64::from_ptr(&raw mut (*s).addr),
                    AtomicU32::from_ptr(&raw mut (*s).tgid),
                )
            };
            let t = tgid.load(Ordering::Acquire);
            if t == 0 || !gone(t) {
                continue;
            }
            if tgid
                .compare_exchange(t, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                addr.store(live::DEAD, Ordering::Release);
                *n.entry(t).or_insert(0) += 1;
            }
        }
        Ok(n)
    }
}
