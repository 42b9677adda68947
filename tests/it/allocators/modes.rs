//! The allocator workloads beyond one process in one mode: a static binary stripped of its
//! allocator's symbols (the note, never a silent zero; system-wide too), system-wide mode with
//! a glibc and a jemalloc process side by side, an exec from a glibc program into a static
//! musl one, and alloc-only mode on jemalloc and mimalloc.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::*;

/// Whether `line` has `pid` as a word of its own (not inside a longer number).
fn mentions_pid(line: &str, pid: u32) -> bool {
    line.split(|c: char| !c.is_ascii_digit())
        .any(|w| w == pid.to_string())
}

/// An alloctrace line about `pid` saying its allocations cannot be seen.
fn unseen_note(stderr: &str, pid: u32) -> Option<&str> {
    stderr.lines().find(|l| {
        l.starts_with("alloctrace: ")
            && mentions_pid(l, pid)
            && (l.contains("cannot be probed") || l.contains("unseen"))
    })
}

/// The stripped static process `pid` is not a silent zero: a stderr line names it and says its
/// allocator cannot be probed (or its allocations are unseen), and its report entry carries
/// `unseen` with a reason.
fn assert_marked_unseen(stderr: &str, report: &Report, pid: u32, context: &str) {
    assert!(
        unseen_note(stderr, pid).is_some(),
        "no alloctrace line names pid {pid} and says its allocator cannot be probed / its \
         allocations are unseen\n{context}"
    );
    let process = report.process(pid);
    assert!(
        process["unseen"]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "pid {pid}'s report entry has no unseen.reason: {process}\n{context}"
    );
}

/// A static binary without a symbol table (`strip -s`) holds no allocator symbol to probe:
/// launched, it runs to its end, and alloctrace says so for its pid, in stderr and the report.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn stripped_static_launched_is_marked_unseen() {
    alloctrace_bin();
    let exe = workload("allocators_static_stripped");
    let scratch = Scratch::new();
    let (truth_path, report_path) = (scratch.path("truth.txt"), scratch.path("report.json"));
    let mut args = report_args(INTERVAL, &report_path, &[]);
    args.push("--".into());
    args.push(exe.into());
    let finished = run_alloctrace(&args, &[("GROUND_TRUTH", truth_path.as_os_str())]);
    let context = finished.describe();
    finished.assert_code(0);
    let truth = GroundTruth::read(&truth_path, &context);
    let report = Report::read(&report_path, &context);
    assert_marked_unseen(&finished.stderr, &report, truth.pid, &context);
}

/// The same stripped static binary, running, traced with --pid: alloctrace attaches, says the
/// pid's allocator cannot be probed, and the report marks the process unseen.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn stripped_static_by_pid_is_marked_unseen() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let (truth_path, report_path) = (scratch.path("truth.txt"), scratch.path("report.json"));
    let mut w = Workload::start(
        "allocators_static_stripped",
        &["wait"],
        &[("GROUND_TRUTH", truth_path.as_os_str())],
    );
    let pid = w.pid();
    let mut tracer = Running::spawn(&pid_args(pid, &report_path, &[]), &[]);
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let stderr = tracer.stderr_text();
        if stderr.contains(TRACING_PREFIX) || unseen_note(&stderr, pid).is_some() {
            break;
        }
        assert!(
            tracer.is_running() && Instant::now() < deadline,
            "alloctrace neither traced pid {pid} nor said its allocator cannot be probed \
             (it exited, or {STARTUP_TIMEOUT:?} passed)\n{stderr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    w.release();
    w.wait_code(0);
    let finished = tracer.wait(RUN_TIMEOUT);
    let context = format!("{}\n{}", finished.describe(), w.describe());
    finished.assert_code(0);
    let report = Report::read(&report_path, &context);
    GroundTruth::read(&truth_path, &context);
    assert_marked_unseen(&finished.stderr, &report, pid, &context);
}

/// System-wide mode: a stripped static process started while tracing has no allocator to
/// probe; it is named on stderr and marked unseen in the report, not left out.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn system_wide_stripped_static_is_marked_unseen() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let (truth_path, report_path) = (scratch.path("truth.txt"), scratch.path("report.json"));
    let mut tracer = Running::spawn(&report_args(INTERVAL, &report_path, &[]), &[]);
    tracer.wait_until_tracing();
    let mut w = Workload::start(
        "allocators_static_stripped",
        &["wait"],
        &[("GROUND_TRUTH", truth_path.as_os_str())],
    );
    let pid = w.pid();
    w.release();
    w.wait_code(0);
    // One drain after its end, then the final report.
    std::thread::sleep(Duration::from_millis(600));
    tracer.signal(libc::SIGINT);
    let finished = tracer.wait(RUN_TIMEOUT);
    let context = format!("{}\n{}", finished.describe(), w.describe());
    let report = Report::read(&report_path, &context);
    GroundTruth::read(&truth_path, &context);
    assert_marked_unseen(&finished.stderr, &report, pid, &context);
}

