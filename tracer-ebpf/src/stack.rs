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
//! is stored its frames are checked (`exec_prefix`) and it ends at the first that fails,
//! marked cut. The hot path (a known stack) only hashes the raw walk and checks nothing, so
//! two raw walks that differ only beyond the cut are two kernel sites with the same stored
//! frames: user space merges them.
use core::intrinsics::{atomic_cxchg, AtomicOrdering};
use core::mem::MaybeUninit;
use core::ptr::write_volatile;

use alloctrace_common::{
    event, loss, stack_cut, stack_hash_step, Event, SiteStats, StackKey, StackTrace, FNV_OFFSET,
    MAX_FRAMES, VM_EXEC,
};
use aya_ebpf::{
    cty::c_void,
    helpers::{
        bpf_find_vma, bpf_get_current_task_btf, bpf_loop, bpf_probe_read_kernel,
        bpf_probe_read_user, bpf_probe_read_user_buf,
    },
    programs::ProbeContext,
};

use crate::alloc::{bump_loss, notify, proc_stats};
use crate::maps::{STACKS, STACK_SCRATCH};
use crate::sites;

const BPF_NOEXIST: u64 = 1;
const EEXIST: i32 = 17;
const ENOENT: i64 = 2;

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
    let hash = walk(sp, fp, first, chunk);
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
    // The same walk again, checking and writing the frames out (the thread is stopped in the
    // probe: its stack has not changed); its hash is the one stored.
    let hash = walk_and_keep(st, sp, fp, first.is_some() as u64, first.unwrap_or(0));
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

/// A store into the held scratch, kept before its release (see `record`).
#[inline(always)]
fn put<T>(to: &mut T, v: T) {
    // SAFETY: `to` is a valid reference.
    unsafe { write_volatile(to, v) };
}

/// `walk` again, for a stack to store: the same frames and hash, but each frame is first
/// checked to lie in an executable mapping of the current task, and only the frames before
/// the first that fails are written into `st` (`st.cut` says why it ends there). The rest
/// of the walk still runs, for the hash. Returns the hash.
///
/// In a `bpf_loop`, not an unrolled loop, and not inlined: the verifier walks its body once
/// per visit, not once per frame and exit (the unrolled walk with the check took ~150k more
/// walked instructions in every entry program, this one fewer than before).
#[inline(never)]
fn walk_and_keep(st: &mut StackTrace, sp: u64, fp: u64, has_first: u64, first: u64) -> u64 {
    // The whole record reaches user space: no slot may keep an earlier stack's frame (of
    // another process, maybe) past this one's end.
    for ip in st.ips.iter_mut() {
        put(ip, 0);
    }
    let mut w = Walk {
        st,
        sp,
        // Frames live above the stack pointer; anything else is not a frame pointer.
        fp: if fp < sp { 0 } else { fp },
        ret: first,
        hash: FNV_OFFSET,
        len: 0,
        cut: stack_cut::NONE as u64,
    };
    if has_first != 0 {
        // SAFETY: the callback is a BPF subprogram of the signature bpf_loop calls; its
        // context is `w`, alive for the call.
        unsafe {
            bpf_loop(
                MAX_FRAMES as u32,
                walk_step as *mut c_void,
                &mut w as *mut Walk as *mut c_void,
                0,
            )
        };
    }
    let mut hash = stack_hash_step(w.hash, w.len);
    if hash < 2 {
        hash += 2;
    }
    if w.cut == stack_cut::NONE as u64 {
        put(&mut st.len, w.len as u32);
    }
    put(&mut st.cut, w.cut as u32);
    hash
}

/// `walk_and_keep`'s loop state.
#[repr(C)]
struct Walk {
    st: *mut StackTrace,
    sp: u64,
    /// The frame record to read next (0: none).
    fp: u64,
    /// Frame 0's return address (read at `sp`), then each record's.
    ret: u64,
    hash: u64,
    /// Frames walked (hashed).
    len: u64,
    /// `stack_cut::*`: once set, frames are hashed but no longer kept.
    cut: u64,
}

