//! Faults, bad input, load and loss: the target is never harmed, nothing is lost silently.
//!
//! Covered elsewhere and not repeated here: SIGINT of a --pid run with an exact final report
//! (modes.rs `sigint_ends_the_run_with_a_final_report`), a missing output directory and bad
//! option values (errors.rs `bad_option_values_are_errors`), threads counted exactly at small
//! scale (modes.rs `threads_are_counted_exactly`), two processes in system-wide mode (modes.rs
//! `system_wide_sees_two_processes_separately`).
//!
//! Privileged: run with `cargo xtask test` (root, `ALLOCTRACE_BIN`, `--include-ignored`).
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::{symlink, FileExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use alloctrace_tests::*;

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// The ids of the BPF programs process `pid` holds open (the `prog_id:` of its fdinfo).
fn prog_ids_of(pid: u32) -> Vec<u32> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut ids = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {dir}: {e}")) {
        let Ok(e) = e else { continue };
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        for l in text.lines() {
            if let Some(v) = l.strip_prefix("prog_id:") {
                ids.push(v.trim().parse().expect("a numeric prog_id"));
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Whether a BPF program with this id is still loaded in the kernel (BPF_PROG_GET_FD_BY_ID).
fn prog_loaded(id: u32) -> bool {
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    let mut attr = [0u32; 32];
    attr[0] = id;
    // SAFETY: bpf(2) reads `size_of_val(&attr)` bytes from a valid, zero-tailed buffer.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_GET_FD_BY_ID,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr) as libc::c_uint,
        )
    };
    if fd >= 0 {
        // SAFETY: a descriptor bpf(2) just returned to us.
        unsafe { libc::close(fd as libc::c_int) };
        return true;
    }
    let err = std::io::Error::last_os_error();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ENOENT),
        "BPF_PROG_GET_FD_BY_ID({id}) failed oddly: {err}"
    );
    false
}

/// The byte at `addr` in process `pid`'s memory (an int3, 0xcc, where a uprobe is installed).
fn byte_at(pid: u32, addr: u64) -> u8 {
    let path = format!("/proc/{pid}/mem");
    let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, addr)
        .unwrap_or_else(|e| panic!("cannot read {path} at {addr:#x}: {e}"));
    b[0]
}

/// Trace-event uprobes aya created for alloctrace process `pid` (named `aya_<pid>_...`), in
/// whichever tracefs is mounted. aya uses the uprobe PMU when the kernel has one, so there
/// are normally none at any time; without a mounted tracefs there can be none.
fn uprobe_events_of(pid: u32) -> Vec<String> {
    let tag = format!("aya_{pid}_");
    [
        "/sys/kernel/tracing/uprobe_events",
        "/sys/kernel/debug/tracing/uprobe_events",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .flat_map(|t| {
        t.lines()
            .filter(|l| l.contains(&tag))
            .map(str::to_string)
            .collect::<Vec<_>>()
    })
    .collect()
}

/// Other alloctrace processes on the machine (a system-wide one installs its probes in every
/// process, ours included).
fn other_alloctraces(except: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("list /proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| p != except)
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim_end() == "alloctrace")
        })
        .collect()
}

/// Polls `cond` every 20 ms for up to `limit`; true as soon as it holds.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The ticker's ground truth for `rounds` rounds: tick_alloc makes 8 blocks of 64 bytes a round.
fn ticker_truth_ok(truth: &GroundTruth, rounds: u64) {
    let t = truth.site("tick_alloc").counters;
    assert_eq!(
        t,
        Counters {
            allocs: 8 * rounds,
            bytes: 512 * rounds,
            frees: 8 * rounds,
            freed_bytes: 512 * rounds
        },
        "the ticker's own ground truth\n{}",
        truth.text
    );
}

/// Every tick line 0..rounds appears once, in order.
fn assert_all_ticks(stdout: &str, rounds: u64) {
    let ticks: Vec<u64> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("tick ")?.parse().ok())
        .collect();
    assert_eq!(
        ticks,
        (0..rounds).collect::<Vec<_>>(),
        "the target's ticks\n{stdout}"
    );
}

// =============================================================================================
// 1. SIGKILL
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
    let malloc_at = u64::from_str_radix(w.stdout_value("malloc_at ").trim_start_matches("0x"), 16)
        .expect("malloc_at is hex");
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
// 2. SIGTERM and SIGINT with every output file
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
    let extra = output_args(&scratch);
    let extra: Vec<&OsStr> = extra.iter().map(OsString::as_os_str).collect();
    let mut tracer = Running::spawn(
        &pid_args(w.pid(), &scratch.path("report.json"), &extra),
        &[],
    );
    tracer.wait_until_tracing();
    w.release();
    w.wait_for_line("done");
    std::thread::sleep(Duration::from_millis(300));
    tracer.signal(libc::SIGTERM);
    let finished = tracer.wait(Duration::from_secs(15));
    finished.assert_code(128 + libc::SIGTERM);
    let context = format!("{}\n{}", finished.describe(), w.describe());
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
    let extra = output_args(&scratch);
    let extra: Vec<&OsStr> = extra.iter().map(OsString::as_os_str).collect();
    let mut tracer = Running::spawn(
        &pid_args(w.pid(), &scratch.path("report.json"), &extra),
        &[],
    );
    tracer.wait_until_tracing();
    w.release();
    w.wait_for_line("tick 10");
    tracer.signal(libc::SIGINT);
    let finished = tracer.wait(Duration::from_secs(15));
    finished.assert_code(128 + libc::SIGINT);
    let context = format!("{}\n{}", finished.describe(), w.describe());
    let report = assert_outputs_complete(&scratch, &[], &context);
    let got = report.process_counters(w.pid());
    assert!(
        got.allocs >= 80,
        "the first 10 rounds (80 allocations) were not all counted: {got}\n{context}"
    );
    assert_no_losses(&report);
    w.wait_for_line("done");
    w.wait_code(0);
    ticker_truth_ok(&GroundTruth::read(&truth_path, &w.describe()), ROUNDS);
}

