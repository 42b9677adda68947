//! Loops the verifier walks once: `repeat` runs a step function up to n times through the
//! kernel's `bpf_loop` (5.17+).
//!
//! A bounded Rust loop is unrolled by the verifier: it walks the body once per iteration
//! and per distinct exit, in every program that inlines it (the stack walk and the table
//! windows once made ~90% of each program's verified instructions). A `bpf_loop` callback
//! is a subprogram verified on its own, whatever the count, and the kernel inlines the
//! helper into a plain loop of BPF-to-BPF calls (`inline_bpf_loop`): a few instructions
//! per iteration at run time.
use aya_ebpf::{cty::c_void, helpers::bpf_loop};

/// A loop body: gets the iteration's index (from 0) and the loop's state; returns 0 to go
/// on, 1 to stop.
pub type Step = extern "C" fn(u64, *mut c_void) -> i64;

/// Runs `step` with `state` for indices 0, 1, .. until it returns 1 or `n` have run.
#[inline(always)]
pub fn repeat<T>(n: u32, step: Step, state: &mut T) {
    // SAFETY: `step` is a BPF subprogram of the signature bpf_loop calls (the linker emits
    // it as one; its address is a BPF_PSEUDO_FUNC load); `state` is alive for the call and
    // is what every step casts its context back to. Flags must be 0. The count is bounded
    // by the caller; the helper only fails for n > 2^23 or nonzero flags.
    unsafe { bpf_loop(n, step as *mut c_void, state as *mut T as *mut c_void, 0) };
}
