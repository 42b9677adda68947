//! alloctrace's eBPF programs. Each entry point is a one-line wrapper: the shared logic lives
//! in `alloc` (allocation entry/return, free) and `stack` (stack capture).
#![no_std]
#![no_main]
// atomic_xadd: the BPF target's core has no AtomicU64::fetch_add.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod alloc;
mod live;
mod maps;
mod sample;
mod sites;
mod stack;
mod task_storage;

use alloctrace_common::CallKind;
use aya_ebpf::{
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};

// Globals the loader sets before loading (read-only data). Plain statics read through
// `global`, not aya_ebpf::Global: its MaybeUninit is a BTF union whose name the kernel
// rejects, and the object's BTF must load for the task-storage map.

/// tgid of alloctrace itself, set by the loader; never traced.
#[unsafe(no_mangle)]
static SELF_TGID: u32 = 0;

/// tgid of the one process traced, set by the loader; 0 when every process is.
#[unsafe(no_mangle)]
static TARGET_TGID: u32 = 0;

/// Mean bytes between sampled allocations; 0 samples every one. Set by the loader.
#[unsafe(no_mangle)]
static SAMPLE_BYTES: u64 = 0;

/// Slots of the in-flight table minus one (a power of two minus one). Set by the loader.
#[unsafe(no_mangle)]
static LIVE_MASK: u64 = 0;

/// Homes of the site table (`alloctrace_common::sites::homes`). Set by the loader.
#[unsafe(no_mangle)]
static SITE_HOMES: u64 = 0;

/// Offset of `vm_flags` in the kernel's `struct vm_area_struct`, from its BTF. Set by the
/// loader.
#[unsafe(no_mangle)]
static VMA_FLAGS_OFFSET: u64 = 0;

/// Reads a loader-set global: volatile, so the compiler cannot fold the 0 it was built with.
#[inline(always)]
fn global<T: Copy>(v: &T) -> T {
    // SAFETY: a reference to a static is valid to read.
    unsafe { core::ptr::read_volatile(v) }
}

fn arg(ctx: &ProbeContext, n: usize) -> u64 {
    ctx.arg::<u64>(n).unwrap_or(0)
}

#[uprobe]
pub fn malloc_enter(ctx: ProbeContext) -> u32 {
    alloc::enter(&ctx, CallKind::Plain, arg(&ctx, 0), 0)
}

#[uprobe]
pub fn calloc_enter(ctx: ProbeContext) -> u32 {
    alloc::enter(
        &ctx,
        CallKind::Plain,
        alloc::array_bytes(arg(&ctx, 0), arg(&ctx, 1)),
        0,
    )
}

#[uprobe]
pub fn realloc_enter(ctx: ProbeContext) -> u32 {
    alloc::enter(&ctx, CallKind::Realloc, arg(&ctx, 1), arg(&ctx, 0))
}

#[uprobe]
pub fn reallocarray_enter(ctx: ProbeContext) -> u32 {
    let bytes = alloc::array_bytes(arg(&ctx, 1), arg(&ctx, 2));
    alloc::enter(&ctx, CallKind::Realloc, bytes, arg(&ctx, 0))
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
    alloc::count_entry(&ctx, alloc::array_bytes(arg(&ctx, 0), arg(&ctx, 1)), false)
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