// =============================================================================================
// 3. Output path safety
// =============================================================================================

/// Symlinks planted where the outputs go are replaced, never followed (alloctrace runs as
/// root): the report's link pointed at an existing file, which keeps its content; the folded
/// stacks' link dangled towards a file that must not be created. Both outputs end up as
/// regular files with the right content, and no temporary file is left.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn planted_symlinks_are_replaced_not_followed() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let victim = scratch.path("victim");
    std::fs::write(&victim, b"precious").unwrap();
    symlink(&victim, scratch.path("report.json")).unwrap();
    let not_created = scratch.path("created-through-link");
    symlink(&not_created, scratch.path("stacks.folded")).unwrap();
    let folded: OsString = scratch.path("stacks.folded").into();
    let run = launch("ticker", &["3", "0"], &[os("--folded"), &folded], scratch);
    run.finished.assert_code(0);
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"precious",
        "the link was followed"
    );
    assert!(!not_created.exists(), "the dangling link was followed");
    for name in ["report.json", "stacks.folded"] {
        let m = std::fs::symlink_metadata(run.scratch.path(name)).unwrap();
        assert!(
            m.file_type().is_file(),
            "{name} is not a regular file: {m:?}"
        );
    }
    assert_sites_match(&run.report, &run.truth, &[]);
    let folded = std::fs::read_to_string(run.scratch.path("stacks.folded")).unwrap();
    assert_eq!(
        folded_by_leaf(&parse_folded(&folded)).get("tick_alloc"),
        Some(&1536)
    );
    assert_eq!(
        dir_entries(run.scratch.path("").as_path()),
        ["report.json", "stacks.folded", "truth.txt", "victim"]
    );
}

/// A symlink planted in a world-writable directory under /dev (/dev/shm) is not mistaken for a
/// /dev/stdout-style stream: pointed at a character device, it is replaced by a regular file,
/// and the device is not written (a link to /dev/mem would otherwise get the report).
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn symlink_under_dev_shm_is_not_followed_to_a_device() {
    alloctrace_bin();
    assert!(
        Path::new("/dev/shm").is_dir(),
        "no /dev/shm on this machine"
    );
    let link = PathBuf::from(format!(
        "/dev/shm/alloctrace-reliability-{}.json",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&link);
    symlink("/dev/null", &link).unwrap();
    struct Rm(PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _rm = Rm(link.clone());
    let finished = run_alloctrace(
        &[
            os("--report"),
            os("json"),
            os("-o"),
            link.as_os_str(),
            os("--"),
            workload("ticker").as_os_str(),
            os("2"),
            os("0"),
        ],
        &[("GROUND_TRUTH", os("/dev/null"))],
    );
    finished.assert_code(0);
    let m = std::fs::symlink_metadata(&link).unwrap();
    assert!(
        m.file_type().is_file(),
        "the link under /dev/shm was followed: {m:?}\n{}",
        finished.describe()
    );
    Report::read(&link, &finished.describe());
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
}

/// An output directory where nothing can be created (sysfs refuses new files even to root) is
/// refused before tracing, in one line naming the path.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn unwritable_output_directory_is_an_error() {
    alloctrace_bin();
    let finished = run_alloctrace(
        &["--duration", "5s", "-o", "/sys/alloctrace-report.json"],
        &[],
    );
    finished.assert_one_line_error(&["/sys/alloctrace-report.json"]);
}

/// The output directory disappears while tracing: the run still ends (the command exits), and
/// alloctrace fails with a one-line error naming the file, non-zero, no panic.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn output_directory_removed_during_the_run_is_an_error() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let dir = scratch.path("out");
    std::fs::create_dir(&dir).unwrap();
    let report = dir.join("report.json");
    let mut tracer = Running::spawn(
        &[
            os("--interval"),
            os(INTERVAL),
            os("-o"),
            report.as_os_str(),
            os("--"),
            workload("ticker").as_os_str(),
            os("20"),
            os("50"),
        ],
        &[("GROUND_TRUTH", scratch.path("truth.txt").as_os_str())],
    );
    tracer.wait_until_tracing();
    std::fs::remove_dir(&dir).unwrap();
    let finished = tracer.wait(RUN_TIMEOUT);
    assert_ne!(finished.code(), 0, "{}", finished.describe());
    let last = finished.stderr.lines().last().unwrap_or("");
    assert!(
        last.starts_with(ERROR_PREFIX) && last.contains(report.to_str().unwrap()),
        "the last stderr line is not a one-line error naming the report\n{}",
        finished.describe()
    );
    assert!(
        !finished.stderr.contains("panicked"),
        "{}",
        finished.describe()
    );
}

// =============================================================================================
// 4. Maps filled on purpose
// =============================================================================================

/// `fill stacks 20 3` makes 20 distinct stacks (recursion depths 0..19, in order), 3
/// malloc+free each; `--max-stacks 8` holds the first 8. Every allocation whose stack could
/// not be stored is one `stack_map_full` loss: (20 − 8) × 3 = 36, exactly. Its block is still
/// tracked, so the process's totals stay exact; the 8 stored sites have exactly their 3.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn full_stack_map_counts_every_lost_stack() {
    alloctrace_bin();
    let run = launch(
        "fill",
        &["stacks", "20", "3"],
        &[os("--max-stacks"), os("8")],
        Scratch::new(),
    );
    run.finished.assert_code(0);
    assert_process_matches(&run.report, &run.truth);
    assert_eq!(
        run.report.sites_of(run.truth.pid).len(),
        8,
        "{}",
        run.report.describe_sites(run.truth.pid)
    );
    // All eight are recurse_alloc's.
    assert_recursing_sites(
        &run,
        8,
        Counters {
            allocs: 3,
            bytes: 96,
            frees: 3,
            freed_bytes: 96,
        },
    );
    assert_only_loss(&run, "stack_map_full", 36, "raise --max-stacks");
}

