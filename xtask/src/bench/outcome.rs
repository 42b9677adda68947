//! What one run measured: the workload's loop, and what the tracer says of itself (alloctrace's
//! report, read without a JSON dependency; what BCC memleak recorded).

/// One run of one workload under one configuration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Run {
    pub(crate) loop_ns: u64,
    pub(crate) events: u64,
    pub(crate) wall_s: f64,
    /// Allocations alloctrace's report counts (alloctrace configurations only).
    pub(crate) counted: Option<u64>,
    /// alloctrace's own cost, from its report (alloctrace configurations only).
    pub(crate) own: Option<OwnUse>,
    /// What BCC memleak recorded (memleak configurations only).
    pub(crate) seen: Option<Seen>,
}

/// A run, or why it is left out of the medians (BCC memleak's, when memleak did not attach or
/// saw nothing of the workload).
pub(crate) type Outcome = std::result::Result<Run, String>;

/// What a run cost alloctrace itself: its report's `tracer` (CPU time of all its threads up to
/// the report, program loading included, and peak resident set).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct OwnUse {
    pub(crate) cpu_s: f64,
    pub(crate) peak_rss_bytes: u64,
}

/// `tracer` of a `--report json` file, read as `totals_allocs` reads its field.
pub(super) fn own_use(report: &str) -> Option<OwnUse> {
    let t = &report[report.find("\"tracer\"")?..];
    let number = |key: &str| {
        let quoted = format!("\"{key}\"");
        let v = &t[t.find(&quoted)? + quoted.len()..];
        let v = v.trim_start().strip_prefix(':')?.trim_start();
        let end = v
            .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
            .unwrap_or(v.len());
        Some(&v[..end])
    };
    Some(OwnUse {
        cpu_s: number("cpu_time")?.parse().ok()?,
        peak_rss_bytes: number("peak_rss_bytes")?.parse().ok()?,
    })
}

/// `totals.allocs` of a `--report json` file, without a JSON dependency in xtask: the first
/// `"allocs":` after `"totals"`.
pub fn totals_allocs(report: &str) -> Option<u64> {
    let t = &report[report.find("\"totals\"")?..];
    let a = &t[t.find("\"allocs\"")? + "\"allocs\"".len()..];
    let a = a.trim_start().strip_prefix(':')?.trim_start();
    let end = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
    a[..end].parse().ok()
}

/// What BCC memleak recorded in one run, read once the workload's loop is over.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seen {
    /// Stacks in memleak's stack map: one per distinct allocation stack it recorded.
    pub(crate) stacks: u64,
    /// Of those, the stacks with a frame in the workload's executable.
    pub(crate) from_exe: u64,
    /// Entries ("N bytes in M allocations from stack") in memleak's periodic output, which
    /// lists allocations still live and older than 500 ms at each 1 s tick.
    pub(crate) printed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_use_is_read_from_the_report() {
        let report = r#"{"totals": {"allocs": 3}, "tracer": {
    "cpu_time": 2.052201,
    "peak_rss_bytes": 47034368
  }, "analysis": {}}"#;
        assert_eq!(
            own_use(report),
            Some(OwnUse {
                cpu_s: 2.052201,
                peak_rss_bytes: 47034368
            })
        );
        assert_eq!(own_use(r#"{"totals": {"allocs": 3}}"#), None);
        assert_eq!(totals_allocs(report), Some(3));
    }
}
