//! User stack capture at an allocator's entry.
//!
//! A frame-pointer walk started at a probe on the function's first instruction misses the
//! immediate caller: its return address is on top of the stack, not yet in a frame. So the
//! caller is read from `[rsp]` and the walk of `[rbp]`/`[rbp+8]` pairs supplies the rest. A
//! probe that user space placed past the entry (tracer-user's `placement`: free at +3, after
//! `test %rdi,%rdi`) sees the same `rsp` and `rbp`: placement only skips test/cmp/endbr64/nop,
//! which neither push nor move the stack, so `[rsp]` is still the return address. Doing
//! the walk here (rather than `bpf_get_stackid`) costs less and hashes the stack ourselves, so
//! there are no stack-map bucket collisions to lose data to.
//!
//! Code built without frame pointers keeps any data in `rbp`, so beyond the caller the walk
//! can read stack contents (a password as well as a pointer) as "return addresses". Only
//! values inside an executable mapping of the process may leave the kernel: when a new stack
//! is stored its frames are checked (`frame_check`) and it ends at the first that fails,
//! marked cut. The hot path (a known stack) only hashes the raw walk and checks nothing, so
//! two raw walks that differ only beyond the cut are two kernel sites with the same stored
//! frames: user space merges them.
//!
//! With DWARF unwinding (`--unwind dwarf`, the default) the walk is `dwarf`'s instead: user
//! space's tables of each binary's CFI say where every frame's caller is, so code built
//! without frame pointers unwinds in full; each frame is checked as it is walked, on the hot
//! path too, and a stack that ends before the thread's entry is marked truncated.
mod dwarf;
mod frame_check;
mod frame_pointer;
mod vma;

use core::intrinsics::{atomic_cxchg, AtomicOrdering};
use core::mem::MaybeUninit;
use core::ptr::write_volatile;

use alloctrace_common::unwind_table::UNWIND_DWARF;
use alloctrace_common::{event, loss, stack_cut, Event, SiteStats, StackKey, StackTrace};
use aya_ebpf::{helpers::bpf_probe_read_user, programs::ProbeContext};

use crate::account::loss::{bump_loss, notify};
use crate::account::process::proc_stats;
use crate::config::global;
use crate::tables::maps::{STACKS, STACK_SCRATCH};
use crate::tables::{sites, BPF_NOEXIST};
use frame_pointer::{read_chunk, walk, walk_and_keep, Chunk};

const EEXIST: i32 = 17;

/// How stacks are walked (`alloctrace_common::unwind_table::UNWIND_*`). Set by the loader.
#[unsafe(no_mangle)]
pub static UNWIND_MODE: u32 = 0;

/// Captures the current user stack, stores it (and an empty site for it) if it is new, and
/// returns its hash and its site, or 0 and None when it could not be stored (counted as a
/// loss).
///
/// Almost every call comes from a stack seen before, so the stack is first only hashed, and
/// its frames are written out (into the per-CPU scratch, under its guard) only when its site
/// is not found: the common path writes no shared memory before its counters.
#[inline(always)]
pub fn record(
    ctx: &ProbeContext,
    tgid: u32,
    sp: u64,
    fp: u64,
) -> (u64, Option<&'static mut SiteStats>) {
    if global(&UNWIND_MODE) == UNWIND_DWARF {
        // SAFETY: bpf_probe_read_user checks the user address and fails instead of faulting.
        let first = unsafe { bpf_probe_read_user(sp as *const u64) }.ok();
        if first.is_none() {
            bump_loss(ctx, loss::STACK_READ_FAILED);
        }
        let (has, first) = (first.is_some() as u64, first.unwrap_or(0));
        let Some(idx) = dwarf::claim() else {
            bump_loss(ctx, loss::STACK_PREEMPTED);
            return (0, None);
        };
        let found = record_dwarf(ctx, tgid, idx, sp, fp, has, first);
        dwarf::release(idx);
        return found;
    }
    // One read of the 128 bytes above the stack pointer holds the return address and, for
    // most callers, their frame record: a separate bpf_probe_read_user measured ~25 ns here,
    // a read of 128 bytes instead of 8 ~3 ns more (larger chunks cost more than they saved).
    // Into the program's stack, not a map: the kernel's usercopy hardening checks a
    // destination on the task's stack with two compares, a map value by its page.
    let mut chunk = MaybeUninit::<Chunk>::uninit();
    let read = read_chunk(sp, chunk.as_mut_ptr());
    // SAFETY: bpf_probe_read_user wrote every byte: the words read, or zeroes if it failed.
    let chunk = unsafe { chunk.assume_init_ref() };
    let hash = walk(ctx, sp, fp, read, chunk);
    if let Some(site) = sites::counters(tgid, hash) {
        return (hash, Some(&mut site.stats));
    }
    // The same walk again, checking and writing the frames out (the thread is stopped in the
    // probe: its stack has not changed); its hash is the one stored.
    keep_new(ctx, tgid, |st| walk_and_keep(st, sp, fp, read, chunk))
}

