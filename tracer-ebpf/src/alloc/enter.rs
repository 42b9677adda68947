//! An allocator call's entry: choose its call state, capture its stack (when sampled), count
//! the request, and remember it for the return.
use alloctrace_common::{loss, CallKind, PTRDIFF_MAX};
use aya_ebpf::{programs::ProbeContext, EbpfContext};

use crate::account::count_alloc;
use crate::account::loss::bump_loss;
use crate::alloc::traced::current;
use crate::call_state::{slot, ENTERING};
use crate::tables::live;
use crate::tables::maps::CALLS;
use crate::{arch, sample, unwind};

#[inline(always)]
pub fn enter(ctx: &ProbeContext, kind: CallKind, size: u64, ptr_arg: u64) -> u32 {
    let Some(tgid) = current(ctx.as_ptr()) else {
        return 0;
    };
    let (sp, fp) = arch::sp_fp(ctx);
    let Some(calls) = CALLS.current_or_zeroed() else {
        bump_loss(ctx, loss::CALL_MAP_FULL);
        return 0;
    };
    match slot(ctx, &mut *calls, sp) {
        Some(level) => level.active = ENTERING,
        None => return 0,
    }
    // Sampling (--sample-bytes): an unsampled call walks no stack and its block belongs to no
    // site (stack hash 0), but it is still tracked, so process totals, frees and live bytes
    // stay exact.
    let (stack_hash, site) = if sample::take(size) {
        unwind::record(ctx, tgid, sp, fp)
    } else {
        (0, None)
    };
    // Counted here, where the site is in hand, rather than at the return, which would look it
    // up again; the return takes it back if the call allocated nothing. Requests glibc
    // refuses outright (above PTRDIFF_MAX, calloc overflow) are not counted even for that
    // moment, where a drain could see them.
    if size <= PTRDIFF_MAX {
        count_alloc(ctx, tgid, site, size);
    }
    // The level chosen is found again from what `slot` marked in it, not held across the
    // stack capture: two paths holding different pointers there would each be walked through
    // it by the verifier (twice the work).
    let state = if calls.inner.active == ENTERING {
        &mut calls.inner
    } else {
        &mut calls.outer
    };
    // Field by field: a struct literal with `..default()` becomes a memset call.
    state.size = size;
    state.ptr_arg = ptr_arg;
    state.stack_hash = stack_hash;
    state.sp = sp;
    state.kind = kind as u32;
    state.depth = 0;
    state.old_known = 0;
    state.active = 1;
    if CallKind::resizes(kind as u32) && ptr_arg != 0 {
        if let Some(old) = live::take(tgid, ptr_arg) {
            state.old = old;
            state.old_known = 1;
        }
    }
    0
}
