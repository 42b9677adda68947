//! The ABI between alloctrace's eBPF programs and its user-space daemon.
//!
//! Every type that crosses the kernel/user boundary is defined here, once: `#[repr(C)]`, `Copy`,
//! explicit padding, and a size assertion so a layout change fails the build on both sides.
//!
//! One module per subject; what either side used from the crate root before the split is
//! re-exported there, so `alloctrace_common::StackKey` and `alloctrace_common::sites::home`
//! both keep working.
#![no_std]

mod call;
mod config;
pub mod event;
pub mod go;
mod hash;
mod hist;
pub mod live;
pub mod loss;
mod names;
mod process;
pub mod sampling;
pub mod sites;
mod stack;
pub mod stack_cut;
pub mod unwind_table;

#[cfg(feature = "user")]
mod pod;

pub use call::{
    array_bytes, freeing_realloc_uncounted, CallKind, CallState, CallStates, MALLOC_ALIGNMENT,
    PTRDIFF_MAX,
};
pub use config::*;
pub use event::Event;
pub use go::GoGc;
pub use hash::{fmix64, stack_hash_step, FNV_OFFSET, FNV_PRIME};
pub use hist::{bucket_floor, log2_bucket, log2_bucket_searched, HIST_BUCKETS};
pub use live::{AllocInfo, LiveSlot};
pub use names::*;
pub use process::{OwnedTotals, ProcStats, Unattributed};
pub use sites::{SiteSlot, SiteStats};
pub use stack::{StackKey, StackTrace, FP_MAX_FRAMES, MAX_FRAMES, VM_EXEC};
