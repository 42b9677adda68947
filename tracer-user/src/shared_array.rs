//! A BPF array created `BPF_F_MMAPABLE`, mapped shared: user space reads and writes its
//! values in place with atomics, as the kernel's programs do (the in-flight table, the
//! per-CPU owned totals), instead of copying whole values through map syscalls, which
//! cannot order their writes against the programs'.
use std::os::fd::{AsFd, AsRawFd};

use aya::maps::MapData;

pub struct SharedArray<T> {
    base: *mut T,
    /// Bytes mapped.
    mapped: usize,
    count: usize,
}

// SAFETY: the mapping is shared memory that callers only access through atomics.
unsafe impl<T> Send for SharedArray<T> {}

impl<T> SharedArray<T> {
    /// Maps the `count` values of `map`.
    pub fn map(map: &MapData, count: usize) -> std::io::Result<Self> {
        let page = 4096usize;
        let len = (count * size_of::<T>()).div_ceil(page).max(1) * page;
        // SAFETY: maps the array's values shared; the length is the values' size rounded up
        // to a page, as the kernel requires.
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
            return Err(std::io::Error::last_os_error());
        }
        Ok(SharedArray {
            base: p.cast(),
            mapped: len,
            count,
        })
    }

    /// How many values.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Value `i`, in shared memory: access its fields through atomics only.
    pub fn slot(&self, i: usize) -> *mut T {
        assert!(i < self.count, "slot {i} of {}", self.count);
        // SAFETY: within the mapping.
        unsafe { self.base.add(i) }
    }
}

impl<T> Drop for SharedArray<T> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map` mapped.
        unsafe { libc::munmap(self.base.cast(), self.mapped) };
    }
}
