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
use aya_ebpf::{helpers::bpf_probe_read_user, programs::ProbeContext};

use crate::alloc::{bump_loss, notify, proc_stats};
use crate::maps::{SITES, SITE_ZERO, STACKS, STACK_SCRATCH};

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
    // SAFETY: bpf_probe_read_user checks the user address and fails instead of faulting.
    match unsafe { bpf_probe_read_user(sp as *const u64) } {
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
                // SAFETY: as above; [fp] is the saved frame pointer, [fp+8] the return address.
                let Ok(pair) = (unsafe { bpf_probe_read_user(fp as *const [u64; 2]) }) else {
                    break;
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
    if hash == 0 {
        hash = 1;
    }
    let key = StackKey {
        tgid,
        _pad: 0,
        hash,
    };
    if let Some(site) = SITES.get_ptr_mut(&key) {
        // SAFETY: map value pointers stay valid for the program's run.
        return (hash, Some(unsafe { &mut *site }));
    }
    // A new site: its process's entry is created with it, so user space learns of the
    // process (and its name) even when every allocation it makes has a site.
    let _ = proc_stats(ctx, tgid);
    match STACKS.insert(&key, &*st, BPF_NOEXIST) {
        Ok(()) => {}
        Err(e) if e == -EEXIST => {}
        Err(_) => {
            bump_loss(ctx, loss::STACK_MAP_FULL);
            return (0, None);
        }
    }
    let Some(zero) = SITE_ZERO.get(0) else {
        return (0, None);
    };
    match SITES.insert(&key, zero, BPF_NOEXIST) {
        Ok(()) => notify(
            ctx,
            Event {
                tgid,
                kind: event::NEW_STACK,
            },
        ),
        Err(e) if e == -EEXIST => {}
        Err(_) => {
            // Keep the two maps consistent: a stack without a site would never be drained.
            let _ = STACKS.remove(&key);
            bump_loss(ctx, loss::SITE_MAP_FULL);
            return (0, None);
        }
    }
    match SITES.get_ptr_mut(&key) {
        // SAFETY: as above.
        Some(site) => (hash, Some(unsafe { &mut *site })),
        None => (0, None),
    }
}
