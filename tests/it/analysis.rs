//! The analyses of the report (patterns, lifetimes, advice) and `alloctrace compare`, checked
//! against `workloads/phases.c` at default options: the guide's three phases (small frequent,
//! large infrequent, bursts) from three named functions, one after the other, and a leak
//! growing all along.
//!
//! Privileged: run with `cargo xtask test` (root, `ALLOCTRACE_BIN`, `--include-ignored`),
//! except `workload_halves_every_count`, which runs the workload untraced.
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use crate::support::*;

// =============================================================================================
// The `analysis` part of the JSON report: every field name the tests rely on is read here, and
// only here, so that a renamed field is a one-line change.
// =============================================================================================

/// The top-level `analysis` object.
fn analysis(r: &Report) -> &Value {
    let a = &r.json["analysis"];
    assert!(
        a.is_object(),
        "the report has no `analysis` object (got {a}):\n{}",
        excerpt(&r.text, 3000)
    );
    a
}

/// `analysis.<key>` as an array.
fn analysis_list<'a>(r: &'a Report, key: &str) -> &'a [Value] {
    let v = &analysis(r)[key];
    v.as_array().unwrap_or_else(|| {
        panic!(
            "report field analysis.{key} is {}, not an array:\n{}",
            excerpt(&v.to_string(), 2000),
            excerpt(&analysis(r).to_string(), 4000)
        )
    })
}

/// One entry per site: `analysis.patterns[]`.
pub(crate) fn patterns(r: &Report) -> &[Value] {
    analysis_list(r, "patterns")
}

/// A pattern's class: `small_frequent`, `large_infrequent`, `burst`, `growing` or `steady`.
pub(crate) fn pattern_class(p: &Value) -> Option<&str> {
    p["class"].as_str()
}

/// Per-site lifetimes: `analysis.lifetimes[]`.
fn lifetimes(r: &Report) -> &[Value] {
    analysis_list(r, "lifetimes")
}

/// The share (0..1) of a site's freed blocks that died within the short-lived threshold.
fn short_lived_share(l: &Value) -> Option<f64> {
    l["short_lived_share"].as_f64()
}

/// `analysis.advice[]`.
fn advice(r: &Report) -> &[Value] {
    analysis_list(r, "advice")
}

/// An advice's kind: `pool`, `presize`, `large_churn` or `leak`.
fn advice_kind(a: &Value) -> Option<&str> {
    a["kind"].as_str()
}

/// Whether a pattern, lifetime or advice entry is about the site whose first frame is the
/// function `f`: its `function` or `site` field names `f` (`site` may also be an object with
/// a `function` or `frames`), or its own `frames[0].function` is `f`.
pub(crate) fn is_about(entry: &Value, f: &str) -> bool {
    let site = &entry["site"];
    [
        &entry["function"],
        site,
        &site["function"],
        &site["frames"][0]["function"],
        &entry["frames"][0]["function"],
    ]
    .iter()
    .any(|v| v.as_str() == Some(f))
}

// =============================================================================================
// The workload
// =============================================================================================

const SMALL: &str = "small_frequent_phase";
const LARGE: &str = "large_infrequent_phase";
const BURST: &str = "burst_phase";
const LEAK: &str = "leaky_growth";
/// Every allocating function of phases.c.
const FUNCTIONS: &[&str] = &[SMALL, LARGE, BURST, LEAK];

/// The default interval: the analyses read the drains every --resolution (20 ms by default),
/// whatever the interval (they once needed --interval 200ms to see each phase at all).
const PHASE_INTERVAL: &str = "1s";

/// `phases ARGS` under alloctrace at default options (`--interval 1s` is the default);
/// asserts it exited 0 and counted every site exactly (the analyses are only as good as the
/// counts).
fn run_phases(args: &[&str]) -> Launched {
    let run = launch_every(PHASE_INTERVAL, "phases", args, &[], Scratch::new());
    run.finished.assert_code(0);
    assert_sites_match(&run.report, &run.truth, &[]);
    run
}

/// The report and ground truth of one full run, shared by the tests that only read them (its
/// scratch directory is dropped: a static is never dropped, and would leave it behind).
struct FullRun {
    report: Report,
    truth: GroundTruth,
}

