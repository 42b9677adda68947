//! What the programs tell user space besides counts: losses (a per-CPU counter per kind) and
//! events (a new process or stack, so user space snapshots its mappings while it lives).
use alloctrace_common::{loss, Event};
use aya_ebpf::EbpfContext;

use crate::tables::add;
use crate::tables::maps::{EVENTS, LOSSES};

/// Counts a loss. User space reports every nonzero counter at each drain (no eBPF log: its
/// types' BTF cannot load next to the task-storage map's).
#[inline(always)]
pub fn bump_loss<C: EbpfContext>(_ctx: &C, which: u32) {
    if let Some(c) = LOSSES.get_ptr_mut(which) {
        // SAFETY: a per-CPU array slot.
        add(unsafe { &mut *c }, 1);
    }
}

#[inline(always)]
pub fn notify<C: EbpfContext>(ctx: &C, ev: Event) {
    if EVENTS.output::<Event>(&ev, 0).is_err() {
        bump_loss(ctx, loss::EVENT_DROPPED);
    }
}
