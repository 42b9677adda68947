//! The leak analyzer: which sites' blocks are never (or almost never) freed while the site
//! keeps allocating, from three kinds of evidence that do not depend on how many drains the
//! run had: the share of the site's allocations never freed (its counters), when its surviving
//! blocks were born (their ages, read from the in-flight table at the end), and its series
//! (allocations rising while frees do not; the live bytes' trend), each named with a
//! confidence.
use serde::{Deserialize, Serialize};

use super::histogram::{bucket_range, ns_range_text};
use super::hotspots::site_name;
use super::trend::{fit_over_time, Trend};
use crate::model::{OlderBlocks, Profile, Site};
use crate::numfmt::{fmt_bytes, fmt_count, fmt_ns};

/// A leak needs at most this share of the site's allocations freed ("almost never")...
pub const MAX_FREE_SHARE: f64 = 0.1;
/// ...and, when the blocks were born throughout the run, at least this many live blocks...
pub const MIN_BLOCKS_THROUGHOUT: u64 = 10;
/// ...or, when they were born in one stretch (a cache filled once, or a one-off leak), this
/// many: fewer is as likely a table kept for the process's life.
pub const MIN_BLOCKS_ONE_STRETCH: u64 = 100;
/// Born "throughout the run": the surviving blocks' births span at least this share of it...
pub const THROUGHOUT_MIN_SPAN: f64 = 0.5;
/// ...or the series has at least this many steps where allocations rose with (almost) no
/// frees, spanning that share of the run.
pub const THROUGHOUT_MIN_STEPS: usize = 3;
/// A series step keeps allocating "without freeing" when its frees are at most this share of
/// its allocations.
pub const STEP_MAX_FREE_SHARE: f64 = 0.1;
/// The live bytes' trend counts as growth with at least this R² over at least
/// `THROUGHOUT_MIN_STEPS` points.
pub const GROWTH_MIN_R2: f64 = 0.8;
/// A weaker candidate (listed, no advice): at most this share freed, at least
/// `MIN_BLOCKS_THROUGHOUT` blocks live.
pub const WEAK_MAX_FREE_SHARE: f64 = 0.5;

/// How sure the analyzer is that a site leaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// Many blocks kept, but freed too often, or too few, to call it a leak: listed only.
    Low,
    /// Never (or almost never) freed, but allocated in one stretch: a leak, or a cache or
    /// table kept on purpose.
    Medium,
    /// Never (or almost never) freed while the site kept allocating all run long.
    High,
}

impl std::fmt::Display for Confidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
        })
    }
}

/// What the series says about a site's allocating and freeing over time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SeriesEvidence {
    /// Steps (from one point to the next, the first from zero at the start) where
    /// allocations rose...
    pub rising_steps: usize,
    /// ...and those of them where frees stayed below `STEP_MAX_FREE_SHARE` of them.
    pub unfreed_steps: usize,
    /// Seconds from the start of the first unfreed step to the end of the last.
    pub unfreed_span: f64,
    /// The live bytes' least-squares line over the points (bytes/s, R²).
    pub trend: Option<Trend>,
}

/// One site that keeps blocks, with the evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeakCandidate {
    pub pid: u32,
    pub stack_id: u64,
    /// The site's first frame (`[no stack]` without frames).
    pub site: String,
    pub confidence: Confidence,
    pub allocs: u64,
    pub frees: u64,
    /// Share (0..=1) of the site's allocations never freed.
    pub unfreed_share: f64,
    /// Blocks and bytes never freed: read from the in-flight table when `from_table` (with
    /// sampling, the sampled blocks: `sampled`), else the counters' difference.
    pub live_blocks: u64,
    pub live_bytes: u64,
    pub from_table: bool,
    pub sampled: bool,
    /// Ages of the live blocks at the end (ns), when read from the table.
    pub oldest_ns: Option<u64>,
    pub median_ns: Option<u64>,
    /// How long the live blocks took to be born (oldest's birth to youngest's), ns, and its
    /// share of the run.
    pub birth_span_ns: Option<u64>,
    pub birth_span_share: Option<f64>,
    pub series: SeriesEvidence,
    /// Whether the site kept allocating without freeing throughout the run (by the births'
    /// span or by the series).
    pub throughout: bool,
    /// `--older`: the live blocks older than it.
    pub older: Option<OlderBlocks>,
    /// The numbers behind the confidence, as the advice quotes them.
    pub evidence: String,
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// What a site's series says about its allocating and freeing.
pub fn series_evidence(s: &Site) -> SeriesEvidence {
    let mut e = SeriesEvidence::default();
    let (mut prev_t, mut prev) = (0.0, Default::default());
    let (mut first, mut last) = (None, 0.0);
    for p in &s.series {
        let t = p.t.as_secs_f64();
        let d = p.counters.since(&prev);
        if d.allocs > 0 {
            e.rising_steps += 1;
            if d.frees as f64 <= STEP_MAX_FREE_SHARE * d.allocs as f64 {
                e.unfreed_steps += 1;
                first.get_or_insert(prev_t);
                last = t;
            }
        }
        (prev_t, prev) = (t, p.counters);
    }
    e.unfreed_span = first.map_or(0.0, |f| last - f);
    let pts: Vec<(f64, f64)> = s
        .series
        .iter()
        .map(|p| (p.t.as_secs_f64(), p.counters.live_bytes() as f64))
        .collect();
    e.trend = (pts.len() >= THROUGHOUT_MIN_STEPS)
        .then(|| fit_over_time(&pts))
        .flatten();
    e
}

