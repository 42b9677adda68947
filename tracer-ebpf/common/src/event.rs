//! Why the kernel side woke user space: the ring buffer's record and its kinds.
use core::mem::size_of;

/// Why the kernel side woke user space. Rare by construction (once per new process or stack),
/// so user space can snapshot a short-lived process's mappings while it still lives.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Event {
    pub tgid: u32,
    pub kind: u32,
}
const _: () = assert!(size_of::<Event>() == 8);

pub const NEW_PROCESS: u32 = 0;
pub const NEW_STACK: u32 = 1;
