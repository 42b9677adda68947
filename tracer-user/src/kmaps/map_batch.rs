//! Reads a whole BPF hash map (or array) with `BPF_MAP_LOOKUP_BATCH` (kernel ≥ 5.6): one syscall per few
//! thousand entries instead of two per entry (get-next-key + lookup) as aya 0.14's iterator
//! does, so a drain of many sites costs little per site. Where the kernel refuses batches the
//! caller decides (the stack frames are then read entry by entry).
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};

use aya::Pod;

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// `union bpf_attr`'s `batch` member (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Entries asked for per syscall at first; doubled when a hash bucket holds more (ENOSPC).
const CHUNK: usize = 4096;

/// Hands every (key, value) of the map behind `fd` to `f`, a batch at a time, in the kernel's
/// order (an array's: by index). `K` and `V` must be the map's key and value types. Memory
/// stays at one batch whatever the map's size: the in-flight table is read this way rather
/// than mapped, which would count all of it in alloctrace's resident set.
pub fn for_each_batch<K: Pod, V: Pod>(
    fd: BorrowedFd<'_>,
    mut f: impl FnMut(&[K], &[V]),
) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    let mut chunk = CHUNK;
    // SAFETY: K and V are Pod (plain data, any bit pattern valid): zeroed values are valid and
    // the kernel overwrites the first `count` of each buffer.
    let zero_k: K = unsafe { std::mem::zeroed() };
    let zero_v: V = unsafe { std::mem::zeroed() };
    let mut keys = vec![zero_k; chunk];
    let mut values = vec![zero_v; chunk];
    let (mut token_in, mut token_out) = (0u32, 0u32);
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &token_in as *const u32 as u64
            },
            out_batch: &mut token_out as *mut u32 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: the attr points at live buffers of `count` keys and values of the map's
        // sizes (K and V are the map's key and value types, as the caller guarantees), and at
        // two u32 batch tokens; the kernel writes no more than that.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                size_of::<BatchAttr>(),
            )
        };
        let err = (ret < 0).then(io::Error::last_os_error);
        let n = (attr.count as usize).min(chunk);
        f(&keys[..n], &values[..n]);
        match err {
            None => {}
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Some(e) if e.raw_os_error() == Some(libc::ENOSPC) && n == 0 => {
                // One bucket holds more than `chunk` entries: retry it with more room.
                chunk *= 2;
                keys.resize(chunk, zero_k);
                values.resize(chunk, zero_v);
                continue;
            }
            Some(e) => return Err(e),
        }
        token_in = token_out;
        first = false;
    }
}
