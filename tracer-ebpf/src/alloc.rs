//! The shared logic of every allocator probe: entry (remember the request and the stack),
//! return (record the block), and free (attribute it to the site that allocated it).
//!
//! Only the outermost allocator call on a thread counts: glibc's own functions call each other
//! (realloc(NULL, n) calls malloc, aligned_alloc calls malloc for small alignments, realloc(p, 0)
//! calls free), and one allocation by the program must be counted once. A signal handler's
//! call that interrupted one in progress is the program's own and counts: it runs far below
//! the interrupted call on the stack (`NEST_MAX`), and has a call state of its own.
use core::intrinsics::{atomic_cxchg, atomic_xadd, AtomicOrdering};

use alloctrace_common::{
    event, log2_bucket_searched, loss, AllocInfo, CallKind, CallState, CallStates, Event,
    ProcStats, SiteStats, Unattributed, HIST_BUCKETS, MALLOC_ALIGNMENT, PTRDIFF_MAX,
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        bpf_probe_read_user,
    },
    programs::{ProbeContext, RetProbeContext},
    EbpfContext,
};

use crate::maps::{CALLS, CONTROL, EVENTS, LOSSES, OWNED, PENDING, PROCS};
use crate::{global, live, sample, sites, stack, SELF_TGID, TARGET_TGID};

const BPF_NOEXIST: u64 = 1;

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
const NEST_MAX: u64 = 1024;

/// `CallState::active` while `enter` fills the level it chose (within one program run).
const ENTERING: u32 = 2;

#[inline(always)]
fn add(counter: &mut u64, v: u64) {
    // SAFETY: `counter` points into a map value that lives as long as the map; the add is a
    // single atomic instruction (BPF XADD: core's AtomicU64 has no fetch_add on the BPF target),
    // so concurrent CPUs never lose an increment.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, v) };
}

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

pub use alloctrace_common::array_bytes;

/// The tgid of the process the probe fired in, or None when nothing is to be counted.
#[inline(always)]
fn current() -> Option<u32> {
    // Always the real tgid, even with one process traced: the kernel runs the probes'
    // programs in every task of the target's address space (uprobe events are filtered by
    // mm), and a process other than the target can share it: a clone(CLONE_VM) child, a
    // vfork child before its exec. Each is counted under its own pid. (The loader's constant
    // saved the helper call, ~3 ns per probe hit, and counted those under the target.)
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if global(&TARGET_TGID) == 0 && tgid == global(&SELF_TGID) {
        return None;
    }
    if CONTROL
        .get(alloctrace_common::CONTROL_STOPPED)
        .is_some_and(|&v| v != 0)
    {
        return None;
    }
    Some(tgid)
}

/// Whether a call at `sp` runs inside the call whose state is `outer` (glibc's nesting):
/// at most NEST_MAX below it.
#[inline(always)]
fn nested_in(outer: &CallState, sp: u64) -> bool {
    sp <= outer.sp && outer.sp - sp <= NEST_MAX
}

/// The state an allocator call entered at `sp` is to record itself in, or None when it is
/// nested in a call in progress (which counts it; its return is matched by `depth`).
#[inline(always)]
fn slot<'a, C: EbpfContext>(
    ctx: &C,
    calls: &'a mut CallStates,
    sp: u64,
) -> Option<&'a mut CallState> {
    let CallStates { outer, inner } = calls;
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
fn inner_or<'a>(outer: &'a CallState, inner: &'a CallState) -> &'a CallState {
    if inner.active != 0 {
        inner
    } else {
        outer
    }
}

#[inline(always)]
pub fn enter(ctx: &ProbeContext, kind: CallKind, size: u64, ptr_arg: u64) -> u32 {
    let Some(tgid) = current() else {
        return 0;
    };
    // SAFETY: regs points at the probed task's saved registers for the program's duration.
    let (sp, fp) = unsafe { ((*ctx.regs).rsp, (*ctx.regs).rbp) };
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
        stack::record(ctx, tgid, sp, fp)
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
    if kind == CallKind::Realloc && ptr_arg != 0 {
        if let Some(old) = live::take(tgid, ptr_arg) {
            state.old = old;
            state.old_known = 1;
        }
    }
    0
}

