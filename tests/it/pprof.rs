//! `--pprof FILE.pb.gz`, read back by a decoder nobody here wrote: the official
//! `profile.proto` of github.com/google/pprof (vendored as `tests/pprof/profile.proto`),
//! compiled at test time by protoc (PyPI's `grpcio-tools`) into Python and run by
//! `tests/pprof/decode.py`, which prints a JSON summary. The workload is `workloads/sites.c`,
//! whose own ground truth every value is checked against.
//!
//! Privileged: run with `cargo xtask test` (root, `ALLOCTRACE_BIN`, `--include-ignored`), which
//! also installs the Python modules (`cargo xtask setup`).
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;
use serde_json::Value;

const INSTALL_HINT: &str = "install them with `cargo xtask setup` or \
     `python3 -m pip install protobuf==7.36.2 grpcio-tools==1.85.1` (on Debian also \
     `apt-get install python3 python3-pip`)";

/// The sample types and units of a Go heap profile, in order.
const SAMPLE_TYPES: [(&str, &str); 4] = [
    ("alloc_objects", "count"),
    ("alloc_space", "bytes"),
    ("inuse_objects", "count"),
    ("inuse_space", "bytes"),
];

fn pprof_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pprof")
}

/// Runs `python3 ARGS`; panics saying how to install Python and the modules when it cannot
/// start or fails.
fn python(args: &[&OsStr], what: &str) -> String {
    let out = Command::new("python3")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({what}): {e}; {INSTALL_HINT}"));
    if !out.status.success() {
        panic!(
            "python3 {what} failed ({}): {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            INSTALL_HINT
        );
    }
    String::from_utf8(out.stdout).expect("python3 writes UTF-8")
}

/// Checks that python3 has `google.protobuf` and `grpc_tools`, and compiles
/// `tests/pprof/profile.proto` into `dir` (which then holds `profile_pb2.py`).
fn compile_proto(dir: &Path) {
    python(
        &[
            OsStr::new("-c"),
            OsStr::new("import google.protobuf, grpc_tools"),
        ],
        "importing google.protobuf and grpc_tools (the pprof test decodes with them)",
    );
    let proto_dir = pprof_dir();
    let include = format!("-I{}", proto_dir.display());
    let out = format!("--python_out={}", dir.display());
    let proto = proto_dir.join("profile.proto");
    python(
        &[
            OsStr::new("-m"),
            OsStr::new("grpc_tools.protoc"),
            OsStr::new(&include),
            OsStr::new(&out),
            proto.as_os_str(),
        ],
        "-m grpc_tools.protoc profile.proto",
    );
    assert!(
        dir.join("profile_pb2.py").is_file(),
        "protoc wrote no profile_pb2.py into {}",
        dir.display()
    );
}

/// The GNU build id of the ELF file at `path`, lower-case hex, read from its note.
fn elf_build_id(path: &Path) -> String {
    use object::Object;
    let data =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let file = object::File::parse(&*data)
        .unwrap_or_else(|e| panic!("{} is not an object file: {e}", path.display()));
    let id = file
        .build_id()
        .unwrap_or_else(|e| panic!("{}: cannot read the build id note: {e}", path.display()))
        .unwrap_or_else(|| panic!("{} has no GNU build id note", path.display()));
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn u64_of(v: &Value, what: &str) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("decoded {what} is {v}, not an unsigned integer"))
}

/// The four values of a `{type: sum}` object, in [`SAMPLE_TYPES`] order.
fn values(v: &Value, what: &str) -> [u64; 4] {
    SAMPLE_TYPES.map(|(t, _)| u64_of(&v[t], &format!("{what}.{t}")))
}

fn want_values(c: &Counters) -> [u64; 4] {
    [c.allocs, c.bytes, c.live_objects(), c.live_bytes()]
}

