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
use core::ptr::write_volatile;

use alloctrace_common::{
    event, loss, stack_hash_step, Event, SiteStats, StackKey, StackTrace, FNV_OFFSET, MAX_FRAMES,
};
use aya_ebpf::{
    helpers::{bpf_probe_read_user, bpf_probe_read_user_buf},
    programs::ProbeContext,
};

use crate::alloc::{bump_loss, notify, proc_stats};
use crate::maps::{Chunk, CHUNK_BYTES, CHUNK_MASK, STACKS, STACK_CHUNK, STACK_SCRATCH};
use crate::sites;

const BPF_NOEXIST: u64 = 1;
const EEXIST: i32 = 17;

/// Captures the current user stack, stores it (and an empty site for it) if it is new, and
/// returns its hash and its site, or 0 and None when it could not be stored (counted as a
/// loss).
#[inline(always)]
pub fn record(
    ctx: &ProbeContext,
    tgid: u32,
    sp: u64,
    fp: u64,
) -> (u64, Option<&'static mut SiteStats>) {
    let (Some(scratch), Some(st)) = (STACK_CHUNK.get_ptr_mut(0), STACK_SCRATCH.get_ptr_mut(0))
    else {
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
    // SAFETY: this CPU's slots, held by this program until the release below.
    let found = capture(
        ctx,
        tgid,
        sp,
        fp,
        unsafe { &mut (*scratch).words },
        unsafe { &mut *st },
    );
    // SAFETY: as above. Volatile, as are the stores into the scratch (`put`): the compiler
    // keeps them in order (BPF has no release store here, and LLVM may move plain stores past
    // a volatile one). The reads of the scratch come before it too: their values decide the
    // site lookup, whose reads are volatile.
    unsafe { write_volatile(held, 0) };
    found
}

/// A store into the held scratch, kept before its release (see `record`).
#[inline(always)]
fn put<T>(to: &mut T, v: T) {
    // SAFETY: `to` is a valid reference.
    unsafe { write_volatile(to, v) };
}

/// `record` with the scratch held: walks the stack into `st`, hashes it, and finds or makes
/// its site.
#[inline(always)]
fn capture(
    ctx: &ProbeContext,
    tgid: u32,
    sp: u64,
    fp: u64,
    chunk: &mut Chunk,
    st: &'static mut StackTrace,
) -> (u64, Option<&'static mut SiteStats>) {
    let mut hash = FNV_OFFSET;
    let mut len = 0u32;
    // One read of the 128 bytes above the stack pointer holds the return address and, for
    // most callers, their frame record: a separate bpf_probe_read_user measured ~25 ns here,
    // a read of 128 bytes instead of 8 ~3 ns more (larger chunks cost more than they saved).
    // Near the top of a stack the chunk can run past the mapping and the read fails; then the
    // return address is read alone.
    // SAFETY: bpf_probe_read_user checks the user address and fails instead of faulting; the
    // chunk is this CPU's slot. The cast only views the words as bytes.
    let in_chunk = sp & 7 == 0
        && unsafe {
            bpf_probe_read_user_buf(
                sp as *const u8,
                &mut *(chunk as *mut Chunk as *mut [u8; CHUNK_BYTES as usize]),
            )
        }
        .is_ok();
    let first = if in_chunk {
        Ok(chunk[0])
    } else {
        // SAFETY: as above.
        unsafe { bpf_probe_read_user(sp as *const u64) }.map_err(|_| 0)
    };
    match first {
        Ok(ret) => {
            put(&mut st.ips[0], ret);
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
                let pair = if in_chunk && off <= CHUNK_BYTES - 16 {
                    let w = (off / 8) as usize;
                    // The masks only restate the bound above for the verifier.
                    [chunk[w & CHUNK_MASK], chunk[(w + 1) & CHUNK_MASK]]
                } else {
                    // SAFETY: as above.
                    match unsafe { bpf_probe_read_user(fp as *const [u64; 2]) } {
                        Ok(pair) => pair,
                        Err(_) => break,
                    }
                };
                let (next, ret) = (pair[0], pair[1]);
                if ret == 0 {
                    break;
                }
                put(&mut st.ips[i], ret);
                hash = stack_hash_step(hash, ret);
                len += 1;
                // The stack grows down: a caller's frame is always at a higher address.
                if next <= fp {
                    break;
                }
                fp = next;
            }
        }
        Err(_) => bump_loss(ctx, loss::STACK_READ_FAILED),
    }
    put(&mut st.len, len);
    hash = stack_hash_step(hash, len as u64);
    // 0 means no stack, 1 a dead slot of the site table.
    if hash < 2 {
        hash += 2;
    }
    if let Some(site) = sites::find(tgid, hash) {
        return (hash, Some(&mut site.stats));
    }
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
