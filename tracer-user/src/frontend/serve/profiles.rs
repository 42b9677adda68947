//! The profiles the pprof endpoints serve, made from the running trace's `Profile`: one
//! process's part of it (`?pid=N`), and the delta between two of them (`?seconds=S`, Go's
//! semantics: what was allocated, and freed, in between).
use std::collections::HashMap;

use crate::model::{Counters, Profile, Target};

/// Only `pid`'s processes, sites and modules; None when the profile has no such process
/// (the target of `--pid` or `-- CMD` is one before its first allocation: its profile is
/// empty).
pub fn of_pid(p: &Profile, pid: u32) -> Option<Profile> {
    let target = match p.target {
        Target::Pid { pid } | Target::Command { pid, .. } => Some(pid),
        Target::System => None,
    };
    if !p.processes.iter().any(|x| x.pid == pid) && target != Some(pid) {
        return None;
    }
    Some(Profile {
        target: p.target.clone(),
        mode: p.mode,
        sample_bytes: p.sample_bytes,
        start_unix_secs: p.start_unix_secs,
        duration: p.duration,
        interval: p.interval,
        resolution: p.resolution,
        // The endpoints encode sites, not the time series: not copied.
        samples: Vec::new(),
        processes: p
            .processes
            .iter()
            .filter(|x| x.pid == pid)
            .cloned()
            .collect(),
        sites: p.sites.iter().filter(|s| s.pid == pid).cloned().collect(),
        modules: p.modules.iter().filter(|m| m.pid == pid).cloned().collect(),
        losses: p.losses,
        tracer: p.tracer,
    })
}

/// What happened between `before` and `after` (two profiles of one trace): per site and per
/// process, the counters' differences; sites with nothing in between are left out. Its start
/// and duration are the window's. In-use values are what was allocated and not freed in the
/// window (never negative: a window that freed more than it allocated shows zero, where Go
/// would show a negative number).
pub fn delta(before: &Profile, after: &Profile) -> Profile {
    let site_before: HashMap<(u32, u64), &Counters> = before
        .sites
        .iter()
        .map(|s| ((s.pid, s.stack_id), &s.counters))
        .collect();
    let proc_before: HashMap<u32, &Counters> = before
        .processes
        .iter()
        .map(|x| (x.pid, &x.counters))
        .collect();
    let zero = Counters::default();
    let sites = after
        .sites
        .iter()
        .filter_map(|s| {
            let was = site_before
                .get(&(s.pid, s.stack_id))
                .copied()
                .unwrap_or(&zero);
            let counters = s.counters.since(was);
            (counters != zero).then(|| {
                let mut d = s.clone();
                d.counters = counters;
                d.series = Vec::new();
                d.live = None;
                d
            })
        })
        .collect();
    let processes = after
        .processes
        .iter()
        .map(|x| {
            let was = proc_before.get(&x.pid).copied().unwrap_or(&zero);
            let mut d = x.clone();
            d.counters = x.counters.since(was);
            d
        })
        .collect();
    let window = after.duration.saturating_sub(before.duration);
    Profile {
        target: after.target.clone(),
        mode: after.mode,
        sample_bytes: after.sample_bytes,
        start_unix_secs: after
            .start_unix_secs
            .saturating_add(before.duration.as_secs()),
        duration: window,
        interval: after.interval,
        resolution: after.resolution,
        samples: Vec::new(),
        processes,
        sites,
        modules: after.modules.clone(),
        losses: after.losses,
        tracer: after.tracer,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::{Losses, Process, Site, TraceMode};

    fn site(pid: u32, stack_id: u64, allocs: u64, frees: u64) -> Site {
        Site {
            pid,
            stack_id,
            frames: Vec::new(),
            counters: Counters {
                allocs,
                bytes: allocs * 10,
                frees,
                freed_bytes: frees * 10,
            },
            size_hist: Vec::new(),
            life_hist: Vec::new(),
            series: Vec::new(),
            sampled: None,
            live: None,
        }
    }

    fn profile(duration: u64, sites: Vec<Site>) -> Profile {
        let mut pids: Vec<u32> = sites.iter().map(|s| s.pid).collect();
        pids.dedup();
        Profile {
            target: Target::System,
            mode: TraceMode::Full,
            sample_bytes: None,
            start_unix_secs: 1000,
            duration: Duration::from_secs(duration),
            interval: Duration::from_secs(1),
            resolution: Duration::from_millis(20),
            samples: Vec::new(),
            processes: pids
                .iter()
                .map(|&pid| Process {
                    pid,
                    comm: format!("p{pid}"),
                    counters: sites.iter().filter(|s| s.pid == pid).fold(
                        Counters::default(),
                        |mut c, s| {
                            c.add_wrapping(&s.counters);
                            c
                        },
                    ),
                    unknown_frees: 0,
                    unseen: None,
                    go: None,
                    allocators: Vec::new(),
                })
                .collect(),
            sites,
            modules: Vec::new(),
            losses: Losses::default(),
            tracer: None,
        }
    }

    #[test]
    fn delta_keeps_what_happened_in_the_window() {
        let before = profile(5, vec![site(1, 7, 10, 4), site(1, 8, 3, 3)]);
        let after = profile(
            7,
            vec![site(1, 7, 15, 4), site(1, 8, 3, 3), site(2, 9, 2, 1)],
        );
        let d = delta(&before, &after);
        let got: Vec<(u32, u64, u64, u64)> = d
            .sites
            .iter()
            .map(|s| (s.pid, s.stack_id, s.counters.allocs, s.counters.frees))
            .collect();
        assert_eq!(got, [(1, 7, 5, 0), (2, 9, 2, 1)]);
        assert_eq!(d.duration, Duration::from_secs(2));
        assert_eq!(d.start_unix_secs, 1005);
        assert_eq!(d.processes[0].counters.allocs, 5);
        assert_eq!(d.processes[1].counters.allocs, 2);
    }

    #[test]
    fn one_process_or_none() {
        let p = profile(5, vec![site(1, 7, 10, 4), site(2, 8, 3, 3)]);
        let one = of_pid(&p, 2).unwrap();
        assert_eq!(one.sites.len(), 1);
        assert_eq!(one.processes.len(), 1);
        assert_eq!(one.sites[0].pid, 2);
        assert!(of_pid(&p, 3).is_none());
        let mut target = profile(1, Vec::new());
        target.target = Target::Pid { pid: 3 };
        assert!(of_pid(&target, 3).unwrap().sites.is_empty());
        assert!(of_pid(&target, 4).is_none());
    }
}
