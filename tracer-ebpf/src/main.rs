//! alloctrace's eBPF programs. Each entry point is a one-line wrapper: the shared logic lives
//! in `alloc` (allocation entry/return, free, alloc-only counting), which uses `call_state`
//! (nesting), `sample` (sampling), `unwind` (stack capture), `account` (the counters) and
//! `tables` (the maps); `arch` reads the registers, `config` the loader's globals.
#![no_std]
#![no_main]
// atomic_xadd: the BPF target's core has no AtomicU64::fetch_add.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod account;
mod alloc;
mod arch;
mod bounded;
mod call_state;
mod config;
mod sample;
mod tables;
mod unwind;

use alloctrace_common::{array_bytes, freeing_realloc_uncounted, CallKind, PTRDIFF_MAX};
use arch::arg;
use aya_ebpf::{
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};

// No program reads beyond the third argument (`rdx`): user space's probe placement moves a
// probe past instructions that write `rcx`, `r8` or `r9` (mimalloc's free starts with one).

#[uprobe]
pub fn malloc_enter(ctx: ProbeContext) -> u32 {
    alloc::enter(&ctx, CallKind::Plain, arg(&ctx, 0), 0)
}

#[uprobe]
pub fn calloc_enter(ctx: ProbeContext) -> u32 {
    alloc::enter(
        &ctx,
        CallKind::Plain,
        array_bytes(arg(&ctx, 0), arg(&ctx, 1)),
        0,
    )
}

#[uprobe]
pub fn realloc_enter(ctx: ProbeContext) -> u32 {
    alloc::enter(&ctx, CallKind::Realloc, arg(&ctx, 1), arg(&ctx, 0))
}

#[uprobe]
pub fn reallocarray_enter(ctx: ProbeContext) -> u32 {
    let bytes = array_bytes(arg(&ctx, 1), arg(&ctx, 2));
    alloc::enter(&ctx, CallKind::Realloc, bytes, arg(&ctx, 0))
}

/// jemalloc's xallocx(void *ptr, size_t size, size_t extra, int flags): see
/// `CallKind::Xallocx`.
#[uprobe]
pub fn xallocx_enter(ctx: ProbeContext) -> u32 {
    alloc::enter(&ctx, CallKind::Xallocx, arg(&ctx, 1), arg(&ctx, 0))
}

/// posix_memalign(void **memptr, size_t alignment, size_t size)
#[uprobe]
pub fn posix_memalign_enter(ctx: ProbeContext) -> u32 {
    alloc::enter(&ctx, CallKind::PosixMemalign, arg(&ctx, 2), arg(&ctx, 0))
}

/// aligned_alloc(alignment, size) and memalign(alignment, size).
#[uprobe]
pub fn aligned_alloc_enter(ctx: ProbeContext) -> u32 {
    alloc::enter(&ctx, CallKind::Plain, arg(&ctx, 1), 0)
}

/// valloc(size) and pvalloc(size).
#[uprobe]
pub fn valloc_enter(ctx: ProbeContext) -> u32 {
    alloc::enter(&ctx, CallKind::Plain, arg(&ctx, 0), 0)
}

/// The return of every allocator function above.
#[uretprobe]
pub fn alloc_return(ctx: RetProbeContext) -> u32 {
    alloc::exit(&ctx)
}

#[uprobe]
pub fn free_enter(ctx: ProbeContext) -> u32 {
    alloc::free(&ctx, arg(&ctx, 0))
}

// Alloc-only mode: one entry probe per call, no return or free probe. A request glibc hands
// to malloc (realloc(NULL, n), small alignments) is counted by the outer call, malloc skips
// it; reallocarray calls realloc and is not probed.

#[uprobe]
pub fn malloc_count(ctx: ProbeContext) -> u32 {
    alloc::count_malloc(&ctx, arg(&ctx, 0))
}

#[uprobe]
pub fn calloc_count(ctx: ProbeContext) -> u32 {
    alloc::count_entry(&ctx, array_bytes(arg(&ctx, 0), arg(&ctx, 1)), false)
}

/// realloc(NULL, n) calls malloc; realloc(p, 0) frees and allocates nothing.
#[uprobe]
pub fn realloc_count(ctx: ProbeContext) -> u32 {
    let (ptr, size) = (arg(&ctx, 0), arg(&ctx, 1));
    if ptr != 0 && size == 0 {
        return 0;
    }
    alloc::count_entry(&ctx, size, ptr == 0)
}

