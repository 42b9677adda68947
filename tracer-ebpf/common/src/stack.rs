//! A recorded user stack: its key in the stack map, its frames, and the mapping flag its
//! frames are checked against.
use core::mem::size_of;

/// Deepest user stack recorded per allocation site, and the DWARF walk's depth: Debian's
/// python3 reaches 114 frames (nested imports: each Python-level call through C adds ~10),
/// sqlite3 and git 29. The walk is a `bpf_loop`, so the verifier walks a frame once whatever
/// the depth; only the clear of a walk's frames grows (the DWARF-mode set for /bin/true 64k
/// -> 72k walked instructions). Memory: a `StackTrace` is 1 KiB, the stack map, preallocated,
/// ~1.1 KiB per entry (17.3 MiB at the default `--max-stacks` 16384, measured; 5.4 MiB at 32
/// frames).
pub const MAX_FRAMES: usize = 127;
/// The frame-pointer walk's depth (`--unwind fp`). Its hot path (hashing a known stack) is an
/// unrolled loop the verifier walks once per frame: at 127 frames alloc-only realloc walked
/// 128k instructions, over `reliability::limits`' 64k, at 32 ~59k.
pub const FP_MAX_FRAMES: usize = 32;
const _: () = assert!(FP_MAX_FRAMES <= MAX_FRAMES);
/// `VM_EXEC` in `vm_area_struct::vm_flags` (include/linux/mm.h; unchanged since 2.6).
pub const VM_EXEC: u64 = 0x4;

/// Key of a per-process stack: the same addresses in two processes are two different stacks.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackKey {
    pub tgid: u32,
    pub _pad: u32,
    /// FNV-1a of the stack's return addresses; never 0 (0 means "no stack") nor 1 (see
    /// `sites::DEAD`).
    pub hash: u64,
}
const _: () = assert!(size_of::<StackKey>() == 16);

/// A user stack, innermost frame first. `ips[0]` is the allocator's immediate caller, read
/// from the return address on top of the stack at the probe. Every frame is an address inside
/// an executable mapping of the process (checked by the kernel side when the stack is
/// stored); the walk stops at the first value that is not, and `cut` says why it stopped.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StackTrace {
    pub len: u32,
    /// One of `stack_cut::*`: `NONE` when the walk ended on its own (a zero frame pointer or
    /// return address, a frame pointer not above the last, an unreadable frame, or
    /// `FP_MAX_FRAMES` in the frame-pointer walk).
    pub cut: u32,
    pub ips: [u64; MAX_FRAMES],
}
const _: () = assert!(size_of::<StackTrace>() == 8 + 8 * MAX_FRAMES);