/// The candidate a site is, if any, in a run of `run_s` seconds; `sampled` when its blocks
/// are the sampled ones.
pub fn classify(s: &Site, run_s: f64, sampled: bool) -> Option<LeakCandidate> {
    let c = &s.counters;
    if c.allocs == 0 {
        return None;
    }
    let (live_blocks, live_bytes) = match &s.live {
        Some(l) => (l.blocks, l.bytes),
        None => (c.live_objects(), c.live_bytes()),
    };
    if live_blocks == 0 {
        return None;
    }
    let free_share = share(c.frees, c.allocs);
    let series = series_evidence(s);
    let birth_span_ns = s.live.as_ref().map(|l| l.birth_span_ns());
    let birth_span_share = birth_span_ns
        .filter(|_| run_s > 0.0)
        .map(|ns| (ns as f64 / 1e9 / run_s).min(1.0));
    let by_births = birth_span_share.is_some_and(|x| x >= THROUGHOUT_MIN_SPAN);
    let by_series = series.unfreed_steps >= THROUGHOUT_MIN_STEPS
        && series.unfreed_steps * 5 >= series.rising_steps * 4
        && run_s > 0.0
        && series.unfreed_span / run_s >= THROUGHOUT_MIN_SPAN;
    let growing = series
        .trend
        .is_some_and(|t| t.slope > 0.0 && t.r2 >= GROWTH_MIN_R2);
    let throughout = by_births || by_series;
    let almost_never = free_share <= MAX_FREE_SHARE;
    let confidence = if almost_never
        && ((throughout && live_blocks >= MIN_BLOCKS_THROUGHOUT) || (growing && by_series))
    {
        Confidence::High
    } else if almost_never && live_blocks >= MIN_BLOCKS_ONE_STRETCH {
        Confidence::Medium
    } else if free_share <= WEAK_MAX_FREE_SHARE && live_blocks >= MIN_BLOCKS_THROUGHOUT {
        Confidence::Low
    } else {
        return None;
    };
    let mut cand = LeakCandidate {
        pid: s.pid,
        stack_id: s.stack_id,
        site: site_name(s),
        confidence,
        allocs: c.allocs,
        frees: c.frees,
        unfreed_share: 1.0 - free_share,
        live_blocks,
        live_bytes,
        from_table: s.live.is_some(),
        sampled: sampled && s.live.is_some(),
        oldest_ns: s.live.as_ref().map(|l| l.oldest_ns),
        median_ns: s.live.as_ref().map(|l| l.median_ns),
        birth_span_ns,
        birth_span_share,
        series,
        throughout,
        older: s.live.as_ref().and_then(|l| l.older),
        evidence: String::new(),
    };
    cand.evidence = evidence(&cand, run_s);
    Some(cand)
}

