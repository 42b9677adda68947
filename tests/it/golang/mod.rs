//! Go programs (tests/go-workloads, built by build.rs with the system's `go`): every heap
//! allocation (`runtime.mallocgc` call) of a named `//go:noinline` function counted exactly,
//! allocations and bytes, against the program's own ground truth; launch and `--pid` mode;
//! goroutines on several threads; stack growth (the probe's morestack pass not counted twice);
//! the program's own output intact.
//!
//! Privileged: run with `cargo xtask test` (root, `ALLOCTRACE_BIN`, `--include-ignored`).
use std::collections::BTreeMap;
use std::ffi::OsStr;

use crate::support::*;

/// What the program says once its goroutines, stack growth and GC are done.
const DONE: &str = "goroutines done, stack growth done, gc cycles ";

/// Each ground-truth function's totals in the report: every site of `pid` summed under its
/// innermost frame outside the Go runtime (`runtime.newobject`, `runtime.makeslice`,
/// `runtime.concatstring2`... between it and mallocgc are the allocator's), when that frame is
/// one of `functions`. Allocations the runtime makes inside mallocgc itself are left out.
fn by_function(
    report: &Report,
    pid: u32,
    functions: &[&str],
) -> BTreeMap<String, (u64, u64, Vec<u64>)> {
    let mut out: BTreeMap<String, (u64, u64, Vec<u64>)> = BTreeMap::new();
    for s in report.sites_of(pid) {
        let names = Report::frame_names(s);
        // Made by the runtime inside an allocation (a GC assist's own bookkeeping, under
        // runtime.mallocgc): the runtime's, not the program's request.
        if names.iter().any(|n| n == "runtime.mallocgc") {
            continue;
        }
        let Some(f) = names
            .iter()
            .find(|n| !n.starts_with("runtime."))
            .filter(|n| functions.contains(&n.as_str()))
        else {
            continue;
        };
        let c = Counters::from_json(&s["counters"], "site");
        let e = out
            .entry(f.clone())
            .or_insert_with(|| (0, 0, vec![0; HIST_BUCKETS]));
        e.0 += c.allocs;
        e.1 += c.bytes;
        for (acc, v) in
            e.2.iter_mut()
                .zip(s["size_hist"].as_array().expect("size_hist"))
        {
            *acc += v.as_u64().expect("a count");
        }
    }
    out
}

/// Every function of the ground truth has exactly its allocations, bytes and sizes, and no
/// free is claimed for the process.
fn assert_go_exact(report: &Report, truth: &GroundTruth, context: &str) {
    let functions: Vec<&str> = truth.sites.iter().map(|s| s.function.as_str()).collect();
    let got = by_function(report, truth.pid, &functions);
    let mut problems = Vec::new();
    for want in &truth.sites {
        let g = got.get(&want.function);
        let g = g.map_or((0, 0, vec![0; HIST_BUCKETS]), |g| g.clone());
        let w = (
            want.counters.allocs,
            want.counters.bytes,
            want.size_hist_vec(),
        );
        if g != w {
            problems.push(format!(
                "{}: expected {} allocs, {} bytes, sizes {}; reported {} allocs, {} bytes, \
                 sizes {}",
                want.function,
                w.0,
                w.1,
                hist_text(&w.2),
                g.0,
                g.1,
                hist_text(&g.2)
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n{}\n{context}",
        problems.join("\n"),
        report.describe_sites(truth.pid)
    );
    assert_eq!(
        report.json["mode"], "alloc_only",
        "a Go target is traced alloc-only"
    );
    let p = report.process_counters(truth.pid);
    assert_eq!(
        (p.frees, p.freed_bytes),
        (0, 0),
        "no free is claimed\n{context}"
    );
}

fn launch_go(name: &str, args: &[&str], extra: &[&OsStr]) -> Launched {
    alloctrace_bin();
    let run = launch(name, args, extra, Scratch::new());
    run.finished.assert_code(0);
    assert!(
        run.finished.stdout.contains(DONE),
        "the Go program's own output is not intact\n{}",
        run.finished.describe()
    );
    run
}

/// Launch mode: each function's allocations and bytes exact; goroutines; stack growth.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn launched_go_program_is_exact_per_function() {
    let run = launch_go("go_alloc", &[], &[]);
    assert_go_exact(&run.report, &run.truth, &run.finished.describe());
}

/// The GC cycles counted (runtime.gcMarkTermination's probe) equal the program's own
/// runtime.ReadMemStats NumGC (several cycles: its churn starts some, runtime.GC one more),
/// with the times of the first and the last in the report.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn go_gc_cycles_match_the_programs_numgc() {
    let run = launch_go("go_alloc", &["threads"], &[]);
    let context = run.finished.describe();
    let numgc: u64 = run
        .finished
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix(DONE))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("the program printed no NumGC\n{context}"));
    assert!(
        numgc >= 2,
        "the churn started no GC cycle: {numgc}\n{context}"
    );
    let process = run.report.process(run.truth.pid);
    assert_eq!(
        process["go"]["gc_cycles"].as_u64(),
        Some(numgc),
        "GC cycles: the report's against the program's NumGC\n{process}\n{context}"
    );
    let first = process["go"]["first_gc"].as_f64().expect("first_gc");
    let last = process["go"]["last_gc"].as_f64().expect("last_gc");
    assert!(0.0 < first && first <= last, "{process}");
}

