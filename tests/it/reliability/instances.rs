//! Two alloctrace instances on one target, and attaching in the middle of a churn.
use std::time::Duration;

use crate::support::*;

use super::*;

// =============================================================================================
// Two alloctrace instances on one target
// =============================================================================================

/// Two alloctrace --pid runs on the same process at once: each sees every call, so both
/// reports match the ground truth exactly (and each other).
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn two_instances_on_one_pid_report_the_same() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let truth_path = scratch.path("truth.txt");
    let mut w = Workload::start(
        "ticker",
        &["10", "20", "wait"],
        &[("GROUND_TRUTH", truth_path.as_os_str())],
    );
    let (r1, r2) = (scratch.path("r1.json"), scratch.path("r2.json"));
    let mut t1 = Running::spawn(&pid_args(w.pid(), &r1, &[]), &[]);
    let mut t2 = Running::spawn(&pid_args(w.pid(), &r2, &[]), &[]);
    t1.wait_until_tracing();
    t2.wait_until_tracing();
    w.release();
    w.wait_code(0);
    let (f1, f2) = (t1.wait(RUN_TIMEOUT), t2.wait(RUN_TIMEOUT));
    f1.assert_code(0);
    f2.assert_code(0);
    let context = format!("{}\n{}\n{}", f1.describe(), f2.describe(), w.describe());
    let truth = GroundTruth::read(&truth_path, &context);
    let (a, b) = (Report::read(&r1, &context), Report::read(&r2, &context));
    for r in [&a, &b] {
        assert_sites_match(r, &truth, &[]);
        assert_process_matches(r, &truth);
        assert_no_losses(r);
    }
    let counts = |r: &Report| -> Vec<(String, Counters)> {
        r.functions(w.pid())
            .into_iter()
            .map(|(f, s)| (f, s.counters))
            .collect()
    };
    assert_eq!(counts(&a), counts(&b));
}

/// Attaching to a process that allocates, reallocates and frees as fast as it can: the probes
/// go in one by one, and a block whose allocation was seen must have its realloc and free
/// seen too. One missed while the probes went in would leave the block in the in-flight
/// table, and the address glibc hands back every time would pile up there: phantom live
/// blocks, and once they fill its window, lost ones. At the end the only live blocks are the
/// ones the workload holds.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn attaching_mid_churn_leaves_no_phantom_live_blocks() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let mut w = Workload::start("attach_churn", &[], &[]);
    let report_path = scratch.path("report.json");
    let mut tracer = Running::spawn(&pid_args(w.pid(), &report_path, &[]), &[]);
    tracer.wait_until_tracing();
    // Some churn under every probe before it stops.
    std::thread::sleep(Duration::from_millis(300));
    w.release();
    w.wait_for_line("held");
    tracer.signal(libc::SIGINT);
    let finished = tracer.wait(RUN_TIMEOUT);
    finished.assert_code(128 + libc::SIGINT);
    let context = format!("{}\n{}", finished.describe(), w.describe());
    let report = Report::read(&report_path, &context);
    w.close_stdin();
    w.wait_code(0);

    let functions = report.functions(w.pid());
    let churn = functions
        .get("churn_pairs")
        .unwrap_or_else(|| panic!("no churn_pairs site\n{}", report.describe_sites(w.pid())));
    assert!(
        churn.counters.allocs > 10_000,
        "only {} allocations traced from churn_pairs: too few to prove anything\n{context}",
        churn.counters.allocs
    );
    assert_eq!(
        (churn.counters.live_objects(), churn.live_objects),
        (0, 0),
        "churn_pairs frees every block it allocates, yet blocks are live: frees or reallocs \
         missed while the probes attached ({})\n{}",
        churn.counters.text(),
        report.describe_sites(w.pid())
    );
    let held = functions
        .get("hold_blocks")
        .unwrap_or_else(|| panic!("no hold_blocks site\n{}", report.describe_sites(w.pid())));
    assert_eq!(
        (held.counters.allocs, held.live_objects, held.live_bytes),
        (5, 5, 5000),
        "hold_blocks keeps 5 blocks of 1000 bytes"
    );
    let process = report.process_counters(w.pid());
    assert_eq!(
        process.live_objects(),
        5,
        "the process holds 5 blocks allocated after attach: {process}\n{}",
        report.describe_sites(w.pid()),
        process = process.text()
    );
    // No loss but `stack_unchecked`: each probe going in writes its breakpoint into the
    // target's memory under its mapping lock, held for writing, and a new stack met meanwhile
    // cannot have its frames checked (bpf_find_vma): it is counted and not stored, and the
    // next call from it stores it.
    let lost: Vec<_> = report
        .losses()
        .into_iter()
        .filter(|(k, n)| *n > 0 && k.as_str() != "stack_unchecked")
        .collect();
    assert!(lost.is_empty(), "alloctrace lost data: {lost:?}\n{context}");
}
