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
//!   `ustack`, delete at free and at realloc's entry), at the entries of the allocator
//!   functions memleak probes: malloc, calloc, realloc, posix_memalign, aligned_alloc,
//!   memalign, valloc, pvalloc and free (not mmap/munmap: see `bpftrace_script`);
//! - `heaptrack`: if installed, heaptrack launching the workload (LD_PRELOAD);
//! - `BCC memleak`: if installed (Debian's bpfcc-tools), `memleak-bpfcc -p PID 1` on the
//!   workload, which waits for it (BENCH_WAIT). On a kernel without headers, Debian's amd64
//!   headers are linked where BCC looks for them (`bench_bcc`). After each run memleak's
//!   stack map is read with bpftool: a run in which memleak recorded no stack from the
//!   workload's executable is left out of the medians (it would be the cost of a tracer that
//!   saw nothing), as is one in which memleak could not attach all its uprobes;
//! - `BCC memleak (free moved)`: the same, from a copy of the script made at bench time whose
//!   free uprobe is at alloctrace's placement for free (free+3 on Debian 12's glibc, past the
//!   single-stepped `test rdi,rdi`), checked with `bpftool perf`.
use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, ensure, Context, Result};
use clap::Args;

use crate::{
    bench_bcc::{self, Bcc, Seen},
    build,
    cmd::{self, which},
};

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
    /// BCC's memleak (`memleak-bpfcc -p PID 1`), if installed and able to compile its program:
    /// attached to the waiting workload (BENCH_WAIT), which is released once memleak has
    /// attached. `moved`: the copy whose free uprobe is at alloctrace's placement for free.
    Memleak {
        moved: bool,
    },
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
        tracer: Tracer::Memleak { moved: false },
        floor: None,
    },
    Config {
        name: "BCC memleak (free moved)",
        tracer: Tracer::Memleak { moved: true },
        floor: None,
    },
];

/// One run of one workload under one configuration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Run {
    pub(crate) loop_ns: u64,
    pub(crate) events: u64,
    pub(crate) wall_s: f64,
    /// Allocations alloctrace's report counts (alloctrace configurations only).
    pub(crate) counted: Option<u64>,
    /// alloctrace's own cost, from its report (alloctrace configurations only).
    pub(crate) own: Option<OwnUse>,
    /// What BCC memleak recorded (memleak configurations only).
    pub(crate) seen: Option<Seen>,
}

