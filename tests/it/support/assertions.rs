//! Assertions of a report against a workload's ground truth: exact equality, every mismatch
//! listed with both sides.
use std::collections::BTreeMap;

use serde_json::Value;

use super::report::{json_u64, CountersExt, Report};
use super::truth::{GroundTruth, SiteTruth};
use super::Counters;

/// Compares every site of the ground truth whose function is in `functions` (all of them when
/// `functions` is empty) with the report's sites of `truth.pid` summed by `frames[0].function`:
/// counters, the `live_*` fields, the size histogram, and one lifetime per free. A ground-truth
/// site with zero counters must have no allocation charged to it. Panics listing every mismatch
/// with both sides, the ground truth and the report's sites.
pub fn assert_sites_match(report: &Report, truth: &GroundTruth, functions: &[&str]) {
    let got = report.functions(truth.pid);
    let mut problems = Vec::new();
    let selected: Vec<&SiteTruth> = if functions.is_empty() {
        truth.sites.iter().collect()
    } else {
        functions.iter().map(|f| truth.site(f)).collect()
    };
    for want in selected {
        let f = &want.function;
        let Some(g) = got.get(f) else {
            if !want.counters.is_zero() {
                problems.push(format!(
                    "{f}: no site has frames[0].function == {f:?}; expected {}",
                    want.counters.text()
                ));
            }
            continue;
        };
        if want.counters.is_zero() {
            if !g.counters.is_zero() {
                problems.push(format!(
                    "{f}: allocates nothing, but the report charges it {}",
                    g.counters.text()
                ));
            }
            continue;
        }
        if g.counters != want.counters {
            problems.push(format!(
                "{f}: counters\n      expected {}\n      reported {}",
                want.counters.text(),
                g.counters.text()
            ));
        }
        if (g.live_objects, g.live_bytes)
            != (want.counters.live_objects(), want.counters.live_bytes())
        {
            problems.push(format!(
                "{f}: live_objects/live_bytes fields: expected {}/{}, reported {}/{}",
                want.counters.live_objects(),
                want.counters.live_bytes(),
                g.live_objects,
                g.live_bytes
            ));
        }
        let want_hist = want.size_hist_vec();
        if g.size_hist != want_hist {
            problems.push(format!(
                "{f}: size_hist (bucket:count)\n      expected {}\n      reported {}",
                hist_text(&want_hist),
                hist_text(&g.size_hist)
            ));
        }
        let lifetimes: u64 = g.life_hist.iter().sum();
        if lifetimes != want.counters.frees {
            problems.push(format!(
                "{f}: life_hist holds {lifetimes} lifetimes, expected one per free: {} ({})",
                want.counters.frees,
                hist_text(&g.life_hist)
            ));
        }
    }
    if !problems.is_empty() {
        panic!(
            "the report disagrees with the ground truth of pid {}:\n  - {}\n\nground truth:\n{}\n{}",
            truth.pid,
            problems.join("\n  - "),
            truth.text,
            report.describe_sites(truth.pid)
        );
    }
}

/// `b:n,b:n` for the non-empty buckets of a histogram, `-` when empty.
pub fn hist_text(h: &[u64]) -> String {
    let parts: Vec<String> = h
        .iter()
        .enumerate()
        .filter(|(_, &n)| n > 0)
        .map(|(b, n)| format!("{b}:{n}"))
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(",")
    }
}

/// For a workload in which nothing but the ground-truth sites allocates: the process's counters
/// and live fields equal the ground truth's sum, and its unknown frees the ground truth's.
pub fn assert_process_matches(report: &Report, truth: &GroundTruth) {
    let pid = truth.pid;
    let p = report.process(pid);
    let got = report.process_counters(pid);
    let want = truth.total();
    let live = (
        json_u64(&p["live_objects"], "live_objects"),
        json_u64(&p["live_bytes"], "live_bytes"),
    );
    let mut problems = Vec::new();
    if got != want {
        problems.push(format!(
            "counters\n      expected {want}\n      reported {got}",
            want = want.text(),
            got = got.text()
        ));
    }
    if live != (want.live_objects(), want.live_bytes()) {
        problems.push(format!(
            "live_objects/live_bytes: expected {}/{}, reported {}/{}",
            want.live_objects(),
            want.live_bytes(),
            live.0,
            live.1
        ));
    }
    if let Some(unknown) = truth.unknown_frees {
        let got_unknown = json_u64(&p["unknown_frees"], "unknown_frees");
        if got_unknown != unknown {
            problems.push(format!(
                "unknown_frees: expected {unknown}, reported {got_unknown}"
            ));
        }
    }
    if !problems.is_empty() {
        panic!(
            "process {pid}'s totals disagree with its ground truth (the sum of its sites; nothing else in \
             it allocates):\n  - {}\n\nreported process: {}\nground truth:\n{}\n{}",
            problems.join("\n  - "),
            p,
            truth.text,
            report.describe_sites(pid)
        );
    }
}

/// The process's counters equal the sum of its own sites (whatever allocated them).
pub fn assert_process_is_sum_of_sites(report: &Report, pid: u32) {
    let mut sum = Counters::default();
    for s in report.sites_of(pid) {
        sum.add(&Counters::from_json(&s["counters"], "site"));
    }
    let got = report.process_counters(pid);
    assert_eq!(
        got,
        sum,
        "process {pid}'s counters are not the sum of its sites:\n  process   {got}\n  sum       {sum}\n{}",
        report.describe_sites(pid),
        got = got.text(),
        sum = sum.text()
    );
}

/// Every `losses` counter is zero.
pub fn assert_no_losses(report: &Report) {
    let lost: BTreeMap<String, u64> = report
        .losses()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    assert!(
        lost.is_empty(),
        "alloctrace lost data: {lost:?}\nlosses: {}",
        report.json["losses"]
    );
}

/// The report's `target` object equals `want`.
pub fn assert_target(report: &Report, want: &Value) {
    assert_eq!(
        &report.json["target"], want,
        "report target: expected {want}, reported {}",
        report.json["target"]
    );
}
