//! Maps filled on purpose (stacks, sites, per-CPU lanes, live blocks): every loss counted,
//! counts exact where the maps held.

use crate::support::*;

use super::*;

// =============================================================================================
// Maps filled on purpose
// =============================================================================================

/// `fill stacks 20 3` makes 20 distinct stacks (recursion depths 0..19, in order), 3
/// malloc+free each; `--max-stacks 8` holds the first 8. Every allocation whose stack could
/// not be stored is one `stack_map_full` loss: (20 − 8) × 3 = 36, exactly. Its block is still
/// tracked, so the process's totals stay exact; the 8 stored sites have exactly their 3.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn full_stack_map_counts_every_lost_stack() {
    alloctrace_bin();
    let run = launch(
        "fill",
        &["stacks", "20", "3"],
        &[os("--max-stacks"), os("8")],
        Scratch::new(),
    );
    run.finished.assert_code(0);
    assert_process_matches(&run.report, &run.truth);
    assert_eq!(
        run.report.sites_of(run.truth.pid).len(),
        8,
        "{}",
        run.report.describe_sites(run.truth.pid)
    );
    // All eight are recurse_alloc's.
    assert_recursing_sites(
        &run,
        8,
        Counters {
            allocs: 3,
            bytes: 96,
            frees: 3,
            freed_bytes: 96,
        },
    );
    assert_only_loss(&run, "stack_map_full", 36, "raise --max-stacks");
}

/// `fill stacks`' process has `n` sites in recurse_alloc, each with counters `each`.
fn assert_recursing_sites(run: &Launched, n: usize, each: Counters) {
    let pid = run.truth.pid;
    let sites = run.report.sites_in(pid, "recurse_alloc");
    assert_eq!(sites.len(), n, "{}", run.report.describe_sites(pid));
    for s in sites {
        assert_eq!(
            Counters::from_json(&s["counters"], "site"),
            each,
            "{}",
            run.report.describe_sites(pid)
        );
    }
}

/// The `-v` line of the final drain about the site table: (slots in use, lane slots past
/// lane 0 among them, lane slots that may still be claimed).
pub(super) fn site_table_line(finished: &Finished) -> (u64, u64, i64) {
    let context = finished.describe();
    let line = finished
        .stderr
        .lines()
        .find_map(|l| l.split_once("site table: ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no site table line under -v\n{context}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let number = |w: Option<&&str>| -> i64 {
        w.and_then(|w| w.trim_start_matches('(').parse().ok())
            .unwrap_or_else(|| panic!("unexpected site table line {line:?}\n{context}"))
    };
    // "{slots} slots in use, {lanes} of them lanes past the first (room for {left} more)"
    (
        number(words.first()) as u64,
        number(words.get(4)) as u64,
        number(words.get(13)),
    )
}

/// The CPU tests pin to for lane 1 of the site table (CPU 1: lane = CPU mod LANES).
pub(super) fn lane_one_cpu() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        cpus >= 2,
        "this test needs two CPUs (lane 1 of the site table is CPU 1's); this machine has {cpus}"
    );
    1
}

/// `f`'s result, run on a thread pinned to `cpu` (with everything it starts), so the pin
/// does not outlive it.
fn on_cpu<T: Send>(cpu: usize, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            pin_to_cpu(cpu);
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// A site counted on a CPU past lane 0 gets a slot of its own there (so threads on different
/// CPUs do not contend for one site's counters), and user space adds a site's slots up. All
/// of it pinned to CPU 1: each site's first allocation creates the site in lane 0, every
/// later one counts in lane 1's slot; the sites' counts are exact only if both are added.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn sites_on_another_cpu_count_in_their_lane_exactly() {
    alloctrace_bin();
    let run = on_cpu(lane_one_cpu(), || {
        launch("threads", &[], &[os("-v")], Scratch::new())
    });
    run.finished.assert_code(0);
    assert_sites_match(&run.report, &run.truth, &[]);
    assert_process_is_sum_of_sites(&run.report, run.truth.pid);
    assert_no_losses(&run.report);
    let (slots, lanes, _) = site_table_line(&run.finished);
    let sites = run.report.sites_of(run.truth.pid).len() as u64;
    // Every site with more than one allocation has its lane-1 slot too.
    assert!(
        lanes >= 1 && slots > sites,
        "{slots} slots ({lanes} lanes) for {sites} sites\n{}",
        run.finished.describe()
    );
}

/// Lane slots are bounded by the spread budget (a quarter of --max-stacks): past it a CPU
/// counts in lane 0's slot, still exactly. `--max-stacks 4` gives one lane slot; `fill stacks
/// 3 5`, pinned to CPU 1, makes three sites of five allocations: the first site takes the one
/// lane slot, the other two count in lane 0.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn the_spread_budget_bounds_lane_slots_and_counts_stay_exact() {
    alloctrace_bin();
    let run = on_cpu(lane_one_cpu(), || {
        launch(
            "fill",
            &["stacks", "3", "5"],
            &[os("-v"), os("--max-stacks"), os("4")],
            Scratch::new(),
        )
    });
    run.finished.assert_code(0);
    assert_process_matches(&run.report, &run.truth);
    assert_recursing_sites(
        &run,
        3,
        Counters {
            allocs: 5,
            bytes: 160,
            frees: 5,
            freed_bytes: 160,
        },
    );
    assert_no_losses(&run.report);
    let (_, lanes, left) = site_table_line(&run.finished);
    assert_eq!(
        (lanes, left),
        (1, 0),
        "lane slots past lane 0, and room for more\n{}",
        run.finished.describe()
    );
}

/// The report's only non-zero loss counter is `name`, at exactly `n`, and stderr printed the
/// hint that fixes it.
fn assert_only_loss(run: &Launched, name: &str, n: u64, hint: &str) {
    let context = run.finished.describe();
    let mut losses = run.report.losses();
    assert_eq!(losses.remove(name), Some(n), "{context}");
    assert!(losses.values().all(|&n| n == 0), "{losses:?}");
    assert!(
        run.finished.stderr.contains(hint),
        "no hint on stderr\n{context}"
    );
}

/// `fill live 1000` holds 1,000 blocks at once; `--max-live 100` gives the in-flight table 256
/// slots, so between 100 and 256 of them are tracked. Every other one is a `live_map_full`
/// loss, exactly; allocations stay exact, and the lost blocks' frees can only be unknown
/// frees, while the tracked ones are frees of hold_alloc's site.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn full_live_map_counts_every_lost_block() {
    alloctrace_bin();
    let run = launch(
        "fill",
        &["live", "1000"],
        &[os("--max-live"), os("100")],
        Scratch::new(),
    );
    run.finished.assert_code(0);
    let context = run.finished.describe();
    let pid = run.truth.pid;
    let p = run.report.process(pid);
    let f = run.report.functions(pid);
    let tracked = f["hold_alloc"].counters.frees;
    assert!(
        (100..=256).contains(&tracked),
        "{tracked} blocks tracked\n{}",
        run.report.describe_sites(pid)
    );
    let expect = Counters {
        allocs: 1000,
        bytes: 48_000,
        frees: tracked,
        freed_bytes: 48 * tracked,
    };
    assert_eq!(
        f["hold_alloc"].counters,
        expect,
        "{}",
        run.report.describe_sites(pid)
    );
    assert_eq!(run.report.process_counters(pid), expect, "{p}\n{context}");
    assert_eq!(p["unknown_frees"].as_u64(), Some(1000 - tracked), "{p}");
    assert_only_loss(&run, "live_map_full", 1000 - tracked, "raise --max-live");
}
