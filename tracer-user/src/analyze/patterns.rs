//! The pattern analyzer (the guide's `AllocationPatternAnalyzer`), per allocation site (one
//! process and one stack): a class from the site's per-interval series and size histogram.
//! Lifetimes, from the kernel's lifetime histogram, are [`super::lifetimes`].
//!
//! Intervals: the series has a point at each drain where the site's counters moved, so the
//! delta between consecutive points happened in the drain period ending at the later point
//! (its length is the nominal interval, or less when the points are closer, e.g. the final
//! partial drain). Whole intervals between two points without a point were idle (rate 0).
//! The first point counts from zero over at most one interval.
//!
//! Sizes derived from the size histogram are bucket bounds, not exact values (see
//! [`super::histogram`]).
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::histogram::{bucket_range, bucket_span, quantile_bucket, Range};
use super::hotspots::site_name;
use super::Options;
use crate::model::{Counters, Frame, Profile, Site};
use crate::numfmt::{fmt_byte_range, fmt_bytes, fmt_count_f};

/// burst: an interval is quiet when its rate is at most the peak interval rate divided by
/// this; a lone spike must also be this many times the median interval rate...
pub const BURST_FACTOR: f64 = 4.0;
/// ...the peak interval holds at least this many allocations (a site allocating once every
/// few intervals is sparse, not bursty)...
pub const BURST_MIN_ALLOCS: u64 = 10;
/// ...over at least this many intervals (idle ones included).
pub const BURST_MIN_INTERVALS: usize = 3;
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

/// A least-squares line through (t, live bytes).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trend {
    /// Bytes per second.
    pub slope: f64,
    /// Coefficient of determination, 0..=1: how well the line explains the points (the
    /// confidence of a "growing" call).
    pub r2: f64,
    pub points: usize,
}

/// The fit of `(x, y)` points; `None` with fewer than two distinct x.
pub fn fit(points: &[(f64, f64)]) -> Option<Trend> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - my).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    // A flat series is explained perfectly by a flat line.
    let r2 = if syy <= 0.0 {
        1.0
    } else {
        (sxy * sxy / (sxx * syy)).clamp(0.0, 1.0)
    };
    Some(Trend {
        slope,
        r2,
        points: points.len(),
    })
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
    /// Intervals in the span, idle ones included, and how many of them were idle.
    pub intervals: usize,
    pub idle_intervals: usize,
    /// Median and peak of the per-interval allocation rates (allocs/s), idle intervals as 0.
    pub median_rate: Option<f64>,
    pub peak_rate: Option<f64>,
    /// When (end of the interval, seconds) the peak was.
    pub peak_at: Option<f64>,
    /// Live bytes over the series points.
    pub trend: Option<Trend>,
    /// The site's frames, innermost first.
    pub stack: Vec<String>,
}

/// One interval of a site's activity (or idleness).
struct Interval {
    end: f64,
    secs: f64,
    allocs: u64,
    idle: bool,
}