/// "85.0k blocks (206.0 MiB) never freed, 0 of 85.0k allocations freed (0.0%), allocated
/// throughout the run (births over 880.0 ms of 0.90 s), oldest 880.0 ms, median 440.0 ms".
fn evidence(c: &LeakCandidate, run_s: f64) -> String {
    let mut parts = vec![format!(
        "{} blocks ({}) never freed{}, {} of {} allocations freed ({:.1}%)",
        fmt_count(c.live_blocks),
        fmt_bytes(c.live_bytes),
        if c.sampled { " (sampled blocks)" } else { "" },
        fmt_count(c.frees),
        fmt_count(c.allocs),
        (1.0 - c.unfreed_share) * 100.0,
    )];
    let run = format!("{run_s:.2} s");
    match (c.birth_span_ns, c.throughout) {
        (Some(ns), true) => parts.push(format!(
            "allocated throughout the run (births over {} of {run})",
            fmt_ns(ns)
        )),
        (Some(ns), false) => parts.push(format!(
            "allocated in one stretch (births within {} of a {run} run)",
            fmt_ns(ns)
        )),
        (None, true) => parts.push(format!(
            "allocated throughout the run ({} of {} steps without frees, over {:.2} s of {run})",
            c.series.unfreed_steps, c.series.rising_steps, c.series.unfreed_span
        )),
        (None, false) => {}
    }
    if let (Some(o), Some(m)) = (c.oldest_ns, c.median_ns) {
        parts.push(format!("oldest {}, median {}", fmt_ns(o), fmt_ns(m)));
    }
    if let Some(t) = c
        .series
        .trend
        .filter(|t| t.slope > 0.0 && t.r2 >= GROWTH_MIN_R2)
    {
        parts.push(format!(
            "live bytes grow {}/s (R² {:.2} over {} points)",
            fmt_bytes(t.slope as u64),
            t.r2,
            t.points
        ));
    }
    if let Some(o) = c.older {
        parts.push(format!(
            "{} blocks ({}) older than {}",
            fmt_count(o.blocks),
            fmt_bytes(o.bytes),
            fmt_ns(u64::try_from(o.than.as_nanos()).unwrap_or(u64::MAX))
        ));
    }
    format!("{}; confidence {}", parts.join(", "), c.confidence)
}

