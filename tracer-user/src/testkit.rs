//! Unit-test fixtures shared by the analyzers', the report's, the exporters' and `compare`'s
//! tests: one home, so that no module's tests import another module's tests.
use std::collections::BTreeMap;
use std::time::Duration;

use alloctrace_common::{log2_bucket, HIST_BUCKETS};

use crate::model::{Counters, Frame, Losses, Process, Profile, Sample, Site, SitePoint, Target};

pub fn c(allocs: u64, bytes: u64, frees: u64, freed_bytes: u64) -> Counters {
    Counters {
        allocs,
        bytes,
        frees,
        freed_bytes,
    }
}

/// A system-wide profile of `duration_ms` with `samples` as `(t_ms, [(pid, counters)])`, and
/// no process or site.
pub fn profile(duration_ms: u64, samples: Vec<(u64, Vec<(u32, Counters)>)>) -> Profile {
    Profile {
        target: Target::System,
        mode: crate::model::TraceMode::Full,
        start_unix_secs: 0,
        duration: Duration::from_millis(duration_ms),
        interval: Duration::from_secs(1),
        resolution: Duration::from_secs(1),
        samples: samples
            .into_iter()
            .map(|(t, ps)| Sample {
                t: Duration::from_millis(t),
                processes: ps.into_iter().collect::<BTreeMap<_, _>>(),
            })
            .collect(),
        processes: vec![],
        sites: vec![],
        losses: Losses::default(),
        modules: vec![],
        sample_bytes: None,
        tracer: None,
    }
}

/// The profile of `./prog -x` (pid 100) with these processes, sites and samples.
pub fn command_profile(
    processes: Vec<Process>,
    sites: Vec<Site>,
    samples: Vec<Sample>,
    duration_ms: u64,
) -> Profile {
    Profile {
        target: Target::Command {
            argv: vec!["./prog".into(), "-x".into()],
            pid: 100,
        },
        mode: crate::model::TraceMode::Full,
        start_unix_secs: 1_700_000_000,
        duration: Duration::from_millis(duration_ms),
        interval: Duration::from_secs(1),
        resolution: Duration::from_secs(1),
        samples,
        processes,
        sites,
        losses: Losses::default(),
        modules: vec![],
        sample_bytes: None,
        tracer: None,
    }
}

pub fn sample(t_ms: u64, procs: &[(u32, Counters)]) -> Sample {
    Sample {
        t: Duration::from_millis(t_ms),
        processes: procs.iter().copied().collect::<BTreeMap<_, _>>(),
    }
}

pub fn proc_(pid: u32, comm: &str, counters: Counters) -> Process {
    Process {
        pid,
        comm: comm.into(),
        counters,
        unknown_frees: 0,
        unseen: None,
        allocators: Vec::new(),
        go: None,
    }
}

/// A frame of `module`, symbolized when `function` is given.
pub fn frame(function: Option<&str>, module: &str) -> Frame {
    Frame {
        addr: 0x1000,
        function: function.map(Into::into),
        module: Some(module.into()),
        module_offset: 0x10,
        ..Default::default()
    }
}

/// A symbolized frame of `/usr/bin/prog` with its source location when known.
pub fn src_frame(function: &str, file: Option<&str>, line: Option<u32>) -> Frame {
    Frame {
        addr: 0x1000,
        function: Some(function.into()),
        function_offset: 4,
        module: Some("/usr/bin/prog".into()),
        module_offset: 0x1000,
        file: file.map(Into::into),
        line,
    }
}

pub fn site(pid: u32, stack_id: u64, frames: Vec<Frame>, counters: Counters) -> Site {
    Site {
        pid,
        stack_id,
        frames,
        counters,
        size_hist: vec![],
        life_hist: vec![],
        series: vec![],
        sampled: None,
        live: None,
    }
}

pub fn pt(t_ms: u64, counters: Counters) -> SitePoint {
    SitePoint {
        t: Duration::from_millis(t_ms),
        counters,
    }
}

/// A histogram with `n` values of `v`.
pub fn hist(entries: &[(u64, u64)]) -> Vec<u64> {
    let mut h = vec![0; HIST_BUCKETS];
    for &(v, n) in entries {
        h[log2_bucket(v)] += n;
    }
    h
}

/// A site whose series is `(t_ms, allocs, frees)` at `size` bytes each.
pub fn series_site(size: u64, pts: &[(u64, u64, u64)], life_ns: u64) -> Site {
    let cc = |a: u64, f: u64| c(a, a * size, f, f * size);
    let &(_, a, f) = pts.last().unwrap();
    let mut s = site(1, 1, vec![], cc(a, f));
    s.series = pts.iter().map(|&(t, a, f)| pt(t, cc(a, f))).collect();
    s.size_hist = hist(&[(size, a)]);
    s.life_hist = hist(&[(life_ns, f)]);
    s
}
