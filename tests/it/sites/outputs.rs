//! What the run writes about the sites: the text report, the JSON report on stdout and its
//! samples and shared frames, folded stacks and inferno flame graphs by every weight.
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};

use crate::support::*;

use super::*;

/// `alloctrace --interval 250ms OPTIONS -- WORKLOAD`, the report on stdout (no `-o`), run to
/// exit code 0; with the workload's ground truth.
fn report_on_stdout(name: &str, options: &[&str]) -> (Finished, GroundTruth) {
    alloctrace_bin();
    let scratch = Scratch::new();
    let truth_path = scratch.path(TRUTH_FILE);
    let mut args = vec![OsString::from("--interval"), OsString::from(INTERVAL)];
    args.extend(options.iter().map(OsString::from));
    args.push("--".into());
    args.push(workload(name).into());
    let finished = run_alloctrace(&args, &[("GROUND_TRUTH", truth_path.as_os_str())]);
    finished.assert_code(0);
    let truth = GroundTruth::read(&truth_path, &finished.describe());
    (finished, truth)
}

/// The text report (on stdout) names every allocating function of sites.c, and none of the
/// functions that allocate nothing.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn text_report_names_every_site() {
    let (finished, truth) = report_on_stdout("sites", &["--report", "text", "--top", "100"]);
    // A name counts when it is a whole word of the report (alloc_small, not alloc_small_x).
    let words: Vec<&str> = finished
        .stdout
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    let missing: Vec<&str> = truth
        .sites
        .iter()
        .filter(|s| s.counters.allocs > 0 && !words.contains(&s.function.as_str()))
        .map(|s| s.function.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "the text report does not name {missing:?}\nground truth:\n{}\n{}",
        truth.text,
        finished.describe()
    );
    let present: Vec<&&str> = NON_ALLOCATING
        .iter()
        .filter(|f| words.contains(f))
        .collect();
    assert!(
        present.is_empty(),
        "the text report names {present:?}, which allocate nothing and are on no allocation stack\n{}",
        finished.describe()
    );
    assert!(
        !finished.stdout.contains(TRACING_PREFIX),
        "diagnostics belong on stderr, not in the report on stdout\n{}",
        finished.describe()
    );
}

/// `--report json` without `-o` writes the report, and only the report, to stdout (premain
/// prints nothing there).
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn json_report_on_stdout_is_the_whole_stdout() {
    let (finished, truth) = report_on_stdout("premain", &["--report", "json"]);
    let report = Report::parse(&finished.stdout, &finished.describe());
    assert_eq!(
        report.json["interval"].as_f64(),
        Some(0.25),
        "interval of --interval 250ms, in seconds"
    );
    assert_process_matches(&report, &truth);
}

/// Folded stacks (`--folded`, default weight bytes): one `root;...;leaf VALUE` line per stack,
/// leaf = the allocating function; per leaf the values add up to its bytes, and all of them to
/// the process's bytes.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn folded_stacks_name_every_site_with_its_bytes() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let folded_path = scratch.path("stacks.folded");
    let run = run_sites(&[OsStr::new("--folded"), folded_path.as_os_str()], scratch);
    let text = std::fs::read_to_string(&folded_path).unwrap_or_else(|e| {
        panic!(
            "no folded file at {}: {e}\n{}",
            folded_path.display(),
            run.finished.describe()
        )
    });
    check_folded(&run, &text, "bytes", |c| c.bytes);
}

/// `--folded-weight count` and `--folded-weight live` weigh the same stacks by allocations and
/// by bytes still live at the end.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn folded_count_and_live_weights() {
    alloctrace_bin();
    for (weight, value) in [
        ("count", (|c: &Counters| c.allocs) as fn(&Counters) -> u64),
        ("live", |c| c.live_bytes()),
    ] {
        let scratch = Scratch::new();
        let folded_path = scratch.path("stacks.folded");
        let run = run_sites(
            &[
                OsStr::new("--folded"),
                folded_path.as_os_str(),
                OsStr::new("--folded-weight"),
                OsStr::new(weight),
            ],
            scratch,
        );
        let text = std::fs::read_to_string(&folded_path).unwrap_or_else(|e| {
            panic!(
                "no folded file at {}: {e}\n{}",
                folded_path.display(),
                run.finished.describe()
            )
        });
        check_folded(&run, &text, weight, value);
    }
}

