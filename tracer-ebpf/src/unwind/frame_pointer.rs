//! The frame-pointer unwinder: the return address on top of the stack, then the chain of
//! `[fp]`/`[fp+8]` frame records. `walk` only hashes the frames (the hot path); `walk_and_keep`
//! walks them again for a stack to store, checking and writing each out.
//!
//! Both are subprograms (`inline(never)`) the verifier walks once per call site, and each
//! returns one value it does not know: the program after them is walked once, not once per
//! way out of the walk (inlined, the walk's ~60 exits each carried their own state into the
//! site lookup and the store: ~10k more walked instructions per entry program).
use core::ptr::{read_volatile, write_volatile};

use alloctrace_common::{loss, stack_cut, stack_hash_step, StackTrace, FNV_OFFSET, FP_MAX_FRAMES};
use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_probe_read_user, generated},
    macros::map,
    maps::PerCpuArray,
    programs::ProbeContext,
};

use super::frame_check::code_check;
use crate::account::loss::bump_loss;
use crate::bounded::repeat;
use crate::tables::maps::STACK_SCRATCH;

/// Words read at once from the stack pointer: 128 bytes hold the return address and the
/// caller's frame record for most callers.
const CHUNK_WORDS: usize = 16;
const CHUNK_BYTES: u64 = 8 * CHUNK_WORDS as u64;
const CHUNK_MASK: usize = CHUNK_WORDS - 1;
pub type Chunk = [u64; CHUNK_WORDS];

/// A store into the held scratch, kept before its release (see `unwind::record`).
#[inline(always)]
fn put<T>(to: &mut T, v: T) {
    // SAFETY: `to` is a valid reference.
    unsafe { write_volatile(to, v) };
}

