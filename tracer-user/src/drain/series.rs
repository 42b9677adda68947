//! A time series of cumulative counters bounded in length by merging adjacent points, never by
//! dropping the start: each process's samples and each site's series keep the whole run.
//!
//! The points are cumulative, so leaving a point out merges the two periods around it into one
//! (their sum over their joint length): nothing is lost but resolution. When the series is over
//! its bound, every point but the first and the newest quarter is thinned to a minimum spacing
//! that doubles until the series is back to three quarters of its bound: the older part of a
//! long run ends up evenly spaced at about run length / (3/4 of the bound), the newest quarter
//! at the drain resolution. Each thinning removes at least a quarter of the bound, so the cost
//! per point is constant.
use std::time::Duration;

use crate::model::{Counters, Sample, SitePoint};

/// The fewest points a bound may be: a first point, a tail and room to thin in between.
pub const MIN_POINTS: usize = 8;

/// A point of a series: a time since the start of the run.
pub trait Timed {
    fn t(&self) -> Duration;
}

impl Timed for SitePoint {
    fn t(&self) -> Duration {
        self.t
    }
}

impl Timed for Sample {
    fn t(&self) -> Duration {
        self.t
    }
}

/// A bounded series (see the module's comment).
#[derive(Clone, Debug)]
pub struct Series<T> {
    points: Vec<T>,
    cap: usize,
    /// The spacing the thinned part was last brought to (zero: never thinned).
    step: Duration,
}

impl<T: Timed> Series<T> {
    /// A series of at most `cap` points (at least [`MIN_POINTS`]).
    pub fn new(cap: usize) -> Self {
        Series {
            points: Vec::new(),
            cap: cap.max(MIN_POINTS),
            step: Duration::ZERO,
        }
    }

    /// Appends `p`, the newest point, and merges older points if the series is over its bound.
    pub fn push(&mut self, p: T) {
        self.points.push(p);
        if self.points.len() > self.cap {
            self.thin();
        }
    }

    pub fn last(&self) -> Option<&T> {
        self.points.last()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.points.iter()
    }

    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, T> {
        self.points.iter_mut()
    }

    pub fn into_vec(self) -> Vec<T> {
        self.points
    }

    /// Leaves points out of all but the first and the newest quarter until at most three
    /// quarters of the bound are left.
    fn thin(&mut self) {
        let tail = self.cap / 4;
        let target = self.cap * 3 / 4;
        loop {
            if !self.step.is_zero() {
                self.thin_to(self.step, self.points.len() - tail);
                if self.points.len() <= target {
                    return;
                }
            }
            // Coarser only when the spacing reached so far no longer fits the run.
            self.step = if self.step.is_zero() {
                // The finest spacing there is: the first thinning merges pairs of drains.
                let body = &self.points[..self.points.len() - tail];
                let gaps = body
                    .windows(2)
                    .map(|w| w[1].t().saturating_sub(w[0].t()))
                    .filter(|g| !g.is_zero());
                gaps.min().unwrap_or(Duration::from_millis(1)) * 2
            } else {
                self.step * 2
            };
        }
    }

    /// Keeps the first point, the points from `body_end` on, and in between each point at
    /// least `step` after the one kept before it.
    fn thin_to(&mut self, step: Duration, body_end: usize) {
        let mut kept_t = self.points[0].t();
        let mut i = 0;
        self.points.retain(|p| {
            let keep = i == 0 || i >= body_end || p.t().saturating_sub(kept_t) >= step;
            if keep && i < body_end {
                kept_t = p.t();
            }
            i += 1;
            keep
        });
    }
}

/// Adds `c`, a site's counters at the drain at `t`, to its series, the drain before having
/// been at `before`. What moved did so after `before`: if the series' last point is older, a
/// point at `before` with the last counters (zero for a new site) goes first, so that between
/// any two points the counters grew evenly as far as the drains can tell (an idle stretch is
/// a flat period of its own, not part of the next busy one).
pub fn record(pts: &mut Series<SitePoint>, before: Duration, t: Duration, c: Counters) {
    let last = pts.last().copied();
    if last.is_some_and(|p| p.counters == c) {
        return;
    }
    if last.is_none_or(|p| p.t < before) && before < t {
        pts.push(SitePoint {
            t: before,
            counters: last.map_or(Counters::default(), |p| p.counters),
        });
    }
    pts.push(SitePoint { t, counters: c });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(ms: u64, allocs: u64) -> SitePoint {
        SitePoint {
            t: Duration::from_millis(ms),
            counters: Counters {
                allocs,
                ..Counters::default()
            },
        }
    }

    /// A 10-hour run drained every 20 ms into 100 points: never more than 100, the first
    /// point kept, the last point the newest, and the whole run evenly covered (no gap over
    /// a few times run length / bound).
    #[test]
    fn a_long_run_stays_bounded_and_whole() {
        let mut s = Series::new(100);
        let drains = 10 * 3600 * 50u64;
        let mut most = 0;
        for k in 1..=drains {
            s.push(pt(k * 20, k));
            most = most.max(s.len());
        }
        assert!(most <= 100, "{most} points");
        let v = s.into_vec();
        assert_eq!(v[0].t, Duration::from_millis(20), "the start was dropped");
        assert_eq!(v.last().unwrap().counters.allocs, drains);
        let run = Duration::from_millis(drains * 20);
        let widest = v.windows(2).map(|w| w[1].t - w[0].t).max().unwrap();
        assert!(
            widest <= run / 20,
            "a gap of {widest:?} in a run of {run:?}"
        );
        // Older data coarser: the newest quarter is at the drain resolution.
        let n = v.len();
        assert!(v[n - 25..]
            .windows(2)
            .all(|w| w[1].t - w[0].t == Duration::from_millis(20)));
        // Cumulative counters survive the merge: still increasing, nothing invented.
        assert!(v
            .windows(2)
            .all(|w| w[1].counters.allocs > w[0].counters.allocs));
    }

    /// A one-second run under the bound keeps every drain.
    #[test]
    fn a_short_run_keeps_every_point() {
        let mut s = Series::new(1000);
        for k in 0..=50u64 {
            s.push(pt(k * 20, k));
        }
        assert_eq!(s.len(), 51);
        assert_eq!(s.iter().next().unwrap().t, Duration::ZERO);
    }

    /// Thinning a full series removes at least a quarter of its bound (constant cost per
    /// point), and points at one instant (a final drain right after a tick) do not stall it.
    #[test]
    fn thinning_frees_room_even_for_points_at_one_instant() {
        let mut s = Series::new(MIN_POINTS);
        for _ in 0..100 {
            s.push(pt(0, 1));
        }
        assert!(s.len() <= MIN_POINTS);
        let mut s = Series::new(40);
        for k in 1..=41u64 {
            s.push(pt(k, k));
        }
        assert!(s.len() <= 30, "{}", s.len());
        assert_eq!(s.iter().next().unwrap().t, Duration::from_millis(1));
    }
}
