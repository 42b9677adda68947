//! What alloctrace refuses, and how: a non-zero exit status and exactly one stderr line starting
//! with `alloctrace: error: ` that names the problem; and odd input it must not refuse
//! (non-UTF-8 paths and arguments).
//!
//! Privileged: run with `cargo xtask test` (root, `ALLOCTRACE_BIN`, `--include-ignored`). Run
//! unprivileged, alloctrace would fail for lack of root instead and these would prove nothing.
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;

use crate::support::*;

/// `--duration` bounds a run that wrongly starts tracing, so the test fails on its status
/// instead of waiting.
const BOUND: [&str; 2] = ["--duration", "5s"];

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn nonexistent_pid_is_an_error() {
    alloctrace_bin();
    let finished = run_alloctrace(&[BOUND[0], BOUND[1], "--pid", "999999999"], &[]);
    finished.assert_one_line_error(&["999999999"]);
}

/// A file without execute permission (a shell script, mode 0644: not executable even by root).
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn non_executable_command_is_an_error() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let script = scratch.path("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").expect("write the script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).expect("chmod 644");
    let finished = run_alloctrace(
        &[
            OsStr::new(BOUND[0]),
            OsStr::new(BOUND[1]),
            OsStr::new("--"),
            script.as_os_str(),
        ],
        &[],
    );
    finished.assert_one_line_error(&["not-executable.sh"]);
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn missing_command_is_an_error() {
    alloctrace_bin();
    let name = "alloctrace-test-no-such-command";
    let finished = run_alloctrace(&[BOUND[0], BOUND[1], "--", name], &[]);
    finished.assert_one_line_error(&[name]);
}

/// `alloctrace ARGS` as user nobody with `caps` (setpriv syntax, e.g. "+bpf,+perfmon")
/// inheritable and ambient, so they survive the uid change.
fn as_nobody_with(caps: &str, args: &[&str]) -> Finished {
    let bin = alloctrace_bin();
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    if caps.is_empty() {
        cmd.arg("--inh-caps=-all");
    } else {
        cmd.arg(format!("--inh-caps={caps}"))
            .arg(format!("--ambient-caps={caps}"));
    }
    let out = cmd
        .arg(&bin)
        .args(args)
        .current_dir("/tmp")
        .output()
        .expect("run setpriv (util-linux)");
    Finished {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        args: vec![bin.into_os_string()],
    }
}

/// Without root (and without the capabilities) nothing can be loaded: say so up front; with
/// only CAP_BPF + CAP_PERFMON too (the kernel refuses the uprobe perf events).
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn not_root_is_an_error() {
    as_nobody_with("", &BOUND).assert_one_line_error(&["root", "CAP_SYS_ADMIN"]);
    as_nobody_with("+bpf,+perfmon", &BOUND).assert_one_line_error(&["root", "CAP_SYS_ADMIN"]);
    // pid 1 without permission: refused up front too, naming what is missing.
    as_nobody_with("", &["--pid", "1", "--duration", "2s"])
        .assert_one_line_error(&["root", "CAP_SYS_ADMIN"]);
}

/// The capabilities the README names are enough without root: a launched command is traced
/// and reported.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn capabilities_are_enough_without_root() {
    let f = as_nobody_with(
        "+bpf,+perfmon,+sys_admin",
        &["--duration", "20s", "--", "/bin/ls", "/"],
    );
    f.assert_code(0);
    assert!(
        f.stdout.contains("=== Allocation Report: /bin/ls /")
            && !f.stdout.contains(" 0 B in 0 objects"),
        "no allocations reported as nobody with capabilities\n{}",
        f.describe()
    );
}

/// Kernel threads have no user-space allocator (pid 2 is kthreadd on every Linux).
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn kernel_thread_is_refused() {
    alloctrace_bin();
    let finished = run_alloctrace(&[BOUND[0], BOUND[1], "--pid", "2"], &[]);
    finished.assert_one_line_error(&["kernel thread"]);
}

