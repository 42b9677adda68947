//! Probe placement: on this glibc free starts with `test %rdi,%rdi` (single-stepped, ~14 µs a
//! hit here) and its next instruction, a `je`, is emulated by the kernel (~0.4 µs); the
//! posix_memalign/aligned_alloc/valloc family starts with a `cmpb` on `__malloc_initialized`.
//! alloctrace probes those functions past such instructions when that is provably the same as
//! probing the entry, and says so under `-v`. Counts must not change by one: each test launches
//! `workloads/sites.c` and checks the report against its ground truth exactly.
//!
//! Privileged: run with `cargo xtask test` (root, `ALLOCTRACE_BIN`, `--include-ignored`).
use std::ffi::OsStr;

use crate::support::*;

/// What `-v` prints for each probed function.
const PLACEMENT_PREFIX: &str = "probe placement: ";

/// `sites` under `alloctrace -v` with `env` set for alloctrace; asserts both exited 0.
fn run_sites_verbose(env: &[(&str, &OsStr)]) -> Launched {
    let run = launch_env("sites", &[], &[OsStr::new("-v")], env, Scratch::new());
    run.finished.assert_code(0);
    run
}

/// The `-v` placement line of each probed function: symbol -> (offset, whole line).
fn placements(run: &Launched) -> Vec<(String, u64, String)> {
    let mut out = Vec::new();
    for line in run.finished.stderr.lines() {
        let Some(rest) = line.split_once(PLACEMENT_PREFIX).map(|(_, r)| r) else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(symbol), Some(offset)) = (words.next(), words.next()) else {
            continue;
        };
        let offset = offset
            .strip_prefix('+')
            .and_then(|o| o.parse().ok())
            .unwrap_or_else(|| panic!("placement line without +OFFSET: {line}"));
        out.push((symbol.to_string(), offset, line.to_string()));
    }
    assert!(
        out.iter().any(|(s, _, _)| s == "malloc") && out.iter().any(|(s, _, _)| s == "free"),
        "`-v` printed no placement line for malloc and free\n{}",
        run.finished.describe()
    );
    out
}

/// Every count of sites.c, exactly: per site (frames[0] is the allocator's immediate caller,
/// read from `[rsp]` at the probe), the process totals, no unknown frees, no losses; and the
/// leaf_caller -> mid -> top -> main chain intact.
fn assert_exact(run: &Launched) {
    assert_sites_match(&run.report, &run.truth, &[]);
    assert_process_matches(&run.report, &run.truth);
    assert_process_is_sum_of_sites(&run.report, run.truth.pid);
    assert_no_losses(&run.report);
    let unknown = &run.report.process(run.truth.pid)["unknown_frees"];
    assert_eq!(
        unknown.as_u64(),
        Some(0),
        "unknown_frees: every block was allocated under tracing\n{}",
        run.report.describe_sites(run.truth.pid)
    );
    let sites = run.report.sites_in(run.truth.pid, "leaf_caller");
    assert_eq!(
        sites.len(),
        1,
        "{}",
        run.report.describe_sites(run.truth.pid)
    );
    let names = Report::frame_names(sites[0]);
    assert!(
        names.len() >= 4 && names[..4] == ["leaf_caller", "mid", "top", "main"],
        "leaf_caller's stack: {names:?}"
    );
}

/// Default placement: free is probed past its NULL check on the `je` (emulated), every probe
/// moved past its entry is on an emulated instruction, and the counts are exact.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn free_is_probed_past_its_null_check_with_exact_counts() {
    alloctrace_bin();
    let run = run_sites_verbose(&[]);
    let placed = placements(&run);
    let (_, free_at, free_line) = placed
        .iter()
        .find(|(s, _, _)| s == "free")
        .expect("checked above");
    assert!(
        *free_at > 0
            && free_line.contains("past `test rdi,rdi`")
            && free_line.contains("(emulated)"),
        "on this glibc free starts with `test %rdi,%rdi` then `je`: expected it probed past the \
         test, on the emulated je; -v says:\n{free_line}\n{}",
        run.finished.describe()
    );
    for (symbol, at, line) in &placed {
        if *at > 0 {
            assert!(
                line.contains("(emulated)"),
                "{symbol} moved to a single-stepped instruction: {line}"
            );
        }
    }
    assert_exact(&run);
}

/// `ALLOCTRACE_PROBE_AT=entry` (the bench's entry-probed configuration) probes every function at
/// its first instruction, with the same exact counts.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn entry_mode_probes_every_function_at_offset_zero_with_exact_counts() {
    alloctrace_bin();
    let run = run_sites_verbose(&[("ALLOCTRACE_PROBE_AT", OsStr::new("entry"))]);
    for (symbol, at, line) in placements(&run) {
        assert_eq!(
            at, 0,
            "{symbol} is not at its entry with ALLOCTRACE_PROBE_AT=entry: {line}"
        );
    }
    assert_exact(&run);
}

/// A bad ALLOCTRACE_PROBE_AT is refused with one line naming it, not ignored.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn a_bad_probe_at_value_is_refused() {
    alloctrace_bin();
    let sites = workload("sites");
    let finished = run_alloctrace(
        &[OsStr::new("--"), sites.as_os_str()],
        &[("ALLOCTRACE_PROBE_AT", OsStr::new("middle"))],
    );
    assert_ne!(finished.code(), 0, "{}", finished.describe());
    assert!(
        finished.stderr.contains("ALLOCTRACE_PROBE_AT=middle"),
        "{}",
        finished.describe()
    );
}
