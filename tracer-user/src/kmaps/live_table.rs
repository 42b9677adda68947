//! User space's side of the kernel's in-flight table (map LIVE, a BPF array of `LiveSlot`s
//! it can mmap): reading its blocks (each with its site and birth time) at the end of a trace,
//! and retiring the blocks of processes that exited, whose frees can never come, so their
//! slots serve new blocks. Retiring follows the kernel's take (alloctrace_common's
//! `LiveSlot`): clear `tgid` by compare-and-swap, then mark the slot dead.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use alloctrace_common::{live, LiveSlot};
use std::os::fd::AsFd;

use aya::maps::{Map, MapData};

use crate::kmaps::map_batch;
use crate::kmaps::shared_array::SharedArray;

/// One block of the table: allocated at site (`tgid`, `stack_hash`), never freed so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    pub tgid: u32,
    pub stack_hash: u64,
    pub size: u64,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) at the allocator's return.
    pub ts_ns: u64,
}

impl Block {
    /// The block a slot holds, if it holds one with a site (a block without a site, unsampled
    /// or whose stack was lost, belongs to no site and has no birth time).
    fn of(slot: &LiveSlot) -> Option<Block> {
        let held = slot.tgid != 0 && slot.addr != live::EMPTY && slot.addr != live::DEAD;
        (held && slot.info.stack_hash != 0).then_some(Block {
            tgid: slot.tgid,
            stack_hash: slot.info.stack_hash,
            size: slot.info.size,
            ts_ns: slot.info.ts_ns,
        })
    }
}

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

    /// Every block the table holds, with a site. Read a batch of slots at a time through the
    /// map's syscalls (not mapped: a mapping read end to end counts the whole table in
    /// alloctrace's resident set); through the mapping where the kernel refuses batches.
    /// Meant for when the probes are stopped (the end of a trace): a slot being written
    /// meanwhile may be missed.
    pub fn blocks(&mut self) -> Result<Vec<Block>, LiveError> {
        let mut out = Vec::new();
        let read = map_batch::for_each_batch::<u32, LiveSlot>(self.map.fd().as_fd(), |_, v| {
            out.extend(v.iter().filter_map(Block::of))
        });
        if let Err(e) = read {
            log::debug!("batched read of the in-flight table refused ({e}): mapping it");
            out.clear();
            let slots = self.slots;
            let m = self.mapped()?;
            for i in 0..slots {
                // SAFETY: `i` is within the mapping; `tgid` is read atomically (the kernel
                // writes it last), the rest is plain data of any bit pattern.
                let slot = unsafe {
                    let s = m.slot(i);
                    let tgid = AtomicU32::from_ptr(&raw mut (*s).tgid).load(Ordering::Acquire);
                    LiveSlot {
                        tgid,
                        ..std::ptr::read_volatile(s)
                    }
                };
                out.extend(Block::of(&slot));
            }
        }
        Ok(out)
    }

    /// Frees the slots of blocks whose process `gone` says is gone. Returns how many, per
    /// process, and the blocks with a site among them (never freed: the leak report's).
    pub fn retire(
        &mut self,
        gone: impl Fn(u32) -> bool,
    ) -> Result<(BTreeMap<u32, usize>, Vec<Block>), LiveError> {
        let slots = self.slots;
        let m = self.mapped()?;
        let mut n = BTreeMap::new();
        let mut blocks = Vec::new();
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
            // SAFETY: as above; the process is gone, so nothing writes its slots' records.
            let info = unsafe { std::ptr::read_volatile(&raw const (*m.slot(i)).info) };
            if tgid
                .compare_exchange(t, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                let a = addr.swap(live::DEAD, Ordering::AcqRel);
                *n.entry(t).or_insert(0) += 1;
                let slot = LiveSlot {
                    addr: a,
                    tgid: t,
                    _pad: 0,
                    info,
                };
                blocks.extend(Block::of(&slot));
            }
        }
        Ok((n, blocks))
    }
}
