//! The bench's start-up section: how long alloctrace takes to start tracing and to end, side by
//! side with heaptrack in the same rounds (issue 22's targets), medians of `--repeat` rounds:
//! - launch: `alloctrace -- /bin/true` wall, from its exec to its exit, against `heaptrack
//!   /bin/true` (target: at most 3×), and how much of it is the start (to the "tracing" line,
//!   after which every allocation is counted) and the end (the rest: /bin/true's ~1 ms, the
//!   report, the probes' detach);
//! - `--pid` on a waiting target that allocates every millisecond: from alloctrace's start to
//!   its "tracing" line (its probes in: the next allocation is counted; target ≤ 0.5 s), and
//!   from SIGINT to its exit with the report written (target ≤ 0.3 s);
//! - system-wide: the same two.
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd;

use super::render::{cpu_nproc_kernel, median};

/// A target for `--pid`: one malloc and free per millisecond until killed (it waits as a
/// long-running service would).
const TICKER_C: &str = r#"#include <stdlib.h>
#include <unistd.h>
int main(void)
{
    for (;;) {
        volatile char *p = malloc(64);
        p[0] = 1;
        free((void *)p);
        usleep(1000);
    }
}
"#;

/// How long alloctrace may take to say it is tracing before the round fails.
const START_LIMIT: Duration = Duration::from_secs(60);

/// One binary's figures in one round, in seconds.
#[derive(Default, Clone)]
pub struct Figures {
    launch_wall: f64,
    launch_start: f64,
    pid_start: f64,
    pid_end: f64,
    system_start: f64,
    system_end: f64,
}

/// One round: alloctrace, the baseline build if any, heaptrack if installed.
#[derive(Default, Clone)]
pub struct Round {
    ours: Figures,
    baseline: Option<Figures>,
    heaptrack_wall: Option<f64>,
}

/// Runs `repeat` rounds (the order of the runs within each alternates).
pub fn run(
    alloctrace: &Path,
    baseline: Option<&Path>,
    heaptrack: Option<&Path>,
    scratch: &Path,
    repeat: usize,
) -> Result<Vec<Round>> {
    let src = scratch.join("startup-ticker.c");
    std::fs::write(&src, TICKER_C).with_context(|| format!("cannot write {}", src.display()))?;
    let ticker = scratch.join("startup-ticker");
    cmd::gcc(&src, &ticker, &["-O1", "-Wall"])?;
    let mut rounds = Vec::with_capacity(repeat);
    for round in 0..repeat {
        eprintln!("xtask: bench: round {}/{repeat}: start-up", round + 1);
        let mut r = Round::default();
        let reversed = round % 2 == 1;
        if reversed {
            r.heaptrack_wall = heaptrack.map(|h| heaptrack_true(h, scratch)).transpose()?;
            r.baseline = baseline.map(|b| measure(b, &ticker)).transpose()?;
        }
        r.ours = measure(alloctrace, &ticker)?;
        if !reversed {
            r.baseline = baseline.map(|b| measure(b, &ticker)).transpose()?;
            r.heaptrack_wall = heaptrack.map(|h| heaptrack_true(h, scratch)).transpose()?;
        }
        rounds.push(r);
    }
    Ok(rounds)
}

/// One binary's round: launch, --pid on a fresh `ticker`, system-wide.
fn measure(alloctrace: &Path, ticker: &Path) -> Result<Figures> {
    let mut f = Figures::default();
    (f.launch_wall, f.launch_start) = launch_true(alloctrace)?;
    let mut target = Command::new(ticker)
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start the --pid target")?;
    let pid = target.id().to_string();
    let traced = start_and_interrupt(alloctrace, &["--pid", &pid]);
    let _ = target.kill();
    let _ = target.wait();
    (f.pid_start, f.pid_end) = traced?;
    (f.system_start, f.system_end) = start_and_interrupt(alloctrace, &[])?;
    Ok(f)
}

/// `alloctrace -- /bin/true`: (wall, start to the "tracing" line).
fn launch_true(alloctrace: &Path) -> Result<(f64, f64)> {
    let (t0, mut child, started, drain) = start_tracing(alloctrace, &["--", "/bin/true"])?;
    let status = child.wait()?;
    let wall = t0.elapsed().as_secs_f64();
    let _ = drain.join();
    if !status.success() {
        bail!("alloctrace -- /bin/true failed ({status})");
    }
    Ok((wall, started))
}

