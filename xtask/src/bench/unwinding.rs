//! The unwinding section (`--unwinding-only`, and at the end of the full bench): the cost of a
//! recorded allocation's stack walk in code built without frame pointers, as distributions
//! build it. A malloc(32)+free loop at the bottom of a chain of DEPTH calls (gcc -O2
//! -fomit-frame-pointer; every frame keeps values live, so rbp is an ordinary register), at two
//! depths, under the floor (probes that return at once), `--unwind fp` and `--unwind dwarf`
//! (the default): ns of the thread's CPU time per allocator call (the probes run in its
//! context; on a shared machine its waits for a CPU would swamp the wall clock), and per
//! frame (the difference between the depths over the frames between them). And what
//! building the unwind table of Debian's python3 costs (alloctrace's `-v` line).
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::configs::{Config, Tracer};
use super::outcome::Run;
use super::runs::{run_one, Env};
use crate::cmd;

/// The chain's C source: `chain(DEPTH)` recurses through `step`, which keeps six values live
/// across its call; the leaf runs the churn loop (bench.h's protocol).
const SOURCE: &str = r#"
#include "bench.h"
void *volatile sink;
/* The thread's CPU time, not the wall clock: the probes run in its context, so their cost
 * counts, and the time it waits for a CPU on a loaded machine does not. */
static long long cpu_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}
static long n_iter;
__attribute__((noinline)) long step(long d, long a, long b, long c, long e, long f)
{
    long x = a * 3 + b, y = c * 5 + e, z = f * 7 + d, u = a ^ f, v = b ^ e, w = c ^ d;
    long r = 0;
    if (d > 1) {
        r = step(d - 1, x, y, z, u, v);
    } else {
        for (long i = 0; i < n_iter; i++) {
            void *p = malloc(32);
            sink = p;
            free(p);
        }
    }
    return r + x * y + z * u + v * w;
}
int main(int argc, char **argv)
{
    n_iter = bench_iterations(argc, argv);
    long long start = cpu_now_ns();
    sink = (void *)step(DEPTH, argc, 2, 3, 4, 5);
    bench_report(argc, argv, cpu_now_ns() - start, 2LL * n_iter);
    return 0;
}
"#;

const DEPTHS: [u32; 2] = [2, 22];

const CONFIGS: [Config; 3] = [
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
        name: "--unwind fp",
        tracer: Tracer::Alloctrace {
            entry: false,
            floor: false,
            args: &["--unwind", "fp"],
        },
        floor: Some("floor (placed)"),
    },
    Config {
        name: "--unwind dwarf",
        tracer: Tracer::Alloctrace {
            entry: false,
            floor: false,
            args: &["--unwind", "dwarf"],
        },
        floor: Some("floor (placed)"),
    },
];

/// Builds the chain at each depth; runs every configuration once per round; returns the
/// section's Markdown.
pub(super) fn section(env: &Env, root: &Path, repeat: usize) -> Result<String> {
    let src = env.scratch.join("unwind_chain.c");
    std::fs::write(&src, SOURCE).with_context(|| format!("cannot write {}", src.display()))?;
    let include = format!("-I{}", root.join("bench/workloads").display());
    let mut exes: Vec<PathBuf> = Vec::new();
    for d in DEPTHS {
        let exe = env.scratch.join(format!("unwind_chain_{d}"));
        let depth = format!("-DDEPTH={d}");
        cmd::gcc(
            &src,
            &exe,
            &["-O2", "-fomit-frame-pointer", &include, &depth],
        )?;
        exes.push(exe);
    }
    // runs[depth][config] = ns per event
    let mut runs = vec![vec![Vec::new(); CONFIGS.len()]; DEPTHS.len()];
    for round in 0..repeat {
        for (d, exe) in exes.iter().enumerate() {
            for k in 0..CONFIGS.len() {
                let c = (k + round) % CONFIGS.len();
                eprintln!(
                    "xtask: bench: unwinding round {}/{repeat} depth {}: {}",
                    round + 1,
                    DEPTHS[d],
                    CONFIGS[c].name
                );
                if let Ok(run) = run_one(env, exe, CONFIGS[c])? {
                    runs[d][c].push(ns_per_event(&run));
                }
            }
        }
    }
    let med = |v: &Vec<f64>| median(v.clone());
    let mut text = String::from(
        "\n## Stack unwinding in code without frame pointers\n\n\
         malloc(32)+free at the bottom of a chain of calls built with `-O2 \
         -fomit-frame-pointer` (rbp an ordinary register): median ns of the thread's CPU time \
         per allocator call (a malloc and a free each; the probes run in its context, the time \
         it waits for a CPU on a busy machine does not count), per depth of the chain below \
         `main`.\n\n\
         | depth | floor | --unwind fp | --unwind dwarf | dwarf / floor |\n\
         |---|---|---|---|---|\n",
    );
    for (d, depth) in DEPTHS.iter().enumerate() {
        let (f, fp, dw) = (med(&runs[d][0]), med(&runs[d][1]), med(&runs[d][2]));
        text.push_str(&format!(
            "| {depth} | {f:.0} | {fp:.0} | {dw:.0} | {:.2}× |\n",
            dw / f
        ));
    }
    let frames = (DEPTHS[1] - DEPTHS[0]) as f64;
    // Two events per allocation: the per-frame cost of one walk.
    let per_frame = |c: usize| (med(&runs[1][c]) - med(&runs[0][c])) * 2.0 / frames;
    text.push_str(&format!(
        "\nPer frame walked, per recorded allocation: DWARF {:.1} ns, frame pointers {:.1} ns \
         (which stop at the first frame: rbp holds data).\n",
        per_frame(2),
        per_frame(1)
    ));
    text.push_str(&python_table(&env.alloctrace));
    Ok(text)
}

fn ns_per_event(r: &Run) -> f64 {
    r.loop_ns as f64 / r.events.max(1) as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// alloctrace's own line on building python3's table (`-v`, tracing `python3 -c pass`; with
/// `--unwind dwarf`, which builds tables whatever the default).
fn python_table(alloctrace: &Path) -> String {
    let out = Command::new(alloctrace)
        .args([
            "-v",
            "--unwind",
            "dwarf",
            "--",
            "/usr/bin/python3",
            "-c",
            "pass",
        ])
        .output();
    let line = out.ok().and_then(|o| {
        String::from_utf8_lossy(&o.stderr)
            .lines()
            .find(|l| l.contains("unwind table of /usr/bin/python3"))
            .map(|l| l.split("] ").nth(1).unwrap_or(l).to_string())
    });
    match line {
        Some(l) => format!("\nTable build: {l}.\n"),
        None => "\nTable build: no line for /usr/bin/python3 in alloctrace's -v output.\n".into(),
    }
}