/// Goroutines on 4 OS threads (GOMAXPROCS 4, 8 goroutines): still exact.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn go_goroutines_on_several_threads_are_exact() {
    let run = launch_go("go_alloc", &["threads"], &[]);
    assert_go_exact(&run.report, &run.truth, &run.finished.describe());
}

/// A running Go program traced with --pid: exact, and it goes on to its normal end.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn go_program_by_pid_is_exact() {
    alloctrace_bin();
    let run = attach(INTERVAL, "go_alloc", &["wait"], &[], Scratch::new());
    assert_go_exact(&run.report, &run.truth, &run.context);
}

/// Stripped with `-ldflags='-s -w'` (no .symtab, no DWARF), as an executable and as a
/// position-independent one: mallocgc is found and the frames named through the Go function
/// table (.gopclntab, .data.rel.ro.gopclntab in the PIE): exact per function.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn stripped_go_program_is_exact_per_function() {
    for name in ["go_alloc_stripped", "go_alloc_pie_stripped"] {
        let exe = workload(name);
        let symtab = std::process::Command::new("readelf")
            .args(["-S", "-W"])
            .arg(&exe)
            .output()
            .expect("readelf");
        let sections = String::from_utf8_lossy(&symtab.stdout);
        assert!(
            !sections.contains(".symtab") && sections.contains("gopclntab"),
            "{name} is not stripped as the test needs:\n{sections}"
        );
        let run = launch_go(name, &[], &[]);
        assert_go_exact(&run.report, &run.truth, &run.finished.describe());
    }
}

/// A cgo program: Go's allocations (mallocgc) and C's (glibc's malloc, from C code in the
/// binary) each counted once, exactly, and both allocators named for the process.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn cgo_program_counts_go_and_c_allocations_once_each() {
    alloctrace_bin();
    let run = launch("go_cgo", &[], &[], Scratch::new());
    run.finished.assert_code(0);
    let context = run.finished.describe();
    assert!(run.finished.stdout.contains("cgo done"), "{context}");
    assert_go_exact(&run.report, &run.truth, &context);
    let process = run.report.process(run.truth.pid);
    let names: Vec<&str> = process["allocators"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        names.contains(&"go") && names.contains(&"glibc"),
        "the process's allocators are {names:?}, not go and glibc\n{context}"
    );
}

