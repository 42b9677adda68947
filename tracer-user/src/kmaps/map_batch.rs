//! Reads a whole BPF hash map with `BPF_MAP_LOOKUP_BATCH` (kernel ≥ 5.6): one syscall per few
//! thousand entries instead of two per entry (get-next-key + lookup) as aya 0.14's iterator
//! does, so a drain of many sites costs little per site. Falls back to the iterator where
//! the kernel refuses batches.
use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd};

use aya::maps::{HashMap, IterableMap, MapData};
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

/// Every (key, value) of `map`, in the kernel's bucket order.
pub fn read_all<K: Pod, V: Pod>(map: &HashMap<MapData, K, V>) -> Vec<(K, V)> {
    match batched(map) {
        Ok(v) => v,
        Err(e) => {
            log::debug!("batched map read refused ({e}): reading entry by entry");
            map.iter().filter_map(Result::ok).collect()
        }
    }
}

fn batched<K: Pod, V: Pod>(map: &HashMap<MapData, K, V>) -> io::Result<Vec<(K, V)>> {
    let fd = map.map().fd().as_fd().as_raw_fd();
    let mut out = Vec::new();
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
        // sizes (K and V are the map's key and value types, checked by aya when it was
        // typed), and at two u32 batch tokens; the kernel writes no more than that.
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
        out.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
        match err {
            None => {}
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
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
