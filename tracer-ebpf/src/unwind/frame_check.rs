//! The check that keeps a stored stack to code: a frame leaves the kernel only if it lies in
//! an executable mapping of the process (see `unwind`). Any unwinder's frames go through it.
use alloctrace_common::{stack_cut, VM_EXEC};
use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_find_vma, bpf_get_current_task_btf, bpf_probe_read_kernel},
};

use crate::config::{global, VMA_FLAGS_OFFSET};

const ENOENT: i64 = 2;

/// `stack_cut::NONE` if `ip` lies in an executable mapping of the current task, else why not.
#[inline(always)]
pub fn code_check(ip: u64) -> u32 {
    let mut flags: u64 = 0;
    // SAFETY: the current task is valid for the whole program; the callback is a BPF
    // subprogram of the signature bpf_find_vma calls; its context is `flags`, alive for the
    // call.
    let found = unsafe {
        bpf_find_vma(
            bpf_get_current_task_btf(),
            ip,
            vma_flags as *mut c_void,
            &mut flags as *mut u64 as *mut c_void,
            0,
        )
    };
    match found {
        0 if flags & VM_EXEC != 0 => stack_cut::NONE,
        // No mapping there (-ENOENT), or one that is not code.
        0 => stack_cut::NOT_CODE,
        e if e == -ENOENT => stack_cut::NOT_CODE,
        // -EBUSY: the process's mapping lock was contended (or the CPU's unlock work busy).
        _ => stack_cut::UNCHECKED,
    }
}

/// bpf_find_vma's callback: stores the flags of the mapping found (`vm_flags`, at the offset
/// the loader read from the kernel's BTF) into `flags`. Left 0 if unreadable: not code.
extern "C" fn vma_flags(_task: *mut c_void, vma: *mut c_void, flags: *mut c_void) -> i64 {
    let at = (vma as *const u8).wrapping_add(global(&VMA_FLAGS_OFFSET) as usize);
    // SAFETY: bpf_probe_read_kernel checks the address and fails instead of faulting; `flags`
    // is the u64 `code_check` passed as the callback's context.
    unsafe {
        if let Ok(f) = bpf_probe_read_kernel(at as *const u64) {
            *(flags as *mut u64) = f;
        }
    }
    0
}