/// `fill stacks`' process has `n` sites in recurse_alloc, each with counters `each`.
fn assert_recursing_sites(run: &Launched, n: usize, each: Counters) {
    let pid = run.truth.pid;
    let sites = run.report.sites_in(pid, "recurse_alloc");
    assert_eq!(sites.len(), n, "{}", run.report.describe_sites(pid));
    for s in sites {
        assert_eq!(
            Counters::from_json(&s["counters"], "site"),
            each,
            "{}",
            run.report.describe_sites(pid)
        );
    }
}

/// The `-v` line of the final drain about the site table: (slots in use, lane slots past
/// lane 0 among them, lane slots that may still be claimed).
fn site_table_line(finished: &Finished) -> (u64, u64, i64) {
    let context = finished.describe();
    let line = finished
        .stderr
        .lines()
        .find_map(|l| l.split_once("site table: ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no site table line under -v\n{context}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let number = |w: Option<&&str>| -> i64 {
        w.and_then(|w| w.trim_start_matches('(').parse().ok())
            .unwrap_or_else(|| panic!("unexpected site table line {line:?}\n{context}"))
    };
    // "{slots} slots in use, {lanes} of them lanes past the first (room for {left} more)"
    (
        number(words.first()) as u64,
        number(words.get(4)) as u64,
        number(words.get(13)),
    )
}

/// The CPU tests pin to for lane 1 of the site table (CPU 1: lane = CPU mod LANES).
fn lane_one_cpu() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        cpus >= 2,
        "this test needs two CPUs (lane 1 of the site table is CPU 1's); this machine has {cpus}"
    );
    1
}

/// `f`'s result, run on a thread pinned to `cpu` (with everything it starts), so the pin
/// does not outlive it.
fn on_cpu<T: Send>(cpu: usize, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            pin_to_cpu(cpu);
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// A site counted on a CPU past lane 0 gets a slot of its own there (so threads on different
/// CPUs do not contend for one site's counters), and user space adds a site's slots up. All
/// of it pinned to CPU 1: each site's first allocation creates the site in lane 0, every
/// later one counts in lane 1's slot; the sites' counts are exact only if both are added.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn sites_on_another_cpu_count_in_their_lane_exactly() {
    alloctrace_bin();
    let run = on_cpu(lane_one_cpu(), || {
        launch("threads", &[], &[os("-v")], Scratch::new())
    });
    run.finished.assert_code(0);
    assert_sites_match(&run.report, &run.truth, &[]);
    assert_process_is_sum_of_sites(&run.report, run.truth.pid);
    assert_no_losses(&run.report);
    let (slots, lanes, _) = site_table_line(&run.finished);
    let sites = run.report.sites_of(run.truth.pid).len() as u64;
    // Every site with more than one allocation has its lane-1 slot too.
    assert!(
        lanes >= 1 && slots > sites,
        "{slots} slots ({lanes} lanes) for {sites} sites\n{}",
        run.finished.describe()
    );
}

/// Lane slots are bounded by the spread budget (a quarter of --max-stacks): past it a CPU
/// counts in lane 0's slot, still exactly. `--max-stacks 4` gives one lane slot; `fill stacks
/// 3 5`, pinned to CPU 1, makes three sites of five allocations: the first site takes the one
/// lane slot, the other two count in lane 0.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn the_spread_budget_bounds_lane_slots_and_counts_stay_exact() {
    alloctrace_bin();
    let run = on_cpu(lane_one_cpu(), || {
        launch(
            "fill",
            &["stacks", "3", "5"],
            &[os("-v"), os("--max-stacks"), os("4")],
            Scratch::new(),
        )
    });
    run.finished.assert_code(0);
    assert_process_matches(&run.report, &run.truth);
    assert_recursing_sites(
        &run,
        3,
        Counters {
            allocs: 5,
            bytes: 160,
            frees: 5,
            freed_bytes: 160,
        },
    );
    assert_no_losses(&run.report);
    let (_, lanes, left) = site_table_line(&run.finished);
    assert_eq!(
        (lanes, left),
        (1, 0),
        "lane slots past lane 0, and room for more\n{}",
        run.finished.describe()
    );
}

/// The report's only non-zero loss counter is `name`, at exactly `n`, and stderr printed the
/// hint that fixes it.
fn assert_only_loss(run: &Launched, name: &str, n: u64, hint: &str) {
    let context = run.finished.describe();
    let mut losses = run.report.losses();
    assert_eq!(losses.remove(name), Some(n), "{context}");
    assert!(losses.values().all(|&n| n == 0), "{losses:?}");
    assert!(
        run.finished.stderr.contains(hint),
        "no hint on stderr\n{context}"
    );
}

