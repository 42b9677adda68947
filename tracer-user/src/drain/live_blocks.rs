//! The in-flight table's blocks per site: grouped by the site's key (`StackKey`, as the site
//! table keys sites) when read, and summarized once the sites are merged into what the report
//! shows: how many, how many bytes, how old (`model::LiveBlocks`).
use std::collections::HashMap;
use std::time::Duration;

use alloctrace_common::{log2_bucket, StackKey, HIST_BUCKETS};

use crate::kmaps::live_table::Block;
use crate::model::{LiveBlocks, OlderBlocks};

/// One site's live blocks as read, at `read_ns` (CLOCK_MONOTONIC, as the kernel's birth times).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Births {
    pub read_ns: u64,
    /// (birth time ns, size) per block.
    pub blocks: Vec<(u64, u64)>,
}

impl Births {
    /// `other`'s blocks added (two kernel sites that are one site once merged); the earlier
    /// read time is kept (both reads are of one moment but for a process swept earlier).
    pub fn absorb(&mut self, other: Births) {
        if self.blocks.is_empty() || (!other.blocks.is_empty() && other.read_ns < self.read_ns) {
            self.read_ns = other.read_ns;
        }
        self.blocks.extend(other.blocks);
    }
}

/// Where ages are measured from and what `--older` asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgeBasis {
    /// The trace's start, CLOCK_MONOTONIC ns.
    pub start_ns: u64,
    /// `--older DUR`.
    pub older: Option<Duration>,
}

/// CLOCK_MONOTONIC now, in ns: the clock of `bpf_ktime_get_ns` (and of `std::time::Instant`).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the pointer it is given.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if r != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The blocks of `blocks` grouped by site, read at `read_ns`.
pub fn by_site(blocks: Vec<Block>, read_ns: u64) -> HashMap<StackKey, Births> {
    let mut out: HashMap<StackKey, Births> = HashMap::new();
    for b in blocks {
        let key = StackKey {
            tgid: b.tgid,
            _pad: 0,
            hash: b.stack_hash,
        };
        out.entry(key)
            .or_insert_with(|| Births {
                read_ns,
                blocks: Vec::new(),
            })
            .blocks
            .push((b.ts_ns, b.size));
    }
    out
}

/// The summary of one site's blocks. A birth after the read (clocks of two CPUs a hair apart)
/// counts as age 0.
pub fn summarize(mut b: Births, basis: &AgeBasis) -> LiveBlocks {
    let at = Duration::from_nanos(b.read_ns.saturating_sub(basis.start_ns));
    // Oldest first.
    b.blocks.sort_unstable();
    let ages: Vec<u64> = b
        .blocks
        .iter()
        .map(|&(ts, _)| b.read_ns.saturating_sub(ts))
        .collect();
    let mut age_hist = vec![0u64; HIST_BUCKETS];
    for &a in &ages {
        age_hist[log2_bucket(a)] += 1;
    }
    // Ages in ns fill only the lower half of the buckets: the JSON report holds a histogram
    // per site, so the empty ones past the last are left out.
    let used = age_hist.iter().rposition(|&n| n > 0).map_or(0, |i| i + 1);
    age_hist.truncate(used);
    let older = basis.older.map(|than| {
        let than_ns = u64::try_from(than.as_nanos()).unwrap_or(u64::MAX);
        let (mut blocks, mut bytes) = (0, 0);
        for (&a, &(_, size)) in ages.iter().zip(&b.blocks) {
            if a > than_ns {
                blocks += 1;
                bytes += size;
            }
        }
        OlderBlocks {
            than,
            blocks,
            bytes,
        }
    });
    let n = ages.len();
    LiveBlocks {
        at,
        blocks: n as u64,
        bytes: b.blocks.iter().map(|&(_, s)| s).sum(),
        age_hist,
        oldest_ns: ages.first().copied().unwrap_or(0),
        // The lower median: a block's own age.
        median_ns: if n == 0 { 0 } else { ages[(n - 1) / 2] },
        youngest_ns: ages.last().copied().unwrap_or(0),
        older,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn block(tgid: u32, hash: u64, size: u64, ts: u64) -> Block {
        Block {
            tgid,
            stack_hash: hash,
            size,
            ts_ns: ts,
        }
    }

    #[test]
    fn blocks_are_grouped_by_process_and_stack() {
        let g = by_site(
            vec![
                block(1, 7, 10, 5),
                block(2, 7, 20, 6),
                block(1, 7, 30, 7),
                block(1, 8, 40, 8),
            ],
            100,
        );
        assert_eq!(g.len(), 3);
        let k = |tgid, hash| StackKey {
            tgid,
            _pad: 0,
            hash,
        };
        assert_eq!(g[&k(1, 7)].blocks, vec![(5, 10), (7, 30)]);
        assert_eq!(g[&k(2, 7)].blocks, vec![(6, 20)]);
        assert_eq!(g[&k(1, 8)].read_ns, 100);
    }

    #[test]
    fn summary_counts_ages_and_the_older_ones_exactly() {
        let start = 1000 * MS;
        let read = start + 900 * MS;
        // Born 10, 400, 500 and 890 ms into the run; one born "after" the read.
        let b = Births {
            read_ns: read,
            blocks: vec![
                (start + 500 * MS, 3),
                (start + 10 * MS, 1),
                (start + 890 * MS, 4),
                (start + 400 * MS, 2),
                (read + 5, 5),
            ],
        };
        let basis = AgeBasis {
            start_ns: start,
            older: Some(Duration::from_millis(450)),
        };
        let l = summarize(b, &basis);
        assert_eq!(l.at, Duration::from_millis(900));
        assert_eq!((l.blocks, l.bytes), (5, 15));
        assert_eq!(l.oldest_ns, 890 * MS);
        assert_eq!(l.median_ns, 400 * MS);
        assert_eq!(l.youngest_ns, 0);
        assert_eq!(l.age_hist.iter().sum::<u64>(), 5);
        assert_eq!(l.age_hist[0], 1);
        assert_eq!(l.age_hist[log2_bucket(890 * MS)], 1);
        assert_eq!(l.age_hist.len(), log2_bucket(890 * MS) + 1);
        assert_eq!(l.birth_span_ns(), 890 * MS);
        // Older than 450 ms: born at 10 and 400 ms (ages 890 and 500 ms).
        let o = l.older.unwrap();
        assert_eq!((o.blocks, o.bytes), (2, 3));
        assert_eq!(o.than, Duration::from_millis(450));
    }

    #[test]
    fn no_blocks() {
        let l = summarize(
            Births::default(),
            &AgeBasis {
                start_ns: 0,
                older: None,
            },
        );
        assert_eq!((l.blocks, l.bytes, l.oldest_ns, l.median_ns), (0, 0, 0, 0));
        assert!(l.age_hist.is_empty());
        assert!(l.older.is_none());
    }

    #[test]
    fn absorbing_keeps_the_earlier_read() {
        let mut a = Births {
            read_ns: 50,
            blocks: vec![(1, 1)],
        };
        a.absorb(Births {
            read_ns: 40,
            blocks: vec![(2, 2)],
        });
        assert_eq!(a.read_ns, 40);
        assert_eq!(a.blocks.len(), 2);
        let mut e = Births::default();
        e.absorb(Births {
            read_ns: 60,
            blocks: vec![(3, 3)],
        });
        assert_eq!(e.read_ns, 60);
    }
}
