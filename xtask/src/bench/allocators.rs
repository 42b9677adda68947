//! The bench's per-allocator section: `churn.c` built against each production allocator
//! (glibc, jemalloc, tcmalloc, mimalloc, musl), run untraced and under alloctrace in the same
//! rotating rounds, and the cost alloctrace adds per allocator call with each. A traced row
//! gives a cost only when alloctrace's report counted every allocation the loop made: the cost
//! of probes that never fire would be a cost of tracing nothing.
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Result};

use crate::cmd::{self, which};

use super::configs::{Config, CONFIGS};
use super::outcome::Run;
use super::render::median;
use super::runs::{run_one, Env};
use super::workloads::WORKLOAD_CFLAGS;

/// How one variant is built and where the loader finds its allocator.
struct Spec {
    name: &'static str,
    /// The compiler driver: musl's wraps gcc with musl's headers, libc and loader.
    cc: &'static str,
    /// Linked after the source, so the executable's NEEDED list puts the allocator's library
    /// before libc and the loop's malloc and free bind to it.
    libs: &'static [&'static str],
    /// What lists the libraries the loader resolves for the executable, in search order.
    ldd: &'static str,
    /// The name (as `ldd` prints it, up to the version) of the library that holds the allocator.
    lib: &'static str,
    /// The Debian package that provides `cc` or `libs` (`cargo xtask setup` installs it).
    package: &'static str,
}

const SPECS: &[Spec] = &[
    Spec {
        name: "glibc",
        cc: "gcc",
        libs: &[],
        ldd: "ldd",
        lib: "libc.so",
        package: "gcc",
    },
    Spec {
        name: "jemalloc",
        cc: "gcc",
        libs: &["-ljemalloc"],
        ldd: "ldd",
        lib: "libjemalloc.so",
        package: "libjemalloc-dev",
    },
    Spec {
        name: "tcmalloc",
        cc: "gcc",
        libs: &["-ltcmalloc_minimal"],
        ldd: "ldd",
        lib: "libtcmalloc_minimal.so",
        package: "libgoogle-perftools-dev",
    },
    Spec {
        name: "mimalloc",
        cc: "gcc",
        libs: &["-lmimalloc"],
        ldd: "ldd",
        lib: "libmimalloc.so",
        package: "libmimalloc-dev",
    },
    // Dynamic: /lib/ld-musl-x86_64.so.1 is musl's loader and its libc (malloc included).
    Spec {
        name: "musl",
        cc: "musl-gcc",
        libs: &[],
        ldd: "musl-ldd",
        lib: "libc.so",
        package: "musl-tools",
    },
];

/// The names `--allocator` accepts.
pub(super) fn names() -> Vec<&'static str> {
    SPECS.iter().map(|s| s.name).collect()
}

/// One built variant: `churn` whose allocator calls go to `library`.
pub(super) struct Variant {
    pub(super) name: &'static str,
    pub(super) exe: PathBuf,
    pub(super) library: PathBuf,
}

/// Builds `churn.c` (`src`) into `scratch` for each allocator (or the `only` ones). A variant
/// that cannot be built here is left out with a note saying what to install.
pub(super) fn build(
    src: &Path,
    scratch: &Path,
    only: &[String],
    notes: &mut Vec<String>,
) -> Result<Vec<Variant>> {
    if let Some(bad) = only.iter().find(|n| !names().contains(&n.as_str())) {
        bail!(
            "--allocator {bad}: no such variant (one of {})",
            names().join(", ")
        );
    }
    let mut out = Vec::new();
    for spec in SPECS {
        if !only.is_empty() && !only.iter().any(|n| n == spec.name) {
            continue;
        }
        match build_one(spec, src, scratch) {
            Ok(v) => out.push(v),
            Err(why) => {
                let why = format!(
                    "per allocator: {} left out: {why:#} (apt-get install -y {}, or `cargo xtask \
                     setup`)",
                    spec.name, spec.package
                );
                eprintln!("xtask: bench: {why}");
                notes.push(why);
            }
        }
    }
    Ok(out)
}

