//! `cargo xtask bench`: the tracing overhead, side by side in one run.
//!
//! Each workload of `bench/workloads/*.c` (compiled here with gcc), and `python.py` run by
//! Debian's unmodified /usr/bin/python3 with PYTHONMALLOC=malloc, times its own allocator loop
//! with CLOCK_MONOTONIC and writes `elapsed_ns`/`events` to a file, so what is measured is the
//! loop under tracing, not alloctrace's start-up or its ~1.5 s detach. Launch mode
//! (`alloctrace -- WORKLOAD`) and `bpftrace -c` both hold the command until their probes are
//! attached. Every configuration runs once per round, rounds rotate the order (drift and other
//! load spread over all of them), and the table shows medians with the min–max spread.
//!
//! Configurations, per workload:
//! - `untraced`: the workload alone;
//! - `floor (placed)` / `floor (entry)`: alloctrace's probe points with programs that return at
//!   once (`ALLOCTRACE_BENCH_FLOOR=1`: the eBPF CONTROL_STOPPED switch set before attaching),
//!   placed as by default / every probe at offset 0;
//! - `alloctrace (placed)`: the default, probes placed on emulated instructions;
//! - `alloctrace (entry)`: `ALLOCTRACE_PROBE_AT=entry`, every probe at its function's entry;
//! - `floor alloc-only`, `alloctrace alloc-only`: `--mode alloc-only` (entry probes only);
//! - `full --sample-bytes 512K`, `alloc-only --sample-bytes 512K`: sampling one allocation's
//!   stack per 512 KiB;
//! - `bpftrace memleak-like`: if bpftrace is installed, a script doing what BCC memleak does
//!   on the hot path (size at entry, address -> size at return, per-stack count and bytes with
//!   `ustack`, delete at free), on malloc, posix_memalign and free, at their entries;
//! - `heaptrack`: if installed, heaptrack launching the workload (LD_PRELOAD);
//! - `BCC memleak`: if installed (Debian's bpfcc-tools), `memleak-bpfcc -p PID` on the
//!   workload, which waits for it (BENCH_WAIT).
use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, ensure, Context, Result};
use clap::Args;

use crate::{build, cmd};

