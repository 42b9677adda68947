//! alloctrace ended by SIGKILL (the target unharmed, nothing of ours left in the kernel), and by
//! SIGTERM or SIGINT with every output file written completely.
use std::ffi::{OsStr, OsString};
use std::time::Duration;

use crate::support::*;

use super::*;

// =============================================================================================
// SIGKILL
// =============================================================================================

/// alloctrace killed with SIGKILL mid-run (no handler can run): the traced process goes on
/// unharmed — it keeps allocating, every block reads back, it exits 0 with its whole ground
/// truth — and nothing of ours stays in the kernel: the int3 of the malloc uprobe is gone from
/// the target's memory while it still runs, every BPF program alloctrace held is unloaded, and
/// no trace-event uprobe of its pid is left.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn sigkill_leaves_the_target_unharmed_and_no_probe_behind() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let truth_path = scratch.path("truth.txt");
    const ROUNDS: u64 = 60;
    let mut w = Workload::start(
        "ticker",
        &[&ROUNDS.to_string(), "50", "wait"],
        &[("GROUND_TRUTH", truth_path.as_os_str())],
    );
    let malloc_at = w.malloc_at();
    let original = byte_at(w.pid(), malloc_at);
    assert_ne!(
        original,
        0xcc,
        "malloc already starts with an int3 before we attach (another tracer running? {:?})",
        other_alloctraces(0)
    );

    let mut tracer = Running::spawn(&pid_args(w.pid(), &scratch.path("report.json"), &[]), &[]);
    tracer.wait_until_tracing();
    let tracer_pid = tracer.pid();
    let progs = prog_ids_of(tracer_pid);
    assert!(
        progs.len() >= 3,
        "alloctrace holds only BPF programs {progs:?} while tracing"
    );
    assert!(progs.iter().all(|&id| prog_loaded(id)));
    assert_eq!(
        byte_at(w.pid(), malloc_at),
        0xcc,
        "no int3 at malloc ({malloc_at:#x}) in the traced process: the check below proves nothing"
    );

    w.release();
    w.wait_for_line("tick 5");
    tracer.signal(libc::SIGKILL);
    let finished = tracer.wait(Duration::from_secs(10));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&finished.status),
        Some(libc::SIGKILL),
        "{}",
        finished.describe()
    );

    // The target is still running (60 × 50 ms): the probe must leave it while it lives.
    let restored = eventually(Duration::from_secs(5), || {
        byte_at(w.pid(), malloc_at) == original
    });
    assert!(
        restored || !other_alloctraces(tracer_pid).is_empty(),
        "5 s after SIGKILL malloc in the target still starts with {:#x}, not {original:#x}: a uprobe \
         stayed installed\n{}",
        byte_at(w.pid(), malloc_at),
        w.describe()
    );
    let gone = eventually(Duration::from_secs(5), || {
        progs.iter().all(|&id| !prog_loaded(id))
    });
    let left: Vec<u32> = progs
        .iter()
        .copied()
        .filter(|&id| prog_loaded(id))
        .collect();
    assert!(
        gone,
        "5 s after SIGKILL, BPF programs {left:?} of alloctrace (of {progs:?}) are still loaded"
    );
    let events = uprobe_events_of(tracer_pid);
    assert!(events.is_empty(), "uprobe events left behind: {events:?}");
    assert!(
        !w.stdout_text().contains("done"),
        "the target finished before the checks: they proved nothing\n{}",
        w.describe()
    );

    w.wait_for_line("done");
    w.wait_code(0);
    assert_all_ticks(&w.stdout_text(), ROUNDS);
    let truth = GroundTruth::read(&truth_path, &w.describe());
    assert_eq!(truth.pid, w.pid());
    ticker_truth_ok(&truth, ROUNDS);
}