fn build_one(spec: &Spec, src: &Path, scratch: &Path) -> Result<Variant> {
    if which(spec.cc).is_none() {
        bail!("{} is not installed", spec.cc);
    }
    let exe = scratch.join(format!("churn-{}", spec.name));
    cmd::run(
        Command::new(spec.cc)
            .args(WORKLOAD_CFLAGS)
            .arg("-o")
            .arg(&exe)
            .arg(src)
            .args(spec.libs),
    )?;
    let listed = cmd::output(Command::new(spec.ldd).arg(&exe))
        .ok_or_else(|| anyhow::anyhow!("{} {} failed", spec.ldd, exe.display()))?;
    let library = allocator_library(&listed, spec.lib)
        .map_err(|why| anyhow::anyhow!("{} {}: {why}:\n{listed}", spec.ldd, exe.display()))?;
    Ok(Variant {
        name: spec.name,
        exe,
        library,
    })
}

/// The file `ldd` resolves library `lib` to, checked to come no later than libc in the
/// loader's search order (so the executable's malloc binds to it, not to libc's).
fn allocator_library(listed: &str, lib: &str) -> std::result::Result<PathBuf, String> {
    let libs: Vec<(&str, &str)> = listed
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.trim().split_once(" => ")?;
            Some((name, rest.split_whitespace().next()?))
        })
        .collect();
    let at = |prefix: &str| libs.iter().position(|(n, _)| n.starts_with(prefix));
    let Some(i) = at(lib) else {
        return Err(format!("no {lib} among the libraries it loads"));
    };
    match at("libc.so") {
        Some(c) if c < i => Err(format!(
            "libc ({}) comes before {lib} in the loader's order: its malloc would win",
            libs[c].1
        )),
        _ => Ok(PathBuf::from(libs[i].1)),
    }
}

/// What `alloctrace -v` says of each variant's probes (one short run each): the files its
/// tracing line says it probes, and where it placed malloc's and free's probes (the two
/// functions the loop calls; once per probed file, as `-v` prints them). A run that fails says
/// so instead.
pub(super) fn probes(env: &Env, variants: &[Variant]) -> Vec<String> {
    variants
        .iter()
        .map(|v| {
            let said =
                probes_of(env, &v.exe).unwrap_or_else(|e| format!("alloctrace -v failed: {e:#}"));
            format!("{}: {said}", v.name)
        })
        .collect()
}

fn probes_of(env: &Env, exe: &Path) -> Result<String> {
    let output = Command::new(&env.alloctrace)
        .args(["-v", "--report", "json", "-o"])
        .arg(env.scratch.join("allocator-probes.json"))
        .arg("--")
        .arg(exe)
        .arg("1")
        .arg(env.scratch.join("allocator-probes.out"))
        .env_remove("ALLOCTRACE_PROBE_AT")
        .env_remove("ALLOCTRACE_BENCH_FLOOR")
        .stdout(Stdio::null())
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("{}: {}", output.status, first_lines(&stderr, 3));
    }
    Ok(probe_summary(&stderr))
}

