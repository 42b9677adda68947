//! Stacks hold return addresses into code and nothing else, and functions keep their names:
//! `workloads/nofp_secret.c` (no frame pointers, rbp pointing at the secret
//! `S3CRET!!PASSWD=hunter2!!` laid out as frame records, with a value that changes per call
//! after it) must leak no byte of the secret into any output and show each of its functions
//! as one site; `workloads/short_names.c`'s C functions `a` and `h` keep those names.
//!
//! Privileged: run with `cargo xtask test` (root, `ALLOCTRACE_BIN`, `--include-ignored`).
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::Path;

use crate::support::*;

const SECRET: &[u8; 24] = b"S3CRET!!PASSWD=hunter2!!";
const NOFP_FUNCTIONS: &[&str] = &["nofp_site_one", "nofp_site_two", "nofp_site_three"];

/// Every form the secret could take in an output: its text, and each 8-byte piece (which a
/// frame-pointer walk reads as an address) as text, hex (any case, with or without 0x),
/// decimal, and protobuf varint (pprof's addresses).
fn needles() -> Vec<(String, Vec<u8>)> {
    let mut out = vec![("the secret".to_string(), SECRET.to_vec())];
    for chunk in SECRET.chunks(8) {
        let v = u64::from_le_bytes(chunk.try_into().unwrap());
        let name = |form: &str| format!("{:?} as {form}", String::from_utf8_lossy(chunk));
        out.push((name("text"), chunk.to_vec()));
        out.push((name("hex"), format!("{v:x}").into_bytes()));
        out.push((name("HEX"), format!("{v:X}").into_bytes()));
        out.push((name("decimal"), v.to_string().into_bytes()));
        let mut varint = Vec::new();
        let mut x = v;
        while x >= 0x80 {
            varint.push((x as u8) | 0x80);
            x >>= 7;
        }
        varint.push(x as u8);
        out.push((name("varint"), varint));
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The file's bytes, gunzipped if it is gzip (the pprof profile).
fn read_output(path: &Path) -> Vec<u8> {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .unwrap_or_else(|e| panic!("cannot gunzip {}: {e}", path.display()));
        return out;
    }
    bytes
}

fn assert_no_secret(what: &str, data: &[u8], context: &str) {
    for (form, needle) in needles() {
        assert!(
            !contains(data, &needle),
            "{what} holds {form}: stack data leaked as frames\n{context}"
        );
    }
}

/// Every output alloctrace writes, for `nofp_secret` traced in launch mode: the JSON report,
/// folded stacks, flame graph, pprof profile and HTML page in one run, the text report (by
/// stack, the longest listing) in another; and what alloctrace printed.
#[test]
#[ignore = "needs root and BPF: run with `cargo xtask test`"]
fn no_stack_data_reaches_any_output() {
    let scratch = Scratch::new();
    let files = [
        ("--folded", "stacks.folded"),
        ("--flamegraph", "flame.svg"),
        ("--pprof", "profile.pb.gz"),
        ("--html", "report.html"),
    ];
    let extra: Vec<OsString> = files
        .iter()
        .flat_map(|(opt, f)| [OsString::from(opt), scratch.path(f).into_os_string()])
        .collect();
    let extra: Vec<&OsStr> = extra.iter().map(|a| a.as_os_str()).collect();
    let run = launch("nofp_secret", &[], &extra, scratch);
    run.finished.assert_code(0);
    let context = run.finished.describe();
    assert_no_secret(
        "the JSON report",
        &read_output(&run.scratch.path("report.json")),
        &context,
    );
    for (opt, f) in files {
        assert_no_secret(opt, &read_output(&run.scratch.path(f)), &context);
    }
    assert_no_secret(
        "alloctrace's output",
        run.finished.stdout.as_bytes(),
        &context,
    );
    assert_no_secret(
        "alloctrace's errors",
        run.finished.stderr.as_bytes(),
        &context,
    );

    let text = run.scratch.path("report.txt");
    let truth = run.scratch.path("truth-text.txt");
    // The frame-pointer walk, which meets the secret (DWARF unwinding never reads rbp's chain
    // in this code: the run above).
    let mut args: Vec<OsString> = [
        "--unwind",
        "fp",
        "--report",
        "text",
        "--group-by",
        "stack",
        "-o",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    args.push(text.clone().into());
    args.push("--".into());
    args.push(workload("nofp_secret").into());
    let finished = run_alloctrace(&args, &[("GROUND_TRUTH", truth.as_os_str())]);
    finished.assert_code(0);
    let context = finished.describe();
    let report = read_output(&text);
    assert!(
        contains(&report, b"nofp_site_one"),
        "the text report names no site of the workload\n{context}"
    );
    assert_no_secret("the text report", &report, &context);
    assert!(
        contains(&report, b"stacks cut"),
        "the text report does not show the cut stacks\n{context}"
    );
}

/// The junk beyond each stack's first frame differs on every call, which gave one kernel site
/// per call (`--unwind fp`, which reads rbp's chain): the report shows each function as one site with exactly its ground truth, and
/// counts the sites whose stacks were cut.
#[test]
#[ignore = "needs root and BPF: run with `cargo xtask test`"]
fn junk_frames_do_not_split_sites() {
    let fp = [OsStr::new("--unwind"), OsStr::new("fp")];
    let run = launch("nofp_secret", &[], &fp, Scratch::new());
    run.finished.assert_code(0);
    let context = run.finished.describe();
    let functions = run.report.functions(run.truth.pid);
    for f in NOFP_FUNCTIONS {
        let sites = functions.get(*f).map_or(0, |s| s.sites);
        assert_eq!(
            sites,
            1,
            "{f}: {sites} sites, not 1\n{}\n{context}",
            run.report.describe_sites(run.truth.pid)
        );
    }
    assert_sites_match(&run.report, &run.truth, NOFP_FUNCTIONS);
    let cut = run.report.losses().get("stacks_cut").copied();
    assert!(
        cut.is_some_and(|n| n >= NOFP_FUNCTIONS.len() as u64),
        "losses.stacks_cut is {cut:?}: each of the workload's stacks was cut\n{context}"
    );
}

/// C functions named `a` and `h` (`signed char` and `unsigned char` to an Itanium
/// demangler) are reported under their names, with their ground truth.
#[test]
#[ignore = "needs root and BPF: run with `cargo xtask test`"]
fn c_names_are_not_demangled() {
    let run = launch("short_names", &[], &[], Scratch::new());
    run.finished.assert_code(0);
    assert_sites_match(&run.report, &run.truth, &["a", "h"]);
    let sites = run.report.describe_sites(run.truth.pid);
    assert!(
        !sites.contains("signed char"),
        "a C name was demangled as a type:\n{sites}"
    );
}