fn check_folded(run: &Launched, text: &str, weight: &str, value: impl Fn(&Counters) -> u64) {
    let lines = parse_folded(text);
    let by_leaf = folded_by_leaf(&lines);
    let mut problems = Vec::new();
    for s in &run.truth.sites {
        let want = value(&s.counters);
        let got = by_leaf.get(&s.function).copied().unwrap_or(0);
        if got != want {
            problems.push(format!(
                "{}: expected {want}, the folded lines ending in it sum to {got}",
                s.function
            ));
        }
    }
    let strangers: BTreeMap<&String, &u64> = by_leaf
        .iter()
        .filter(|(f, v)| **v > 0 && !run.truth.sites.iter().any(|s| &s.function == *f))
        .collect();
    if !strangers.is_empty() {
        problems.push(format!(
            "lines ending in frames that are not sites.c's functions: {strangers:?}"
        ));
    }
    let total: u64 = lines.iter().map(|(_, v)| v).sum();
    let want_total = value(&run.truth.total());
    if total != want_total {
        problems.push(format!("all lines sum to {total}, expected {want_total}"));
    }
    for (frames, _) in &lines {
        if frames.iter().any(|f| f.is_empty()) {
            problems.push(format!("a line has an empty frame: {frames:?}"));
        }
    }
    assert!(
        problems.is_empty(),
        "--folded-weight {weight} disagrees with the ground truth:\n  - {}\n\nfolded file:\n{}\nground truth:\n{}",
        problems.join("\n  - "),
        excerpt(text, 6000),
        run.truth.text
    );
}

/// Every `<title>` of a flame graph SVG, for failure messages.
fn svg_titles(svg: &str) -> Vec<&str> {
    svg.match_indices("<title>")
        .map(|(i, _)| &svg[i..svg[i..].find("</title>").map_or(svg.len(), |e| i + e + 8)])
        .collect()
}

/// A flame graph of the `sites` run weighed by `measure` (of the ground truth) has a total
/// frame and one frame per function with that function's value, in inferno's title format
/// "name (N UNIT, P%)" where P = 100 * N / total with two decimals.
fn assert_flame_titles(
    svg: &str,
    run: &Launched,
    unit: &str,
    measure: impl Fn(&Counters) -> u64,
    context: &str,
) {
    let total = measure(&run.truth.total());
    let mut want = vec![format!(
        "<title>all ({} {unit}, 100%)</title>",
        thousands(total)
    )];
    for s in run.truth.sites.iter().filter(|s| measure(&s.counters) > 0) {
        let v = measure(&s.counters);
        let pct = 100.0 * v as f64 / total as f64;
        want.push(format!(
            "<title>{} ({} {unit}, {pct:.2}%)</title>",
            s.function,
            thousands(v)
        ));
    }
    let missing: Vec<&String> = want.iter().filter(|w| !svg.contains(w.as_str())).collect();
    assert!(
        missing.is_empty(),
        "{context}: the flame graph lacks {missing:#?}\nits titles: {:#?}\nground truth:\n{}",
        svg_titles(svg),
        run.truth.text
    );
}

/// The folded file, fed to inferno (the flame graph library), renders an SVG whose total is the
/// ground truth's bytes and that has a frame for every allocating function with its bytes; the
/// same run's `--flamegraph` SVG says the same in bytes.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn inferno_renders_the_folded_stacks() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let folded_path = scratch.path("stacks.folded");
    let svg_path = scratch.path("flame.svg");
    let run = run_sites(
        &[
            OsStr::new("--folded"),
            folded_path.as_os_str(),
            OsStr::new("--flamegraph"),
            svg_path.as_os_str(),
        ],
        scratch,
    );
    let text = std::fs::read_to_string(&folded_path).unwrap_or_else(|e| {
        panic!(
            "no folded file at {}: {e}\n{}",
            folded_path.display(),
            run.finished.describe()
        )
    });

    let mut opts = inferno::flamegraph::Options::default();
    // Keep every frame, however narrow (inferno drops frames under 0.1 px by default).
    opts.min_width = 0.0;
    let mut svg = Vec::new();
    inferno::flamegraph::from_lines(&mut opts, text.lines(), &mut svg).unwrap_or_else(|e| {
        panic!(
            "inferno rejects the folded file: {e}\n{}",
            excerpt(&text, 6000)
        )
    });
    let svg = String::from_utf8(svg).expect("inferno writes UTF-8");
    let total = run.truth.total().bytes;
    assert!(
        svg.contains(&format!("total_samples=\"{total}\"")),
        "inferno's total is not {total}"
    );
    assert_flame_titles(&svg, &run, "samples", |c| c.bytes, "folded → inferno");

    let ours = std::fs::read_to_string(&svg_path).unwrap_or_else(|e| {
        panic!(
            "no flame graph at {}: {e}\n{}",
            svg_path.display(),
            run.finished.describe()
        )
    });
    assert_flame_titles(&ours, &run, "bytes", |c| c.bytes, "--flamegraph");
    assert!(
        ours.contains("— bytes allocated</text>") && ours.contains(">alloctrace: "),
        "--flamegraph is not titled with the target and weight: {:#?}",
        excerpt(&ours, 3000)
    );
}

