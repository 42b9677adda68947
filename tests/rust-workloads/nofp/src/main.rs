//! The Rust ground-truth workload on the system allocator, built without frame pointers: its
//! stacks unwind only with the binary's CFI (`--unwind dwarf`).

include!("../../workload.rs");