/// `N probes …` of alloctrace's tracing line, then its `-v` placement lines for malloc and free
/// (or `PREFIX_malloc`, `PREFIX_free`: the functions they are aliases of, as mimalloc's are).
fn probe_summary(stderr: &str) -> String {
    let tracing = stderr
        .lines()
        .find(|l| l.starts_with("alloctrace: tracing "))
        .and_then(|l| {
            let at = l.find(" probes")?;
            let start = l[..at]
                .rfind(|c: char| !c.is_ascii_digit())
                .map_or(0, |i| i + 1);
            Some(l[start..].trim_end_matches(" (Ctrl-C to stop)"))
        })
        .unwrap_or("no tracing line");
    let placed: Vec<String> = stderr
        .lines()
        .filter_map(|l| l.split_once("probe placement: ").map(|(_, r)| r))
        .filter(|r| {
            // malloc and free, or the function they are aliases of (mi_malloc, tc_free).
            let f = r.split_whitespace().next().unwrap_or("");
            ["malloc", "free"]
                .iter()
                .any(|n| f == *n || f.strip_suffix(n).is_some_and(|p| p.ends_with('_')))
        })
        .map(|r| format!("`{}`", r.replace('`', "")))
        .collect();
    std::iter::once(tracing.to_string())
        .chain(placed)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The two configurations every variant runs under: the loop alone, and alloctrace's default
/// (full mode, probes placed).
fn configs() -> [Config; 2] {
    let find = |name: &str| {
        *CONFIGS
            .iter()
            .find(|c| c.name == name)
            .expect("a configuration of the table")
    };
    [find("untraced"), find("alloctrace (placed)")]
}

/// What the rounds measured of one variant.
#[derive(Default)]
pub(super) struct Measured {
    /// Runs per configuration of [`configs`]: untraced, traced.
    runs: [Vec<Run>; 2],
    /// Runs that failed, and why.
    failed: Vec<String>,
}

/// One round of the section: every variant under both configurations, the order rotated by
/// `round` like the main table's (drift spreads over all of them).
pub(super) fn run_round(
    env: &Env,
    variants: &[Variant],
    round: usize,
    repeat: usize,
    results: &mut [Measured],
) {
    let configs = configs();
    let jobs: Vec<(usize, usize)> = (0..variants.len())
        .flat_map(|v| (0..configs.len()).map(move |c| (v, c)))
        .collect();
    for k in 0..jobs.len() {
        let (v, c) = jobs[(k + round) % jobs.len()];
        let (variant, cfg) = (&variants[v], configs[c]);
        eprintln!(
            "xtask: bench: round {}/{repeat} churn with {}: {}",
            round + 1,
            variant.name,
            cfg.name
        );
        let failed = match run_one(env, &variant.exe, cfg) {
            Ok(Ok(run)) => {
                let traced = c == 1;
                if let Some(short) = short_count(&run, env.iterations).filter(|_| traced) {
                    eprintln!(
                        "xtask: bench: WARNING: churn with {} ({}), round {}: {short}: no cost is \
                         reported for it",
                        variant.name,
                        variant.library.display(),
                        round + 1
                    );
                }
                results[v].runs[c].push(run);
                continue;
            }
            Ok(Err(why)) => why,
            Err(e) => first_lines(&format!("{e:#}"), 6),
        };
        eprintln!(
            "xtask: bench: churn with {}, {}, round {}: failed: {failed}",
            variant.name,
            cfg.name,
            round + 1
        );
        results[v]
            .failed
            .push(format!("{}, round {}: {failed}", cfg.name, round + 1));
    }
}

/// Why a traced run's count cannot stand for the loop: alloctrace counted fewer allocations
/// than the loop alone made (`iterations`), or none was counted at all (no report).
fn short_count(run: &Run, iterations: u64) -> Option<String> {
    match run.counted {
        None => Some("alloctrace's report gave no allocation count".into()),
        Some(n) if n < iterations => Some(format!(
            "alloctrace counted {n} allocations of the {iterations} the loop made (its probes \
             miss this allocator)"
        )),
        Some(_) => None,
    }
}

fn first_lines(s: &str, n: usize) -> String {
    s.lines().take(n).collect::<Vec<_>>().join(" / ")
}

/// `median (lo–hi)` of the runs' ns per call (the loop over its calls).
fn per_call(runs: &[Run]) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = runs
        .iter()
        .map(|r| r.loop_ns as f64 / r.events.max(1) as f64)
        .collect();
    let lo = v.iter().copied().reduce(f64::min)?;
    let hi = v.iter().copied().reduce(f64::max)?;
    Some((median(&mut v), lo, hi))
}