/// `walk` again, for a stack to store: the same frames and hash (its return address at `sp`
/// taken as `walk` took it, from the same `chunk_read` and `chunk`), but each frame is first
/// checked to lie in an executable mapping of the current task, and only the frames before
/// the first that fails are written into the held stack scratch (`st`; `st.cut` says why it
/// ends there). The rest of the walk still runs, for the hash. Returns the hash.
///
/// In a `bpf_loop` whose state is in a per-CPU map slot (`FP_WALK`), not on the stack: the
/// verifier does not track a map's values, so it walks the step once or twice rather than
/// once per frame count and cut (~4k walked instructions in every entry program). The slot
/// is this CPU's, used only while the stack scratch is held (see `unwind::keep_new`): a
/// program that preempts this one finds the scratch held and does not walk.
#[inline(never)]
pub fn walk_and_keep(st: &mut StackTrace, sp: u64, fp: u64, chunk_read: i64, chunk: &Chunk) -> u64 {
    // The whole record reaches user space: no slot may keep an earlier stack's frame (of
    // another process, maybe) past this one's end. The slots past `FP_MAX_FRAMES` stay as
    // the map was created, zero: only this walk writes into its scratch (the clear of all
    // 127 took ~5k more walked instructions per program).
    for ip in st.ips[..FP_MAX_FRAMES].iter_mut() {
        put(ip, 0);
    }
    let Some(w) = FP_WALK.get_ptr_mut(0) else {
        put(&mut st.len, 0);
        put(&mut st.cut, stack_cut::UNCHECKED);
        return 2;
    };
    // SAFETY: this CPU's slot, used only under the held scratch (above).
    let w = unsafe { &mut *w };
    let first = first(sp, chunk_read, chunk);
    // Frames live above the stack pointer; anything else is not a frame pointer.
    put(&mut w.fp, if fp < sp { 0 } else { fp });
    put(&mut w.ret, first.unwrap_or(0));
    put(&mut w.hash, FNV_OFFSET);
    put(&mut w.len, 0);
    put(&mut w.cut, stack_cut::NONE as u64);
    if first.is_some() {
        repeat(FP_MAX_FRAMES as u32, walk_step, &mut ());
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

/// `walk_and_keep`'s loop state: one per CPU (see `walk_and_keep`).
#[repr(C)]
pub struct Walk {
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

#[map]
static FP_WALK: PerCpuArray<Walk> = PerCpuArray::with_max_entries(1, 0);

/// bpf_loop's body, step `i` of `walk_and_keep`: as `walk`'s, and ends the loop (1) where it
/// would.
extern "C" fn walk_step(i: u64, _ctx: *mut c_void) -> i64 {
    let (Some(w), Some(scratch)) = (FP_WALK.get_ptr_mut(0), STACK_SCRATCH.get_ptr_mut(0)) else {
        return 1;
    };
    // SAFETY: this CPU's slots, used only under the held scratch (see `walk_and_keep`).
    let (w, st) = unsafe { (&mut *w, &mut (*scratch).trace) };
    let i = i as usize;
    if i >= FP_MAX_FRAMES {
        return 1;
    }
    let mut next = 0;
    if i > 0 {
        let fp = w.fp;
        if fp == 0 || fp & 7 != 0 {
            return 1;
        }
        // SAFETY: as in `unwind::record`.
        let Ok(pair) = (unsafe { bpf_probe_read_user(fp as *const [u64; 2]) }) else {
            return 1;
        };
        if pair[1] == 0 {
            return 1;
        }
        next = pair[0];
        put(&mut w.ret, pair[1]);
    }
    let ret = w.ret;
    let (hash, len) = (stack_hash_step(w.hash, ret), w.len + 1);
    put(&mut w.hash, hash);
    put(&mut w.len, len);
    if w.cut == stack_cut::NONE as u64 {
        let cut = code_check(ret);
        put(&mut w.cut, cut as u64);
        if cut == stack_cut::NONE {
            put(&mut st.ips[i], ret);
        } else {
            put(&mut st.len, i as u32);
        }
    }
    if i > 0 {
        // The stack grows down: a caller's frame is always at a higher address.
        if next <= w.fp {
            return 1;
        }
        put(&mut w.fp, next);
    }
    // Every frame so far kept and the chain going on past the last one the stack holds: cut
    // by the depth limit (counted), not ended.
    if i + 1 >= FP_MAX_FRAMES && w.cut == stack_cut::NONE as u64 {
        put(&mut st.len, FP_MAX_FRAMES as u32);
        put(&mut w.cut, stack_cut::TRUNCATED as u64);
    }
    0
}

/// Reads the words at `sp` into `chunk`, every byte of it (zeroes if the read fails);
/// returns the read's result (0: read), unexamined: `walk` looks at it, so the verifier walks
/// the program up to `walk` once, not once per outcome.
#[inline(always)]
pub fn read_chunk(sp: u64, chunk: *mut Chunk) -> i64 {
    // SAFETY: bpf_probe_read_user checks the user address and fails instead of faulting (and
    // then zeroes the destination); `chunk` points at CHUNK_BYTES the caller owns.
    unsafe {
        generated::bpf_probe_read_user(
            chunk as *mut c_void,
            CHUNK_BYTES as u32,
            sp as *const c_void,
        )
    }
}

/// The return address at `sp`: the chunk's first word if the chunk was read (and `sp` is
/// aligned: the chunk's words are the frame records'). Near the top of a stack the chunk can
/// run past the mapping and its read fails; then the return address is read alone.
#[inline(always)]
fn first(sp: u64, chunk_read: i64, chunk: &Chunk) -> Option<u64> {
    if chunk_read == 0 && sp & 7 == 0 {
        Some(chunk[0])
    } else {
        // SAFETY: as in `unwind::record`.
        unsafe { bpf_probe_read_user(sp as *const u64) }.ok()
    }
}

/// Walks the user stack: the return address at `sp` (unreadable: an empty stack, counted),
/// then the frame records from `fp`, from `chunk` (the words at `sp`, if `read_chunk`
/// returned `chunk_read` 0 and `sp` is aligned) where they lie in it. Returns the stack's
/// hash, never 0 or 1 (0 means no stack, 1 a dead slot of the site table). `walk_and_keep`
/// walks the same frames the same way for a stack to store.
#[inline(never)]
pub fn walk(ctx: &ProbeContext, sp: u64, fp: u64, chunk_read: i64, chunk: &Chunk) -> u64 {
    let in_chunk = chunk_read == 0 && sp & 7 == 0;
    let first = first(sp, chunk_read, chunk);
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
        for _ in 1..FP_MAX_FRAMES {
            if fp == 0 || fp & 7 != 0 {
                break;
            }
            // [fp] is the saved frame pointer, [fp+8] the return address: from the chunk
            // when both are in it.
            let off = fp - sp;
            let pair = if in_chunk && off <= CHUNK_BYTES - 16 {
                // The masks restate the bound above, and the words' alignment (the chunk is
                // on the stack, where the verifier wants every access aligned), for the
                // verifier. Through a volatile read: the compiler would drop them, knowing
                // both already.
                // SAFETY: a read of a local.
                let w = unsafe { read_volatile(&(off / 8)) } as usize;
                [chunk[w & CHUNK_MASK], chunk[(w + 1) & CHUNK_MASK]]
            } else {
                // SAFETY: as in `unwind::record`.
                match unsafe { bpf_probe_read_user(fp as *const [u64; 2]) } {
                    Ok(pair) => pair,
                    Err(_) => break,
                }
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
    } else {
        bump_loss(ctx, loss::STACK_READ_FAILED);
    }
    hash = stack_hash_step(hash, len as u64);
    if hash < 2 {
        hash += 2;
    }
    hash
}
