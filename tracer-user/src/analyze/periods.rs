//! A site's series read as periods of even growth (between two consecutive points), and the
//! bursts in them: runs of busy periods, so that where the drains fall relative to a burst
//! (inside it, splitting it in two) does not change what is found.
use crate::model::{Counters, Site};

/// burst: a period is quiet when its rate is at most the peak period rate divided by this; a
/// lone spike must also be this many times the median rate...
pub const BURST_FACTOR: f64 = 4.0;
/// ...a burst (consecutive periods not quiet) holds at least this many allocations (a site
/// allocating once every few drains is sparse, not bursty)...
pub const BURST_MIN_ALLOCS: u64 = 10;
/// ...and several bursts are busy at most this share of the time from the first one's start to
/// the last one's end (a steady site that stalled once is busy nearly all of it).
pub const BURST_MAX_DUTY: f64 = 0.6;
/// One period of a site's series: between two consecutive points, over which the drains saw
/// the counters grow evenly (an idle stretch is a period of its own, see
/// `drain::series::record`).
pub(super) struct Period {
    pub(super) start: f64,
    pub(super) end: f64,
    pub(super) allocs: u64,
}

impl Period {
    pub(super) fn secs(&self) -> f64 {
        self.end - self.start
    }

    /// Allocations per second, over at least one drain step: a period shorter than a step
    /// (the final partial drain) says no more than a step does about the rate.
    pub(super) fn rate(&self, step: f64) -> f64 {
        self.allocs as f64 / self.secs().max(step)
    }
}

/// The site's periods in time order. A series whose first point is not zero (a file from
/// before the zero start point) counts its first point from one drain step before it.
pub(super) fn periods(s: &Site, step: f64) -> Vec<Period> {
    let mut out = Vec::new();
    let mut prev: Option<(f64, Counters)> = None;
    for pt in &s.series {
        let t = pt.t.as_secs_f64();
        let (start, before) = match prev {
            Some(x) => x,
            None if pt.counters == Counters::default() => {
                prev = Some((t, pt.counters));
                continue;
            }
            None => ((t - step).max(0.0), Counters::default()),
        };
        out.push(Period {
            start,
            end: t,
            allocs: pt.counters.since(&before).allocs,
        });
        prev = Some((t, pt.counters));
    }
    out
}

/// The time-weighted median of `(value, weight)`: the value at half the total weight.
pub(super) fn weighted_median(v: &mut [(f64, f64)]) -> Option<f64> {
    let total: f64 = v.iter().map(|x| x.1).sum();
    if v.is_empty() || total <= 0.0 {
        return None;
    }
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut acc = 0.0;
    for &(x, w) in v.iter() {
        acc += w;
        if acc >= total / 2.0 {
            return Some(x);
        }
    }
    v.last().map(|x| x.0)
}

/// A run of consecutive periods that are not quiet: one burst, however the drains cut it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Episode {
    pub(super) start: f64,
    pub(super) end: f64,
    pub(super) allocs: u64,
}

/// What the burst test found.
pub(super) struct Bursts {
    /// The episodes with at least `BURST_MIN_ALLOCS` allocations.
    pub(super) episodes: Vec<Episode>,
    /// Share of the time from the first burst's start to the last one's end spent in
    /// episodes (busy), 0..=1.
    pub(super) duty: f64,
    /// A burst: several episodes with quiet between them and busy at most `BURST_MAX_DUTY` of
    /// the time; or one well above the median rate with quiet on both sides.
    pub(super) found: bool,
}

/// Groups the periods into episodes: consecutive periods not quiet (rate above the peak /
/// `BURST_FACTOR`) with allocations. A drain that falls inside a burst splits it into two
/// periods of one episode, so where the drains fall does not change the episodes.
pub(super) fn bursts(periods: &[Period], step: f64, peak: f64, median: Option<f64>) -> Bursts {
    let quiet = |p: &Period| p.allocs == 0 || p.rate(step) * BURST_FACTOR <= peak;
    let mut all: Vec<Episode> = Vec::new();
    let mut open = false;
    let mut quiet_before = Vec::new();
    for (i, p) in periods.iter().enumerate() {
        if quiet(p) {
            open = false;
            continue;
        }
        match all.last_mut() {
            Some(e) if open => {
                e.end = p.end;
                e.allocs += p.allocs;
            }
            _ => {
                all.push(Episode {
                    start: p.start,
                    end: p.end,
                    allocs: p.allocs,
                });
                quiet_before.push(i > 0);
            }
        }
        open = true;
    }
    let quiet_after: Vec<bool> = {
        let last_busy = periods.iter().rposition(|p| !quiet(p));
        (0..all.len())
            .map(|k| k + 1 < all.len() || last_busy.is_some_and(|i| i + 1 < periods.len()))
            .collect()
    };
    let big: Vec<usize> = (0..all.len())
        .filter(|&k| all[k].allocs >= BURST_MIN_ALLOCS)
        .collect();
    let episodes: Vec<Episode> = big.iter().map(|&k| all[k]).collect();
    let duty = match (episodes.first(), episodes.last()) {
        (Some(a), Some(b)) if b.end > a.start => {
            let busy: f64 = all
                .iter()
                .filter(|e| e.start >= a.start && e.end <= b.end)
                .map(|e| e.end - e.start)
                .sum();
            busy / (b.end - a.start)
        }
        _ => 1.0,
    };
    let periodic = episodes.len() >= 2 && duty <= BURST_MAX_DUTY;
    let lone = big.len() == 1 && {
        let k = big[0];
        let e = all[k];
        let high = median.is_some_and(|m| peak >= BURST_FACTOR * m);
        // Short against the run: a spike, not a phase.
        let span = periods.last().map_or(0.0, |p| p.end) - periods.first().map_or(0.0, |p| p.start);
        high && quiet_before[k] && quiet_after[k] && e.end - e.start <= BURST_MAX_DUTY * span
    };
    Bursts {
        episodes,
        duty,
        found: periodic || lone,
    }
}