/// The `requests` a client run made, through `go_http client ADDR N`; panics unless every
/// answer was right.
fn http_client(addr: &str, requests: u32) {
    let out = std::process::Command::new(workload("go_http"))
        .args(["client", addr, &requests.to_string()])
        .output()
        .expect("the Go client starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("client done {requests}")),
        "the Go client failed ({}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A net/http server under load from a Go client, traced with --pid: the handler's allocations
/// exact for the requests made while traced; after alloctrace stops (SIGINT) the server goes on
/// answering every request correctly, and ends normally.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn go_http_server_by_pid_is_exact_and_keeps_serving() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let (truth_path, report_path) = (scratch.path("truth.txt"), scratch.path("report.json"));
    let addr_path = scratch.path("addr.txt");
    let mut server = Workload::start(
        "go_http",
        &["serve"],
        &[
            ("GROUND_TRUTH", truth_path.as_os_str()),
            ("GO_HTTP_ADDR", addr_path.as_os_str()),
        ],
    );
    let addr = std::fs::read_to_string(&addr_path).expect("the server wrote its address");
    // Before tracing: not counted.
    http_client(&addr, 100);
    let mut tracer = Running::spawn(&pid_args(server.pid(), &report_path, &[]), &[]);
    tracer.wait_until_tracing();
    http_client(&addr, 400);
    tracer.signal(libc::SIGINT);
    let finished = tracer.wait(RUN_TIMEOUT);
    // Stopped by SIGINT, as the shell's convention says (128 + 2), with its report.
    finished.assert_code(130);
    // After: the server is intact.
    http_client(&addr, 200);
    server.close_stdin();
    server.wait_for_line("served 700");
    server.wait_code(0);
    let context = format!("{}\n{}", finished.describe(), server.describe());
    let report = Report::read(&report_path, &context);
    let got = by_function(&report, server.pid(), &["main.handleWork"]);
    let mut hist = vec![0; HIST_BUCKETS];
    hist[10] = 400;
    assert_eq!(
        got.get("main.handleWork"),
        Some(&(400, 400_000, hist)),
        "main.handleWork during the trace: 400 requests of one 1000-byte buffer\n{}\n{context}",
        report.describe_sites(server.pid())
    );
}

/// Every output of a Go run: `go tool pprof -top` on the pprof profile lists the program's
/// functions with their exact counts, as Go's own `allocs` profile does (the runtime's frames
/// hidden); the folded stacks end in the runtime's allocation frame with the exact bytes; the
/// HTML page names the functions.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn go_outputs_read_like_gos_own_profiles() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let (pprof, folded, html) = (
        scratch.path("go.pb.gz"),
        scratch.path("go.folded"),
        scratch.path("go.html"),
    );
    let extra = [
        OsStr::new("--pprof"),
        pprof.as_os_str(),
        OsStr::new("--folded"),
        folded.as_os_str(),
        OsStr::new("--html"),
        html.as_os_str(),
    ];
    let run = launch("go_alloc", &[], &extra, scratch);
    run.finished.assert_code(0);
    let context = run.finished.describe();
    let top = std::process::Command::new("go")
        .args([
            "tool",
            "pprof",
            "-top",
            "-sample_index=alloc_objects",
            "-nodecount=100",
        ])
        .arg(&pprof)
        .output()
        .expect("go tool pprof runs");
    let top = String::from_utf8_lossy(&top.stdout);
    let flat = |function: &str| {
        top.lines().find_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            (words.last() == Some(&function)).then(|| words[0].to_string())
        })
    };
    // Both run before the first GC cycle can start (no assist inside their mallocgc calls).
    for (function, allocs) in [("main.allocNodes", "1000"), ("main.allocInts", "200")] {
        assert_eq!(
            flat(function).as_deref(),
            Some(allocs),
            "go tool pprof -top: {function}\n{top}\n{context}"
        );
    }
    assert!(
        !top.contains("runtime.newobject"),
        "the runtime's allocation frames are shown as leaves\n{top}"
    );
    let folded = std::fs::read_to_string(&folded).expect("folded stacks written");
    assert!(
        folded
            .lines()
            .any(|l| l.ends_with("main.allocNodes;runtime.newobject 32000")),
        "{folded}"
    );
    let html = std::fs::read_to_string(&html).expect("HTML written");
    assert!(
        html.contains("main.allocBytes"),
        "the HTML page names no Go function"
    );
}

