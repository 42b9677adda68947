//! A traced process that executes another program: alloctrace says so for every exec, and
//! whether it still sees the new program's allocations (a static program stripped of its
//! symbols, `static_wait_stripped`, has no allocator alloctrace can find). A process whose
//! allocations went unseen is marked so in the report, never shown as a bare zero.
//!
//! Privileged: run with `cargo xtask test` (root, `ALLOCTRACE_BIN`, `--include-ignored`).
use std::ffi::{OsStr, OsString};

use crate::support::*;
use serde_json::Value;

/// The process `pid` of `report`, which must carry an `unseen` mark naming `program`.
fn assert_unseen(report: &Report, pid: u32, program: &str, context: &str) -> Value {
    let unseen = report.process(pid)["unseen"].clone();
    assert!(
        unseen["program"]
            .as_str()
            .is_some_and(|p| p.ends_with(program))
            && unseen["reason"].as_str().is_some_and(|r| !r.is_empty())
            && unseen["since"].as_f64().is_some(),
        "pid {pid} is not marked unseen after executing {program}: {unseen}\n{context}"
    );
    unseen
}

/// `sh -c 'exec STATIC'` launched: sh's exec into a stripped static program (which exits at
/// once, well within one interval) is announced, and the report marks the process unseen.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn launched_exec_into_a_static_program_is_announced_and_unseen() {
    alloctrace_bin();
    let stat = workload("static_wait_stripped");
    let scratch = Scratch::new();
    let report_path = scratch.path("report.json");
    let mut args = report_args("10s", &report_path, &[]);
    let script = format!("exec {}", stat.display());
    args.extend(["--", "/bin/sh", "-c", &script].map(OsString::from));
    let finished = run_alloctrace(&args, &[]);
    finished.assert_code(0);
    let context = finished.describe();
    let report = Report::read(&report_path, &context);
    let pid = report.json["target"]["pid"].as_u64().expect("target pid") as u32;
    let notice = format!("alloctrace: pid {pid} executed {}", stat.display());
    assert!(
        finished
            .stderr
            .lines()
            .any(|l| l.starts_with(&notice)
                && l.ends_with("its allocations are unseen from here on")),
        "no notice starting {notice:?}\n{context}"
    );
    assert_unseen(&report, pid, "static_wait_stripped", &context);
}

/// `execer` traced with --pid (one 10 s interval) allocates, then execs `static_wait_stripped`, which
/// exits at once: the exec is announced from the kernel's records even though no interval
/// ended in between, the counts before it are exact, and the report marks the process unseen
/// from the exec on; the text report says so too.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn pid_exec_into_a_static_program_within_one_interval_is_announced_and_unseen() {
    alloctrace_bin();
    let stat = workload("static_wait_stripped");
    let scratch = Scratch::new();
    let (truth_path, report_path) = (scratch.path("truth.txt"), scratch.path("report.json"));
    let mut w = Workload::start(
        "execer",
        &[stat.to_str().expect("UTF-8 workload path")],
        &[("GROUND_TRUTH", truth_path.as_os_str())],
    );
    let mut args = vec![OsString::from("--pid"), w.pid().to_string().into()];
    args.extend(report_args("10s", &report_path, &[]));
    let mut tracer = Running::spawn(&args, &[]);
    tracer.wait_until_tracing();
    w.release();
    w.wait_for_line("exec");
    // static_wait_stripped exits on end of input.
    w.close_stdin();
    w.wait_code(0);
    let finished = tracer.wait(RUN_TIMEOUT);
    finished.assert_code(0);
    let context = format!("{}\n{}", finished.describe(), w.describe());
    let notice = format!(
        "alloctrace: pid {} executed {} (was {}): ",
        w.pid(),
        stat.display(),
        workload("execer").display()
    );
    assert!(
        finished
            .stderr
            .lines()
            .any(|l| l.starts_with(&notice)
                && l.ends_with("its allocations are unseen from here on")),
        "no notice starting {notice:?}\n{context}"
    );
    let report = Report::read(&report_path, &context);
    let truth = GroundTruth::read(&truth_path, &context);
    assert_sites_match(&report, &truth, &[]);
    let unseen = assert_unseen(&report, w.pid(), "static_wait_stripped", &context);
    let since = unseen["since"].as_f64().unwrap_or_default();
    let duration = report.json["duration"].as_f64().unwrap_or_default();
    assert!(
        since > 0.0 && since <= duration,
        "since {since}, run {duration}s\n{context}"
    );
}

/// The text report names the unseen process, and does not say "Lost data: none".
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn text_report_names_the_unseen_process() {
    alloctrace_bin();
    let stat = workload("static_wait_stripped");
    let script = format!("exec {}", stat.display());
    let finished = run_alloctrace(
        &[
            OsStr::new("--"),
            OsStr::new("/bin/sh"),
            OsStr::new("-c"),
            OsStr::new(&script),
        ],
        &[],
    );
    finished.assert_code(0);
    let unseen = finished
        .stdout
        .lines()
        .find(|l| l.starts_with("Unseen:"))
        .unwrap_or_else(|| panic!("no Unseen line\n{}", finished.describe()));
    assert!(
        unseen.contains(&format!("when it executed {}", stat.display()))
            && !finished.stdout.contains("Lost data:          none\n"),
        "{}",
        finished.describe()
    );
}

/// `execer` traced with --pid (one 10 s interval) execs `ticker`, dynamically linked, which
/// runs one round and exits: no interval ends in between, yet the exec is announced as still
/// traced (it was not said at all before), and both programs' counts are exact.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn exec_and_exit_within_one_interval_is_announced() {
    alloctrace_bin();
    let ticker = workload("ticker");
    let scratch = Scratch::new();
    let after = scratch.path("after.txt");
    let mut run = attach_env(
        "10s",
        "execer",
        &[ticker.to_str().expect("UTF-8 workload path"), "1", "0"],
        &[("AFTER_TRUTH", after.as_os_str())],
        &[],
        scratch,
    );
    run.workload.wait_for_line("done");
    let context = &run.context;
    let notice = format!(
        "alloctrace: pid {} executed {} (was {}): still tracing it",
        run.pid,
        ticker.display(),
        workload("execer").display()
    );
    assert!(
        run.finished.stderr.lines().any(|l| l.starts_with(&notice)),
        "no notice starting {notice:?}\n{context}"
    );
    assert!(
        run.report.process(run.pid).get("unseen").is_none(),
        "{context}"
    );
    assert_sites_match(&run.report, &run.truth, &[]);
    assert_sites_match(&run.report, &GroundTruth::read(&after, context), &[]);
}
