//! Sampling by bytes (`--sample-bytes N`): the distance in bytes between two sampled
//! allocations is drawn from an exponential distribution of mean N, as Go's MemProfileRate
//! and tcmalloc do, so an allocation of `s` bytes is sampled with probability 1 − e^(−s/N)
//! whatever the sizes around it. Integer arithmetic only: this runs in the kernel.
/// The largest mean interval (`--sample-bytes`) the arithmetic below is exact for.
pub const MAX_MEAN: u64 = 1 << 40;

/// log2(1 + x) for x in [0, 1) as Q16 (x = f / 65536): a quartic with p(0) = 0 and
/// p(1) = 1, least-squares fitted; error below 1.5e-4.
#[inline(always)]
fn log2_1p_q16(f: u64) -> u64 {
    const C: [i64; 4] = [94246, -44222, 20775, -5263];
    let x = f as i64;
    let mut p = C[3];
    p = C[2] + ((p * x) >> 16);
    p = C[1] + ((p * x) >> 16);
    p = C[0] + ((p * x) >> 16);
    ((p * x) >> 16).clamp(0, 65536) as u64
}

/// log2(v) as Q16, for v ≥ 1.
#[inline(always)]
pub fn log2_q16(v: u64) -> u64 {
    let v = if v == 0 { 1 } else { v };
    let e = 63 - v.leading_zeros() as u64;
    // The 16 bits below the leading one, as the fraction of the mantissa.
    let frac = if e >= 16 {
        (v >> (e - 16)) & 0xffff
    } else {
        (v << (16 - e)) & 0xffff
    };
    (e << 16) + log2_1p_q16(frac)
}

/// ln 2 in Q16.
const LN2_Q16: u64 = 45426;

/// An exponentially distributed interval of mean `mean` bytes (at least 1) from 32 random
/// bits: −ln(U) · mean with U = (r + 1) / 2³² uniform in (0, 1].
#[inline(always)]
pub fn next_interval(r: u32, mean: u64) -> u64 {
    let mean = if mean > MAX_MEAN { MAX_MEAN } else { mean };
    // −log2(U) = 32 − log2(r + 1), in Q16: at most 32 << 16.
    let neg_log2 = (32u64 << 16).saturating_sub(log2_q16(r as u64 + 1));
    let neg_ln = (neg_log2 * LN2_Q16) >> 16;
    let v = (neg_ln * mean) >> 16;
    if v == 0 {
        1
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_is_close() {
        for v in [
            1u64,
            2,
            3,
            5,
            1000,
            65535,
            65536,
            1 << 31,
            (1 << 32) - 1,
            1 << 32,
        ] {
            let got = log2_q16(v) as f64 / 65536.0;
            let want = (v as f64).log2();
            assert!((got - want).abs() < 2e-4, "log2({v}) = {got}, want {want}");
        }
    }

    /// The mean of the intervals over evenly spread random values is the requested mean
    /// (the integral of −ln U over (0, 1] is 1), to 0.1%.
    #[test]
    fn intervals_average_the_mean() {
        for mean in [1u64 << 12, 512 * 1024, 1 << 30] {
            let n = 1u64 << 20;
            let step = (1u64 << 32) / n;
            let sum: f64 = (0..n)
                .map(|i| next_interval((i * step + step / 2) as u32, mean) as f64)
                .sum();
            let avg = sum / n as f64;
            assert!(
                (avg / mean as f64 - 1.0).abs() < 1e-3,
                "mean {mean}: average interval {avg}"
            );
        }
        assert_eq!(next_interval(u32::MAX, 1), 1);
    }
}
