//! The final text report: its header block (duration, totals, rates, losses, what went
//! unseen, the tracer's own cost), then the tables of [`super::sections`].
use std::fmt::Write as _;
use std::time::Duration;

use super::leaks::render_leaks;
use super::sections::{
    allocators_line, if_traced, render_advice, render_hotspots, render_patterns, render_processes,
    render_sites,
};
use crate::analyze::rate::Peak;
use crate::analyze::Analysis;
#[cfg(test)]
use crate::analyze::{analyze, Options};
use crate::model::Profile;
use crate::numfmt::{fmt_bytes, fmt_bytes_f, fmt_count, fmt_count_f};

/// Width of the labels in the final report's header block.
const LABEL: usize = 20;

/// `1s`, `0.5s`, `2.25s`.
fn fmt_interval(d: Duration) -> String {
    let s = format!("{:.3}", d.as_secs_f64());
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}s")
}

/// `avg X/s, peak Y/s at Ts` for one counter; `n/a (zero duration)` instead of the average
/// for a zero-length run; without a period, no peak.
fn rate_line(avg: Option<f64>, peak: Option<Peak>, fmt: fn(f64) -> String) -> String {
    let mut s = match avg {
        Some(r) => format!("avg {}/s", fmt(r)),
        None => "n/a (zero duration)".to_string(),
    };
    if let Some(pk) = peak {
        let _ = write!(s, ", peak {}/s at {:.1}s", fmt(pk.value), pk.at);
    }
    s
}

fn label(out: &mut String, name: &str, value: &str) {
    let _ = writeln!(out, "{:<LABEL$}{value}", format!("{name}:"));
}

/// The final report with the default analyzer settings (`top` sites).
#[cfg(test)]
pub fn render_text(p: &Profile, top: usize) -> String {
    let o = Options {
        top,
        ..Default::default()
    };
    render_report(p, &analyze(p, &o), top)
}

