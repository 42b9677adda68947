//! Launch mode in one call: a workload run under alloctrace with its report and ground truth
//! read back, in a scratch directory.
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use serde_json::Value;

use super::assertions::assert_target;
use super::binary::{report_args, run_alloctrace, Finished, Running, INTERVAL, RUN_TIMEOUT};
use super::report::Report;
use super::scratch::Scratch;
use super::truth::GroundTruth;
use super::workload::{workload, Workload};

/// One launch-mode run: `alloctrace --interval 250ms --report json -o REPORT EXTRA -- WORKLOAD
/// ARGS` with `GROUND_TRUTH` set, finished, with its report and the workload's ground truth.
pub struct Launched {
    pub finished: Finished,
    pub report: Report,
    pub truth: GroundTruth,
    /// The absolute path alloctrace was asked to run.
    pub command: PathBuf,
    pub scratch: Scratch,
}

impl Launched {
    /// Asserts the report's target is this command with the workload's pid.
    pub fn assert_command_target(&self, args: &[&str]) {
        let mut argv = vec![Value::from(self.command.to_string_lossy().into_owned())];
        argv.extend(args.iter().map(|a| Value::from(*a)));
        assert_target(
            &self.report,
            &serde_json::json!({"mode": "command", "argv": argv, "pid": self.truth.pid}),
        );
    }
}

/// Runs workload `name` with `args` under alloctrace in launch mode (see [`Launched`]); `extra`
/// goes before `--` and may name files in `scratch` (pass [`Scratch::new`] when none).
/// Panics if alloctrace does not finish in time or writes no report, or the workload writes no
/// ground truth; the exit status is the caller's to check.
pub fn launch(name: &str, args: &[&str], extra: &[&OsStr], scratch: Scratch) -> Launched {
    launch_every(INTERVAL, name, args, extra, scratch)
}

/// [`launch`] with `--interval INTERVAL` instead of the default [`INTERVAL`] (analyses that
/// need several drains per phase of a workload).
pub fn launch_every(
    interval: &str,
    name: &str,
    args: &[&str],
    extra: &[&OsStr],
    scratch: Scratch,
) -> Launched {
    launch_with(interval, name, args, extra, &[], scratch)
}

/// [`launch`] with `env` added to alloctrace's `GROUND_TRUTH`, and so to the workload's (more
/// ground-truth files in `scratch`, switches).
pub fn launch_env(
    name: &str,
    args: &[&str],
    extra: &[&OsStr],
    env: &[(&str, &OsStr)],
    scratch: Scratch,
) -> Launched {
    launch_with(INTERVAL, name, args, extra, env, scratch)
}

fn launch_with(
    interval: &str,
    name: &str,
    args: &[&str],
    extra: &[&OsStr],
    env: &[(&str, &OsStr)],
    scratch: Scratch,
) -> Launched {
    let command = workload(name);
    let report_path = scratch.path("report.json");
    let truth_path = scratch.path(TRUTH_FILE);
    let mut argv = report_args(interval, &report_path, extra);
    argv.push("--".into());
    argv.push(command.clone().into());
    argv.extend(args.iter().map(OsString::from));
    let mut all_env = vec![("GROUND_TRUTH", truth_path.as_os_str())];
    all_env.extend_from_slice(env);
    let finished = run_alloctrace(&argv, &all_env);
    let context = finished.describe();
    let truth = GroundTruth::read(&truth_path, &context);
    let report = Report::read(&report_path, &context);
    Launched {
        finished,
        report,
        truth,
        command,
        scratch,
    }
}

/// One `--pid` run: a workload started by the test (it says `ready` and waits), alloctrace
/// attached to it, the workload released once alloctrace traces and run to its exit code 0,
/// then alloctrace's end (the target's exit ends it), with its report and the ground truth.
pub struct Attached {
    /// alloctrace's run: its status and outputs.
    pub finished: Finished,
    /// The workload, exited: its output.
    pub workload: Workload,
    pub report: Report,
    pub truth: GroundTruth,
    /// The workload's pid.
    pub pid: u32,
    /// alloctrace's run and the workload's output, for failure messages.
    pub context: String,
    /// Holds the report, the ground truth and any other file the test named in it as long as
    /// the run is looked at.
    pub scratch: Scratch,
}