/// `heaptrack /bin/true`'s wall, its data file written into `scratch`.
fn heaptrack_true(heaptrack: &Path, scratch: &Path) -> Result<f64> {
    let t0 = Instant::now();
    let status = Command::new(heaptrack)
        .arg("/bin/true")
        .current_dir(scratch)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("cannot run heaptrack")?;
    let wall = t0.elapsed().as_secs_f64();
    if !status.success() {
        bail!("heaptrack /bin/true failed ({status})");
    }
    for e in std::fs::read_dir(scratch)?.flatten() {
        if e.file_name()
            .to_string_lossy()
            .starts_with("heaptrack.true.")
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(wall)
}

/// Starts `alloctrace ARGS` (report on stdout, to nothing), waits for its "tracing" line,
/// sends SIGINT: (start to the line, SIGINT to exit).
fn start_and_interrupt(alloctrace: &Path, args: &[&str]) -> Result<(f64, f64)> {
    let (_, mut child, started, drain) = start_tracing(alloctrace, args)?;
    // Past its first interval's set-up: a real user's Ctrl-C comes later still.
    std::thread::sleep(Duration::from_millis(200));
    let t1 = Instant::now();
    // SAFETY: kill has no memory preconditions; the pid is our live child's.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait()?;
    let end = t1.elapsed().as_secs_f64();
    let _ = drain.join();
    // 128 + SIGINT: ended by the signal, as asked.
    if status.code() != Some(130) && !status.success() {
        bail!("alloctrace {} ended with {status}", args.join(" "));
    }
    Ok((started, end))
}

/// Starts `alloctrace ARGS` (stdout to nothing) and waits for its "tracing" line: when it
/// started, the child, seconds to the line, and the thread reading the rest of its stderr (so
/// that it never blocks on a full pipe).
fn start_tracing(
    alloctrace: &Path,
    args: &[&str],
) -> Result<(Instant, Child, f64, JoinHandle<Option<usize>>)> {
    let t0 = Instant::now();
    let mut child = Command::new(alloctrace)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start alloctrace")?;
    let started = tracing_line(&mut child, t0)?;
    let rest = child.stderr.take();
    let drain = std::thread::spawn(move || rest.map(|e| BufReader::new(e).lines().count()));
    Ok((t0, child, started, drain))
}

/// Seconds from `t0` to the child's "alloctrace: tracing" line on stderr (its probes are in).
fn tracing_line(child: &mut Child, t0: Instant) -> Result<f64> {
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let mut lines = BufReader::new(stderr);
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line)? == 0 {
            let _ = child.kill();
            bail!("alloctrace ended before saying it was tracing");
        }
        if line.starts_with("alloctrace: tracing") {
            let at = t0.elapsed();
            // Give the pipe back for the rest.
            child.stderr = Some(lines.into_inner());
            return Ok(at.as_secs_f64());
        }
        if t0.elapsed() > START_LIMIT {
            let _ = child.kill();
            bail!("alloctrace did not say it was tracing within {START_LIMIT:?}");
        }
    }
}

/// The section's markdown.
pub fn render(rounds: &[Round]) -> String {
    let med = |v: &[f64]| median(&mut v.to_vec());
    let cell = |v: &[f64]| -> String {
        if v.is_empty() {
            return "—".into();
        }
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        format!("{:.3} s ({:.3}–{:.3})", med(v), lo, hi)
    };
    let ours =
        |f: &dyn Fn(&Figures) -> f64| -> Vec<f64> { rounds.iter().map(|r| f(&r.ours)).collect() };
    let base = |f: &dyn Fn(&Figures) -> f64| -> Vec<f64> {
        rounds
            .iter()
            .filter_map(|r| r.baseline.as_ref().map(f))
            .collect()
    };
    let heap: Vec<f64> = rounds.iter().filter_map(|r| r.heaptrack_wall).collect();
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\n## Start-up and end\n\nMedians of {} rounds (min–max); wall time measured by xtask \
         around each process. \"Tracing\" is alloctrace's `alloctrace: tracing` line: its \
         probes are in, every allocation from then on is counted. \"Baseline\" is the build \
         given with `--startup-baseline` (the one before a change), measured in the same \
         rounds.\n",
        rounds.len()
    );
    let _ = writeln!(
        t,
        "| measure | alloctrace | baseline | heaptrack | target |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|");
    let launch = ours(&|f| f.launch_wall);
    let ratio = if heap.is_empty() {
        "≤ 3× heaptrack (heaptrack not installed)".to_string()
    } else {
        format!("≤ 3× heaptrack: {:.1}×", med(&launch) / med(&heap))
    };
    type Get = fn(&Figures) -> f64;
    let rows: [(&str, Get, String, String); 7] = [
        (
            "`-- /bin/true`, wall",
            |f| f.launch_wall,
            cell(&heap),
            ratio,
        ),
        (
            "`-- /bin/true`, start to tracing",
            |f| f.launch_start,
            "—".into(),
            String::new(),
        ),
        (
            "`-- /bin/true`, tracing to exit (end)",
            |f| f.launch_wall - f.launch_start,
            "—".into(),
            "≤ 0.3 s".into(),
        ),
        (
            "`--pid`, start to tracing",
            |f| f.pid_start,
            "—".into(),
            "≤ 0.5 s".into(),
        ),
        (
            "`--pid`, SIGINT to exit",
            |f| f.pid_end,
            "—".into(),
            "≤ 0.3 s".into(),
        ),
        (
            "system-wide, start to tracing",
            |f| f.system_start,
            "—".into(),
            "≤ 0.5 s".into(),
        ),
        (
            "system-wide, SIGINT to exit",
            |f| f.system_end,
            "—".into(),
            "≤ 0.3 s".into(),
        ),
    ];
    for (name, get, other, target) in rows {
        let _ = writeln!(
            t,
            "| {name} | {} | {} | {other} | {target} |",
            cell(&ours(&get)),
            cell(&base(&get))
        );
    }
    t
}

/// Where the section goes when run alone.
pub fn default_output(root: &Path) -> PathBuf {
    root.join("bench/RESULTS-startup.md")
}

/// The machine, the kernel and heaptrack's version, as lines of a list.
pub fn machine(heaptrack: Option<&Path>) -> String {
    let (cpu, nproc, kernel) = cpu_nproc_kernel();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let mut s = format!(
        "- CPU: {cpu}, nproc {nproc}\n- kernel: {kernel}\n- load average at the start: {load}\n"
    );
    if let Some(h) = heaptrack {
        let v = cmd::output(Command::new(h).arg("--version")).unwrap_or_default();
        let _ = writeln!(s, "- {}", v.lines().next().unwrap_or("heaptrack").trim());
    }
    s
}