/// Option values that cannot work are refused before anything is loaded.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn bad_option_values_are_errors() {
    alloctrace_bin();
    for (args, mention) in [
        (&["--interval", "0"][..], "--interval"),
        (&["--top", "0"][..], "--top"),
        (&["--max-stacks", "0"][..], "--max-stacks"),
        (
            &["--folded", "/nonexistent-dir/out.folded"][..],
            "/nonexistent-dir",
        ),
        (
            &["--output", "/nonexistent-dir/report.txt"][..],
            "/nonexistent-dir",
        ),
        (&["--folded-weight", "weight"][..], "--weight"),
        (&["--plot", "/tmp/rate.gif"][..], ".svg or .png"),
        (
            &["--html", "/nonexistent-dir/r.html"][..],
            "/nonexistent-dir",
        ),
        (
            &["--mode", "alloc-only", "--sample-bytes", "0"][..],
            "--sample-bytes",
        ),
        (
            &[
                "--mode",
                "alloc-only",
                "--flamegraph",
                "/tmp/f.svg",
                "--weight",
                "live",
            ][..],
            "--mode full",
        ),
        (&["--pid", "1", "--", "true"][..], "not both"),
    ] {
        let mut all = vec![BOUND[0], BOUND[1]];
        all.extend_from_slice(args);
        run_alloctrace(&all, &[]).assert_one_line_error(&[mention]);
    }
    // Without the bounding --duration, which may be given only once.
    run_alloctrace(&["--duration=-1s"], &[]).assert_one_line_error(&["negative"]);
}

/// Durations past what a timer can hold were accepted, and the run panicked once loaded
/// (exit 101, no report): refused at parse time, naming the option, before anything loads.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn durations_too_long_for_a_timer_are_refused() {
    alloctrace_bin();
    let huge = "18446744073709551615s";
    for args in [
        &["--duration", huge, "--", "true"][..],
        &[BOUND[0], BOUND[1], "--interval", huge, "--", "true"],
        &[BOUND[0], BOUND[1], "--short-lived", huge, "--", "true"],
    ] {
        let option = args[args.len() - 4];
        let f = run_alloctrace(args, &[]);
        f.assert_one_line_error(&[option, "at most a year"]);
        assert_ne!(f.code(), 101, "{}", f.describe());
    }
}

/// Tables larger than the kernel will make (`--max-live 2000000000`: 2^31 in-flight slots of
/// 40 bytes; `--max-stacks 4000000000`) fail at load: one line that names the option to
/// lower.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn tables_the_kernel_cannot_make_name_their_option() {
    alloctrace_bin();
    for (option, value) in [("--max-live", "2000000000"), ("--max-stacks", "4000000000")] {
        run_alloctrace(&[BOUND[0], BOUND[1], option, value, "--", "true"], &[])
            .assert_one_line_error(&["cannot load", &format!("lower {option}")]);
    }
}

/// A thread's id is not a process: the error names the process to trace instead (probes and
/// the report go by process, and the eBPF programs take the traced process's id as given).
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn thread_id_is_refused_with_its_process() {
    use std::io::BufRead;
    alloctrace_bin();
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import threading, time\n\
             t = threading.Thread(target=time.sleep, args=(30,), daemon=True)\n\
             t.start()\n\
             print(t.native_id, flush=True)\n\
             t.join()\n",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start python3");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the thread id");
    let tid = line.trim().to_string();
    let finished = run_alloctrace(&[BOUND[0], BOUND[1], "--pid", &tid], &[]);
    let _ = child.kill();
    let _ = child.wait();
    let process = child.id().to_string();
    finished.assert_one_line_error(&[tid.as_str(), "thread of process", process.as_str()]);
}

