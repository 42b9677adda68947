//! Leaks found at default options from the in-flight table's evidence: `workloads/leaks.c` (a
//! sub-second leaker with three leaking functions, a ring buffer and short-lived blocks; a
//! phase with a sleep for `--older`) and the demo's cache (`workloads/demo.c`, run as
//! `cargo xtask demo` runs it). Each site's live blocks equal the ground truth exactly.
//!
//! Privileged: run with `cargo xtask test -- leaks` (root, `ALLOCTRACE_BIN`).
use std::ffi::OsStr;
use std::sync::OnceLock;

use serde_json::Value;

use crate::support::*;

/// alloctrace's default `--interval`: these tests use default options.
const DEFAULT_INTERVAL: &str = "1s";

const LEAKERS: &[&str] = &["leak_records", "leak_strings", "leak_pages"];
const RING: &str = "ring_push";
const SCRATCH: &str = "short_lived_scratch";

// =============================================================================================
// The report's leak fields: every name the tests rely on is read here.
// =============================================================================================

/// The `live` object of `site` (its blocks never freed); panics when absent.
fn live(site: &Value) -> &Value {
    let l = &site["live"];
    assert!(
        l.is_object(),
        "site has no `live` object: {}",
        excerpt(&site.to_string(), 2000)
    );
    l
}

/// `live.blocks` and `live.bytes` summed over the sites of `pid` whose first frame is `f`.
fn live_of(r: &Report, pid: u32, f: &str) -> (u64, u64) {
    let sites = r.sites_in(pid, f);
    assert!(
        !sites.is_empty(),
        "no site of {f}:\n{}",
        r.describe_sites(pid)
    );
    sites.iter().fold((0, 0), |(n, b), s| {
        let l = live(s);
        (
            n + json_u64(&l["blocks"], "live.blocks"),
            b + json_u64(&l["bytes"], "live.bytes"),
        )
    })
}

/// `analysis.<key>[]`.
fn analysis_list<'a>(r: &'a Report, key: &str) -> &'a [Value] {
    r.json["analysis"][key].as_array().unwrap_or_else(|| {
        panic!(
            "analysis.{key} is not an array:\n{}",
            excerpt(&r.json["analysis"].to_string(), 4000)
        )
    })
}

/// The leak advice entries, by the function their site names.
fn leak_advice(r: &Report) -> Vec<(&str, &Value)> {
    analysis_list(r, "advice")
        .iter()
        .filter(|a| a["kind"].as_str() == Some("leak"))
        .map(|a| (a["site"].as_str().unwrap_or("<no site>"), a))
        .collect()
}

/// The leak candidate of function `f`, if any.
fn candidate<'a>(r: &'a Report, f: &str) -> Option<&'a Value> {
    analysis_list(r, "leaks")
        .iter()
        .find(|c| c["site"].as_str() == Some(f))
}

fn pretty(v: &[(&str, &Value)]) -> String {
    v.iter()
        .map(|(f, a)| format!("{f}: {}", a["evidence"]))
        .collect::<Vec<_>>()
        .join("\n")
}

// =============================================================================================
// leaks.c at default options
// =============================================================================================

fn leaks_run() -> &'static Launched {
    static RUN: OnceLock<Launched> = OnceLock::new();
    RUN.get_or_init(|| {
        let run = launch_every(DEFAULT_INTERVAL, "leaks", &[], &[], Scratch::new());
        run.finished.assert_code(0);
        assert_sites_match(&run.report, &run.truth, &[]);
        run
    })
}

#[test]
#[ignore = "needs root and BPF: cargo xtask test"]
fn live_blocks_per_site_equal_the_ground_truth() {
    alloctrace_bin();
    let run = leaks_run();
    for f in LEAKERS.iter().chain(&[RING, SCRATCH]) {
        let want = run.truth.site(f).counters;
        let got = live_of(&run.report, run.truth.pid, f);
        assert_eq!(
            got,
            (want.live_objects(), want.live_bytes()),
            "{f}: live blocks/bytes read from the in-flight table vs the ground truth\n{}",
            run.truth.text
        );
    }
    // Leaked all along: the oldest block is about as old as the run, ages are told.
    let duration = run.report.json["duration"].as_f64().expect("duration");
    for f in LEAKERS {
        let sites = run.report.sites_in(run.truth.pid, f);
        let l = live(sites[0]);
        let oldest = json_u64(&l["oldest_ns"], "live.oldest_ns") as f64 / 1e9;
        let median = json_u64(&l["median_ns"], "live.median_ns") as f64 / 1e9;
        assert!(
            oldest > 0.5 * duration && oldest <= duration + 0.5 && median < oldest,
            "{f}: oldest {oldest:.3}s, median {median:.3}s in a {duration:.2}s run: {l}"
        );
        let in_hist: u64 = l["age_hist"]
            .as_array()
            .expect("age_hist")
            .iter()
            .map(|n| n.as_u64().unwrap())
            .sum();
        assert_eq!(in_hist, json_u64(&l["blocks"], "live.blocks"), "{f}: {l}");
    }
}

