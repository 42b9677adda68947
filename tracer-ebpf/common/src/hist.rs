//! The log2 histograms of sizes and lifetimes: the bucket count, a value's bucket (a search
//! the eBPF programs can run, and a plain one), and a bucket's floor.
/// Buckets of the log2 size and lifetime histograms: bucket 0 holds zero, bucket `i` holds
/// values in `[2^(i-1), 2^i)`, and the last bucket also holds everything above.
pub const HIST_BUCKETS: usize = 64;

/// The log2 bucket of `v`: 0 for 0, else the number of significant bits, capped at the last.
#[inline(always)]
pub fn log2_bucket(v: u64) -> usize {
    let bits = (64 - v.leading_zeros()) as usize;
    if bits >= HIST_BUCKETS {
        HIST_BUCKETS - 1
    } else {
        bits
    }
}

/// [`log2_bucket`] for the eBPF programs: BPF has no count-leading-zeros instruction, and
/// LLVM's expansion of `leading_zeros` is a chain of ~30 dependent instructions; a binary
/// search on the bit count is six compares, which the CPU predicts for a site's usual sizes.
#[inline(always)]
pub fn log2_bucket_searched(v: u64) -> usize {
    let mut bits = 0u64;
    let mut x = v;
    if x >> 32 != 0 {
        bits += 32;
        x >>= 32;
    }
    if x >> 16 != 0 {
        bits += 16;
        x >>= 16;
    }
    if x >> 8 != 0 {
        bits += 8;
        x >>= 8;
    }
    if x >> 4 != 0 {
        bits += 4;
        x >>= 4;
    }
    if x >> 2 != 0 {
        bits += 2;
        x >>= 2;
    }
    if x >> 1 != 0 {
        bits += 1;
        x >>= 1;
    }
    // x is now 0 (v was 0) or 1.
    let bits = (bits + x) as usize;
    if bits >= HIST_BUCKETS {
        HIST_BUCKETS - 1
    } else {
        bits
    }
}

/// Lower bound of histogram bucket `i` (see [`log2_bucket`]).
pub fn bucket_floor(i: usize) -> u64 {
    if i == 0 {
        0
    } else {
        1u64 << (i - 1)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    /// The eBPF programs' bucket is user space's: every power of two, its neighbours, and
    /// the extremes.
    #[test]
    fn searched_log2_matches_leading_zeros() {
        let mut values = std::vec![0u64, 1, u64::MAX];
        for s in 0..64 {
            let p = 1u64 << s;
            values.extend([p - 1, p, p + 1, p | (p >> 1), p.wrapping_mul(3)]);
        }
        for v in values {
            assert_eq!(log2_bucket_searched(v), log2_bucket(v), "v = {v}");
        }
    }
}
