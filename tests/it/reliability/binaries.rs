//! Binaries deleted while traced, or stripped: their functions still symbolize (by dynsym, then
//! by offsets).
use std::path::Path;
use std::time::Duration;

use crate::support::*;

use super::*;

// =============================================================================================
// A binary deleted while traced
// =============================================================================================

/// A private copy of `ticker`, deleted after it started and before alloctrace attaches
/// (`/proc/PID/maps` says `(deleted)`): its functions still symbolize, counts exact.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn deleted_binary_still_symbolizes() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let w = start_deleted_copy("ticker", &["6", "0", "wait"], &scratch);
    let run = attach_started(w, INTERVAL, &[], scratch);
    assert_sites_match(&run.report, &run.truth, &[]);
    assert_process_matches(&run.report, &run.truth);
    let site = run.report.sites_of(run.pid)[0];
    assert_eq!(
        Report::frame_names(site).get(1).map(String::as_str),
        Some("main"),
        "{}",
        run.report.describe_sites(run.pid)
    );
}

/// The same in launch mode, the binary deleted while the command runs.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn binary_deleted_during_launch_still_symbolizes() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let copy = scratch.path("ticker-copy");
    std::fs::copy(workload("ticker"), &copy).unwrap();
    let (truth_path, report_path) = (scratch.path("truth.txt"), scratch.path("report.json"));
    let mut tracer = Running::spawn(
        &[
            os("--interval"),
            os(INTERVAL),
            os("--report"),
            os("json"),
            os("-o"),
            report_path.as_os_str(),
            os("--"),
            copy.as_os_str(),
            os("10"),
            os("50"),
        ],
        &[("GROUND_TRUTH", truth_path.as_os_str())],
    );
    tracer.wait_until_tracing();
    std::thread::sleep(Duration::from_millis(150));
    std::fs::remove_file(&copy).unwrap();
    let finished = tracer.wait(RUN_TIMEOUT);
    finished.assert_code(0);
    let context = finished.describe();
    let truth = GroundTruth::read(&truth_path, &context);
    let report = Report::read(&report_path, &context);
    assert_sites_match(&report, &truth, &[]);
    assert_process_matches(&report, &truth);
}

// =============================================================================================
// Stripped binaries
// =============================================================================================

/// `nm -S` of `bin`: (start, end) of function `name`.
fn symbol_range(bin: &Path, name: &str) -> (u64, u64) {
    let out = std::process::Command::new("nm")
        .arg("-S")
        .arg(bin)
        .output()
        .expect("run nm (binutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() == 4 && f[3] == name {
            let start = u64::from_str_radix(f[0], 16).unwrap();
            let size = u64::from_str_radix(f[1], 16).unwrap();
            return (start, start + size);
        }
    }
    panic!("nm {} has no {name}:\n{text}", bin.display());
}

/// A stripped binary (no .symtab, no debug info): a function exported in the dynamic symbol
/// table (linked with -rdynamic) is still named from it; a static one falls back to
/// `module` + `module_offset`, and that offset lies inside the function; nothing is dropped
/// (process totals exact).
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn stripped_binary_falls_back_to_dynsym_then_offsets() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads/exported.c");
    let full = scratch.path("exported-full");
    let cc = std::process::Command::new("gcc")
        .args([
            "-O1",
            "-fno-omit-frame-pointer",
            "-fno-optimize-sibling-calls",
            "-rdynamic",
            "-o",
        ])
        .arg(&full)
        .arg(&src)
        .arg(format!("-I{}", src.parent().unwrap().display()))
        .output()
        .expect("run gcc");
    assert!(
        cc.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let stripped = scratch.path("exported-stripped");
    let st = std::process::Command::new("strip")
        .args(["--strip-all", "-o"])
        .arg(&stripped)
        .arg(&full)
        .output()
        .expect("run strip");
    assert!(
        st.status.success(),
        "strip: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let hidden = symbol_range(&full, "hidden_alloc");
    let (truth_path, report_path) = (scratch.path("truth.txt"), scratch.path("report.json"));
    let finished = run_alloctrace(
        &[
            os("--report"),
            os("json"),
            os("-o"),
            report_path.as_os_str(),
            os("--"),
            stripped.as_os_str(),
        ],
        &[("GROUND_TRUTH", truth_path.as_os_str())],
    );
    finished.assert_code(0);
    let context = finished.describe();
    let truth = GroundTruth::read(&truth_path, &context);
    let report = Report::read(&report_path, &context);
    assert_process_matches(&report, &truth);
    assert_sites_match(&report, &truth, &["exported_alloc"]);
    // hidden_alloc's site: no name, but the module and an offset inside hidden_alloc.
    let unnamed: Vec<_> = report
        .sites_of(truth.pid)
        .into_iter()
        .filter(|s| Report::frame_function(s, 0).is_none())
        .collect();
    let describe = report.describe_sites(truth.pid);
    assert_eq!(unnamed.len(), 1, "{describe}");
    let f0 = &unnamed[0]["frames"][0];
    assert_eq!(
        f0["module"].as_str(),
        stripped.to_str(),
        "frame {f0}\n{describe}"
    );
    let off = f0["module_offset"].as_u64().expect("module_offset");
    assert!(
        (hidden.0..hidden.1).contains(&off),
        "offset {off:#x} is not inside hidden_alloc {:#x}..{:#x}\n{describe}",
        hidden.0,
        hidden.1
    );
    assert_eq!(
        Counters::from_json(&unnamed[0]["counters"], "site"),
        truth.site("hidden_alloc").counters
    );
}
