//! The frame-pointer unwinder: the return address on top of the stack, then the chain of
//! `[fp]`/`[fp+8]` frame records. `walk` only hashes the frames (the hot path); `walk_and_keep`
//! walks them again for a stack to store, checking and writing each out.
use core::ptr::write_volatile;

use alloctrace_common::{stack_cut, stack_hash_step, StackTrace, FNV_OFFSET, FP_MAX_FRAMES};
use aya_ebpf::{cty::c_void, helpers::bpf_probe_read_user};

use super::frame_check::code_check;
use crate::bounded::repeat;

/// Words read at once from the stack pointer: 128 bytes hold the return address and the
/// caller's frame record for most callers.
const CHUNK_WORDS: usize = 16;
pub const CHUNK_BYTES: u64 = 8 * CHUNK_WORDS as u64;
const CHUNK_MASK: usize = CHUNK_WORDS - 1;
pub type Chunk = [u64; CHUNK_WORDS];

/// A store into the held scratch, kept before its release (see `unwind::record`).
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
pub fn walk_and_keep(st: &mut StackTrace, sp: u64, fp: u64, has_first: u64, first: u64) -> u64 {
    // The whole record reaches user space: no slot may keep an earlier stack's frame (of
    // another process, maybe) past this one's end. The slots past `FP_MAX_FRAMES` stay as
    // the map was created, zero: only this walk writes into its scratch (the clear of all
    // 127 took ~5k more walked instructions per program).
    for ip in st.ips[..FP_MAX_FRAMES].iter_mut() {
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
        repeat(FP_MAX_FRAMES as u32, walk_step, &mut w);
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
        w.ret = pair[1];
    }
    let ret = w.ret;
    w.hash = stack_hash_step(w.hash, ret);
    w.len += 1;
    if w.cut == stack_cut::NONE as u64 {
        w.cut = code_check(ret) as u64;
        if w.cut == stack_cut::NONE as u64 {
            // SAFETY: `st` is the held scratch (see `unwind::record`), `i` is in bounds.
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

/// Walks the user stack: `first` is the return address at `sp` (None: unreadable, an empty
/// stack), then the frame records from `fp`, from `chunk` (the words at `sp`) where they lie
/// in it. Returns the stack's hash, never 0 or 1 (0 means no stack, 1 a dead slot of the
/// site table). `walk_and_keep` walks the same frames the same way for a stack to store.
#[inline(always)]
pub fn walk(sp: u64, fp: u64, first: Option<u64>, chunk: Option<&Chunk>) -> u64 {
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
            let pair = match chunk {
                Some(c) if off <= CHUNK_BYTES - 16 => {
                    let w = (off / 8) as usize;
                    // The masks only restate the bound above for the verifier.
                    [c[w & CHUNK_MASK], c[(w + 1) & CHUNK_MASK]]
                }
                // SAFETY: as in `unwind::record`.
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
