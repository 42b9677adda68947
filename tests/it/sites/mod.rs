//! Per-site accounting, checked exactly against `workloads/sites.c`'s own ground truth: each
//! test launches it under alloctrace (`alloctrace ... -- sites`) and checks one aspect.
//!
//! Privileged: run with `cargo xtask test` (root, `ALLOCTRACE_BIN`, `--include-ignored`).
use std::ffi::OsStr;

use crate::support::*;

mod accounting;
mod outputs;

/// Functions of sites.c that call malloc directly.
const PLAIN: &[&str] = &[
    "alloc_small",
    "alloc_leak",
    "alloc_chain_start",
    "alloc_for_other",
    "alloc_for_failed_realloc",
    "alloc_for_zero_realloc",
    "alloc_zero_size",
    "alloc_varied_sizes",
    "leaf_caller",
];

/// Functions of sites.c that use the rest of the allocator API (or call it and allocate
/// nothing: a failed realloc, realloc(p, 0)).
const FAMILY: &[&str] = &[
    "alloc_calloc",
    "alloc_realloc_chain",
    "alloc_realloc_null",
    "alloc_posix_memalign",
    "alloc_aligned_alloc",
    "alloc_memalign",
    "alloc_valloc",
    "alloc_pvalloc",
    "failed_realloc",
    "realloc_to_zero",
];

/// Functions of sites.c that free (or free nothing) but never allocate.
const NON_ALLOCATING: &[&str] = &[
    "free_elsewhere",
    "failed_realloc",
    "realloc_to_zero",
    "free_null",
];

/// `sites` under alloctrace with `extra` options; asserts it exited 0.
fn run_sites(extra: &[&OsStr], scratch: Scratch) -> Launched {
    let run = launch("sites", &[], extra, scratch);
    run.finished.assert_code(0);
    run
}

/// Only the allocation side of each plain-malloc site: count, bytes and size histogram.
fn assert_allocations(run: &Launched, functions: &[&str]) {
    let got = run.report.functions(run.truth.pid);
    let mut problems = Vec::new();
    for f in functions {
        let want = run.truth.site(f);
        let (allocs, bytes, hist) = match got.get(*f) {
            Some(g) => (g.counters.allocs, g.counters.bytes, g.size_hist.clone()),
            None => (0, 0, vec![0; HIST_BUCKETS]),
        };
        if (allocs, bytes) != (want.counters.allocs, want.counters.bytes) {
            problems.push(format!(
                "{f}: expected {} allocations of {} bytes, reported {allocs} of {bytes}",
                want.counters.allocs, want.counters.bytes
            ));
        }
        if hist != want.size_hist_vec() {
            problems.push(format!(
                "{f}: size_hist expected {}, reported {}",
                hist_text(&want.size_hist_vec()),
                hist_text(&hist)
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "allocation counts differ from the ground truth:\n  - {}\n\nground truth:\n{}\n{}",
        problems.join("\n  - "),
        run.truth.text,
        run.report.describe_sites(run.truth.pid)
    );
}
