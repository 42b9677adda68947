//! The shared logic of every allocator probe: entry (remember the request and the stack),
//! return (record the block), free (attribute it to the site that allocated it), and the
//! alloc-only mode's counting at entry (`count`).
//!
//! Only the outermost allocator call on a thread counts: glibc's own functions call each other
//! (realloc(NULL, n) calls malloc, aligned_alloc calls malloc for small alignments, realloc(p, 0)
//! calls free), and one allocation by the program must be counted once. A signal handler's
//! call that interrupted one in progress is the program's own and counts: it runs far below
//! the interrupted call on the stack (`call_state::NEST_MAX`), and has a call state of its own.
mod count;
mod enter;
mod exit;
mod free;
mod go;
mod traced;

pub use count::{count_aligned, count_aligned_direct, count_entry, count_malloc};
pub use enter::enter;
pub use exit::exit;
pub use free::free;
pub use go::{count_gc, count_go};
