//! `--follow-forks`: the processes a launched command starts are traced each under its own pid
//! (exact counts, their own ground truth); without it, one line says a child was not traced
//! and the report holds the command alone.
//!
//! Privileged: run with `cargo xtask test` (root, `ALLOCTRACE_BIN`, `--include-ignored`).
use std::ffi::OsStr;

use crate::support::*;

const CHILDREN: usize = 3;
/// How long each child waits before allocating: its probes must be in by then (the window
/// between a fork and its probes is measured and said; the test checks it is shorter).
const DELAY_MS: &str = "1500";

/// The largest "probes went in at most X ms after their fork" figure alloctrace printed.
fn window_ms(stderr: &str) -> Option<f64> {
    let line = stderr.lines().find(|l| l.contains("started processes"))?;
    let after = line.split("at most ").nth(1)?;
    after.split(" ms").next()?.parse().ok()
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn follow_forks_traces_each_child_under_its_own_pid() {
    alloctrace_bin();
    let n = CHILDREN.to_string();
    let l = launch(
        "forks",
        &[&n, DELAY_MS],
        &[OsStr::new("--follow-forks")],
        Scratch::new(),
    );
    l.finished.assert_code(0);
    let context = l.finished.describe();
    assert_process_matches(&l.report, &l.truth);
    let mut pids = vec![u64::from(l.truth.pid)];
    for i in 0..CHILDREN {
        let path = l.scratch.path(&format!("truth.txt.{i}"));
        let truth = GroundTruth::read(&path, &context);
        assert_process_matches(&l.report, &truth);
        assert_sites_match(&l.report, &truth, &["in_child"]);
        pids.push(u64::from(truth.pid));
    }
    pids.sort_unstable();
    assert_eq!(l.report.pids(), pids, "{context}");
    let w = window_ms(&l.finished.stderr)
        .unwrap_or_else(|| panic!("no line saying how late the probes went in\n{context}"));
    assert!(w < 1500.0, "probes went in {w} ms after a fork\n{context}");
    assert!(
        !l.finished.stderr.contains("which is not traced"),
        "{context}"
    );
    // The window before each child's probes is counted as data lost (none of these children
    // allocates in it), and nothing else is lost.
    let mut lost = l.report.losses();
    lost.retain(|_, n| *n > 0);
    let late = lost.remove("follow_late");
    let gap_us = lost.remove("follow_gap_us");
    assert_eq!(late, Some(CHILDREN as u64), "{lost:?}\n{context}");
    let gap_us = gap_us.unwrap_or_else(|| panic!("no follow_gap_us\n{context}"));
    assert!(
        gap_us as f64 >= w * 1e3 - 100.0 && gap_us as f64 <= CHILDREN as f64 * w * 1e3 + 100.0,
        "follow_gap_us {gap_us} against a longest window of {w} ms\n{context}"
    );
    assert!(lost.is_empty(), "alloctrace lost data: {lost:?}\n{context}");
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn without_follow_forks_an_untraced_child_is_said_once() {
    alloctrace_bin();
    let n = CHILDREN.to_string();
    let l = launch("forks", &[&n, "0"], &[], Scratch::new());
    l.finished.assert_code(0);
    let context = l.finished.describe();
    assert_process_matches(&l.report, &l.truth);
    let pid = l.truth.pid;
    let notices: Vec<&str> = l
        .finished
        .stderr
        .lines()
        .filter(|s| s.contains("which is not traced"))
        .collect();
    assert_eq!(notices.len(), 1, "one notice per run\n{context}");
    let want = format!("alloctrace: pid {pid} (forks) started pid ");
    assert!(
        notices[0].starts_with(&want)
            && notices[0].ends_with(", which is not traced (--follow-forks traces children)"),
        "{context}"
    );
    assert_eq!(l.report.pids(), [u64::from(pid)], "{context}");
}

/// `--pid N -f` of a process whose forks come from a thread started before alloctrace: each
/// child is traced under its own pid, exactly (the fork records of every thread are seen, not
/// only those of the thread attached through and of threads started after).
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn pid_follow_forks_sees_the_forks_of_threads_started_before_it() {
    alloctrace_bin();
    let n = CHILDREN.to_string();
    let run = attach_env(
        "1s",
        "forks",
        &[&n, DELAY_MS],
        &[("FORKS_FROM_THREAD", OsStr::new("1"))],
        &[OsStr::new("--follow-forks")],
        Scratch::new(),
    );
    // Its sites only: it frees blocks allocated before alloctrace attached (unknown frees).
    assert_sites_match(&run.report, &run.truth, &["in_parent"]);
    let mut pids = vec![u64::from(run.truth.pid)];
    for i in 0..CHILDREN {
        let path = run.scratch.path(&format!("{TRUTH_FILE}.{i}"));
        let child = GroundTruth::read(&path, &run.context);
        assert_process_matches(&run.report, &child);
        assert_sites_match(&run.report, &child, &["in_child"]);
        pids.push(u64::from(child.pid));
    }
    pids.sort_unstable();
    assert_eq!(run.report.pids(), pids, "{}", run.context);
}
