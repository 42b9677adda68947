//! Sampling by bytes: whether this allocation is one whose stack is recorded. Decided before
//! any stack is walked, so an unsampled allocation costs a per-CPU counter update.
use alloctrace_common::sampling::next_interval;
use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::helpers::bpf_get_prandom_u32;

use crate::config::{global, SAMPLE_BYTES};
use crate::tables::maps::SAMPLER;

/// Whether an allocation of `size` bytes is sampled. Every allocation is when sampling is off.
/// The countdown is per CPU: a program runs to completion on one CPU, and the draws are
/// memoryless, so which CPU's countdown an allocation consumes does not bias the estimate.
#[inline(always)]
pub fn take(size: u64) -> bool {
    let mean = global(&SAMPLE_BYTES);
    if mean == 0 {
        return true;
    }
    let Some(left) = SAMPLER.get_ptr_mut(0) else {
        return true;
    };
    // SAFETY: this CPU's slot. A program preempted between this read and its write (only
    // kernels that preempt kernel code can) loses another's update of the countdown: two
    // allocations then draw on one countdown, which moves the next sample a little and biases
    // nothing measurable. Guarding it as the stack scratch is guarded would cost every
    // allocation, sampled or not, an atomic operation.
    let left = unsafe { &mut *left };
    // Volatile: the comparison below is then of `size` against a value read from the map on
    // every path. A value the verifier had just seen computed (the first draw) would give it
    // bounds on `size` that differ by path, and it would walk the whole stack capture once
    // per path (twice the verification time; calloc's program near the verifier's limit of a
    // million instructions).
    // SAFETY: `left` points into this CPU's slot.
    if unsafe { read_volatile(left) } == 0 {
        // First allocation on this CPU: start from a fresh draw, as after a sample.
        unsafe { write_volatile(left, next_interval(bpf_get_prandom_u32(), mean)) };
    }
    // SAFETY: as above.
    let l = unsafe { read_volatile(left) };
    if size < l {
        unsafe { write_volatile(left, l - size) };
        return false;
    }
    // SAFETY: as above; bpf_get_prandom_u32 has no preconditions.
    unsafe { write_volatile(left, next_interval(bpf_get_prandom_u32(), mean)) };
    true
}