#[test]
#[ignore = "needs root and BPF: cargo xtask test"]
fn leak_advice_for_exactly_the_leaking_functions() {
    alloctrace_bin();
    let run = leaks_run();
    let advice = leak_advice(&run.report);
    let mut advised: Vec<&str> = advice.iter().map(|(f, _)| *f).collect();
    advised.sort_unstable();
    let mut want = LEAKERS.to_vec();
    want.sort_unstable();
    assert_eq!(
        advised,
        want,
        "leak advice must name exactly the leaking functions (not {RING}'s working set, \
         not {SCRATCH}):\n{}",
        pretty(&advice)
    );
    for (f, a) in &advice {
        assert_eq!(
            a["confidence"].as_str(),
            Some("high"),
            "{f}: never freed while allocating all run long: {a}"
        );
        let truth = run.truth.site(f).counters;
        let evidence = a["evidence"].as_str().unwrap_or_default();
        assert!(
            evidence.contains("allocated throughout the run")
                && evidence.contains(&format!("0 of {}", fmt_count(truth.allocs))),
            "{f}: the evidence names the blocks never freed and when they were allocated: \
             {evidence}"
        );
        let c = candidate(&run.report, f).expect("a leak candidate for each advice");
        assert_eq!(c["throughout"], Value::Bool(true), "{f}: {c}");
        assert_eq!(
            json_u64(&c["live_blocks"], "live_blocks"),
            truth.live_objects(),
            "{f}: {c}"
        );
    }
    // The ring buffer frees as it allocates: no candidate at all, nor the scratch blocks.
    for f in [RING, SCRATCH] {
        assert!(
            candidate(&run.report, f).is_none(),
            "{f} is no leak candidate: {}",
            candidate(&run.report, f).unwrap()
        );
    }
}

/// `fmt_count` as the report writes counts (`36.0k`).
fn fmt_count(n: u64) -> String {
    if n < 1000 {
        n.to_string()
    } else {
        format!("{:.1}k", n as f64 / 1000.0)
    }
}

// =============================================================================================
// --older
// =============================================================================================

#[test]
#[ignore = "needs root and BPF: cargo xtask test"]
fn older_counts_only_the_blocks_older_than_it() {
    alloctrace_bin();
    let run = launch_every(
        DEFAULT_INTERVAL,
        "leaks",
        &["older"],
        &[OsStr::new("--older"), OsStr::new("1s")],
        Scratch::new(),
    );
    run.finished.assert_code(0);
    assert_sites_match(&run.report, &run.truth, &[]);
    let pid = run.truth.pid;
    let older = |f: &str| {
        let sites = run.report.sites_in(pid, f);
        let o = &live(sites[0])["older"];
        assert_eq!(o["than"].as_f64(), Some(1.0), "{f}: {o}");
        (
            json_u64(&o["blocks"], "older.blocks"),
            json_u64(&o["bytes"], "older.bytes"),
        )
    };
    let before = run.truth.site("leak_before_sleep").counters;
    let after = run.truth.site("leak_after_sleep").counters;
    // Allocated before a 2 s sleep: every block older than 1 s; after it: none.
    assert_eq!(
        older("leak_before_sleep"),
        (before.live_objects(), before.live_bytes())
    );
    assert_eq!(older("leak_after_sleep"), (0, 0));
    assert_eq!(
        live_of(&run.report, pid, "leak_after_sleep"),
        (after.live_objects(), after.live_bytes())
    );
    assert_eq!(
        run.report.json["analysis"]["options"]["older"].as_f64(),
        Some(1.0)
    );
}

