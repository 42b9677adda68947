//! The ground-truth workloads (`workloads/*.c`, built by build.rs): where they are, and running
//! them outside alloctrace, stdin and stdout piped, under the `ready`/release protocol of
//! `workloads/gt.h`.
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::process::{send_signal, stop, wait_timeout, Lines};
use super::truth::GroundTruth;

/// Longest a workload may take to say `ready` or to exit once released.
pub const WORKLOAD_TIMEOUT: Duration = Duration::from_secs(20);

/// Where build.rs put the compiled workloads.
pub fn workload_dir() -> &'static Path {
    Path::new(env!("WORKLOAD_DIR"))
}

/// The compiled workload `name` (`workloads/<name>.c`); panics, with the compiler's message
/// when build.rs left one, if it was not built.
pub fn workload(name: &str) -> PathBuf {
    let path = workload_dir().join(name);
    if path.is_file() {
        return path;
    }
    let error = workload_dir().join(format!("{name}.build-error"));
    match std::fs::read_to_string(&error) {
        Ok(msg) => panic!("workload {name} was not built:\n{msg}"),
        Err(_) => panic!(
            "workload {name} is missing: no {} (is there a workloads/{name}.c?)",
            path.display()
        ),
    }
}

/// A workload started by the test (not by alloctrace), with stdin and stdout piped: for
/// `--pid` tests. Dropped while still running, it is killed.
pub struct Workload {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines,
    stderr: Lines,
    name: String,
}

impl Workload {
    /// Starts workload `name` with `args` and `env`, and waits for its `ready` line.
    pub fn start(name: &str, args: &[&str], env: &[(&str, &OsStr)]) -> Workload {
        Workload::spawn(&workload(name), name, args, env)
    }

    /// Starts the program at `path`, named `name` in messages, and waits for its `ready` line.
    fn spawn(path: &Path, name: &str, args: &[&str], env: &[(&str, &OsStr)]) -> Workload {
        let mut cmd = Command::new(path);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
        let stdin = child.stdin.take();
        let (stdout, _) = Lines::collect(child.stdout.take().expect("piped stdout"));
        let (stderr, _) = Lines::collect(child.stderr.take().expect("piped stderr"));
        let mut w = Workload {
            child,
            stdin,
            stdout,
            stderr,
            name: name.to_string(),
        };
        if let Err(why) = w.stdout.wait_for("ready", WORKLOAD_TIMEOUT) {
            stop(&mut w.child);
            panic!("workload {name} never said ready: {why}\n{}", w.describe());
        }
        w
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets a waiting workload go on (one byte on its stdin).
    pub fn release(&mut self) {
        let stdin = self.stdin.as_mut().expect("the workload's stdin is open");
        stdin
            .write_all(b"g")
            .and_then(|_| stdin.flush())
            .unwrap_or_else(|e| {
                panic!(
                    "cannot release workload {} (pid {}): {e}",
                    self.name,
                    self.child.id()
                )
            });
    }

    /// Writes `text` to the workload's stdin (a command, for workloads that read them).
    pub fn send(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("the workload's stdin is open");
        stdin
            .write_all(text.as_bytes())
            .and_then(|_| stdin.flush())
            .unwrap_or_else(|e| {
                panic!(
                    "cannot write to workload {} (pid {}): {e}",
                    self.name,
                    self.child.id()
                )
            });
    }

    /// Waits for the workload to print `line` on stdout; panics after [`WORKLOAD_TIMEOUT`].
    pub fn wait_for_line(&mut self, line: &str) {
        if let Err(why) = self.stdout.wait_for(line, WORKLOAD_TIMEOUT) {
            panic!(
                "workload {} never printed {line:?}: {why}\n{}",
                self.name,
                self.describe()
            );
        }
    }

    /// Closes the workload's stdin (end of file).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for the workload to exit; panics if it does not within [`WORKLOAD_TIMEOUT`].
    pub fn wait(&mut self) -> ExitStatus {
        match wait_timeout(&mut self.child, WORKLOAD_TIMEOUT) {
            Some(st) => st,
            None => {
                stop(&mut self.child);
                panic!(
                    "workload {} did not exit within {WORKLOAD_TIMEOUT:?}\n{}",
                    self.name,
                    self.describe()
                )
            }
        }
    }

    /// Waits for the workload to exit with `code`.
    pub fn wait_code(&mut self, code: i32) {
        let st = self.wait();
        assert_eq!(
            st.code(),
            Some(code),
            "workload {} exited with {st}\n{}",
            self.name,
            self.describe()
        );
    }

    pub fn describe(&self) -> String {
        format!(
            "--- workload {} (pid {}) stdout:\n{}--- stderr:\n{}---",
            self.name,
            self.child.id(),
            self.stdout.text(),
            self.stderr.text()
        )
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts workload `name` on its own (not under alloctrace: for system-wide tests), stdin from
/// /dev/null, stdout and stderr discarded and collected respectively, `GROUND_TRUTH=truth`.
pub fn spawn_workload(name: &str, args: &[&str], truth: &Path) -> Child {
    let path = workload(name);
    Command::new(&path)
        .args(args)
        .env("GROUND_TRUTH", truth)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()))
}

/// Waits for a workload from [`spawn_workload`] to exit 0 and returns its ground truth, whose
/// pid must be the child's.
pub fn finish_workload(name: &str, mut child: Child, truth: &Path) -> GroundTruth {
    let status = wait_timeout(&mut child, WORKLOAD_TIMEOUT);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let status = status.unwrap_or_else(|| {
        panic!("workload {name} did not exit within {WORKLOAD_TIMEOUT:?}\n{stderr}")
    });
    assert_eq!(
        status.code(),
        Some(0),
        "workload {name} exited with {status}\n{stderr}"
    );
    let truth = GroundTruth::read(truth, &stderr);
    assert_eq!(
        truth.pid,
        child.id(),
        "workload {name}'s ground truth names another pid"
    );
    truth
}

impl Workload {
    /// [`Workload::start`] for a program at `path` (a copy of a workload, say), named `name`
    /// in messages.
    pub fn start_path(path: &Path, args: &[&str], env: &[(&str, &OsStr)]) -> Workload {
        Workload::spawn(path, &path.display().to_string(), args, env)
    }

