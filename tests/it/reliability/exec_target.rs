//! The traced process executes another program: tracing goes on, counts before the exec kept.

use crate::support::*;

use super::*;

// =============================================================================================
// The target execs another program
// =============================================================================================

/// A run of alloctrace --pid on a workload that writes its ground truth to $GROUND_TRUTH, then
/// execs a program that writes its own to $AFTER_TRUTH.
struct ExecRun {
    w: Workload,
    finished: Finished,
    context: String,
    report: Report,
    before: GroundTruth,
    after: GroundTruth,
}

/// Traces workload `name` (`args`) with --pid from before its `ready` until it printed `done`
/// and exited 0, alloctrace exiting 0 after it; reads the report and both ground truths.
fn trace_through_exec(name: &str, args: &[&str]) -> ExecRun {
    let scratch = Scratch::new();
    let after = scratch.path("after.txt");
    let mut run = attach_env(
        INTERVAL,
        name,
        args,
        &[("AFTER_TRUTH", after.as_os_str())],
        &[],
        scratch,
    );
    run.workload.wait_for_line("done");
    let after = GroundTruth::read(&after, &run.context);
    ExecRun {
        w: run.workload,
        finished: run.finished,
        context: run.context,
        report: run.report,
        before: run.truth,
        after,
    }
}

/// `execer` (traced with --pid) allocates from before_exec, then execs `ticker` in the same
/// process. alloctrace keeps tracing the pid through the exec (the same libc is mapped again,
/// and the probes follow the process): before_exec's counts are exact and symbolized against
/// the program that made them, the new program's tick_alloc counts are exact and symbolized
/// against it, and alloctrace ends normally when the process exits.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn target_exec_keeps_tracing_and_counts_before_the_exec() {
    alloctrace_bin();
    let ticker = workload("ticker");
    let ExecRun {
        w,
        finished,
        context,
        report,
        before,
        after,
    } = trace_through_exec("execer", &[ticker.to_str().unwrap(), "10", "60"]);
    assert!(!finished.stderr.contains("panicked"), "{context}");
    assert_eq!(before.pid, after.pid, "exec keeps the pid");
    assert_sites_match(&report, &before, &[]);
    assert_sites_match(&report, &after, &[]);
    let mut total = before.total();
    total.add(&after.total());
    assert_eq!(
        report.process_counters(w.pid()),
        total,
        "{}",
        report.describe_sites(w.pid())
    );
    assert!(
        finished.stderr.contains("executed"),
        "alloctrace did not say the target executed another program\n{context}"
    );
}

/// `exec_again` (traced with --pid, address randomization off) keeps 64 blocks from
/// before_exec and execs itself: the new image's after_exec gets those very addresses, then
/// frees its blocks. Each free is after_exec's, not the old image's block's (whose free can
/// never come): before_exec keeps 64 live blocks, after_exec none, and each old block whose
/// address was handed out again is counted once as `stale_block`.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn exec_without_randomization_keeps_blocks_apart() {
    alloctrace_bin();
    let ExecRun {
        w,
        context,
        report,
        before,
        after,
        ..
    } = trace_through_exec("exec_again", &[]);
    assert!(
        w.stdout_text().contains("same addresses 64 of 64"),
        "the new image's blocks did not reuse the old image's addresses: the test proves \
         nothing\n{context}"
    );
    assert_sites_match(&report, &before, &[]);
    assert_sites_match(&report, &after, &[]);
    let mut losses = report.losses();
    assert_eq!(losses.remove("stale_block"), Some(64), "{context}");
    assert!(losses.values().all(|&n| n == 0), "{losses:?}\n{context}");
}
