//! The results as markdown: the machine, the overhead tables (medians and min–max spreads), notes.
use std::{fmt::Write as _, fs, path::PathBuf, process::Command};

use crate::cmd;

use super::configs::{BenchOpts, Config, Tracer};
use super::outcome::{OwnUse, Run, Seen};
use super::runs::Env;

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

/// The CPU's model name, the number of CPUs and the kernel's release, as every results file
/// heads its list with them.
pub fn cpu_nproc_kernel() -> (String, usize, String) {
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
    (cpu, nproc, kernel)
}

fn machine(env: &Env) -> String {
    let (cpu, nproc, kernel) = cpu_nproc_kernel();
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

/// The title and the machine.
pub(super) fn header(env: &Env) -> String {
    format!(
        "# alloctrace overhead (`cargo xtask bench`)\n\n{}\n",
        machine(env)
    )
}

pub(super) fn render(
    opts: &BenchOpts,
    env: &Env,
    workloads: &[(String, PathBuf)],
    configs: &[Config],
    results: &[Vec<Vec<Run>>],
    placements: &[String],
) -> String {
    let mut s = header(env);
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
