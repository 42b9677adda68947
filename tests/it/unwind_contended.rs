//! The DWARF walk while the traced process's mapping lock is taken: `workloads/nofp_contended.c`
//! flips a page's protection on one thread (each `mprotect` holds the lock for writing, as
//! glibc's arenas do when they grow) while its main thread calls 16 functions, each in a 64 KiB
//! granule of code of its own. The kernel's `bpf_find_vma` cannot look a pc up while the lock
//! is held; with the code mappings filled in ahead by user space it need not: every call keeps
//! its site, exactly, with its whole stack (before, hundreds per run were counted
//! `stack_unchecked`).
//!
//! Privileged: run with `cargo xtask test` (root, `ALLOCTRACE_BIN`, `--include-ignored`).
use std::ffi::OsStr;

use crate::support::*;

const FUNCS: usize = 16;
/// CALLS in nofp_contended.c.
const CALLS: u64 = 50;

fn dwarf() -> [&'static OsStr; 2] {
    [OsStr::new("--unwind"), OsStr::new("dwarf")]
}

fn names() -> Vec<String> {
    (0..FUNCS).map(|k| format!("nofp_granule_{k}")).collect()
}

/// Every function's one site holds its CALLS allocations, its stack reaching `_start`; no
/// allocation lost its site.
fn assert_every_site_whole(report: &Report, truth: &GroundTruth, pid: u32, context: &str) {
    let names = names();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_sites_match(report, truth, &refs);
    for name in &names {
        let sites = report.sites_in(pid, name);
        assert_eq!(
            sites.len(),
            1,
            "{name}: one site expected\n{}\n{context}",
            report.describe_sites(pid)
        );
        let frames = Report::frame_names(sites[0]);
        assert_eq!(
            sites[0]["counters"]["allocs"].as_u64(),
            Some(CALLS),
            "{name}\n{context}"
        );
        assert!(
            frames.first() == Some(name) && frames.iter().any(|f| f == "_start"),
            "{name}'s stack does not run from it to _start: {frames:?}\n{context}"
        );
    }
    for loss in ["stack_unchecked", "stacks_cut"] {
        let n = report.losses().get(loss).copied().unwrap_or(0);
        assert_eq!(n, 0, "{loss}\n{context}");
    }
}

#[test]
#[ignore = "needs root and BPF: run with `cargo xtask test`"]
fn launched_program_keeps_every_site_while_its_mapping_lock_is_taken() {
    let run = launch("nofp_contended", &[], &dwarf(), Scratch::new());
    run.finished.assert_code(0);
    let context = run.finished.describe();
    assert_every_site_whole(&run.report, &run.truth, run.truth.pid, &context);
}

#[test]
#[ignore = "needs root and BPF: run with `cargo xtask test`"]
fn attached_program_keeps_every_site_while_its_mapping_lock_is_taken() {
    alloctrace_bin();
    let run = attach(
        "250ms",
        "nofp_contended",
        &["wait"],
        &dwarf(),
        Scratch::new(),
    );
    assert_every_site_whole(&run.report, &run.truth, run.pid, &run.context);
}
