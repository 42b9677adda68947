//! The alloctrace binary under test: finding it (and checking that tracing can work here), its
//! command lines, and running it to completion or in the background with its outputs collected.
use std::ffi::{OsStr, OsString};

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::process::{send_signal, stop, wait_timeout, Lines};
use super::report::excerpt;

/// alloctrace prints a line starting with this on stderr once every probe is attached.
pub const TRACING_PREFIX: &str = "alloctrace: tracing ";
/// Every error alloctrace reports is one stderr line starting with this.
pub const ERROR_PREFIX: &str = "alloctrace: error: ";
/// The drain interval the tests use (short, so runs end soon after their target).
pub const INTERVAL: &str = "250ms";

/// `alloctrace --pid PID --interval 250ms --report json -o REPORT EXTRA`.
pub fn pid_args(pid: u32, report: &Path, extra: &[&OsStr]) -> Vec<OsString> {
    let mut a = vec![OsString::from("--pid"), OsString::from(pid.to_string())];
    a.extend(report_args(INTERVAL, report, extra));
    a
}

/// `--interval INTERVAL --report json -o REPORT EXTRA`: the options of every run whose JSON
/// report a test reads.
pub fn report_args(interval: &str, report: &Path, extra: &[&OsStr]) -> Vec<OsString> {
    let mut a: Vec<OsString> = ["--interval", interval, "--report", "json", "-o"]
        .iter()
        .map(OsString::from)
        .collect();
    a.push(report.into());
    a.extend(extra.iter().map(|s| s.to_os_string()));
    a
}

/// Longest a whole alloctrace run may take before the test kills it and fails.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest alloctrace may take to load and attach its probes.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The alloctrace binary to test, after checking that tracing can work here: `ALLOCTRACE_BIN`
/// is set to an executable file, we are root, and the kernel lets us use BPF and uprobes.
/// Panics with the reason otherwise. Call it first in every privileged test.
pub fn alloctrace_bin() -> PathBuf {
    static CHECKED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match CHECKED.get_or_init(check_prerequisites) {
        Ok(p) => p.clone(),
        Err(why) => panic!("cannot run alloctrace's integration tests: {why}"),
    }
}

fn check_prerequisites() -> Result<PathBuf, String> {
    let bin = std::env::var_os("ALLOCTRACE_BIN").ok_or(
        "ALLOCTRACE_BIN is not set: run the privileged tests with `cargo xtask test`, which builds \
         alloctrace and passes its path (or set ALLOCTRACE_BIN=/abs/path/to/alloctrace and run as root)",
    )?;
    let bin = PathBuf::from(bin);
    let meta =
        std::fs::metadata(&bin).map_err(|e| format!("ALLOCTRACE_BIN={}: {e}", bin.display()))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "ALLOCTRACE_BIN={} is not an executable file",
            bin.display()
        ));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(format!(
            "not root (euid {euid}): alloctrace loads eBPF programs; run `sudo -E env PATH=\"$PATH\" cargo xtask test`"
        ));
    }
    for (path, what) in [
        (
            "/sys/bus/event_source/devices/uprobe",
            "uprobe support (CONFIG_UPROBE_EVENTS)",
        ),
        (
            "/sys/kernel/btf/vmlinux",
            "kernel BTF (CONFIG_DEBUG_INFO_BTF)",
        ),
    ] {
        if !Path::new(path).exists() {
            return Err(format!(
                "BPF is unavailable: this kernel has no {what}: {path} is missing"
            ));
        }
    }
    bpf_map_create_works()?;
    Ok(bin)
}

/// Creates (and closes) a one-entry BPF array map: fails when BPF is disabled, forbidden by a
/// seccomp filter (containers), or missing from the kernel.
fn bpf_map_create_works() -> Result<(), String> {
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    // union bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size, max_entries, then
    // fields left zero; the kernel accepts a shorter attr as long as it is zero-tailed.
    let mut attr = [0u32; 32];
    attr[..4].copy_from_slice(&[BPF_MAP_TYPE_ARRAY, 4, 4, 1]);
    // SAFETY: bpf(2) reads `size_of_val(&attr)` bytes from a valid, initialized buffer.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr) as libc::c_uint,
        )
    };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        return Err(format!(
            "BPF is unavailable: bpf(BPF_MAP_CREATE) failed: {err}"
        ));
    }
    // SAFETY: `fd` is a descriptor bpf(2) just returned to us and nobody else holds.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

/// How a finished alloctrace run ended and what it printed.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub args: Vec<OsString>,
}