    /// Everything the workload printed on stdout so far.
    pub fn stdout_text(&self) -> String {
        self.stdout.text()
    }

    /// The first stdout line starting with `prefix` (waiting up to [`WORKLOAD_TIMEOUT`]),
    /// without the prefix; panics if none comes.
    pub fn stdout_value(&self, prefix: &str) -> String {
        match self.stdout.wait_for(prefix, WORKLOAD_TIMEOUT) {
            Ok(line) => line[prefix.len()..].trim().to_string(),
            Err(why) => panic!(
                "workload {} never printed {prefix:?}: {why}\n{}",
                self.name,
                self.describe()
            ),
        }
    }

    /// Where malloc is in the workload, as it printed it (`malloc_at 0x...`: ticker,
    /// serve_sites): the byte a uprobe there replaces with an int3.
    pub fn malloc_at(&self) -> u64 {
        let at = self.stdout_value("malloc_at ");
        u64::from_str_radix(at.trim_start_matches("0x"), 16)
            .unwrap_or_else(|e| panic!("malloc_at {at:?} is not hex: {e}"))
    }

    /// Sends `sig` to the workload.
    pub fn signal(&mut self, sig: libc::c_int) {
        send_signal(&mut self.child, sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::scratch::Scratch;

    /// Every workload runs untraced and writes a ground truth that parses, with its own pid:
    /// the workloads are checked even where alloctrace cannot run.
    #[test]
    fn workloads_write_their_ground_truth() {
        let scratch = Scratch::new();
        for (name, args, code, input) in [
            ("sites", &[][..], 0, None),
            ("premain", &[][..], 0, None),
            ("threads", &[][..], 0, None),
            ("exit_status", &["5"][..], 5, None),
            ("wait", &["4"][..], 4, Some(&b"g"[..])),
        ] {
            let truth_path = scratch.path(&format!("{name}.txt"));
            let mut child = Command::new(workload(name))
                .args(args)
                .env("GROUND_TRUTH", &truth_path)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start workload {name}: {e}"));
            let mut stdin = child.stdin.take().unwrap();
            if let Some(bytes) = input {
                stdin.write_all(bytes).unwrap();
            }
            drop(stdin);
            let status = wait_timeout(&mut child, WORKLOAD_TIMEOUT).unwrap_or_else(|| {
                let _ = child.kill();
                panic!("workload {name} did not finish")
            });
            assert_eq!(
                status.code(),
                Some(code),
                "workload {name} exited with {status}"
            );
            let truth = GroundTruth::read(&truth_path, name);
            assert_eq!(truth.pid, child.id(), "workload {name}'s ground-truth pid");
            assert!(
                truth.sites.iter().any(|s| s.counters.allocs > 0),
                "workload {name} allocates nothing:\n{}",
                truth.text
            );
            for s in &truth.sites {
                assert_eq!(
                    s.size_hist.values().sum::<u64>(),
                    s.counters.allocs,
                    "workload {name}: {}'s size_hist does not count every allocation",
                    s.function
                );
            }
        }
    }
}
