//! Estimates from sampled allocations (`--sample-bytes N`): the kernel records an allocation
//! of `s` bytes with probability 1 − e^(−s/N), and each site's sampled counts are scaled by
//! the inverse of that probability at the site's average size — the estimator of Go's pprof
//! heap profiles (`scaleHeapSample`), unbiased when a site allocates one size.
use crate::model::{Counters, Site};

/// The probability that an allocation of `avg_size` bytes was sampled at mean interval `mean`.
pub fn probability(avg_size: f64, mean: u64) -> f64 {
    if mean <= 1 {
        return 1.0;
    }
    -(-avg_size / mean as f64).exp_m1()
}

/// The estimated true counters of a site whose sampled counters are `c`.
pub fn scale(c: Counters, mean: u64) -> Counters {
    if c.allocs == 0 || c.bytes == 0 {
        return c;
    }
    let p = probability(c.bytes as f64 / c.allocs as f64, mean);
    let up = |v: u64| (v as f64 / p).round() as u64;
    Counters {
        allocs: up(c.allocs),
        bytes: up(c.bytes),
        frees: up(c.frees),
        freed_bytes: up(c.freed_bytes),
    }
}

/// `site` as drained (sampled counts) turned into its estimate: counters and size histogram
/// scaled, and the series by the site's overall factor so rates keep their shape and scale.
pub fn estimate(mut site: Site, mean: u64) -> Site {
    let raw = site.counters;
    site.sampled = Some(raw.allocs);
    site.counters = scale(raw, mean);
    site.size_hist = scale_hist(&site.size_hist, mean);
    if raw.allocs > 0 && raw.bytes > 0 {
        let p = probability(raw.bytes as f64 / raw.allocs as f64, mean);
        let up = |v: u64| (v as f64 / p).round() as u64;
        // Freed blocks were sampled when they were allocated, at the site's probability.
        for n in &mut site.life_hist {
            *n = up(*n);
        }
        for pt in &mut site.series {
            let c = pt.counters;
            pt.counters = Counters {
                allocs: up(c.allocs),
                bytes: up(c.bytes),
                frees: up(c.frees),
                freed_bytes: up(c.freed_bytes),
            };
        }
    }
    site
}

/// A size histogram scaled bucket by bucket, each at its bucket's middle size.
pub fn scale_hist(hist: &[u64], mean: u64) -> Vec<u64> {
    hist.iter()
        .enumerate()
        .map(|(i, &n)| {
            if n == 0 {
                return 0;
            }
            let lo = alloctrace_common::bucket_floor(i) as f64;
            let mid = if i == 0 { 0.0 } else { lo * 1.5 };
            let p = probability(mid, mean);
            if p <= 0.0 {
                n
            } else {
                (n as f64 / p).round() as u64
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_estimator() {
        // Go: 1 / (1 − e^(−avg/rate)); at avg = rate, 1 / (1 − 1/e) ≈ 1.582.
        let c = Counters {
            allocs: 1000,
            bytes: 1000 * 4096,
            frees: 0,
            freed_bytes: 0,
        };
        let s = scale(c, 4096);
        assert_eq!(s.allocs, 1582);
        assert_eq!(s.bytes, 6_479_777); // 4096000 / (1 − 1/e), rounded
                                        // Large blocks are (almost) always sampled: no scaling.
        let big = Counters {
            allocs: 3,
            bytes: 3 << 30,
            ..c
        };
        assert_eq!(scale(big, 512 * 1024), big);
        assert_eq!(scale(Counters::default(), 4096), Counters::default());
    }

    /// Simulates the kernel's sampler (exponential intervals) over a stream of equal
    /// allocations and checks the estimate lands near the truth.
    #[test]
    fn estimate_of_a_simulated_stream() {
        let (mean, size, n) = (64 * 1024u64, 48u64, 2_000_000u64);
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng >> 32) as u32
        };
        let mut left = alloctrace_common::sampling::next_interval(next(), mean);
        let mut sampled = Counters::default();
        for _ in 0..n {
            if size < left {
                left -= size;
            } else {
                left = alloctrace_common::sampling::next_interval(next(), mean);
                sampled.allocs += 1;
                sampled.bytes += size;
            }
        }
        let est = scale(sampled, mean);
        let err = (est.allocs as f64 / n as f64 - 1.0).abs();
        // ~1465 samples: one standard error is 2.6%; 4 of them is a safe bound.
        assert!(
            err < 0.11,
            "estimated {} of {n} ({} sampled)",
            est.allocs,
            sampled.allocs
        );
    }
}
