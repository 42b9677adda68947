//! The lifetime analyzer: how long a site's freed blocks lived, from the kernel's lifetime
//! histogram (bucket bounds, see [`super::histogram`]).
use serde::{Deserialize, Serialize};

use super::histogram::{bucket_range, quantile_bucket, Range};
use super::hotspots::site_name;
use super::Options;
use crate::model::{Profile, Site};

/// Lifetimes of a site's freed blocks, from its lifetime histogram (ns).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lifetimes {
    /// Blocks in the histogram (freed with a known allocation).
    pub freed: u64,
    /// Bucket bounds of the median lifetime, ns.
    pub median_ns: Range,
    /// Bucket bounds of the 90th-percentile lifetime, ns.
    pub p90_ns: Range,
    /// Share (0..=1) of the freed blocks that lived less than `short_lived_below_ns`.
    pub short_lived_share: f64,
    /// The threshold actually applied: only buckets entirely below the configured threshold
    /// count, so this is the threshold rounded down to a power of two (an underestimate of the
    /// share under the configured threshold).
    pub short_lived_below_ns: u64,
}

/// Lifetimes from a histogram; `None` when no block was freed.
pub fn lifetimes(hist: &[u64], short_lived_ns: u64) -> Option<Lifetimes> {
    let freed: u64 = hist.iter().sum();
    let median = quantile_bucket(hist, 0.5)?;
    let p90 = quantile_bucket(hist, 0.9)?;
    // Buckets whose upper bound is below the threshold.
    let below = (0..hist.len())
        .take_while(|&i| bucket_range(i).hi < short_lived_ns)
        .count();
    let short: u64 = hist[..below].iter().sum();
    Some(Lifetimes {
        freed,
        median_ns: bucket_range(median),
        p90_ns: bucket_range(p90),
        short_lived_share: short as f64 / freed as f64,
        short_lived_below_ns: if below == 0 {
            0
        } else {
            bucket_range(below - 1).hi.saturating_add(1)
        },
    })
}

/// One site's lifetimes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SiteLifetimes {
    pub pid: u32,
    pub stack_id: u64,
    /// The site's first frame (`[no stack]` without frames).
    pub site: String,
    #[serde(flatten)]
    pub lifetimes: Lifetimes,
}

/// The lifetimes of one site; `None` when none of its blocks was freed.
pub fn site_lifetimes(s: &Site, o: &Options) -> Option<SiteLifetimes> {
    let short = u64::try_from(o.short_lived.as_nanos()).unwrap_or(u64::MAX);
    Some(SiteLifetimes {
        pid: s.pid,
        stack_id: s.stack_id,
        site: site_name(s),
        lifetimes: lifetimes(&s.life_hist, short)?,
    })
}

/// The lifetimes of every site with allocations and freed blocks, biggest (bytes) first.
pub fn analyze(p: &Profile, o: &Options) -> Vec<SiteLifetimes> {
    p.sites_by_bytes()
        .into_iter()
        .filter_map(|s| site_lifetimes(s, o))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::hist;

    #[test]
    fn lifetimes_from_histogram() {
        // 80 blocks at ~100 ns, 20 at ~10 ms; threshold 1 ms.
        let h = hist(&[(100, 80), (10_000_000, 20)]);
        let l = lifetimes(&h, 1_000_000).unwrap();
        assert_eq!(l.freed, 100);
        assert_eq!(l.median_ns, Range { lo: 64, hi: 127 });
        assert_eq!(l.p90_ns.lo, 1 << 23);
        assert_eq!(l.short_lived_share, 0.8);
        // Buckets entirely below 1 ms: up to [262144, 524287].
        assert_eq!(l.short_lived_below_ns, 524_288);
        // A block of 600 µs is in the straddling bucket: not counted (the documented underestimate).
        let l = lifetimes(&hist(&[(600_000, 1)]), 1_000_000).unwrap();
        assert_eq!(l.short_lived_share, 0.0);
        assert_eq!(lifetimes(&[0; 4], 1_000_000), None);
        assert_eq!(
            lifetimes(&hist(&[(5, 1)]), 0).unwrap().short_lived_below_ns,
            0
        );
    }
}