struct Env {
    alloctrace: PathBuf,
    bpftrace: Option<PathBuf>,
    heaptrack: Option<PathBuf>,
    bcc: Option<Bcc>,
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
        bcc: None,
        notes: Vec::new(),
        libc,
        scratch,
        iterations: opts.iterations,
    };
    let mut env = env;
    let placements = placements(&env, &workloads[0].1)?;
    if !opts.no_bpftrace {
        env.bcc = bench_bcc::bcc(&env.scratch, &placements, &mut env.notes);
    }
    let configs: Vec<Config> = CONFIGS
        .iter()
        .copied()
        .filter(|c| c.tracer != Tracer::Bpftrace || env.bpftrace.is_some())
        .filter(|c| c.tracer != Tracer::Heaptrack || env.heaptrack.is_some())
        .filter(|c| match c.tracer {
            Tracer::Memleak { moved } => env.bcc.as_ref().is_some_and(|b| !moved || b.has_moved()),
            _ => true,
        })
        .collect();

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
                match run_one(&env, exe, cfg)? {
                    Ok(run) => results[w][c].push(run),
                    Err(why) => {
                        let why = format!(
                            "{} on {name}, round {}: left out of the medians: {why}",
                            cfg.name,
                            round + 1
                        );
                        eprintln!("xtask: bench: {why}");
                        env.notes.push(why);
                    }
                }
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
/// bytes per user stack; free: forget the address), on the allocator functions memleak probes.
/// mmap and munmap, which memleak probes too, are left out: the workloads reach them only
/// when glibc maps a large block (phases' 1 MiB ones) or a thread's arena, a few times per run.
fn bpftrace_script(libc: &Path) -> String {
    let l = libc.display();
    // Each entry as memleak's `*_enter`: the size from the argument that holds it. realloc
    // forgets its old address first, as memleak's `realloc_enter` does (even when realloc then
    // fails and the old block lives on); its return records the new block like malloc's.
    //
    // `guarded`: in glibc, another probed function can run inside the call or at the same
    // address (realloc(NULL, n) and memalign with a small alignment call malloc; before 2.38
    // aligned_alloc and memalign are one function) and its return takes the size first. Then
    // memleak's return finds no size and does nothing ("missed alloc entry"), and so does this
    // one rather than count the block twice. bpftrace 0.17 has no has_key(), so a size of 0
    // reads as missing too. Nothing nests inside malloc. posix_memalign (below) keeps the form
    // it had: it calls malloc only for an alignment of 16 or less, which no workload asks for.
    let entries = [
        ("malloc", "@size[tid] = arg0;", false),
        ("calloc", "@size[tid] = arg0 * arg1;", false),
        ("realloc", "delete(@addr[arg0]); @size[tid] = arg1;", true),
        ("aligned_alloc", "@size[tid] = arg1;", true),
        ("memalign", "@size[tid] = arg1;", true),
        ("valloc", "@size[tid] = arg0;", false),
        ("pvalloc", "@size[tid] = arg0;", false),
    ];
    let mut s = String::new();
    for (f, entry, guarded) in entries {
        let guard = if guarded { " && @size[tid]" } else { "" };
        let _ = write!(
            s,
            r#"uprobe:{l}:{f} /pid == cpid/ {{ {entry} }}
uretprobe:{l}:{f} /pid == cpid{guard}/ {{
  @addr[retval] = @size[tid]; @allocs[ustack] = count(); @bytes[ustack] = sum(@size[tid]);
  delete(@size[tid]);
}}
"#
        );
    }
    let _ = write!(
        s,
        r#"uprobe:{l}:posix_memalign /pid == cpid/ {{ @size[tid] = arg2; @memptr[tid] = arg0; }}
uretprobe:{l}:posix_memalign /pid == cpid/ {{
  $p = *(uint64 *)@memptr[tid];
  @addr[$p] = @size[tid]; @allocs[ustack] = count(); @bytes[ustack] = sum(@size[tid]);
  delete(@size[tid]); delete(@memptr[tid]);
}}
uprobe:{l}:free /pid == cpid/ {{ delete(@addr[arg0]); }}
END {{ clear(@addr); clear(@size); clear(@memptr); }}
"#
    );
    s
}

/// Debian's python3, an unmodified real program for the `*.py` workloads.
const PYTHON: &str = "/usr/bin/python3";

/// The command line that runs workload `exe`: a compiled workload itself, a `.py` one under
/// Debian's python3 (with PYTHONMALLOC=malloc, set by `run_one`, so objects come from libc).
pub(crate) fn argv(exe: &Path) -> Vec<std::ffi::OsString> {
    if exe.extension().is_some_and(|e| e == "py") {
        vec![PYTHON.into(), exe.into()]
    } else {
        vec![exe.into()]
    }
}

/// A run, or why it is left out of the medians (BCC memleak's, when memleak did not attach or
/// saw nothing of the workload).
pub(crate) type Outcome = std::result::Result<Run, String>;

