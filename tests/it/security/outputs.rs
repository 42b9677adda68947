//! Outputs that can neither hang alloctrace (a FIFO nobody reads, SIGTERM meanwhile) nor cancel
//! each other (a full file system).
use std::ffi::{CString, OsStr};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

use super::*;

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Where the open descriptors of `pid` lead.
fn fd_targets(pid: u32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return vec![];
    };
    dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

/// alloctrace's eBPF programs and links still open: the probes are attached while any is.
fn probe_fds(pid: u32) -> usize {
    fd_targets(pid)
        .iter()
        .filter(|t| *t == "anon_inode:bpf_link" || *t == "anon_inode:bpf-prog")
        .count()
}

/// Waits (at most `timeout`) until alloctrace holds a descriptor of `path`: it has reached
/// that output. Returns whether it did.
fn wait_for_fd_of(tracer: &mut Running, path: &Path, timeout: Duration) -> bool {
    let want = path.to_string_lossy().into_owned();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline && tracer.is_running() {
        if fd_targets(tracer.pid()).contains(&want) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The run of the FIFO tests: `--pid` of a workload that idles, one second, the report to a
/// file and the folded stacks to a FIFO nobody opens.
fn run_into_an_unread_fifo(scratch: &Scratch) -> (Running, Workload, PathBuf, PathBuf) {
    alloctrace_bin();
    let fifo = scratch.path("stacks.fifo");
    mkfifo(&fifo);
    let report = scratch.path("report.json");
    let w = Workload::start("wait", &["0", "hold"], &[]);
    let mut args = pid_args(w.pid(), &report, &[]);
    args.extend(os(&["--duration", "1s", "--folded"]));
    args.push(fifo.clone().into());
    let mut tracer = Running::spawn(&args, &[]);
    tracer.wait_until_tracing();
    (tracer, w, fifo, report)
}

/// A FIFO nobody reads: alloctrace gives up on it after its bounded wait with one line
/// naming it, still writes the report, exits non-zero — and its probes are off while it
/// waits (no eBPF program or link left open), not attached until some reader comes.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn a_fifo_nobody_reads_ends_the_run_with_the_probes_already_off() {
    let scratch = Scratch::new();
    let (mut tracer, _w, fifo, report) = run_into_an_unread_fifo(&scratch);
    assert!(
        wait_for_fd_of(&mut tracer, &fifo, Duration::from_secs(20)),
        "alloctrace never reached the FIFO output\n{}",
        tracer.stderr_text()
    );
    let reached = Instant::now();
    loop {
        let left = probe_fds(tracer.pid());
        if left == 0 {
            break;
        }
        assert!(
            tracer.is_running(),
            "alloctrace exited before its probes were seen detached"
        );
        assert!(
            reached.elapsed() < Duration::from_millis(4500),
            "{left} eBPF programs and links still open {:?} after alloctrace began waiting \
             for the FIFO's reader\n{}",
            reached.elapsed(),
            tracer.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        tracer.is_running(),
        "alloctrace no longer waits for the FIFO: the test saw nothing"
    );
    let finished = tracer.wait(Duration::from_secs(20));
    let waited = reached.elapsed();
    assert!(
        waited < Duration::from_secs(12),
        "alloctrace took {waited:?} to give up on the FIFO\n{}",
        finished.describe()
    );
    finished.assert_code(1);
    let errors = finished.error_lines();
    assert_eq!(
        errors,
        [format!(
            "{ERROR_PREFIX}cannot write the folded stacks to {}: it is a FIFO and no reader \
             opened it within 5 s",
            fifo.display()
        )],
        "{}",
        finished.describe()
    );
    Report::read(&report, &finished.describe());
}

/// SIGTERM while an output blocks ends alloctrace at once (the run is over; only the output
/// was left), instead of being swallowed by the handlers of the run.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn sigterm_while_an_output_blocks_ends_alloctrace() {
    let scratch = Scratch::new();
    let (mut tracer, _w, fifo, _report) = run_into_an_unread_fifo(&scratch);
    // A sync point, not the assertion: code that blocks in open(2) holds no descriptor yet,
    // and gets its SIGTERM after the wait instead.
    wait_for_fd_of(&mut tracer, &fifo, Duration::from_secs(10));
    tracer.signal(libc::SIGTERM);
    let sent = Instant::now();
    let finished = tracer.wait(Duration::from_secs(3));
    let status = finished.status;
    assert!(
        status.signal() == Some(libc::SIGTERM) || status.code() == Some(128 + libc::SIGTERM),
        "alloctrace ended with {status} after SIGTERM, {:?} later\n{}",
        sent.elapsed(),
        finished.describe()
    );
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Mount {
    dir: tempfile::TempDir,
}

impl Mount {
    fn tmpfs(options: &str) -> Mount {
        let dir = tempfile::Builder::new()
            .prefix("alloctrace-tmpfs-")
            .tempdir()
            .expect("create a mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs -o {options} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Mount { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// One output on a full file system fails with its own line; the report, elsewhere, is still
/// written, and the exit is non-zero. (The HTML report is written before the report: it used
/// to cancel it.)
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn a_full_disk_fails_one_output_and_the_others_are_written() {
    alloctrace_bin();
    let full = Mount::tmpfs("size=64k");
    let filler = full.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = [0u8; 4096];
        while f.write_all(&block).is_ok() {}
    }
    let html = full.path().join("report.html");
    let run = launch(
        "sites",
        &[],
        &[OsStr::new("--html"), html.as_os_str()],
        Scratch::new(),
    );
    let finished = &run.finished;
    finished.assert_code(1);
    let errors = finished.error_lines();
    let want = format!(
        "{ERROR_PREFIX}cannot write the HTML report to {}: ",
        html.display()
    );
    assert!(
        errors.len() == 1 && errors[0].starts_with(&want) && errors[0].contains("No space left"),
        "expected one error line starting {want:?} (no space)\n{}",
        finished.describe()
    );
    assert_process_matches(&run.report, &run.truth);
    assert_eq!(
        dir_entries(full.path()),
        ["filler"],
        "a temporary file was left"
    );
}
