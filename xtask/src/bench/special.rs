//! The bench's two measurements that are not per-call overheads (`bench/special/*.c`):
//! - alloctrace's own cost: CPU time and peak memory of alloctrace itself while a target does
//!   200k allocations (and frees) per second, traced with `--pid` at default options;
//! - the final drain and symbolization of 131,072 distinct stacks (alloctrace's `-v` line
//!   "final drain: N sites in X ms; symbolized in Y ms"), and before it, the CPU alloctrace
//!   spends per drain while those sites sit unchanged (the target idle), and what a call on a
//!   new stack costs the target (its stack checked frame by frame against the executable
//!   mappings, stored, its site created) against the same calls untraced.
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd;

use super::outcome::totals_allocs;
use super::render::median;

/// The target's allocation rate for the own-cost measurement (the figure).
const PACED_RATE: u64 = 200_000;
/// How long alloctrace's CPU time is measured over.
const OWN_COST_WINDOW: Duration = Duration::from_secs(8);
/// Depth of the call tree of `stacks.c`: 2^(DEPTH+1) distinct stacks.
const STACKS_DEPTH: u32 = 16;
/// How long `stacks.c` idles once its stacks are made, and the window alloctrace's CPU is
/// measured over inside it (past a first drain that records every site).
const STACKS_IDLE: Duration = Duration::from_secs(8);
const IDLE_WINDOW: Duration = Duration::from_secs(5);

/// Flags of the special workloads (plus each one's own).
const CFLAGS: [&str; 5] = [
    "-O1",
    "-g",
    "-fno-omit-frame-pointer",
    "-fno-builtin",
    "-Wall",
];

/// CPU time of `pid`, all its threads, in seconds: the sum of each thread's time on a CPU from
/// /proc/PID/task/*/schedstat (nanoseconds; utime/stime count 10 ms ticks, too coarse here).
/// Threads that ended before the reading are not counted: alloctrace's live for the run.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let dir = format!("/proc/{pid}/task");
    let mut ns: u64 = 0;
    for t in std::fs::read_dir(&dir).with_context(|| format!("cannot read {dir}"))? {
        let path = t?.path().join("schedstat");
        if let Ok(text) = std::fs::read_to_string(&path) {
            ns += text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(ns as f64 / 1e9)
}

/// CPU seconds `pid` used per second of wall time over the next `window`.
fn cpu_share(pid: u32, window: Duration) -> Result<f64> {
    let (c0, t0) = (cpu_seconds(pid)?, Instant::now());
    std::thread::sleep(window);
    let (c1, t1) = (cpu_seconds(pid)?, Instant::now());
    Ok((c1 - c0) / (t1 - t0).as_secs_f64())
}

/// Reads lines from `r` up to one that starts with `prefix`, and returns it; `ended` says what
/// it means when the stream ends first.
fn read_through(r: &mut impl BufRead, prefix: &str, ended: &str) -> Result<String> {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            bail!("{ended}");
        }
        if line.starts_with(prefix) {
            return Ok(line.trim_end().to_string());
        }
    }
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

pub struct OwnCost {
    pub cpu_percent: f64,
    pub peak_rss_kib: u64,
    pub target_rate: f64,
}

