//! Go's heap allocations: one count per `runtime.mallocgc` call, from an entry probe only (a
//! return probe rewrites a return address on a goroutine stack Go may move).
//!
//! The probe sits on the `jbe` of the function's stack check (`cmp rsp, [r14+0x10]`), which
//! the kernel emulates. When that branch is taken the call does not run yet: it goes through
//! `runtime.morestack` (stack growth, or a preemption request) and starts again at the entry,
//! where the probe fires a second time. Only the pass whose branch falls through is counted,
//! so each call counts once.
use alloctrace_common::GoGc;
use aya_ebpf::bindings::BPF_NOEXIST;
use aya_ebpf::helpers::bpf_ktime_get_ns;
use aya_ebpf::{programs::ProbeContext, EbpfContext};

use crate::alloc::count_entry;
use crate::alloc::traced::current;
use crate::arch;
use crate::tables::add;
use crate::tables::maps::GO_GC;

#[inline(always)]
pub fn count_go(ctx: &ProbeContext) -> u32 {
    if arch::below_or_equal(ctx) {
        return 0;
    }
    let size = arch::go_arg0(ctx);
    // mallocgc(0, ...) returns the address of runtime.zerobase: nothing is allocated (Go's
    // own profile does not record it either).
    if size == 0 {
        return 0;
    }
    count_entry(ctx, size, false)
}

/// One completed GC cycle of the probed process, at the entry of `runtime.gcMarkTermination`
/// (probed on its stack check's `jbe` as mallocgc is, for the same reason): the runtime counts
/// `NumGC` there, once per cycle. (`runtime.gcStart` is entered by every goroutine that sees a
/// trigger; all but one return without starting a cycle.)
#[inline(always)]
pub fn count_gc(ctx: &ProbeContext) -> u32 {
    if arch::below_or_equal(ctx) {
        return 0;
    }
    let Some(tgid) = current(ctx.as_ptr()) else {
        return 0;
    };
    // SAFETY: reads the kernel's monotonic clock.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(gc) = GO_GC.get_ptr_mut(&tgid) {
        // SAFETY: a map value that lives as long as the map; cycles of one process end one at
        // a time (the runtime's own lock), so the plain store of the time races with nothing.
        let gc = unsafe { &mut *gc };
        add(&mut gc.cycles, 1);
        gc.last_ns = now;
        return 0;
    }
    let first = GoGc {
        cycles: 1,
        first_ns: now,
        last_ns: now,
    };
    // BPF_NOEXIST: a concurrent first insert (another thread of the process, impossible for one
    // runtime's cycles but cheap to rule out) is not overwritten.
    if GO_GC.insert(&tgid, &first, u64::from(BPF_NOEXIST)).is_err() {
        // The table is full: counted in the entry user space put at key 0 (never a tgid).
        if let Some(lost) = GO_GC.get_ptr_mut(&alloctrace_common::go::GO_GC_LOST) {
            // SAFETY: as above.
            add(unsafe { &mut (*lost).cycles }, 1);
        }
    }
    0
}
