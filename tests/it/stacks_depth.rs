//! Stacks as deep as the limit are whole, one frame deeper is cut and counted:
//! `workloads/nofp_deep.c` (no frame pointers) recurses to a leaf whose stack is exactly
//! `MAX_FRAMES` (127) frames down to `_start`, and to another whose stack is one frame
//! deeper. The first site carries every frame in the JSON report and the folded stacks, the
//! second its innermost 127 and is counted in `stacks_cut` with its bytes; both exactly as
//! the workload counted. DWARF unwinding (`--unwind dwarf`): the frame-pointer walk stops at
//! `FP_MAX_FRAMES`, and at the first frame in code without frame pointers anyway.
//!
//! Privileged: run with `cargo xtask test` (root, `ALLOCTRACE_BIN`, `--include-ignored`).
use std::ffi::{OsStr, OsString};

use alloctrace_common::MAX_FRAMES;

use crate::support::*;

/// nofp_deep.c's counts and sizes (keep them in step).
const WHOLE_CALLS: u64 = 50;
const CUT_CALLS: u64 = 20;
const SIZE_WHOLE: u64 = 48;
const SIZE_CUT: u64 = 80;

/// Frames below the recursion: main and glibc's start.
const ROOT: &[&str] = &[
    "main",
    "__libc_start_call_main",
    "__libc_start_main_impl",
    "_start",
];

/// A leaf's stack: itself, `depth` nofp_descend frames, then `ROOT`.
fn stack(leaf: &str, depth: usize) -> Vec<String> {
    std::iter::once(leaf)
        .chain(std::iter::repeat_n("nofp_descend", depth))
        .chain(ROOT.iter().copied())
        .map(str::to_string)
        .collect()
}

#[test]
#[ignore = "needs root and BPF: run with `cargo xtask test`"]
fn a_stack_at_the_depth_limit_is_whole_and_one_deeper_is_cut_and_counted() {
    // depth + 1 + ROOT frames: exactly MAX_FRAMES, and one more.
    let whole_depth = MAX_FRAMES - 1 - ROOT.len();
    let cut_depth = whole_depth + 1;
    let scratch = Scratch::new();
    let folded_path = scratch.path("stacks.folded");
    let extra: Vec<OsString> = ["--unwind", "dwarf", "--folded"]
        .map(OsString::from)
        .into_iter()
        .chain([folded_path.clone().into_os_string()])
        .collect();
    let extra: Vec<&OsStr> = extra.iter().map(|a| a.as_os_str()).collect();
    let (whole_arg, cut_arg) = (whole_depth.to_string(), cut_depth.to_string());
    let run = launch("nofp_deep", &[&whole_arg, &cut_arg], &extra, scratch);
    run.finished.assert_code(0);
    let context = run.finished.describe();
    let pid = run.truth.pid;
    assert_sites_match(
        &run.report,
        &run.truth,
        &["nofp_whole_leaf", "nofp_cut_leaf"],
    );

    let names = |leaf: &str| -> Vec<Vec<String>> {
        run.report
            .sites_in(pid, leaf)
            .iter()
            .map(|s| Report::frame_names(s))
            .collect()
    };
    let whole = stack("nofp_whole_leaf", whole_depth);
    assert_eq!(whole.len(), MAX_FRAMES);
    assert_eq!(
        names("nofp_whole_leaf"),
        vec![whole.clone()],
        "the stack of exactly {MAX_FRAMES} frames\n{}\n{context}",
        run.report.describe_sites(pid)
    );
    let mut cut = stack("nofp_cut_leaf", cut_depth);
    cut.truncate(MAX_FRAMES);
    assert_eq!(
        names("nofp_cut_leaf"),
        vec![cut],
        "the stack one frame deeper: its innermost {MAX_FRAMES} frames\n{}\n{context}",
        run.report.describe_sites(pid)
    );
    let losses = run.report.losses();
    assert_eq!(
        (losses.get("stacks_cut"), losses.get("stacks_cut_bytes")),
        (Some(&1), Some(&(CUT_CALLS * SIZE_CUT))),
        "the deeper stack is the one cut, with its bytes\n{context}"
    );

    // The folded stacks (bytes, root first) hold the whole stack in one line.
    let text = std::fs::read_to_string(&folded_path)
        .unwrap_or_else(|e| panic!("{}: {e}\n{context}", folded_path.display()));
    let folded = parse_folded(&text);
    let mut root_first = whole;
    root_first.reverse();
    let line = folded
        .iter()
        .find(|(frames, _)| frames.last().is_some_and(|f| f == "nofp_whole_leaf"))
        .unwrap_or_else(|| panic!("no folded line ends in nofp_whole_leaf: {folded:?}"));
    assert_eq!(
        line,
        &(root_first, WHOLE_CALLS * SIZE_WHOLE),
        "the folded line of the {MAX_FRAMES}-frame stack\n{context}"
    );
}

/// The frame-pointer walk's own limit (`FP_MAX_FRAMES`) is counted too: `workloads/fill.c`
/// (built with frame pointers) allocates once at each recursion depth 0..40, stacks of
/// depth + 5 frames; those whose chain goes on past the limit are cut and counted, never
/// shown as if they ended there. The DWARF walk keeps all 40 whole.
#[test]
#[ignore = "needs root and BPF: run with `cargo xtask test`"]
fn frame_pointer_stacks_past_their_limit_are_counted_cut() {
    use alloctrace_common::FP_MAX_FRAMES;
    for (how, want_cut) in [("fp", true), ("dwarf", false)] {
        let run = launch(
            "fill",
            &["stacks", "40", "1"],
            &[OsStr::new("--unwind"), OsStr::new(how)],
            Scratch::new(),
        );
        run.finished.assert_code(0);
        let context = run.finished.describe();
        assert_sites_match(&run.report, &run.truth, &["recurse_alloc"]);
        let pid = run.truth.pid;
        let sites = run.report.sites_in(pid, "recurse_alloc");
        let deepest = sites
            .iter()
            .map(|s| Report::frame_names(s).len())
            .max()
            .unwrap_or(0);
        let cut = run.report.losses().get("stacks_cut").copied().unwrap_or(0);
        if want_cut {
            assert_eq!(deepest, FP_MAX_FRAMES, "--unwind fp\n{context}");
            assert!(
                cut >= 1,
                "--unwind fp: stacks past {FP_MAX_FRAMES} frames not counted cut\n{}\n{context}",
                run.report.describe_sites(pid)
            );
        } else {
            assert_eq!((deepest, cut), (44, 0), "--unwind dwarf\n{context}");
        }
    }
}