/// `fill live 1000` holds 1,000 blocks at once; `--max-live 100` gives the in-flight table 256
/// slots, so between 100 and 256 of them are tracked. Every other one is a `live_map_full`
/// loss, exactly; allocations stay exact, and the lost blocks' frees can only be unknown
/// frees, while the tracked ones are frees of hold_alloc's site.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn full_live_map_counts_every_lost_block() {
    alloctrace_bin();
    let run = launch(
        "fill",
        &["live", "1000"],
        &[os("--max-live"), os("100")],
        Scratch::new(),
    );
    run.finished.assert_code(0);
    let context = run.finished.describe();
    let pid = run.truth.pid;
    let p = run.report.process(pid);
    let f = run.report.functions(pid);
    let tracked = f["hold_alloc"].counters.frees;
    assert!(
        (100..=256).contains(&tracked),
        "{tracked} blocks tracked\n{}",
        run.report.describe_sites(pid)
    );
    let expect = Counters {
        allocs: 1000,
        bytes: 48_000,
        frees: tracked,
        freed_bytes: 48 * tracked,
    };
    assert_eq!(
        f["hold_alloc"].counters,
        expect,
        "{}",
        run.report.describe_sites(pid)
    );
    assert_eq!(run.report.process_counters(pid), expect, "{p}\n{context}");
    assert_eq!(p["unknown_frees"].as_u64(), Some(1000 - tracked), "{p}");
    assert_only_loss(&run, "live_map_full", 1000 - tracked, "raise --max-live");
}

// =============================================================================================
// 5. The target execs another program
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
    let (before, after) = (scratch.path("before.txt"), scratch.path("after.txt"));
    let mut w = Workload::start(
        name,
        args,
        &[
            ("GROUND_TRUTH", before.as_os_str()),
            ("AFTER_TRUTH", after.as_os_str()),
        ],
    );
    let report_path = scratch.path("report.json");
    let mut tracer = Running::spawn(&pid_args(w.pid(), &report_path, &[]), &[]);
    tracer.wait_until_tracing();
    w.release();
    w.wait_for_line("done");
    w.wait_code(0);
    let finished = tracer.wait(RUN_TIMEOUT);
    finished.assert_code(0);
    let context = format!("{}\n{}", finished.describe(), w.describe());
    let report = Report::read(&report_path, &context);
    let before = GroundTruth::read(&before, &context);
    let after = GroundTruth::read(&after, &context);
    ExecRun {
        w,
        finished,
        context,
        report,
        before,
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

// =============================================================================================
// 6. A binary deleted while traced
// =============================================================================================

/// A private copy of `ticker`, deleted after it started and before alloctrace attaches
/// (`/proc/PID/maps` says `(deleted)`): its functions still symbolize, counts exact.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn deleted_binary_still_symbolizes() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let copy = scratch.path("ticker-copy");
    std::fs::copy(workload("ticker"), &copy).unwrap();
    let truth_path = scratch.path("truth.txt");
    let mut w = Workload::start_path(
        &copy,
        &["6", "0", "wait"],
        &[("GROUND_TRUTH", truth_path.as_os_str())],
    );
    std::fs::remove_file(&copy).unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", w.pid())).unwrap();
    assert!(maps.contains("ticker-copy (deleted)"), "{maps}");
    let report_path = scratch.path("report.json");
    let mut tracer = Running::spawn(&pid_args(w.pid(), &report_path, &[]), &[]);
    tracer.wait_until_tracing();
    w.release();
    w.wait_code(0);
    let finished = tracer.wait(RUN_TIMEOUT);
    finished.assert_code(0);
    let context = format!("{}\n{}", finished.describe(), w.describe());
    let truth = GroundTruth::read(&truth_path, &context);
    let report = Report::read(&report_path, &context);
    assert_sites_match(&report, &truth, &[]);
    assert_process_matches(&report, &truth);
    let site = report.sites_of(w.pid())[0];
    assert_eq!(
        Report::frame_names(site).get(1).map(String::as_str),
        Some("main"),
        "{}",
        report.describe_sites(w.pid())
    );
}

/// The same in launch mode, the binary deleted while the command runs.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn binary_deleted_during_launch_still_symbolizes() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let copy = scratch.path("ticker-copy");
    std::fs::copy(workload("ticker"), &copy).unwrap();
    let (truth_path, report_path) = (scratch.path("truth.txt"), scratch.path("report.json"));
    let mut tracer = Running::spawn(
        &[
            os("--interval"),
            os(INTERVAL),
            os("--report"),
            os("json"),
            os("-o"),
            report_path.as_os_str(),
            os("--"),
            copy.as_os_str(),
            os("10"),
            os("50"),
        ],
        &[("GROUND_TRUTH", truth_path.as_os_str())],
    );
    tracer.wait_until_tracing();
    std::thread::sleep(Duration::from_millis(150));
    std::fs::remove_file(&copy).unwrap();
    let finished = tracer.wait(RUN_TIMEOUT);
    finished.assert_code(0);
    let context = finished.describe();
    let truth = GroundTruth::read(&truth_path, &context);
    let report = Report::read(&report_path, &context);
    assert_sites_match(&report, &truth, &[]);
    assert_process_matches(&report, &truth);
}

// =============================================================================================
// 7. Two alloctrace instances on one target
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
        churn.counters,
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
        report.describe_sites(w.pid())
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

// =============================================================================================
// 8. Stripped binaries
// =============================================================================================

/// `nm -S` of `bin`: (start, end) of function `name`.
fn symbol_range(bin: &Path, name: &str) -> (u64, u64) {
    let out = std::process::Command::new("nm")
        .arg("-S")
        .arg(bin)
        .output()
        .expect("run nm (binutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() == 4 && f[3] == name {
            let start = u64::from_str_radix(f[0], 16).unwrap();
            let size = u64::from_str_radix(f[1], 16).unwrap();
            return (start, start + size);
        }
    }
    panic!("nm {} has no {name}:\n{text}", bin.display());
}

