//! Memory shared with the kernel through `mmap` of a descriptor: `SharedMapping` owns such a
//! region (the perf ring of `mmap_watch`, a BPF array's values), `SharedArray` views a BPF
//! array created `BPF_F_MMAPABLE` as its values, read and written in place with atomics as
//! the kernel's programs do (the in-flight table, the per-CPU owned totals), instead of
//! copying whole values through map syscalls, which cannot order their writes against the
//! programs'.
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::ptr::NonNull;

use aya::maps::MapData;

/// `len` bytes of a descriptor mapped shared, read-write; unmapped on drop.
pub struct SharedMapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the region is owned by this value (unmapped only on drop); what shares it with the
// kernel accesses it through atomics or exclusive borrows.
unsafe impl Send for SharedMapping {}

impl SharedMapping {
    pub fn map(fd: BorrowedFd<'_>, len: usize) -> std::io::Result<Self> {
        Self::map_at(fd, len, 0, libc::PROT_READ | libc::PROT_WRITE)
    }

    /// `len` bytes from byte `offset` (a multiple of the page size), with protection `prot`.
    pub fn map_at(
        fd: BorrowedFd<'_>,
        len: usize,
        offset: usize,
        prot: libc::c_int,
    ) -> std::io::Result<Self> {
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: maps a fresh region; the result is checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<u8>()).expect("mmap returned null");
        Ok(SharedMapping { base, len })
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }
}

impl Drop for SharedMapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map` mapped.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

pub struct SharedArray<T> {
    mapping: SharedMapping,
    /// The map itself when no one else keeps it open: the programs' instructions name it by
    /// its descriptor's number (aya wrote it in when it loaded the object), so a program
    /// loaded later (for an allocator found while tracing) needs it open as that very map.
    _map: Option<MapData>,
    count: usize,
    _values: std::marker::PhantomData<T>,
}

impl<T> SharedArray<T> {
    /// Maps the `count` values of `map`, which it keeps open.
    pub fn owning(map: MapData, count: usize) -> std::io::Result<Self> {
        let mut array = Self::map(&map, count)?;
        array._map = Some(map);
        Ok(array)
    }

    /// Maps the `count` values of `map`, which the caller keeps open.
    pub fn map(map: &MapData, count: usize) -> std::io::Result<Self> {
        let page = 4096usize;
        // The values' size rounded up to a page, as the kernel requires.
        let len = (count * size_of::<T>()).div_ceil(page).max(1) * page;
        Ok(SharedArray {
            mapping: SharedMapping::map(map.fd().as_fd(), len)?,
            _map: None,
            count,
            _values: std::marker::PhantomData,
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
        unsafe { self.mapping.as_ptr().cast::<T>().add(i) }
    }
}
