//! Log2 histograms as the kernel fills them (sizes, lifetimes): bucket 0 holds 0, bucket
//! i ≥ 1 holds [2^(i-1), 2^i - 1]. Sizes and lifetimes derived from them are bucket bounds, not
//! exact values.
use alloctrace_common::{bucket_floor, HIST_BUCKETS};
use serde::{Deserialize, Serialize};

use crate::numfmt::fmt_ns;

/// Inclusive bounds from a log2 histogram (bucket bounds, not exact values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub lo: u64,
    pub hi: u64,
}

/// The inclusive bounds of log2 bucket `i`.
pub fn bucket_range(i: usize) -> Range {
    let hi = if i + 1 >= HIST_BUCKETS {
        u64::MAX
    } else {
        bucket_floor(i + 1).saturating_sub(1)
    };
    Range {
        lo: bucket_floor(i),
        hi,
    }
}

/// The bucket holding quantile `q` (0 < q ≤ 1) of a histogram; `None` when it is empty.
pub fn quantile_bucket(hist: &[u64], q: f64) -> Option<usize> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    let target = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut cum = 0;
    hist.iter().position(|&n| {
        cum += n;
        cum >= target
    })
}

/// Lowest and highest non-empty buckets.
pub fn bucket_span(hist: &[u64]) -> Option<(usize, usize)> {
    let lo = hist.iter().position(|&n| n > 0)?;
    let hi = hist.iter().rposition(|&n| n > 0)?;
    Some((lo, hi))
}

/// `1–2 µs` for a lifetime bucket.
pub fn ns_range_text(r: Range) -> String {
    format!("{}–{}", fmt_ns(r.lo), fmt_ns(r.hi.saturating_add(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_quantiles() {
        assert_eq!(bucket_range(0), Range { lo: 0, hi: 0 });
        assert_eq!(bucket_range(7), Range { lo: 64, hi: 127 });
        assert_eq!(bucket_range(63).hi, u64::MAX);
        assert_eq!(quantile_bucket(&[], 0.5), None);
        assert_eq!(quantile_bucket(&[0, 0, 0], 0.5), None);
        assert_eq!(quantile_bucket(&[0, 5, 5], 0.5), Some(1));
        assert_eq!(quantile_bucket(&[0, 5, 5], 0.9), Some(2));
        assert_eq!(quantile_bucket(&[1], 0.9), Some(0));
        assert_eq!(bucket_span(&[0, 1, 0, 2, 0]), Some((1, 3)));
    }
}