/// A stripped binary (no .symtab, no debug info): a function exported in the dynamic symbol
/// table (linked with -rdynamic) is still named from it; a static one falls back to
/// `module` + `module_offset`, and that offset lies inside the function; nothing is dropped
/// (process totals exact).
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn stripped_binary_falls_back_to_dynsym_then_offsets() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads/exported.c");
    let full = scratch.path("exported-full");
    let cc = std::process::Command::new("gcc")
        .args([
            "-O1",
            "-fno-omit-frame-pointer",
            "-fno-optimize-sibling-calls",
            "-rdynamic",
            "-o",
        ])
        .arg(&full)
        .arg(&src)
        .arg(format!("-I{}", src.parent().unwrap().display()))
        .output()
        .expect("run gcc");
    assert!(
        cc.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let stripped = scratch.path("exported-stripped");
    let st = std::process::Command::new("strip")
        .args(["--strip-all", "-o"])
        .arg(&stripped)
        .arg(&full)
        .output()
        .expect("run strip");
    assert!(
        st.status.success(),
        "strip: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let hidden = symbol_range(&full, "hidden_alloc");
    let (truth_path, report_path) = (scratch.path("truth.txt"), scratch.path("report.json"));
    let finished = run_alloctrace(
        &[
            os("--report"),
            os("json"),
            os("-o"),
            report_path.as_os_str(),
            os("--"),
            stripped.as_os_str(),
        ],
        &[("GROUND_TRUTH", truth_path.as_os_str())],
    );
    finished.assert_code(0);
    let context = finished.describe();
    let truth = GroundTruth::read(&truth_path, &context);
    let report = Report::read(&report_path, &context);
    assert_process_matches(&report, &truth);
    assert_sites_match(&report, &truth, &["exported_alloc"]);
    // hidden_alloc's site: no name, but the module and an offset inside hidden_alloc.
    let unnamed: Vec<_> = report
        .sites_of(truth.pid)
        .into_iter()
        .filter(|s| Report::frame_function(s, 0).is_none())
        .collect();
    let describe = report.describe_sites(truth.pid);
    assert_eq!(unnamed.len(), 1, "{describe}");
    let f0 = &unnamed[0]["frames"][0];
    assert_eq!(
        f0["module"].as_str(),
        stripped.to_str(),
        "frame {f0}\n{describe}"
    );
    let off = f0["module_offset"].as_u64().expect("module_offset");
    assert!(
        (hidden.0..hidden.1).contains(&off),
        "offset {off:#x} is not inside hidden_alloc {:#x}..{:#x}\n{describe}",
        hidden.0,
        hidden.1
    );
    assert_eq!(
        Counters::from_json(&unnamed[0]["counters"], "site"),
        truth.site("hidden_alloc").counters
    );
}

// =============================================================================================
// 9. Millions of allocations from several threads
// =============================================================================================

/// 4 threads × 500,000 malloc+free (2 million pairs, a few seconds traced): every call is
/// counted exactly, none lost.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn millions_of_allocations_from_threads_are_exact() {
    alloctrace_bin();
    let run = launch_every("1s", "churn", &["4", "500000"], &[], Scratch::new());
    run.finished.assert_code(0);
    assert_sites_match(&run.report, &run.truth, &["churn_alloc"]);
    assert_process_is_sum_of_sites(&run.report, run.truth.pid);
    assert_no_losses(&run.report);
}

// =============================================================================================
// 10. System-wide with many short-lived processes
// =============================================================================================

/// A `/proc/PID/status` memory line (`VmHWM:`, `VmRSS:`) of `pid`, in KiB; 0 if unreadable.
fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// VmHWM (peak resident set) of `pid` in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// Peak RSS alloctrace may reach in the test below. What grows with the number of processes
/// is user-space state only: each dead process's totals and sites (a few hundred bytes per
/// site, with its histograms) and the symbolizer's record of its mappings; the kernel maps
/// are fixed-size kernel memory, and retiring dead processes keeps them from filling. The
/// rest is the binary, blazesym's caches of the few binaries involved (libc with its
/// debug info, sh, the workload), the ring buffer and the mapped site table (~31 MiB at the
/// default --max-stacks). Measured here: ~25 MiB plus the table over ~1,000
/// processes; the bound leaves room for twice that (other processes on the machine are traced
/// too) while still catching per-process state that is never dropped or a leak per drain.
const SYSTEM_WIDE_RSS_BOUND_KIB: u64 = 128 * 1024;

/// alloctrace system-wide (no target) every `interval`, with `extra` options, writing its JSON
/// report to `report_path`; returns once it traces.
fn trace_system_wide(interval: &str, extra: &[&OsStr], report_path: &Path) -> Running {
    let args = report_args(interval, report_path, extra);
    let mut tracer = Running::spawn(&args, &[]);
    tracer.wait_until_tracing();
    tracer
}

/// Ends a system-wide run with SIGINT, as a user would: the exit code says so, nothing
/// panicked, and the report was written. Returns it with the finished run.
fn stop_system_wide(mut tracer: Running, report_path: &Path) -> (Report, Finished) {
    tracer.signal(libc::SIGINT);
    let finished = tracer.wait(RUN_TIMEOUT);
    finished.assert_code(128 + libc::SIGINT);
    let context = finished.describe();
    assert!(!finished.stderr.contains("panicked"), "{context}");
    (Report::read(report_path, &context), finished)
}

/// Runs `fill leak 1500` `runs` times, one after another, each through `launcher` (a command
/// that execs the rest, e.g. taskset; none if empty): each process exits holding 1,500
/// blocks of 48 bytes. After each, waits for `tracer` (run with -vv) to say it dropped the
/// process's blocks from the in-flight table (a sweep comes every ten drains: 1 s at a 100 ms
/// interval, later on a busy machine) before the next starts. Returns their pids.
fn leak_in_turn(tracer: &Running, runs: usize, launcher: &[&str]) -> Vec<u32> {
    let mut pids = Vec::new();
    for _ in 0..runs {
        let mut cmd = match launcher.split_first() {
            Some((prog, args)) => {
                let mut c = std::process::Command::new(prog);
                c.args(args).arg(workload("fill"));
                c
            }
            None => std::process::Command::new(workload("fill")),
        };
        let child = cmd
            .args(["leak", "1500"])
            .env("GROUND_TRUTH", "/dev/null")
            .spawn()
            .expect("start fill");
        let pid = child.id();
        pids.push(pid);
        let out = child.wait_with_output().expect("wait for fill");
        assert!(out.status.success(), "fill failed: {}", out.status);
        await_stderr(tracer, &format!("blocks of exited process {pid} dropped"));
    }
    pids
}