fn full_run() -> &'static FullRun {
    static RUN: OnceLock<FullRun> = OnceLock::new();
    RUN.get_or_init(|| {
        let run = run_phases(&[]);
        FullRun {
            report: run.report,
            truth: run.truth,
        }
    })
}

/// The entries of `list` about function `f`; panics listing `list` when there are none.
pub(crate) fn entries_about<'a>(list: &'a [Value], f: &str, what: &str) -> Vec<&'a Value> {
    let found: Vec<&Value> = list.iter().filter(|e| is_about(e, f)).collect();
    assert!(
        !found.is_empty(),
        "no {what} entry is about {f}:\n{}",
        excerpt(&Value::from(list.to_vec()).to_string(), 6000)
    );
    found
}

pub(crate) fn pretty(entries: &[&Value]) -> String {
    entries
        .iter()
        .map(|e| excerpt(&e.to_string(), 1500))
        .collect::<Vec<_>>()
        .join("\n")
}

// =============================================================================================
// Tests
// =============================================================================================

/// Untraced: phases.c writes a ground truth, and `half` halves every count exactly (what the
/// compare test's "2.0x fewer" rests on).
#[test]
fn workload_halves_every_count() {
    let scratch = Scratch::new();
    let run = |args: &[&str]| {
        let path = scratch.path(&format!("truth{}.txt", args.len()));
        let status = Command::new(workload("phases"))
            .args(args)
            .env("GROUND_TRUTH", &path)
            .status()
            .expect("start phases");
        assert!(status.success(), "phases {args:?} exited with {status}");
        GroundTruth::read(&path, "phases")
    };
    let (full, half) = std::thread::scope(|s| {
        let full = s.spawn(|| run(&[]));
        let half = s.spawn(|| run(&["half"]));
        (full.join().unwrap(), half.join().unwrap())
    });
    for f in FUNCTIONS {
        let (a, b) = (full.site(f).counters, half.site(f).counters);
        assert!(a.allocs > 0, "{f} allocates nothing:\n{}", full.text);
        assert_eq!(
            (a.allocs, a.bytes, a.frees, a.freed_bytes),
            (2 * b.allocs, 2 * b.bytes, 2 * b.frees, 2 * b.freed_bytes),
            "{f}: `half` does not halve every count:\n{}\n{}",
            full.text,
            half.text
        );
    }
    assert_eq!(full.site(LEAK).counters.frees, 0, "leaky_growth frees");
    let bad = Command::new(workload("phases"))
        .arg("third")
        .stderr(std::process::Stdio::null())
        .status()
        .expect("start phases");
    assert_eq!(bad.code(), Some(2), "phases with a bad argument");
}

/// Each phase's site gets its phase's class, and the leak is `growing`.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn each_phase_gets_its_class() {
    alloctrace_bin();
    let run = full_run();
    let mut problems = Vec::new();
    for (f, want) in [
        (SMALL, "small_frequent"),
        (LARGE, "large_infrequent"),
        (BURST, "burst"),
        (LEAK, "growing"),
    ] {
        let found = entries_about(patterns(&run.report), f, "analysis.patterns");
        let classes: Vec<Option<&str>> = found.iter().map(|p| pattern_class(p)).collect();
        if classes.iter().any(|c| *c != Some(want)) {
            problems.push(format!(
                "{f}: expected class {want}, got {classes:?}:\n{}",
                pretty(&found)
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "misclassified sites:\n  - {}\n\n{}",
        problems.join("\n  - "),
        run.report.describe_sites(run.truth.pid)
    );
}

/// The site whose blocks die at once (small_frequent_phase frees each block right after
/// allocating it) shows as short-lived and gets a pool suggestion.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn short_lived_site_gets_a_pool_suggestion() {
    alloctrace_bin();
    let run = full_run();
    for l in entries_about(lifetimes(&run.report), SMALL, "analysis.lifetimes") {
        let share = short_lived_share(l)
            .unwrap_or_else(|| panic!("{SMALL}'s lifetimes have no short-lived share:\n{l}"));
        assert!(
            (0.9..=1.0).contains(&share),
            "{SMALL} frees every block at once: its short-lived share must be at least 0.9:\n{l}"
        );
    }
    let kinds = advice_kinds(&run.report);
    assert!(
        kinds.get(SMALL).is_some_and(|k| k.contains(&"pool")),
        "no pool advice for {SMALL}; advice by function: {kinds:?}\n{}",
        excerpt(&Value::from(advice(&run.report).to_vec()).to_string(), 6000)
    );
}

/// The leak is growing and gets leak advice.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn leak_is_flagged() {
    alloctrace_bin();
    let run = full_run();
    let found = entries_about(patterns(&run.report), LEAK, "analysis.patterns");
    assert!(
        found.iter().all(|p| pattern_class(p) == Some("growing")),
        "{LEAK} never frees and allocates all run long: it must be growing:\n{}",
        pretty(&found)
    );
    let kinds = advice_kinds(&run.report);
    assert!(
        kinds.get(LEAK).is_some_and(|k| k.contains(&"leak")),
        "no leak advice for {LEAK}; advice by function: {kinds:?}\n{}",
        excerpt(&Value::from(advice(&run.report).to_vec()).to_string(), 6000)
    );
    // No advice without evidence: nothing suggests that the large buffers or the leak be pooled.
    for f in [LARGE, LEAK] {
        assert!(
            !kinds.get(f).is_some_and(|k| k.contains(&"pool")),
            "{f} is no pool candidate; advice by function: {kinds:?}"
        );
    }
}

