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
use crate::kmaps::shared_array::{SharedArray, SharedMapping};

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

/// The blocks of `n` slots from `first`, in shared memory the kernel writes.
fn read_slots(first: *mut LiveSlot, n: usize, out: &mut Vec<Block>) {
    for i in 0..n {
        // SAFETY: the caller maps `n` slots from `first`; `tgid` is read atomically (the
        // kernel writes it last), the rest is plain data of any bit pattern.
        let slot = unsafe {
            let s = first.add(i);
            let tgid = AtomicU32::from_ptr(&raw mut (*s).tgid).load(Ordering::Acquire);
            LiveSlot {
                tgid,
                ..std::ptr::read_volatile(s)
            }
        };
        out.extend(Block::of(&slot));
    }
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

    /// Every block the table holds, with a site. Meant for when the probes are stopped (the
    /// end of a trace): a slot being written meanwhile may be missed.
    ///
    /// Read through the mapping when there is one; otherwise a window at a time, each mapped,
    /// read and unmapped: mapping the whole table would count all of it (40 MiB
    /// at the default --max-live) in alloctrace's peak resident set, and the map's batched
    /// lookup syscall costs ~0.35 µs a slot (0.36 s for the default 1M slots). Through that
    /// syscall where the kernel refuses the windows.
    pub fn blocks(&mut self) -> Result<Vec<Block>, LiveError> {
        let mut out = Vec::new();
        if let Some(m) = &self.mapping {
            read_slots(m.slot(0), self.slots, &mut out);
            return Ok(out);
        }
        match self.windows(&mut out) {
            Ok(()) => Ok(out),
            Err(e) => {
                log::debug!(
                    "cannot map the in-flight table's windows ({e}): reading it by syscall"
                );
                out.clear();
                map_batch::for_each_batch::<u32, LiveSlot>(self.map.fd().as_fd(), |_, v| {
                    out.extend(v.iter().filter_map(Block::of))
                })
                .map_err(LiveError::Mmap)?;
                Ok(out)
            }
        }
    }

    fn windows(&self, out: &mut Vec<Block>) -> std::io::Result<()> {
        let page = 4096usize;
        // Whole slots and whole pages: lcm(40, 4096) = 20480 bytes = 512 slots.
        let unit = 512usize;
        const _: () = assert!((512 * size_of::<LiveSlot>()).is_multiple_of(4096));
        let per_window = unit * 128;
        let mut start = 0;
        while start < self.slots {
            let n = per_window.min(self.slots - start);
            let len = (n * size_of::<LiveSlot>()).div_ceil(page) * page;
            let w = SharedMapping::map_at(
                self.map.fd().as_fd(),
                len,
                start * size_of::<LiveSlot>(),
                // Writable only because atomics want writable memory: nothing is written.
                libc::PROT_READ | libc::PROT_WRITE,
            )?;
            read_slots(w.as_ptr().cast::<LiveSlot>(), n, out);
            start += n;
        }
        Ok(())
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
