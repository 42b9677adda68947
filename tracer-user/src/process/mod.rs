//! What alloctrace knows of a traced process besides its allocations: its executable
//! mappings (read from /proc, and recorded by the kernel as they are made) and its execs and
//! forks.
pub mod mmap_watch;
pub mod perf;
pub mod procmaps;