/// `128 ms–256 ms: 10.2k, 256 ms–512 ms: 20.1k`: the non-empty buckets of a log2 age
/// histogram.
pub fn age_buckets_text(hist: &[u64]) -> String {
    hist.iter()
        .enumerate()
        .filter(|(_, &n)| n > 0)
        .map(|(i, &n)| format!("{}: {}", ns_range_text(bucket_range(i)), fmt_count(n)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The sites with blocks never freed (read from the in-flight table), most bytes first; with
/// `older`, by the bytes of the blocks older than it.
pub fn live_sites(p: &Profile, older: Option<std::time::Duration>) -> Vec<&Site> {
    let weight = |s: &Site| {
        s.live.as_ref().map_or((0, 0), |l| match (older, l.older) {
            (Some(_), Some(o)) => (o.bytes, o.blocks),
            _ => (l.bytes, l.blocks),
        })
    };
    let mut out: Vec<&Site> = p
        .sites
        .iter()
        .filter(|s| s.live.as_ref().is_some_and(|l| l.blocks > 0))
        .collect();
    out.sort_by(|a, b| {
        weight(b)
            .cmp(&weight(a))
            .then(a.pid.cmp(&b.pid))
            .then(a.stack_id.cmp(&b.stack_id))
    });
    out
}

/// Every candidate of `p`, most confident first, then most bytes kept. Empty in alloc-only
/// mode, which does not see frees.
pub fn analyze(p: &Profile) -> Vec<LeakCandidate> {
    if !p.mode.sees_frees() {
        return Vec::new();
    }
    let run_s = p.duration.as_secs_f64();
    let mut out: Vec<LeakCandidate> = p
        .sites_by_bytes()
        .into_iter()
        .filter_map(|s| classify(s, run_s, p.sample_bytes.is_some()))
        .collect();
    out.sort_by(|a, b| {
        b.confidence
            .cmp(&a.confidence)
            .then(b.live_bytes.cmp(&a.live_bytes))
    });
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::LiveBlocks;
    use crate::testkit::{profile, series_site};

    const MS: u64 = 1_000_000;

    /// `series_site` with its live blocks read at `at_ms`: `n` blocks of `size` born from
    /// `first_ms` to `last_ms` into the run.
    fn with_live(mut s: Site, at_ms: u64, n: u64, size: u64, first_ms: u64, last_ms: u64) -> Site {
        s.live = Some(LiveBlocks {
            at: Duration::from_millis(at_ms),
            blocks: n,
            bytes: n * size,
            age_hist: vec![],
            oldest_ns: (at_ms - first_ms) * MS,
            median_ns: (at_ms - (first_ms + last_ms) / 2) * MS,
            youngest_ns: (at_ms - last_ms) * MS,
            older: None,
        });
        s
    }

    #[test]
    fn a_sub_second_leak_with_one_point_is_high() {
        // The case: 85k blocks never freed in 0.9 s; one drain, at the end.
        let s = series_site(2480, &[(900, 85_000, 0)], 0);
        let s = with_live(s, 900, 85_000, 2480, 10, 895);
        let c = classify(&s, 0.9, false).unwrap();
        assert_eq!(c.confidence, Confidence::High, "{}", c.evidence);
        assert!(c.throughout);
        assert_eq!((c.live_blocks, c.live_bytes), (85_000, 85_000 * 2480));
        assert!(
            c.evidence.starts_with(
                "85.0k blocks (201.0 MiB) never freed, 0 of 85.0k allocations freed (0.0%), \
                 allocated throughout the run (births over 885.0 ms of 0.90 s), oldest 890.0 ms"
            ),
            "{}",
            c.evidence
        );
    }

    #[test]
    fn a_ring_buffer_is_no_candidate() {
        // 100k allocations, all but the ring's 64 freed; its blocks are young.
        let pts: Vec<_> = (1..=9)
            .map(|i| (i * 100, i * 11_000, i * 11_000 - 64))
            .collect();
        let s = with_live(series_site(512, &pts, 1000), 900, 64, 512, 899, 900);
        assert_eq!(classify(&s, 0.9, false), None);
        // Without the table either.
        let s = series_site(512, &pts, 1000);
        assert_eq!(classify(&s, 0.9, false), None);
    }

    #[test]
    fn a_short_lived_site_is_no_candidate() {
        let s = with_live(
            series_site(64, &[(500, 1000, 1000)], 10),
            900,
            0,
            64,
            900,
            900,
        );
        assert_eq!(classify(&s, 0.9, false), None);
    }

    #[test]
    fn blocks_allocated_in_one_go_and_kept_are_medium() {
        // The demo's cache: 500 blocks in a few µs near the end, never freed.
        let s = with_live(
            series_site(128, &[(1500, 500, 0)], 0),
            1500,
            500,
            128,
            1400,
            1400,
        );
        let c = classify(&s, 1.5, false).unwrap();
        assert_eq!(c.confidence, Confidence::Medium, "{}", c.evidence);
        assert!(!c.throughout);
        assert!(
            c.evidence.contains("allocated in one stretch"),
            "{}",
            c.evidence
        );
        // A handful kept for the process's life: no advice-worthy candidate.
        let s = with_live(series_site(128, &[(1500, 5, 0)], 0), 1500, 5, 128, 10, 10);
        assert_eq!(classify(&s, 1.5, false), None);
    }

    #[test]
    fn a_slow_leak_seen_by_the_series_alone_is_high() {
        // One 4 KiB block per 200 ms for 6 s, from a file without the table's ages.
        let pts: Vec<_> = (1..=30).map(|i| (i * 200, i, 0)).collect();
        let s = series_site(4096, &pts, 0);
        let c = classify(&s, 6.0, false).unwrap();
        assert_eq!(c.confidence, Confidence::High, "{}", c.evidence);
        assert_eq!((c.series.rising_steps, c.series.unfreed_steps), (30, 30));
        assert!(c.series.trend.unwrap().r2 > 0.99);
        assert!(
            c.evidence.contains("30 of 30 steps without frees"),
            "{}",
            c.evidence
        );
        assert!(
            c.evidence.contains("R² 1.00 over 30 points"),
            "{}",
            c.evidence
        );
    }

    #[test]
    fn freed_half_the_time_is_low() {
        let pts: Vec<_> = (1..=5).map(|i| (i * 200, i * 100, i * 40)).collect();
        let s = with_live(series_site(64, &pts, 1000), 1000, 300, 64, 0, 1000);
        let c = classify(&s, 1.0, false).unwrap();
        assert_eq!(c.confidence, Confidence::Low);
    }

    #[test]
    fn candidates_are_ordered_and_alloc_only_has_none() {
        let leak = with_live(series_site(64, &[(900, 1000, 0)], 0), 900, 1000, 64, 0, 890);
        let mut cache = with_live(series_site(64, &[(900, 2000, 0)], 0), 900, 2000, 64, 5, 5);
        cache.stack_id = 2;
        let mut p = profile(900, vec![]);
        p.sites = vec![cache, leak];
        let a = analyze(&p);
        let conf: Vec<_> = a.iter().map(|c| c.confidence).collect();
        assert_eq!(conf, [Confidence::High, Confidence::Medium]);
        p.mode = crate::model::TraceMode::AllocOnly;
        assert!(analyze(&p).is_empty());
    }
}
