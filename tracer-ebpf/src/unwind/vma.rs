//! Where a pc lies, for the DWARF walk: the mapping `bpf_find_vma` finds for it (is it code,
//! where does it start, at which page of which file) and the file as the kernel names it
//! (`s_dev`, `i_ino`), read at the struct offsets the loader took from the kernel's BTF;
//! kept in a cache per process and 64 KiB granule (`VMA_CACHE`), so a known stack's walk
//! takes no lock on the process's mappings; and in the walk's slot, so the next frame in
//! the same mapping takes no lookup at all.
use alloctrace_common::unwind_table::{VmaEntry, VmaKey, VMA_CACHE_ENTRIES, VMA_GRANULE_SHIFT};
use alloctrace_common::VM_EXEC;
use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_find_vma, bpf_get_current_task_btf, bpf_probe_read_kernel},
    macros::map,
    maps::LruHashMap,
};
use core::ptr::write_volatile;

use crate::config::{global, VMA_FLAGS_OFFSET};

/// Offsets in the kernel's structs, set by the loader from its BTF
/// (`alloctrace_common::unwind_table::GLOBAL_*_OFFSET`).
#[unsafe(no_mangle)]
pub static VMA_START_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
pub static VMA_END_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
pub static VMA_PGOFF_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
pub static VMA_FILE_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
pub static FILE_INODE_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
pub static INODE_INO_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
pub static INODE_SB_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
pub static SB_DEV_OFFSET: u64 = 0;

const ENOENT: i64 = 2;

/// (process, granule) -> the code mapping last found there (see
/// `alloctrace_common::unwind_table::MAP_VMA_CACHE`).
#[map]
static VMA_CACHE: LruHashMap<VmaKey, VmaEntry> = LruHashMap::with_max_entries(VMA_CACHE_ENTRIES, 0);

/// The mapping looked up last by the walk holding slot `idx` (`dwarf::Slot::vma`).
#[inline(always)]
fn found_slot(idx: u64) -> Option<&'static mut VmaEntry> {
    super::dwarf::slot(idx).map(|s| &mut s.vma)
}

/// What `find` learned of a pc.
pub enum Found {
    /// In a mapping with `VM_EXEC`.
    Code,
    /// In no mapping, or in one that is not code.
    NotCode,
    /// The process's mapping lock was contended: unknown.
    Busy,
}

/// Forgets the mapping the walk holding slot `idx` found last: a new walk (of another
/// process, maybe, or after user space replaced the cache's entry) looks its first pc up.
#[inline(always)]
pub fn forget(idx: u64) {
    if let Some(vma) = found_slot(idx) {
        vma.end = 0;
    }
}

/// Looks `pc` of process `tgid` up: in the code mapping this walk found last (consecutive
/// frames mostly lie in one binary: no lookup at all), else in the cache, else in the
/// current task's mappings (and a code mapping found is cached). The mapping is returned
/// with `Found::Code`.
#[inline(always)]
pub fn find(idx: u64, tgid: u32, pc: u64) -> (Found, Option<&'static VmaEntry>) {
    let Some(vma) = found_slot(idx) else {
        return (Found::Busy, None);
    };
    // Within one walk only (`forget`): the thread is stopped in the probe, and a mapping
    // another thread replaces meanwhile is as stale in the cache as here.
    if vma.start <= pc && pc < vma.end {
        return (Found::Code, Some(vma));
    }
    let key = VmaKey {
        tgid,
        _pad: 0,
        granule: pc >> VMA_GRANULE_SHIFT,
    };
    // SAFETY: a hash map lookup; the value is copied out at once.
    if let Some(v) = unsafe { VMA_CACHE.get(&key) } {
        if v.start <= pc && pc < v.end {
            set(vma, v);
            return (Found::Code, Some(vma));
        }
    }
    set(vma, &VmaEntry::default());
    let mut ctx = idx;
    // SAFETY: the current task is valid for the whole program; the callback is a BPF
    // subprogram of the signature bpf_find_vma calls; its context is the slot index (on the
    // stack, as bpf_find_vma requires), into whose `vma` it writes.
    let r = unsafe {
        bpf_find_vma(
            bpf_get_current_task_btf(),
            pc,
            read_vma as *mut c_void,
            &mut ctx as *mut u64 as *mut c_void,
            0,
        )
    };
    let Some(vma) = found_slot(idx) else {
        return (Found::Busy, None);
    };
    match r {
        0 if vma.flags & VM_EXEC != 0 => {
            let _ = VMA_CACHE.insert(&key, &*vma, 0);
            (Found::Code, Some(vma))
        }
        r => {
            // Only a code mapping is reused by the next frame.
            vma.end = 0;
            if r == 0 || r == -ENOENT {
                (Found::NotCode, None)
            } else {
                (Found::Busy, None)
            }
        }
    }
}

/// Copies a mapping field by field: a struct copy between two map values is a call of a
/// byte-wise memmove (48 iterations).
#[inline(always)]
fn set(to: &mut VmaEntry, from: &VmaEntry) {
    // SAFETY: valid references; volatile so the stores are not merged into a memmove again.
    unsafe {
        write_volatile(&mut to.flags, from.flags);
        write_volatile(&mut to.start, from.start);
        write_volatile(&mut to.end, from.end);
        write_volatile(&mut to.pgoff, from.pgoff);
        write_volatile(&mut to.file.dev, from.file.dev);
        write_volatile(&mut to.file.ino, from.file.ino);
    }
}

/// Reads the `u64` at `base + off` in kernel memory (0 if unreadable).
#[inline(always)]
fn kread(base: u64, off: u64) -> u64 {
    // SAFETY: bpf_probe_read_kernel checks the address and fails instead of faulting.
    unsafe { bpf_probe_read_kernel((base + off) as *const u64) }.unwrap_or(0)
}

/// bpf_find_vma's callback: the mapping's flags, range, page offset and file key into
/// the walk's slot. A field that cannot be read stays 0.
extern "C" fn read_vma(_task: *mut c_void, vma: *mut c_void, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the slot index `find` passed, on its stack.
    let idx = unsafe { *(ctx as *const u64) };
    let Some(out) = found_slot(idx) else {
        return 0;
    };
    let vma = vma as u64;
    out.flags = kread(vma, global(&VMA_FLAGS_OFFSET));
    out.start = kread(vma, global(&VMA_START_OFFSET));
    out.end = kread(vma, global(&VMA_END_OFFSET));
    out.pgoff = kread(vma, global(&VMA_PGOFF_OFFSET));
    let file = kread(vma, global(&VMA_FILE_OFFSET));
    if file == 0 {
        return 0;
    }
    let inode = kread(file, global(&FILE_INODE_OFFSET));
    if inode == 0 {
        return 0;
    }
    out.file.ino = kread(inode, global(&INODE_INO_OFFSET));
    let sb = kread(inode, global(&INODE_SB_OFFSET));
    if sb != 0 {
        // s_dev is a 32-bit dev_t.
        out.file.dev = kread(sb, global(&SB_DEV_OFFSET)) & 0xffff_ffff;
    }
    0
}
