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
//!   headers are linked where BCC looks for them (`bcc`). After each run memleak's
//!   stack map is read with bpftool: a run in which memleak recorded no stack from the
//!   workload's executable is left out of the medians (it would be the cost of a tracer that
//!   saw nothing), as is one in which memleak could not attach all its uprobes;
//! - `BCC memleak (free moved)`: the same, from a copy of the script made at bench time whose
//!   free uprobe is at alloctrace's placement for free (free+3 on Debian 12's glibc, past the
//!   single-stepped `test rdi,rdi`), checked with `bpftool perf`.
//!
//! Per allocator (`allocators`): `churn.c` built against glibc, jemalloc, tcmalloc, mimalloc and
//! musl, untraced and traced (`alloctrace (placed)`) in the same rounds; a traced row whose
//! report counted fewer allocations than the loop made says so instead of giving a cost.
//! `--allocators-only` runs just that section.
//!
//! Go (`golang`): an allocation-heavy Go program under alloctrace against the same program
//! profiling itself with runtime.MemProfileRate = 1 and at Go's default rate; `--go-only` runs
//! just that section (bench/RESULTS-go.md).
//!
//! The command (`bench`) here; the configurations, the runs, the tables, BCC memleak, the
//! per-allocator section and the two special measurements each in their own module.
use std::{fs, path::Path};

use anyhow::{bail, ensure, Context, Result};

use crate::{
    build,
    cmd::{self, which},
};

mod allocators;
mod bcc;
mod configs;
mod golang;
mod outcome;
mod render;
mod runs;
mod special;
mod startup;
mod unwinding;
mod workloads;

pub use configs::BenchOpts;
use configs::{Config, Tracer, CONFIGS};
use outcome::Run;
use render::render;
use runs::{placements, run_one, Env};
use workloads::{argv, compile_workloads, libc_of};

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
    if opts.startup_only {
        return startup_section(opts, &alloctrace, &scratch, &root, opts.output.clone());
    }
    if opts.go_only {
        let text = format!(
            "# alloctrace on Go programs (`cargo xtask bench --go-only`)\n{}",
            golang::run(
                &alloctrace,
                &root,
                &scratch,
                opts.iterations * 10,
                opts.repeat
            )?
        );
        return finish(
            &text,
            opts.output
                .clone()
                .unwrap_or_else(|| root.join("bench/RESULTS-go.md")),
        );
    }
    if opts.unwinding_only {
        let env = Env {
            alloctrace,
            bpftrace: None,
            heaptrack: None,
            bcc: None,
            notes: Vec::new(),
            libc: libc_of(&std::env::current_exe()?)?,
            scratch,
            iterations: opts.iterations,
        };
        let text = unwinding::section(&env, &root, opts.repeat)?;
        return finish(
            &text,
            opts.output
                .clone()
                .unwrap_or_else(|| root.join("bench/RESULTS-unwinding.md")),
        );
    }

    let workloads = if opts.allocators_only {
        Vec::new()
    } else {
        compile_workloads(&root.join("bench/workloads"), &scratch, &opts.workloads)?
    };
    let mut notes = Vec::new();
    let variants = allocators::build(
        &root.join("bench/workloads/churn.c"),
        &scratch,
        &opts.allocators,
        &mut notes,
    )?;
    ensure!(
        !workloads.is_empty() || !variants.is_empty(),
        "nothing to measure: no per-allocator variant could be built (see above)"
    );
    // The libc of the workloads (bpftrace's probes go there), else xtask's own (glibc's).
    let libc = match workloads.first() {
        Some((_, exe)) => libc_of(Path::new(&argv(exe)[0]))?,
        None => libc_of(&std::env::current_exe()?)?,
    };
    // Only the main table compares other tracers.
    let no_others = opts.no_bpftrace || opts.allocators_only;
    let bpftrace = if no_others {
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
        heaptrack: if no_others { None } else { which("heaptrack") },
        bcc: None,
        notes,
        libc,
        scratch,
        iterations: opts.iterations,
    };
    let mut env = env;
    let placements = match workloads.first() {
        Some((_, exe)) => placements(&env, exe)?,
        None => Vec::new(),
    };
    if !no_others {
        env.bcc = bcc::bcc(&env.scratch, &placements, &mut env.notes);
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

    let probes = allocators::probes(&env, &variants);
    // results[w][c] = runs
    let mut results: Vec<Vec<Vec<Run>>> = vec![vec![Vec::new(); configs.len()]; workloads.len()];
    let mut measured: Vec<allocators::Measured> =
        variants.iter().map(|_| Default::default()).collect();
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
        allocators::run_round(&env, &variants, round, opts.repeat, &mut measured);
    }

    let mut text = if workloads.is_empty() {
        let mut t = render::header(&env);
        for n in &env.notes {
            t.push_str(&format!("\n{n}.\n"));
        }
        t
    } else {
        render(opts, &env, &workloads, &configs, &results, &placements)
    };
    text.push_str(&allocators::render(
        &variants,
        &probes,
        &measured,
        opts.iterations,
        opts.repeat,
    ));
    if opts.allocators_only {
        return finish(
            &text,
            opts.output
                .clone()
                .unwrap_or(env.scratch.join("RESULTS-allocators.md")),
        );
    }
    let mut own = Vec::new();
    let mut stacks = Vec::new();
    for round in 0..opts.repeat {
        eprintln!(
            "xtask: bench: round {}/{}: own cost",
            round + 1,
            opts.repeat
        );
        own.push(special::own_cost(&env.alloctrace, &env.scratch, &root)?);
        eprintln!(
            "xtask: bench: round {}/{}: many stacks",
            round + 1,
            opts.repeat
        );
        stacks.push(special::stacks(&env.alloctrace, &env.scratch, &root)?);
    }
    text.push_str(&special::render(&own, &stacks));
    text.push_str(&unwinding::section(&env, &root, opts.repeat)?);
    finish(
        &text,
        opts.output
            .clone()
            .unwrap_or_else(|| root.join("bench/RESULTS.md")),
    )?;
    startup_section(opts, &env.alloctrace, &env.scratch, &root, None)
}

/// The start-up section (`startup`), to its own file.
fn startup_section(
    opts: &BenchOpts,
    alloctrace: &Path,
    scratch: &Path,
    root: &Path,
    output: Option<std::path::PathBuf>,
) -> Result<std::process::ExitCode> {
    let heaptrack = which("heaptrack");
    let rounds = startup::run(
        alloctrace,
        opts.startup_baseline.as_deref(),
        heaptrack.as_deref(),
        scratch,
        opts.repeat,
    )?;
    let mut text = format!(
        "# alloctrace start-up and end (`cargo xtask bench --startup-only`)\n\n{}",
        startup::machine(heaptrack.as_deref())
    );
    if heaptrack.is_none() {
        text.push_str(
            "\nheaptrack is not installed (`cargo xtask setup` installs it): its column is \
             empty.\n",
        );
    }
    text.push_str(&startup::render(&rounds));
    finish(
        &text,
        output.unwrap_or_else(|| startup::default_output(root)),
    )
}

/// Prints the results and writes them to `out`.
fn finish(text: &str, out: std::path::PathBuf) -> Result<std::process::ExitCode> {
    print!("{text}");
    fs::write(&out, text).with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!("xtask: bench: results written to {}", out.display());
    Ok(std::process::ExitCode::SUCCESS)
}
