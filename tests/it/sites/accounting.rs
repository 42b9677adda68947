//! Per-site and per-process accounting: counts, bytes, frees, live bytes, the
//! realloc/calloc/aligned family, callers, totals without double counting.
use std::collections::BTreeMap;
use std::ffi::OsStr;

use crate::support::*;

use super::*;

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn allocation_count_and_bytes_per_site() {
    alloctrace_bin();
    let run = run_sites(&[], Scratch::new());
    run.assert_command_target(&[]);
    assert_allocations(&run, PLAIN);
}

/// `--mode alloc-only` (entry probes only): every allocating function's count, bytes and size
/// histogram equal the ground truth — glibc's own calls to malloc (realloc(NULL, n), aligned
/// allocations of at most 16) are counted once, at the program's call — and the process
/// totals too; frees are not traced, and the report says so (live fields are null). Requests
/// that fail for want of memory are counted (there is no return probe to see the NULL).
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn alloc_only_mode_counts_allocations_exactly() {
    alloctrace_bin();
    let run = run_sites(
        &[OsStr::new("--mode"), OsStr::new("alloc-only")],
        Scratch::new(),
    );
    let (report, truth) = (&run.report, &run.truth);
    assert_eq!(
        report.json["mode"],
        "alloc_only",
        "{}",
        excerpt(&report.text, 2000)
    );
    let mut got: BTreeMap<String, (u64, u64, Vec<u64>)> = BTreeMap::new();
    for s in report.sites_of(truth.pid) {
        let name = Report::frame_function(s, 0).unwrap_or("?").to_string();
        let c = Counters::from_json(&s["counters"], "site");
        assert_eq!(
            (c.frees, c.freed_bytes),
            (0, 0),
            "alloc-only traced a free: {s}"
        );
        assert!(s["live_bytes"].is_null(), "live bytes reported: {s}");
        let e = got.entry(name).or_insert((0, 0, vec![0; HIST_BUCKETS]));
        e.0 += c.allocs;
        e.1 += c.bytes;
        for (acc, v) in
            e.2.iter_mut()
                .zip(s["size_hist"].as_array().expect("size_hist"))
        {
            *acc += v.as_u64().expect("size_hist entry");
        }
    }
    let mut problems = Vec::new();
    // Without a return probe a request that fails for want of memory is counted: sites.c's
    // failed_realloc makes 18 of 120 TiB (3 reallocs, 5 each of malloc, calloc and
    // posix_memalign); its reallocs above PTRDIFF_MAX, which glibc refuses outright, are not.
    const DOOMED: (u64, u64) = (18, 18 * (120 << 40));
    let doomed = got.remove("failed_realloc").unwrap_or_default();
    if (doomed.0, doomed.1) != DOOMED {
        problems.push(format!(
            "failed_realloc: expected {DOOMED:?} (allocations, bytes) of doomed requests, reported {:?}",
            (doomed.0, doomed.1)
        ));
    }
    for want in &truth.sites {
        let (allocs, bytes, hist) =
            got.remove(&want.function)
                .unwrap_or((0, 0, vec![0; HIST_BUCKETS]));
        if (allocs, bytes) != (want.counters.allocs, want.counters.bytes)
            || (allocs > 0 && hist != want.size_hist_vec())
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
    if !got.is_empty() {
        problems.push(format!(
            "allocations outside the workload's functions: {got:?}"
        ));
    }
    let (proc_c, truth_total) = (report.process_counters(truth.pid), truth.total());
    if (proc_c.allocs, proc_c.bytes)
        != (truth_total.allocs + DOOMED.0, truth_total.bytes + DOOMED.1)
    {
        problems.push(format!(
            "process totals: expected {} allocations of {} bytes, reported {} of {}",
            truth_total.allocs, truth_total.bytes, proc_c.allocs, proc_c.bytes
        ));
    }
    assert!(
        problems.is_empty(),
        "alloc-only counts differ from the ground truth:\n  - {}\n\nground truth:\n{}\n{}",
        problems.join("\n  - "),
        truth.text,
        excerpt(&report.text, 8000)
    );
    assert_eq!((proc_c.frees, proc_c.freed_bytes), (0, 0));
    assert!(report.json["totals"]["live_bytes"].is_null());
    assert_no_losses(report);
}

/// Frees are charged to the site that allocated the block, whichever function frees it: the
/// same function (alloc_small), another function (free_elsewhere frees alloc_for_other's
/// blocks), realloc growing a block (alloc_chain_start's blocks) or realloc(p, 0)
/// (alloc_for_zero_realloc's blocks). free(NULL) counts nothing; nothing is unknown.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn frees_are_attributed_to_the_allocating_site() {
    alloctrace_bin();
    let run = run_sites(&[], Scratch::new());
    let got = run.report.functions(run.truth.pid);
    let mut problems = Vec::new();
    for f in PLAIN {
        let want = run.truth.site(f).counters;
        let g = got.get(*f).cloned().unwrap_or_default();
        if (g.counters.frees, g.counters.freed_bytes) != (want.frees, want.freed_bytes) {
            problems.push(format!(
                "{f}: expected {} frees of {} bytes, reported {} of {}",
                want.frees, want.freed_bytes, g.counters.frees, g.counters.freed_bytes
            ));
        }
        let lifetimes: u64 = g.life_hist.iter().sum();
        if lifetimes != want.frees {
            problems.push(format!(
                "{f}: life_hist holds {lifetimes} lifetimes for {} frees ({})",
                want.frees,
                hist_text(&g.life_hist)
            ));
        }
    }
    for f in NON_ALLOCATING {
        if let Some(g) = got.get(*f) {
            if !g.counters.is_zero() {
                problems.push(format!(
                    "{f} allocates nothing, but the report charges it {}",
                    g.counters.text()
                ));
            }
        }
    }
    let unknown = run.report.process(run.truth.pid)["unknown_frees"].clone();
    if unknown != 0 {
        problems.push(format!("unknown_frees: expected 0 (every block was allocated under tracing), reported {unknown}"));
    }
    assert!(
        problems.is_empty(),
        "frees differ from the ground truth:\n  - {}\n\nground truth:\n{}\n{}",
        problems.join("\n  - "),
        run.truth.text,
        run.report.describe_sites(run.truth.pid)
    );
}