/// sites.c under `alloctrace --pprof`, the profile decoded by the official profile.proto: the
/// sample types are a Go heap profile's; totals and every allocating function's four values
/// equal the ground truth (nothing else in the process allocates); the workload's and libc's
/// mappings carry the build ids of their ELF notes; ids and addresses are consistent.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn official_decoder_reads_the_ground_truth() {
    alloctrace_bin();
    let scratch = Scratch::new();
    // Before tracing: a missing module fails fast, with the way to install it.
    let pb2 = scratch.path("pb2");
    std::fs::create_dir(&pb2).expect("create the protoc output dir");
    compile_proto(&pb2);

    let pprof_path = scratch.path("x.pb.gz");
    let run = launch(
        "sites",
        &[],
        &[OsStr::new("--pprof"), pprof_path.as_os_str()],
        scratch,
    );
    run.finished.assert_code(0);
    assert!(
        run.finished.stderr.contains(&format!(
            "pprof profile written to {}",
            pprof_path.display()
        )),
        "alloctrace does not say where it wrote the profile\n{}",
        run.finished.describe()
    );
    let text = python(
        &[
            pprof_dir().join("decode.py").as_os_str(),
            pb2.as_os_str(),
            pprof_path.as_os_str(),
        ],
        "tests/pprof/decode.py",
    );
    let d: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("decode.py printed no JSON ({e}):\n{text}"));
    let context = format!(
        "decoded profile:\n{}\nground truth:\n{}\n{}",
        excerpt(&text, 12000),
        run.truth.text,
        run.report.describe_sites(run.truth.pid)
    );
    let mut problems: Vec<String> = Vec::new();

    // profile.proto's own rules.
    if let Some(ps) = d["problems"].as_array().filter(|ps| !ps.is_empty()) {
        problems.extend(ps.iter().map(|p| format!("profile.proto rule broken: {p}")));
    }

    // Header.
    let types: Vec<(String, String)> = d["sample_types"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    (
                        t[0].as_str().unwrap_or("?").into(),
                        t[1].as_str().unwrap_or("?").into(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let want_types: Vec<(String, String)> = SAMPLE_TYPES
        .iter()
        .map(|(t, u)| (t.to_string(), u.to_string()))
        .collect();
    if types != want_types {
        problems.push(format!("sample types {types:?}, expected {want_types:?}"));
    }
    if d["period_type"] != serde_json::json!(["space", "bytes"]) || d["period"] != 1 {
        problems.push(format!(
            "period {} of {}, expected 1 of [space, bytes] (nothing is sampled)",
            d["period"], d["period_type"]
        ));
    }
    let duration = d["duration_nanos"].as_i64().unwrap_or(0);
    if duration <= 0 {
        problems.push(format!("duration_nanos {duration}, expected > 0"));
    }
    let report_start = run.report.json["start_unix_secs"].as_u64();
    let time = d["time_nanos"].as_i64().unwrap_or(0);
    if report_start.map(|s| s as i64 * 1_000_000_000) != Some(time) {
        problems.push(format!(
            "time_nanos {time}, expected the report's start_unix_secs {report_start:?} in ns"
        ));
    }
    let comments = d["comments"].to_string();
    if !comments.contains(&*run.command.to_string_lossy()) {
        problems.push(format!(
            "the comments {comments} do not name the target command"
        ));
    }

    // Values: totals and per allocating function, against the ground truth.
    let want_total = want_values(&run.truth.total());
    let total = values(&d["totals"], "totals");
    if total != want_total {
        problems.push(format!(
            "totals (alloc_objects, alloc_space, inuse_objects, inuse_space) {total:?}, expected {want_total:?}"
        ));
    }
    let by_leaf: BTreeMap<String, [u64; 4]> = d["by_leaf"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), values(v, &format!("by_leaf.{k}"))))
                .collect()
        })
        .unwrap_or_default();
    for s in &run.truth.sites {
        let want = want_values(&s.counters);
        let got = by_leaf.get(&s.function).copied().unwrap_or_default();
        if got != want {
            problems.push(format!(
                "{}: samples with it as leaf sum to {got:?}, expected {want:?}",
                s.function
            ));
        }
    }
    let strangers: Vec<&String> = by_leaf
        .iter()
        .filter(|(f, v)| **v != [0; 4] && !run.truth.sites.iter().any(|s| &s.function == *f))
        .map(|(f, _)| f)
        .collect();
    if !strangers.is_empty() {
        problems.push(format!(
            "samples whose leaf is none of sites.c's functions: {strangers:?}"
        ));
    }
    let labelled = d["samples"].as_array().map_or(0, |ss| {
        ss.iter()
            .filter(|s| s["labels"] != serde_json::json!({}))
            .count()
    });
    if labelled > 0 {
        problems.push(format!(
            "{labelled} samples have labels; one process needs no pid/comm labels"
        ));
    }
    let chain = d["samples"].as_array().and_then(|ss| {
        ss.iter()
            .find(|s| s["stack"][0] == "leaf_caller")
            .map(|s| s["stack"].clone())
    });
    match &chain {
        Some(stack) if stack.as_array().is_some_and(|a| a.len() >= 4 && a[..4] == ["leaf_caller", "mid", "top", "main"]) => {}
        other => problems.push(format!(
            "leaf_caller's sample stack should start leaf_caller, mid, top, main (innermost first): {other:?}"
        )),
    }

    // Mappings: the workload binary (first: pprof's main binary) and libc, with their build ids.
    let mappings = d["mappings"].as_array().cloned().unwrap_or_default();
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let exe = canonical(&run.command);
    let exe_mapping = mappings
        .iter()
        .position(|m| m["filename"].as_str().map(|f| canonical(Path::new(f))) == Some(exe.clone()));
    match exe_mapping {
        None => problems.push(format!("no mapping of the workload {}", exe.display())),
        Some(i) => {
            if i != 0 {
                problems.push(format!(
                    "the workload's mapping is mapping[{i}], not mapping[0] (pprof's main binary)"
                ));
            }
            let want = elf_build_id(&exe);
            if mappings[i]["build_id"] != want.as_str() {
                problems.push(format!(
                    "the workload's mapping has build id {}, its ELF note says {want}",
                    mappings[i]["build_id"]
                ));
            }
            if mappings[i]["has_functions"] != true {
                problems.push("the workload's mapping does not say it has functions".into());
            }
        }
    }
    let libc = mappings.iter().find(|m| {
        m["filename"]
            .as_str()
            .and_then(|f| f.rsplit('/').next())
            .is_some_and(|b| b.starts_with("libc.so") || b.starts_with("libc-"))
    });
    match libc {
        None => problems.push("no mapping of libc".into()),
        Some(m) => {
            let path = m["filename"].as_str().unwrap_or_default();
            let want = elf_build_id(Path::new(path));
            if m["build_id"] != want.as_str() {
                problems.push(format!(
                    "libc's mapping ({path}) has build id {}, its ELF note says {want}",
                    m["build_id"]
                ));
            }
        }
    }

    assert!(
        problems.is_empty(),
        "the pprof profile, decoded with the official profile.proto, disagrees:\n  - {}\n\n{context}",
        problems.join("\n  - ")
    );
}