/// alloctrace `--pid` on `paced` doing PACED_RATE malloc+free pairs per second.
pub fn own_cost(alloctrace: &Path, scratch: &Path, root: &Path) -> Result<OwnCost> {
    let exe = scratch.join("paced");
    cmd::gcc(&root.join("bench/special/paced.c"), &exe, &CFLAGS)?;
    let secs = OWN_COST_WINDOW.as_secs() + 6;
    let mut target = Command::new(&exe)
        .args([PACED_RATE.to_string(), secs.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    let mut out = BufReader::new(target.stdout.take().context("no stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    if line.trim() != "ready" {
        bail!("paced said {line:?}, not ready");
    }
    let mut tracer = Command::new(alloctrace)
        .args(["--pid", &target.id().to_string(), "--report", "json", "-o"])
        .arg(scratch.join("own-cost.json"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run alloctrace")?;
    let mut err = BufReader::new(tracer.stderr.take().context("no stderr")?);
    read_through(
        &mut err,
        "alloctrace: tracing ",
        "alloctrace ended before tracing",
    )?;
    // Keep reading its interval lines so it never blocks on a full pipe.
    let drain = std::thread::spawn(move || {
        let mut sink = String::new();
        while err.read_line(&mut sink).unwrap_or(0) > 0 {
            sink.clear();
        }
    });
    let pid = tracer.id();
    // Past the start-up (symbolizer and map set-up), into the steady state.
    std::thread::sleep(Duration::from_secs(1));
    let share = cpu_share(pid, OWN_COST_WINDOW)?;
    let peak = status_kib(pid, "VmHWM:");
    // SAFETY: plain kill(2) of our child.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let _ = tracer.wait();
    let _ = drain.join();
    let _ = target.kill();
    let _ = target.wait();
    let report = std::fs::read_to_string(scratch.join("own-cost.json")).unwrap_or_default();
    let traced = totals_allocs(&report).unwrap_or(0);
    let window = OWN_COST_WINDOW.as_secs_f64();
    Ok(OwnCost {
        cpu_percent: 100.0 * share,
        peak_rss_kib: peak,
        // Over the whole traced run (from attach to SIGINT: about 1 + window seconds).
        target_rate: traced as f64 / (window + 1.0),
    })
}

pub struct Stacks {
    pub sites: u64,
    pub drain_ms: f64,
    pub symbolize_ms: f64,
    /// alloctrace's CPU per second (one drain a second) while the sites did not change.
    pub idle_ms_per_s: f64,
    /// The target's calls, each on a new stack: traced, and untraced in the same sitting.
    pub calls_ns: f64,
    pub untraced_calls_ns: f64,
}

/// "stacks N in T ns": T.
fn calls_ns(line: &str) -> Result<f64> {
    line.split(" in ")
        .nth(1)
        .and_then(|t| t.trim().trim_end_matches(" ns").parse().ok())
        .with_context(|| format!("cannot read the calls' time in {line:?}"))
}

/// The final drain and symbolization of 2^(STACKS_DEPTH+1) distinct stacks, and alloctrace's
/// CPU while the target idles with them (default options).
pub fn stacks(alloctrace: &Path, scratch: &Path, root: &Path) -> Result<Stacks> {
    let exe: PathBuf = scratch.join("stacks");
    let flags = [&CFLAGS[..], &["-fno-optimize-sibling-calls"]].concat();
    cmd::gcc(&root.join("bench/special/stacks.c"), &exe, &flags)?;
    let untraced = Command::new(&exe)
        .arg(STACKS_DEPTH.to_string())
        .output()
        .context("cannot run stacks")?;
    let untraced_calls_ns = calls_ns(String::from_utf8_lossy(&untraced.stdout).trim())?;
    let mut tracer = Command::new(alloctrace)
        .args(["-v", "--max-stacks", "262144", "--top", "1", "--"])
        .arg(&exe)
        .arg(STACKS_DEPTH.to_string())
        .arg(STACKS_IDLE.as_secs().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run alloctrace")?;
    let mut err = BufReader::new(tracer.stderr.take().context("no stderr")?);
    let stderr = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut all);
        all
    });
    // The workload's stdout is alloctrace's (the report comes after): its line says the
    // stacks are made.
    let mut out = BufReader::new(tracer.stdout.take().context("no stdout")?);
    let said = read_through(
        &mut out,
        "stacks ",
        "stacks ended before saying its stacks were made",
    )?;
    let traced_calls_ns = calls_ns(&said)?;
    // A drain past the one that first records every site.
    std::thread::sleep(Duration::from_millis(1500));
    let idle_ms_per_s = 1e3 * cpu_share(tracer.id(), IDLE_WINDOW)?;
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut out, &mut rest);
    let status = tracer.wait()?;
    let err = stderr.join().unwrap_or_default();
    if !status.success() {
        bail!("alloctrace on stacks failed ({status}):\n{err}");
    }
    let line = err
        .lines()
        .find(|l| l.contains("final drain: "))
        .with_context(|| format!("no `final drain` line from alloctrace -v:\n{err}"))?;
    // "... final drain: N sites in X ms; symbolized in Y ms"
    let tail = line.split("final drain: ").nth(1).unwrap_or_default();
    let nums: Vec<f64> = tail
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    if nums.len() < 3 {
        bail!("cannot read {line:?}");
    }
    Ok(Stacks {
        sites: nums[0] as u64,
        drain_ms: nums[1],
        symbolize_ms: nums[2],
        idle_ms_per_s,
        calls_ns: traced_calls_ns,
        untraced_calls_ns,
    })
}

pub fn render(own: &[OwnCost], stacks: &[Stacks]) -> String {
    let mut s = String::new();
    let med = |mut v: Vec<f64>| median(&mut v);
    if !own.is_empty() {
        let cpu = med(own.iter().map(|o| o.cpu_percent).collect());
        let rss = med(own.iter().map(|o| o.peak_rss_kib as f64).collect());
        let rate = med(own.iter().map(|o| o.target_rate).collect());
        let _ = writeln!(
            s,
            "\n## alloctrace's own cost\n\nalloctrace --pid (full mode, default options: drains every 20 ms, interval lines every 1 s) on \
             `bench/special/paced.c` doing {PACED_RATE} malloc(64)+free pairs per second \
             (measured: {rate:.0} allocations/s traced), over {} s, median of {} runs: \
             **{cpu:.3}% of one core** (target ≤ 2%: {}), peak RSS **{:.1} MiB**.",
            OWN_COST_WINDOW.as_secs(),
            own.len(),
            if cpu <= 2.0 { "met" } else { "not met" },
            rss / 1024.0
        );
    }
    if !stacks.is_empty() {
        let d = med(stacks.iter().map(|x| x.drain_ms).collect());
        let y = med(stacks.iter().map(|x| x.symbolize_ms).collect());
        let n = stacks[0].sites;
        let per_100k = (d + y) * 100_000.0 / n.max(1) as f64;
        let idle = med(stacks.iter().map(|x| x.idle_ms_per_s).collect());
        let _ = writeln!(
            s,
            "\n## Drain and symbolize many distinct stacks\n\n`bench/special/stacks.c` allocates \
             from {n} distinct stacks (a binary call tree); the final drain took **{d:.0} ms** \
             and building the symbolized sites **{y:.0} ms** (median of {} runs): \
             {per_100k:.0} ms per 100k stacks (target < 1 s: {}). Before that, while the \
             target sat idle with those sites for {} s, alloctrace used **{idle:.0} ms of CPU \
             per second** (default options: drains every 20 ms, held to 1% of a core between interval lines, a full drain every 1 s; measured over {} s).",
            stacks.len(),
            if per_100k < 1000.0 { "met" } else { "not met" },
            STACKS_IDLE.as_secs(),
            IDLE_WINDOW.as_secs()
        );
        let traced = med(stacks.iter().map(|x| x.calls_ns).collect());
        let untraced = med(stacks.iter().map(|x| x.untraced_calls_ns).collect());
        let _ = writeln!(
            s,
            "\nA call on a stack never seen before costs the target **{:.2} µs** more than \
             untraced (its malloc+free pair: the stack read and checked frame by frame against \
             the process's executable mappings, stored, its site created; {} such calls took \
             {:.0} ms traced, {:.0} ms untraced, median of {} runs); a call on a known stack \
             costs what the per-workload table above shows.",
            (traced - untraced) / 1e3 / (2u64 << STACKS_DEPTH) as f64,
            2u64 << STACKS_DEPTH,
            traced / 1e6,
            untraced / 1e6,
            stacks.len(),
        );
    }
    s
}
