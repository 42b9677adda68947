//! The run-time knobs: globals the loader sets before loading, and how the programs read them.
//!
//! Plain statics read through `global`, not aya_ebpf::Global: its MaybeUninit is a BTF union
//! whose name the kernel rejects, and the object's BTF must load for the task-storage map.

/// tgid of alloctrace itself, set by the loader; never traced.
#[unsafe(no_mangle)]
pub static SELF_TGID: u32 = 0;

/// tgid of the one process traced, set by the loader; 0 when every process is.
#[unsafe(no_mangle)]
pub static TARGET_TGID: u32 = 0;

/// Non-zero when a link's cookie may name the one process it counts. Set by the loader. A
/// constant to the verifier (read-only data): at 0 the cookie's check is not even walked.
#[unsafe(no_mangle)]
pub static BY_COOKIE: u32 = 0;

/// Mean bytes between sampled allocations; 0 samples every one. Set by the loader.
#[unsafe(no_mangle)]
pub static SAMPLE_BYTES: u64 = 0;

/// Slots of the in-flight table minus one (a power of two minus one). Set by the loader.
#[unsafe(no_mangle)]
pub static LIVE_MASK: u64 = 0;

/// Homes of the site table (`alloctrace_common::sites::homes`). Set by the loader.
#[unsafe(no_mangle)]
pub static SITE_HOMES: u64 = 0;

/// Offset of `vm_flags` in the kernel's `struct vm_area_struct`, from its BTF. Set by the
/// loader.
#[unsafe(no_mangle)]
pub static VMA_FLAGS_OFFSET: u64 = 0;

/// Reads a loader-set global: volatile, so the compiler cannot fold the 0 it was built with.
#[inline(always)]
pub fn global<T: Copy>(v: &T) -> T {
    // SAFETY: a reference to a static is valid to read.
    unsafe { core::ptr::read_volatile(v) }
}