/// posix_memalign(void **memptr, size_t alignment, size_t size)
#[uprobe]
pub fn posix_memalign_count(ctx: ProbeContext) -> u32 {
    alloc::count_aligned(&ctx, arg(&ctx, 1), arg(&ctx, 2))
}

/// aligned_alloc(alignment, size) and memalign(alignment, size).
#[uprobe]
pub fn aligned_alloc_count(ctx: ProbeContext) -> u32 {
    alloc::count_aligned(&ctx, arg(&ctx, 0), arg(&ctx, 1))
}

/// valloc(size) and pvalloc(size): page-aligned, never through malloc.
#[uprobe]
pub fn valloc_count(ctx: ProbeContext) -> u32 {
    alloc::count_entry(&ctx, arg(&ctx, 0), false)
}

// Alloc-only programs for allocators whose calls do not reach the exported malloc as glibc's
// do (see the common crate's names): nothing is left pending for a malloc that never comes.

/// realloc(p, n), rallocx(p, n, flags): realloc(p, 0) frees and allocates nothing.
#[uprobe]
pub fn realloc_count_direct(ctx: ProbeContext) -> u32 {
    let size = freeing_realloc_uncounted(arg(&ctx, 0), arg(&ctx, 1));
    alloc::count_entry(&ctx, size, false)
}

/// realloc(p, n) where realloc(p, 0) returns a new block (musl, mimalloc).
#[uprobe]
pub fn realloc0_count_direct(ctx: ProbeContext) -> u32 {
    alloc::count_entry(&ctx, arg(&ctx, 1), false)
}

/// mi_reallocn(p, n, size), mi_recalloc(p, n, size).
#[uprobe]
pub fn reallocarray_count_direct(ctx: ProbeContext) -> u32 {
    alloc::count_entry(&ctx, array_bytes(arg(&ctx, 1), arg(&ctx, 2)), false)
}

/// posix_memalign(void **memptr, size_t alignment, size_t size): the alignment must be a
/// power of two and a multiple of sizeof(void *).
#[uprobe]
pub fn posix_memalign_count_direct(ctx: ProbeContext) -> u32 {
    alloc::count_aligned_direct(&ctx, arg(&ctx, 1), arg(&ctx, 2), 8)
}

/// aligned_alloc(alignment, size) and memalign(alignment, size).
#[uprobe]
pub fn aligned_alloc_count_direct(ctx: ProbeContext) -> u32 {
    alloc::count_aligned_direct(&ctx, arg(&ctx, 0), arg(&ctx, 1), 1)
}

/// musl's calloc(n, size): always calls malloc(n * size) unless the product overflows.
#[uprobe]
pub fn calloc_count_to_malloc(ctx: ProbeContext) -> u32 {
    let bytes = array_bytes(arg(&ctx, 0), arg(&ctx, 1));
    alloc::count_entry(&ctx, bytes, bytes <= PTRDIFF_MAX)
}

/// mimalloc's mi_posix_memalign(memptr, alignment, size): a valid alignment (a power of two,
/// a multiple of sizeof(void *)) is handed to mi_malloc_aligned by a call, which skips it.
#[uprobe]
pub fn posix_memalign_count_to_malloc(ctx: ProbeContext) -> u32 {
    let alignment = arg(&ctx, 1);
    if alignment < 8 || alignment & (alignment - 1) != 0 {
        return 0;
    }
    alloc::count_entry(&ctx, arg(&ctx, 2), true)
}

/// mimalloc's mi_new_aligned(size, alignment): always calls mi_malloc_aligned, which skips it.
#[uprobe]
pub fn size_first_count_to_malloc(ctx: ProbeContext) -> u32 {
    alloc::count_entry(&ctx, arg(&ctx, 0), true)
}

/// Go's runtime.mallocgc, probed at its stack check's `jbe` (see `alloc::count_go`).
#[uprobe]
pub fn go_mallocgc_count(ctx: ProbeContext) -> u32 {
    alloc::count_go(&ctx)
}

/// Go's runtime.gcMarkTermination: one completed GC cycle (see `alloc::count_gc`).
#[uprobe]
pub fn go_gc_count(ctx: ProbeContext) -> u32 {
    alloc::count_gc(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
