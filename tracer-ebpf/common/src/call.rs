//! An allocator call: which function it is, its state between entry and return (per thread,
//! kernel-only), and glibc's rules for the sizes it is asked for.
use core::mem::size_of;

use crate::live::AllocInfo;

/// glibc's MALLOC_ALIGNMENT on x86-64: the aligned functions hand smaller alignments to
/// malloc itself.
pub const MALLOC_ALIGNMENT: u64 = 16;
/// glibc refuses larger requests at once (ENOMEM) without calling anything else.
pub const PTRDIFF_MAX: u64 = i64::MAX as u64;

/// Which allocator function an in-flight call belongs to; decides how its return is read.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallKind {
    /// malloc, calloc, aligned_alloc, memalign, valloc, pvalloc: the return value is the block.
    Plain = 0,
    /// realloc and reallocarray: frees `ptr_arg` (when not NULL) and returns the new block.
    Realloc = 1,
    /// posix_memalign: returns 0 on success and stores the block at `*ptr_arg`.
    PosixMemalign = 2,
    /// jemalloc's xallocx(ptr, size, extra, flags): resizes `ptr_arg` in place and returns its
    /// usable size, below `size` when it could not: then nothing changed. A success is
    /// accounted as a realloc that kept the address (the old block freed, a block of `size`
    /// bytes allocated there).
    Xallocx = 3,
}

impl CallKind {
    /// Whether the call gives `ptr_arg` back when it succeeds (the realloc family, xallocx).
    #[inline(always)]
    pub fn resizes(kind: u32) -> bool {
        kind == CallKind::Realloc as u32 || kind == CallKind::Xallocx as u32
    }
}

/// State of an allocator call between its entry and its return: one per thread, in the
/// kernel's task storage. Kernel-only, kept here with the other layouts.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CallState {
    /// Requested bytes.
    pub size: u64,
    /// realloc: the old block; posix_memalign: where the block's address is stored.
    pub ptr_arg: u64,
    pub stack_hash: u64,
    /// Stack pointer at the outermost entry: an entry above it means the previous call never
    /// returned through our uretprobe; at or below it, a call nested inside this one.
    pub sp: u64,
    /// realloc: the old block, taken out of the in-flight map at entry (while the caller still
    /// owns it, so another thread reusing the address after realloc freed it cannot be confused
    /// with it) and put back if realloc fails.
    pub old: AllocInfo,
    /// `CallKind` as u32.
    pub kind: u32,
    /// Allocator calls nested inside this one on the same thread (glibc's realloc(NULL, n)
    /// calls malloc): only the outermost is counted.
    pub depth: u32,
    /// 1 when `old` holds the realloc'd block's record.
    pub old_known: u32,
    /// 1 between an outermost call's entry and its return; the storage outlives calls.
    pub active: u32,
}
const _: () = assert!(size_of::<CallState>() == 72);

/// Per thread (task storage): the allocator call in progress (`outer`), and one a signal
/// handler made while `outer` was in progress (`inner`): told apart from glibc's own nesting
/// by how far below the outer call's stack pointer it runs (see the kernel side's
/// `NEST_MAX`). Kernel-only.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CallStates {
    pub outer: CallState,
    pub inner: CallState,
    /// The block the thread's last counted free released, and the stack pointer at that free's
    /// entry: an allocator's free-like function that tail-calls another probed one (tcmalloc's
    /// sized delete jumping to tc_free, mimalloc's mi_free_size to mi_free) fires a second
    /// free probe on the same block, nested; that one must not count an unknown free.
    pub freed: u64,
    pub freed_sp: u64,
}
const _: () = assert!(size_of::<CallStates>() == 160);

/// nmemb × size for calloc/reallocarray; on overflow the call fails and records nothing, so
/// the value then only has to be above PTRDIFF_MAX (it is never counted).
///
/// Without a branch: a branch gives the verifier two states for the size (a constant and an
/// unknown), and it walked the rest of the program once for each (calloc's and
/// reallocarray's programs took 0.6 s each to load, malloc's 0.19 s).
#[inline(always)]
pub fn array_bytes(n: u64, size: u64) -> u64 {
    // The high half of the 128-bit product from 32-bit halves: checked_mul or u128 lower to
    // a 128-bit multiply, which BPF lacks, and LLVM recognizes this sum as one too unless
    // each half comes from its own (volatile) read.
    const LOW: u64 = 0xffff_ffff;
    // SAFETY: reads locals.
    let [n_lo, n_hi, s_lo, s_hi] = unsafe {
        use core::ptr::read_volatile as read;
        [
            read(&n) & LOW,
            read(&n) >> 32,
            read(&size) & LOW,
            read(&size) >> 32,
        ]
    };
    let (ll, lh, hl) = (n_lo * s_lo, n_lo * s_hi, n_hi * s_lo);
    let mid = (ll >> 32) + (lh & LOW) + (hl & LOW);
    let high = (n_hi * s_hi) + (lh >> 32) + (hl >> 32) + (mid >> 32);
    // Bit 63 of high | -high is set exactly when high is not 0. Read twice through volatile
    // reads, so LLVM cannot see the idiom and turn it back into a compare (a branch in BPF).
    // SAFETY: reads a local.
    let (a, b) = unsafe {
        (
            core::ptr::read_volatile(&high),
            core::ptr::read_volatile(&high),
        )
    };
    n.wrapping_mul(size) | ((a | b.wrapping_neg()) & (1 << 63))
}

/// realloc's size, or a value above PTRDIFF_MAX (never counted) for realloc(p, 0) with p not
/// NULL, which frees p and allocates nothing.
///
/// Without a branch, as `array_bytes`: `if ptr != 0 && size == 0` made the verifier walk the
/// counting that follows twice (325k instructions instead of 164k).
#[inline(always)]
pub fn freeing_realloc_uncounted(ptr: u64, size: u64) -> u64 {
    // SAFETY: reads locals (volatile, so LLVM does not turn the bit tests back into compares).
    let (p, s) = unsafe {
        (
            core::ptr::read_volatile(&ptr),
            core::ptr::read_volatile(&size),
        )
    };
    // Bit 63 of x | -x is set exactly when x is not 0.
    let ptr_set = p | p.wrapping_neg();
    let size_set = s | s.wrapping_neg();
    size | (ptr_set & !size_set & (1 << 63))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    /// calloc's size: the product when it fits in 64 bits, else a value above PTRDIFF_MAX
    /// (never counted), for operands around every power of two and the extremes.
    #[test]
    fn array_bytes_is_the_product_or_above_ptrdiff_max() {
        let mut values = std::vec![0u64, 1, 2, 3, u64::MAX, u64::MAX - 1, 0xffff_ffff];
        for b in 0..64 {
            let p = 1u64 << b;
            values.extend([p - 1, p, p + 1, p.wrapping_mul(3)]);
        }
        for &n in &values {
            for &size in &values {
                let got = array_bytes(n, size);
                match n.checked_mul(size) {
                    Some(product) => assert_eq!(got, product, "{n} x {size}"),
                    None => assert!(got > i64::MAX as u64, "{n} x {size} overflows: {got}"),
                }
            }
        }
    }
}
