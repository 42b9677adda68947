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
use alloctrace_common::{
    event, loss, Event, SiteStats, StackKey, FNV_OFFSET, FNV_PRIME, MAX_FRAMES,
};
use aya_ebpf::{
    helpers::{bpf_probe_read_user, bpf_probe_read_user_buf},
    programs::ProbeContext,
};

use crate::alloc::{bump_loss, notify, proc_stats};
use crate::maps::{CHUNK_BYTES, CHUNK_MASK, STACKS, STACK_CHUNK, STACK_SCRATCH};
use crate::sites;

const BPF_NOEXIST: u64 = 1;
const EEXIST: i32 = 17;

#[inline(always)]
fn mix(h: u64, ip: u64) -> u64 {
    let h = (h ^ ip).wrapping_mul(FNV_PRIME);
    h ^ (h >> 32)
}

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
    let Some(st) = STACK_SCRATCH.get_ptr_mut(0) else {
        return (0, None);
    };
    // SAFETY: a per-CPU array slot; this program has the CPU until it returns.
    let st = unsafe { &mut *st };
    let mut hash = FNV_OFFSET;
    let mut len = 0u32;
    // One read of the 128 bytes above the stack pointer holds the return address and, for
    // most callers, their frame record: a separate bpf_probe_read_user measured ~25 ns here,
    // a read of 128 bytes instead of 8 ~3 ns more (larger chunks cost more than they saved).
    // Near the top of a stack the chunk can run past the mapping and the read fails; then the
    // return address is read alone.
    let chunk = STACK_CHUNK.get_ptr_mut(0);
    // SAFETY: bpf_probe_read_user checks the user address and fails instead of faulting; the
    // chunk is this CPU's slot.
    let in_chunk = match chunk {
        Some(c) if sp & 7 == 0 => unsafe {
            bpf_probe_read_user_buf(
                sp as *const u8,
                &mut *(c as *mut [u8; CHUNK_BYTES as usize]),
            )
        }
        .is_ok(),
        _ => false,
    };
    let first = if in_chunk {
        // SAFETY: as above.
        chunk.map(|c| unsafe { (*c)[0] }).ok_or(0)
    } else {
        // SAFETY: as above.
        unsafe { bpf_probe_read_user(sp as *const u64) }.map_err(|_| 0)
    };
    match first {
        Ok(ret) => {
            st.ips[0] = ret;
            hash = mix(hash, ret);
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
                    Some(c) if in_chunk && off <= CHUNK_BYTES - 16 => {
                        let w = (off / 8) as usize;
                        // SAFETY: this CPU's slot; the masks only restate the bound above
                        // for the verifier.
                        unsafe { [(*c)[w & CHUNK_MASK], (*c)[(w + 1) & CHUNK_MASK]] }
                    }
                    // SAFETY: as above.
                    _ => match unsafe { bpf_probe_read_user(fp as *const [u64; 2]) } {
                        Ok(pair) => pair,
                        Err(_) => break,
                    },
                };
                let (next, ret) = (pair[0], pair[1]);
                if ret == 0 {
                    break;
                }
                st.ips[i] = ret;
                hash = mix(hash, ret);
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
    st.len = len;
    hash = mix(hash, len as u64);
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
