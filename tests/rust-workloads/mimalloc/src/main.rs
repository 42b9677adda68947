//! The Rust ground-truth workload on the mimalloc crate: mimalloc linked statically, called by
//! its own names (`mi_malloc_aligned`, `mi_free`...).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

include!("../../workload.rs");