impl Finished {
    /// The exit code; panics (with the output) if alloctrace died of a signal.
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or_else(|| {
            panic!(
                "alloctrace was killed by signal {:?}\n{}",
                self.status.signal(),
                self.describe()
            )
        })
    }

    /// The command line, status and both outputs, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "--- alloctrace {}\n--- {}\n--- stderr:\n{}--- stdout:\n{}---",
            self.args
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            self.status,
            excerpt(&self.stderr, 8000),
            excerpt(&self.stdout, 8000)
        )
    }

    /// Asserts the run exited with `code`.
    pub fn assert_code(&self, code: i32) {
        assert_eq!(
            self.code(),
            code,
            "alloctrace's exit status\n{}",
            self.describe()
        );
    }

    /// The stderr lines that are errors (start with [`ERROR_PREFIX`]).
    pub fn error_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with(ERROR_PREFIX))
            .collect()
    }

    /// Asserts the run failed the way every alloctrace error must: non-zero status and exactly
    /// one stderr line, which starts with `alloctrace: error: ` and contains every word of
    /// `mentions`. Returns that line.
    pub fn assert_one_line_error(&self, mentions: &[&str]) -> String {
        assert_ne!(
            self.code(),
            0,
            "alloctrace succeeded where it must fail\n{}",
            self.describe()
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert!(
            lines.len() == 1 && lines[0].starts_with(ERROR_PREFIX),
            "expected exactly one stderr line starting with {ERROR_PREFIX:?}, got {}\n{}",
            lines.len(),
            self.describe()
        );
        for m in mentions {
            assert!(
                lines[0].contains(m),
                "the error does not mention {m:?}: {:?}\n{}",
                lines[0],
                self.describe()
            );
        }
        lines[0].to_string()
    }
}

/// A running alloctrace, its outputs collected by threads. Dropped while still running (a test
/// failed), it is stopped.
pub struct Running {
    child: Child,
    stdout: Lines,
    stderr: Lines,
    readers: Vec<JoinHandle<()>>,
    args: Vec<OsString>,
}

impl Running {
    /// Starts `$ALLOCTRACE_BIN ARGS` with stdin from /dev/null and `env` added to ours.
    pub fn spawn<A: AsRef<OsStr>>(args: &[A], env: &[(&str, &OsStr)]) -> Running {
        Running::spawn_with(args, |c| {
            for (k, v) in env {
                c.env(k, v);
            }
        })
    }

    /// Like [`Running::spawn`], with `configure` adjusting the command (environment,
    /// directory) before it starts.
    pub fn spawn_with<A: AsRef<OsStr>>(
        args: &[A],
        configure: impl FnOnce(&mut Command),
    ) -> Running {
        let bin = alloctrace_bin();
        let args: Vec<OsString> = args.iter().map(|a| a.as_ref().to_os_string()).collect();
        let mut cmd = Command::new(&bin);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        configure(&mut cmd);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let (stdout, h1) = Lines::collect(child.stdout.take().expect("piped stdout"));
        let (stderr, h2) = Lines::collect(child.stderr.take().expect("piped stderr"));
        Running {
            child,
            stdout,
            stderr,
            readers: vec![h1, h2],
            args,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for alloctrace's `alloctrace: tracing ` line; panics with its output if it exits
    /// or takes longer than [`STARTUP_TIMEOUT`].
    pub fn wait_until_tracing(&mut self) -> String {
        match self.stderr.wait_for(TRACING_PREFIX, STARTUP_TIMEOUT) {
            Ok(line) => line,
            Err(why) => {
                stop(&mut self.child);
                panic!(
                    "alloctrace never said it was tracing: {why}\n--- alloctrace {}\n--- stderr:\n{}--- stdout:\n{}",
                    self.args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "),
                    excerpt(&self.stderr.text(), 8000),
                    excerpt(&self.stdout.text(), 8000)
                )
            }
        }
    }

    /// Sends `sig` to alloctrace.
    pub fn signal(&mut self, sig: libc::c_int) {
        send_signal(&mut self.child, sig);
    }

    /// Waits up to `timeout` for alloctrace to exit by itself; panics (after stopping it, with
    /// its output) if it does not.
    pub fn wait(mut self, timeout: Duration) -> Finished {
        let status = wait_timeout(&mut self.child, timeout);
        if status.is_none() {
            stop(&mut self.child);
        }
        for h in self.readers.drain(..) {
            let _ = h.join();
        }
        let finished = Finished {
            status: status.unwrap_or_else(|| self.child.wait().expect("wait for alloctrace")),
            stdout: self.stdout.text(),
            stderr: self.stderr.text(),
            args: std::mem::take(&mut self.args),
        };
        assert!(
            status.is_some(),
            "alloctrace did not exit within {timeout:?}; stopped it\n{}",
            finished.describe()
        );
        finished
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Runs alloctrace with `args` to completion (at most [`RUN_TIMEOUT`]).
pub fn run_alloctrace<A: AsRef<OsStr>>(args: &[A], env: &[(&str, &OsStr)]) -> Finished {
    Running::spawn(args, env).wait(RUN_TIMEOUT)
}

impl Running {
    /// Whether alloctrace is still running (not yet exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// alloctrace's stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.text()
    }
}

/// Waits (20 s at most) for `tracer`'s stderr to contain `needle`.
pub fn await_stderr(tracer: &Running, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !tracer.stderr_text().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "alloctrace did not say {needle:?} within 20 s\n{}",
            tracer.stderr_text()
        );
        thread::sleep(Duration::from_millis(20));
    }
}