/// `--flamegraph` with `--weight count` and `--weight live`: frames weigh the ground truth's
/// allocations, and its live bytes (only the leaking sites appear), titled accordingly.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn flamegraph_weighs_count_and_live() {
    alloctrace_bin();
    for (weight, unit, title) in [
        ("count", "allocations", "— allocations</text>"),
        ("live", "live bytes", "— bytes live at the end</text>"),
    ] {
        let scratch = Scratch::new();
        let svg_path = scratch.path("flame.svg");
        let run = run_sites(
            &[
                OsStr::new("--flamegraph"),
                svg_path.as_os_str(),
                OsStr::new("--weight"),
                OsStr::new(weight),
            ],
            scratch,
        );
        let svg = std::fs::read_to_string(&svg_path)
            .unwrap_or_else(|e| panic!("no flame graph ({weight}): {e}"));
        let measure = |c: &Counters| match weight {
            "count" => c.allocs,
            _ => c.live_bytes(),
        };
        assert_flame_titles(&svg, &run, unit, measure, &format!("--weight {weight}"));
        assert!(
            svg.contains(title),
            "--weight {weight}: title lacks {title:?}: {:#?}",
            excerpt(&svg, 3000)
        );
        if weight == "live" {
            for s in run
                .truth
                .sites
                .iter()
                .filter(|s| s.counters.live_bytes() == 0)
            {
                assert!(
                    !svg.contains(&format!("<title>{} (", s.function)),
                    "--weight live draws {}, which has nothing live",
                    s.function
                );
            }
        }
    }
}

/// `samples[]` holds cumulative per-process counters at increasing times; the last equals the
/// process's final counters.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn samples_are_cumulative_and_end_at_the_totals() {
    alloctrace_bin();
    let run = run_sites(&[], Scratch::new());
    let pid = run.truth.pid;
    let samples = run.report.samples();
    assert!(
        !samples.is_empty(),
        "no samples in the report\n{}",
        excerpt(&run.report.text, 4000)
    );
    let mut prev_t = f64::NEG_INFINITY;
    let mut prev = Counters::default();
    let mut last = None;
    for (i, s) in samples.iter().enumerate() {
        let t = s["t"]
            .as_f64()
            .unwrap_or_else(|| panic!("samples[{i}].t is {}", s["t"]));
        assert!(t > prev_t, "samples[{i}].t = {t} does not follow {prev_t}");
        prev_t = t;
        if let Some(c) = s["processes"].get(pid.to_string()) {
            let c = Counters::from_json(c, &format!("samples[{i}].processes.{pid}"));
            assert!(
                c.allocs >= prev.allocs
                    && c.bytes >= prev.bytes
                    && c.frees >= prev.frees
                    && c.freed_bytes >= prev.freed_bytes,
                "samples[{i}] for pid {pid} went backwards: {prev} then {c}",
                prev = prev.text(),
                c = c.text()
            );
            prev = c;
            last = Some(c);
        }
    }
    let final_counters = run.report.process_counters(pid);
    assert_eq!(
        last,
        Some(final_counters),
        "the last sample of pid {pid} is not its final counters\nsamples: {}",
        serde_json::to_string_pretty(&run.report.json["samples"]).unwrap_or_default()
    );
}

/// 2,048 distinct stacks sharing a dozen frames (`workloads/tree.c 10`): the JSON report writes
/// each frame once (`Report::parse` also checks that its table holds no frame twice) and stays
/// under 1,600 bytes per site (1,500 until DWARF unwinding: its stacks reach `_start`, two
/// frames more per site than the frame-pointer walk's); the counts are exact. Version 1 repeated ~14 frame objects of
/// ~250 bytes in every site: ~9 KB per site. One drain (`--resolution 1s`, the run lasting
/// tens of ms): each site's series is then its one step, so the size measured is the frames'
/// and the fixed fields', not how many 20 ms drains happened to fall between a site's malloc
/// and free (each such point adds ~90 bytes; it varied 1,430–1,550 bytes per site run to run).
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn many_stacks_share_their_frames_in_the_json_report() {
    alloctrace_bin();
    let run = launch(
        "tree",
        &["10"],
        &[OsStr::new("--resolution"), OsStr::new("1s")],
        Scratch::new(),
    );
    run.finished.assert_code(0);
    assert_sites_match(&run.report, &run.truth, &[]);
    let leaves = run.report.sites_in(run.truth.pid, "leaf").len();
    assert_eq!(
        leaves,
        2048,
        "sites of leaf\n{}",
        run.report.describe_sites(run.truth.pid)
    );
    let frames = run.report.json["frames"].as_array().map_or(0, Vec::len);
    // leaf's caller, the three calls in each of a and b, main's two, libc's start-up: about 12.
    assert!(
        (8..=24).contains(&frames),
        "{frames} frames in the table for 2,048 stacks of a dozen distinct frames\n{}",
        excerpt(&run.report.text, 6000)
    );
    let per_site = run.report.text.len() / run.report.sites().len();
    assert!(
        per_site < 1600,
        "{per_site} bytes per site ({} bytes, {} sites)",
        run.report.text.len(),
        run.report.sites().len()
    );
}
