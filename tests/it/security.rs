//! Who may trace what, and outputs that can neither hang alloctrace nor cancel each other.
//!
//! The privilege tests run a copy of alloctrace holding the capabilities the README
//! recommends (`setcap cap_bpf,cap_perfmon,cap_sys_admin+ep`) as nobody (`setpriv`), against
//! a root-owned process, in system-wide mode, on a setuid-root program it launches, and on a
//! process of nobody's own. The output tests run alloctrace as root with a FIFO nobody reads
//! and with an output on a full file system.
//!
//! Privileged: run with `cargo xtask test` (root, `ALLOCTRACE_BIN`, `--include-ignored`).
use std::ffi::{CString, OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::json;

// =============================================================================================
// An unprivileged user with a capability-holding copy of alloctrace
// =============================================================================================

/// nobody's uid and primary gid.
fn nobody() -> (u32, u32) {
    let name = CString::new("nobody").unwrap();
    // SAFETY: getpwnam takes a NUL-terminated name; the record it returns is read at once,
    // before any other call could reuse its static storage (tests run one at a time).
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!pw.is_null(), "this system has no user nobody");
    // SAFETY: non-null, checked above.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

/// The first of `paths` that is a file; panics with `hint` when none is.
fn tool(paths: &[&str], hint: &str) -> PathBuf {
    paths
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("none of {paths:?} exists: {hint}"))
}

fn setpriv() -> PathBuf {
    tool(
        &["/usr/bin/setpriv", "/bin/setpriv"],
        "setpriv (util-linux) runs alloctrace as nobody",
    )
}

/// Why `dir` cannot hold the unprivileged copy, if it cannot: nobody must be able to reach it
/// (every directory above it searchable by others), and its file system must honour setuid
/// bits and file capabilities (not mounted nosuid).
fn unusable(dir: &Path) -> Option<String> {
    let dir = match dir.canonicalize() {
        Ok(d) => d,
        Err(e) => return Some(format!("{}: {e}", dir.display())),
    };
    for a in dir.ancestors() {
        let mode = std::fs::metadata(a)
            .map(|m| m.permissions().mode())
            .unwrap_or(0);
        if mode & 0o001 == 0 {
            return Some(format!("{} is not searchable by others", a.display()));
        }
    }
    let c = CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: a valid path and a statvfs to fill.
    if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Some(format!("statvfs {}: failed", dir.display()));
    }
    // SAFETY: filled by the successful call above.
    if unsafe { st.assume_init() }.f_flag & libc::ST_NOSUID != 0 {
        return Some(format!("{} is on a nosuid mount", dir.display()));
    }
    None
}

/// A directory nobody can execute from, holding `alloctrace` (a copy of `$ALLOCTRACE_BIN`
/// with CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN) and `out/`, a directory nobody owns.
struct Unprivileged {
    dir: tempfile::TempDir,
    bin: PathBuf,
    out: PathBuf,
    uid: u32,
    gid: u32,
}

impl Unprivileged {
    fn new() -> Unprivileged {
        Unprivileged::with_caps("cap_bpf,cap_perfmon,cap_sys_admin+ep")
    }