/// System-wide tracing while a shell loop starts and ends 1,000 short-lived processes: no
/// crash, every one of them has its totals (each made exactly tick_alloc's 8 allocations of
/// 64 bytes, all freed), and alloctrace's peak RSS stays under
/// [`SYSTEM_WIDE_RSS_BOUND_KIB`].
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn system_wide_survives_a_thousand_short_processes() {
    alloctrace_bin();
    const N: usize = 1000;
    let scratch = Scratch::new();
    let report_path = scratch.path("report.json");
    let mut tracer = trace_system_wide(INTERVAL, &[], &report_path);
    let script = format!(
        "i=0; while [ $i -lt {N} ]; do {} 1 0 >/dev/null || exit 1; i=$((i+1)); done",
        workload("ticker").display()
    );
    let mut shell = std::process::Command::new("sh")
        .args(["-c", &script])
        .env("GROUND_TRUTH", "/dev/null")
        .spawn()
        .expect("start sh");
    let mut peak = 0;
    let status = loop {
        if let Some(st) = shell.try_wait().expect("wait for sh") {
            break st;
        }
        assert!(
            tracer.is_running(),
            "alloctrace died\n{}",
            tracer.stderr_text()
        );
        peak = peak.max(peak_rss_kib(tracer.pid()));
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "the shell loop failed: {status}");
    // Let a drain retire the last ones, then end the run.
    std::thread::sleep(Duration::from_millis(600));
    peak = peak.max(peak_rss_kib(tracer.pid()));
    let (report, _) = stop_system_wide(tracer, &report_path);
    let mut seen = 0;
    for pid in report.pids() {
        let pid = pid as u32;
        let f = report.functions(pid);
        let Some(t) = f.get("tick_alloc") else {
            continue;
        };
        seen += 1;
        assert_eq!(
            t.counters,
            Counters {
                allocs: 8,
                bytes: 512,
                frees: 8,
                freed_bytes: 512
            },
            "pid {pid}\n{}",
            report.describe_sites(pid)
        );
        assert_process_is_sum_of_sites(&report, pid);
    }
    assert_eq!(seen, N, "short-lived processes with their tick_alloc site");
    eprintln!(
        "alloctrace peak RSS: {peak} KiB over {} processes",
        report.pids().len()
    );
    assert!(peak > 0, "VmHWM never read");
    assert!(
        peak < SYSTEM_WIDE_RSS_BOUND_KIB,
        "alloctrace's peak RSS {peak} KiB exceeds {SYSTEM_WIDE_RSS_BOUND_KIB} KiB"
    );
}

/// The blocks exited processes never freed leave the in-flight table: system-wide, with
/// `--max-live 2048` (4,096 slots), six processes one after another each exit holding 1,500
/// blocks — 9,000 in all, more than the table holds — and none is lost, because each
/// drain's sweep retires the slots of processes that are gone; each process's counts are
/// exact. Run on CPU 1, each process's site also takes a lane slot past lane 0, which its
/// retirement gives back to the spread budget: at the end the budget left plus the lane
/// slots still in use is the whole budget.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn system_wide_retires_exited_processes_blocks() {
    alloctrace_bin();
    const RUNS: usize = 6;
    // A quarter of the default --max-stacks (16384).
    const SPREAD_BUDGET: i64 = 4096;
    let scratch = Scratch::new();
    let report_path = scratch.path("report.json");
    let tracer = trace_system_wide(
        "100ms",
        &[os("-vv"), os("--max-live"), os("2048")],
        &report_path,
    );
    let pids = leak_in_turn(
        &tracer,
        RUNS,
        &["taskset", "-c", &lane_one_cpu().to_string()],
    );
    let (report, finished) = stop_system_wide(tracer, &report_path);
    let context = finished.describe();
    for pid in pids {
        let f = report.functions(pid);
        assert_eq!(
            f.get("hold_alloc").map(|t| t.counters),
            Some(Counters {
                allocs: 1500,
                bytes: 72_000,
                frees: 0,
                freed_bytes: 0
            }),
            "pid {pid}\n{}",
            report.describe_sites(pid)
        );
    }
    assert_eq!(report.losses().get("live_map_full"), Some(&0), "{context}");
    let (_, lanes, left) = site_table_line(&finished);
    assert_eq!(
        left + lanes as i64,
        SPREAD_BUDGET,
        "lane slots given back on retirement: {left} left, {lanes} in use\n{context}"
    );
}

