//! The allocation-rate tracker (the guide's `AllocationTracker`): per process and overall, one
//! point per drained sample (a drain every `--resolution`, not every print interval) with the
//! cumulative totals, the live set and the rates over the
//! preceding period; and a summary (averages, peaks and when they happened, live heap at the
//! end and its high-water mark).
//!
//! The samples are bounded by merging adjacent ones (the older part of a long run coarser,
//! its start kept); totals come from the process counters, so a long run loses resolution but
//! never totals.
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{Counters, Profile, Sample};

/// A peak value and when (seconds since the start) it was reached: the end of the period.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Peak {
    pub value: f64,
    pub at: f64,
}

/// The state at one sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RatePoint {
    /// Seconds since the start.
    pub t: f64,
    pub allocs: u64,
    pub bytes: u64,
    pub frees: u64,
    pub freed_bytes: u64,
    pub live_objects: u64,
    pub live_bytes: u64,
    /// Bytes allocated per second over the period ending here; `None` when no period precedes
    /// this point (the oldest kept sample of a long run) or the period has zero length.
    pub alloc_rate: Option<f64>,
    /// Allocations per second over the same period.
    pub object_rate: Option<f64>,
}

/// Totals, averages and peaks of one process or of everything.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateSummary {
    /// Seconds traced.
    pub duration: f64,
    pub samples: usize,
    pub totals: Counters,
    /// Bytes per second over the whole run; `None` for a zero-length run.
    pub avg_alloc_rate: Option<f64>,
    /// Allocations per second over the whole run; `None` for a zero-length run.
    pub avg_object_rate: Option<f64>,
    /// The busiest period by bytes. Periods shorter than half a drain step (the final drain's
    /// partial period) are ignored unless nothing else is there; the earliest wins a tie.
    pub peak_alloc_rate: Option<Peak>,
    pub peak_object_rate: Option<Peak>,
    pub live_bytes_end: u64,
    pub live_objects_end: u64,
    /// The live-bytes high-water mark over the samples and the end state.
    pub peak_live_bytes: Option<Peak>,
}

/// One process's series and summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessRate {
    pub pid: u32,
    pub comm: String,
    pub summary: RateSummary,
    pub series: Vec<RatePoint>,
}

/// The rate analyzer's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateReport {
    pub overall: RateSummary,
    pub series: Vec<RatePoint>,
    /// Busiest (bytes) first.
    pub processes: Vec<ProcessRate>,
}

/// One sample as one process (or everything) saw it.
struct Step {
    t: Duration,
    cum: Counters,
    /// The period ending at this sample: its length in seconds and what happened in it.
    period: Option<(f64, Counters)>,
}

/// The steps of one process (`Some(pid)`: the samples it appears in) or of everything. The
/// first sample also counts from t = 0 when it is the first drain of the run (taken within two
/// drain steps of the start; older files' bounded samples may have dropped it). Deltas are
/// summed per process, so a process retired from later samples does not make a period look
/// negative.
fn steps(p: &Profile, pid: Option<u32>) -> Vec<Step> {
    let Some(first) = p.samples.first() else {
        return Vec::new();
    };
    let zero_sample = Sample::default();
    let zero = Counters::default();
    let step = p.drain_step();
    let from_start = step.is_zero() || first.t < step * 2;
    let mut out = Vec::new();
    for (i, s) in p.samples.iter().enumerate() {
        let prev = match i {
            0 if from_start => Some(&zero_sample),
            0 => None,
            _ => Some(&p.samples[i - 1]),
        };
        let secs = |a: &Sample| s.t.saturating_sub(a.t).as_secs_f64();
        let step = match pid {
            None => Step {
                t: s.t,
                cum: s.total(),
                period: prev.map(|a| {
                    let mut d = Counters::default();
                    for (pid, c) in &s.processes {
                        d.add(&c.since(a.processes.get(pid).unwrap_or(&zero)));
                    }
                    (secs(a), d)
                }),
            },
            Some(pid) => {
                let Some(c) = s.processes.get(&pid) else {
                    continue;
                };
                Step {
                    t: s.t,
                    cum: *c,
                    period: prev
                        .map(|a| (secs(a), c.since(a.processes.get(&pid).unwrap_or(&zero)))),
                }
            }
        };
        out.push(step);
    }
    out
}

fn per_sec(n: u64, secs: f64) -> Option<f64> {
    (secs > 0.0).then(|| n as f64 / secs)
}

fn point(s: &Step) -> RatePoint {
    let rate = |get: fn(&Counters) -> u64| s.period.and_then(|(secs, d)| per_sec(get(&d), secs));
    RatePoint {
        t: s.t.as_secs_f64(),
        allocs: s.cum.allocs,
        bytes: s.cum.bytes,
        frees: s.cum.frees,
        freed_bytes: s.cum.freed_bytes,
        live_objects: s.cum.live_objects(),
        live_bytes: s.cum.live_bytes(),
        alloc_rate: rate(|c| c.bytes),
        object_rate: rate(|c| c.allocs),
    }
}

