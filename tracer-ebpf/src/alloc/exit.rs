//! An allocator call's return: the new block tracked, a realloc's old block settled, a failed
//! call's count taken back.
use alloctrace_common::{CallKind, PTRDIFF_MAX};
use aya_ebpf::{helpers::bpf_probe_read_user, programs::RetProbeContext, EbpfContext};

use crate::account::blocks::{store, track, Now};
use crate::account::{count_unknown_free, record_freed, uncount_alloc};
use crate::alloc::traced::current;
use crate::arch;
use crate::tables::maps::CALLS;

#[inline(always)]
pub fn exit(ctx: &RetProbeContext) -> u32 {
    let Some(tgid) = current(ctx.as_ptr()) else {
        return 0;
    };
    let Some(calls) = CALLS.current() else {
        return 0;
    };
    // Calls return in the reverse order of their entries: a handler's before the one it
    // interrupted.
    let state = if calls.inner.active != 0 {
        &mut calls.inner
    } else {
        &mut calls.outer
    };
    if state.active == 0 {
        return 0;
    }
    if state.depth > 0 {
        state.depth -= 1;
        return 0;
    }
    state.active = 0;
    let st = *state;
    let ret: u64 = arch::ret(ctx);
    // The new block, or 0 when the call allocated nothing.
    let block = if st.kind == CallKind::PosixMemalign as u32 {
        if ret as u32 == 0 {
            // SAFETY: reads the caller's out-parameter; the helper fails instead of faulting.
            unsafe { bpf_probe_read_user(st.ptr_arg as *const u64) }.unwrap_or(0)
        } else {
            0
        }
    } else if st.kind == CallKind::Xallocx as u32 {
        if ret >= st.size {
            st.ptr_arg
        } else {
            0
        }
    } else {
        ret
    };
    // A realloc's old block dies when its new one is born: one clock read for both.
    let mut now = Now::default();
    if CallKind::resizes(st.kind) && st.ptr_arg != 0 {
        if block != 0 || st.size == 0 {
            // Moved, resized in place, or realloc(p, 0) freed it.
            if st.old_known != 0 {
                record_freed(ctx, tgid, &st.old, &mut now);
            } else {
                count_unknown_free(ctx, tgid);
            }
        } else if st.old_known != 0 {
            // Failed: the old block is still the caller's.
            store(ctx, tgid, st.ptr_arg, &st.old);
        }
    }
    if block != 0 {
        track(ctx, tgid, block, st.size, st.stack_hash, &mut now);
    } else if st.size <= PTRDIFF_MAX {
        uncount_alloc(ctx, tgid, st.stack_hash, st.size);
    }
    0
}
