//! The guide's optimization strategies, each only where a site's numbers support it, with the
//! numbers that triggered it.
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::histogram::ns_range_text;
use super::leaks::{Confidence, LeakCandidate};
use super::lifetimes::{Lifetimes, SiteLifetimes};
use super::patterns::{PatternClass, SitePattern};
use super::Options;
use crate::numfmt::{fmt_byte_range, fmt_bytes, fmt_count, fmt_count_f, fmt_ns};

/// pool: sizes span at most this many doubling buckets ("one size class")...
pub const POOL_MAX_SIZE_BUCKETS: usize = 2;
/// ...and at least this share of the freed blocks is short-lived.
pub const POOL_MIN_SHORT_SHARE: f64 = 0.5;
/// growth chain: at least this many allocations...
pub const GROWTH_CHAIN_MIN_ALLOCS: u64 = 100;
/// ...sizes spanning at least this many doubling buckets...
pub const GROWTH_CHAIN_MIN_SIZE_BUCKETS: usize = 4;
/// ...and at least this share of the blocks freed (a chain frees each step).
pub const GROWTH_CHAIN_MIN_FREE_SHARE: f64 = 0.5;
/// large-block churn: at least this many large allocations...
pub const CHURN_MIN_ALLOCS: u64 = 3;
/// ...with at least this share freed (frees ≈ allocs).
pub const CHURN_MIN_FREE_SHARE: f64 = 0.9;

/// Which strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdviceKind {
    /// Reuse or pool the objects.
    #[serde(rename = "pool")]
    Pool,
    /// Reserve the final size up front instead of growing (a growth-chain suspect).
    #[serde(rename = "presize")]
    PreSize,
    /// Keep and reuse large buffers instead of allocating and freeing them repeatedly.
    #[serde(rename = "large_churn")]
    LargeBlockChurn,
    /// Blocks never (or almost never) freed while the site keeps allocating (`leaks`).
    #[serde(rename = "leak")]
    LeakSuspect,
}

impl std::fmt::Display for AdviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AdviceKind::Pool => "pool",
            AdviceKind::PreSize => "pre-size",
            AdviceKind::LargeBlockChurn => "large-block churn",
            AdviceKind::LeakSuspect => "leak suspect",
        })
    }
}

/// One suggestion for one site.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Advice {
    pub kind: AdviceKind,
    pub pid: u32,
    pub stack_id: u64,
    pub site: String,
    /// The numbers that triggered it.
    pub evidence: String,
    pub suggestion: String,
    /// How sure the analyzer is (leak advice: `leaks::Confidence`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<Confidence>,
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Advice for one site's pattern, in the order pool, pre-size, large-block churn (leak
/// advice comes from `leak_advice`).
pub fn for_site(s: &SitePattern, lifetimes: Option<&Lifetimes>, o: &Options) -> Vec<Advice> {
    let mut out = Vec::new();
    let c = &s.counters;
    let free_share = share(c.frees, c.allocs);
    let mut push = |kind, evidence: String, suggestion: &str| {
        out.push(Advice {
            kind,
            pid: s.pid,
            stack_id: s.stack_id,
            site: s.site.clone(),
            evidence,
            suggestion: suggestion.to_string(),
            confidence: None,
        })
    };
    let sizes = s
        .size_range
        .map_or_else(String::new, |r| fmt_byte_range(r.lo, r.hi));
    let freq = s.frequency.unwrap_or(0.0);

    if let Some(l) = lifetimes {
        let frequent = s.class == PatternClass::SmallFrequent || freq > o.small_min_rate;
        if frequent
            && s.class != PatternClass::Growing
            && s.size_buckets <= POOL_MAX_SIZE_BUCKETS
            && l.short_lived_share >= POOL_MIN_SHORT_SHARE
        {
            push(
                AdviceKind::Pool,
                format!(
                    "{} allocations at {}/s, sizes {sizes} ({} size class{}), {:.0}% of freed blocks lived < {}",
                    fmt_count(c.allocs),
                    fmt_count_f(freq),
                    s.size_buckets,
                    if s.size_buckets == 1 { "" } else { "es" },
                    l.short_lived_share * 100.0,
                    fmt_ns(l.short_lived_below_ns),
                ),
                "reuse these objects (a free list, an object pool, or a buffer kept across calls) instead of allocating each time",
            );
        }
        let short = u64::try_from(o.short_lived.as_nanos()).unwrap_or(u64::MAX);
        if c.allocs >= GROWTH_CHAIN_MIN_ALLOCS
            && s.size_buckets >= GROWTH_CHAIN_MIN_SIZE_BUCKETS
            && free_share >= GROWTH_CHAIN_MIN_FREE_SHARE
            && l.median_ns.hi < short
        {
            push(
                AdviceKind::PreSize,
                format!(
                    "growth chain suspect: {} allocations whose sizes span {} doubling buckets ({sizes}), median lifetime {} (< {})",
                    fmt_count(c.allocs),
                    s.size_buckets,
                    ns_range_text(l.median_ns),
                    fmt_ns(short),
                ),
                "if this is a buffer grown step by step (realloc, Vec/String push), reserve its final size up front",
            );
        }
    }
    if let Some(t) = s.typical_size.filter(|t| t.lo >= o.large_min_size) {
        if c.allocs >= CHURN_MIN_ALLOCS && free_share >= CHURN_MIN_FREE_SHARE {
            push(
                AdviceKind::LargeBlockChurn,
                format!(
                    "{} blocks of typically {}–{} allocated and {:.0}% freed again{}",
                    fmt_count(c.allocs),
                    fmt_bytes(t.lo),
                    fmt_bytes(t.hi),
                    free_share * 100.0,
                    s.frequency
                        .map(|f| format!(", {}/s", fmt_count_f(f)))
                        .unwrap_or_default(),
                ),
                "keep one large buffer and reuse it (or reuse through a pool) rather than allocating and freeing it repeatedly",
            );
        }
    }
    out
}