/// Runs workload `name` with `args` (those that make it wait for its go, e.g. `wait`) and
/// traces it with `alloctrace --pid PID --interval INTERVAL --report json -o REPORT EXTRA`
/// (see [`Attached`]). Panics unless alloctrace and the workload both exit 0 in time.
pub fn attach(
    interval: &str,
    name: &str,
    args: &[&str],
    extra: &[&OsStr],
    scratch: Scratch,
) -> Attached {
    attach_env(interval, name, args, &[], extra, scratch)
}

/// [`attach`] with `env` added to the workload's `GROUND_TRUTH` (more ground-truth files in
/// `scratch`, switches).
pub fn attach_env(
    interval: &str,
    name: &str,
    args: &[&str],
    env: &[(&str, &OsStr)],
    extra: &[&OsStr],
    scratch: Scratch,
) -> Attached {
    let truth_path = scratch.path(TRUTH_FILE);
    let mut all_env = vec![("GROUND_TRUTH", truth_path.as_os_str())];
    all_env.extend_from_slice(env);
    let w = Workload::start(name, args, &all_env);
    attach_started(w, interval, extra, scratch)
}

/// [`attach`] to a workload the test started itself (a copy at another path, say), waiting
/// for its go and writing its ground truth to [`TRUTH_FILE`] in `scratch`.
pub fn attach_started(
    mut w: Workload,
    interval: &str,
    extra: &[&OsStr],
    scratch: Scratch,
) -> Attached {
    let report_path = scratch.path("report.json");
    let pid = w.pid();
    let mut argv = vec![OsString::from("--pid"), OsString::from(pid.to_string())];
    argv.extend(report_args(interval, &report_path, extra));
    let (finished, context) = trace_released(&mut w, &argv);
    let truth = GroundTruth::read(&scratch.path(TRUTH_FILE), &context);
    let report = Report::read(&report_path, &context);
    Attached {
        finished,
        workload: w,
        report,
        truth,
        pid,
        context,
        scratch,
    }
}

/// Starts a private copy of workload `name` (waiting for its go with `args`), its ground
/// truth going to [`TRUTH_FILE`] in `scratch`, then deletes the copy: `/proc/PID/maps` names
/// it `(deleted)` (checked), for [`attach_started`].
pub fn start_deleted_copy(name: &str, args: &[&str], scratch: &Scratch) -> Workload {
    let copy = scratch.path(&format!("{name}-copy"));
    std::fs::copy(workload(name), &copy).unwrap();
    let truth_path = scratch.path(TRUTH_FILE);
    let w = Workload::start_path(&copy, args, &[("GROUND_TRUTH", truth_path.as_os_str())]);
    std::fs::remove_file(&copy).unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", w.pid())).unwrap();
    assert!(maps.contains(&format!("{name}-copy (deleted)")), "{maps}");
    w
}

/// Where [`attach`]'s workload writes its ground truth, in the run's scratch directory.
pub const TRUTH_FILE: &str = "truth.txt";

/// Starts `alloctrace ARGV` against workload `w` (already started, waiting for its go),
/// releases `w` once alloctrace traces, waits for `w` to exit 0 and then for alloctrace to
/// exit 0 by itself. Returns alloctrace's run and a context naming both, for failure messages.
pub fn trace_released<A: AsRef<OsStr>>(w: &mut Workload, argv: &[A]) -> (Finished, String) {
    let mut tracer = Running::spawn(argv, &[]);
    tracer.wait_until_tracing();
    w.release();
    w.wait_code(0);
    let finished = tracer.wait(RUN_TIMEOUT);
    finished.assert_code(0);
    let context = format!("{}\n{}", finished.describe(), w.describe());
    (finished, context)
}
