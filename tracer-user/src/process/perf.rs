//! The perf-event plumbing under the mmap watch: the kernel's `perf_event_attr`,
//! `perf_event_open`, and the mapped ring buffer of one event per CPU with its reader. It
//! knows nothing of what the records mean (that is `mmap_watch`).
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::kmaps::shared_array::SharedMapping;

/// Data pages per CPU ring (a power of two). Side-band records are ~100 bytes and are drained
/// at least every 100 ms: 64 KiB holds hundreds of them.
const DATA_PAGES: usize = 16;

pub(crate) const PERF_TYPE_SOFTWARE: u32 = 1;
pub(crate) const PERF_COUNT_SW_DUMMY: u64 = 9;
/// `perf_event_attr` as of `PERF_ATTR_SIZE_VER5`; the kernel accepts any size it knows.
pub(crate) const PERF_ATTR_SIZE_VER5: u32 = 112;

// Bits of the flags word of `perf_event_attr` (C bit-fields, allocated from the least
// significant bit on little-endian targets).
pub(crate) const ATTR_INHERIT: u64 = 1 << 1;
pub(crate) const ATTR_MMAP: u64 = 1 << 8;
pub(crate) const ATTR_COMM: u64 = 1 << 9;
pub(crate) const ATTR_TASK: u64 = 1 << 13;
pub(crate) const ATTR_SAMPLE_ID_ALL: u64 = 1 << 18;
pub(crate) const ATTR_MMAP2: u64 = 1 << 23;
pub(crate) const ATTR_COMM_EXEC: u64 = 1 << 24;
pub(crate) const ATTR_USE_CLOCKID: u64 = 1 << 25;

/// With `sample_id_all`, every side-band record ends with the time it was written: records
/// read from different CPUs' rings are put back in order by it, and an exec is told apart from
/// the mappings its program makes after it.
pub(crate) const PERF_SAMPLE_TIME: u64 = 1 << 2;

pub(crate) const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

// Offsets in `struct perf_event_mmap_page` (the ring's first page).
const DATA_HEAD: usize = 1024;
const DATA_TAIL: usize = 1032;
const DATA_OFFSET: usize = 1040;
const DATA_SIZE: usize = 1048;

/// The leading fields of the kernel's `struct perf_event_attr` (uapi/linux/perf_event.h), up
/// to `PERF_ATTR_SIZE_VER5`. Not a BPF boundary type: the kernel's own ABI, mirrored once here.
#[repr(C)]
#[derive(Default)]
pub(crate) struct PerfEventAttr {
    pub(crate) type_: u32,
    pub(crate) size: u32,
    pub(crate) config: u64,
    pub(crate) sample_period: u64,
    pub(crate) sample_type: u64,
    pub(crate) read_format: u64,
    pub(crate) flags: u64,
    pub(crate) wakeup_events: u32,
    pub(crate) bp_type: u32,
    pub(crate) config1: u64,
    pub(crate) config2: u64,
    pub(crate) branch_sample_type: u64,
    pub(crate) sample_regs_user: u64,
    pub(crate) sample_stack_user: u32,
    pub(crate) clockid: i32,
    pub(crate) sample_regs_intr: u64,
    pub(crate) aux_watermark: u32,
    pub(crate) sample_max_stack: u16,
    pub(crate) _reserved_2: u16,
}

/// `perf_event_open(attr, pid, cpu)`, close-on-exec, as an owned descriptor.
pub(crate) fn perf_event_open(
    attr: &PerfEventAttr,
    pid: libc::c_int,
    cpu: libc::c_int,
) -> io::Result<OwnedFd> {
    // SAFETY: perf_event_open reads a perf_event_attr of `attr.size` bytes from the pointer;
    // the other arguments are plain integers.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr as *const PerfEventAttr,
            pid,
            cpu,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}
const _: () = assert!(size_of::<PerfEventAttr>() == PERF_ATTR_SIZE_VER5 as usize);
#[cfg(not(target_endian = "little"))]
compile_error!("PerfEventAttr flag bits are laid out for little-endian targets");

/// The CPUs in `/sys/devices/system/cpu/online` (`0-3,6,8-9`).
pub(crate) fn online_cpus() -> io::Result<Vec<i32>> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online")?;
    parse_cpu_list(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot parse the online CPU list {:?}", text.trim()),
        )
    })
}

fn parse_cpu_list(text: &str) -> Option<Vec<i32>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<i32>().ok()?..=b.parse().ok()?),
            None => cpus.push(part.parse().ok()?),
        }
    }
    (!cpus.is_empty()).then_some(cpus)
}

