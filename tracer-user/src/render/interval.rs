//! What is printed while tracing: one line per busy process each interval, and the data
//! lost so far.
use std::time::Duration;

use crate::model::{Counters, Losses, Sample, TraceMode};
use crate::numfmt::{fmt_bytes, fmt_bytes_f, fmt_count, fmt_count_f};

/// Processes shown per interval before the rest are summarized in one line.
const MAX_INTERVAL_PROCS: usize = 20;

/// `n` per second over `secs`; zero when no time passed (never a division by zero).
fn per_sec(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

/// What each process did between `prev` and `cur` (`prev` None: since the start, t = 0):
/// one line per process with activity in the period or live data at its end, busiest (bytes
/// allocated in the period) first; beyond 20 processes a last line says how many more. When
/// no process qualifies, a single line says so, so the user still sees the tracer is alive.
///
/// Rates divide by the real time between the two samples; a zero-length period shows 0/s.
pub fn interval_lines(
    prev: Option<&Sample>,
    cur: &Sample,
    comm: &dyn Fn(u32) -> String,
    mode: TraceMode,
) -> Vec<String> {
    let elapsed = cur
        .t
        .saturating_sub(prev.map_or(Duration::ZERO, |p| p.t))
        .as_secs_f64();
    let zero = Counters::default();
    let mut rows: Vec<(u32, Counters, &Counters)> = cur
        .processes
        .iter()
        .map(|(&pid, c)| {
            let before = prev.and_then(|p| p.processes.get(&pid)).unwrap_or(&zero);
            (pid, c.since(before), c)
        })
        .filter(|(_, d, c)| {
            *d != zero || (mode.sees_frees() && (c.live_bytes() > 0 || c.live_objects() > 0))
        })
        .collect();
    let stamp = format!("[{:>7.2}s]", cur.t.as_secs_f64());
    if rows.is_empty() {
        return vec![format!("{stamp} no allocation activity")];
    }
    rows.sort_by(|a, b| b.1.bytes.cmp(&a.1.bytes).then(a.0.cmp(&b.0)));
    let more = rows.len().saturating_sub(MAX_INTERVAL_PROCS);
    rows.truncate(MAX_INTERVAL_PROCS);

    let names: Vec<String> = rows
        .iter()
        .map(|(pid, ..)| {
            let c = comm(*pid);
            format!("({})", if c.is_empty() { "?" } else { &c })
        })
        .collect();
    let pid_w = rows
        .iter()
        .map(|(pid, ..)| pid.to_string().len())
        .max()
        .unwrap_or(1);
    let name_w = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let mut out: Vec<String> = rows
        .iter()
        .zip(&names)
        .map(|((pid, d, c), name)| {
            let head = format!(
                "{stamp} pid {pid:>pid_w$} {name:<name_w$}  alloc {:>10}/s  {:>6} obj/s",
                fmt_bytes_f(per_sec(d.bytes, elapsed)),
                fmt_count_f(per_sec(d.allocs, elapsed)),
            );
            if !mode.sees_frees() {
                return format!(
                    "{head}  total {:>10} in {:>6} objects",
                    fmt_bytes(c.bytes),
                    fmt_count(c.allocs)
                );
            }
            format!(
                "{head}  frees {:>6}/s  live {:>10} in {:>6} objects",
                fmt_count_f(per_sec(d.frees, elapsed)),
                fmt_bytes(c.live_bytes()),
                fmt_count(c.live_objects()),
            )
        })
        .collect();
    if more > 0 {
        out.push(format!("{stamp} … and {more} more processes"));
    }
    out
}

/// One line naming every non-zero loss counter with the hint that fixes it; None when
/// nothing was lost.
pub fn losses_line(l: &Losses) -> Option<String> {
    let nz = l.nonzero();
    if nz.is_empty() {
        return None;
    }
    let parts: Vec<String> = nz
        .iter()
        .map(|(name, n, hint)| format!("{name}: {n} ({hint})"))
        .collect();
    Some(format!("  lost data: {}", parts.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{c, sample};

    #[test]
    fn interval_lines_rates_and_alignment() {
        let prev = sample(
            1000,
            &[
                (1234, c(1000, 1 << 20, 500, 1 << 19)),
                (77, c(10, 100, 10, 100)),
            ],
        );
        let cur = sample(
            3000,
            &[
                (1234, c(91_000, 25 << 20, 88_700, (25 << 20) - (3 << 20))),
                (77, c(10, 100, 10, 100)),
                (5, c(1, 64, 0, 0)),
            ],
        );
        let comm = |pid: u32| {
            if pid == 1234 {
                "myprog".to_string()
            } else {
                String::new()
            }
        };
        let lines = interval_lines(Some(&prev), &cur, &comm, TraceMode::Full);
        assert_eq!(
            lines,
            vec![
                "[   3.00s] pid 1234 (myprog)  alloc   12.0 MiB/s   45.0k obj/s  frees  44.1k/s  live    3.0 MiB in   2.3k objects",
                "[   3.00s] pid    5 (?)       alloc       32 B/s     0.5 obj/s  frees      0/s  live       64 B in      1 objects",
            ]
        );
    }

    #[test]
    fn interval_lines_from_start_and_zero_elapsed() {
        let cur = sample(2000, &[(1, c(4, 4096, 0, 0))]);
        let comm = |_: u32| "p".to_string();
        assert_eq!(
            interval_lines(None, &cur, &comm, TraceMode::Full),
            vec!["[   2.00s] pid 1 (p)  alloc    2.0 KiB/s     2.0 obj/s  frees      0/s  live    4.0 KiB in      4 objects"]
        );
        let same = sample(2000, &[(1, c(8, 8192, 0, 0))]);
        assert_eq!(
            interval_lines(Some(&cur), &same, &comm, TraceMode::Full),
            vec!["[   2.00s] pid 1 (p)  alloc        0 B/s       0 obj/s  frees      0/s  live    8.0 KiB in      8 objects"]
        );
        let idle = sample(3000, &[(1, c(8, 8192, 8, 8192))]);
        assert_eq!(
            interval_lines(Some(&idle), &idle, &comm, TraceMode::Full),
            vec!["[   3.00s] no allocation activity"]
        );
    }

    #[test]
    fn interval_lines_caps_processes() {
        let procs: Vec<(u32, Counters)> = (1..=25)
            .map(|pid| (pid, c(1, u64::from(pid) * 10, 0, 0)))
            .collect();
        let cur = sample(1000, &procs);
        let lines = interval_lines(None, &cur, &|_| "w".into(), TraceMode::Full);
        assert_eq!(lines.len(), 21);
        assert!(
            lines[0].starts_with("[   1.00s] pid 25 (w)  alloc      250 B/s"),
            "{}",
            lines[0]
        );
        assert!(
            lines[19].starts_with("[   1.00s] pid  6 (w)"),
            "{}",
            lines[19]
        );
        assert_eq!(lines[20], "[   1.00s] … and 5 more processes");
    }

    #[test]
    fn losses_line_lists_nonzero() {
        assert_eq!(losses_line(&Losses::default()), None);
        let l = Losses {
            stack_map_full: 3,
            event_dropped: 1,
            ..Default::default()
        };
        assert_eq!(
            losses_line(&l).unwrap(),
            "  lost data: stack map full: 3 (raise --max-stacks); events dropped: 1 (short-lived processes may not symbolize)"
        );
    }
}