/// alloctrace does not trace itself.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn own_pid_is_refused() {
    let bin = alloctrace_bin();
    // The pid alloctrace will have is unknown beforehand: a shell execs it with its own.
    let out = std::process::Command::new("sh")
        .args(["-c", r#"exec "$0" --duration 5s --pid $$"#])
        .arg(&bin)
        .output()
        .expect("run alloctrace through sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.lines().count() == 1
            && stderr.starts_with("alloctrace: error: ")
            && stderr.contains("alloctrace itself"),
        "status {:?}, stderr {stderr}",
        out.status
    );
}

/// A file the kernel cannot execute (no ELF header, no `#!`: execv refuses it with ENOEXEC,
/// where a shell would have run it with sh) is refused before anything is loaded, naming the
/// way out; so is a script whose interpreter does not exist.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn scripts_the_kernel_cannot_execute_are_refused_up_front() {
    alloctrace_bin();
    let scratch = Scratch::new();
    for (name, text, mention) in [
        ("no-shebang.sh", "exit 0\n", "#!"),
        (
            "lost-interp.sh",
            "#!/nonexistent/interp\nexit 0\n",
            "/nonexistent/interp",
        ),
    ] {
        let script = scratch.path(name);
        std::fs::write(&script, text).expect("write the script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .expect("chmod 755");
        let finished = run_alloctrace(
            &[
                OsStr::new(BOUND[0]),
                OsStr::new(BOUND[1]),
                OsStr::new("--"),
                script.as_os_str(),
            ],
            &[],
        );
        finished.assert_one_line_error(&[name, mention]);
    }
}

/// A zombie (here our own unreaped child) is named as one, not as a kernel thread.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn zombie_pid_is_named_a_zombie() {
    alloctrace_bin();
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("start true");
    let pid = child.id();
    let stat = format!("/proc/{pid}/stat");
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(&stat)
        .is_ok_and(|s| s.rsplit(')').next().unwrap_or("").starts_with(" Z"))
    {
        assert!(
            started.elapsed() < WORKLOAD_TIMEOUT,
            "{pid} never became a zombie"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let pid_s = pid.to_string();
    let finished = run_alloctrace(&[BOUND[0], BOUND[1], "--pid", &pid_s], &[]);
    let _ = child.wait();
    finished.assert_one_line_error(&[&format!("pid {pid} is a zombie"), "not yet reaped"]);
}

/// A --pid target that exits while alloctrace loads its programs: one line saying so, not the
/// kernel's raw `perf_event_open failed: No such process`. The target is killed once -v has
/// printed the probe placement (decided before the programs load, which takes a good part of
/// a second) and reaped at once.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn pid_exiting_during_start_up_is_named() {
    use std::process::{Command, Stdio};
    let bin = alloctrace_bin();
    let mut w = Workload::start("wait", &[], &[]);
    let pid = w.pid();
    let mut tracer = Command::new(&bin)
        .args(["-v", "--duration", "20s", "--pid", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start alloctrace");
    let (stderr, reader) = Lines::collect(tracer.stderr.take().expect("piped stderr"));
    let started = std::time::Instant::now();
    while !stderr.text().contains("probe placement") {
        assert!(
            started.elapsed() < STARTUP_TIMEOUT,
            "no probe placement line:\n{}",
            stderr.text()
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    w.signal(libc::SIGKILL);
    w.wait();
    let status = wait_timeout(&mut tracer, RUN_TIMEOUT).expect("alloctrace ends");
    let _ = reader.join();
    let text = stderr.text();
    assert!(
        !text.contains(TRACING_PREFIX),
        "the target died too late to test this (the probes were in already):\n{text}"
    );
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("error")).collect();
    assert!(
        !status.success()
            && errors
                == [format!(
                    "{ERROR_PREFIX}pid {pid} exited while alloctrace was starting"
                )],
        "status {status}, stderr:\n{text}"
    );
}

/// Paths and arguments are bytes. A --pid target run from a directory whose name is not UTF-8
/// (its executable is mapped from there) was refused ("stream did not contain valid UTF-8"):
/// it is traced, counts exact and functions named.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn pid_mapping_a_non_utf8_path_is_traced() {
    use std::os::unix::ffi::OsStrExt;
    alloctrace_bin();
    let scratch = Scratch::new();
    let dir = scratch.path("").join(OsStr::from_bytes(b"dir-\xff"));
    std::fs::create_dir(&dir).expect("create the non-UTF-8 directory");
    let copy = dir.join("wait");
    std::fs::copy(workload("wait"), &copy).expect("copy the workload");
    let truth_path = scratch.path(TRUTH_FILE);
    let w = Workload::start_path(&copy, &[], &[("GROUND_TRUTH", truth_path.as_os_str())]);
    let run = attach_started(w, INTERVAL, &[], scratch);
    assert_sites_match(&run.report, &run.truth, &[]);
    assert_process_matches(&run.report, &run.truth);
}

/// A command argument that is not UTF-8 was refused without being named: it reaches the
/// command byte for byte. The report shows it as text (U+FFFD for the bytes that are not
/// UTF-8).
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn non_utf8_command_argument_reaches_the_command() {
    use std::os::unix::ffi::OsStrExt;
    alloctrace_bin();
    let scratch = Scratch::new();
    let (out, report_path) = (scratch.path("arg.out"), scratch.path("report.json"));
    let arg = OsStr::from_bytes(b"arg-\xff\xfe");
    let finished = run_alloctrace(
        &[
            OsStr::new("--report"),
            OsStr::new("json"),
            OsStr::new("-o"),
            report_path.as_os_str(),
            OsStr::new("--"),
            OsStr::new("/bin/sh"),
            OsStr::new("-c"),
            OsStr::new(r#"printf %s "$1" > "$2""#),
            OsStr::new("sh"),
            arg,
            out.as_os_str(),
        ],
        &[],
    );
    finished.assert_code(0);
    let context = finished.describe();
    assert_eq!(
        std::fs::read(&out).unwrap_or_default(),
        arg.as_bytes(),
        "{context}"
    );
    let report = Report::read(&report_path, &context);
    assert_eq!(
        report.json["target"]["argv"][4],
        serde_json::json!("arg-\u{fffd}\u{fffd}"),
        "{context}"
    );
}