/// In launch mode too: SIGKILL of alloctrace leaves the command running to its normal end
/// (it is not killed with its parent), with its ground truth intact.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn sigkill_in_launch_mode_leaves_the_command_running() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let truth_path = scratch.path("truth.txt");
    const ROUNDS: u64 = 30;
    let cmd = workload("ticker");
    let args: Vec<OsString> = vec![
        "--interval".into(),
        INTERVAL.into(),
        "--".into(),
        cmd.clone().into(),
        ROUNDS.to_string().into(),
        "50".into(),
    ];
    let mut tracer = Running::spawn(&args, &[("GROUND_TRUTH", truth_path.as_os_str())]);
    tracer.wait_until_tracing();
    std::thread::sleep(Duration::from_millis(400));
    tracer.signal(libc::SIGKILL);
    // The command shares alloctrace's stdout: wait() returns once both have closed it, i.e.
    // once the command has finished all its rounds.
    let finished = tracer.wait(Duration::from_secs(20));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&finished.status),
        Some(libc::SIGKILL),
        "{}",
        finished.describe()
    );
    assert!(
        finished.stdout.contains("tick 0\n"),
        "SIGKILL came before the command started: nothing was proven\n{}",
        finished.describe()
    );
    assert_all_ticks(&finished.stdout, ROUNDS);
    assert!(
        finished.stdout.contains("done\n"),
        "{}",
        finished.describe()
    );
    let truth = GroundTruth::read(&truth_path, &finished.describe());
    ticker_truth_ok(&truth, ROUNDS);
}

// =============================================================================================
// SIGTERM and SIGINT with every output file
// =============================================================================================

/// The output files of one run and their names.
const OUTPUTS: [&str; 6] = [
    "report.json",
    "stacks.folded",
    "flame.svg",
    "profile.pb.gz",
    "report.html",
    "plot.png",
];

fn output_args(scratch: &Scratch) -> Vec<OsString> {
    vec![
        "--folded".into(),
        scratch.path("stacks.folded").into(),
        "--flamegraph".into(),
        scratch.path("flame.svg").into(),
        "--pprof".into(),
        scratch.path("profile.pb.gz").into(),
        "--html".into(),
        scratch.path("report.html").into(),
        "--plot".into(),
        scratch.path("plot.png").into(),
    ]
}

