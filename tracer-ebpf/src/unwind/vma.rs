//! Where a pc lies, for the DWARF walk: the mapping `bpf_find_vma` finds for it (is it code,
//! where does it start, at which page of which file) and the file as the kernel names it
//! (`s_dev`, `i_ino`), read at the struct offsets the loader took from the kernel's BTF.
use alloctrace_common::{unwind_table::FileKey, VM_EXEC};
use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_find_vma, bpf_get_current_task_btf, bpf_probe_read_kernel},
};

use crate::config::{global, VMA_FLAGS_OFFSET};

/// Offsets in the kernel's structs, set by the loader from its BTF
/// (`alloctrace_common::unwind_table::GLOBAL_*_OFFSET`).
#[unsafe(no_mangle)]
pub static VMA_START_OFFSET: u64 = 0;
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

/// A pc's mapping.
#[repr(C)]
#[derive(Default)]
pub struct Vma {
    pub flags: u64,
    pub start: u64,
    /// In pages.
    pub pgoff: u64,
    /// dev 0: an anonymous mapping (or one whose file could not be read).
    pub file: FileKey,
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

/// Looks `pc` up in the current task's mappings, filling `vma`.
#[inline(always)]
pub fn find(pc: u64, vma: &mut Vma) -> Found {
    // SAFETY: the current task is valid for the whole program; the callback is a BPF
    // subprogram of the signature bpf_find_vma calls; its context is `vma`, alive for the
    // call.
    let r = unsafe {
        bpf_find_vma(
            bpf_get_current_task_btf(),
            pc,
            read_vma as *mut c_void,
            vma as *mut Vma as *mut c_void,
            0,
        )
    };
    match r {
        0 if vma.flags & VM_EXEC != 0 => Found::Code,
        0 => Found::NotCode,
        e if e == -ENOENT => Found::NotCode,
        _ => Found::Busy,
    }
}

/// Reads the `u64` at `base + off` in kernel memory (0 if unreadable).
#[inline(always)]
fn kread(base: u64, off: u64) -> u64 {
    // SAFETY: bpf_probe_read_kernel checks the address and fails instead of faulting.
    unsafe { bpf_probe_read_kernel((base + off) as *const u64) }.unwrap_or(0)
}

/// bpf_find_vma's callback: the mapping's flags, start, page offset and file key into the
/// `Vma` passed as context. A field that cannot be read stays 0.
extern "C" fn read_vma(_task: *mut c_void, vma: *mut c_void, out: *mut c_void) -> i64 {
    // SAFETY: `out` is the `Vma` `find` passed as the callback's context.
    let out = unsafe { &mut *(out as *mut Vma) };
    let vma = vma as u64;
    out.flags = kread(vma, global(&VMA_FLAGS_OFFSET));
    out.start = kread(vma, global(&VMA_START_OFFSET));
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
