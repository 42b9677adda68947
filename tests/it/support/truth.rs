//! What a workload says it did: its ground-truth file (format: `workloads/gt.h`), parsed.
use std::collections::BTreeMap;
use std::path::Path;

use super::{Counters, HIST_BUCKETS};

/// What a workload says one of its functions did (a `site` record of `workloads/gt.h`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteTruth {
    pub function: String,
    pub counters: Counters,
    /// Non-empty buckets of the log2 histogram of requested sizes.
    pub size_hist: BTreeMap<usize, u64>,
}

impl SiteTruth {
    /// The histogram as the report writes it: `HIST_BUCKETS` counts.
    pub fn size_hist_vec(&self) -> Vec<u64> {
        let mut v = vec![0; HIST_BUCKETS];
        for (&b, &n) in &self.size_hist {
            v[b] = n;
        }
        v
    }
}

/// A workload's ground truth (format: `workloads/gt.h`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroundTruth {
    pub pid: u32,
    /// Frees alloctrace must count as unknown; None when the workload cannot know.
    pub unknown_frees: Option<u64>,
    /// In the order the workload wrote them.
    pub sites: Vec<SiteTruth>,
    /// The file as written, for failure messages.
    pub text: String,
}

impl GroundTruth {
    pub fn parse(text: &str) -> Result<GroundTruth, String> {
        let mut pid = None;
        let mut unknown_frees = None;
        let mut sites: Vec<SiteTruth> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let bad = |why: &str| format!("ground truth line {}: {why}: {line:?}", i + 1);
            let mut words = line.split(' ');
            match words.next() {
                Some("pid") => {
                    let v = words
                        .next()
                        .and_then(|w| w.parse().ok())
                        .ok_or_else(|| bad("bad pid"))?;
                    pid = Some(v);
                }
                Some("unknown_frees") => {
                    let v = words
                        .next()
                        .and_then(|w| w.parse().ok())
                        .ok_or_else(|| bad("bad count"))?;
                    unknown_frees = Some(v);
                }
                Some("site") => {
                    let function = words
                        .next()
                        .filter(|w| !w.is_empty())
                        .ok_or_else(|| bad("no function"))?;
                    let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
                    for w in words.by_ref() {
                        let (k, v) = w.split_once('=').ok_or_else(|| bad("expected key=value"))?;
                        fields.insert(k, v);
                    }
                    let num = |k: &str| -> Result<u64, String> {
                        fields
                            .get(k)
                            .and_then(|v| v.parse().ok())
                            .ok_or_else(|| bad(&format!("bad or missing {k}")))
                    };
                    let counters = Counters {
                        allocs: num("allocs")?,
                        bytes: num("bytes")?,
                        frees: num("frees")?,
                        freed_bytes: num("freed_bytes")?,
                    };
                    let hist_text = fields.get("size_hist").ok_or_else(|| bad("no size_hist"))?;
                    let mut size_hist = BTreeMap::new();
                    if *hist_text != "-" {
                        for pair in hist_text.split(',') {
                            let (b, n) =
                                pair.split_once(':').ok_or_else(|| bad("bad size_hist"))?;
                            let b: usize = b.parse().map_err(|_| bad("bad size_hist bucket"))?;
                            let n: u64 = n.parse().map_err(|_| bad("bad size_hist count"))?;
                            if b >= HIST_BUCKETS {
                                return Err(bad("size_hist bucket out of range"));
                            }
                            size_hist.insert(b, n);
                        }
                    }
                    if sites.iter().any(|s| s.function == function) {
                        return Err(bad("function listed twice"));
                    }
                    sites.push(SiteTruth {
                        function: function.to_string(),
                        counters,
                        size_hist,
                    });
                }
                _ => return Err(bad("unknown record")),
            }
        }
        let pid = pid.ok_or("ground truth has no pid line")?;
        Ok(GroundTruth {
            pid,
            unknown_frees,
            sites,
            text: text.to_string(),
        })
    }

    /// Reads and parses `path`; panics with `context` (what the run printed) on failure.
    pub fn read(path: &Path, context: &str) -> GroundTruth {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
            panic!(
                "the workload wrote no ground truth to {}: {e}\n{context}",
                path.display()
            )
        });
        GroundTruth::parse(&text)
            .unwrap_or_else(|e| panic!("{e}\nground truth:\n{text}\n{context}"))
    }

    pub fn site(&self, function: &str) -> &SiteTruth {
        self.sites
            .iter()
            .find(|s| s.function == function)
            .unwrap_or_else(|| {
                panic!(
                    "the ground truth has no site {function} (test and workload disagree):\n{}",
                    self.text
                )
            })
    }

    /// The sum of every site: the process's totals when nothing else in it allocates.
    pub fn total(&self) -> Counters {
        let mut c = Counters::default();
        for s in &self.sites {
            c.add(&s.counters);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::report::CountersExt;

    #[test]
    fn parses_ground_truth() {
        let text = "pid 42\nunknown_frees 3\nsite alloc_a allocs=2 bytes=128 frees=1 freed_bytes=64 size_hist=7:2\n\
                    site free_b allocs=0 bytes=0 frees=0 freed_bytes=0 size_hist=-\n";
        let gt = GroundTruth::parse(text).unwrap();
        assert_eq!(gt.pid, 42);
        assert_eq!(gt.unknown_frees, Some(3));
        let a = gt.site("alloc_a");
        assert_eq!(
            a.counters,
            Counters {
                allocs: 2,
                bytes: 128,
                frees: 1,
                freed_bytes: 64
            }
        );
        assert_eq!(a.size_hist_vec()[7], 2);
        assert_eq!(a.size_hist_vec().iter().sum::<u64>(), 2);
        assert!(gt.site("free_b").counters.is_zero());
        assert_eq!(gt.total(), a.counters);
        assert!(GroundTruth::parse("site x allocs=1\n").is_err());
        assert!(GroundTruth::parse(
            "pid 1\nsite x allocs=1 bytes=2 frees=0 freed_bytes=0 size_hist=99:1\n"
        )
        .is_err());
        assert_eq!(GroundTruth::parse("pid 7\n").unwrap().unknown_frees, None);
    }
}