fn run_one(env: &Env, exe: &Path, cfg: Config) -> Result<Outcome> {
    let out_file = env.scratch.join("loop.out");
    let _ = fs::remove_file(&out_file);
    let report = env.scratch.join("report.json");
    let _ = fs::remove_file(&report);
    let n = env.iterations.to_string();
    if let Tracer::Memleak { moved } = cfg.tracer {
        let bcc = env.bcc.as_ref().expect("filtered out without BCC");
        return bench_bcc::run_memleak(bcc, exe, &n, &out_file, moved);
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

/// What a run cost alloctrace itself: its report's `tracer` (CPU time of all its threads up to
/// the report, program loading included, and peak resident set).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct OwnUse {
    pub(crate) cpu_s: f64,
    pub(crate) peak_rss_bytes: u64,
}

/// `tracer` of a `--report json` file, read as `totals_allocs` reads its field.
fn own_use(report: &str) -> Option<OwnUse> {
    let t = &report[report.find("\"tracer\"")?..];
    let number = |key: &str| {
        let quoted = format!("\"{key}\"");
        let v = &t[t.find(&quoted)? + quoted.len()..];
        let v = v.trim_start().strip_prefix(':')?.trim_start();
        let end = v
            .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
            .unwrap_or(v.len());
        Some(&v[..end])
    };
    Some(OwnUse {
        cpu_s: number("cpu_time")?.parse().ok()?,
        peak_rss_bytes: number("peak_rss_bytes")?.parse().ok()?,
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

/// The median of `v` (NaN if it is empty: a configuration with no valid run).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
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
    if env.bcc.is_some() {
        let _ = writeln!(
            s,
            "- BCC: bpfcc-tools {} (memleak-bpfcc)",
            first_line(Command::new("dpkg-query").args(["-W", "-f=${Version}", "bpfcc-tools"]))
        );
    }
    s
}

/// `lo–hi` of `values`, or the one value, or `—`.
fn span(values: impl Iterator<Item = u64>) -> String {
    let mut v: Vec<u64> = values.collect();
    v.sort_unstable();
    v.dedup();
    match v.as_slice() {
        [] => "—".to_string(),
        [one] => one.to_string(),
        [lo, .., hi] => format!("{lo}–{hi}"),
    }
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
         underestimate); `× bpftrace`, `× heaptrack`, `× BCC` and `× BCC moved` divide that \
         by the bpftrace script's, heaptrack's (LD_PRELOAD: it must launch the program), BCC \
         memleak's and BCC memleak's with its free probe moved to alloctrace's placement; BCC \
         memleak (`memleak-bpfcc -p PID 1`, free probed at its entry as it ships) attaches to \
         the waiting workload's pid, and a run in which it recorded no allocation stack from \
         the workload's executable is left out (see the notes); `run` is \
         the whole command's wall time (median; alloctrace's includes attach and its ~1.5 s \
         detach); `own CPU` and `peak RSS` are alloctrace's own (median; its report's `tracer`: \
         CPU time of all its threads up to the report, most of it the kernel verifying its \
         programs at load, and its peak resident set); `counted` is the allocations \
         alloctrace's report counts (expected: iterations, plus the workload's start-up \
         allocations; 0 for the floor).\n",
        opts.iterations, opts.repeat
    );
    let _ = writeln!(
        s,
        "Floor: alloctrace's probes at the same points with programs that return at once \
         (ALLOCTRACE_BENCH_FLOOR=1); `× floor` divides a configuration's per-event cost by its \
         floor's (the same probes, empty programs: the kernel's own cost of the probes). \
         `placed` = default placement, `entry` = \
         ALLOCTRACE_PROBE_AT=entry (every probe at its function's first instruction). The \
         bpftrace script probes the allocator functions BCC memleak probes (malloc, calloc, \
         realloc, posix_memalign, aligned_alloc, memalign, valloc, pvalloc, free; not \
         mmap/munmap, which the workloads reach only when glibc maps a large block or an \
         arena), at their entries (bpftrace \
         cannot probe inside a function without its own disassembler).\n"
    );
    let _ = writeln!(
        s,
        "| workload | configuration | loop ms (median) | min–max ms | ns/event | × floor | × bpftrace | × heaptrack | × BCC | × BCC moved | run s | own CPU s | peak RSS MiB | counted |"
    );
    let _ = writeln!(
        s,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
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
        let bcc = configs
            .iter()
            .position(|c| c.tracer == Tracer::Memleak { moved: false })
            .map(per_event);
        let bcc_moved = configs
            .iter()
            .position(|c| c.tracer == Tracer::Memleak { moved: true })
            .map(per_event);
        for (c, cfg) in configs.iter().enumerate() {
            let runs = &results[w][c];
            if runs.is_empty() {
                let _ = writeln!(
                    s,
                    "| {name} | {} | no valid run | — | — | — | — | — | — | — | — | — | — | — |",
                    cfg.name
                );
                continue;
            }
            let lo = runs.iter().map(|r| r.loop_ns).min().unwrap_or(0) as f64 / 1e6;
            let hi = runs.iter().map(|r| r.loop_ns).max().unwrap_or(0) as f64 / 1e6;
            let wall = median(&mut runs.iter().map(|r| r.wall_s).collect::<Vec<_>>());
            let vs_floor = cfg
                .floor
                .and_then(|f| configs.iter().position(|c| c.name == f))
                .map(per_event)
                .filter(|f| *f > 0.0)
                .map_or("—".to_string(), |f| format!("{:.2}", per_event(c) / f));
            let (ns, ratio, vs_heap, vs_bcc, vs_moved) = if cfg.tracer == Tracer::None {
                let no = || "—".to_string();
                (no(), no(), no(), no(), no())
            } else {
                let ns = per_event(c);
                let vs = |x: Option<f64>| {
                    x.filter(|b| *b > 0.0)
                        .map_or("—".to_string(), |b| format!("{:.2}", ns / b))
                };
                (
                    format!("{ns:.0}"),
                    vs(bpf),
                    vs(heap),
                    vs(bcc),
                    vs(bcc_moved),
                )
            };
            let counted = span(runs.iter().filter_map(|r| r.counted));
            let own: Vec<OwnUse> = runs.iter().filter_map(|r| r.own).collect();
            let (own_cpu, own_rss) = if own.is_empty() {
                ("—".to_string(), "—".to_string())
            } else {
                let cpu = median(&mut own.iter().map(|o| o.cpu_s).collect::<Vec<_>>());
                let rss = median(
                    &mut own
                        .iter()
                        .map(|o| o.peak_rss_bytes as f64 / (1024.0 * 1024.0))
                        .collect::<Vec<_>>(),
                );
                (format!("{cpu:.2}"), format!("{rss:.1}"))
            };
            let _ = writeln!(
                s,
                "| {name} | {} | {:.2} | {lo:.2}–{hi:.2} | {ns} | {vs_floor} | {ratio} | {vs_heap} | {vs_bcc} | {vs_moved} | {wall:.2} | {own_cpu} | {own_rss} | {counted} |",
                cfg.name,
                med(c) / 1e6
            );
        }
    }
    let mut seen_lines = String::new();
    for (w, (name, _)) in workloads.iter().enumerate() {
        for (c, cfg) in configs.iter().enumerate() {
            let seen: Vec<Seen> = results[w][c].iter().filter_map(|r| r.seen).collect();
            if seen.is_empty() {
                continue;
            }
            let _ = writeln!(
                seen_lines,
                "- {name}, {}: {} stacks recorded, {} of them with a frame in the workload's \
                 executable; outstanding stacks printed in {} of {} runs ({} entries per run)",
                cfg.name,
                span(seen.iter().map(|x| x.stacks)),
                span(seen.iter().map(|x| x.from_exe)),
                seen.iter().filter(|x| x.printed > 0).count(),
                seen.len(),
                span(seen.iter().map(|x| x.printed))
            );
        }
    }
    if !seen_lines.is_empty() {
        let _ = writeln!(
            s,
            "\nWhat BCC memleak saw in the runs counted above: after the loop, before memleak is \
             stopped, its stack map (read with `bpftool map dump`) holds one entry per distinct \
             allocation stack it recorded, and at least one of them must have a frame in the \
             workload's executable (where /proc/PID/maps puts it), or the run is left out. Its \
             own output, every second, lists only allocations still live and older than 500 ms, \
             which workloads that free each block at once rarely have:\n"
        );
        s.push_str(&seen_lines);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_use_is_read_from_the_report() {
        let report = r#"{"totals": {"allocs": 3}, "tracer": {
    "cpu_time": 2.052201,
    "peak_rss_bytes": 47034368
  }, "analysis": {}}"#;
        assert_eq!(
            own_use(report),
            Some(OwnUse {
                cpu_s: 2.052201,
                peak_rss_bytes: 47034368
            })
        );
        assert_eq!(own_use(r#"{"totals": {"allocs": 3}}"#), None);
        assert_eq!(totals_allocs(report), Some(3));
    }

    #[test]
    fn bpftrace_script_probes_what_memleak_does() {
        let script = bpftrace_script(Path::new("/libc.so.6"));
        let probed = |kind: &str| -> Vec<String> {
            let mut v: Vec<String> = script
                .lines()
                .filter_map(|l| l.strip_prefix(kind)?.strip_prefix("/libc.so.6:"))
                .map(|r| r.split_whitespace().next().unwrap_or("").to_string())
                .collect();
            v.sort();
            v
        };
        // BCC 0.26 memleak's attach_probes() calls, less mmap (and munmap, attached beside free).
        let allocs = [
            "aligned_alloc",
            "calloc",
            "malloc",
            "memalign",
            "posix_memalign",
            "pvalloc",
            "realloc",
            "valloc",
        ];
        assert_eq!(probed("uretprobe:"), allocs);
        let mut entries = allocs.to_vec();
        entries.push("free");
        entries.sort();
        assert_eq!(probed("uprobe:"), entries);
        assert!(script.contains(
            "uprobe:/libc.so.6:realloc /pid == cpid/ { delete(@addr[arg0]); @size[tid] = arg1; }"
        ));
        assert!(script.contains("uretprobe:/libc.so.6:realloc /pid == cpid && @size[tid]/ {"));
        assert!(script.contains("uretprobe:/libc.so.6:malloc /pid == cpid/ {"));
    }
}
