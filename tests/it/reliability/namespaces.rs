//! Another mount namespace with its own libc: probed and symbolized through /proc/PID/root.
use std::ffi::OsStr;
use std::path::Path;

use crate::support::*;

use super::*;

// =============================================================================================
// Another mount namespace with its own libc
// =============================================================================================

/// A process started with `unshare -m` in a chroot holding its own copies of libc and the
/// dynamic loader: alloctrace --pid probes that libc (through /proc/PID/root, not the host's
/// file, which the process does not map), so every allocation is counted, and the workload's
/// functions symbolize through /proc/PID/root (its binary exists only inside the root).
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn other_mount_namespace_probes_its_own_libc() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let root = scratch.path("root");
    let libdir = root.join("lib/x86_64-linux-gnu");
    std::fs::create_dir_all(&libdir).unwrap();
    std::fs::create_dir_all(root.join("lib64")).unwrap();
    let host_libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
    let host_ld = Path::new("/lib64/ld-linux-x86-64.so.2");
    for p in [host_libc, host_ld] {
        assert!(
            p.exists(),
            "{} is missing: this test expects Debian's x86-64 layout",
            p.display()
        );
    }
    // Copies (new inodes), not links: probing the host's libc would count nothing here.
    std::fs::copy(host_libc, libdir.join("libc.so.6")).unwrap();
    std::fs::copy(host_ld, root.join("lib64/ld-linux-x86-64.so.2")).unwrap();
    std::fs::copy(workload("ticker"), root.join("ticker")).unwrap();
    let unshare = Path::new("/usr/bin/unshare");
    assert!(unshare.exists(), "unshare (util-linux) is missing");
    let mut w = Workload::start_path(
        unshare,
        &[
            "-m",
            "chroot",
            root.to_str().unwrap(),
            "/ticker",
            "6",
            "20",
            "wait",
        ],
        &[("GROUND_TRUTH", OsStr::new("/truth.txt"))],
    );
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/mnt")).unwrap();
    assert_ne!(
        ns(&w.pid().to_string()),
        ns("self"),
        "the workload shares our mount namespace"
    );
    let report_path = scratch.path("report.json");
    let mut tracer = Running::spawn(&pid_args(w.pid(), &report_path, &[]), &[]);
    let line = tracer.wait_until_tracing();
    let copy = libdir.join("libc.so.6");
    assert!(
        line.contains(&format!("in {}", copy.display()))
            || line.contains(&format!("/proc/{}/", w.pid())),
        "not the process's own libc ({}): {line}",
        copy.display()
    );
    w.release();
    w.wait_code(0);
    let finished = tracer.wait(RUN_TIMEOUT);
    finished.assert_code(0);
    let context = format!("{}\n{}", finished.describe(), w.describe());
    let truth = GroundTruth::read(&root.join("truth.txt"), &context);
    let report = Report::read(&report_path, &context);
    assert_sites_match(&report, &truth, &[]);
    assert_process_matches(&report, &truth);
}
