//! Which probe hits count: not alloctrace's own, none once user space stopped tracing.
use alloctrace_common::CONTROL_STOPPED;
use aya_ebpf::helpers::bpf_get_current_pid_tgid;

use crate::config::{global, SELF_TGID, TARGET_TGID};
use crate::tables::maps::CONTROL;

/// The tgid of the process the probe fired in, or None when nothing is to be counted.
#[inline(always)]
pub fn current() -> Option<u32> {
    // Always the real tgid, even with one process traced: the kernel runs the probes'
    // programs in every task of the target's address space (uprobe events are filtered by
    // mm), and a process other than the target can share it: a clone(CLONE_VM) child, a
    // vfork child before its exec. Each is counted under its own pid. (The loader's constant
    // saved the helper call, ~3 ns per probe hit, and counted those under the target.)
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if global(&TARGET_TGID) == 0 && tgid == global(&SELF_TGID) {
        return None;
    }
    if CONTROL.get(CONTROL_STOPPED).is_some_and(|&v| v != 0) {
        return None;
    }
    Some(tgid)
}