/// Retired site slots serve new sites, starting from zero: system-wide with `--max-stacks 64`
/// (a site table of 376 slots), sixteen processes one after another each allocate from 24
/// distinct stacks (384 sites in all, more than the table holds) and exit. Every process's
/// sites are all there with exactly their own counts: slots freed by exited processes were
/// claimed again, and none kept the counts of the site it held before.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn system_wide_reuses_exited_processes_site_slots() {
    alloctrace_bin();
    const RUNS: usize = 16;
    const DEPTHS: usize = 24;
    let scratch = Scratch::new();
    let report_path = scratch.path("report.json");
    let tracer = trace_system_wide(
        "100ms",
        &[os("-vv"), os("--max-stacks"), os("64")],
        &report_path,
    );
    let mut pids = Vec::new();
    for _ in 0..RUNS {
        let child = std::process::Command::new(workload("fill"))
            .args(["stacks", &DEPTHS.to_string(), "3"])
            .env("GROUND_TRUTH", "/dev/null")
            .spawn()
            .expect("start fill");
        let pid = child.id();
        let out = child.wait_with_output().expect("wait for fill");
        assert!(out.status.success(), "fill failed: {}", out.status);
        await_stderr(&tracer, &format!("process {pid} retired"));
        pids.push(pid);
    }
    let (report, finished) = stop_system_wide(tracer, &report_path);
    let context = finished.describe();
    for pid in pids {
        let counts: Vec<Counters> = report
            .sites_in(pid, "recurse_alloc")
            .iter()
            .map(|s| Counters::from_json(&s["counters"], "site"))
            .collect();
        assert!(
            counts.len() == DEPTHS
                && counts.iter().all(|c| *c
                    == Counters {
                        allocs: 3,
                        bytes: 96,
                        frees: 3,
                        freed_bytes: 96,
                    }),
            "pid {pid}: expected {DEPTHS} sites of 3 allocations and frees of 32 bytes\n{}\n{context}",
            report.describe_sites(pid)
        );
    }
    let losses = report.losses();
    for loss in ["site_map_full", "stack_map_full"] {
        assert_eq!(losses.get(loss), Some(&0), "{loss}\n{context}");
    }
}

/// Under sampling almost no allocation has a site, and a process counts them in the per-CPU
/// slot it owns (the kernel's OWNED map). System-wide, one process after another runs on
/// one CPU, each claiming that CPU's slot after user space freed it from the one before
/// (this test's own thread is kept on another CPU, so it does not hold the slot): every
/// process's totals are the same (the same deterministic program) and at least what it
/// leaks. A freed slot that kept its counters would add one process's counts to the next;
/// a retired owner whose slot was not counted would lose its own. Other short-lived
/// processes can take the slot in between, so at least two of the six must have owned it.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn system_wide_sampling_hands_cpu_slots_on_exactly() {
    alloctrace_bin();
    const RUNS: usize = 6;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (own_cpu, work_cpu) = (0, cpus - 1);
    pin_to_cpu(own_cpu);
    let scratch = Scratch::new();
    let report_path = scratch.path("report.json");
    // A mean of 1 GiB: hardly any of these allocations is sampled.
    let tracer = trace_system_wide(
        "100ms",
        &[os("-vv"), os("--sample-bytes"), os("1073741824")],
        &report_path,
    );
    let pids = leak_in_turn(&tracer, RUNS, &["taskset", "-c", &work_cpu.to_string()]);
    let (report, finished) = stop_system_wide(tracer, &report_path);
    let context = finished.describe();
    let totals: Vec<Counters> = pids.iter().map(|&p| report.process_counters(p)).collect();
    let first = totals[0];
    assert!(
        first.allocs >= 1500 && first.bytes >= 72_000,
        "pid {}: {first:?} is less than the 1,500 blocks of 48 bytes it leaked\n{context}",
        pids[0]
    );
    for (pid, t) in pids.iter().zip(&totals) {
        assert_eq!(
            *t, first,
            "pid {pid} of {pids:?}: totals {totals:?}\n{context}"
        );
    }
    // Otherwise no slot changed hands and the above checked nothing of them: another
    // process kept that CPU's slot (this test needs a machine not busy with other programs).
    let owners: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|p| context.contains(&format!("slot freed from exited process {p}\n")))
        .collect();
    assert!(
        owners.len() >= 2,
        "of the processes {pids:?} on CPU {work_cpu}, only {owners:?} owned a slot\n{context}"
    );
}

// =============================================================================================
// 11. Another mount namespace with its own libc
// =============================================================================================

/// A process started with `unshare -m` in a chroot holding its own copies of libc and the
/// dynamic loader: alloctrace --pid probes that libc (through /proc/PID/root, not the host's
/// file, which the process does not map), so every allocation is counted, and the workload's
/// functions symbolize through /proc/PID/root (its binary exists only inside the root).
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn other_mount_namespace_probes_its_own_libc() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let root = scratch.path("root");
    let libdir = root.join("lib/x86_64-linux-gnu");
    std::fs::create_dir_all(&libdir).unwrap();
    std::fs::create_dir_all(root.join("lib64")).unwrap();
    let host_libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
    let host_ld = Path::new("/lib64/ld-linux-x86-64.so.2");
    for p in [host_libc, host_ld] {
        assert!(
            p.exists(),
            "{} is missing: this test expects Debian's x86-64 layout",
            p.display()
        );
    }
    // Copies (new inodes), not links: probing the host's libc would count nothing here.
    std::fs::copy(host_libc, libdir.join("libc.so.6")).unwrap();
    std::fs::copy(host_ld, root.join("lib64/ld-linux-x86-64.so.2")).unwrap();
    std::fs::copy(workload("ticker"), root.join("ticker")).unwrap();
    let unshare = Path::new("/usr/bin/unshare");
    assert!(unshare.exists(), "unshare (util-linux) is missing");
    let mut w = Workload::start_path(
        unshare,
        &[
            "-m",
            "chroot",
            root.to_str().unwrap(),
            "/ticker",
            "6",
            "20",
            "wait",
        ],
        &[("GROUND_TRUTH", OsStr::new("/truth.txt"))],
    );
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/mnt")).unwrap();
    assert_ne!(
        ns(&w.pid().to_string()),
        ns("self"),
        "the workload shares our mount namespace"
    );
    let report_path = scratch.path("report.json");
    let mut tracer = Running::spawn(&pid_args(w.pid(), &report_path, &[]), &[]);
    let line = tracer.wait_until_tracing();
    let copy = libdir.join("libc.so.6");
    assert!(
        line.contains(&format!("on {}", copy.display()))
            || line.contains(&format!("/proc/{}/", w.pid())),
        "not the process's own libc ({}): {line}",
        copy.display()
    );
    w.release();
    w.wait_code(0);
    let finished = tracer.wait(RUN_TIMEOUT);
    finished.assert_code(0);
    let context = format!("{}\n{}", finished.describe(), w.describe());
    let truth = GroundTruth::read(&root.join("truth.txt"), &context);
    let report = Report::read(&report_path, &context);
    assert_sites_match(&report, &truth, &[]);
    assert_process_matches(&report, &truth);
}