#[inline(always)]
pub fn exit(ctx: &RetProbeContext) -> u32 {
    let Some(tgid) = current() else {
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
    let ret: u64 = ctx.ret();
    // The new block, or 0 when the call allocated nothing.
    let block = if st.kind == CallKind::PosixMemalign as u32 {
        if ret as u32 == 0 {
            // SAFETY: reads the caller's out-parameter; the helper fails instead of faulting.
            unsafe { bpf_probe_read_user(st.ptr_arg as *const u64) }.unwrap_or(0)
        } else {
            0
        }
    } else {
        ret
    };
    // A realloc's old block dies when its new one is born: one clock read for both.
    let mut now = Now::default();
    if st.kind == CallKind::Realloc as u32 && st.ptr_arg != 0 {
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

#[inline(always)]
pub fn free(ctx: &ProbeContext, addr: u64) -> u32 {
    if addr == 0 {
        return 0;
    }
    let Some(tgid) = current() else {
        return 0;
    };
    // SAFETY: as in `enter`.
    let sp = unsafe { (*ctx.regs).rsp };
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
    let Some(tgid) = current() else {
        return 0;
    };
    count_at_entry(ctx, tgid, size);
    if delegates {
        let Some(calls) = CALLS.current_or_zeroed() else {
            bump_loss(ctx, loss::CALL_MAP_FULL);
            return 0;
        };
        // SAFETY: as in `enter`.
        let sp = unsafe { (*ctx.regs).rsp };
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
    let Some(tgid) = current() else {
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
    // SAFETY: as in `enter`.
    let sp = unsafe { (*ctx.regs).rsp };
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

#[inline(always)]
fn count_at_entry(ctx: &ProbeContext, tgid: u32, size: u64) {
    if size > PTRDIFF_MAX {
        return;
    }
    let site = if sample::take(size) {
        // SAFETY: as in `enter`.
        let (sp, fp) = unsafe { ((*ctx.regs).rsp, (*ctx.regs).rbp) };
        stack::record(ctx, tgid, sp, fp).1
    } else {
        None
    };
    count_alloc(ctx, tgid, site, size);
}

/// Counts one allocation at its site, or, when it has none (unsampled, or its stack could not
/// be stored), in its process's unattributed totals. User space adds the two for the
/// process's totals, so an allocation with a site costs one map update, not two.
#[inline(always)]
fn count_alloc<C: EbpfContext>(ctx: &C, tgid: u32, site: Option<&mut SiteStats>, size: u64) {
    tally_alloc(ctx, tgid, site, size, 1);
}

/// Adds `n` allocations of `size` bytes (n = u64::MAX: takes one back, as two's complement).
#[inline(always)]
fn tally_alloc<C: EbpfContext>(
    ctx: &C,
    tgid: u32,
    site: Option<&mut SiteStats>,
    size: u64,
    n: u64,
) {
    let bytes = size.wrapping_mul(n);
    match site {
        Some(site) => {
            add(&mut site.bytes, bytes);
            add(&mut site.size_hist[hist_index(size)], n);
        }
        None => {
            if let Some(u) = unattributed(ctx, tgid) {
                add(&mut u.allocs, n);
                add(&mut u.bytes, bytes);
            }
        }
    }
}

/// `log2_bucket(v)`, bounded where the verifier can see it: it cannot follow the search's
/// arithmetic, and LLVM drops a plain mask it proves redundant, so the mask follows a
/// volatile read.
#[inline(always)]
fn hist_index(v: u64) -> usize {
    let i = log2_bucket_searched(v);
    // SAFETY: reads a local.
    unsafe { core::ptr::read_volatile(&i) & (HIST_BUCKETS - 1) }
}

/// The site of (tgid, stack hash), if it has one.
#[inline(always)]
fn site(tgid: u32, stack_hash: u64) -> Option<&'static mut SiteStats> {
    if stack_hash == 0 {
        return None;
    }
    sites::counters(tgid, stack_hash).map(|s| &mut s.stats)
}

/// The clock, read at most once per program run: a read costs ~20-40 ns on this VM.
#[derive(Default)]
struct Now(u64);

impl Now {
    #[inline(always)]
    fn get(&mut self) -> u64 {
        if self.0 == 0 {
            // SAFETY: a helper without preconditions.
            self.0 = unsafe { bpf_ktime_get_ns() };
        }
        self.0
    }
}

/// Remembers a new block until its free: its size, site and birth time.
#[inline(always)]
fn track<C: EbpfContext>(ctx: &C, tgid: u32, addr: u64, size: u64, stack_hash: u64, now: &mut Now) {
    // Only a site records lifetimes (`record_freed`): an unsampled block skips the clock
    // read, most of what tracking it costs.
    let ts_ns = if stack_hash != 0 { now.get() } else { 0 };
    let info = AllocInfo {
        size,
        stack_hash,
        ts_ns,
    };
    store(ctx, tgid, addr, &info);
}

/// Puts a block in the in-flight table, counting what that could not do cleanly.
#[inline(always)]
fn store<C: EbpfContext>(ctx: &C, tgid: u32, addr: u64, info: &AllocInfo) {
    match live::insert(tgid, addr, info) {
        live::Inserted::Stored => {}
        live::Inserted::OverStale => bump_loss(ctx, loss::STALE_BLOCK),
        live::Inserted::Full => bump_loss(ctx, loss::LIVE_MAP_FULL),
    }
}

/// Takes back what `count_alloc` counted at the entry of a call that failed (NULL, an error,
/// realloc(p, 0)): the counters end exact, and a drain between the two sees one allocation
/// in flight.
#[inline(always)]
fn uncount_alloc<C: EbpfContext>(ctx: &C, tgid: u32, stack_hash: u64, size: u64) {
    tally_alloc(ctx, tgid, site(tgid, stack_hash), size, u64::MAX);
}

/// As `count_alloc`, for a free: at the block's site, or in the process's unattributed totals.
#[inline(always)]
fn record_freed<C: EbpfContext>(ctx: &C, tgid: u32, info: &AllocInfo, now: &mut Now) {
    match site(tgid, info.stack_hash) {
        Some(site) => {
            add(&mut site.freed_bytes, info.size);
            let life = now.get().saturating_sub(info.ts_ns);
            add(&mut site.life_hist[hist_index(life)], 1);
        }
        None => {
            if let Some(u) = unattributed(ctx, tgid) {
                add(&mut u.frees, 1);
                add(&mut u.freed_bytes, info.size);
            }
        }
    }
}

#[inline(always)]
fn count_unknown_free<C: EbpfContext>(ctx: &C, tgid: u32) {
    if let Some(p) = proc_stats(ctx, tgid) {
        add(&mut p.unknown_frees, 1);
    }
}

/// Where the process's unattributed counts go: this CPU's OWNED slot when the process owns
/// it or claims it now, else its entry in the process map.
#[inline(always)]
fn unattributed<C: EbpfContext>(ctx: &C, tgid: u32) -> Option<&'static mut Unattributed> {
    // SAFETY: a helper without preconditions; the program cannot migrate while it runs.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    if let Some(slot) = OWNED.get_ptr_mut(cpu) {
        // SAFETY: map value pointers stay valid for the program's run; user space writes a
        // slot only once its owner has exited, and the counters are updated atomically.
        let slot = unsafe { &mut *slot };
        // SAFETY: reads a map value another CPU may write.
        let owner = unsafe { core::ptr::read_volatile(&slot.tgid) };
        if owner == tgid {
            return Some(&mut slot.totals);
        }
        // The process map entry comes first: it is how user space learns of the process.
        if owner == 0 && proc_stats(ctx, tgid).is_some() {
            // SAFETY: an atomic compare-and-swap on a map value.
            let (_, won) = unsafe {
                atomic_cxchg::<u32, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
                    &mut slot.tgid,
                    0,
                    tgid,
                )
            };
            if won {
                return Some(&mut slot.totals);
            }
        }
    }
    proc_stats(ctx, tgid).map(|p| &mut p.totals)
}

/// The process's entry in the process map, created on its first traced call or first site.
#[inline(always)]
pub fn proc_stats<C: EbpfContext>(ctx: &C, tgid: u32) -> Option<&'static mut ProcStats> {
    if let Some(p) = PROCS.get_ptr_mut(&tgid) {
        // SAFETY: map value pointers stay valid for the program's run.
        return Some(unsafe { &mut *p });
    }
    let fresh = ProcStats {
        totals: Unattributed {
            allocs: 0,
            bytes: 0,
            frees: 0,
            freed_bytes: 0,
        },
        unknown_frees: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    match PROCS.insert(&tgid, &fresh, BPF_NOEXIST) {
        Ok(()) => notify(
            ctx,
            Event {
                tgid,
                kind: event::NEW_PROCESS,
            },
        ),
        Err(e) if e == -17 => {}
        Err(_) => {
            bump_loss(ctx, loss::PROC_MAP_FULL);
            return None;
        }
    }
    // SAFETY: as above.
    PROCS.get_ptr_mut(&tgid).map(|p| unsafe { &mut *p })
}