/// bpf_loop's body, step `i` of `walk_and_keep`: as `walk`'s, and ends the loop (1) where it
/// would.
extern "C" fn walk_step(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Walk` walk_and_keep passed.
    let w = unsafe { &mut *(ctx as *mut Walk) };
    let i = i as usize;
    if i >= MAX_FRAMES {
        return 1;
    }
    let mut next = 0;
    if i > 0 {
        let fp = w.fp;
        if fp == 0 || fp & 7 != 0 {
            return 1;
        }
        // SAFETY: as in `record`.
        let Ok(pair) = (unsafe { bpf_probe_read_user(fp as *const [u64; 2]) }) else {
            return 1;
        };
        if pair[1] == 0 {
            return 1;
        }
        next = pair[0];
        w.ret = pair[1];
    }
    let ret = w.ret;
    w.hash = stack_hash_step(w.hash, ret);
    w.len += 1;
    if w.cut == stack_cut::NONE as u64 {
        w.cut = code_check(ret) as u64;
        if w.cut == stack_cut::NONE as u64 {
            // SAFETY: `st` is the held scratch (see `record`), `i` is in bounds.
            unsafe { put(&mut (*w.st).ips[i], ret) };
        } else {
            // SAFETY: as above.
            unsafe { put(&mut (*w.st).len, i as u32) };
        }
    }
    if i > 0 {
        // The stack grows down: a caller's frame is always at a higher address.
        if next <= w.fp {
            return 1;
        }
        w.fp = next;
    }
    0
}

/// `stack_cut::NONE` if `ip` lies in an executable mapping of the current task, else why not.
#[inline(always)]
fn code_check(ip: u64) -> u32 {
    let mut flags: u64 = 0;
    // SAFETY: the current task is valid for the whole program; the callback is a BPF
    // subprogram of the signature bpf_find_vma calls; its context is `flags`, alive for the
    // call.
    let found = unsafe {
        bpf_find_vma(
            bpf_get_current_task_btf(),
            ip,
            vma_flags as *mut c_void,
            &mut flags as *mut u64 as *mut c_void,
            0,
        )
    };
    match found {
        0 if flags & VM_EXEC != 0 => stack_cut::NONE,
        // No mapping there (-ENOENT), or one that is not code.
        0 => stack_cut::NOT_CODE,
        e if e == -ENOENT => stack_cut::NOT_CODE,
        // -EBUSY: the process's mapping lock was contended (or the CPU's unlock work busy).
        _ => stack_cut::UNCHECKED,
    }
}

/// bpf_find_vma's callback: stores the flags of the mapping found (`vm_flags`, at the offset
/// the loader read from the kernel's BTF) into `flags`. Left 0 if unreadable: not code.
extern "C" fn vma_flags(_task: *mut c_void, vma: *mut c_void, flags: *mut c_void) -> i64 {
    let at = (vma as *const u8).wrapping_add(crate::global(&crate::VMA_FLAGS_OFFSET) as usize);
    // SAFETY: bpf_probe_read_kernel checks the address and fails instead of faulting; `flags`
    // is the u64 `code_check` passed as the callback's context.
    unsafe {
        if let Ok(f) = bpf_probe_read_kernel(at as *const u64) {
            *(flags as *mut u64) = f;
        }
    }
    0
}

/// Walks the user stack: `first` is the return address at `sp` (None: unreadable, an empty
/// stack), then the frame records from `fp`, from `chunk` (the words at `sp`) where they lie
/// in it. Returns the stack's hash, never 0 or 1 (0 means no stack, 1 a dead slot of the
/// site table). `walk_and_keep` walks the same frames the same way for a stack to store.
#[inline(always)]
fn walk(sp: u64, fp: u64, first: Option<u64>, chunk: Option<&Chunk>) -> u64 {
    let mut hash = FNV_OFFSET;
    let mut len = 0u32;
    if let Some(ret) = first {
        hash = stack_hash_step(hash, ret);
        len = 1;
        let mut fp = fp;
        // Frames live above the stack pointer; anything else is not a frame pointer.
        if fp < sp {
            fp = 0;
        }
        for _ in 1..MAX_FRAMES {
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
    hash
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