/// The final report: a summary, a per-process table when more than one process was traced,
/// the `top` allocation sites by bytes with their stacks, then the analysis: hot spots,
/// the pattern and lifetimes of each top site, and advice.
pub fn render_report(p: &Profile, a: &Analysis, top: usize) -> String {
    let mut out = String::new();
    let total = p.total();
    let r = &a.rate.overall;
    let multi = p.is_multi_process();
    let dur = p.duration.as_secs_f64();

    let _ = writeln!(out, "=== Allocation Report: {} ===", p.target);
    let samples = match p.samples.len() {
        0 => "no samples".to_string(),
        1 => format!("1 sample, every {}", fmt_interval(p.drain_step())),
        n => format!("{n} samples every {}", fmt_interval(p.drain_step())),
    };
    label(&mut out, "Duration", &format!("{dur:.2}s   ({samples})"));
    let sees_frees = p.mode.sees_frees();
    if let Some(n) = p.sample_bytes {
        let sampled: u64 = p.sites.iter().filter_map(|s| s.sampled).sum();
        label(
            &mut out,
            "Sampling",
            &format!(
                "one allocation per {} on average ({} sampled): per-site numbers are estimates, totals exact",
                fmt_bytes(n),
                fmt_count(sampled)
            ),
        );
    }
    if !sees_frees {
        label(
            &mut out,
            "Mode",
            "alloc-only (entry probes only: frees, live bytes and lifetimes not traced)",
        );
    }
    if let Some(line) = allocators_line(p, multi) {
        label(&mut out, "Probed through", &line);
    }
    if let Some(line) = crate::golang::runtime_line(p) {
        label(&mut out, "Go runtime", &line);
    }
    let avg = if total.allocs > 0 {
        format!(
            " (avg {})",
            fmt_bytes_f(total.bytes as f64 / total.allocs as f64)
        )
    } else {
        String::new()
    };
    label(
        &mut out,
        "Total allocated",
        &format!(
            "{} in {} objects{avg}",
            fmt_bytes(total.bytes),
            fmt_count(total.allocs)
        ),
    );
    label(
        &mut out,
        "Total freed",
        &if_traced(
            sees_frees,
            format!(
                "{} in {} objects",
                fmt_bytes(total.freed_bytes),
                fmt_count(total.frees)
            ),
        ),
    );
    label(
        &mut out,
        "Alloc rate",
        &rate_line(r.avg_alloc_rate, r.peak_alloc_rate, fmt_bytes_f),
    );
    label(
        &mut out,
        "Object rate",
        &rate_line(r.avg_object_rate, r.peak_object_rate, fmt_count_f),
    );
    let peak = match r.peak_live_bytes {
        Some(pk) => format!(
            " (peak live {} at {:.1}s)",
            fmt_bytes(pk.value as u64),
            pk.at
        ),
        None => String::new(),
    };
    label(
        &mut out,
        "Live at end",
        &if_traced(
            sees_frees,
            format!(
                "{} in {} objects{peak}",
                fmt_bytes(r.live_bytes_end),
                fmt_count(r.live_objects_end)
            ),
        ),
    );
    let unknown: u64 = p.processes.iter().map(|x| x.unknown_frees).sum();
    if unknown > 0 {
        label(
            &mut out,
            "Unknown frees",
            &format!("{unknown} (blocks allocated before tracing started)"),
        );
    }
    let losses = p.losses.nonzero();
    let unseen: Vec<_> = p
        .processes
        .iter()
        .filter_map(|x| x.unseen.as_ref().map(|u| (x.pid, u)))
        .collect();
    if losses.is_empty() && !unseen.is_empty() {
        label(
            &mut out,
            "Lost data",
            "none counted; but allocations went unseen (below)",
        );
    } else if losses.is_empty() {
        label(&mut out, "Lost data", "none");
    } else {
        for (i, (name, n, hint)) in losses.iter().enumerate() {
            let head = if i == 0 { "Lost data:" } else { "" };
            let _ = writeln!(out, "{head:<LABEL$}{name}: {n} ({hint})");
        }
    }
    for (pid, u) in unseen {
        label(
            &mut out,
            "Unseen",
            &if u.since.is_zero() && !u.program.is_empty() {
                // Its allocator could not be probed from the start (said at start-up).
                format!("pid {pid} ({}), from the start: {}", u.program, u.reason)
            } else if u.program.is_empty() {
                // A followed process never seen: unseen from its start, no exec involved.
                format!(
                    "pid {pid} from {:.2}s on: {}",
                    u.since.as_secs_f64(),
                    u.reason
                )
            } else {
                format!(
                    "pid {pid} from {:.2}s on, when it executed {}: {}",
                    u.since.as_secs_f64(),
                    u.program,
                    u.reason
                )
            },
        );
    }
    if let Some(t) = &p.tracer {
        label(
            &mut out,
            "Tracer cost",
            &format!(
                "{:.2}s CPU (loading the programs included), peak RSS {}",
                t.cpu_time.as_secs_f64(),
                fmt_bytes(t.peak_rss_bytes)
            ),
        );
    }

    if multi {
        render_processes(&mut out, p, top);
    }
    render_sites(&mut out, p, top, multi);
    render_hotspots(&mut out, &a.hotspots, multi, sees_frees);
    render_patterns(&mut out, a, top, multi, sees_frees);
    render_leaks(&mut out, p, a, top, multi);
    if !a.patterns.is_empty() {
        render_advice(&mut out, &a.advice, top, multi);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::SortBy;
    use crate::model::{Frame, Losses, Target, TraceMode};
    use crate::render::interval_lines;
    use crate::testkit::{c, command_profile, proc_, sample, series_site, site, src_frame};

    #[test]
    fn interval_text() {
        assert_eq!(fmt_interval(Duration::from_secs(1)), "1s");
        assert_eq!(fmt_interval(Duration::from_millis(250)), "0.25s");
    }

    #[test]
    fn report_one_site() {
        let counters = c(1000, 1_000_000, 900, 900_000);
        let p = command_profile(
            vec![proc_(100, "prog", counters)],
            vec![site(
                100,
                7,
                vec![
                    src_frame("alloc_a", Some("src/main.rs"), Some(12)),
                    src_frame("main", Some("src/main.rs"), None),
                ],
                counters,
            )],
            vec![
                sample(1000, &[(100, c(400, 400_000, 300, 300_000))]),
                sample(2000, &[(100, counters)]),
            ],
            2000,
        );
        let expected = "\
=== Allocation Report: ./prog -x ===
Duration:           2.00s   (2 samples every 1s)
Total allocated:    976.6 KiB in 1.0k objects (avg 1000 B)
Total freed:        878.9 KiB in 900 objects
Alloc rate:         avg 488.3 KiB/s, peak 585.9 KiB/s at 2.0s
Object rate:        avg 500/s, peak 600/s at 2.0s
Live at end:        97.7 KiB in 100 objects (peak live 97.7 KiB at 1.0s)
Lost data:          none

Top 1 allocation sites by bytes (of 1):
   #       BYTES   SHARE   ALLOCS         AVG  LIVE BYTES  LIVE OBJS    FREES  SITE
   1   976.6 KiB  100.0%     1.0k      1000 B    97.7 KiB        100      900  alloc_a
        alloc_a (src/main.rs:12)
        main (src/main.rs)

Hot spots by function, by bytes (1 of 1):
   #       BYTES   SHARE   ALLOCS         AVG  LIVE BYTES    FIRST     LAST   ACTIVE  SITES  FUNCTION
   1   976.6 KiB  100.0%     1.0k      1000 B    97.7 KiB        -        -        -      1  alloc_a

Patterns of the top 1 sites (sizes and lifetimes are log2 bucket bounds):
   1. alloc_a: small-frequent (typical size 1000 B < 1.0 KiB, sustained 500/s > 100/s)
      size 1000 B, 500/s over 2.0s
      lifetimes: no block freed

Advice: none (no site's numbers met a rule)
";
        assert_eq!(render_text(&p, 10), expected);
    }

    #[test]
    fn report_alloc_only_says_what_was_not_traced() {
        let counters = c(1000, 1_000_000, 0, 0);
        let mut p = command_profile(
            vec![proc_(100, "prog", counters)],
            vec![site(
                100,
                7,
                vec![src_frame("alloc_a", None, None)],
                counters,
            )],
            vec![
                sample(1000, &[(100, c(400, 400_000, 0, 0))]),
                sample(2000, &[(100, counters)]),
            ],
            2000,
        );
        p.mode = TraceMode::AllocOnly;
        let text = render_text(&p, 10);
        for want in [
            "Mode:               alloc-only (entry probes only: frees, live bytes and lifetimes not traced)\n",
            "Total freed:        -\n",
            "Live at end:        -\n",
            "   1   976.6 KiB  100.0%     1.0k      1000 B           -          -        -  alloc_a\n",
        ] {
            assert!(text.contains(want), "{want:?} missing from\n{text}");
        }
        assert!(
            !text.contains("growing") && !text.contains("leak"),
            "{text}"
        );
        let lines = interval_lines(
            None,
            &p.samples[1],
            &|_| "prog".into(),
            TraceMode::AllocOnly,
        );
        assert_eq!(
            lines,
            vec!["[   2.00s] pid 100 (prog)  alloc  488.3 KiB/s     500 obj/s  total  976.6 KiB in   1.0k objects"]
        );
    }

    #[test]
    fn report_says_what_the_run_cost_the_tracer() {
        let counters = c(10, 1000, 10, 1000);
        let mut p = command_profile(
            vec![proc_(100, "prog", counters)],
            vec![site(
                100,
                7,
                vec![src_frame("alloc_a", None, None)],
                counters,
            )],
            vec![sample(1000, &[(100, counters)])],
            1000,
        );
        assert!(!render_text(&p, 10).contains("Tracer cost"));
        p.tracer = Some(crate::model::TracerCost {
            cpu_time: Duration::from_millis(1234),
            peak_rss_bytes: 45 << 20,
        });
        let text = render_text(&p, 10);
        let want = "Lost data:          none\nTracer cost:        1.23s CPU (loading the programs included), peak RSS 45.0 MiB\n";
        assert!(text.contains(want), "{want:?} missing from\n{text}");
    }

    #[test]
    fn report_says_when_a_process_went_unseen() {
        let counters = c(10, 1000, 10, 1000);
        let mut p = command_profile(
            vec![proc_(100, "sh", counters)],
            vec![],
            vec![sample(1000, &[(100, counters)])],
            1000,
        );
        p.processes[0].unseen = Some(crate::model::Unseen {
            since: Duration::from_millis(520),
            program: "/tmp/static_wait".into(),
            reason: "it maps no libc alloctrace probes (statically linked)".into(),
        });
        let text = render_text(&p, 10);
        let want = "Lost data:          none counted; but allocations went unseen (below)\n\
                    Unseen:             pid 100 from 0.52s on, when it executed \
                    /tmp/static_wait: it maps no libc alloctrace probes (statically linked)\n";
        assert!(text.contains(want), "{want:?} missing from\n{text}");
        // With several processes, the table marks it too.
        p.processes.push(proc_(101, "other", counters));
        let text = render_text(&p, 10);
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with("100  sh (unseen)")),
            "{text}"
        );
        // A followed process never seen at all: no exec to name.
        p.processes[0].unseen = Some(crate::model::Unseen {
            since: Duration::from_millis(10),
            program: String::new(),
            reason: "it exited before alloctrace could attach its probes".into(),
        });
        let text = render_text(&p, 10);
        let want = "Unseen:             pid 100 from 0.01s on: it exited before alloctrace \
                    could attach its probes\n";
        assert!(text.contains(want), "{want:?} missing from\n{text}");
        // A process whose allocator could not be probed at all: from the start.
        p.processes[0].unseen = Some(crate::model::Unseen {
            since: Duration::ZERO,
            program: "/tmp/ws".into(),
            reason: "statically linked and stripped: no allocator symbols".into(),
        });
        let text = render_text(&p, 10);
        let want = "Unseen:             pid 100 (/tmp/ws), from the start: statically linked \
                    and stripped: no allocator symbols\n";
        assert!(text.contains(want), "{want:?} missing from\n{text}");
    }

    #[test]
    fn report_several_sites_sorted_and_truncated() {
        let a = c(10, 5000, 10, 5000);
        let b = c(20, 5000, 0, 0);
        let z = c(0, 0, 3, 300);
        let big = c(1, 1 << 20, 0, 0);
        let long: Vec<Frame> = (0..15)
            .map(|i| src_frame(&format!("f{i}"), None, None))
            .collect();
        let mut unknown = Frame {
            addr: 0xdead,
            module: Some("/lib/libc.so.6".into()),
            module_offset: 0x2a,
            ..Default::default()
        };
        unknown.line = Some(3);
        let mut total = a;
        total.add(&b);
        total.add(&big);
        let mut proc = proc_(100, "prog", total);
        proc.unknown_frees = 3;
        let mut p = command_profile(
            vec![proc],
            vec![
                site(100, 1, vec![src_frame("a", None, None)], a),
                site(100, 2, vec![unknown], b),
                site(100, 3, vec![src_frame("zero", None, None)], z),
                site(100, 4, long, big),
                site(100, 5, vec![], c(1, 1, 0, 0)),
            ],
            vec![],
            0,
        );
        p.losses = Losses {
            stack_map_full: 2,
            stale_call: 1,
            ..Default::default()
        };
        let expected = "\
=== Allocation Report: ./prog -x ===
Duration:           0.00s   (no samples)
Total allocated:    1.0 MiB in 31 objects (avg 33.3 KiB)
Total freed:        4.9 KiB in 10 objects
Alloc rate:         n/a (zero duration)
Object rate:        n/a (zero duration)
Live at end:        1.0 MiB in 21 objects
Unknown frees:      3 (blocks allocated before tracing started)
Lost data:          stack map full: 2 (raise --max-stacks)
                    call without return: 1 (an allocator call never returned)

Top 3 allocation sites by bytes (of 4):
   #       BYTES   SHARE   ALLOCS         AVG  LIVE BYTES  LIVE OBJS    FREES  SITE
   1     1.0 MiB   99.1%        1     1.0 MiB     1.0 MiB          1        0  f0
        f0
        f1
        f2
        f3
        f4
        f5
        f6
        f7
        f8
        f9
        f10
        f11
        … 3 more frames

   2     4.9 KiB    0.5%       20       250 B     4.9 KiB         20        0  libc.so.6+0x2a
        libc.so.6+0x2a

   3     4.9 KiB    0.5%       10       500 B         0 B          0       10  a
        a

  … and 1 more sites (--top)

Hot spots by function, by bytes (3 of 4):
   #       BYTES   SHARE   ALLOCS         AVG  LIVE BYTES    FIRST     LAST   ACTIVE  SITES  FUNCTION
   1     1.0 MiB   99.1%        1     1.0 MiB     1.0 MiB        -        -        -      1  f0
   2     4.9 KiB    0.5%       20       250 B     4.9 KiB        -        -        -      1  libc.so.6+0x2a
   3     4.9 KiB    0.5%       10       500 B         0 B        -        -        -      1  a

Patterns of the top 3 sites (sizes and lifetimes are log2 bucket bounds):
   1. f0: steady (no other class applies)
      size 1.0 MiB, frequency n/a (no time passed)
      lifetimes: no block freed
   2. libc.so.6+0x2a: steady (no other class applies)
      size 250 B, frequency n/a (no time passed)
      lifetimes: no block freed
   3. a: steady (no other class applies)
      size 500 B, frequency n/a (no time passed)
      lifetimes: no block freed

Advice: none (no site's numbers met a rule)
";
        assert_eq!(render_text(&p, 3), expected);
    }

    #[test]
    fn report_system_wide() {
        let c1 = c(3000, 3 << 20, 1000, 1 << 20);
        let c2 = c(10, 4096, 10, 4096);
        let mut p = command_profile(
            vec![proc_(42, "worker", c2), proc_(4242, "a-long-name", c1)],
            vec![
                site(42, 1, vec![src_frame("w_alloc", None, None)], c2),
                site(4242, 1, vec![], c1),
            ],
            vec![
                sample(1000, &[(42, c2), (4242, c(1000, 1 << 20, 0, 0))]),
                sample(2000, &[(4242, c(2000, 2 << 20, 500, 512 << 10))]),
                sample(3000, &[(4242, c(2500, 2560 << 10, 700, 700 << 10))]),
                sample(3100, &[(4242, c1)]),
            ],
            3100,
        );
        p.target = Target::System;
        let expected = "\
=== Allocation Report: all processes ===
Duration:           3.10s   (4 samples every 1s)
Total allocated:    3.0 MiB in 3.0k objects (avg 1.0 KiB)
Total freed:        1.0 MiB in 1.0k objects
Alloc rate:         avg 992.3 KiB/s, peak 1.0 MiB/s at 1.0s
Object rate:        avg 971/s, peak 1.0k/s at 1.0s
Live at end:        2.0 MiB in 2.0k objects (peak live 2.0 MiB at 3.1s)
Lost data:          none

Processes by bytes allocated (2 of 2):
      PID  COMM          ALLOCS       BYTES    FREES  LIVE BYTES  LIVE OBJS
     4242  a-long-name     3.0k     3.0 MiB     1.0k     2.0 MiB       2.0k
       42  worker            10     4.0 KiB       10         0 B          0

Top 2 allocation sites by bytes (of 2):
   #       BYTES   SHARE   ALLOCS         AVG  LIVE BYTES  LIVE OBJS    FREES      PID  SITE
   1     3.0 MiB   99.9%     3.0k     1.0 KiB     2.0 MiB       2.0k     1.0k     4242  [no stack]

   2     4.0 KiB    0.1%       10       410 B         0 B          0       10       42  w_alloc
        w_alloc

Hot spots by function, by bytes (2 of 2):
   #       BYTES   SHARE   ALLOCS         AVG  LIVE BYTES    FIRST     LAST   ACTIVE  SITES      PID  FUNCTION
   1     3.0 MiB   99.9%     3.0k     1.0 KiB     2.0 MiB        -        -        -      1     4242  [no stack]
   2     4.0 KiB    0.1%       10       410 B         0 B        -        -        -      1       42  w_alloc

Patterns of the top 2 sites (sizes and lifetimes are log2 bucket bounds):
   1. pid 4242 [no stack]: steady (no other class applies)
      size 1.0 KiB, 968/s over 3.1s
      lifetimes: no block freed
   2. pid 42 w_alloc: steady (no other class applies)
      size 409 B, 3.2/s over 3.1s
      lifetimes: no block freed

Advice: none (no site's numbers met a rule)
";
        assert_eq!(render_text(&p, 10), expected);

        // With the allocators each process was counted through: a header line naming each
        // file once, and a column.
        let use_of = |name: &str, path: &str| crate::model::AllocatorUse {
            name: name.into(),
            path: path.into(),
            version: None,
        };
        let libc = use_of("glibc", "/lib/libc.so.6");
        p.processes[0].allocators = vec![use_of("jemalloc", "/lib/libjemalloc.so.2"), libc.clone()];
        p.processes[1].allocators = vec![libc];
        let text = render_text(&p, 10);
        assert!(
            text.contains(
                "\nProbed through:     jemalloc in /lib/libjemalloc.so.2 (1 process), glibc in \
                 /lib/libc.so.6 (2 processes)\n"
            ),
            "{text}"
        );
        assert!(text.contains("LIVE OBJS  ALLOCATORS\n"), "{text}");
        assert!(text.contains("       0  jemalloc+glibc\n"), "{text}");
        assert!(text.contains("2.0k  glibc\n"), "{text}");
    }

    #[test]
    fn report_empty_profile() {
        let p = command_profile(vec![], vec![], vec![], 0);
        let expected = "\
=== Allocation Report: ./prog -x ===
Duration:           0.00s   (no samples)
Total allocated:    0 B in 0 objects
Total freed:        0 B in 0 objects
Alloc rate:         n/a (zero duration)
Object rate:        n/a (zero duration)
Live at end:        0 B in 0 objects
Lost data:          none

Allocation sites: none recorded
";
        assert_eq!(render_text(&p, 10), expected);
    }

    #[test]
    fn report_analysis_sections() {
        // A pool candidate (64 B, 1000/s, dying at once) and a leak (256 B, never freed).
        let pts: Vec<_> = (1..=4).map(|i| (i * 1000, i * 1000, i * 1000)).collect();
        let mut pool = series_site(64, &pts, 100);
        pool.frames = vec![
            src_frame("parse_token", None, None),
            src_frame("main", None, None),
        ];
        let pts: Vec<_> = (1..=4).map(|i| (i * 1000, i * 50, 0)).collect();
        let mut leak = series_site(256, &pts, 0);
        leak.stack_id = 2;
        leak.frames = vec![src_frame("cache_insert", None, None)];
        let mut total = pool.counters;
        total.add(&leak.counters);
        let p = command_profile(
            vec![proc_(1, "prog", total)],
            vec![pool, leak],
            vec![],
            4000,
        );
        let a = analyze(
            &p,
            &Options {
                sort: SortBy::Live,
                ..Default::default()
            },
        );
        let text = render_report(&p, &a, 10);
        let tail = &text[text.find("\nHot spots").expect("hot spots")..];
        let expected = "
Hot spots by function, by live bytes (2 of 2):
   #       BYTES   SHARE   ALLOCS         AVG  LIVE BYTES    FIRST     LAST   ACTIVE  SITES  FUNCTION
   1    50.0 KiB   16.7%      200       256 B    50.0 KiB     1.0s     4.0s     3.0s      1  cache_insert
   2   250.0 KiB   83.3%     4.0k        64 B         0 B     1.0s     4.0s     3.0s      1  parse_token

Patterns of the top 2 sites (sizes and lifetimes are log2 bucket bounds):
   1. parse_token: small-frequent (typical size 64 B–127 B < 1.0 KiB, sustained 1.0k/s > 100/s)
      size 64 B–127 B, 1.0k/s over 4.0s, peak 1.0k/s at 1.0s
      lifetimes of 4.0k freed: median 64 ns–128 ns, p90 64 ns–128 ns, 100% under 524 µs
   2. cache_insert: growing (live bytes rise 12.5 KiB/s over 3.0s (least-squares fit: R² 1.00 over 4 points), 0% of blocks freed)
      size 256 B–511 B, 50.0/s over 4.0s, peak 50.0/s at 1.0s
      lifetimes: no block freed

Advice:
  [pool] parse_token: 4.0k allocations at 1.0k/s, sizes 64 B–127 B (1 size class), 100% of freed blocks lived < 524 µs
      → reuse these objects (a free list, an object pool, or a buffer kept across calls) instead of allocating each time
  [leak suspect] cache_insert: 200 blocks (50.0 KiB) never freed, 0 of 200 allocations freed (0.0%), allocated throughout the run (4 of 4 steps without frees, over 4.00 s of 4.00 s), live bytes grow 12.5 KiB/s (R² 1.00 over 4 points); confidence high
      → these blocks are never freed while the site keeps allocating: find who owns them and free them when done (or bound the structure that keeps them)
";
        assert_eq!(tail, expected);
    }

    #[test]
    fn rates_without_samples_and_single_sample() {
        let counters = c(10, 10_240, 0, 0);
        let mut p = command_profile(vec![proc_(1, "p", counters)], vec![], vec![], 2000);
        let text = render_text(&p, 10);
        assert!(
            text.contains("Alloc rate:         avg 5.0 KiB/s\n"),
            "{text}"
        );
        // One sample long after the start (older samples dropped): no period, average only.
        p.samples = vec![sample(2000, &[(1, counters)])];
        p.resolution = Duration::from_millis(500);
        let text = render_text(&p, 10);
        assert!(text.contains("(1 sample, every 0.5s)"), "{text}");
        assert!(
            text.contains("Alloc rate:         avg 5.0 KiB/s\n"),
            "{text}"
        );
        // The first drain of the run counts from t = 0.
        p.resolution = Duration::from_secs(2);
        let text = render_text(&p, 10);
        assert!(
            text.contains("Alloc rate:         avg 5.0 KiB/s, peak 5.0 KiB/s at 2.0s\n"),
            "{text}"
        );
    }
}
