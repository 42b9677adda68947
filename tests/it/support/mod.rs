//! Helpers shared by alloctrace's integration tests, one module per job; the tests `use
//! crate::support::*`.
//!
//! The tests run the real `alloctrace` binary (`$ALLOCTRACE_BIN`, set by `cargo xtask test`) as
//! root against small C workloads (`workloads/*.c`, built by `build.rs`) that write their own
//! ground truth (format in `workloads/gt.h`), and assert exact equality between the two.
//!
//! Everything here panics with a message instead of returning errors: a test that cannot run
//! (no `ALLOCTRACE_BIN`, not root, no BPF) fails and says why; it never passes by skipping.

mod assertions;
mod binary;
mod folded;
mod launch;
mod process;
mod report;
mod scratch;
mod truth;
mod workload;

/// Buckets of the size and lifetime histograms: the ABI's own constant.
pub use alloctrace_common::HIST_BUCKETS;
/// The report's counters are the model's.
pub use alloctrace_model::Counters;

pub use assertions::*;
pub use binary::*;
pub use folded::*;
pub use launch::*;
pub use process::*;
pub use report::*;
pub use scratch::*;
pub use truth::*;
pub use workload::*;
