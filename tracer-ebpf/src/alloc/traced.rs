//! Which probe hits count: not alloctrace's own, none once user space stopped tracing, and
//! for a link that names one process (its cookie), only that process's.
use alloctrace_common::CONTROL_STOPPED;
use aya_ebpf::cty::c_void;
use aya_ebpf::helpers::{bpf_get_attach_cookie, bpf_get_current_pid_tgid};

use crate::config::{global, BY_COOKIE, SELF_TGID, TARGET_TGID};
use crate::tables::maps::CONTROL;

/// The tgid of the process the probe fired in, or None when nothing is to be counted. `ctx`
/// is the program's context (its link's cookie is read through it).
#[inline(always)]
pub fn current(ctx: *mut c_void) -> Option<u32> {
    // Always the real tgid, even with one process traced: the kernel runs the probes'
    // programs in every task of the target's address space (uprobe events are filtered by
    // mm), and a process other than the target can share it: a clone(CLONE_VM) child, a
    // vfork child before its exec. Each is counted under its own pid. (The loader's constant
    // saved the helper call, ~3 ns per probe hit, and counted those under the target.)
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if global(&TARGET_TGID) == 0 && tgid == global(&SELF_TGID) {
        return None;
    }
    // A link without a pid (it reaches every process mapping the file) that is to count one
    // process carries its tgid as every probe's cookie: a `--pid` target whose main thread
    // has exited, which a link with a pid cannot reach (the kernel filters such a link on
    // the main thread's memory, which a zombie has no more). A cookie of 0: every process the
    // link reaches. Only read in such a run: the check doubles the states the verifier walks.
    if global(&BY_COOKIE) != 0 {
        // SAFETY: `ctx` is the context the kernel passed the program.
        let only = unsafe { bpf_get_attach_cookie(ctx) };
        if only != 0 && only != tgid as u64 {
            return None;
        }
    }
    if CONTROL.get(CONTROL_STOPPED).is_some_and(|&v| v != 0) {
        return None;
    }
    Some(tgid)
}