/// The kinds of advice given for each of the workload's functions.
fn advice_kinds(r: &Report) -> BTreeMap<&'static str, Vec<&str>> {
    let mut out: BTreeMap<&'static str, Vec<&str>> = BTreeMap::new();
    for a in advice(r) {
        for f in FUNCTIONS {
            if is_about(a, f) {
                out.entry(*f)
                    .or_default()
                    .push(advice_kind(a).unwrap_or("<no kind>"));
            }
        }
    }
    out
}

// =============================================================================================
// compare
// =============================================================================================

/// The indented lines under the first line of `text` (trimmed) for which `title` holds.
fn block_under(text: &str, title: impl Fn(&str) -> bool) -> Option<Vec<&str>> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut lines = text.lines();
    let head = lines.find(|l| title(l.trim()))?;
    Some(
        lines
            .take_while(|l| !l.trim().is_empty() && indent(l) > indent(head))
            .map(str::trim)
            .collect(),
    )
}

/// The `allocations: ...` line of a block of `compare`'s output.
fn allocations_line<'a>(block: &[&'a str]) -> Option<&'a str> {
    block
        .iter()
        .copied()
        .find(|l| l.starts_with("allocations:"))
}

/// `compare FULL.json HALF.json` says 2.0x fewer allocations (and bytes), in total and for
/// every site of phases.c: `half` halves every count exactly.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn compare_sees_half_the_allocations() {
    alloctrace_bin();
    let full = full_run();
    let half = run_phases(&["half"]);
    let paths = [
        half.scratch.path("full.json"),
        half.scratch.path("report.json"),
    ];
    std::fs::write(&paths[0], &full.report.text)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", paths[0].display()));
    let out = run_alloctrace(
        &[
            OsStr::new("compare"),
            paths[0].as_os_str(),
            paths[1].as_os_str(),
        ],
        &[],
    );
    out.assert_code(0);
    let text = &out.stdout;
    let mut problems = Vec::new();
    let total = block_under(text, |l| l == "total:").unwrap_or_default();
    for (label, want) in [("allocations", "2.0x fewer"), ("bytes", "2.0x less")] {
        let line = total.iter().find(|l| l.starts_with(&format!("{label}:")));
        if !line.is_some_and(|l| l.starts_with(&format!("{label}: {want} "))) {
            problems.push(format!("total {label}: expected {want}, got {line:?}"));
        }
    }
    for f in FUNCTIONS {
        let block = block_under(text, |l| l == *f || l.starts_with(&format!("{f} <- ")));
        let line = block.as_deref().and_then(allocations_line);
        if !line.is_some_and(|l| l.starts_with("allocations: 2.0x fewer ")) {
            problems.push(format!(
                "{f}: expected `allocations: 2.0x fewer`, got {line:?}"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "compare of a run with every allocation count halved:\n  - {}\n\n{}",
        problems.join("\n  - "),
        out.describe()
    );
}

/// The live-bytes lines of `compare`'s output, trimmed.
fn live_lines(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("live bytes"))
        .collect()
}

/// `compare` of alloc-only reports (their live fields are `null`) shows their live bytes as
/// not measured, never as a number, alone or against a full run: in total and per site.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn compare_invents_no_live_bytes_for_alloc_only_reports() {
    alloctrace_bin();
    let quick = launch(
        "sites",
        &[],
        &[OsStr::new("--mode"), OsStr::new("alloc-only")],
        Scratch::new(),
    );
    quick.finished.assert_code(0);
    assert!(quick.report.json["totals"]["live_bytes"].is_null());
    let full = launch("sites", &[], &[], Scratch::new());
    full.finished.assert_code(0);
    let (q, f) = (
        quick.scratch.path("report.json"),
        full.scratch.path("report.json"),
    );
    // (before, after, what every live-bytes line must hold: "-" on the alloc-only side, which
    // for a site in one run only is also what stands for its absence from the other)
    for (b, a, want) in [(&q, &q, "(- -> -)"), (&f, &q, " -> -)"), (&q, &f, "(- -> ")] {
        let out = run_alloctrace(&[OsStr::new("compare"), b.as_os_str(), a.as_os_str()], &[]);
        out.assert_code(0);
        let live = live_lines(&out.stdout);
        assert!(live.len() > 1, "no live-bytes lines\n{}", out.describe());
        assert!(
            live[0].starts_with("live bytes: not measured in alloc-only mode ("),
            "the total's live bytes are compared with an alloc-only run\n{}",
            out.describe()
        );
        for l in live {
            assert!(
                l.ends_with(')') && l.contains(want),
                "{l:?}: a number stands for live bytes not measured ({want:?} expected)\n{}",
                out.describe()
            );
        }
        // Every site in both runs says why it has no live bytes.
        for l in block_under(&out.stdout, |l| l.starts_with("sites in both runs"))
            .unwrap_or_default()
            .into_iter()
            .filter(|l| l.starts_with("live bytes"))
        {
            assert!(
                l.starts_with("live bytes: not measured in alloc-only mode ("),
                "{l:?}\n{}",
                out.describe()
            );
        }
    }
}