/// Leak advice for a candidate the analyzer is at least fairly sure of (`Confidence::Medium`:
/// never freed, allocated in one stretch; `High`: never freed while allocating all run long).
pub fn leak_advice(c: &LeakCandidate) -> Option<Advice> {
    let suggestion = match c.confidence {
        Confidence::High => {
            "these blocks are never freed while the site keeps allocating: find who owns them and free them when done (or bound the structure that keeps them)"
        }
        Confidence::Medium => {
            "these blocks were never freed: if they are not a cache or table meant to live as long as the process, find who owns them and free them when done"
        }
        Confidence::Low => return None,
    };
    Some(Advice {
        kind: AdviceKind::LeakSuspect,
        pid: c.pid,
        stack_id: c.stack_id,
        site: c.site.clone(),
        evidence: c.evidence.clone(),
        suggestion: suggestion.to_string(),
        confidence: Some(c.confidence),
    })
}

/// Advice for every site, in the patterns' order (biggest first), a site's leak advice last.
pub fn analyze(
    patterns: &[SitePattern],
    lifetimes: &[SiteLifetimes],
    leaks: &[LeakCandidate],
    o: &Options,
) -> Vec<Advice> {
    let by_site: BTreeMap<(u32, u64), &Lifetimes> = lifetimes
        .iter()
        .map(|l| ((l.pid, l.stack_id), &l.lifetimes))
        .collect();
    let leak_of: BTreeMap<(u32, u64), &LeakCandidate> =
        leaks.iter().map(|c| ((c.pid, c.stack_id), c)).collect();
    patterns
        .iter()
        .flat_map(|s| {
            let key = (s.pid, s.stack_id);
            let mut a = for_site(s, by_site.get(&key).copied(), o);
            a.extend(leak_of.get(&key).and_then(|c| leak_advice(c)));
            a
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::lifetimes::site_lifetimes;
    use crate::analyze::patterns::classify;
    use crate::testkit::{hist, profile, series_site};

    fn advise(s: &crate::model::Site, dur_ms: u64) -> Vec<Advice> {
        let o = Options::default();
        let l = site_lifetimes(s, &o).map(|l| l.lifetimes);
        for_site(&classify(&profile(dur_ms, vec![]), s, &o), l.as_ref(), &o)
    }

    fn kinds(a: &[Advice]) -> Vec<AdviceKind> {
        a.iter().map(|x| x.kind).collect()
    }

    #[test]
    fn pool() {
        let pts: Vec<_> = (1..=5).map(|i| (i * 1000, i * 1000, i * 1000)).collect();
        let a = advise(&series_site(64, &pts, 100), 5000);
        assert_eq!(kinds(&a), vec![AdviceKind::Pool]);
        assert_eq!(
            a[0].evidence,
            "5.0k allocations at 1.0k/s, sizes 64 B–127 B (1 size class), 100% of freed blocks lived < 524 µs"
        );
        // Long-lived blocks: no pool.
        let a = advise(&series_site(64, &pts, 10_000_000), 5000);
        assert!(a.is_empty(), "{a:?}");
    }

    #[test]
    fn growth_chain() {
        let pts: Vec<_> = (1..=5).map(|i| (i * 1000, i * 40, i * 40)).collect();
        let mut s = series_site(64, &pts, 100);
        s.size_hist = hist(&[(16, 50), (64, 50), (256, 50), (1024, 50)]);
        let a = advise(&s, 5000);
        assert_eq!(kinds(&a), vec![AdviceKind::PreSize]);
        assert!(
            a[0].evidence.contains("span 7 doubling buckets"),
            "{}",
            a[0].evidence
        );
        // Few allocations: no evidence.
        let mut s = series_site(64, &[(1000, 10, 10)], 100);
        s.size_hist = hist(&[(16, 5), (1024, 5)]);
        assert!(advise(&s, 1000).is_empty());
    }

    #[test]
    fn large_block_churn() {
        let pts: Vec<_> = (1..=5).map(|i| (i * 1000, i * 2, i * 2)).collect();
        let a = advise(&series_site(1 << 20, &pts, 50_000_000), 5000);
        assert_eq!(kinds(&a), vec![AdviceKind::LargeBlockChurn]);
        assert_eq!(
            a[0].evidence,
            "10 blocks of typically 1.0 MiB–2.0 MiB allocated and 100% freed again, 2.0/s"
        );
        // Kept, not freed: no churn.
        let pts: Vec<_> = (1..=5).map(|i| (i * 1000, i * 2, 0)).collect();
        let a = advise(&series_site(1 << 20, &pts, 0), 5000);
        assert!(!kinds(&a).contains(&AdviceKind::LargeBlockChurn));
    }

    #[test]
    fn leak_suspect() {
        let pts: Vec<_> = (1..=6).map(|i| (i * 1000, i * 100, 0)).collect();
        let mut p = profile(6000, vec![]);
        p.sites = vec![series_site(64, &pts, 0)];
        let a = crate::analyze::analyze(&p, &Options::default()).advice;
        assert_eq!(kinds(&a), vec![AdviceKind::LeakSuspect]);
        assert_eq!(a[0].confidence, Some(Confidence::High));
        assert!(
            a[0].evidence.starts_with("600 blocks (37.5 KiB) never freed, 0 of 600 allocations freed (0.0%), allocated throughout the run (6 of 6 steps without frees, over 6.00 s of 6.00 s)"),
            "{}",
            a[0].evidence
        );
        assert!(a[0]
            .evidence
            .contains("live bytes grow 6.2 KiB/s (R² 1.00 over 6 points)"));
        assert!(
            a[0].evidence.ends_with("confidence high"),
            "{}",
            a[0].evidence
        );
        // The pattern alone gives no leak advice: the leak analyzer does.
        assert!(advise(&series_site(64, &pts, 0), 6000).is_empty());
    }

    #[test]
    fn serialized_names() {
        let names: Vec<String> = [
            AdviceKind::Pool,
            AdviceKind::PreSize,
            AdviceKind::LargeBlockChurn,
            AdviceKind::LeakSuspect,
        ]
        .iter()
        .map(|k| serde_json::to_string(k).unwrap())
        .collect();
        assert_eq!(
            names,
            ["\"pool\"", "\"presize\"", "\"large_churn\"", "\"leak\""]
        );
        assert_eq!(
            serde_json::to_string(&PatternClass::SmallFrequent).unwrap(),
            "\"small_frequent\""
        );
    }

    #[test]
    fn no_evidence_no_advice() {
        let a = advise(&series_site(64, &[(0, 5, 0)], 0), 0);
        assert!(a.is_empty());
        assert!(analyze(&[], &[], &[], &Options::default()).is_empty());
    }
}
