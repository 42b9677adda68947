//! The pattern analyzer (the guide's `AllocationPatternAnalyzer`), per allocation site (one
//! process and one stack): a class from the site's fine series (a drain every `--resolution`,
//! independent of the print interval) and size histogram. Lifetimes, from the kernel's
//! lifetime histogram, are [`super::lifetimes`].
//!
//! Periods: between two consecutive points of the series the counters grew evenly as far as
//! the drains can tell (an idle stretch has its own flat period; older parts of a long run
//! are merged into longer periods). Bursts are runs of busy periods, so a drain that falls
//! inside a burst does not split it; growth is a time-weighted least-squares fit of live
//! bytes.
//!
//! Sizes derived from the size histogram are bucket bounds, not exact values (see
//! [`super::histogram`]).
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::histogram::{bucket_range, bucket_span, quantile_bucket, Range};
use super::hotspots::site_name;
use super::periods::{bursts, periods, weighted_median, Period};
#[cfg(test)]
use super::trend::fit;
pub use super::trend::{fit_over_time, Trend};
use super::Options;
use crate::model::{Counters, Frame, Profile, Site};
use crate::numfmt::{fmt_byte_range, fmt_bytes, fmt_count_f};

/// growing: a least-squares fit of live bytes over time needs this many points...
pub const GROWTH_MIN_POINTS: usize = 3;
/// ...and at least this R²...
pub const GROWTH_MIN_R2: f64 = 0.8;
/// ...the live bytes at the last point are at least this share of their maximum ("not coming
/// back")...
pub const GROWTH_KEEP_SHARE: f64 = 0.9;
/// ...and the site freed at most this share of its allocations ("frees few").
pub const GROWTH_MAX_FREE_SHARE: f64 = 0.5;

/// A site's class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatternClass {
    SmallFrequent,
    LargeInfrequent,
    Burst,
    Growing,
    Steady,
}

impl std::fmt::Display for PatternClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PatternClass::SmallFrequent => "small-frequent",
            PatternClass::LargeInfrequent => "large-infrequent",
            PatternClass::Burst => "burst",
            PatternClass::Growing => "growing",
            PatternClass::Steady => "steady",
        })
    }
}

/// One site's pattern.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SitePattern {
    pub pid: u32,
    pub stack_id: u64,
    /// The site's first frame (`[no stack]` without frames).
    pub site: String,
    pub class: PatternClass,
    /// The numbers that decided the class.
    pub reason: String,
    pub counters: Counters,
    /// Lowest and highest non-empty size buckets (bucket bounds, bytes); from the average
    /// size when the histogram is empty.
    pub size_range: Option<Range>,
    /// The median size bucket.
    pub typical_size: Option<Range>,
    /// How many doubling buckets the sizes span (highest - lowest + 1).
    pub size_buckets: usize,
    /// Allocations per second over the site's active span (or the run, without a series).
    pub frequency: Option<f64>,
    /// Seconds from the start of the site's first interval to its last point (the whole run
    /// for a site without a series).
    pub span: f64,
    /// Drain steps in the span (`--resolution`), idle ones included, and how many of them
    /// were idle.
    pub intervals: usize,
    pub idle_intervals: usize,
    /// Bursts seen: runs of consecutive busy periods with quiet before or after, each with at
    /// least `BURST_MIN_ALLOCS` allocations (a drain inside a burst does not split it).
    #[serde(default)]
    pub bursts: usize,
    /// Median (time-weighted) and peak of the series' allocation rates (allocs/s, over at
    /// least a drain step), idle periods as 0.
    pub median_rate: Option<f64>,
    pub peak_rate: Option<f64>,
    /// When (end of the period, seconds) the peak was.
    pub peak_at: Option<f64>,
    /// Live bytes over time: a least-squares line, each point weighted by the time it
    /// stands for.
    pub trend: Option<Trend>,
    /// The site's frames, innermost first.
    pub stack: Vec<String>,
}

