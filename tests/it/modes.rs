//! Targets and lifecycles: `--pid` on a running process, launch mode from before main and with
//! the command's exit status, the end of a run when the target exits or on SIGINT, system-wide
//! tracing of two processes, and a multi-threaded process — each checked exactly against its
//! workload's ground truth; and the report's account of alloctrace's own cost against the
//! kernel's.
//!
//! Privileged: run with `cargo xtask test` (root, `ALLOCTRACE_BIN`, `--include-ignored`).
use std::ffi::{OsStr, OsString};
use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::json;

/// `wait` runs, allocates 25 blocks, and waits; alloctrace attaches with --pid; released, the
/// workload allocates, frees, frees the 25 older blocks (unknown frees) and exits, which ends
/// the run. Everything after the attach is counted exactly; nothing before it is.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn pid_attaches_to_a_running_process() {
    alloctrace_bin();
    let run = attach(INTERVAL, "wait", &[], &[], Scratch::new());
    assert_target(&run.report, &json!({"mode": "pid", "pid": run.pid}));
    assert_eq!(
        run.report.pids(),
        vec![u64::from(run.pid)],
        "--pid traces that process only\n{}",
        run.report.text
    );
    assert_sites_match(&run.report, &run.truth, &[]);
    assert_process_matches(&run.report, &run.truth);
    assert_no_losses(&run.report);
}

/// In --pid mode without --duration, the target's exit ends the run promptly: alloctrace exits
/// 0 (whatever the target's status, here 7) with its final report.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn target_exit_ends_the_run_with_a_final_report() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let (truth_path, report_path) = (scratch.path("truth.txt"), scratch.path("report.json"));
    let mut w = Workload::start("wait", &["7"], &[("GROUND_TRUTH", truth_path.as_os_str())]);
    let mut tracer = Running::spawn(&pid_args(w.pid(), &report_path, &[]), &[]);
    tracer.wait_until_tracing();
    w.release();
    w.wait_code(7);
    let exited = Instant::now();
    // A few drain intervals, symbolization and the report: well under 10 s.
    let finished = tracer.wait(Duration::from_secs(10));
    finished.assert_code(0);
    let context = format!(
        "{}\n{}\nalloctrace exited {:?} after its target",
        finished.describe(),
        w.describe(),
        exited.elapsed()
    );
    let truth = GroundTruth::read(&truth_path, &context);
    let report = Report::read(&report_path, &context);
    assert_target(&report, &json!({"mode": "pid", "pid": w.pid()}));
    assert_process_matches(&report, &truth);
}

/// SIGINT (Ctrl-C) ends a --pid run whose target is still alive, and the final report is still
/// complete and exact.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn sigint_ends_the_run_with_a_final_report() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let (truth_path, report_path) = (scratch.path("truth.txt"), scratch.path("report.json"));
    let mut w = Workload::start(
        "wait",
        &["0", "hold"],
        &[("GROUND_TRUTH", truth_path.as_os_str())],
    );
    let mut tracer = Running::spawn(&pid_args(w.pid(), &report_path, &[]), &[]);
    tracer.wait_until_tracing();
    w.release();
    w.wait_for_line("done");
    // Let one drain see the work, as an interactive user would.
    std::thread::sleep(Duration::from_millis(500));
    tracer.signal(libc::SIGINT);
    let finished = tracer.wait(Duration::from_secs(15));
    assert!(
        finished.status.code().is_some(),
        "alloctrace died of SIGINT instead of handling it\n{}",
        finished.describe()
    );
    let context = format!("{}\n{}", finished.describe(), w.describe());
    let truth = GroundTruth::read(&truth_path, &context);
    let report = Report::read(&report_path, &context);
    assert_target(&report, &json!({"mode": "pid", "pid": w.pid()}));
    assert_sites_match(&report, &truth, &[]);
    assert_process_matches(&report, &truth);
    w.close_stdin();
    w.wait_code(0);
}

/// Launch mode attaches before the command runs: a constructor's allocations before main are
/// all counted (and the frees main makes of them are charged to the constructor).
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn launch_sees_allocations_before_main() {
    alloctrace_bin();
    let run = launch("premain", &[], &[], Scratch::new());
    run.finished.assert_code(0);
    run.assert_command_target(&[]);
    assert_sites_match(&run.report, &run.truth, &["alloc_before_main"]);
    assert_sites_match(&run.report, &run.truth, &[]);
    assert_process_matches(&run.report, &run.truth);
    assert_no_losses(&run.report);
}

/// alloctrace -- CMD exits with CMD's exit status (3 here), after writing its report.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn launch_exits_with_the_command_status() {
    alloctrace_bin();
    let run = launch("exit_status", &["3"], &[], Scratch::new());
    run.finished.assert_code(3);
    run.assert_command_target(&["3"]);
    assert_process_matches(&run.report, &run.truth);
}

/// A command named without a slash is looked up in PATH, and its functions still symbolize.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn launch_finds_the_command_in_path() {
    alloctrace_bin();
    workload("premain");
    let scratch = Scratch::new();
    let (truth_path, report_path) = (scratch.path("truth.txt"), scratch.path("report.json"));
    let mut path = OsString::from(workload_dir());
    if let Some(old) = std::env::var_os("PATH") {
        path.push(":");
        path.push(old);
    }
    let args = report_args(
        INTERVAL,
        &report_path,
        &[OsStr::new("--"), OsStr::new("premain")],
    );
    let finished = Running::spawn_with(&args, |c| {
        c.env("PATH", &path).env("GROUND_TRUTH", &truth_path);
    })
    .wait(RUN_TIMEOUT);
    finished.assert_code(0);
    let truth = GroundTruth::read(&truth_path, &finished.describe());
    let report = Report::read(&report_path, &finished.describe());
    assert_target(
        &report,
        &json!({"mode": "command", "argv": ["premain"], "pid": truth.pid}),
    );
    assert_sites_match(&report, &truth, &[]);
    assert_process_matches(&report, &truth);
}

