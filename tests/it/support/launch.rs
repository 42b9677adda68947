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
    let command = workload(name);
    let report_path = scratch.path("report.json");
    let truth_path = scratch.path("truth.txt");
    let mut argv: Vec<OsString> = ["--interval", interval, "--report", "json", "-o"]
        .iter()
        .map(OsString::from)
        .collect();
    argv.push(report_path.clone().into());
    argv.extend(extra.iter().map(|a| a.to_os_string()));
    argv.push("--".into());
    argv.push(command.clone().into());
    argv.extend(args.iter().map(OsString::from));
    let finished = run_alloctrace(&argv, &[("GROUND_TRUTH", truth_path.as_os_str())]);
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
    pub report: Report,
    pub truth: GroundTruth,
    /// The workload's pid.
    pub pid: u32,
    /// alloctrace's run and the workload's output, for failure messages.
    pub context: String,
    /// Holds the report and ground truth files as long as the run is looked at.
    _scratch: Scratch,
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
    let report_path = scratch.path("report.json");
    let truth_path = scratch.path("truth.txt");
    let mut w = Workload::start(name, args, &[("GROUND_TRUTH", truth_path.as_os_str())]);
    let pid = w.pid();
    let mut argv = vec![OsString::from("--pid"), OsString::from(pid.to_string())];
    argv.extend(report_args(interval, &report_path, extra));
    let mut tracer = Running::spawn(&argv, &[]);
    tracer.wait_until_tracing();
    w.release();
    w.wait_code(0);
    let finished = tracer.wait(RUN_TIMEOUT);
    finished.assert_code(0);
    let context = format!("{}\n{}", finished.describe(), w.describe());
    let truth = GroundTruth::read(&truth_path, &context);
    let report = Report::read(&report_path, &context);
    Attached {
        report,
        truth,
        pid,
        context,
        _scratch: scratch,
    }
}