/// System-wide, alloc-only: a Go process running when alloctrace starts is traced exactly.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn system_wide_alloc_only_traces_a_go_process_exactly() {
    let extra = [
        OsStr::new("--mode"),
        OsStr::new("alloc-only"),
        OsStr::new("--duration"),
        OsStr::new("5s"),
    ];
    let mut run = system_wide_go(&extra);
    run.workload.wait_for_line(DONE);
    let truth = GroundTruth::read(&run.scratch.path(TRUTH_FILE), &run.context);
    assert_go_exact(&run.report, &truth, &run.context);
}

/// System-wide in full mode, a Go runtime is left out and said so (its allocations would all
/// look live: Go frees by collection), never counted with live bytes it does not have.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn system_wide_full_mode_leaves_go_out_and_says_so() {
    let run = system_wide_go(&[OsStr::new("--duration"), OsStr::new("3s")]);
    assert!(
        run.finished
            .stderr
            .lines()
            .any(|l| l.contains("go_alloc runs Go") && l.contains("--mode alloc-only")),
        "no line says the Go process is left out of a full trace\n{}",
        run.context
    );
    assert!(
        run.report.sites_of(run.workload.pid()).is_empty(),
        "the Go process has sites in a full trace\n{}",
        run.context
    );
}

/// A system-wide run: go_alloc (`wait`) started first, then alloctrace with `--interval 250ms
/// --report json -o REPORT EXTRA` and no target; go_alloc released once alloctrace traces and
/// run to its exit code 0, then alloctrace to its own end (exit code 0).
struct SystemWide {
    finished: Finished,
    workload: Workload,
    report: Report,
    /// alloctrace's run and the workload's output, for failure messages.
    context: String,
    /// Holds the report and the ground truth ([`TRUTH_FILE`]).
    scratch: Scratch,
}

fn system_wide_go(extra: &[&OsStr]) -> SystemWide {
    alloctrace_bin();
    let scratch = Scratch::new();
    let (truth_path, report_path) = (scratch.path(TRUTH_FILE), scratch.path("report.json"));
    let mut workload = Workload::start(
        "go_alloc",
        &["wait"],
        &[("GROUND_TRUTH", truth_path.as_os_str())],
    );
    let (finished, context) =
        trace_released(&mut workload, &report_args(INTERVAL, &report_path, extra));
    let report = Report::read(&report_path, &context);
    SystemWide {
        finished,
        workload,
        report,
        context,
        scratch,
    }
}

/// A full trace of a C program that executes a Go program: the Go program is marked unseen
/// with the reason (never counted with every allocation looking live); the program itself runs
/// to its normal end.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn exec_into_go_in_full_mode_is_marked_unseen() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let report_path = scratch.path("report.json");
    let script = format!("exec {}", workload("go_alloc").display());
    let mut args = report_args(INTERVAL, &report_path, &[]);
    args.extend(["--", "/bin/sh", "-c", &script].map(Into::into));
    let finished = run_alloctrace(&args, &[]);
    finished.assert_code(0);
    let context = finished.describe();
    assert!(finished.stdout.contains(DONE), "{context}");
    let report = Report::read(&report_path, &context);
    let reasons: Vec<String> = report
        .processes()
        .iter()
        .filter_map(|p| p["unseen"]["reason"].as_str().map(str::to_string))
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("runs Go") && r.contains("--mode alloc-only")),
        "no process is marked unseen for running Go: {reasons:?}\n{context}"
    );
}
