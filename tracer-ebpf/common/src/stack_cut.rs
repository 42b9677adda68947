//! Why a stored stack ends where it does (`StackTrace::cut`).
/// The walk ended on its own.
pub const NONE: u32 = 0;
/// A value the walk took for a return address is not inside an executable mapping of the
/// process (code without frame pointers keeps other data in `rbp`): it and everything
/// beyond it were dropped.
pub const NOT_CODE: u32 = 1;
/// The kernel could not look the address up (`bpf_find_vma`: the process's mapping lock
/// was contended). Such a stack is never stored (`loss::STACK_UNCHECKED`): stored, it
/// would keep the cut for the rest of the run.
pub const UNCHECKED: u32 = 2;
/// The DWARF walk stopped before the thread's entry (`_start`, the clone child's frame): a
/// frame with neither unwind info nor a frame pointer, a stack read that failed, a stack
/// pointer that did not grow, or `MAX_FRAMES` reached. Its frames are all real; the outer
/// ones are missing.
pub const TRUNCATED: u32 = 3;
