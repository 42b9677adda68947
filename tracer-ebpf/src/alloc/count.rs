//! Alloc-only mode: one entry probe per call, no return or free probe. A request is counted at
//! the entry of the call glibc runs it in, once: a call that hands its request to malloc
//! tells malloc to skip it.
use alloctrace_common::{loss, MALLOC_ALIGNMENT, PTRDIFF_MAX};
use aya_ebpf::{programs::ProbeContext, EbpfContext};

use crate::account::count_alloc;
use crate::account::loss::bump_loss;
use crate::alloc::traced::current;
use crate::call_state::nested_in;
use crate::tables::add;
use crate::tables::maps::{CALLS, PENDING};
use crate::{arch, sample, unwind};

/// Alloc-only mode: counts one request of `size` bytes at the allocator's entry. Without a
/// return probe the outcome is unknown: requests glibc refuses before doing anything (above
/// PTRDIFF_MAX, calloc overflow) are not counted; any other failure (out of memory) is.
/// `delegates`: glibc implements the call by calling malloc (realloc(NULL, n), the aligned
/// family at small alignments); it is counted here, where the stack is the program's (from
/// inside glibc, malloc's caller would be glibc and the program's own frame would be lost:
/// glibc keeps no frame pointers), and malloc is told to skip it.
///
/// Each program calls this once, with `delegates` computed: the stack capture it inlines is
/// most of what the verifier walks, and two calls would be two copies to walk.
#[inline(always)]
pub fn count_entry(ctx: &ProbeContext, size: u64, delegates: bool) -> u32 {
    let Some(tgid) = current(ctx.as_ptr()) else {
        return 0;
    };
    count_at_entry(ctx, tgid, size);
    if delegates {
        let Some(calls) = CALLS.current_or_zeroed() else {
            bump_loss(ctx, loss::CALL_MAP_FULL);
            return 0;
        };
        let sp = arch::sp(ctx);
        // A signal handler's call while another delegating call has not reached malloc yet
        // (far below it) keeps a state of its own.
        let outer_pending = calls.outer.active != 0 && sp <= calls.outer.sp;
        let state = if outer_pending && !nested_in(&calls.outer, sp) {
            &mut calls.inner
        } else {
            &mut calls.outer
        };
        state.sp = sp;
        // Counted before the state is set (malloc may run on another CPU after a migration,
        // and must see it), and once per state: one left behind (a stale call) keeps its
        // count.
        if state.active == 0 {
            delegation_pending(1);
        }
        state.active = 1;
    }
    0
}

/// Alloc-only mode, malloc: skips the call when an outer allocator call that hands its
/// request to malloc (see `count_entry`) already counted it.
#[inline(always)]
pub fn count_malloc(ctx: &ProbeContext, size: u64) -> u32 {
    let Some(tgid) = current(ctx.as_ptr()) else {
        return 0;
    };
    // Most calls come straight from the program: skip the thread-storage lookup when no
    // thread anywhere is inside a delegating call.
    if pending_delegations() != 0 && counted_by_outer(ctx) {
        return 0;
    }
    count_at_entry(ctx, tgid, size);
    0
}

/// Whether the outer allocator call this malloc runs in (or was tail-called by) counted it
/// already; takes the outer call's state back either way.
#[inline(always)]
fn counted_by_outer(ctx: &ProbeContext) -> bool {
    let Some(calls) = CALLS.current() else {
        return false;
    };
    let sp = arch::sp(ctx);
    // The innermost pending call first: a handler's.
    let outer = if calls.inner.active != 0 {
        &mut calls.inner
    } else {
        &mut calls.outer
    };
    if outer.active == 0 {
        return false;
    }
    if sp <= outer.sp && !nested_in(outer, sp) {
        // Far below: a signal handler's malloc while the call waits for its own. Counted
        // here; the pending call's malloc will come.
        return false;
    }
    outer.active = 0;
    delegation_pending(u64::MAX);
    // Called from inside the outer call (deeper), or tail-called by it (same depth).
    if sp <= outer.sp {
        return true;
    }
    bump_loss(ctx, loss::STALE_CALL);
    false
}

/// Threads whose delegating call has not reached malloc yet, or more (one whose call never
/// reached malloc stays counted): never fewer, so malloc never skips a state it must see.
#[inline(always)]
fn pending_delegations() -> u64 {
    // SAFETY: reads a map value other CPUs update atomically.
    PENDING
        .get_ptr(0)
        .map_or(1, |p| unsafe { core::ptr::read_volatile(p) })
}

/// Adds `n` (u64::MAX: takes one back) to the pending delegations.
#[inline(always)]
fn delegation_pending(n: u64) {
    if let Some(p) = PENDING.get_ptr_mut(0) {
        // SAFETY: a map value that lives as long as the map.
        add(unsafe { &mut *p }, n);
    }
}

/// Alloc-only mode, the aligned family: glibc refuses an alignment that is not a power of two
/// (EINVAL, nothing allocated) and hands one of at most MALLOC_ALIGNMENT to malloc.
#[inline(always)]
pub fn count_aligned(ctx: &ProbeContext, alignment: u64, size: u64) -> u32 {
    if alignment == 0 || alignment & (alignment - 1) != 0 {
        return 0;
    }
    count_entry(ctx, size, alignment <= MALLOC_ALIGNMENT)
}

/// Alloc-only mode, an aligned function that allocates itself (jemalloc's, tcmalloc's,
/// musl's): an alignment that is not a power of two, or below `min`, is refused (EINVAL,
/// nothing allocated); no request is handed to malloc.
#[inline(always)]
pub fn count_aligned_direct(ctx: &ProbeContext, alignment: u64, size: u64, min: u64) -> u32 {
    if alignment < min || alignment & (alignment - 1) != 0 {
        return 0;
    }
    count_entry(ctx, size, false)
}

#[inline(always)]
fn count_at_entry(ctx: &ProbeContext, tgid: u32, size: u64) {
    if size > PTRDIFF_MAX {
        return;
    }
    let site = if sample::take(size) {
        let (sp, fp) = arch::sp_fp(ctx);
        unwind::record(ctx, tgid, sp, fp).1
    } else {
        None
    };
    count_alloc(ctx, tgid, site, size);
}
