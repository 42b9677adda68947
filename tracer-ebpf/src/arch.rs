//! The probed task's registers, as x86-64's `pt_regs` holds them: the arguments and the return
//! value the probes read, and the stack and frame pointers the unwinder starts from. The one
//! place that names the architecture's registers.
use aya_ebpf::programs::{ProbeContext, RetProbeContext};

/// Argument `n` of the probed call; 0 if it cannot be read.
pub fn arg(ctx: &ProbeContext, n: usize) -> u64 {
    ctx.arg::<u64>(n).unwrap_or(0)
}

/// The return value of the probed call.
#[inline(always)]
pub fn ret(ctx: &RetProbeContext) -> u64 {
    ctx.ret()
}

/// The stack pointer at the probe.
#[inline(always)]
pub fn sp(ctx: &ProbeContext) -> u64 {
    // SAFETY: regs points at the probed task's saved registers for the program's duration.
    unsafe { (*ctx.regs).rsp }
}

/// The stack and frame pointers at the probe: where a stack walk starts.
#[inline(always)]
pub fn sp_fp(ctx: &ProbeContext) -> (u64, u64) {
    // SAFETY: as in `sp`.
    unsafe { ((*ctx.regs).rsp, (*ctx.regs).rbp) }
}

/// Go's first integer argument (`rax` in Go's register ABI, Go 1.17+ on amd64).
#[inline(always)]
pub fn go_arg0(ctx: &ProbeContext) -> u64 {
    // SAFETY: as in `sp`.
    unsafe { (*ctx.regs).rax }
}

/// Whether a `jbe` probed before the kernel runs it is taken: CF or ZF set in the flags the
/// preceding `cmp` left.
#[inline(always)]
pub fn below_or_equal(ctx: &ProbeContext) -> bool {
    const CF: u64 = 1 << 0;
    const ZF: u64 = 1 << 6;
    // SAFETY: as in `sp`.
    unsafe { (*ctx.regs).eflags & (CF | ZF) != 0 }
}