/// System-wide mode: a glibc process and a jemalloc one (libjemalloc.so.2, which nothing had
/// mapped when alloctrace started, say) run side by side; each is exact on its own sites, and
/// the glibc one in its totals too. Both wait until alloctrace has had its chance to probe
/// jemalloc (it says so, or 3 s pass).
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn system_wide_glibc_and_jemalloc_side_by_side() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let report_path = scratch.path("report.json");
    let mut tracer = Running::spawn(&report_args(INTERVAL, &report_path, &[]), &[]);
    tracer.wait_until_tracing();
    let variants = [
        c("allocators", "glibc", Some("libc.so.6")),
        c("allocators_jemalloc", "jemalloc", Some("libjemalloc.so.2")),
    ];
    let truth_paths: Vec<PathBuf> = ["glibc", "jemalloc"]
        .iter()
        .map(|n| scratch.path(&format!("{n}.truth")))
        .collect();
    let mut workloads: Vec<Workload> = variants
        .iter()
        .zip(&truth_paths)
        .map(|(v, t)| Workload::start(v.binary, &["wait"], &[("GROUND_TRUTH", t.as_os_str())]))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(3);
    while !tracer.stderr_text().contains("jemalloc") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for w in &mut workloads {
        w.release();
    }
    for w in &mut workloads {
        w.wait_code(0);
    }
    // One drain after their ends, then the final report.
    std::thread::sleep(Duration::from_millis(600));
    tracer.signal(libc::SIGINT);
    let finished = tracer.wait(RUN_TIMEOUT);
    let context = finished.describe();
    let report = Report::read(&report_path, &context);
    for ((v, t), w) in variants.iter().zip(&truth_paths).zip(&workloads) {
        let truth = GroundTruth::read(t, &context);
        assert_eq!(truth.pid, w.pid());
        assert_sites_match(&report, &truth, &[]);
        if v.allocator == "glibc" {
            assert_process_matches(&report, &truth);
        }
        assert_sites_are_program_functions(&report, truth.pid);
        assert_allocator(&report, truth.pid, v, &workload(v.binary));
    }
}