/// The pattern of one site.
pub fn classify(p: &Profile, s: &Site, o: &Options) -> SitePattern {
    let c = s.counters;
    let step = p.drain_step().as_secs_f64();
    let avg = (c.allocs > 0).then(|| c.bytes / c.allocs);
    let span_b = bucket_span(&s.size_hist);
    let size_range = span_b
        .map(|(lo, hi)| Range {
            lo: bucket_range(lo).lo,
            hi: bucket_range(hi).hi,
        })
        .or(avg.map(|a| Range { lo: a, hi: a }));
    let typical_size = quantile_bucket(&s.size_hist, 0.5)
        .map(bucket_range)
        .or(avg.map(|a| Range { lo: a, hi: a }));
    let size_buckets = span_b.map_or(usize::from(avg.is_some()), |(lo, hi)| hi - lo + 1);

    // Periods of zero length (two drains at one instant) carry no rate.
    let all: Vec<Period> = periods(s, step)
        .into_iter()
        .filter(|x| x.secs() > 0.0)
        .collect();
    let span: f64 = all.iter().map(Period::secs).sum();
    let idle_secs: f64 = all.iter().filter(|x| x.allocs == 0).map(Period::secs).sum();
    // In drain steps, as the drains saw them.
    let in_steps = |secs: f64| {
        if step > 0.0 {
            (secs / step).round() as usize
        } else {
            0
        }
    };
    let n_intervals = if all.is_empty() {
        0
    } else {
        in_steps(span).max(1)
    };
    let idle = in_steps(idle_secs).min(n_intervals);
    // Time-weighted: a long idle stretch weighs as the drains in it.
    let median_rate = weighted_median(
        &mut all
            .iter()
            .map(|x| (x.rate(step), x.secs()))
            .collect::<Vec<_>>(),
    );
    // The earliest wins a tie.
    let peak = all.iter().fold(None::<(&Period, f64)>, |best, x| {
        let r = x.rate(step);
        match best {
            Some((_, b)) if b >= r => best,
            _ => Some((x, r)),
        }
    });
    let peak_rate = peak.map(|x| x.1);
    let b = bursts(&all, step, peak_rate.unwrap_or(0.0), median_rate);
    let span = if s.series.is_empty() {
        p.duration.as_secs_f64()
    } else {
        span
    };
    let series_allocs = s.series.last().map_or(0, |pt| pt.counters.allocs);
    let frequency = if span <= 0.0 {
        None
    } else if s.series.is_empty() {
        Some(c.allocs as f64 / span)
    } else {
        Some(series_allocs as f64 / span)
    };
    // "Sustained": the median rate, or the overall frequency without a series.
    let sustained = median_rate.or(frequency);

    let live: Vec<(f64, f64)> = s
        .series
        .iter()
        .map(|pt| (pt.t.as_secs_f64(), pt.counters.live_bytes() as f64))
        .collect();
    // Without frees (alloc-only mode) "live" is everything ever allocated: no trend to see.
    let trend = fit_over_time(&live).filter(|_| p.mode.sees_frees());
    let max_live = live.iter().map(|x| x.1).fold(0.0, f64::max);
    let last_live = live.last().map_or(0.0, |x| x.1);
    let free_share = if c.allocs > 0 {
        c.frees as f64 / c.allocs as f64
    } else {
        0.0
    };

    let growing = trend.filter(|t| {
        t.points >= GROWTH_MIN_POINTS
            && t.slope > 0.0
            && t.r2 >= GROWTH_MIN_R2
            && last_live >= GROWTH_KEEP_SHARE * max_live
            && free_share <= GROWTH_MAX_FREE_SHARE
    });
    let burst = match (peak, median_rate) {
        (Some((pk, pr)), Some(med)) if b.found => Some((pk, med, pr)),
        _ => None,
    };
    let large = typical_size
        .filter(|t| t.lo >= o.large_min_size)
        .zip(frequency.filter(|f| *f < o.large_max_rate));
    let small = typical_size
        .filter(|t| t.hi < o.small_max_size)
        .zip(sustained.filter(|r| *r > o.small_min_rate));

    let (class, reason) = if let Some(t) = growing {
        (
            PatternClass::Growing,
            format!(
                "live bytes rise {}/s over {:.1}s (least-squares fit: R² {:.2} over {} points), {:.0}% of blocks freed",
                fmt_bytes(t.slope.max(0.0) as u64),
                t.secs,
                t.r2,
                t.points,
                free_share * 100.0
            ),
        )
    } else if let Some((pk, med, pr)) = burst {
        let n = b.episodes.len();
        let per = b.episodes.iter().map(|e| e.allocs).sum::<u64>() / n.max(1) as u64;
        (
            PatternClass::Burst,
            format!(
                "{n} burst{} of ~{} allocations, busy {:.0}% of the time between the first and the last; peak {}/s at {:.2}s, {}",
                if n == 1 { "" } else { "s" },
                fmt_count_f(per as f64),
                b.duty.min(1.0) * 100.0,
                fmt_count_f(pr),
                pk.end,
                // Quiet most of the time, the median rate is 0: no ratio to it to speak of.
                if med > 0.0 {
                    format!("{:.0}x the median {}/s", pr / med, fmt_count_f(med))
                } else {
                    "quiet in between (median 0/s)".to_string()
                }
            ),
        )
    } else if let Some((t, f)) = large {
        (
            PatternClass::LargeInfrequent,
            format!(
                "typical size {} ≥ {}, {}/s < {}/s",
                fmt_byte_range(t.lo, t.hi),
                fmt_bytes(o.large_min_size),
                fmt_count_f(f),
                fmt_count_f(o.large_max_rate)
            ),
        )
    } else if let Some((t, r)) = small {
        (
            PatternClass::SmallFrequent,
            format!(
                "typical size {} < {}, sustained {}/s > {}/s",
                fmt_byte_range(t.lo, t.hi),
                fmt_bytes(o.small_max_size),
                fmt_count_f(r),
                fmt_count_f(o.small_min_rate)
            ),
        )
    } else {
        (PatternClass::Steady, "no other class applies".to_string())
    };

    SitePattern {
        pid: s.pid,
        stack_id: s.stack_id,
        site: site_name(s),
        class,
        reason,
        counters: c,
        size_range,
        typical_size,
        size_buckets,
        frequency,
        span,
        intervals: n_intervals,
        idle_intervals: idle,
        bursts: b.episodes.len(),
        median_rate,
        peak_rate,
        peak_at: peak.map(|x| x.0.end),
        trend,
        stack: s.frames.iter().map(Frame::name).collect(),
    }
}