/// The section as markdown.
pub(super) fn render(
    variants: &[Variant],
    probes: &[String],
    results: &[Measured],
    iterations: u64,
    repeat: usize,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n## Per allocator: churn.c with each allocator\n\n`bench/workloads/churn.c` \
         (malloc(32) then free, {iterations} iterations: {} calls) built against each allocator: \
         glibc (gcc), jemalloc (`-ljemalloc`), tcmalloc (`-ltcmalloc_minimal`), mimalloc \
         (`-lmimalloc`), musl (`musl-gcc`, dynamic: its loader is its libc); `ldd` shows the \
         allocator's file ahead of libc. Each runs untraced and under `alloctrace -- CMD` \
         (full mode, probes placed) once per round, {repeat} rounds, in rotating order. ns/call \
         is the loop's own time over its calls (median, min–max); added is the traced median \
         minus the untraced one. A traced row gives a cost only if alloctrace's report counted \
         at least the {iterations} allocations the loop made in every run; otherwise it says \
         so instead.\n",
        2 * iterations
    );
    let _ = writeln!(
        s,
        "| allocator | allocator file | untraced ns/call | traced ns/call | added ns/call | × glibc's added | counted | status |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---|");
    let cell = |p: Option<(f64, f64, f64)>| {
        p.map_or("no valid run".to_string(), |(m, lo, hi)| {
            format!("{m:.1} ({lo:.1}–{hi:.1})")
        })
    };
    let added = |m: &Measured| -> Option<f64> {
        let shorts = m.runs[1]
            .iter()
            .any(|r| short_count(r, iterations).is_some());
        if shorts {
            return None;
        }
        Some(per_call(&m.runs[1])?.0 - per_call(&m.runs[0])?.0)
    };
    let glibc = variants
        .iter()
        .position(|v| v.name == "glibc")
        .and_then(|g| added(&results[g]))
        .filter(|g| *g > 0.0);
    let mut failures = String::new();
    for (v, m) in variants.iter().zip(results) {
        let counts: Vec<u64> = m.runs[1].iter().filter_map(|r| r.counted).collect();
        let counted = match (counts.iter().min(), counts.iter().max()) {
            (Some(lo), Some(hi)) if lo == hi => lo.to_string(),
            (Some(lo), Some(hi)) => format!("{lo}–{hi}"),
            _ => "—".to_string(),
        };
        let short: Vec<String> = m.runs[1]
            .iter()
            .filter_map(|r| short_count(r, iterations))
            .collect();
        let (traced, add, vs, status) = match added(m) {
            _ if m.runs[1].is_empty() => (
                cell(None),
                "—".into(),
                "—".into(),
                "**no traced run**".to_string(),
            ),
            None if !short.is_empty() => (
                "—".into(),
                "—".into(),
                "—".into(),
                format!(
                    "**NOT MEASURED: {} ({} of {} traced runs)**",
                    short[0],
                    short.len(),
                    m.runs[1].len()
                ),
            ),
            None => (
                cell(per_call(&m.runs[1])),
                "—".into(),
                "—".into(),
                "**no untraced run**".to_string(),
            ),
            Some(a) => (
                cell(per_call(&m.runs[1])),
                format!("{a:.1}"),
                glibc.map_or("—".into(), |g| format!("{:.2}", a / g)),
                "counted all".to_string(),
            ),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {traced} | {add} | {vs} | {counted} | {status} |",
            v.name,
            v.library.display(),
            cell(per_call(&m.runs[0])),
        );
        for f in &m.failed {
            let _ = writeln!(failures, "- churn with {}: {f}", v.name);
        }
    }
    if !probes.is_empty() {
        let _ = writeln!(
            s,
            "\nalloctrace's probes with each (`alloctrace -v`: the files probed, and the \
             placement of malloc's and free's probes in each file probed, in its order):\n"
        );
        for p in probes {
            let _ = writeln!(s, "- {p}");
        }
    }
    if !failures.is_empty() {
        let _ = writeln!(s, "\nRuns that failed (left out above):\n\n{failures}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const JEMALLOC: &str = "\tlinux-vdso.so.1 (0x00007ffd)\n\
        \tlibjemalloc.so.2 => /lib/x86_64-linux-gnu/libjemalloc.so.2 (0x00007f4f)\n\
        \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f4e)\n\
        \t/lib64/ld-linux-x86-64.so.2 (0x00007f4f)\n";

    #[test]
    fn the_allocator_library_is_found_ahead_of_libc() {
        assert_eq!(
            allocator_library(JEMALLOC, "libjemalloc.so"),
            Ok(PathBuf::from("/lib/x86_64-linux-gnu/libjemalloc.so.2"))
        );
        assert_eq!(
            allocator_library(JEMALLOC, "libc.so"),
            Ok(PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"))
        );
        let musl = "\t/lib/ld-musl-x86_64.so.1 (0x7f56)\n\
                    \tlibc.so => /lib/ld-musl-x86_64.so.1 (0x7f56)\n";
        assert_eq!(
            allocator_library(musl, "libc.so"),
            Ok(PathBuf::from("/lib/ld-musl-x86_64.so.1"))
        );
        let after = "\tlibc.so.6 => /lib/libc.so.6 (0x1)\n\
                     \tlibmimalloc.so.2 => /lib/libmimalloc.so.2 (0x2)\n";
        assert!(allocator_library(after, "libmimalloc.so")
            .unwrap_err()
            .contains("comes before"));
        assert!(allocator_library(JEMALLOC, "libmimalloc.so").is_err());
    }

    #[test]
    fn the_probes_are_summarized_from_alloctrace_v() {
        let stderr = "[t INFO ] probe placement: malloc +7 `ja 239B0h` (emulated), past `cmp rdi,1000h`\n\
            [t INFO ] probe placement: calloc +0 `push r15` (emulated: first instruction)\n\
            [t INFO ] probe placement: free +0 `mov rax,rdi` (single-stepped), kept at the entry\n\
            [t INFO ] probe placement: malloc +0 `push r12` (emulated: first instruction)\n\
            [t INFO ] probe placement: mi_malloc_small +0 `mov rax,[1BFC0h]` (single-stepped)\n\
            [t INFO ] probe placement: mi_free +6 `je 10F45h` (emulated)\n\
            alloctrace: tracing /x/churn-jemalloc 1 /x/o: 62 probes: jemalloc in /l/libjemalloc.so.2, \
            glibc in /l/libc.so.6 (Ctrl-C to stop)\n";
        assert_eq!(
            probe_summary(stderr),
            "62 probes: jemalloc in /l/libjemalloc.so.2, glibc in /l/libc.so.6; \
             `malloc +7 ja 239B0h (emulated), past cmp rdi,1000h`; \
             `free +0 mov rax,rdi (single-stepped), kept at the entry`; \
             `malloc +0 push r12 (emulated: first instruction)`; `mi_free +6 je 10F45h (emulated)`"
        );
        assert_eq!(
            probe_summary(
                "alloctrace: tracing ./c 1 o: 17 probes on /l/libc.so.6 (Ctrl-C to stop)"
            ),
            "17 probes on /l/libc.so.6"
        );
    }

    fn run(counted: Option<u64>) -> Run {
        Run {
            loop_ns: 1000,
            events: 200,
            wall_s: 1.0,
            counted,
            own: None,
            seen: None,
        }
    }

    #[test]
    fn a_traced_run_that_counted_less_than_the_loop_made_gives_no_cost() {
        assert_eq!(short_count(&run(Some(102)), 100), None);
        assert_eq!(short_count(&run(Some(100)), 100), None);
        assert!(short_count(&run(Some(0)), 100)
            .unwrap()
            .contains("counted 0 allocations of the 100"));
        assert!(short_count(&run(None), 100).is_some());

        let variants = [Variant {
            name: "jemalloc",
            exe: PathBuf::from("/x/churn-jemalloc"),
            library: PathBuf::from("/lib/libjemalloc.so.2"),
        }];
        let measured = [Measured {
            runs: [vec![run(None)], vec![run(Some(100)), run(Some(0))]],
            failed: Vec::new(),
        }];
        let md = render(&variants, &[], &measured, 100, 2);
        let row = md.lines().find(|l| l.starts_with("| jemalloc")).unwrap();
        assert!(
            row.contains("| — | — | — | 0–100 | **NOT MEASURED: alloctrace counted 0"),
            "{row}"
        );
        assert!(row.contains("(1 of 2 traced runs)"), "{row}");

        let measured = [Measured {
            runs: [
                vec![run(None)],
                vec![Run {
                    loop_ns: 3000,
                    ..run(Some(101))
                }],
            ],
            failed: vec!["alloctrace (placed), round 2: exited 1".into()],
        }];
        let md = render(&variants, &[], &measured, 100, 2);
        let row = md.lines().find(|l| l.starts_with("| jemalloc")).unwrap();
        assert!(
            row.contains("| 5.0 (5.0–5.0) | 15.0 (15.0–15.0) | 10.0 | — | 101 | counted all |"),
            "{row}"
        );
        assert!(md.contains("- churn with jemalloc: alloctrace (placed), round 2: exited 1"));
    }
}