    /// The same, with the file capabilities `caps` (setcap syntax).
    fn with_caps(caps: &str) -> Unprivileged {
        let original = alloctrace_bin();
        let (uid, gid) = nobody();
        let candidates = [env!("CARGO_TARGET_TMPDIR"), "/var/tmp", "/tmp"];
        let mut rejected = Vec::new();
        let base = candidates.iter().find(|c| {
            let _ = std::fs::create_dir_all(c);
            match unusable(Path::new(c)) {
                None => true,
                Some(why) => {
                    rejected.push(why);
                    false
                }
            }
        });
        let base = base.unwrap_or_else(|| {
            panic!(
                "no directory to run a capability-holding alloctrace as nobody from: {rejected:?}"
            )
        });
        let dir = tempfile::Builder::new()
            .prefix("alloctrace-security-")
            .tempdir_in(base)
            .expect("create a temp dir");
        chmod(dir.path(), 0o755);
        let bin = dir.path().join("alloctrace");
        std::fs::copy(&original, &bin).expect("copy alloctrace");
        chmod(&bin, 0o755);
        let setcap = tool(
            &["/usr/sbin/setcap", "/sbin/setcap", "/usr/bin/setcap"],
            "setcap gives the copy its capabilities (Debian: apt-get install libcap2-bin; \
             `cargo xtask setup` installs it)",
        );
        let out = Command::new(&setcap)
            .arg(caps)
            .arg(&bin)
            .output()
            .expect("run setcap");
        assert!(
            out.status.success(),
            "setcap failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let c = CString::new(out.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid path.
        assert_eq!(
            unsafe { libc::chown(c.as_ptr(), uid, gid) },
            0,
            "chown out/"
        );
        Unprivileged {
            dir,
            bin,
            out,
            uid,
            gid,
        }
    }

    /// A copy of workload `name` in the directory, with `mode` (root owns it).
    fn copy_workload(&self, name: &str, mode: u32) -> PathBuf {
        let to = self.dir.path().join(name);
        std::fs::copy(workload(name), &to).expect("copy a workload");
        chmod(&to, mode);
        to
    }

    /// `setpriv` arguments that make the next program run as nobody, with no other group.
    fn as_nobody(&self) -> Vec<OsString> {
        vec![
            format!("--reuid={}", self.uid).into(),
            format!("--regid={}", self.gid).into(),
            "--clear-groups".into(),
        ]
    }

    /// Starts the capability-holding copy as nobody with `args`.
    /// `/bin/sh -c SCRIPT` run as nobody (started by the test, not by alloctrace).
    fn nobody_sh(&self, script: &str) -> Workload {
        let mut args: Vec<String> = self
            .as_nobody()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        args.extend(["/bin/sh".into(), "-c".into(), script.into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Workload::start_path(&setpriv(), &args, &[])
    }

    fn spawn(&self, args: &[OsString]) -> Tracer {
        let mut argv = self.as_nobody();
        argv.push(self.bin.clone().into());
        argv.extend(args.iter().cloned());
        let mut child = Command::new(setpriv())
            .args(&argv)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start setpriv");
        let (stdout, _) = Lines::collect(child.stdout.take().unwrap());
        let (stderr, _) = Lines::collect(child.stderr.take().unwrap());
        Tracer {
            child,
            stdout,
            stderr,
            args: args.to_vec(),
        }
    }

    /// Runs the copy as nobody to its end.
    fn run(&self, args: &[OsString]) -> Finished {
        self.spawn(args).wait(RUN_TIMEOUT)
    }
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// alloctrace run as nobody; killed if dropped while running.
struct Tracer {
    child: Child,
    stdout: Lines,
    stderr: Lines,
    args: Vec<OsString>,
}

impl Tracer {
    /// Waits for the line saying every probe is attached; panics with stderr otherwise.
    fn wait_until_tracing(&self) {
        if let Err(why) = self.stderr.wait_for(TRACING_PREFIX, STARTUP_TIMEOUT) {
            panic!(
                "nobody's alloctrace never said it was tracing: {why}\n{}",
                self.stderr.text()
            );
        }
    }

    fn wait(mut self, timeout: Duration) -> Finished {
        let timed_out = wait_timeout(&mut self.child, timeout).is_none();
        if timed_out {
            let _ = self.child.kill();
        }
        let status = self.child.wait().expect("wait for alloctrace");
        // The pipes close when alloctrace exits: waiting for a line nobody writes returns at
        // their end (or after 2 s), with everything collected.
        let _ = self.stderr.wait_for("\u{0}", Duration::from_secs(2));
        let _ = self.stdout.wait_for("\u{0}", Duration::from_secs(2));
        let finished = Finished {
            status,
            stdout: self.stdout.text(),
            stderr: self.stderr.text(),
            args: std::mem::take(&mut self.args),
        };
        assert!(
            !timed_out,
            "alloctrace did not exit within {timeout:?}; killed it\n{}",
            finished.describe()
        );
        finished
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

// =============================================================================================
// Who may trace what
// =============================================================================================

/// nobody, with a capability-holding copy, asks for a root process: refused in one line that
/// names the pid and the owner, before anything is loaded.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn nobody_cannot_trace_a_root_process() {
    let u = Unprivileged::new();
    let w = Workload::start("wait", &["0", "hold"], &[]);
    let finished = u.run(&os(&["--pid", &w.pid().to_string(), "--duration", "1s"]));
    finished.assert_one_line_error(&[
        &format!("pid {} belongs to another user (uid 0)", w.pid()),
        "its real user could ptrace",
        "CAP_SYS_PTRACE",
    ]);
}

/// CAP_SYS_PTRACE is what lifts the rule: with it added, the same root process is traced.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn cap_sys_ptrace_lets_nobody_trace_a_root_process() {
    let u = Unprivileged::with_caps("cap_bpf,cap_perfmon,cap_sys_admin,cap_sys_ptrace+ep");
    let mut w = Workload::start("wait", &["0", "hold"], &[]);
    let report = u.out.join("report.json");
    let tracer = u.spawn(&pid_args(w.pid(), &report, &[]));
    tracer.wait_until_tracing();
    w.release();
    w.wait_for_line("done");
    w.close_stdin();
    w.wait_code(0);
    let finished = tracer.wait(RUN_TIMEOUT);
    finished.assert_code(0);
    let report = Report::read(&report, &finished.describe());
    assert!(
        report.process_counters(w.pid()).allocs > 0,
        "nothing counted\n{}",
        finished.describe()
    );
}

/// System-wide mode would show every user's processes: refused for nobody, saying which
/// capability allows it.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn nobody_cannot_trace_system_wide() {
    let u = Unprivileged::new();
    let finished = u.run(&os(&["--duration", "1s"]));
    finished.assert_one_line_error(&["system-wide mode", "real uid 0", "CAP_SYS_PTRACE"]);
}

/// A setuid-root program launched by nobody's alloctrace runs as nobody, as under strace or
/// gdb: the tracer's capabilities and the setuid bit give the command nothing. Run directly
/// by nobody, the same copy says euid 0 (so the setuid bit does take effect here).
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn a_setuid_program_launched_by_nobody_runs_as_nobody() {
    let u = Unprivileged::new();
    let helper = u.copy_workload("euid", 0o4755);
    let direct = Command::new(setpriv())
        .args(u.as_nobody())
        .arg(&helper)
        .output()
        .expect("run the setuid helper");
    let direct = String::from_utf8_lossy(&direct.stdout).into_owned();
    assert_eq!(
        direct.trim(),
        format!("euid 0 ruid {}", u.uid),
        "the setuid helper does not elevate even untraced: the test proves nothing here"
    );
    let report = u.out.join("report.json");
    let mut args = os(&["--interval", INTERVAL, "--report", "json", "-o"]);
    args.push(report.clone().into());
    args.push("--".into());
    args.push(helper.clone().into());
    let finished = u.run(&args);
    finished.assert_code(0);
    assert!(
        finished
            .stdout
            .lines()
            .any(|l| l == format!("euid {} ruid {}", u.uid, u.uid)),
        "the setuid program ran elevated under alloctrace (expected euid {})\n{}",
        u.uid,
        finished.describe()
    );
    let report = Report::read(&report, &finished.describe());
    assert_eq!(report.json["target"]["mode"], json!("command"));
}

/// What the capabilities are for: nobody traces a process of its own, and counts it exactly.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn nobody_traces_its_own_process_exactly() {
    let u = Unprivileged::new();
    let wait = u.copy_workload("wait", 0o755);
    let truth_path = u.out.join("truth.txt");
    let report_path = u.out.join("report.json");
    let mut args: Vec<String> = u
        .as_nobody()
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    args.push(wait.to_string_lossy().into_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut w = Workload::start_path(
        &setpriv(),
        &args,
        &[("GROUND_TRUTH", truth_path.as_os_str())],
    );
    let tracer = u.spawn(&pid_args(w.pid(), &report_path, &[]));
    tracer.wait_until_tracing();
    w.release();
    w.wait_code(0);
    let finished = tracer.wait(RUN_TIMEOUT);
    finished.assert_code(0);
    let context = format!("{}\n{}", finished.describe(), w.describe());
    let truth = GroundTruth::read(&truth_path, &context);
    let report = Report::read(&report_path, &context);
    assert_sites_match(&report, &truth, &[]);
    assert_process_matches(&report, &truth);
    assert_no_losses(&report);
}

/// nobody traces its own `sh` with --pid; the sh then execs a setuid-root program (which
/// allocates, and says `euid 0`): alloctrace re-checks the kernel's rule after the exec, says
/// the process is no longer permitted, and shows nothing of it — no site, no counts, the
/// process marked unseen with the reason.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn a_pid_target_that_execs_a_setuid_program_is_dropped() {
    let u = Unprivileged::new();
    let euid = u.copy_workload("euid", 0o4755);
    let report_path = u.out.join("report.json");
    let mut w = u.nobody_sh(&format!("echo ready; read x; exec {}", euid.display()));
    let pid = w.pid();
    let tracer = u.spawn(&pid_args(pid, &report_path, &[]));
    tracer.wait_until_tracing();
    w.close_stdin();
    w.wait_code(0);
    let finished = tracer.wait(RUN_TIMEOUT);
    let context = format!("{}\n{}", finished.describe(), w.describe());
    assert!(
        w.stdout_value("euid").starts_with("0 "),
        "the setuid bit did not take effect: {context}"
    );
    finished.assert_code(0);
    // The kernel records nothing of an undumpable process: the program is named by its comm.
    let notice = format!("alloctrace: pid {pid} executed ");
    assert!(
        finished.stderr.lines().any(|l| l.starts_with(&notice)
            && l.contains("not permitted after exec of a setuid program")),
        "no notice starting {notice:?}\n{context}"
    );
    let report = Report::read(&report_path, &context);
    let p = report.process(pid);
    assert_eq!(
        p["unseen"]["reason"], "not permitted after exec of a setuid program",
        "{context}"
    );
    assert!(
        report.process_counters(pid).is_zero() && report.sites_of(pid).is_empty(),
        "the process's allocations are shown: {p}\n{}",
        report.describe_sites(pid)
    );
}

/// The same with --follow-forks, the setuid program run by a child of nobody's `sh`: the
/// child is followed, then either its probes go in before its exec and it is dropped after it
/// (said), or the kernel refuses them after it (said): either way nothing of it is shown.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn a_followed_child_that_execs_a_setuid_program_is_dropped() {
    let u = Unprivileged::new();
    let euid = u.copy_workload("euid", 0o4755);
    let report_path = u.out.join("report.json");
    let mut w = u.nobody_sh(&format!("echo ready; read x; {}; true", euid.display()));
    let pid = w.pid();
    let tracer = u.spawn(&pid_args(pid, &report_path, &[OsStr::new("-f")]));
    tracer.wait_until_tracing();
    w.close_stdin();
    w.wait_code(0);
    let finished = tracer.wait(RUN_TIMEOUT);
    let context = format!("{}\n{}", finished.describe(), w.describe());
    assert!(
        w.stdout_value("euid").starts_with("0 "),
        "the setuid bit did not take effect: {context}"
    );
    finished.assert_code(0);
    assert!(
        finished
            .stderr
            .lines()
            .any(|l| l.contains("not permitted after exec of a setuid")
                || l.contains("its probes could not be attached")),
        "no line says the child is not traced\n{context}"
    );
    let report = Report::read(&report_path, &context);
    let others: Vec<u64> = report
        .pids()
        .into_iter()
        .filter(|&p| p != u64::from(pid))
        .collect();
    assert!(
        !others.is_empty(),
        "the child is not in the report\n{context}"
    );
    for child in others {
        let child = child as u32;
        assert!(
            report.process(child)["unseen"]["reason"].is_string()
                && report.process_counters(child).is_zero()
                && report.sites_of(child).is_empty(),
            "child {child}'s allocations are shown: {}\n{}\n{context}",
            report.process(child),
            report.describe_sites(child)
        );
    }
}

// =============================================================================================
// Outputs: a FIFO nobody reads, a full file system
// =============================================================================================

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
    let errors: Vec<&str> = finished
        .stderr
        .lines()
        .filter(|l| l.starts_with(ERROR_PREFIX))
        .collect();
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
    let errors: Vec<&str> = finished
        .stderr
        .lines()
        .filter(|l| l.starts_with(ERROR_PREFIX))
        .collect();
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
