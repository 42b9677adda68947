//! `--html`: the self-contained page, checked against the ground truth and rendered in
//! headless Chromium.
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;

use serde_json::Value;

use crate::support::*;

use super::*;

/// `--html x.html`: one self-contained page whose site table holds the ground truth exactly,
/// in the report's order, whose summary holds the report's totals, and which fetches nothing;
/// rendered in headless Chromium, its plots, table and flame graph are there after scripts
/// ran (the flame graph's own script initialized), and the screenshot shows the plots' lines.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn html_page_holds_the_ground_truth_and_renders_in_chromium() {
    chromium();
    let scratch = Scratch::new();
    let html_path = scratch.path("report.html");
    let run = run_phases(&[OsStr::new("--html"), html_path.as_os_str()], scratch);
    let context = run.finished.describe();
    let html = read_text(&html_path, &context);
    let r = &run.report;

    // --- The file itself ---
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert_no_network_fetch(&html, "the HTML page");
    for tag in ["<link", "<img", "<script src", "<iframe src="] {
        assert!(
            !html.contains(tag),
            "the page holds {tag}: not self-contained"
        );
    }
    for id in [
        "summary",
        "rate-plot",
        "live-plot",
        "top-sites",
        "patterns",
        "advice",
        "flamegraph",
    ] {
        section(&html, id);
    }

    // Site rows: the report's order (sites_by_bytes), the ground truth per function.
    let rows = site_rows(&html);
    let mut want: Vec<&Value> = r
        .sites()
        .iter()
        .filter(|s| s["counters"]["allocs"].as_u64().unwrap_or(0) > 0)
        .collect();
    let key = |s: &Value, k: &str| s["counters"][k].as_u64().unwrap_or(0);
    want.sort_by(|a, b| {
        key(b, "bytes")
            .cmp(&key(a, "bytes"))
            .then(key(b, "allocs").cmp(&key(a, "allocs")))
            .then(a["pid"].as_u64().cmp(&b["pid"].as_u64()))
            .then(a["stack_id"].as_u64().cmp(&b["stack_id"].as_u64()))
    });
    assert_eq!(
        rows.len(),
        want.len().min(20),
        "the table lists --top 20 of the report's {} sites",
        want.len()
    );
    for (i, (row, site)) in rows.iter().zip(&want).enumerate() {
        assert_eq!(
            (attr_u64(row, "data-allocs"), attr_u64(row, "data-bytes")),
            (key(site, "allocs"), key(site, "bytes")),
            "row {} is not the report's site #{} ({site})",
            i + 1,
            i + 1
        );
        assert_eq!(attr_u64(row, "data-rank"), i as u64 + 1);
    }
    let mut by_function: BTreeMap<&str, Counters> = BTreeMap::new();
    for row in &rows {
        let f = attr(row, "data-function").expect("data-function");
        let c = by_function.entry(f).or_default();
        c.add(&Counters {
            allocs: attr_u64(row, "data-allocs"),
            bytes: attr_u64(row, "data-bytes"),
            frees: attr_u64(row, "data-frees"),
            freed_bytes: attr_u64(row, "data-bytes") - attr_u64(row, "data-live-bytes"),
        });
        // What a reader sees: the exact numbers, thousands-separated.
        for k in ["data-allocs", "data-bytes"] {
            let shown = format!(">{}", thousands(attr_u64(row, k)));
            assert!(row.contains(&shown), "row does not show {shown}: {row}");
        }
    }
    for f in FUNCTIONS {
        let truth = run.truth.site(f).counters;
        assert_eq!(
            by_function.get(f).copied(),
            Some(truth),
            "{f}: the page's rows disagree with the ground truth {truth}:\n{}",
            excerpt(section(&html, "top-sites"), 4000),
            truth = truth.text()
        );
    }

    // Summary: the report's totals, exactly.
    let mut total = Counters::default();
    for p in r.processes() {
        total.add(&Counters::from_json(&p["counters"], "process.counters"));
    }
    let allocated = section(&html, "summary-allocated");
    assert_eq!(attr_u64(allocated, "data-bytes"), total.bytes);
    assert_eq!(attr_u64(allocated, "data-allocs"), total.allocs);
    let live = section(&html, "summary-live");
    assert_eq!(attr_u64(live, "data-bytes"), total.live_bytes());
    assert!(section(&html, "summary-losses").contains("none"));
    assert!(
        section(&html, "summary-tracer")
            .contains("s CPU (loading the programs included), peak RSS"),
        "{}",
        excerpt(section(&html, "summary-tracer"), 1000)
    );

    // Plots: as many vertices as the report has points.
    let series = rate_series(r);
    let live_lines = polylines(section(&html, "live-plot"), LIVE_COLOR);
    assert_eq!(live_lines.len(), 1);
    assert_eq!(live_lines[0].len(), series.len());
    let rated = series.iter().filter(|p| !p["alloc_rate"].is_null()).count();
    let rate_plot = section(&html, "rate-plot");
    assert_eq!(polylines(rate_plot, BYTES_COLOR)[0].len(), rated);
    assert_eq!(polylines(rate_plot, OBJECTS_COLOR)[0].len(), rated);

    // Advice and patterns name the workload's functions (escaped names are plain here).
    let patterns = section(&html, "patterns");
    for f in FUNCTIONS {
        assert!(
            patterns.contains(&format!("data-function=\"{f}\"")),
            "no pattern for {f}"
        );
    }
    assert!(section(&html, "advice")
        .contains("data-kind=\"leak suspect\" data-function=\"leaky_growth\""));

    // --- In Chromium ---
    let scratch = &run.scratch;
    let dom = run_chromium(&html_path, &["--dump-dom".to_string()], scratch, "dom");
    assert!(
        dom.contains("</html>"),
        "no DOM dumped:\n{}",
        excerpt(&dom, 2000)
    );
    let flame = section(&dom, "flamegraph");
    let flame_tag = &flame[..flame.find('>').unwrap_or(flame.len())];
    assert_eq!(
        attr(flame_tag, "data-interactive"),
        Some("yes"),
        "the flame graph's script did not initialize: {flame_tag}"
    );
    let frames = attr_u64(flame_tag, "data-frames");
    assert!(
        frames as usize > FUNCTIONS.len(),
        "the flame graph has {frames} frames, fewer than the workload's functions + main"
    );
    assert_eq!(
        site_rows(&dom).len(),
        rows.len(),
        "the table after scripts ran"
    );
    assert_eq!(
        polylines(section(&dom, "live-plot"), LIVE_COLOR)[0].len(),
        series.len()
    );
    assert_eq!(
        polylines(section(&dom, "rate-plot"), BYTES_COLOR)[0].len(),
        rated
    );

    // The flame graph is interactive: zoom, reset, search, without an error.
    let body_end = html.rfind("</body>").expect("</body>");
    let probe_page = scratch.path("probe.html");
    let probed = format!("{}{PROBE}{}", &html[..body_end], &html[body_end..]);
    std::fs::write(&probe_page, probed).expect("write the probe page");
    let dom = run_chromium(&probe_page, &["--dump-dom".to_string()], scratch, "probe");
    let body = &dom[dom.find("<body").expect("<body")..];
    let probe = attr(&body[..body.find('>').unwrap()], "data-probe")
        .unwrap_or_else(|| panic!("the probe did not run:\n{}", excerpt(&dom, 2000)))
        .replace("&quot;", "\"")
        .replace("&amp;", "&");
    let probe: Value =
        serde_json::from_str(&probe).unwrap_or_else(|e| panic!("bad probe result {probe}: {e}"));
    let num = |k: &str| probe[k].as_f64().unwrap_or(f64::NAN);
    assert_eq!(
        probe["errors"],
        serde_json::json!([]),
        "flame graph errors: {probe}"
    );
    assert!(
        num("before") > 0.0 && num("before") < 99.0,
        "leaky_growth's frame is narrow at first: {probe}"
    );
    assert!(
        (num("zoomed") - 100.0).abs() < 0.01,
        "a click zooms to its frame: {probe}"
    );
    assert_eq!(probe["unzoom_shown"], true, "Reset Zoom appears: {probe}");
    assert_eq!(
        num("reset"),
        num("before"),
        "Reset Zoom restores the width: {probe}"
    );
    assert!(
        probe["matched"]
            .as_str()
            .is_some_and(|m| m.starts_with("Matched: ")),
        "search reports its match: {probe}"
    );
    assert_eq!(probe["search_button"], "Reset Search", "{probe}");

    let shot = scratch.path("screenshot.png");
    run_chromium(
        &html_path,
        &[
            format!("--screenshot={}", shot.display()),
            format!("--window-size={},{}", WINDOW.0, WINDOW.1),
        ],
        scratch,
        "shot",
    );
    let bytes = read(&shot, "chromium --screenshot");
    if let Some(dir) = std::env::var_os("ALLOCTRACE_KEEP_SCREENSHOT") {
        let _ = std::fs::write(Path::new(&dir).join("pictures-html.png"), &bytes);
    }
    let img = Image::decode(&bytes, "the screenshot");
    assert_eq!((img.width, img.height), WINDOW, "the screenshot's size");
    img.assert_not_blank("the screenshot");
    for (what, c) in [
        ("bytes/s", BYTES_COLOR),
        ("allocations/s", OBJECTS_COLOR),
        ("live bytes", LIVE_COLOR),
    ] {
        let n = img.count(is(c));
        assert!(
            n > 100,
            "the screenshot shows the {what} line in only {n} pixels"
        );
    }
}