/// `compare /dev/zero ...` fails at once, in one line, without growing: the report is parsed
/// as it is read (and at most 2 GiB of it), never read whole first. Before, it read /dev/zero
/// into memory until the machine ran out (5.4 GB in 5 s).
#[test]
#[ignore = "needs the alloctrace binary: run with cargo xtask test"]
fn compare_of_dev_zero_fails_at_once_in_little_memory() {
    let bin = alloctrace_bin();
    let scratch = Scratch::new();
    let (out_path, err_path) = (scratch.path("stdout"), scratch.path("stderr"));
    let file = |p: &std::path::Path| {
        std::fs::File::create(p).unwrap_or_else(|e| panic!("cannot create {}: {e}", p.display()))
    };
    let t0 = std::time::Instant::now();
    // Reaped by wait4 below, which Child::wait cannot do.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(&bin)
        .args(["compare", "/dev/zero", "/dev/zero"])
        .stdout(file(&out_path))
        .stderr(file(&err_path))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let pid = child.id() as libc::pid_t;
    // wait4, not Child::wait: it gives the child's own peak RSS.
    let mut status = 0;
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    let deadline = std::time::Duration::from_secs(10);
    loop {
        // SAFETY: wait4 on our own child's pid, writing into a local int and rusage.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, ru.as_mut_ptr()) };
        assert!(r >= 0, "wait4: {}", std::io::Error::last_os_error());
        if r == pid {
            break;
        }
        if t0.elapsed() > deadline {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // SAFETY: as above; reaps it.
            unsafe { libc::wait4(pid, &mut status, 0, ru.as_mut_ptr()) };
            panic!("compare /dev/zero still ran after {deadline:?}; killed it");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let elapsed = t0.elapsed();
    // SAFETY: filled by the wait4 that reaped the child.
    let peak_kib = unsafe { ru.assume_init() }.ru_maxrss;
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) != 0,
        "compare /dev/zero: wait status {status:#x}, stderr:\n{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.len() == 1
            && lines[0].starts_with(ERROR_PREFIX)
            && lines[0].contains("/dev/zero is not an alloctrace JSON report"),
        "compare /dev/zero must fail in one line naming the file, got:\n{stderr}"
    );
    assert!(
        elapsed < std::time::Duration::from_secs(3),
        "compare /dev/zero took {elapsed:?}"
    );
    assert!(
        peak_kib < 64 * 1024,
        "compare /dev/zero peaked at {peak_kib} KiB of RSS"
    );
}