/// Four threads each malloc 2,000 blocks of their own size from thread_alloc (and free them):
/// every call is counted, in the one process (threads are not processes), and the size
/// histogram shows each thread's 2,000.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn threads_are_counted_exactly() {
    alloctrace_bin();
    let run = launch("threads", &[], &[], Scratch::new());
    run.finished.assert_code(0);
    run.assert_command_target(&[]);
    assert_eq!(
        run.report.pids(),
        vec![u64::from(run.truth.pid)],
        "threads belong to their process: one processes[] entry\n{}",
        run.report.text
    );
    // thread_alloc's sites (one per distinct stack: the walk past libc's start_thread may
    // differ per thread) summed; pthread's own allocations are other sites.
    assert_sites_match(&run.report, &run.truth, &[]);
    assert_process_is_sum_of_sites(&run.report, run.truth.pid);
    assert_no_losses(&run.report);
}

/// Without a target, alloctrace traces every process using the system libc: two workloads
/// started after it attached (two different programs) appear as two processes, each with
/// exactly its own counters and sites.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn system_wide_sees_two_processes_separately() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let report_path = scratch.path("report.json");
    let args = report_args(
        INTERVAL,
        &report_path,
        &[OsStr::new("--duration"), OsStr::new("4s")],
    );
    let mut tracer = Running::spawn(&args, &[]);
    tracer.wait_until_tracing();
    let started = Instant::now();
    let programs = ["sites", "premain"];
    let truth_paths: Vec<_> = programs
        .iter()
        .map(|p| scratch.path(&format!("{p}.truth")))
        .collect();
    let children: Vec<_> = programs
        .iter()
        .zip(&truth_paths)
        .map(|(p, t)| spawn_workload(p, &[], t))
        .collect();
    let truths: Vec<GroundTruth> = programs
        .iter()
        .zip(children)
        .zip(&truth_paths)
        .map(|((p, c), t)| finish_workload(p, c, t))
        .collect();
    let ran_for = started.elapsed();
    let finished = tracer.wait(RUN_TIMEOUT);
    finished.assert_code(0);
    assert!(
        ran_for < Duration::from_secs(3),
        "the workloads took {ran_for:?}: too close to --duration 4s for this test to mean anything"
    );
    let report = Report::read(&report_path, &finished.describe());
    assert_target(&report, &json!({"mode": "system"}));
    assert_ne!(truths[0].pid, truths[1].pid);
    for (program, truth) in programs.iter().zip(&truths) {
        let p = report.process(truth.pid);
        assert_eq!(
            p["comm"],
            json!(program),
            "comm of pid {} ({program})\nprocess: {p}",
            truth.pid
        );
        assert_sites_match(&report, truth, &[]);
        assert_process_matches(&report, truth);
    }
}

/// The report's `tracer` is alloctrace's own cost as the kernel accounts it, checked against
/// wait4's account of the alloctrace process (in --pid mode it has no child, so that is its
/// own usage alone): its CPU time is all of the process's but the detach after the report (a
/// few clock ticks), its peak RSS the process's, in bytes.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn report_states_the_tracers_own_cost() {
    let bin = alloctrace_bin();
    let scratch = Scratch::new();
    let (report_path, stderr_path) = (scratch.path("report.json"), scratch.path("stderr.txt"));
    let mut w = Workload::start("wait", &[], &[]);
    let stderr = std::fs::File::create(&stderr_path).expect("create the stderr file");
    // Reaped below by wait4, which clippy does not know of.
    #[allow(clippy::zombie_processes)]
    let child = std::process::Command::new(&bin)
        .args(pid_args(
            w.pid(),
            &report_path,
            &[OsStr::new("--duration"), OsStr::new("1s")],
        ))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start alloctrace");
    let pid = child.id() as libc::pid_t;
    // wait4 by hand, not Child::wait: it alone returns the process's resource usage.
    let deadline = Instant::now() + RUN_TIMEOUT;
    let (status, ru) = loop {
        let mut status = 0;
        // SAFETY: a zeroed rusage is a valid value for wait4 to overwrite.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 writes the status and usage into the locals given.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        assert!(r >= 0, "wait4: {}", std::io::Error::last_os_error());
        if r == pid {
            break (status, ru);
        }
        if Instant::now() > deadline {
            // SAFETY: our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("alloctrace ran over {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    w.release();
    w.wait_code(0);
    let context = format!(
        "alloctrace exit status {status:#x}, stderr:\n{}",
        std::fs::read_to_string(&stderr_path).unwrap_or_default()
    );
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{context}"
    );
    let report = Report::read(&report_path, &context);
    let tracer = &report.json["tracer"];
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let used = secs(ru.ru_utime) + secs(ru.ru_stime);
    let cpu = tracer["cpu_time"]
        .as_f64()
        .unwrap_or_else(|| panic!("no tracer.cpu_time: {tracer}\n{context}"));
    let peak = tracer["peak_rss_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("no tracer.peak_rss_bytes: {tracer}\n{context}"));
    // Loading alone (the verifier runs in alloctrace's process) takes tenths of a second.
    assert!(
        cpu > 0.01 && cpu <= used + 0.001 && used - cpu < 0.25,
        "tracer.cpu_time {cpu} s, wait4: {used} s\n{context}"
    );
    let hwm = ru.ru_maxrss as u64 * 1024;
    assert!(
        peak <= hwm && peak >= hwm / 2,
        "tracer.peak_rss_bytes {peak}, wait4: {hwm} bytes\n{context}"
    );
}
