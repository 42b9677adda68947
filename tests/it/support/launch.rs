//! Launch mode in one call: a workload run under alloctrace with its report and ground truth
//! read back, in a scratch directory.
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use serde_json::Value;

use super::assertions::assert_target;
use super::binary::{run_alloctrace, Finished, INTERVAL};
use super::report::Report;
use super::scratch::Scratch;
use super::truth::GroundTruth;
use super::workload::workload;

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
