//! A process's own entries: its entry in the process map (created on its first traced call),
//! and where its unattributed counts go (its CPU's OWNED slot, or that entry).
use core::intrinsics::{atomic_cxchg, AtomicOrdering};
use core::mem::{size_of, MaybeUninit};
use core::ptr::write_volatile;

use alloctrace_common::{event, loss, Event, ProcStats, Unattributed};
use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_get_smp_processor_id, generated::bpf_get_current_comm},
    EbpfContext,
};

use crate::account::loss::{bump_loss, notify};
use crate::tables::maps::{OWNED, PROCS};
use crate::tables::BPF_NOEXIST;

/// Where the process's unattributed counts go: this CPU's OWNED slot when the process owns
/// it or claims it now, else its entry in the process map.
#[inline(always)]
pub fn unattributed<C: EbpfContext>(ctx: &C, tgid: u32) -> Option<&'static mut Unattributed> {
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
    // Zeroed word by word: a struct literal compiled to calls of a byte-by-byte memset,
    // whose loop the verifier walked byte by byte in every program.
    let mut fresh = MaybeUninit::<ProcStats>::uninit();
    let words = fresh.as_mut_ptr() as *mut u64;
    for w in 0..size_of::<ProcStats>() / 8 {
        // SAFETY: `w` is within the record; volatile keeps the stores from being merged
        // back into a memset.
        unsafe { write_volatile(words.add(w), 0) };
    }
    // SAFETY: every byte is written above; `comm` is 16 writable bytes, which the helper
    // zeroes when it fails.
    let fresh = unsafe {
        let _ = bpf_get_current_comm((*fresh.as_mut_ptr()).comm.as_mut_ptr() as *mut c_void, 16);
        fresh.assume_init()
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
