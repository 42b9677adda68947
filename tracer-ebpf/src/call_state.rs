//! A thread's allocator calls between entry and return (`CallStates` in its task storage):
//! which state a new call records itself in, and whether a call runs nested inside another.
//! Only the outermost allocator call on a thread counts (see `alloc`).
use alloctrace_common::{loss, CallState, CallStates};
use aya_ebpf::EbpfContext;

use crate::account::loss::bump_loss;

/// How far below an allocator call's stack pointer another allocator call on the same thread
/// may start and still be glibc's own nesting inside it; deeper, it is a signal handler's
/// call that interrupted it. Measured with bpftrace on glibc 2.36 (workloads sites.c and
/// signals.c): glibc's nesting (realloc(NULL, n) -> malloc, the aligned family -> malloc,
/// realloc(p, 0) -> free) runs 0-128 bytes below the outer call (a call or a tail jump from
/// a small frame); a handler's call ~3.1 KiB below (the kernel's signal frame with the XSAVE
/// area). A signal frame on x86-64 is never under ~1.2 KiB (the legacy 512-byte FXSAVE area,
/// ucontext, siginfo and the 128-byte red zone), so 1 KiB keeps both sides far from it. A
/// handler on an alternate stack (sigaltstack) lies anywhere relative to the interrupted
/// call, usually far: also taken as a handler (one above it as a stale call, see `slot`).
pub const NEST_MAX: u64 = 1024;

/// `CallState::active` while `enter` fills the level it chose (within one program run).
pub const ENTERING: u32 = 2;

/// Whether a call at `sp` runs inside the call whose state is `outer` (glibc's nesting):
/// at most NEST_MAX below it.
#[inline(always)]
pub fn nested_in(outer: &CallState, sp: u64) -> bool {
    sp <= outer.sp && outer.sp - sp <= NEST_MAX
}

/// The state an allocator call entered at `sp` is to record itself in, or None when it is
/// nested in a call in progress (which counts it; its return is matched by `depth`).
#[inline(always)]
pub fn slot<'a, C: EbpfContext>(
    ctx: &C,
    calls: &'a mut CallStates,
    sp: u64,
) -> Option<&'a mut CallState> {
    let CallStates { outer, inner, .. } = calls;
    if outer.active == 0 {
        inner.active = 0;
        return Some(outer);
    }
    if sp > outer.sp {
        // Above the call in progress on the same stack: its return was never seen.
        bump_loss(ctx, loss::STALE_CALL);
        inner.active = 0;
        return Some(outer);
    }
    if inner.active == 0 {
        if nested_in(outer, sp) {
            outer.depth += 1;
            return None;
        }
        // A signal handler's call (far below, or on an alternate stack).
        return Some(inner);
    }
    if nested_in(inner, sp) {
        inner.depth += 1;
        return None;
    }
    if sp > inner.sp && sp <= outer.sp {
        // Between the two: the handler's call ended without its return seen.
        bump_loss(ctx, loss::STALE_CALL);
        return Some(inner);
    }
    // Three deep: a handler interrupted a handler's call. Not counted (a loss); its return
    // is matched as a nested one's.
    bump_loss(ctx, loss::REENTRY_TOO_DEEP);
    inner.depth += 1;
    None
}

/// `inner` when it is active, else `outer`.
#[inline(always)]
pub fn inner_or<'a>(outer: &'a CallState, inner: &'a CallState) -> &'a CallState {
    if inner.active != 0 {
        inner
    } else {
        outer
    }
}
