//! Output path safety: planted symlinks replaced, never followed; an unwritable or vanished
//! output directory is an error.
use std::ffi::OsString;
use std::os::unix::fs::{symlink, FileTypeExt};
use std::path::{Path, PathBuf};

use crate::support::*;

use super::*;

// =============================================================================================
// Output path safety
// =============================================================================================

/// Symlinks planted where the outputs go are replaced, never followed (alloctrace runs as
/// root): the report's link pointed at an existing file, which keeps its content; the folded
/// stacks' link dangled towards a file that must not be created. Both outputs end up as
/// regular files with the right content, and no temporary file is left.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn planted_symlinks_are_replaced_not_followed() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let victim = scratch.path("victim");
    std::fs::write(&victim, b"precious").unwrap();
    symlink(&victim, scratch.path("report.json")).unwrap();
    let not_created = scratch.path("created-through-link");
    symlink(&not_created, scratch.path("stacks.folded")).unwrap();
    let folded: OsString = scratch.path("stacks.folded").into();
    let run = launch("ticker", &["3", "0"], &[os("--folded"), &folded], scratch);
    run.finished.assert_code(0);
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"precious",
        "the link was followed"
    );
    assert!(!not_created.exists(), "the dangling link was followed");
    for name in ["report.json", "stacks.folded"] {
        let m = std::fs::symlink_metadata(run.scratch.path(name)).unwrap();
        assert!(
            m.file_type().is_file(),
            "{name} is not a regular file: {m:?}"
        );
    }
    assert_sites_match(&run.report, &run.truth, &[]);
    let folded = std::fs::read_to_string(run.scratch.path("stacks.folded")).unwrap();
    assert_eq!(
        folded_by_leaf(&parse_folded(&folded)).get("tick_alloc"),
        Some(&1536)
    );
    assert_eq!(
        dir_entries(run.scratch.path("").as_path()),
        ["report.json", "stacks.folded", "truth.txt", "victim"]
    );
}

/// A symlink planted in a world-writable directory under /dev (/dev/shm) is not mistaken for a
/// /dev/stdout-style stream: pointed at a character device, it is replaced by a regular file,
/// and the device is not written (a link to /dev/mem would otherwise get the report).
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn symlink_under_dev_shm_is_not_followed_to_a_device() {
    alloctrace_bin();
    assert!(
        Path::new("/dev/shm").is_dir(),
        "no /dev/shm on this machine"
    );
    let link = PathBuf::from(format!(
        "/dev/shm/alloctrace-reliability-{}.json",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&link);
    symlink("/dev/null", &link).unwrap();
    struct Rm(PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _rm = Rm(link.clone());
    let finished = run_alloctrace(
        &[
            os("--report"),
            os("json"),
            os("-o"),
            link.as_os_str(),
            os("--"),
            workload("ticker").as_os_str(),
            os("2"),
            os("0"),
        ],
        &[("GROUND_TRUTH", os("/dev/null"))],
    );
    finished.assert_code(0);
    let m = std::fs::symlink_metadata(&link).unwrap();
    assert!(
        m.file_type().is_file(),
        "the link under /dev/shm was followed: {m:?}\n{}",
        finished.describe()
    );
    Report::read(&link, &finished.describe());
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
}

/// An output directory where nothing can be created (sysfs refuses new files even to root) is
/// refused before tracing, in one line naming the path.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn unwritable_output_directory_is_an_error() {
    alloctrace_bin();
    let finished = run_alloctrace(
        &["--duration", "5s", "-o", "/sys/alloctrace-report.json"],
        &[],
    );
    finished.assert_one_line_error(&["/sys/alloctrace-report.json"]);
}

/// The output directory disappears while tracing: the run still ends (the command exits), and
/// alloctrace fails with a one-line error naming the file, non-zero, no panic.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn output_directory_removed_during_the_run_is_an_error() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let dir = scratch.path("out");
    std::fs::create_dir(&dir).unwrap();
    let report = dir.join("report.json");
    let mut tracer = Running::spawn(
        &[
            os("--interval"),
            os(INTERVAL),
            os("-o"),
            report.as_os_str(),
            os("--"),
            workload("ticker").as_os_str(),
            os("20"),
            os("50"),
        ],
        &[("GROUND_TRUTH", scratch.path("truth.txt").as_os_str())],
    );
    tracer.wait_until_tracing();
    std::fs::remove_dir(&dir).unwrap();
    let finished = tracer.wait(RUN_TIMEOUT);
    assert_ne!(finished.code(), 0, "{}", finished.describe());
    let last = finished.stderr.lines().last().unwrap_or("");
    assert!(
        last.starts_with(ERROR_PREFIX) && last.contains(report.to_str().unwrap()),
        "the last stderr line is not a one-line error naming the report\n{}",
        finished.describe()
    );
    assert!(
        !finished.stderr.contains("panicked"),
        "{}",
        finished.describe()
    );
}