/// The site's intervals in time order, idle ones included.
fn intervals(s: &Site, interval: f64) -> Vec<Interval> {
    let mut out = Vec::new();
    let mut prev: Option<(f64, Counters)> = None;
    for pt in &s.series {
        let t = pt.t.as_secs_f64();
        let (gap, before) = match prev {
            Some((pt_, c)) => (t - pt_, c),
            None => (t, Counters::default()),
        };
        let secs = if interval > 0.0 {
            gap.min(interval)
        } else {
            gap
        };
        if prev.is_some() && interval > 0.0 && gap > interval {
            let idle = ((gap / interval).round() as usize).saturating_sub(1);
            for k in 0..idle {
                out.push(Interval {
                    end: t - interval * (idle - k) as f64,
                    secs: interval,
                    allocs: 0,
                    idle: true,
                });
            }
        }
        out.push(Interval {
            end: t,
            secs,
            allocs: pt.counters.since(&before).allocs,
            idle: false,
        });
        prev = Some((t, pt.counters));
    }
    out
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The pattern of one site.
pub fn classify(p: &Profile, s: &Site, o: &Options) -> SitePattern {
    let c = s.counters;
    let interval = p.interval.as_secs_f64();
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

    let all = intervals(s, interval);
    // Intervals of zero length (a drain at t = 0) carry no rate.
    let timed: Vec<(&Interval, f64)> = all
        .iter()
        .filter(|i| i.secs > 0.0)
        .map(|i| (i, i.allocs as f64 / i.secs))
        .collect();
    let idle = all.iter().filter(|i| i.idle).count();
    let n_intervals = timed.len();
    let median_rate = median(&mut timed.iter().map(|x| x.1).collect::<Vec<_>>());
    // The earliest wins a tie.
    let peak = timed
        .iter()
        .fold(None::<(&Interval, f64)>, |best, &(i, r)| match best {
            Some((_, b)) if b >= r => best,
            _ => Some((i, r)),
        });
    let peak_rate = peak.map(|x| x.1);
    let is_quiet = |r: f64| peak_rate.is_some_and(|pk| r * BURST_FACTOR <= pk);
    let quiet = timed.iter().filter(|x| is_quiet(x.1)).count();
    // Spikes: intervals that are not quiet and hold enough allocations. A burst is activity
    // that comes back in spikes with quiet intervals between them (spike, quiet, spike), or one
    // spike well above the median with quiet intervals on both sides; a one-off start-up spike
    // followed by silence is not one, nor is a steady site whose partial first or last
    // interval looks quiet.
    let is_spike = |x: &(&Interval, f64)| !is_quiet(x.1) && x.0.allocs >= BURST_MIN_ALLOCS;
    let first_spike = timed.iter().position(is_spike);
    let last_spike = timed.iter().rposition(is_spike);
    let spikes_apart = first_spike
        .zip(last_spike)
        .is_some_and(|(a, b)| timed[a..b].iter().any(|x| is_quiet(x.1)));
    let peak_pos = peak.and_then(|(pk, _)| timed.iter().position(|x| std::ptr::eq(x.0, pk)));
    let lone_spike = peak_pos.is_some_and(|i| {
        median_rate.is_some_and(|m| peak_rate.is_some_and(|pr| pr >= BURST_FACTOR * m))
            && timed[..i].iter().any(|x| is_quiet(x.1))
            && timed[i + 1..].iter().any(|x| is_quiet(x.1))
    });
    let span = if s.series.is_empty() {
        p.duration.as_secs_f64()
    } else {
        all.iter().fold(0.0, |acc, i| acc + i.secs)
    };
    let series_allocs = s.series.last().map_or(0, |pt| pt.counters.allocs);
    let frequency = if span <= 0.0 {
        None
    } else if s.series.is_empty() {
        Some(c.allocs as f64 / span)
    } else {
        Some(series_allocs as f64 / span)
    };
    // "Sustained": the median interval rate, or the overall frequency without intervals.
    let sustained = median_rate.or(frequency);

    let live: Vec<(f64, f64)> = s
        .series
        .iter()
        .map(|pt| (pt.t.as_secs_f64(), pt.counters.live_bytes() as f64))
        .collect();
    // Without frees (alloc-only mode) "live" is everything ever allocated: no trend to see.
    let trend = fit(&live).filter(|_| p.mode.sees_frees());
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
        (Some((pk, pr)), Some(med))
            if n_intervals >= BURST_MIN_INTERVALS
                && pk.allocs >= BURST_MIN_ALLOCS
                && (spikes_apart || lone_spike) =>
        {
            Some((pk, med, pr))
        }
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
                "live bytes rise {}/s (R² {:.2} over {} points), {:.0}% of blocks freed",
                fmt_bytes(t.slope.max(0.0) as u64),
                t.r2,
                t.points,
                free_share * 100.0
            ),
        )
    } else if let Some((pk, med, pr)) = burst {
        (
            PatternClass::Burst,
            format!(
                "peak {}/s at {:.1}s is {}x the median {}/s; {quiet} of {n_intervals} intervals quiet",
                fmt_count_f(pr),
                pk.end,
                if med > 0.0 {
                    format!("{:.0}", pr / med)
                } else {
                    "∞".to_string()
                },
                fmt_count_f(med)
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
            ", idle {} of {} intervals",
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

    #[test]
    fn burst() {
        // 5000 allocations in one interval out of every four.
        let pts = [
            (1000, 5000, 5000),
            (5000, 10000, 10000),
            (9000, 15000, 15000),
        ];
        let p = run(&series_site(64, &pts, 100), 9000);
        assert_eq!(p.class, PatternClass::Burst, "{}", p.reason);
        assert_eq!((p.intervals, p.idle_intervals), (9, 6));
        assert_eq!(p.median_rate, Some(0.0));
        assert_eq!((p.peak_rate, p.peak_at), (Some(5000.0), Some(1.0)));
        assert_eq!(p.span, 9.0);
        // Sustained small and frequent does not win over the spikes.
        assert!(p.reason.contains("quiet"), "{}", p.reason);
    }

    #[test]
    fn burst_shapes() {
        let o = Options::default();
        let mut p = profile(1000, vec![]);
        p.interval = Duration::from_millis(200);
        // The phases workload: 2,000 blocks every 400 ms, drained every 200 ms.
        let pts = [(200, 2000, 2000), (600, 4000, 4000), (1000, 6000, 6000)];
        let x = classify(&p, &series_site(256, &pts, 100), &o);
        assert_eq!(x.class, PatternClass::Burst, "{}", x.reason);
        assert_eq!((x.intervals, x.idle_intervals), (5, 2));
        // One spike in a low steady stream.
        p.interval = Duration::from_secs(1);
        let cum = [10, 20, 5020, 5030, 5040];
        let pts: Vec<_> = cum
            .iter()
            .enumerate()
            .map(|(i, &a)| ((i as u64 + 1) * 1000, a, a))
            .collect();
        let x = classify(&p, &series_site(64, &pts, 100), &o);
        assert_eq!(x.class, PatternClass::Burst, "{}", x.reason);
        // Steady with a partial first interval (300 ms) and last (100 ms): not a burst.
        let pts = [
            (300, 300, 300),
            (1300, 1300, 1300),
            (2300, 2300, 2300),
            (3300, 3300, 3300),
            (3400, 3310, 3310),
        ];
        let x = classify(&p, &series_site(64, &pts, 100), &o);
        assert_eq!(x.class, PatternClass::SmallFrequent, "{}", x.reason);
        // A start-up spike then a trickle: not a burst.
        let cum = [5000, 5001, 5002, 5003];
        let pts: Vec<_> = cum
            .iter()
            .enumerate()
            .map(|(i, &a)| ((i as u64 + 1) * 1000, a, a))
            .collect();
        let x = classify(&p, &series_site(64, &pts, 100), &o);
        assert_ne!(x.class, PatternClass::Burst, "{}", x.reason);
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
    fn interval_lengths() {
        // Points 3 s apart with a 1 s interval: two idle intervals, then one active of 1 s.
        let s = series_site(8, &[(1000, 10, 0), (4000, 30, 0)], 0);
        let iv = intervals(&s, 1.0);
        assert_eq!(iv.len(), 4);
        assert!(iv[1].idle && iv[2].idle && !iv[3].idle);
        assert_eq!((iv[1].end, iv[2].end), (2.0, 3.0));
        assert_eq!((iv[3].secs, iv[3].allocs), (1.0, 20));
        // A partial final drain 0.2 s after the previous one.
        let s = series_site(8, &[(1000, 10, 0), (1200, 30, 0)], 0);
        let iv = intervals(&s, 1.0);
        assert_eq!(iv.len(), 2);
        assert!((iv[1].secs - 0.2).abs() < 1e-9);
        let _ = Duration::ZERO;
    }
}