#[derive(Debug, Args)]
pub struct BenchOpts {
    /// Loop iterations of each workload (two allocator calls, two events, each).
    #[arg(long, default_value_t = 100_000)]
    pub iterations: u64,
    /// Rounds: every configuration runs once per round (medians and spread over the rounds).
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Only this workload (a file stem of bench/workloads/*.c); repeatable. All by default.
    #[arg(long = "workload", value_name = "NAME")]
    pub workloads: Vec<String>,
    /// Leave bpftrace out even when it is installed.
    #[arg(long)]
    pub no_bpftrace: bool,
    /// Where to write the results (default bench/RESULTS.md).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tracer {
    None,
    /// `args`: extra options (the mode, sampling).
    Alloctrace {
        entry: bool,
        floor: bool,
        args: &'static [&'static str],
    },
    Bpftrace,
    /// heaptrack (LD_PRELOAD; must launch the program), if installed.
    Heaptrack,
    /// BCC's memleak (`memleak-bpfcc -p PID`), if installed: attached to the waiting
    /// workload (BENCH_WAIT), which is released once memleak says it is attaching.
    Memleak,
}

#[derive(Clone, Copy, Debug)]
struct Config {
    name: &'static str,
    tracer: Tracer,
    /// The configuration this one's cost is compared with (`× floor`).
    floor: Option<&'static str>,
}

const ALLOC_ONLY: &[&str] = &["--mode", "alloc-only"];
const SAMPLED: &[&str] = &["--mode", "alloc-only", "--sample-bytes", "524288"];
const FULL_SAMPLED: &[&str] = &["--sample-bytes", "524288"];

const CONFIGS: &[Config] = &[
    Config {
        name: "untraced",
        tracer: Tracer::None,
        floor: None,
    },
    Config {
        name: "floor (placed)",
        tracer: Tracer::Alloctrace {
            entry: false,
            floor: true,
            args: &[],
        },
        floor: None,
    },
    Config {
        name: "floor (entry)",
        tracer: Tracer::Alloctrace {
            entry: true,
            floor: true,
            args: &[],
        },
        floor: None,
    },
    Config {
        name: "alloctrace (placed)",
        tracer: Tracer::Alloctrace {
            entry: false,
            floor: false,
            args: &[],
        },
        floor: Some("floor (placed)"),
    },
    Config {
        name: "alloctrace (entry)",
        tracer: Tracer::Alloctrace {
            entry: true,
            floor: false,
            args: &[],
        },
        floor: Some("floor (entry)"),
    },
    Config {
        name: "full --sample-bytes 512K",
        tracer: Tracer::Alloctrace {
            entry: false,
            floor: false,
            args: FULL_SAMPLED,
        },
        floor: Some("floor (placed)"),
    },
    Config {
        name: "floor alloc-only",
        tracer: Tracer::Alloctrace {
            entry: false,
            floor: true,
            args: ALLOC_ONLY,
        },
        floor: None,
    },
    Config {
        name: "alloctrace alloc-only",
        tracer: Tracer::Alloctrace {
            entry: false,
            floor: false,
            args: ALLOC_ONLY,
        },
        floor: Some("floor alloc-only"),
    },
    Config {
        name: "alloc-only --sample-bytes 512K",
        tracer: Tracer::Alloctrace {
            entry: false,
            floor: false,
            args: SAMPLED,
        },
        floor: Some("floor alloc-only"),
    },
    Config {
        name: "bpftrace memleak-like",
        tracer: Tracer::Bpftrace,
        floor: None,
    },
    Config {
        name: "heaptrack",
        tracer: Tracer::Heaptrack,
        floor: None,
    },
    Config {
        name: "BCC memleak",
        tracer: Tracer::Memleak,
        floor: None,
    },
];

/// One run of one workload under one configuration.
#[derive(Clone, Copy, Debug)]
struct Run {
    loop_ns: u64,
    events: u64,
    wall_s: f64,
    /// Allocations alloctrace's report counts (alloctrace configurations only).
    counted: Option<u64>,
}

struct Env {
    alloctrace: PathBuf,
    bpftrace: Option<PathBuf>,
    heaptrack: Option<PathBuf>,
    memleak: Option<PathBuf>,
    /// Comparisons left out, and why (printed with the results).
    notes: Vec<String>,
    libc: PathBuf,
    scratch: PathBuf,
    iterations: u64,
}

pub fn bench(opts: &BenchOpts) -> Result<std::process::ExitCode> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the bench loads eBPF programs and needs root: run \
             `sudo -E env PATH=\"$PATH\" cargo xtask bench`"
        );
    }
    ensure!(opts.repeat >= 1, "--repeat must be at least 1");
    ensure!(opts.iterations >= 1, "--iterations must be at least 1");
    let alloctrace = build::build(&build::BuildOpts::default())?.bin;
    let root = cmd::root();
    let scratch = cmd::target_dir()?.join("bench");
    fs::create_dir_all(&scratch).with_context(|| format!("cannot create {}", scratch.display()))?;

    let workloads = compile_workloads(&root.join("bench/workloads"), &scratch, &opts.workloads)?;
    let libc = libc_of(Path::new(&argv(&workloads[0].1)[0]))?;
    let bpftrace = if opts.no_bpftrace {
        None
    } else {
        let found = which("bpftrace");
        if found.is_none() {
            eprintln!(
                "xtask: bench: bpftrace is not installed (apt-get install -y bpftrace): its column is left out"
            );
        }
        found
    };
    let env = Env {
        alloctrace,
        bpftrace,
        heaptrack: if opts.no_bpftrace {
            None
        } else {
            which("heaptrack")
        },
        memleak: None,
        notes: Vec::new(),
        libc,
        scratch,
        iterations: opts.iterations,
    };
    let mut env = env;
    if !opts.no_bpftrace {
        match which("memleak-bpfcc") {
            None => env
                .notes
                .push("BCC memleak: not installed (apt-get install bpfcc-tools)".to_string()),
            Some(m) => match memleak_works(&m) {
                Ok(()) => env.memleak = Some(m),
                Err(why) => {
                    eprintln!("xtask: bench: BCC memleak left out: {why}");
                    env.notes.push(format!(
                        "BCC memleak: left out, it cannot run on this kernel ({why}; BCC \
                         compiles its program against the running kernel's headers)"
                    ));
                }
            },
        }
    }
    let configs: Vec<Config> = CONFIGS
        .iter()
        .copied()
        .filter(|c| c.tracer != Tracer::Bpftrace || env.bpftrace.is_some())
        .filter(|c| c.tracer != Tracer::Heaptrack || env.heaptrack.is_some())
        .filter(|c| c.tracer != Tracer::Memleak || env.memleak.is_some())
        .collect();
    let placements = placements(&env, &workloads[0].1)?;

    // results[w][c] = runs
    let mut results: Vec<Vec<Vec<Run>>> = vec![vec![Vec::new(); configs.len()]; workloads.len()];
    for round in 0..opts.repeat {
        for (w, (name, exe)) in workloads.iter().enumerate() {
            for k in 0..configs.len() {
                let c = (k + round) % configs.len();
                let cfg = configs[c];
                eprintln!(
                    "xtask: bench: round {}/{} {name}: {}",
                    round + 1,
                    opts.repeat,
                    cfg.name
                );
                let run = run_one(&env, exe, cfg)?;
                results[w][c].push(run);
            }
        }
    }

    let mut text = render(opts, &env, &workloads, &configs, &results, &placements);
    let mut own = Vec::new();
    let mut stacks = Vec::new();
    for round in 0..opts.repeat {
        eprintln!(
            "xtask: bench: round {}/{}: own cost",
            round + 1,
            opts.repeat
        );
        own.push(crate::bench_special::own_cost(
            &env.alloctrace,
            &env.scratch,
            &root,
        )?);
        eprintln!(
            "xtask: bench: round {}/{}: many stacks",
            round + 1,
            opts.repeat
        );
        stacks.push(crate::bench_special::stacks(
            &env.alloctrace,
            &env.scratch,
            &root,
        )?);
    }
    text.push_str(&crate::bench_special::render(&own, &stacks));
    print!("{text}");
    let out = opts
        .output
        .clone()
        .unwrap_or_else(|| root.join("bench/RESULTS.md"));
    fs::write(&out, &text).with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!("xtask: bench: results written to {}", out.display());
    Ok(std::process::ExitCode::SUCCESS)
}

/// Compiles bench/workloads/*.c (or the `only` ones) into `scratch`: `(name, executable)`.
fn compile_workloads(
    dir: &Path,
    scratch: &Path,
    only: &[String],
) -> Result<Vec<(String, PathBuf)>> {
    let mut sources: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "c" || e == "py"))
        .collect();
    sources.sort();
    let mut out = Vec::new();
    for src in sources {
        let name = src
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        if src.extension().is_some_and(|e| e == "py") {
            // Run as it is by Debian's own interpreter (see `argv`).
            if Path::new(PYTHON).exists() {
                out.push((name, src));
            } else {
                eprintln!(
                    "xtask: bench: {PYTHON} is missing: {} left out",
                    src.display()
                );
            }
            continue;
        }
        let exe = scratch.join(&name);
        // -fno-builtin: the compiler must neither drop nor merge the allocator calls.
        cmd::gcc(
            &src,
            &exe,
            &[
                "-O2",
                "-g",
                "-fno-omit-frame-pointer",
                "-fno-builtin",
                "-Wall",
                "-pthread",
            ],
        )?;
        out.push((name, exe));
    }
    if out.is_empty() {
        bail!(
            "no workload to run in {} (--workload {:?})",
            dir.display(),
            only
        );
    }
    Ok(out)
}

/// The libc `exe` loads (what alloctrace probes in launch mode, and the bpftrace script too).
fn libc_of(exe: &Path) -> Result<PathBuf> {
    let out = cmd::output(Command::new("ldd").arg(exe))
        .with_context(|| format!("ldd {} failed", exe.display()))?;
    out.lines()
        .find_map(|l| {
            let (name, rest) = l.trim().split_once(" => ")?;
            let path = rest.split_whitespace().next()?;
            name.starts_with("libc.so").then(|| PathBuf::from(path))
        })
        .with_context(|| format!("ldd finds no libc in {}:\n{out}", exe.display()))
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// alloctrace's `-v` placement lines for this libc (one short run).
fn placements(env: &Env, exe: &Path) -> Result<Vec<String>> {
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

/// The bpftrace script: BCC memleak's hot path (entry: size; return: address -> size, count and
/// bytes per user stack; free: forget the address), for the calls the workloads make.
fn bpftrace_script(libc: &Path) -> String {
    let l = libc.display();
    format!(
        r#"uprobe:{l}:malloc /pid == cpid/ {{ @size[tid] = arg0; }}
uretprobe:{l}:malloc /pid == cpid/ {{
  @addr[retval] = @size[tid]; @allocs[ustack] = count(); @bytes[ustack] = sum(@size[tid]);
  delete(@size[tid]);
}}
uprobe:{l}:posix_memalign /pid == cpid/ {{ @size[tid] = arg2; @memptr[tid] = arg0; }}
uretprobe:{l}:posix_memalign /pid == cpid/ {{
  $p = *(uint64 *)@memptr[tid];
  @addr[$p] = @size[tid]; @allocs[ustack] = count(); @bytes[ustack] = sum(@size[tid]);
  delete(@size[tid]); delete(@memptr[tid]);
}}
uprobe:{l}:free /pid == cpid/ {{ delete(@addr[arg0]); }}
END {{ clear(@addr); clear(@size); clear(@memptr); }}
"#
    )
}

/// Whether BCC memleak can attach here: it compiles its program at start-up and needs the
/// running kernel's headers, which custom kernels often lack. Tried on a `sleep`.
fn memleak_works(memleak: &Path) -> std::result::Result<(), String> {
    use std::io::Read;
    let mut sleeper = Command::new("sleep")
        .arg("60")
        .spawn()
        .map_err(|e| format!("cannot run sleep: {e}"))?;
    let out = Command::new("timeout")
        .args([
            "20",
            &memleak.display().to_string(),
            "-p",
            &sleeper.id().to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map(|mut c| {
            // It prints "Attaching to pid" and goes on: read until then, or until it ends.
            let mut text = String::new();
            let mut buf = [0u8; 4096];
            let mut so = c.stdout.take().expect("piped");
            while let Ok(k) = so.read(&mut buf) {
                if k == 0 {
                    break;
                }
                text.push_str(&String::from_utf8_lossy(&buf[..k]));
                if text.contains("Attaching to pid") {
                    break;
                }
            }
            let _ = c.kill();
            let mut err = String::new();
            if let Some(mut e) = c.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let _ = c.wait();
            (text, err)
        });
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let (text, err) = out.map_err(|e| format!("cannot run {}: {e}", memleak.display()))?;
    if text.contains("Attaching to pid") {
        return Ok(());
    }
    let why = err
        .lines()
        .find(|l| l.contains("kernel headers") || l.starts_with("Exception"))
        .or_else(|| err.lines().last())
        .unwrap_or("it did not attach");
    Err(why.trim().to_string())
}

/// BCC memleak on the workload: the workload waits (BENCH_WAIT) until memleak, attached to its
/// pid, has had time to attach its probes (it prints "Attaching to pid" first, then attaches
/// within milliseconds; a second is left), then runs its loop; memleak is stopped after.
fn run_memleak(env: &Env, exe: &Path, n: &str, out_file: &Path) -> Result<Run> {
    use std::io::{BufRead, BufReader, Write};
    let memleak = env.memleak.as_ref().expect("filtered out without memleak");
    let start = Instant::now();
    let a = argv(exe);
    let mut w = Command::new(&a[0])
        .args(&a[1..])
        .arg(n)
        .arg(out_file)
        .env("BENCH_WAIT", "1")
        .env("PYTHONMALLOC", "malloc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    let mut wout = BufReader::new(w.stdout.take().context("no stdout")?);
    let mut line = String::new();
    wout.read_line(&mut line)?;
    ensure!(
        line.trim() == "ready",
        "{} said {line:?}, not ready",
        exe.display()
    );
    let mut m = Command::new(memleak)
        .args(["-p", &w.id().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run {}", memleak.display()))?;
    let mut mout = BufReader::new(m.stdout.take().context("no stdout")?);
    loop {
        line.clear();
        if mout.read_line(&mut line)? == 0 {
            let _ = w.kill();
            bail!("memleak ended before attaching");
        }
        if line.contains("Attaching to pid") {
            break;
        }
    }
    let drain = std::thread::spawn(move || {
        let mut sink = String::new();
        while mout.read_line(&mut sink).unwrap_or(0) > 0 {
            sink.clear();
        }
    });
    std::thread::sleep(std::time::Duration::from_secs(1));
    w.stdin.take().context("no stdin")?.write_all(b"g")?;
    let status = w.wait()?;
    // SAFETY: plain kill(2) of our child.
    unsafe { libc::kill(m.id() as i32, libc::SIGINT) };
    let _ = m.wait();
    let _ = drain.join();
    ensure!(
        status.success(),
        "{} under memleak: {status}",
        exe.display()
    );
    let text = fs::read_to_string(out_file)
        .with_context(|| format!("no {} from {}", out_file.display(), exe.display()))?;
    let field = |key: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .with_context(|| format!("no `{key}` in {}:\n{text}", out_file.display()))
    };
    Ok(Run {
        loop_ns: field("elapsed_ns ")?,
        events: field("events ")?,
        wall_s: start.elapsed().as_secs_f64(),
        counted: None,
    })
}

/// Debian's python3, an unmodified real program for the `*.py` workloads.
const PYTHON: &str = "/usr/bin/python3";

/// The command line that runs workload `exe`: a compiled workload itself, a `.py` one under
/// Debian's python3 (with PYTHONMALLOC=malloc, set by `run_one`, so objects come from libc).
fn argv(exe: &Path) -> Vec<std::ffi::OsString> {
    if exe.extension().is_some_and(|e| e == "py") {
        vec![PYTHON.into(), exe.into()]
    } else {
        vec![exe.into()]
    }
}

fn run_one(env: &Env, exe: &Path, cfg: Config) -> Result<Run> {
    let out_file = env.scratch.join("loop.out");
    let _ = fs::remove_file(&out_file);
    let report = env.scratch.join("report.json");
    let _ = fs::remove_file(&report);
    let n = env.iterations.to_string();
    if cfg.tracer == Tracer::Memleak {
        return run_memleak(env, exe, &n, &out_file);
    }
    let mut command = match cfg.tracer {
        Tracer::Memleak => unreachable!("run above"),
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
    let counted = match cfg.tracer {
        Tracer::Alloctrace { .. } => fs::read_to_string(&report)
            .ok()
            .and_then(|r| totals_allocs(&r)),
        _ => None,
    };
    Ok(Run {
        loop_ns: field("elapsed_ns ")?,
        events: field("events ")?,
        wall_s,
        counted,
    })
}

/// `totals.allocs` of a `--report json` file, without a JSON dependency in xtask: the first
/// `"allocs":` after `"totals"`.
pub fn totals_allocs(report: &str) -> Option<u64> {
    let t = &report[report.find("\"totals\"")?..];
    let a = &t[t.find("\"allocs\"")? + "\"allocs\"".len()..];
    let a = a.trim_start().strip_prefix(':')?.trim_start();
    let end = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
    a[..end].parse().ok()
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn first_line(cmd: &mut Command) -> String {
    cmd::output(cmd)
        .and_then(|o| o.lines().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

fn machine(env: &Env) -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, m)| m.trim().to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let glibc = first_line(Command::new("ldd").arg("--version"));
    let mut s = format!(
        "- CPU: {cpu}, nproc {nproc}\n- kernel: {kernel}\n- libc: {} ({glibc})\n",
        env.libc.display()
    );
    if let Some(b) = &env.bpftrace {
        let _ = writeln!(
            s,
            "- bpftrace: {}",
            first_line(Command::new(b).arg("--version"))
        );
    }
    s
}

fn render(
    opts: &BenchOpts,
    env: &Env,
    workloads: &[(String, PathBuf)],
    configs: &[Config],
    results: &[Vec<Vec<Run>>],
    placements: &[String],
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# alloctrace overhead (`cargo xtask bench`)\n");
    let _ = writeln!(s, "{}", machine(env));
    let _ = writeln!(
        s,
        "{} iterations per workload, {} rounds; every configuration runs once per round, in \
         rotating order. `loop` is the workload's own timing of its allocator loop (median, \
         min–max); `ns/event` is (median loop − median untraced loop) / events, an event being \
         one allocator call as the workload counts them (python cannot: twice the allocations \
         alloctrace counted over its whole run, start-up included, so its ns/event is an \
         underestimate); `× bpftrace` and `× heaptrack` divide that by the bpftrace \
         script's and heaptrack's (LD_PRELOAD: it must launch the program); BCC memleak \
         (stock, free probed at its entry) attaches to the waiting workload's pid; `run` is \
         the whole command's wall time (median; alloctrace's includes attach and its ~1.5 s \
         detach); `counted` is the allocations alloctrace's report counts (expected: \
         iterations, plus the workload's start-up allocations; 0 for the floor).\n",
        opts.iterations, opts.repeat
    );
    let _ = writeln!(
        s,
        "Floor: alloctrace's probes at the same points with programs that return at once \
         (ALLOCTRACE_BENCH_FLOOR=1); `× floor` divides a configuration's per-event cost by its \
         floor's (the same probes, empty programs: the kernel's own cost of the probes). \
         `placed` = default placement, `entry` = \
         ALLOCTRACE_PROBE_AT=entry (every probe at its function's first instruction). The \
         bpftrace script probes function entries (bpftrace cannot probe inside a function \
         without its own disassembler).\n"
    );
    let _ = writeln!(
        s,
        "| workload | configuration | loop ms (median) | min–max ms | ns/event | × floor | × bpftrace | × heaptrack | run s | counted |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (w, (name, _)) in workloads.iter().enumerate() {
        let med = |c: usize| {
            median(
                &mut results[w][c]
                    .iter()
                    .map(|r| r.loop_ns as f64)
                    .collect::<Vec<_>>(),
            )
        };
        // A workload that cannot count its allocator calls (python) reports 0: take
        // alloctrace's count of its allocations, times two (each is freed).
        let events = match results[w][0].first().map_or(0, |r| r.events) {
            0 => configs
                .iter()
                .position(|c| c.name == "alloctrace (placed)")
                .and_then(|c| results[w][c].iter().filter_map(|r| r.counted).max())
                .map_or(1, |a| 2 * a.max(1)),
            e => e,
        } as f64;
        let base = configs
            .iter()
            .position(|c| c.tracer == Tracer::None)
            .map(med)
            .unwrap_or(0.0);
        let per_event = |c: usize| (med(c) - base) / events;
        let bpf = configs
            .iter()
            .position(|c| c.tracer == Tracer::Bpftrace)
            .map(per_event);
        let heap = configs
            .iter()
            .position(|c| c.tracer == Tracer::Heaptrack)
            .map(per_event);
        for (c, cfg) in configs.iter().enumerate() {
            let runs = &results[w][c];
            let lo = runs.iter().map(|r| r.loop_ns).min().unwrap_or(0) as f64 / 1e6;
            let hi = runs.iter().map(|r| r.loop_ns).max().unwrap_or(0) as f64 / 1e6;
            let wall = median(&mut runs.iter().map(|r| r.wall_s).collect::<Vec<_>>());
            let vs_floor = cfg
                .floor
                .and_then(|f| configs.iter().position(|c| c.name == f))
                .map(per_event)
                .filter(|f| *f > 0.0)
                .map_or("—".to_string(), |f| format!("{:.2}", per_event(c) / f));
            let (ns, ratio, vs_heap) = if cfg.tracer == Tracer::None {
                ("—".to_string(), "—".to_string(), "—".to_string())
            } else {
                let ns = per_event(c);
                let vs = |x: Option<f64>| {
                    x.filter(|b| *b > 0.0)
                        .map_or("—".to_string(), |b| format!("{:.2}", ns / b))
                };
                (format!("{ns:.0}"), vs(bpf), vs(heap))
            };
            let counted = {
                let mut v: Vec<u64> = runs.iter().filter_map(|r| r.counted).collect();
                v.sort_unstable();
                v.dedup();
                match v.as_slice() {
                    [] => "—".to_string(),
                    [one] => one.to_string(),
                    [lo, .., hi] => format!("{lo}–{hi}"),
                }
            };
            let _ = writeln!(
                s,
                "| {name} | {} | {:.2} | {lo:.2}–{hi:.2} | {ns} | {vs_floor} | {ratio} | {vs_heap} | {wall:.2} | {counted} |",
                cfg.name,
                med(c) / 1e6
            );
        }
    }
    if !placements.is_empty() {
        let _ = writeln!(s, "\nProbe placement on this libc (`alloctrace -v`):\n");
        for p in placements {
            let _ = writeln!(s, "- {p}");
        }
    }
    for n in &env.notes {
        let _ = writeln!(s, "\n{n}.");
    }
    let _ = writeln!(
        s,
        "\nMachine load: this is a small shared VM; numbers vary from run to run (see the \
         spread). Re-run `cargo xtask bench` on a quiet machine for final numbers."
    );
    s
}