fn peak_rate(steps: &[Step], interval: Duration, get: fn(&Counters) -> u64) -> Option<Peak> {
    let half = interval.as_secs_f64() / 2.0;
    let periods: Vec<(f64, Counters, Duration)> = steps
        .iter()
        .filter_map(|s| s.period.map(|(secs, d)| (secs, d, s.t)))
        .filter(|(secs, ..)| *secs > 0.0)
        .collect();
    let full = periods.iter().any(|(secs, ..)| *secs >= half);
    periods
        .iter()
        .filter(|(secs, ..)| !full || *secs >= half)
        .fold(None, |best: Option<Peak>, (secs, d, t)| {
            let r = get(d) as f64 / secs;
            match best {
                Some(b) if b.value >= r => best,
                _ => Some(Peak {
                    value: r,
                    at: t.as_secs_f64(),
                }),
            }
        })
}

fn summary(p: &Profile, steps: &[Step], totals: Counters) -> RateSummary {
    let dur = p.duration.as_secs_f64();
    // The high-water mark over the samples (earliest wins a tie), or the end state if higher.
    let peak_live = steps
        .iter()
        .fold(None, |best: Option<(u64, Duration)>, s| {
            let b = s.cum.live_bytes();
            match best {
                Some((x, _)) if x >= b => best,
                _ => Some((b, s.t)),
            }
        })
        .map(|(b, t)| {
            let (b, t) = if totals.live_bytes() > b {
                (totals.live_bytes(), p.duration)
            } else {
                (b, t)
            };
            Peak {
                value: b as f64,
                at: t.as_secs_f64(),
            }
        });
    RateSummary {
        duration: dur,
        samples: steps.len(),
        totals,
        avg_alloc_rate: per_sec(totals.bytes, dur),
        avg_object_rate: per_sec(totals.allocs, dur),
        peak_alloc_rate: peak_rate(steps, p.drain_step(), |c| c.bytes),
        peak_object_rate: peak_rate(steps, p.drain_step(), |c| c.allocs),
        live_bytes_end: totals.live_bytes(),
        live_objects_end: totals.live_objects(),
        peak_live_bytes: peak_live,
    }
}

