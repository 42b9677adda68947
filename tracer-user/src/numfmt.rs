//! Numbers as people read them: bytes in binary units, counts with k/M/G, durations, shares.
//! One home for the text report, the HTML page, the plots, `compare` and the analyzers'
//! reasons, so that none of them imports another's output code.

/// Scales `v` by `step` through `units` (the first unit is the unscaled one), with one decimal
/// once scaled. Rounding never shows a value equal to `step` (1023.96 KiB is "1.0 MiB").
fn scaled(v: f64, step: f64, units: &[&str], sep: &str, small: impl Fn(f64) -> String) -> String {
    if !v.is_finite() || v < step {
        return format!("{}{sep}{}", small(v.max(0.0)), units[0]);
    }
    let mut x = v;
    let mut i = 0;
    while i + 1 < units.len() && x >= step {
        x /= step;
        i += 1;
    }
    // "1023.96" would print as "1024.0": show it in the next unit instead.
    if (x * 10.0).round() / 10.0 >= step && i + 1 < units.len() {
        x /= step;
        i += 1;
    }
    format!("{x:.1}{sep}{}", units[i])
}

const BYTE_UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
const COUNT_UNITS: &[&str] = &["", "k", "M", "G", "T", "P", "E"];

/// `356 B`, `12.3 KiB`, `1.2 GiB`.
pub fn fmt_bytes(n: u64) -> String {
    scaled(n as f64, 1024.0, BYTE_UNITS, " ", |v| format!("{v:.0}"))
}

/// A byte rate or average: like [`fmt_bytes`], rounded to whole bytes below 1 KiB.
pub fn fmt_bytes_f(v: f64) -> String {
    scaled(v, 1024.0, BYTE_UNITS, " ", |v| format!("{v:.0}"))
}

/// `123`, `45.6k`, `3.4M`.
pub fn fmt_count(n: u64) -> String {
    scaled(n as f64, 1000.0, COUNT_UNITS, "", |v| format!("{v:.0}"))
}

/// A count rate: one decimal below 100 (a slow leak of 0.5 objects/s must not read as 0).
pub fn fmt_count_f(v: f64) -> String {
    scaled(v, 1000.0, COUNT_UNITS, "", |v| {
        if v == 0.0 {
            "0".to_string()
        } else if v < 100.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.0}")
        }
    })
}

/// A duration in nanoseconds: `512 ns`, `1.0 µs`, `2.5 ms`, `1.5 s`.
pub fn fmt_ns(n: u64) -> String {
    let v = n as f64;
    if v < 1e3 {
        format!("{n} ns")
    } else if v < 1e6 {
        format!("{:.0} µs", v / 1e3)
    } else if v < 1e9 {
        format!("{:.1} ms", v / 1e6)
    } else {
        format!("{:.1} s", v / 1e9)
    }
}

/// `part` as a share of `whole` with one decimal; `-` when `whole` is zero.
pub fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".to_string()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / whole as f64)
    }
}

/// A byte range from a log2 histogram: `64 B–127 B`, or one value when both ends agree.
pub fn fmt_byte_range(lo: u64, hi: u64) -> String {
    if lo == hi {
        fmt_bytes(lo)
    } else {
        format!("{}–{}", fmt_bytes(lo), fmt_bytes(hi))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(fmt_bytes(0), "0 B");
        assert_eq!(fmt_bytes(1023), "1023 B");
        assert_eq!(fmt_bytes(1024), "1.0 KiB");
        assert_eq!(fmt_bytes(12_900_000), "12.3 MiB");
        assert_eq!(fmt_bytes(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(fmt_bytes(3 << 30), "3.0 GiB");
        assert_eq!(fmt_bytes(u64::MAX), "16.0 EiB");
        assert_eq!(fmt_count(999), "999");
        assert_eq!(fmt_count(45_600), "45.6k");
        assert_eq!(fmt_count(999_960), "1.0M");
        assert_eq!(fmt_count(3_400_000), "3.4M");
        assert_eq!(fmt_count_f(0.0), "0");
        assert_eq!(fmt_count_f(0.5), "0.5");
        assert_eq!(fmt_count_f(250.0), "250");
        assert_eq!(fmt_bytes_f(355.6), "356 B");
        assert_eq!(fmt_bytes_f(f64::NAN), "0 B");
    }
}