/// Every output is complete and consistent: the report parses and each process's totals are
/// the sum of its sites; the folded stacks (weighted by bytes) sum to the sites' bytes; the SVG
/// is closed; the pprof file is a whole gzip stream. Only the expected files are in the
/// directory (no temporary file left).
fn assert_outputs_complete(scratch: &Scratch, also: &[&str], context: &str) -> Report {
    let report = Report::read(&scratch.path("report.json"), context);
    let mut site_bytes = 0;
    for pid in report.pids() {
        assert_process_is_sum_of_sites(&report, pid as u32);
    }
    for s in report.sites() {
        site_bytes += Counters::from_json(&s["counters"], "site").bytes;
    }
    let folded = std::fs::read_to_string(scratch.path("stacks.folded")).expect("folded stacks");
    let folded_sum: u64 = parse_folded(&folded).iter().map(|(_, v)| v).sum();
    assert_eq!(
        folded_sum, site_bytes,
        "the folded stacks do not sum to the report's bytes\n{folded}\n{context}"
    );
    let svg = std::fs::read_to_string(scratch.path("flame.svg")).expect("flame graph");
    assert!(
        svg.trim_end().ends_with("</svg>"),
        "truncated SVG: …{}",
        &svg[svg.len().saturating_sub(200)..]
    );
    let pb = std::fs::read(scratch.path("profile.pb.gz")).expect("pprof file");
    assert!(pb.len() > 18 && pb[..2] == [0x1f, 0x8b], "not a gzip file");
    let gz = std::process::Command::new("gzip")
        .args(["-t", "-v"])
        .arg(scratch.path("profile.pb.gz"))
        .output()
        .expect("run gzip -t");
    assert!(
        gz.status.success(),
        "the pprof file is not a complete gzip stream: {}",
        String::from_utf8_lossy(&gz.stderr)
    );
    let html = std::fs::read_to_string(scratch.path("report.html")).expect("HTML report");
    assert!(
        html.trim_end().ends_with("</html>") && html.contains("id=\"top-sites\""),
        "truncated HTML: …{}",
        &html[html.len().saturating_sub(200)..]
    );
    let png = std::fs::read(scratch.path("plot.png")).expect("plot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.ends_with(b"IEND\xaeB`\x82"),
        "the PNG plot is not a complete PNG ({} bytes)",
        png.len()
    );
    let mut want: Vec<String> = OUTPUTS.iter().chain(also).map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(
        dir_entries(scratch.path("").as_path()),
        want,
        "files in the output directory (a temporary file left behind?)"
    );
    report
}

/// Traces `w` (waiting for its go) with `--pid` and every output of [`output_args`] in
/// `scratch`, releases it, and once it printed `line` (and `settle_ms` more) sends alloctrace
/// `sig`: alloctrace must exit 128 + `sig` within 15 s. Returns the context for failure
/// messages (alloctrace's run and the workload's output).
fn signal_with_outputs(
    w: &mut Workload,
    scratch: &Scratch,
    line: &str,
    settle_ms: u64,
    sig: libc::c_int,
) -> String {
    let extra = output_args(scratch);
    let extra: Vec<&OsStr> = extra.iter().map(OsString::as_os_str).collect();
    let mut tracer = Running::spawn(
        &pid_args(w.pid(), &scratch.path("report.json"), &extra),
        &[],
    );
    tracer.wait_until_tracing();
    w.release();
    w.wait_for_line(line);
    std::thread::sleep(Duration::from_millis(settle_ms));
    tracer.signal(sig);
    let finished = tracer.wait(Duration::from_secs(15));
    finished.assert_code(128 + sig);
    format!("{}\n{}", finished.describe(), w.describe())
}

/// SIGTERM ends a --pid run whose target is still alive: exit status 143 (128 + SIGTERM), and
/// every output file is complete, exact against the ground truth, and written atomically.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn sigterm_writes_every_output_completely() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let truth_path = scratch.path("truth.txt");
    let mut w = Workload::start(
        "wait",
        &["0", "hold"],
        &[("GROUND_TRUTH", truth_path.as_os_str())],
    );
    let context = signal_with_outputs(&mut w, &scratch, "done", 300, libc::SIGTERM);
    let report = assert_outputs_complete(&scratch, &["truth.txt"], &context);
    let truth = GroundTruth::read(&truth_path, &context);
    assert_sites_match(&report, &truth, &[]);
    assert_process_matches(&report, &truth);
    assert_no_losses(&report);
    w.close_stdin();
    w.wait_code(0);
}

/// SIGINT while the target is allocating (not idle, as in modes.rs): exit status 130, every
/// output complete and consistent (the probes stop counting before the final drain, so the
/// totals are one end state), nothing temporary left; the target goes on and ends normally.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn sigint_mid_allocation_writes_consistent_outputs() {
    alloctrace_bin();
    let scratch = Scratch::new();
    // Elsewhere: the target writes it when it ends, perhaps while the directory is checked.
    let truth_dir = Scratch::new();
    let truth_path = truth_dir.path("truth.txt");
    const ROUNDS: u64 = 40;
    let mut w = Workload::start(
        "ticker",
        &[&ROUNDS.to_string(), "20", "wait"],
        &[("GROUND_TRUTH", truth_path.as_os_str())],
    );
    let context = signal_with_outputs(&mut w, &scratch, "tick 10", 0, libc::SIGINT);
    let report = assert_outputs_complete(&scratch, &[], &context);
    let got = report.process_counters(w.pid());
    assert!(
        got.allocs >= 80,
        "the first 10 rounds (80 allocations) were not all counted: {got}\n{context}",
        got = got.text()
    );
    assert_no_losses(&report);
    w.wait_for_line("done");
    w.wait_code(0);
    ticker_truth_ok(&GroundTruth::read(&truth_path, &w.describe()), ROUNDS);
}