/// The DWARF walk in slot `idx`: the site of a known stack, else the new stack stored.
#[inline(always)]
fn record_dwarf(
    ctx: &ProbeContext,
    tgid: u32,
    idx: u64,
    sp: u64,
    fp: u64,
    has: u64,
    first: u64,
) -> (u64, Option<&'static mut SiteStats>) {
    let hash = dwarf::walk(idx, sp, fp, has, first);
    if let Some(site) = sites::counters(tgid, hash) {
        return (hash, Some(&mut site.stats));
    }
    let Some(slot) = dwarf::slot(idx) else {
        return (0, None);
    };
    // A frame the kernel could not check (its mapping lock was busy) would cut this site's
    // stack for the whole run: store nothing, and let the next call from it try again.
    if slot.trace.cut == stack_cut::UNCHECKED {
        bump_loss(ctx, loss::STACK_UNCHECKED);
        return (0, None);
    }
    dwarf::clear_past_end(idx);
    store(ctx, tgid, hash, &mut slot.trace)
}

/// Stores a stack its walk did not find a site for: `walk` writes its frames into the
/// per-CPU scratch and returns its hash.
#[inline(always)]
fn keep_new(
    ctx: &ProbeContext,
    tgid: u32,
    walk: impl FnOnce(&mut StackTrace) -> u64,
) -> (u64, Option<&'static mut SiteStats>) {
    let Some(scratch) = STACK_SCRATCH.get_ptr_mut(0) else {
        return (0, None);
    };
    // A uprobe's program runs with migration disabled, not preemption: on kernels that
    // preempt kernel code (preempt=full, lazy) another traced thread's program can run on
    // this CPU in the middle of this one and would overwrite the per-CPU scratch (a stack
    // stored under another's hash, silently). So the scratch is taken by compare-and-swap,
    // and a program that finds it taken records no stack: a counted loss.
    // SAFETY: a per-CPU array slot; the flag is only ever changed atomically or by its holder.
    let held = unsafe { &mut (*scratch).held };
    // SAFETY: a compare-and-swap on a map value.
    let (_, won) = unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(held, 0, 1)
    };
    if !won {
        bump_loss(ctx, loss::STACK_PREEMPTED);
        return (0, None);
    }
    // SAFETY: this CPU's slot, held by this program until the release below.
    let st = unsafe { &mut (*scratch).trace };
    let hash = walk(st);
    // A frame the kernel could not check (its mapping lock was busy) would cut this site's
    // stack for the whole run: store nothing, and let the next call from it try again.
    let found = if st.cut == stack_cut::UNCHECKED {
        bump_loss(ctx, loss::STACK_UNCHECKED);
        (0, None)
    } else {
        store(ctx, tgid, hash, st)
    };
    // SAFETY: as above. Volatile, as are the stores into the scratch (`put`): the compiler
    // keeps them in order (BPF has no release store here, and LLVM may move plain stores past
    // a volatile one).
    unsafe { write_volatile(held, 0) };
    found
}

/// Stores a stack not found in the site table (its frames in `st`) and claims its site.
#[inline(always)]
fn store(
    ctx: &ProbeContext,
    tgid: u32,
    hash: u64,
    st: &'static mut StackTrace,
) -> (u64, Option<&'static mut SiteStats>) {
    // A new site: its process's entry is created with it, so user space learns of the
    // process (and its name) even when every allocation it makes has a site.
    let _ = proc_stats(ctx, tgid);
    let key = StackKey {
        tgid,
        _pad: 0,
        hash,
    };
    match STACKS.insert(&key, &*st, BPF_NOEXIST) {
        Ok(()) => {}
        Err(e) if e == -EEXIST => {}
        Err(_) => {
            bump_loss(ctx, loss::STACK_MAP_FULL);
            return (0, None);
        }
    }
    match sites::claim(tgid, hash) {
        Some((site, new)) => {
            if new {
                notify(
                    ctx,
                    Event {
                        tgid,
                        kind: event::NEW_STACK,
                    },
                );
            }
            (hash, Some(&mut site.stats))
        }
        None => {
            // Keep the two maps consistent: a stack without a site would never be drained.
            let _ = STACKS.remove(&key);
            bump_loss(ctx, loss::SITE_MAP_FULL);
            (0, None)
        }
    }
}
