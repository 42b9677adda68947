//! The Rust ground-truth workload on tikv-jemallocator: jemalloc linked statically with its
//! names prefixed `_rjem_` (`_rjem_malloc`, `_rjem_sdallocx`, `_rjem_mallocx`...).

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

include!("../../workload.rs");
