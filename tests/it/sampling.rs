//! `--sample-bytes N` on `workloads/sampled.c`, in full and alloc-only mode: the process totals
//! stay exact (in full mode frees and live bytes too), each site's counters are estimates
//! whose error is that of the number of samples behind them, blocks far above N are always
//! sampled (exact), and far fewer stacks are recorded than allocations made.
//!
//! Privileged: run with `cargo xtask test` (root, `ALLOCTRACE_BIN`, `--include-ignored`).
use std::collections::BTreeMap;
use std::ffi::OsStr;

use crate::support::*;

const MEAN: u64 = 16 * 1024;

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn sampled_estimates_are_within_their_error_and_totals_exact() {
    check_sampled("alloc-only");
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn full_mode_sampling_keeps_frees_and_live_exact_per_process() {
    check_sampled("full");
}

fn check_sampled(mode: &str) {
    alloctrace_bin();
    let mean = MEAN.to_string();
    let scratch = Scratch::new();
    let folded = scratch.path("out.folded");
    let run = launch(
        "sampled",
        &[],
        &[
            OsStr::new("--mode"),
            OsStr::new(mode),
            OsStr::new("--sample-bytes"),
            OsStr::new(&mean),
            OsStr::new("--folded"),
            folded.as_os_str(),
        ],
        scratch,
    );
    run.finished.assert_code(0);
    let (report, truth) = (&run.report, &run.truth);
    assert_eq!(
        report.json["sample_bytes"],
        MEAN,
        "{}",
        excerpt(&report.text, 2000)
    );
    // Folded stacks cannot say so themselves: the line announcing them does.
    let announced = format!(
        "alloctrace: folded stacks (values are estimates: --sample-bytes {MEAN}) written to {}",
        folded.display()
    );
    assert!(
        run.finished.stderr.lines().any(|l| l == announced),
        "no line {announced:?}\n{}",
        run.finished.describe()
    );

    let proc_c = report.process_counters(truth.pid);
    let want = truth.total();
    if mode == "full" {
        // Every block is still tracked: frees, freed bytes and live bytes exact too.
        assert_process_matches(report, truth);
    } else {
        assert_eq!(
            (proc_c.allocs, proc_c.bytes),
            (want.allocs, want.bytes),
            "process totals must stay exact under sampling"
        );
    }

    let mut est: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut sampled_total = 0;
    for s in report.sites_of(truth.pid) {
        let name = Report::frame_function(s, 0).unwrap_or("?").to_string();
        let c = Counters::from_json(&s["counters"], "site");
        let sampled = s["sampled"]
            .as_u64()
            .unwrap_or_else(|| panic!("a sampled site without `sampled`: {s}"));
        sampled_total += sampled;
        if mode == "full" {
            // Every block of sampled.c is freed, and a freed block was sampled with its
            // allocation: the estimates of allocations and frees are the same.
            assert_eq!(
                (c.frees, c.freed_bytes),
                (c.allocs, c.bytes),
                "estimated frees differ from estimated allocations at a site: {s}"
            );
            assert_sampled_lifetimes(s);
        }
        let e = est.entry(name).or_default();
        e.0 += c.allocs;
        e.1 += c.bytes;
    }
    assert!(
        sampled_total * 10 < want.allocs,
        "{sampled_total} of {} allocations sampled: sampling did not happen",
        want.allocs
    );

    let mut problems = Vec::new();
    for site in &truth.sites {
        let (allocs, bytes) = est.get(&site.function).copied().unwrap_or_default();
        let (n, b) = (site.counters.allocs, site.counters.bytes);
        let size = b / n;
        // Expected samples n·p with p = 1 − e^(−size/MEAN); the estimate's relative standard
        // error is about 1/√(n·p). Allow 5 of them (plus 1%), which a correct sampler misses
        // with probability < 1e-6.
        let p = -(-(size as f64) / MEAN as f64).exp_m1();
        let expected_samples = n as f64 * p;
        let tolerance = if p > 1.0 - 1e-9 {
            0.0
        } else {
            5.0 / expected_samples.sqrt() + 0.01
        };
        for (what, got, want) in [("allocations", allocs, n), ("bytes", bytes, b)] {
            let err = (got as f64 / want as f64 - 1.0).abs();
            if err > tolerance {
                problems.push(format!(
                    "{}: estimated {got} {what}, truth {want} (error {:.1}%, allowed {:.1}% for ~{expected_samples:.0} samples)",
                    site.function,
                    err * 100.0,
                    tolerance * 100.0
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "sampled estimates off:\n  - {}\nground truth:\n{}\n{}",
        problems.join("\n  - "),
        truth.text,
        report.describe_sites(truth.pid)
    );
    assert_no_losses(report);
}

/// A sampled block's lifetime is measured (only blocks with a site read the clock): each of
/// sampled.c's blocks is freed right after its allocation, so every lifetime is far below the
/// run's length, while one measured from a missing birth time would be the machine's uptime.
fn assert_sampled_lifetimes(site: &serde_json::Value) {
    let hist: Vec<u64> = site["life_hist"]
        .as_array()
        .unwrap_or_else(|| panic!("a site without `life_hist`: {site}"))
        .iter()
        .map(|v| v.as_u64().unwrap_or_default())
        .collect();
    assert!(
        hist.iter().sum::<u64>() > 0,
        "a sampled site's freed blocks have no lifetimes: {site}"
    );
    // Bucket b holds lifetimes below 2^b ns: 2^34 ns is 17 s, longer than the whole run.
    assert!(
        hist.iter().skip(35).all(|&n| n == 0),
        "lifetimes of 17 s or more in a run of a few seconds (a block without its birth \
         time?): {site}"
    );
}
