//! Running one workload under one configuration (and finding where alloctrace places its probes).
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, ensure, Context, Result};

use crate::cmd;

use super::bcc::{run_memleak, Bcc};
use super::configs::{bpftrace_script, Config, Tracer};
use super::outcome::{own_use, totals_allocs, Outcome, Run};
use super::workloads::argv;

pub(super) struct Env {
    pub(super) alloctrace: PathBuf,
    pub(super) bpftrace: Option<PathBuf>,
    pub(super) heaptrack: Option<PathBuf>,
    pub(super) bcc: Option<Bcc>,
    /// Comparisons left out, and why (printed with the results).
    pub(super) notes: Vec<String>,
    pub(super) libc: PathBuf,
    pub(super) scratch: PathBuf,
    pub(super) iterations: u64,
}

/// alloctrace's `-v` placement lines for this libc (one short run).
pub(super) fn placements(env: &Env, exe: &Path) -> Result<Vec<String>> {
    let out_file = env.scratch.join("placement.out");
    let output = Command::new(&env.alloctrace)
        .args(["-v", "--report", "json", "-o"])
        .arg(env.scratch.join("placement.json"))
        .arg("--")
        .args(argv(exe))
        .arg("1")
        .arg(&out_file)
        .env_remove("ALLOCTRACE_PROBE_AT")
        .env_remove("ALLOCTRACE_BENCH_FLOOR")
        .stdout(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", env.alloctrace.display()))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.success(),
        "alloctrace -v on {} failed ({}):\n{stderr}",
        exe.display(),
        output.status
    );
    Ok(stderr
        .lines()
        .filter_map(|l| {
            l.split_once("probe placement: ")
                .map(|(_, r)| r.to_string())
        })
        .collect())
}

pub(super) fn run_one(env: &Env, exe: &Path, cfg: Config) -> Result<Outcome> {
    let out_file = env.scratch.join("loop.out");
    let _ = fs::remove_file(&out_file);
    let report = env.scratch.join("report.json");
    let _ = fs::remove_file(&report);
    let n = env.iterations.to_string();
    if let Tracer::Memleak { moved } = cfg.tracer {
        let bcc = env.bcc.as_ref().expect("filtered out without BCC");
        return run_memleak(bcc, exe, &n, &out_file, moved);
    }
    let mut command = match cfg.tracer {
        Tracer::Memleak { .. } => unreachable!("run above"),
        Tracer::None => {
            let a = argv(exe);
            let mut c = Command::new(&a[0]);
            c.args(&a[1..]).arg(&n).arg(&out_file);
            c
        }
        Tracer::Alloctrace { entry, floor, args } => {
            let mut c = Command::new(&env.alloctrace);
            c.args(["--interval", "1s", "--report", "json", "-o"])
                .arg(&report)
                .args(args)
                .arg("--")
                .args(argv(exe))
                .arg(&n)
                .arg(&out_file)
                .env("ALLOCTRACE_PROBE_AT", if entry { "entry" } else { "auto" });
            if floor {
                c.env("ALLOCTRACE_BENCH_FLOOR", "1");
            } else {
                c.env_remove("ALLOCTRACE_BENCH_FLOOR");
            }
            c
        }
        Tracer::Heaptrack => {
            let heaptrack = env
                .heaptrack
                .as_ref()
                .expect("filtered out without heaptrack");
            let mut c = Command::new(heaptrack);
            c.arg("-o")
                .arg(env.scratch.join("heaptrack.out"))
                .args(argv(exe))
                .arg(&n)
                .arg(&out_file)
                .stdout(Stdio::null());
            c
        }
        Tracer::Bpftrace => {
            let bpftrace = env
                .bpftrace
                .as_ref()
                .expect("filtered out without bpftrace");
            let mut c = Command::new(bpftrace);
            c.arg("-c")
                .arg(format!(
                    "{} {n} {}",
                    argv(exe)
                        .iter()
                        .map(|a| a.to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join(" "),
                    out_file.display()
                ))
                .arg("-e")
                .arg(bpftrace_script(&env.libc));
            c
        }
    };
    command.env("PYTHONMALLOC", "malloc");
    let start = Instant::now();
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", cmd::describe(&command)))?;
    let wall_s = start.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!(
            "{} failed ({}):\n{}",
            cmd::describe(&command),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = fs::read_to_string(&out_file).with_context(|| {
        format!(
            "{} wrote no {} (stderr: {})",
            cmd::describe(&command),
            out_file.display(),
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    let field = |key: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .with_context(|| format!("no `{key}` in {}:\n{text}", out_file.display()))
    };
    let report = match cfg.tracer {
        Tracer::Alloctrace { .. } => fs::read_to_string(&report).ok(),
        _ => None,
    };
    Ok(Ok(Run {
        loop_ns: field("elapsed_ns ")?,
        events: field("events ")?,
        wall_s,
        counted: report.as_deref().and_then(totals_allocs),
        own: report.as_deref().and_then(own_use),
        seen: None,
    }))
}