/// `execer` (glibc) traced with --pid allocates, then execs `allocators_musl_static wait`:
/// both programs' allocations are counted exactly under the one pid, and the report names
/// both allocators (no `unseen`). The new program waits until alloctrace has announced the
/// exec (by then it has probed the new program), as a program that runs a while after its
/// exec would give it time to.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn exec_from_glibc_into_static_musl_counts_both() {
    alloctrace_bin();
    let musl = workload("allocators_musl_static");
    let scratch = Scratch::new();
    let (before, after) = (scratch.path("before.txt"), scratch.path("after.txt"));
    let report_path = scratch.path("report.json");
    let mut w = Workload::start(
        "execer",
        &[musl.to_str().expect("UTF-8 workload path"), "wait"],
        &[
            ("GROUND_TRUTH", before.as_os_str()),
            ("AFTER_TRUTH", after.as_os_str()),
        ],
    );
    let mut tracer = Running::spawn(&pid_args(w.pid(), &report_path, &[]), &[]);
    tracer.wait_until_tracing();
    w.release();
    w.wait_for_line("exec");
    await_stderr(
        &tracer,
        &format!("alloctrace: pid {} executed {}", w.pid(), musl.display()),
    );
    w.release();
    w.wait_for_line("done");
    w.wait_code(0);
    let finished = tracer.wait(RUN_TIMEOUT);
    let context = format!("{}\n{}", finished.describe(), w.describe());
    finished.assert_code(0);
    let report = Report::read(&report_path, &context);
    let (before, after) = (
        GroundTruth::read(&before, &context),
        GroundTruth::read(&after, &context),
    );
    assert_eq!((before.pid, after.pid), (w.pid(), w.pid()), "{context}");
    let musl_counted = report.functions(w.pid()).contains_key("alloc_small");
    assert!(
        musl_counted,
        "nothing of the musl program was counted after the exec\n{}\n{context}",
        report.describe_sites(w.pid())
    );
    assert_sites_match(&report, &before, &[]);
    assert_sites_match(&report, &after, &[]);
    let mut want = before.total();
    want.add(&after.total());
    let got = report.process_counters(w.pid());
    assert_eq!(
        got,
        want,
        "process totals: expected both programs' sums\n{}\n{context}",
        report.describe_sites(w.pid())
    );
    let process = report.process(w.pid());
    assert!(process.get("unseen").is_none(), "{process}\n{context}");
    assert_sites_are_program_functions(&report, w.pid());
    let names: Vec<&str> = process["allocators"]
        .as_array()
        .map(|a| a.iter().filter_map(|u| u["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        names.contains(&"glibc") && names.contains(&"musl"),
        "allocators of pid {}: {names:?}, expected glibc and musl\n{process}",
        w.pid()
    );
}

/// `--mode alloc-only` on variant `v` in launch mode: every site's allocations, bytes and size
/// histogram exact, no free anywhere, live fields null; the process totals exact too where
/// nothing else allocates.
fn alloc_only_exact(v: &Variant) {
    alloctrace_bin();
    let run = launch_variant(v, &[OsStr::new("--mode"), OsStr::new("alloc-only")]);
    let (report, truth) = (&run.report, &run.truth);
    assert_eq!(report.json["mode"], "alloc_only", "{}", run.context);
    assert_counted_something(report, truth.pid, v, &run.context);
    // By frames[0].function: allocations, bytes, size histogram; and the sites that show
    // frees or live bytes (none may).
    let mut got: BTreeMap<String, (u64, u64, Vec<u64>)> = BTreeMap::new();
    let mut frees: BTreeMap<String, u64> = BTreeMap::new();
    for s in report.sites_of(truth.pid) {
        let name = Report::frame_function(s, 0)
            .unwrap_or(NO_FUNCTION)
            .to_string();
        let c = Counters::from_json(&s["counters"], "site");
        if c.frees > 0 || !s["live_bytes"].is_null() {
            frees.insert(name.clone(), c.frees);
        }
        let e = got.entry(name).or_insert((0, 0, vec![0; HIST_BUCKETS]));
        e.0 += c.allocs;
        e.1 += c.bytes;
        let hist = s["size_hist"].as_array().expect("size_hist");
        for (acc, n) in e.2.iter_mut().zip(hist) {
            *acc += n.as_u64().expect("a size_hist count");
        }
    }
    let mut problems = Vec::new();
    for want in &truth.sites {
        let (allocs, bytes, hist) =
            got.get(&want.function)
                .cloned()
                .unwrap_or((0, 0, vec![0; HIST_BUCKETS]));
        if (allocs, bytes) != (want.counters.allocs, want.counters.bytes)
            || hist != want.size_hist_vec()
        {
            problems.push(format!(
                "{}: expected {} allocations of {} bytes ({}), reported {allocs} of {bytes} ({})",
                want.function,
                want.counters.allocs,
                want.counters.bytes,
                hist_text(&want.size_hist_vec()),
                hist_text(&hist)
            ));
        }
    }
    if !frees.is_empty() {
        problems.push(format!(
            "sites with frees or live bytes in alloc-only mode: {frees:?}"
        ));
    }
    if v.quiet_start {
        let (p, t) = (report.process_counters(truth.pid), truth.total());
        if (p.allocs, p.bytes, p.frees) != (t.allocs, t.bytes, 0) {
            problems.push(format!(
                "process: expected {} allocations of {} bytes and no free, reported {} of {} and {} frees",
                t.allocs, t.bytes, p.allocs, p.bytes, p.frees
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} in alloc-only mode:\n  - {}\nground truth:\n{}\n{}\n{}",
        v.binary,
        problems.join("\n  - "),
        truth.text,
        report.describe_sites(truth.pid),
        run.context
    );
    assert_sites_are_program_functions(report, truth.pid);
    assert_nothing_lost(report);
    assert_allocator(report, truth.pid, v, &run.exe);
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn alloc_only_glibc() {
    alloc_only_exact(&c("allocators", "glibc", Some("libc.so.6")));
}

/// jemalloc's realloc(NULL, n) and aligned calls do not go through its exported malloc: each
/// is counted once, at the program's call.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn alloc_only_jemalloc() {
    alloc_only_exact(&Variant {
        quiet_start: false,
        ..c("allocators_jemalloc", "jemalloc", Some("libjemalloc.so.2"))
    });
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn alloc_only_mimalloc() {
    alloc_only_exact(&c(
        "allocators_mimalloc",
        "mimalloc",
        Some("libmimalloc.so.2"),
    ));
}