#[test]
#[ignore = "needs root and BPF: cargo xtask test"]
fn older_in_the_text_report_lists_only_old_blocks() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let truth = scratch.path("truth.txt");
    let mut args: Vec<std::ffi::OsString> = vec!["--older".into(), "1s".into(), "--".into()];
    args.push(workload("leaks").into());
    args.push("older".into());
    let run = run_alloctrace(&args, &[("GROUND_TRUTH", truth.as_os_str())]);
    run.assert_code(0);
    let text = &run.stdout;
    let section = text
        .find("Blocks never freed older than 1.0 s")
        .map(|i| &text[i..])
        .unwrap_or_else(|| panic!("no --older section:\n{}", run.describe()));
    let section = &section[..section.find("\n\n").unwrap_or(section.len())];
    assert!(
        section.contains("leak_before_sleep") && !section.contains("leak_after_sleep"),
        "only the blocks allocated before the sleep are older than 1 s:\n{section}"
    );
    assert!(section.contains("of 600 blocks"), "{section}");
}

// =============================================================================================
// The demo
// =============================================================================================

#[test]
#[ignore = "needs root and BPF: cargo xtask test"]
fn demo_cache_gets_leak_advice() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let report = scratch.path("report.json");
    // As `cargo xtask demo` runs it (its 200 ms interval), with a JSON report.
    let mut args = report_args("200ms", &report, &[]);
    args.push("--".into());
    args.push(workload("demo").into());
    let run = run_alloctrace(&args, &[]);
    run.assert_code(0);
    assert!(
        run.stderr
            .contains("demo: leaky_cache_insert allocs=500 bytes=64000 frees=0"),
        "the demo's ground truth:\n{}",
        run.describe()
    );
    let r = Report::read(&report, &run.describe());
    let pid = json_u64(&r.processes()[0]["pid"], "pid") as u32;
    assert_eq!(live_of(&r, pid, "leaky_cache_insert"), (500, 64_000));
    let advice = leak_advice(&r);
    let advised: Vec<&str> = advice.iter().map(|(f, _)| *f).collect();
    assert_eq!(
        advised,
        ["leaky_cache_insert"],
        "the demo leaks from its cache alone:\n{}",
        pretty(&advice)
    );
    let evidence = advice[0].1["evidence"].as_str().unwrap_or_default();
    assert!(
        evidence.starts_with("500 blocks (62.5 KiB) never freed, 0 of 500 allocations freed"),
        "{evidence}"
    );
}

// =============================================================================================
// System-wide: a process that exited before the end
// =============================================================================================

/// System-wide, a process exits holding 1,500 blocks and is retired from the kernel's tables
/// (its blocks swept from the in-flight table) long before the run ends: the report still
/// gives its site those blocks, read as they were swept, not at the end.
#[test]
#[ignore = "needs root and BPF: cargo xtask test"]
fn retired_processes_keep_their_live_blocks() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let report_path = scratch.path("report.json");
    let args = report_args("100ms", &report_path, &[OsStr::new("-vv")]);
    let mut tracer = Running::spawn(&args, &[]);
    tracer.wait_until_tracing();
    let truth_path = scratch.path("fill.truth");
    let child = spawn_workload("fill", &["leak", "1500"], &truth_path);
    let truth = finish_workload("fill", child, &truth_path);
    await_stderr(
        &tracer,
        &format!("blocks of exited process {} dropped", truth.pid),
    );
    // Well after the sweep: the blocks' read time must be the sweep's, not the end's.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    tracer.signal(libc::SIGINT);
    let finished = tracer.wait(RUN_TIMEOUT);
    finished.assert_code(128 + libc::SIGINT);
    let report = Report::read(&report_path, &finished.describe());
    assert_sites_match(&report, &truth, &[]);
    let want = truth.site("hold_alloc").counters;
    assert_eq!(
        live_of(&report, truth.pid, "hold_alloc"),
        (want.live_objects(), want.live_bytes()),
        "{}",
        report.describe_sites(truth.pid)
    );
    let sites = report.sites_in(truth.pid, "hold_alloc");
    let at = live(sites[0])["at"].as_f64().expect("live.at");
    let duration = report.json["duration"].as_f64().expect("duration");
    assert!(
        at < duration - 1.0,
        "read when swept at {at:.2}s, not at the end ({duration:.2}s)"
    );
}
