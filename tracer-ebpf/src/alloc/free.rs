//! free's entry: the block taken out of the in-flight table and counted freed at its site.
use aya_ebpf::programs::ProbeContext;

use crate::account::blocks::Now;
use crate::account::{count_unknown_free, record_freed};
use crate::alloc::traced::current;
use crate::arch;
use crate::call_state::{inner_or, nested_in};
use crate::tables::live;
use crate::tables::maps::CALLS;

#[inline(always)]
pub fn free(ctx: &ProbeContext, addr: u64) -> u32 {
    if addr == 0 {
        return 0;
    }
    let Some(tgid) = current() else {
        return 0;
    };
    let sp = arch::sp(ctx);
    if let Some(calls) = CALLS.current() {
        let state = inner_or(&calls.outer, &calls.inner);
        if state.active != 0 && nested_in(state, sp) {
            // Inside an allocator call (realloc(p, 0)): the outer call accounts for it.
            return 0;
        }
    }
    match live::take(tgid, addr) {
        Some(info) => record_freed(ctx, tgid, &info, &mut Now::default()),
        None => count_unknown_free(ctx, tgid),
    }
    0
}