// =============================================================================================
// 12. A long run keeps alloctrace's memory bounded
// =============================================================================================

/// Growth of alloctrace's resident memory allowed between an early reading (after ~150 drains)
/// and a late one (~350 drains later, still tracing: the final symbolization and report, which
/// need memory once, come after). With `--max-samples 50` every series is full by the early reading:
/// anything kept per drain beyond that (a leak per interval, an unbounded series) grows it by
/// hundreds of bytes per drain per site and process, far beyond what is left for allocator
/// noise.
const LONG_RUN_GROWTH_BOUND_KIB: u64 = 4 * 1024;

/// `ticker` for ~6 s under `--interval 10ms --max-samples 50` (~600 drains): the counts stay
/// exact, the report keeps at most 50 samples per process and points per site, and
/// alloctrace's resident memory stops growing once the series are full.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn long_run_keeps_memory_bounded() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let (truth_path, report_path) = (scratch.path("truth.txt"), scratch.path("report.json"));
    const ROUNDS: u64 = 600;
    let ticker = workload("ticker");
    let mut args = report_args(
        "10ms",
        &report_path,
        &[os("--max-samples"), os("50"), os("--"), ticker.as_os_str()],
    );
    args.extend([ROUNDS.to_string(), "10".to_string()].map(OsString::from));
    let mut tracer = Running::spawn(&args, &[("GROUND_TRUTH", truth_path.as_os_str())]);
    tracer.wait_until_tracing();
    let pid = tracer.pid();
    std::thread::sleep(Duration::from_millis(1500));
    let early = status_kib(pid, "VmRSS:");
    // The workload runs ~6 s: read again well before it ends.
    std::thread::sleep(Duration::from_millis(3500));
    let still_tracing = tracer.is_running();
    let last = status_kib(pid, "VmRSS:");
    assert!(still_tracing, "the run ended before the late reading");
    let finished = tracer.wait(Duration::from_secs(30));
    finished.assert_code(0);
    let context = finished.describe();
    let truth = GroundTruth::read(&truth_path, &context);
    let report = Report::read(&report_path, &context);
    ticker_truth_ok(&truth, ROUNDS);
    assert_process_matches(&report, &truth);
    assert!(
        early > 0 && last > 0,
        "could not read alloctrace's VmRSS\n{context}"
    );
    assert!(
        report.samples().len() <= 50,
        "{} samples kept with --max-samples 50",
        report.samples().len()
    );
    for s in report.sites() {
        let n = s["series"].as_array().map_or(0, Vec::len);
        assert!(
            n <= 50,
            "a site kept {n} series points with --max-samples 50"
        );
    }
    assert!(
        last.saturating_sub(early) < LONG_RUN_GROWTH_BOUND_KIB,
        "alloctrace's resident memory grew from {early} KiB to {last} KiB over ~350 drains \
         after its series were full (bound {LONG_RUN_GROWTH_BOUND_KIB} KiB)"
    );
}

/// Every program, in every mode, loads far from the kernel verifier's limit of a million
/// instructions walked: start-up time follows that count, and a program near the limit can
/// fail to load on another kernel or after a small change (with --sample-bytes, calloc's and
/// reallocarray's programs once took 854k and 862k). alloctrace -vv gives each program's
/// count, from the kernel's account of its verification (bpf_prog_info.verified_insns).
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn every_program_verifies_far_below_the_verifier_limit() {
    alloctrace_bin();
    const MOST: u64 = 600_000;
    let modes: [(&[&str], &[&str]); 4] = [
        (
            &[],
            &["malloc_enter", "alloc_return", "free_enter", "calloc_enter"],
        ),
        (
            &["--sample-bytes", "524288"],
            &["malloc_enter", "calloc_enter"],
        ),
        (
            &["--mode", "alloc-only"],
            &["malloc_count", "realloc_count"],
        ),
        (
            &["--mode", "alloc-only", "--sample-bytes", "524288"],
            &["malloc_count", "realloc_count"],
        ),
    ];
    let mut over = Vec::new();
    for (extra, must) in modes {
        let mut args: Vec<&OsStr> = vec![os("-vv")];
        args.extend(extra.iter().map(|a| os(a)));
        args.extend([os("--"), os("/bin/true")]);
        let run = run_alloctrace(&args, &[]);
        run.assert_code(0);
        let counts: Vec<(String, u64)> = run
            .stderr
            .lines()
            .filter_map(|l| {
                let (name, rest) = l
                    .split_once("program ")?
                    .1
                    .split_once(": the verifier walked ")?;
                Some((
                    name.to_string(),
                    rest.split_whitespace().next()?.parse().ok()?,
                ))
            })
            .collect();
        for m in must {
            assert!(
                counts.iter().any(|(n, _)| n == m),
                "no verifier count for {m} with {extra:?}\n{}",
                run.describe()
            );
        }
        over.extend(
            counts
                .into_iter()
                .filter(|(_, n)| *n > MOST)
                .map(|(name, n)| format!("{name} with {extra:?}: {n}")),
        );
    }
    assert!(
        over.is_empty(),
        "programs the verifier walked more than {MOST} instructions of:\n  {}",
        over.join("\n  ")
    );
}