/// alloc_leak never frees: its site's `live_objects`/`live_bytes` are all of it. So are those of
/// alloc_for_failed_realloc, whose blocks a failed realloc leaves alive; and the report's
/// totals hold exactly those two sites' live data.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn live_bytes_of_the_leaking_site() {
    alloctrace_bin();
    let run = run_sites(&[], Scratch::new());
    let got = run.report.functions(run.truth.pid);
    for f in ["alloc_leak", "alloc_for_failed_realloc"] {
        let want = run.truth.site(f).counters;
        let g = got.get(f).unwrap_or_else(|| {
            panic!(
                "no site for {f}\n{}",
                run.report.describe_sites(run.truth.pid)
            )
        });
        assert_eq!(
            (g.live_objects, g.live_bytes),
            (want.live_objects(), want.live_bytes()),
            "{f}: (live_objects, live_bytes) of its site(s); expected {want}, the site says {}\n{}",
            g.counters.text(),
            run.report.describe_sites(run.truth.pid),
            want = want.text()
        );
    }
    let total = run.truth.total();
    let totals = &run.report.json["totals"];
    assert_eq!(
        (
            totals["live_objects"].as_u64(),
            totals["live_bytes"].as_u64()
        ),
        (Some(total.live_objects()), Some(total.live_bytes())),
        "report totals' live data; expected {total}, totals are {totals}\n{}",
        run.report.describe_sites(run.truth.pid),
        total = total.text()
    );
}

/// calloc counts nmemb * size; realloc is a free of the old block (charged to its allocating
/// site) plus an allocation charged to realloc's caller; realloc(NULL, n) is one allocation;
/// a failed realloc changes nothing; realloc(p, 0) is a free; the aligned family counts the
/// requested bytes, once (glibc's aligned_alloc(16, n) calls malloc internally).
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn realloc_calloc_and_aligned_family_accounting() {
    alloctrace_bin();
    let run = run_sites(&[], Scratch::new());
    // Plus the sites whose blocks realloc frees (alloc_chain_start's: the chain's first
    // realloc; alloc_for_zero_realloc's: realloc(p, 0)) or must leave alive (a failed realloc).
    let mut functions = FAMILY.to_vec();
    functions.extend([
        "alloc_chain_start",
        "alloc_for_failed_realloc",
        "alloc_for_zero_realloc",
    ]);
    assert_sites_match(&run.report, &run.truth, &functions);
}

/// Nothing but sites.c's named functions allocates in the process, so its totals are exactly
/// the ground truth's sum: an allocator call that nests another (realloc(NULL) -> malloc,
/// aligned_alloc -> malloc, realloc(p, 0) -> free) must count once; no site may be left without
/// a function name; nothing is lost.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn process_totals_are_exact_without_double_counting() {
    alloctrace_bin();
    let run = run_sites(&[], Scratch::new());
    assert_eq!(
        run.report.pids(),
        vec![u64::from(run.truth.pid)],
        "launching sites (which does not fork) must report exactly its process\n{}",
        run.report.text
    );
    assert_process_matches(&run.report, &run.truth);
    assert_process_is_sum_of_sites(&run.report, run.truth.pid);
    let got = run.report.functions(run.truth.pid);
    let strangers: Vec<&String> = got
        .keys()
        .filter(|f| !run.truth.sites.iter().any(|s| &s.function == *f))
        .collect();
    assert!(
        strangers.is_empty(),
        "sites whose frames[0] is not one of sites.c's functions: {strangers:?} (a nested allocator call \
         counted on its own, or an unsymbolized caller)\n{}",
        run.report.describe_sites(run.truth.pid)
    );
    assert_no_losses(&run.report);
    assert_sites_match(&run.report, &run.truth, &[]);
    let totals = &run.report.json["totals"];
    let want = run.truth.total();
    assert_eq!(
        Counters::from_json(totals, "totals"),
        want,
        "report totals; expected {want}, got {totals}",
        want = want.text()
    );
}

/// leaf_caller() calls malloc, mid() calls leaf_caller(), top() calls mid(), main calls top():
/// the site's frames are exactly leaf_caller, mid, top, main, innermost first.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn caller_attribution() {
    alloctrace_bin();
    let run = run_sites(&[], Scratch::new());
    let pid = run.truth.pid;
    let sites: Vec<_> = run
        .report
        .sites_of(pid)
        .into_iter()
        .filter(|s| Report::frame_names(s).iter().any(|f| f == "leaf_caller"))
        .collect();
    assert_eq!(
        sites.len(),
        1,
        "expected one site with leaf_caller on its stack\n{}",
        run.report.describe_sites(pid)
    );
    let names = Report::frame_names(sites[0]);
    let want = ["leaf_caller", "mid", "top", "main"];
    assert!(
        names.len() >= want.len() && names[..want.len()] == want,
        "the site's innermost frames: expected {want:?}, got {names:?} (frames[0] must be malloc's immediate caller)\n{}",
        run.report.describe_sites(pid)
    );
    assert_sites_match(&run.report, &run.truth, &["leaf_caller"]);
}
