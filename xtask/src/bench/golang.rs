//! The Go section (`cargo xtask bench --go-only`, and after the main tables): an
//! allocation-heavy Go program (`bench/go/churn`, two escaping allocations per iteration)
//! profiled from outside by alloctrace, against the same program profiling itself with
//! `runtime.MemProfileRate = 1` (every allocation: the guide's "Enable Allocation Profiling")
//! and with Go's default rate (one sample per 512 KiB), side by side in the same rounds
//! (rotated). The program times its own loop, so start-up and alloctrace's detach are not in it.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use super::outcome::totals_allocs;
use super::render::{cpu_nproc_kernel, median};

/// One way of running the program: its MemProfileRate argument (None: Go's default), and
/// alloctrace's options (None: untraced).
struct GoConfig {
    name: &'static str,
    rate: Option<&'static str>,
    alloctrace: Option<&'static [&'static str]>,
}

const CONFIGS: &[GoConfig] = &[
    GoConfig {
        name: "Go default (MemProfileRate 512 KiB), untraced",
        rate: None,
        alloctrace: None,
    },
    GoConfig {
        name: "MemProfileRate = 0 (profiling off)",
        rate: Some("0"),
        alloctrace: None,
    },
    GoConfig {
        name: "MemProfileRate = 1 (every allocation, Go's own)",
        rate: Some("1"),
        alloctrace: None,
    },
    GoConfig {
        name: "alloctrace (every allocation, exact)",
        rate: None,
        alloctrace: Some(&[]),
    },
    GoConfig {
        name: "alloctrace --sample-bytes 512K",
        rate: None,
        alloctrace: Some(&["--sample-bytes", "524288"]),
    },
];

/// One run: ns per allocation of the loop, and what alloctrace counted (its rows).
struct GoRun {
    ns_per_alloc: f64,
    events: u64,
    counted: Option<u64>,
}

/// Builds the program, runs every configuration `repeat` times with `iterations` loop
/// iterations, and returns the section as markdown.
pub(super) fn run(
    alloctrace: &Path,
    root: &Path,
    scratch: &Path,
    iterations: u64,
    repeat: usize,
) -> Result<String> {
    let exe = scratch.join("go-churn");
    let mut build = Command::new("go");
    build
        .current_dir(root.join("bench/go"))
        .args(["build", "-o"])
        .arg(&exe)
        .arg("./churn")
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local");
    let out = build
        .output()
        .context("cannot run go (apt-get install -y golang-go; `cargo xtask setup` does)")?;
    if !out.status.success() {
        bail!(
            "go build of bench/go/churn failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let version = Command::new("go")
        .arg("version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut runs: Vec<Vec<GoRun>> = CONFIGS.iter().map(|_| Vec::new()).collect();
    let mut notes = Vec::new();
    for round in 0..repeat {
        for k in 0..CONFIGS.len() {
            let c = (k + round) % CONFIGS.len();
            eprintln!(
                "xtask: bench: round {}/{repeat} go churn: {}",
                round + 1,
                CONFIGS[c].name
            );
            match run_one(alloctrace, &exe, scratch, iterations, &CONFIGS[c]) {
                Ok(r) => runs[c].push(r),
                Err(e) => notes.push(format!(
                    "{}, round {}: left out: {e:#}",
                    CONFIGS[c].name,
                    round + 1
                )),
            }
        }
    }
    Ok(render(&runs, &notes, &version, iterations, repeat))
}

fn run_one(
    alloctrace: &Path,
    exe: &Path,
    scratch: &Path,
    iterations: u64,
    cfg: &GoConfig,
) -> Result<GoRun> {
    let out_file = scratch.join("go-churn.out");
    let report = scratch.join("go-churn.json");
    let _ = fs::remove_file(&out_file);
    let _ = fs::remove_file(&report);
    let mut program: Vec<PathBuf> = vec![exe.into(), iterations.to_string().into()];
    program.push(out_file.clone());
    program.extend(cfg.rate.map(PathBuf::from));
    let mut command = match cfg.alloctrace {
        None => {
            let mut c = Command::new(&program[0]);
            c.args(&program[1..]);
            c
        }
        Some(args) => {
            let mut c = Command::new(alloctrace);
            c.args(["--interval", "1s", "--report", "json", "-o"])
                .arg(&report)
                .args(args)
                .arg("--")
                .args(&program)
                .env_remove("ALLOCTRACE_PROBE_AT")
                .env_remove("ALLOCTRACE_BENCH_FLOOR");
            c
        }
    };
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = fs::read_to_string(&out_file)
        .with_context(|| format!("the program wrote no {}", out_file.display()))?;
    let field = |key: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .with_context(|| format!("no `{key}` in {text}"))
    };
    let (elapsed, events) = (field("elapsed_ns ")?, field("events ")?);
    let counted = match cfg.alloctrace {
        Some(_) => Some(
            fs::read_to_string(&report)
                .ok()
                .as_deref()
                .and_then(totals_allocs)
                .context("alloctrace wrote no report")?,
        ),
        None => None,
    };
    Ok(GoRun {
        ns_per_alloc: elapsed as f64 / events.max(1) as f64,
        events,
        counted,
    })
}

fn render(
    runs: &[Vec<GoRun>],
    notes: &[String],
    version: &str,
    iterations: u64,
    repeat: usize,
) -> String {
    let (cpu, nproc, kernel) = cpu_nproc_kernel();
    let mut t = format!(
        "\n## Go: alloctrace against Go's own allocation profiling\n\n\
         `bench/go/churn`, {iterations} iterations of two escaping allocations (48 B and 32 B), \
         {repeat} rounds, medians (min–max); {version}; {cpu}, {nproc} CPUs, kernel {kernel}.\n\
         Go's own profiling is measured in the program (runtime.MemProfileRate set before the \
         loop); alloctrace traces the unmodified program (default rate) from outside.\n\n\
         | configuration | ns per allocation | × Go default | allocations counted |\n\
         |---|---:|---:|---:|\n"
    );
    let base = median(&mut runs[0].iter().map(|r| r.ns_per_alloc).collect::<Vec<_>>());
    for (cfg, rs) in CONFIGS.iter().zip(runs) {
        if rs.is_empty() {
            let _ = std::fmt::Write::write_fmt(
                &mut t,
                format_args!("| {} | no valid run | | |\n", cfg.name),
            );
            continue;
        }
        let mut v: Vec<f64> = rs.iter().map(|r| r.ns_per_alloc).collect();
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        let m = median(&mut v);
        let counted = match rs.first().and_then(|r| r.counted.map(|c| (c, r.events))) {
            None => "–".to_string(),
            Some((c, events)) => format!("{c} (loop: {events})"),
        };
        let _ = std::fmt::Write::write_fmt(
            &mut t,
            format_args!(
                "| {} | {m:.0} ({lo:.0}–{hi:.0}) | {:.1} | {counted} |\n",
                cfg.name,
                m / base
            ),
        );
    }
    t.push_str(
        "\nalloctrace counts every allocation of the whole process (the runtime's own too), so \
         its count is at or above the loop's.\n",
    );
    for n in notes {
        t.push_str(&format!("\n{n}.\n"));
    }
    t
}
