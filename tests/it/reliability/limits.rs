//! Bounds on alloctrace itself: memory flat over a long run, every program far below the
//! verifier's limit.
use std::ffi::{OsStr, OsString};
use std::time::Duration;

use alloctrace_common::{
    PROG_ALLOC_RETURN, PROG_CALLOC_ENTER, PROG_FREE_ENTER, PROG_MALLOC_COUNT, PROG_MALLOC_ENTER,
    PROG_REALLOC_COUNT,
};

use crate::support::*;

use super::load::status_kib;
use super::*;

// =============================================================================================
// A long run keeps alloctrace's memory bounded
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

/// Every program, in every mode and with either unwinder, loads far from the kernel
/// verifier's limit of a million instructions walked: start-up time follows that count, and a
/// program near the limit can fail to load on another kernel or after a small change (with
/// --sample-bytes, calloc's and reallocarray's programs once took 854k and 862k). alloctrace
/// -vv gives each program's count, from the kernel's account of its verification
/// (bpf_prog_info.verified_insns).
///
/// The table searches and the stack walks' loops run in `bpf_loop` callbacks, and the site
/// search and the frame-pointer walk are BPF-to-BPF calls, so the verifier walks each once
/// per call site, not once per iteration and path. Measured on kernel 6.18: with `--unwind
/// fp` every entry program ~11.6-12.8k, alloc-only realloc (a stack captured on two paths)
/// ~23-24k; with `--unwind dwarf` every program at most ~14k. The bounds leave room for
/// another compiler or kernel, not for a loop unrolled again (the frame-pointer walk inlined
/// into its callers took ~29k per entry program and 59k for alloc-only realloc).
const MOST_PER_PROGRAM: u64 = 32_000;
/// Bounds on the sum over the programs loaded for `alloctrace -- /bin/true` (glibc's
/// default-mode set, nine programs), per unwinder: ~100k walked with `--unwind fp` (219k with
/// its walk inlined; 1.50M before the loops ran in `bpf_loop`), ~65k with `--unwind dwarf`.
const MOST_DEFAULT_SET: [(&str, u64); 2] = [("fp", 128_000), ("dwarf", 96_000)];

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn every_program_verifies_far_below_the_verifier_limit() {
    alloctrace_bin();
    let modes: [(&[&str], &[&str]); 4] = [
        (
            &[],
            &[
                PROG_MALLOC_ENTER,
                PROG_ALLOC_RETURN,
                PROG_FREE_ENTER,
                PROG_CALLOC_ENTER,
            ],
        ),
        (
            &["--sample-bytes", "524288"],
            &[PROG_MALLOC_ENTER, PROG_CALLOC_ENTER],
        ),
        (
            &["--mode", "alloc-only"],
            &[PROG_MALLOC_COUNT, PROG_REALLOC_COUNT],
        ),
        (
            &["--mode", "alloc-only", "--sample-bytes", "524288"],
            &[PROG_MALLOC_COUNT, PROG_REALLOC_COUNT],
        ),
    ];
    let mut over = Vec::new();
    for (unwind, most_set) in MOST_DEFAULT_SET {
        for (extra, must) in modes {
            let mut args: Vec<&OsStr> = vec![os("-vv"), os("--unwind"), os(unwind)];
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
                    "no verifier count for {m} with --unwind {unwind} {extra:?}\n{}",
                    run.describe()
                );
            }
            if extra.is_empty() {
                let total = counts.iter().map(|(_, n)| n).sum::<u64>();
                if total > most_set {
                    over.push(format!(
                        "the default-mode set for /bin/true with --unwind {unwind}: {total} in \
                         all (bound {most_set})"
                    ));
                }
            }
            over.extend(
                counts
                    .into_iter()
                    .filter(|(_, n)| *n > MOST_PER_PROGRAM)
                    .map(|(name, n)| {
                        format!(
                            "{name} with --unwind {unwind} {extra:?}: {n} (bound \
                             {MOST_PER_PROGRAM})"
                        )
                    }),
            );
        }
    }
    assert!(
        over.is_empty(),
        "the verifier walked too many instructions:\n  {}",
        over.join("\n  ")
    );
}