/// One perf event and its mapped ring: a metadata page, then `DATA_PAGES` pages of records.
pub(crate) struct Ring {
    fd: OwnedFd,
    mapping: SharedMapping,
    data_offset: usize,
    data_size: usize,
    /// Reassembles a record that wraps around the end of the data area.
    scratch: Vec<u8>,
}

impl Ring {
    /// Opens the event `attr` for `pid` (-1: every task) on `cpu` and maps its ring.
    pub(crate) fn open(attr: &PerfEventAttr, pid: i32, cpu: i32) -> io::Result<Ring> {
        let fd = perf_event_open(attr, pid, cpu)?;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let len = page * (1 + DATA_PAGES);
        let mapping = SharedMapping::map(fd.as_fd(), len)?;
        let mut ring = Ring {
            fd,
            mapping,
            data_offset: page,
            data_size: page * DATA_PAGES,
            scratch: Vec::new(),
        };
        // Kernels since 4.1 say where the data is; older ones put it right after the first page.
        let (off, size) = (ring.meta(DATA_OFFSET), ring.meta(DATA_SIZE));
        let (off, size) = (
            off.load(Ordering::Relaxed) as usize,
            size.load(Ordering::Relaxed) as usize,
        );
        if size != 0 && off.checked_add(size).is_some_and(|e| e <= len) {
            (ring.data_offset, ring.data_size) = (off, size);
        }
        Ok(ring)
    }

    /// The descriptor to poll: `POLLIN` when records wait, `POLLHUP` when the watched task
    /// exited.
    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// A u64 field of the metadata page.
    fn meta(&self, at: usize) -> &AtomicU64 {
        // SAFETY: `at` is one of the 8-byte aligned offsets of perf_event_mmap_page, inside the
        // first page of a live mapping; the kernel accesses these fields atomically too.
        unsafe { &*self.mapping.as_ptr().add(at).cast::<AtomicU64>() }
    }

    /// Calls `f` with each record (header included) written since the last read, then hands
    /// the space back to the kernel.
    pub(crate) fn read(&mut self, mut f: impl FnMut(&[u8])) {
        let head = self.meta(DATA_HEAD).load(Ordering::Acquire);
        let tail = self.meta(DATA_TAIL).load(Ordering::Relaxed);
        // SAFETY: the data area lies inside the mapping (checked at open); the kernel does
        // not write between tail and head until we move tail.
        let data = unsafe {
            std::slice::from_raw_parts(self.mapping.as_ptr().add(self.data_offset), self.data_size)
        };
        let tail = read_records(data, tail, head, &mut self.scratch, &mut f);
        self.meta(DATA_TAIL).store(tail, Ordering::Release);
    }
}

/// Walks the records between `tail` and `head` (free-running byte counters) of a ring whose
/// data area is `data` (a power of two long), passing each whole record to `f`; a record that
/// wraps around the end is copied into `scratch` first. Returns the new tail.
pub(crate) fn read_records(
    data: &[u8],
    mut tail: u64,
    head: u64,
    scratch: &mut Vec<u8>,
    f: &mut impl FnMut(&[u8]),
) -> u64 {
    let size = data.len() as u64;
    if size == 0 || head.wrapping_sub(tail) > size {
        // Cannot happen with a sane kernel; drop what is there rather than read garbage.
        return head;
    }
    while head.wrapping_sub(tail) >= 8 {
        let at = (tail % size) as usize;
        let mut hdr = [0u8; 8];
        copy_wrapping(data, at, &mut hdr);
        let len = u16::from_ne_bytes([hdr[6], hdr[7]]) as u64;
        if len < 8 || len > head.wrapping_sub(tail) {
            return head;
        }
        let len = len as usize;
        if at + len <= data.len() {
            f(&data[at..at + len]);
        } else {
            scratch.resize(len, 0);
            copy_wrapping(data, at, scratch);
            f(scratch);
        }
        tail = tail.wrapping_add(len as u64);
    }
    tail
}

/// Fills `out` from `data` starting at `at`, continuing at the start of `data` at its end.
fn copy_wrapping(data: &[u8], at: usize, out: &mut [u8]) {
    let first = out.len().min(data.len() - at);
    out[..first].copy_from_slice(&data[at..at + first]);
    let rest = out.len() - first;
    out[first..].copy_from_slice(&data[..rest]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(
            parse_cpu_list("0-3,6,8-9\n"),
            Some(vec![0, 1, 2, 3, 6, 8, 9])
        );
        assert_eq!(parse_cpu_list("0\n"), Some(vec![0]));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("x"), None);
    }
}
