//! Who may trace what: nobody with a capability-holding copy against root processes,
//! system-wide mode, setuid programs, and its own process.
use std::ffi::OsStr;
use std::process::Command;

use crate::support::*;
use serde_json::json;

use super::*;

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

/// nobody's `sh` running `echo ready; read x; COMMAND` (`{}` in `command` stands for a
/// setuid-root copy of the `euid` workload), traced by nobody's `alloctrace --pid SH EXTRA`;
/// the sh let go and run to exit code 0, alloctrace to exit code 0, the setuid bit having
/// taken effect (the program said `euid 0`). Returns the sh's pid, alloctrace's run, its report
/// and the context for failure messages.
fn trace_setuid_script(command: &str, extra: &[&OsStr]) -> (u32, Finished, Report, String) {
    let u = Unprivileged::new();
    let euid = u.copy_workload("euid", 0o4755);
    let report_path = u.out.join("report.json");
    let command = command.replace("{}", &euid.display().to_string());
    let mut w = u.nobody_sh(&format!("echo ready; read x; {command}"));
    let pid = w.pid();
    let tracer = u.spawn(&pid_args(pid, &report_path, extra));
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
    let report = Report::read(&report_path, &context);
    (pid, finished, report, context)
}

/// nobody traces its own `sh` with --pid; the sh then execs a setuid-root program (which
/// allocates, and says `euid 0`): alloctrace re-checks the kernel's rule after the exec, says
/// the process is no longer permitted, and shows nothing of it — no site, no counts, the
/// process marked unseen with the reason.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn a_pid_target_that_execs_a_setuid_program_is_dropped() {
    let (pid, finished, report, context) = trace_setuid_script("exec {}", &[]);
    // The kernel records nothing of an undumpable process: the program is named by its comm.
    let notice = format!("alloctrace: pid {pid} executed ");
    assert!(
        finished.stderr.lines().any(|l| l.starts_with(&notice)
            && l.contains("not permitted after exec of a setuid program")),
        "no notice starting {notice:?}\n{context}"
    );
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
    let (pid, finished, report, context) = trace_setuid_script("{}; true", &[OsStr::new("-f")]);
    assert!(
        finished
            .stderr
            .lines()
            .any(|l| l.contains("not permitted after exec of a setuid")
                || l.contains("its probes could not be attached")),
        "no line says the child is not traced\n{context}"
    );
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
