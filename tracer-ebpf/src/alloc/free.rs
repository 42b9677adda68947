//! free's entry: the block taken out of the in-flight table and counted freed at its site.
use aya_ebpf::{programs::ProbeContext, EbpfContext};

use crate::account::blocks::Now;
use crate::account::{count_unknown_free, record_freed};
use crate::alloc::traced::current;
use crate::arch;
use crate::call_state::{inner_or, nested_in, NEST_MAX};
use crate::tables::live;
use crate::tables::maps::CALLS;

#[inline(always)]
pub fn free(ctx: &ProbeContext, addr: u64) -> u32 {
    if addr == 0 {
        return 0;
    }
    let Some(tgid) = current(ctx.as_ptr()) else {
        return 0;
    };
    let sp = arch::sp(ctx);
    let calls = CALLS.current_or_zeroed();
    // Whether this free runs inside the thread's last free of the same block (a free-like
    // function tail-calling or calling another probed one): then that one took the block.
    let mut nested_free = false;
    if let Some(calls) = calls.as_deref() {
        let state = inner_or(&calls.outer, &calls.inner);
        if state.active != 0 && nested_in(state, sp) {
            // Inside an allocator call (realloc(p, 0)): the outer call accounts for it.
            return 0;
        }
        nested_free =
            calls.freed == addr && sp <= calls.freed_sp && calls.freed_sp - sp <= NEST_MAX;
    }
    match live::take(tgid, addr) {
        Some(info) => record_freed(ctx, tgid, &info, &mut Now::default()),
        // The block is in the table until the outermost free takes it: a nested free finds
        // it gone, and counts nothing.
        None if nested_free => return 0,
        None => count_unknown_free(ctx, tgid),
    }
    if let Some(calls) = calls {
        calls.freed = addr;
        calls.freed_sp = sp;
    }
    0
}
