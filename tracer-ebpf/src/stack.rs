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
use core::intrinsics::{atomic_cxchg, AtomicOrdering};
use core::mem::MaybeUninit;
use core::ptr::write_volatile;

use alloctrace_common::{
    event, loss, stack_hash_step, Event, SiteStats, StackKey, StackTrace, FNV_OFFSET, MAX_FRAMES,
};
use aya_ebpf::{
    helpers::{bpf_probe_read_user, bpf_probe_read_user_buf},
    programs::ProbeContext,
};

use crate::alloc::{bump_loss, notify, proc_stats};
use crate::maps::{STACKS, STACK_SCRATCH};
use crate::sites;

const BPF_NOEXIST: u64 = 1;
const EEXIST: i32 = 17;

/// Words read at once from the stack pointer: 128 bytes hold the return address and the
/// caller's frame record for most callers.
const CHUNK_WORDS: usize = 16;
const CHUNK_BYTES: u64 = 8 * CHUNK_WORDS as u64;
const CHUNK_MASK: usize = CHUNK_WORDS - 1;
type Chunk = [u64; CHUNK_WORDS];

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
    // One read of the 128 bytes above the stack pointer holds the return address and, for
    // most callers, their frame record: a separate bpf_probe_read_user measured ~25 ns here,
    // a read of 128 bytes instead of 8 ~3 ns more (larger chunks cost more than they saved).
    // Into the program's stack, not a map: the kernel's usercopy hardening checks a
    // destination on the task's stack with two compares, a map value by its page.
    // Near the top of a stack the chunk can run past the mapping and the read fails; then the
    // return address is read alone.
    let mut buf = MaybeUninit::<Chunk>::uninit();
    // SAFETY: bpf_probe_read_user checks the user address and fails instead of faulting; the
    // cast only views the words as bytes.
    let chunk = (sp & 7 == 0
        && unsafe {
            bpf_probe_read_user_buf(
                sp as *const u8,
                &mut *(buf.as_mut_ptr() as *mut [u8; CHUNK_BYTES as usize]),
            )
        }
        .is_ok())
    // SAFETY: the read filled every word.
    .then(|| unsafe { buf.assume_init_ref() });
    let first = match chunk {
        Some(c) => Some(c[0]),
        // SAFETY: as above.
        None => unsafe { bpf_probe_read_user(sp as *const u64) }.ok(),
    };
    if first.is_none() {
        bump_loss(ctx, loss::STACK_READ_FAILED);
    }
    let (hash, _) = walk(sp, fp, first, chunk, |_, _| {});
    if let Some(site) = sites::counters(tgid, hash) {
        return (hash, Some(&mut site.stats));
    }
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
    // The same walk again, writing the frames out (the thread is stopped in the probe: its
    // stack has not changed); its hash is the one stored.
    let (hash, len) = walk(sp, fp, first, chunk, |i, ip| put(&mut st.ips[i], ip));
    put(&mut st.len, len);
    let found = store(ctx, tgid, hash, st);
    // SAFETY: as above. Volatile, as are the stores into the scratch (`put`): the compiler
    // keeps them in order (BPF has no release store here, and LLVM may move plain stores past
    // a volatile one).
    unsafe { write_volatile(held, 0) };
    found
}

/// A store into the held scratch, kept before its release (see `record`).
#[inline(always)]
fn put<T>(to: &mut T, v: T) {
    // SAFETY: `to` is a valid reference.
    unsafe { write_volatile(to, v) };
}

/// Walks the user stack: `first` is the return address at `sp` (None: unreadable, an empty
/// stack), then the frame records from `fp`, from `chunk` (the words at `sp`) where they lie
/// in it. Hands each frame to `each` and returns the stack's hash, never 0 or 1 (0 means no
/// stack, 1 a dead slot of the site table), and its number of frames.
#[inline(always)]
fn walk(
    sp: u64,
    fp: u64,
    first: Option<u64>,
    chunk: Option<&Chunk>,
    mut each: impl FnMut(usize, u64),
) -> (u64, u32) {
    let mut hash = FNV_OFFSET;
    let mut len = 0u32;
    if let Some(ret) = first {
        each(0, ret);
        hash = stack_hash_step(hash, ret);
        len = 1;
        let mut fp = fp;
        // Frames live above the stack pointer; anything else is not a frame pointer.
        if fp < sp {
            fp = 0;
        }
        for i in 1..MAX_FRAMES {
            if fp == 0 || fp & 7 != 0 {
                break;
            }
            // [fp] is the saved frame pointer, [fp+8] the return address: from the chunk
            // when both are in it.
            let off = fp - sp;
            let pair = match chunk {
                Some(c) if off <= CHUNK_BYTES - 16 => {
                    let w = (off / 8) as usize;
                    // The masks only restate the bound above for the verifier.
                    [c[w & CHUNK_MASK], c[(w + 1) & CHUNK_MASK]]
                }
                // SAFETY: as in `record`.
                _ => match unsafe { bpf_probe_read_user(fp as *const [u64; 2]) } {
                    Ok(pair) => pair,
                    Err(_) => break,
                },
            };
            let (next, ret) = (pair[0], pair[1]);
            if ret == 0 {
                break;
            }
            each(i, ret);
            hash = stack_hash_step(hash, ret);
            len += 1;
            // The stack grows down: a caller's frame is always at a higher address.
            if next <= fp {
                break;
            }
            fp = next;
        }
    }
    hash = stack_hash_step(hash, len as u64);
    if hash < 2 {
        hash += 2;
    }
    (hash, len)
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
