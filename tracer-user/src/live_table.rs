//! User space's side of the kernel's in-flight table (map LIVE, an mmapped BPF array of
//! `LiveSlot`s): retiring the blocks of processes that exited, whose frees can never come, so
//! their slots serve new blocks. Same protocol as the kernel's take (alloctrace_common's
//! `LiveSlot`): clear `tgid` by compare-and-swap, then mark the slot dead.
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use alloctrace_common::{live, LiveSlot};
use aya::maps::{Map, MapData};

pub struct LiveTable {
    base: *mut LiveSlot,
    slots: usize,
    len: usize,
    /// Keeps the map's descriptor open as long as the mapping.
    _map: MapData,
}

// SAFETY: the mapping is shared memory only ever accessed through atomics here.
unsafe impl Send for LiveTable {}

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
        let page = 4096usize;
        let len = (slots as usize * size_of::<LiveSlot>()).div_ceil(page) * page;
        // SAFETY: maps the array's values (created BPF_F_MMAPABLE) shared; the length is the
        // values' size rounded up to a page, as the kernel requires.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(LiveError::Mmap(std::io::Error::last_os_error()));
        }
        Ok(LiveTable {
            base: p.cast(),
            slots: slots as usize,
            len,
            _map: map,
        })
    }

    /// Frees the slots of blocks whose process `gone` says is gone. Returns how many.
    pub fn retire(&self, gone: impl Fn(u32) -> bool) -> usize {
        let mut n = 0;
        for i in 0..self.slots {
            // SAFETY: `i` is within the mapping; the fields are naturally aligned, and the
            // kernel's programs access them atomically or with plain aligned stores.
            let (addr, tgid) = unsafe {
                let s = self.base.add(i);
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
                n += 1;
            }
        }
        n
    }
}

impl Drop for LiveTable {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}