/// The pattern of every site with allocations, biggest (bytes) first.
pub fn analyze(p: &Profile, o: &Options) -> Vec<SitePattern> {
    p.sites_by_bytes()
        .into_iter()
        .map(|s| classify(p, s, o))
        .collect()
}

/// A site pattern's sizes and frequency in one line: `sizes A–B (typical C), N/s over Ts,
/// peak P/s at Ts, idle I of J intervals` (the report and the HTML page both show it).
pub fn pattern_detail(x: &SitePattern) -> String {
    let mut line = String::new();
    match (x.size_range, x.typical_size) {
        (Some(r), Some(t)) if r != t => {
            let _ = write!(
                line,
                "sizes {} (typical {}), ",
                fmt_byte_range(r.lo, r.hi),
                fmt_byte_range(t.lo, t.hi)
            );
        }
        (Some(r), _) => {
            let _ = write!(line, "size {}, ", fmt_byte_range(r.lo, r.hi));
        }
        _ => {}
    }
    match x.frequency {
        Some(f) => {
            let _ = write!(line, "{}/s over {:.1}s", fmt_count_f(f), x.span);
        }
        None => line.push_str("frequency n/a (no time passed)"),
    }
    if let (Some(pk), Some(at)) = (x.peak_rate, x.peak_at) {
        let _ = write!(line, ", peak {}/s at {at:.1}s", fmt_count_f(pk));
    }
    if x.idle_intervals > 0 {
        let _ = write!(
            line,
            ", idle {} of {} drains",
            x.idle_intervals, x.intervals
        );
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::lifetimes::site_lifetimes;
    use crate::testkit::{c, profile, pt, series_site, site};
    use std::time::Duration;

    fn run(s: &Site, dur_ms: u64) -> SitePattern {
        classify(&profile(dur_ms, vec![]), s, &Options::default())
    }

    #[test]
    fn trend_fit() {
        let t = fit(&[(0.0, 0.0), (1.0, 2.0), (2.0, 4.0)]).unwrap();
        assert_eq!((t.slope, t.r2, t.points), (2.0, 1.0, 3));
        let flat = fit(&[(0.0, 5.0), (1.0, 5.0)]).unwrap();
        assert_eq!((flat.slope, flat.r2), (0.0, 1.0));
        assert_eq!(fit(&[(1.0, 1.0)]), None);
        assert_eq!(fit(&[(1.0, 1.0), (1.0, 2.0)]), None);
        let noisy = fit(&[(0.0, 0.0), (1.0, 10.0), (2.0, 0.0), (3.0, 10.0)]).unwrap();
        assert!(noisy.r2 < 0.5, "{noisy:?}");
    }

    #[test]
    fn small_frequent() {
        // 64 B at 1000/s for 5 s, all freed within ~100 ns.
        let pts: Vec<_> = (1..=5).map(|i| (i * 1000, i * 1000, i * 1000)).collect();
        let p = run(&series_site(64, &pts, 100), 5000);
        assert_eq!(p.class, PatternClass::SmallFrequent, "{}", p.reason);
        assert_eq!(p.typical_size, Some(Range { lo: 64, hi: 127 }));
        assert_eq!(p.size_buckets, 1);
        assert_eq!(p.frequency, Some(1000.0));
        assert_eq!(p.median_rate, Some(1000.0));
        assert_eq!((p.intervals, p.idle_intervals), (5, 0));
        let s = series_site(64, &pts, 100);
        let l = site_lifetimes(&s, &Options::default()).unwrap();
        assert_eq!(
            (l.lifetimes.short_lived_share, l.lifetimes.freed),
            (1.0, 5000)
        );
        assert!(
            p.reason.contains("sustained 1.0k/s > 100/s"),
            "{}",
            p.reason
        );
    }

    #[test]
    fn large_infrequent() {
        // 1 MiB, 2 per second, freed each time.
        let pts: Vec<_> = (1..=5).map(|i| (i * 1000, i * 2, i * 2)).collect();
        let p = run(&series_site(1 << 20, &pts, 50_000_000), 5000);
        assert_eq!(p.class, PatternClass::LargeInfrequent, "{}", p.reason);
        assert_eq!(p.typical_size.unwrap().lo, 1 << 20);
        assert_eq!(p.frequency, Some(2.0));
    }

    /// A site of `size`-byte blocks, each freed at once, allocating `events` (time in
    /// seconds, count; spread evenly over `len` seconds from that time), drained every
    /// `step_ms` starting `phase_ms` after the start, recorded as the drainer records it.
    fn drained(
        size: u64,
        events: &[(f64, u64)],
        len: f64,
        step_ms: u64,
        phase_ms: u64,
    ) -> (Profile, Site) {
        use crate::drain::series::{record, Series};
        let end = events.iter().map(|e| e.0).fold(0.0, f64::max) + len + 0.5;
        let allocs_by = |t: f64| -> u64 {
            events
                .iter()
                .map(|&(at, n)| {
                    let done = ((t - at) / len).clamp(0.0, 1.0);
                    (n as f64 * done).floor() as u64
                })
                .sum()
        };
        let mut pts = Series::new(100_000);
        let mut before = Duration::ZERO;
        let mut t = Duration::from_millis(phase_ms.max(1));
        while t.as_secs_f64() <= end {
            let a = allocs_by(t.as_secs_f64());
            if a > 0 {
                record(&mut pts, before, t, c(a, a * size, a, a * size));
            }
            before = t;
            t += Duration::from_millis(step_ms);
        }
        let series = pts.into_vec();
        let last = series.last().map_or(Counters::default(), |p| p.counters);
        let mut s = site(1, 1, vec![], last);
        s.series = series;
        s.size_hist = crate::testkit::hist(&[(size, last.allocs)]);
        s.life_hist = crate::testkit::hist(&[(100, last.frees)]);
        let mut p = profile((end * 1000.0) as u64, vec![]);
        p.resolution = Duration::from_millis(step_ms);
        (p, s)
    }

    fn class_of(x: &(Profile, Site)) -> SitePattern {
        classify(&x.0, &x.1, &Options::default())
    }

    /// Bursts are bursts wherever the drains fall: inside a burst (splitting it across two
    /// drains), at its start or end, for every phase of the drain grid.
    #[test]
    fn bursts_whatever_the_drain_phase() {
        // phases.c: 2,000 blocks in ~5 ms every 400 ms; at the default 20 ms and at 100 ms.
        // demo.c: 5,000 in ~15 ms every 165 ms, at 20 ms. guide.c: 1,000 every 250 ms.
        type Shape<'a> = (&'a [(f64, u64)], f64, u64);
        let shapes: [Shape; 4] = [
            (&[(0.1, 2000), (0.5, 2000), (0.9, 2000)], 0.005, 20),
            (&[(0.1, 2000), (0.5, 2000), (0.9, 2000)], 0.005, 100),
            (&[(0.05, 5000), (0.215, 5000), (0.38, 5000)], 0.015, 20),
            (
                &[
                    (0.0, 1000),
                    (0.25, 1000),
                    (0.5, 1000),
                    (0.75, 1000),
                    (1.0, 1000),
                ],
                0.003,
                20,
            ),
        ];
        for (events, len, step) in shapes {
            for phase in (0..step).step_by((step / 20).max(1) as usize) {
                let x = class_of(&drained(256, events, len, step, phase));
                assert_eq!(
                    (x.class, x.bursts),
                    (PatternClass::Burst, events.len()),
                    "{} bursts at a {step} ms resolution, phase {phase} ms: {}",
                    events.len(),
                    x.reason
                );
            }
        }
    }

    /// A steady site that stalls once (the workload descheduled) is not a burst; nor is a
    /// start-up spike followed by a trickle. One spike in a low stream is.
    #[test]
    fn burst_shapes() {
        // 2,000/s for 2 s, with an 80 ms stall in the middle.
        let x = class_of(&drained(64, &[(0.0, 2000), (1.08, 1840)], 1.0, 20, 7));
        let y = class_of(&drained(64, &[(0.0, 2000), (1.08, 1840)], 0.92, 20, 7));
        for p in [x, y] {
            assert_eq!(p.class, PatternClass::SmallFrequent, "{}", p.reason);
        }
        // A spike at the start, then one block every 100 ms.
        let mut ev = vec![(0.0, 5000)];
        ev.extend((1..20).map(|i| (i as f64 * 0.1, 1)));
        let x = class_of(&drained(64, &ev, 0.002, 20, 3));
        assert_ne!(x.class, PatternClass::Burst, "{}", x.reason);
        // A steady 100/s stream with one spike of 5,000 in the middle.
        let mut ev: Vec<(f64, u64)> = (0..300).map(|i| (i as f64 * 0.01, 1)).collect();
        ev.push((1.5, 5000));
        let x = class_of(&drained(64, &ev, 0.004, 20, 3));
        assert_eq!(
            (x.class, x.bursts),
            (PatternClass::Burst, 1),
            "{}",
            x.reason
        );
        // Steady with the last drain partial: not a burst.
        let x = class_of(&drained(64, &[(0.0, 3000)], 3.0, 20, 13));
        assert_eq!(x.class, PatternClass::SmallFrequent, "{}", x.reason);
    }

    #[test]
    fn sparse_large_is_not_burst() {
        // One 2 MiB block every three seconds: peak 1/s, median 0, but too few to be a burst.
        let pts = [(1000, 1, 1), (4000, 2, 2), (7000, 3, 3)];
        let p = run(&series_site(2 << 20, &pts, 1000), 7000);
        assert_eq!(p.class, PatternClass::LargeInfrequent, "{}", p.reason);
    }

    #[test]
    fn growing() {
        // 100 blocks of 64 B per second, never freed.
        let pts: Vec<_> = (1..=6).map(|i| (i * 1000, i * 100, 0)).collect();
        let p = run(&series_site(64, &pts, 0), 6000);
        assert_eq!(p.class, PatternClass::Growing, "{}", p.reason);
        let t = p.trend.unwrap();
        assert!((t.slope - 6400.0).abs() < 1e-6 && t.r2 > 0.999, "{t:?}");
        // Same growth, but everything freed by the end: it came back.
        let mut pts = pts;
        pts.push((7000, 600, 600));
        let p = run(&series_site(64, &pts, 0), 7000);
        assert_ne!(p.class, PatternClass::Growing, "{}", p.reason);
    }

    #[test]
    fn edge_cases() {
        // One point: one interval, no trend, no burst.
        let p = run(&series_site(64, &[(1000, 500, 0)], 0), 1000);
        assert_eq!(p.class, PatternClass::SmallFrequent, "{}", p.reason);
        assert_eq!((p.intervals, p.trend), (1, None));
        // Zero duration, one point at t = 0: no rate at all, steady.
        let p = run(&series_site(64, &[(0, 500, 0)], 0), 0);
        assert_eq!(p.class, PatternClass::Steady);
        assert_eq!((p.frequency, p.median_rate, p.intervals), (None, None, 0));
        // No series (an older file): the run's average decides.
        let mut s = series_site(64, &[(1000, 500, 0)], 0);
        s.series.clear();
        let p = run(&s, 1000);
        assert_eq!(
            (p.class, p.frequency),
            (PatternClass::SmallFrequent, Some(500.0))
        );
        // Counters that do not move after the start: flat live bytes, not growing.
        let p = run(
            &series_site(64, &[(1000, 10, 0), (2000, 10, 5), (3000, 10, 10)], 0),
            3000,
        );
        assert_eq!(p.class, PatternClass::Steady, "{}", p.reason);
        // Empty histograms: sizes from the average.
        let mut s = site(1, 1, vec![], c(2, 200, 0, 0));
        s.series = vec![pt(1000, s.counters)];
        let p = run(&s, 1000);
        assert_eq!(p.size_range, Some(Range { lo: 100, hi: 100 }));
        assert!(analyze(&profile(0, vec![]), &Options::default()).is_empty());
    }

    #[test]
    fn periods_of_a_series() {
        // A first point not at zero (older files) counts from one step before it.
        let s = series_site(8, &[(1000, 10, 0), (4000, 30, 0), (4000, 31, 0)], 0);
        let ps = periods(&s, 1.0);
        assert_eq!(ps.len(), 3);
        assert_eq!((ps[0].start, ps[0].end, ps[0].allocs), (0.0, 1.0, 10));
        assert_eq!((ps[1].secs(), ps[1].allocs), (3.0, 20));
        // Zero length: as long as a step for its rate.
        assert_eq!((ps[2].secs(), ps[2].rate(1.0)), (0.0, 1.0));
        // A zero first point (the drainer's) starts the first period.
        let s = series_site(8, &[(300, 0, 0), (400, 5, 0)], 0);
        let ps = periods(&s, 0.1);
        assert_eq!(ps.len(), 1);
        assert!((ps[0].start - 0.3).abs() < 1e-9 && ps[0].allocs == 5);
    }

    /// Growth with idle stretches: the time-weighted fit sees the line, not the busy drains.
    #[test]
    fn growth_over_idle_stretches() {
        // 50 blocks of 64 B every 500 ms for 5 s, never freed: busy drains 20 ms long.
        let ev: Vec<(f64, u64)> = (0..10).map(|i| (i as f64 * 0.5, 50)).collect();
        let (p, mut s) = drained(64, &ev, 0.004, 20, 5);
        for pt in &mut s.series {
            pt.counters.frees = 0;
            pt.counters.freed_bytes = 0;
        }
        s.counters = s.series.last().unwrap().counters;
        let x = classify(&p, &s, &Options::default());
        assert_eq!(x.class, PatternClass::Growing, "{}", x.reason);
        let t = x.trend.unwrap();
        assert!((t.slope - 6400.0).abs() < 800.0 && t.r2 > 0.95, "{t:?}");
        assert!(x.reason.contains("least-squares fit: R²"), "{}", x.reason);
        // Evenly spaced points weigh alike: the plain fit.
        let pts = [(0.0, 1.0), (1.0, 3.0), (2.0, 4.0), (3.0, 8.0)];
        let (a, b) = (fit(&pts).unwrap(), fit_over_time(&pts).unwrap());
        assert!((a.slope - 2.2).abs() < 1e-9, "{a:?}");
        assert!(
            (b.slope - a.slope).abs() > 0.01 && b.r2 > 0.8,
            "the ends weigh half: {b:?}"
        );
        assert_eq!(fit_over_time(&[(1.0, 1.0), (1.0, 2.0)]), None);
    }
}