/// The rate analyzer over a whole profile.
pub fn analyze(p: &Profile) -> RateReport {
    let all = steps(p, None);
    let mut processes: Vec<ProcessRate> = p
        .processes
        .iter()
        .map(|x| {
            let st = steps(p, Some(x.pid));
            ProcessRate {
                pid: x.pid,
                comm: x.comm.clone(),
                summary: summary(p, &st, x.counters),
                series: st.iter().map(point).collect(),
            }
        })
        .collect();
    processes.sort_by(|a, b| {
        b.summary
            .totals
            .bytes
            .cmp(&a.summary.totals.bytes)
            .then(a.pid.cmp(&b.pid))
    });
    let mut r = RateReport {
        overall: summary(p, &all, p.total()),
        series: all.iter().map(point).collect(),
        processes,
    };
    if !p.mode.sees_frees() {
        // Without frees every byte would look live: say nothing rather than that.
        let blank = |s: &mut RateSummary, pts: &mut [RatePoint]| {
            (s.live_bytes_end, s.live_objects_end, s.peak_live_bytes) = (0, 0, None);
            for pt in pts {
                (pt.live_bytes, pt.live_objects) = (0, 0);
            }
        };
        blank(&mut r.overall, &mut r.series);
        for x in &mut r.processes {
            blank(&mut x.summary, &mut x.series);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Process;
    use crate::testkit::{c, profile};

    fn proc_(pid: u32, counters: Counters) -> Process {
        Process {
            pid,
            comm: format!("p{pid}"),
            counters,
            unknown_frees: 0,
            unseen: None,
            allocators: Vec::new(),
            go: None,
        }
    }

    #[test]
    fn alloc_only_reports_no_live_heap() {
        let mut p = profile(
            1000,
            vec![
                (500, vec![(7, c(10, 1000, 0, 0))]),
                (1000, vec![(7, c(20, 2000, 0, 0))]),
            ],
        );
        p.mode = crate::model::TraceMode::AllocOnly;
        let r = analyze(&p);
        assert_eq!(
            (r.overall.live_bytes_end, r.overall.peak_live_bytes),
            (0, None)
        );
        assert!(r.series.iter().all(|pt| pt.live_bytes == 0 && pt.bytes > 0));
    }

    #[test]
    fn empty_profile() {
        let r = analyze(&profile(0, vec![]));
        assert_eq!(r.series, vec![]);
        assert!(r.processes.is_empty());
        let o = &r.overall;
        assert_eq!(
            (o.samples, o.avg_alloc_rate, o.peak_alloc_rate),
            (0, None, None)
        );
        assert_eq!((o.peak_live_bytes, o.live_bytes_end), (None, 0));
    }

    #[test]
    fn series_rates_and_peaks() {
        let end = c(30, 3000, 10, 1000);
        let mut p = profile(
            3000,
            vec![
                (1000, vec![(1, c(10, 1000, 0, 0))]),
                (2000, vec![(1, c(25, 2500, 0, 0))]),
                (3000, vec![(1, end)]),
            ],
        );
        p.processes = vec![proc_(1, end)];
        let r = analyze(&p);
        let rates: Vec<_> = r.series.iter().map(|x| x.alloc_rate).collect();
        assert_eq!(rates, vec![Some(1000.0), Some(1500.0), Some(500.0)]);
        assert_eq!(r.series[1].live_bytes, 2500);
        assert_eq!(r.series[2].live_objects, 20);
        let o = &r.overall;
        assert_eq!(o.avg_alloc_rate, Some(1000.0));
        assert_eq!(o.avg_object_rate, Some(10.0));
        assert_eq!(
            o.peak_alloc_rate,
            Some(Peak {
                value: 1500.0,
                at: 2.0
            })
        );
        assert_eq!(
            o.peak_live_bytes,
            Some(Peak {
                value: 2500.0,
                at: 2.0
            })
        );
        assert_eq!((o.live_bytes_end, o.live_objects_end), (2000, 20));
        assert_eq!(r.processes.len(), 1);
        assert_eq!(r.processes[0].series, r.series);
        assert_eq!(r.processes[0].summary, *o);
    }

    #[test]
    fn one_sample_and_zero_duration() {
        // One sample long after the start: no preceding period, so no rates and no peak.
        let mut p = profile(5000, vec![(5000, vec![(1, c(5, 50, 0, 0))])]);
        p.processes = vec![proc_(1, c(5, 50, 0, 0))];
        let r = analyze(&p);
        assert_eq!(r.series[0].alloc_rate, None);
        assert_eq!(r.overall.peak_alloc_rate, None);
        assert_eq!(r.overall.avg_alloc_rate, Some(10.0));
        // Zero duration, a sample at t = 0: no rate at all, no division by zero.
        let mut p = profile(0, vec![(0, vec![(1, c(5, 50, 0, 0))])]);
        p.processes = vec![proc_(1, c(5, 50, 0, 0))];
        let r = analyze(&p);
        assert_eq!(r.series[0].alloc_rate, None);
        assert_eq!(r.overall.avg_alloc_rate, None);
        assert_eq!(r.overall.peak_object_rate, None);
        assert_eq!(r.overall.peak_live_bytes.unwrap().value, 50.0);
    }

    #[test]
    fn counters_that_do_not_move() {
        let same = c(4, 400, 4, 400);
        let mut p = profile(2000, vec![(1000, vec![(1, same)]), (2000, vec![(1, same)])]);
        p.processes = vec![proc_(1, same)];
        let r = analyze(&p);
        assert_eq!(r.series[1].alloc_rate, Some(0.0));
        assert_eq!(r.overall.peak_alloc_rate.unwrap().at, 1.0);
        assert_eq!(r.overall.peak_live_bytes.unwrap().value, 0.0);
    }

    #[test]
    fn per_process_and_partial_final_period() {
        let a = c(10, 100, 0, 0);
        let b = c(100, 10_000, 0, 0);
        let mut p = profile(
            2100,
            vec![
                (1000, vec![(1, a)]),
                (2000, vec![(1, a), (2, c(50, 5000, 0, 0))]),
                // Process 1 retired: the period must not look negative.
                (2100, vec![(2, b)]),
            ],
        );
        p.processes = vec![proc_(1, a), proc_(2, b)];
        let r = analyze(&p);
        assert_eq!(r.processes[0].pid, 2);
        assert_eq!(r.processes[0].series.len(), 2);
        // Process 2 first appeared at 2 s: its allocations count in the period 1 s..2 s.
        assert_eq!(r.processes[0].series[0].alloc_rate, Some(5000.0));
        // The 0.1 s final period (5000 B/0.1 s) is ignored for the peak.
        let peak = r.processes[0].summary.peak_alloc_rate.unwrap();
        assert_eq!((peak.value, peak.at), (5000.0, 2.0));
        assert!((r.series[2].alloc_rate.unwrap() - 50_000.0).abs() < 1e-6);
        assert_eq!(r.overall.totals, {
            let mut t = a;
            t.add(&b);
            t
        });
    }
}
