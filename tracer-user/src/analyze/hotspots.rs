//! The hot-spot analyzer (the guide's `AllocationHotSpotAnalyzer`): allocation sites grouped by
//! the function that asked for the memory (`--group-by function`) or by whole stack
//! (`--group-by stack`), sorted by bytes, allocations or live bytes, top N.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{GroupBy, Options, SortBy};
use crate::allocator;
use crate::model::{Counters, Frame, Profile, Site};

/// The frame a site is attributed to under `--group-by function`: the first frame outside libc
/// and the allocator (`allocator::is_allocator_frame`, the one rule); when every frame is inside
/// them, the first frame.
pub fn caller_frame(s: &Site) -> Option<&Frame> {
    s.frames
        .iter()
        .find(|f| !allocator::is_allocator_frame(f))
        .or_else(|| s.frames.first())
}

/// The name of a site: its first frame's, or `[no stack]`. In Go the allocator's caller is a
/// runtime function that only turns `new`, `make` or a concatenation into an allocation
/// (`runtime.newobject`): the site is named after the frame that asked for it, as `go tool
/// pprof` names it.
pub fn site_name(s: &Site) -> String {
    let go = &crate::allocator::go::Go as &dyn crate::allocator::Allocator;
    s.frames
        .iter()
        .find(|f| !f.function.as_deref().is_some_and(|n| go.owns_function(n)))
        .or_else(|| s.frames.first())
        .map_or_else(|| "[no stack]".to_string(), Frame::name)
}

/// How a frame appears in a stack listing (the text report, the HTML page): its name plus
/// `(file:line)` when known.
pub fn frame_line(f: &Frame) -> String {
    match (&f.file, f.line) {
        (Some(file), Some(line)) => format!("{} ({file}:{line})", f.name()),
        (Some(file), None) => format!("{} ({file})", f.name()),
        _ => f.name(),
    }
}

/// When a site first allocated and last allocated, from its series: the first point with
/// allocations and the last point where the allocation count moved (seconds since the start).
pub fn seen(s: &Site) -> Option<(f64, f64)> {
    let mut first = None;
    let mut last = None;
    let mut prev = 0;
    for pt in &s.series {
        if pt.counters.allocs > prev {
            first.get_or_insert(pt.t.as_secs_f64());
            last = Some(pt.t.as_secs_f64());
        }
        prev = pt.counters.allocs;
    }
    first.zip(last)
}

/// One group of sites.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hotspot {
    /// The function (group-by function) or the innermost frame (group-by stack).
    pub name: String,
    pub pid: u32,
    /// The stack id, group-by stack only.
    pub stack_id: Option<u64>,
    /// How many sites (distinct stacks) the group holds.
    pub sites: usize,
    pub allocs: u64,
    pub bytes: u64,
    pub frees: u64,
    /// Of all bytes allocated (0..=1).
    pub share: f64,
    pub avg_size: f64,
    pub live_bytes: u64,
    pub live_objects: u64,
    /// Seconds since the start; `None` when the sites have no series.
    pub first_seen: Option<f64>,
    pub last_seen: Option<f64>,
    /// `last_seen - first_seen` (zero for a group seen at one drain only).
    pub active: Option<f64>,
    /// The frames of the group's biggest site (by bytes), innermost first.
    pub example_stack: Vec<String>,
}

/// The hot-spot analyzer's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hotspots {
    pub group_by: GroupBy,
    pub sort: SortBy,
    /// Groups with allocations, before the top-N cut.
    pub groups: usize,
    /// The denominator of `share`.
    pub total_bytes: u64,
    pub top: Vec<Hotspot>,
}

struct Acc<'a> {
    counters: Counters,
    sites: Vec<&'a Site>,
}

/// The hot-spot analyzer. Groups are per process: the same function in two processes is two
/// groups (two programs may both have a `main`).
pub fn analyze(p: &Profile, o: &Options) -> Hotspots {
    let sites: Vec<&Site> = p.sites.iter().filter(|s| s.counters.allocs > 0).collect();
    let total_bytes = match p.total().bytes {
        0 => sites.iter().map(|s| s.counters.bytes).sum(),
        n => n,
    };
    let mut groups: BTreeMap<(u32, String, Option<u64>), Acc> = BTreeMap::new();
    for s in &sites {
        let key = match o.group_by {
            GroupBy::Function => (
                s.pid,
                caller_frame(s).map_or_else(|| "[no stack]".to_string(), Frame::name),
                None,
            ),
            GroupBy::Stack => (s.pid, site_name(s), Some(s.stack_id)),
        };
        let acc = groups.entry(key).or_insert(Acc {
            counters: Counters::default(),
            sites: Vec::new(),
        });
        acc.counters.add(&s.counters);
        acc.sites.push(s);
    }
    let mut all: Vec<Hotspot> = groups
        .into_iter()
        .map(|((pid, name, stack_id), acc)| {
            let c = acc.counters;
            let seen: Vec<(f64, f64)> = acc.sites.iter().filter_map(|s| seen(s)).collect();
            let first = seen.iter().map(|x| x.0).reduce(f64::min);
            let last = seen.iter().map(|x| x.1).reduce(f64::max);
            let biggest = acc
                .sites
                .iter()
                .max_by(|a, b| {
                    a.counters
                        .bytes
                        .cmp(&b.counters.bytes)
                        .then(b.stack_id.cmp(&a.stack_id))
                })
                .expect("a group has a site");
            Hotspot {
                name,
                pid,
                stack_id,
                sites: acc.sites.len(),
                allocs: c.allocs,
                bytes: c.bytes,
                frees: c.frees,
                share: if total_bytes > 0 {
                    c.bytes as f64 / total_bytes as f64
                } else {
                    0.0
                },
                avg_size: c.bytes as f64 / c.allocs as f64,
                live_bytes: c.live_bytes(),
                live_objects: c.live_objects(),
                first_seen: first,
                last_seen: last,
                active: first.zip(last).map(|(f, l)| l - f),
                example_stack: biggest.frames.iter().map(Frame::name).collect(),
            }
        })
        .collect();
    all.sort_by(|a, b| {
        let key = |h: &Hotspot| match o.sort {
            SortBy::Bytes => (h.bytes, h.allocs),
            SortBy::Count => (h.allocs, h.bytes),
            SortBy::Live => (h.live_bytes, h.bytes),
        };
        key(b)
            .cmp(&key(a))
            .then(a.pid.cmp(&b.pid))
            .then(a.name.cmp(&b.name))
            .then(a.stack_id.cmp(&b.stack_id))
    });
    let groups = all.len();
    all.truncate(o.top);
    Hotspots {
        group_by: o.group_by,
        sort: o.sort,
        groups,
        total_bytes,
        top: all,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{c, frame, profile, pt, site};

    #[test]
    fn caller_skips_libc_and_allocator() {
        let libc = frame(Some("__libc_malloc"), "/usr/lib/x86_64-linux-gnu/libc.so.6");
        let shim = frame(Some("__rust_alloc"), "/usr/bin/prog");
        let grow = frame(Some("alloc::raw_vec::finish_grow"), "/usr/bin/prog");
        let user = frame(Some("parse"), "/usr/bin/prog");
        let s = site(1, 1, vec![libc.clone(), shim, grow, user], c(1, 1, 0, 0));
        assert_eq!(caller_frame(&s).unwrap().name(), "parse");
        // Unsymbolized libc frames are skipped by module; old-style libc-2.31.so too.
        let raw = frame(None, "/lib/libc-2.31.so");
        let s = site(
            1,
            1,
            vec![raw.clone(), frame(None, "/usr/bin/prog")],
            c(1, 1, 0, 0),
        );
        assert_eq!(caller_frame(&s).unwrap().name(), "prog+0x10");
        // All inside libc: the first frame.
        let s = site(1, 1, vec![raw, libc], c(1, 1, 0, 0));
        assert_eq!(caller_frame(&s).unwrap().name(), "libc-2.31.so+0x10");
        assert_eq!(caller_frame(&site(1, 1, vec![], c(1, 1, 0, 0))), None);
        // A library whose name merely starts with "libc" is not libc.
        assert!(!allocator::is_allocator_frame(&frame(
            None,
            "/usr/lib/libcrypto.so.3"
        )));
    }

    #[test]
    fn go_sites_are_named_after_the_function_that_asked() {
        let prog = "/usr/bin/goprog";
        let frames = vec![
            frame(Some("runtime.makeslice"), prog),
            frame(Some("main.buildIndex"), prog),
            frame(Some("main.main"), prog),
        ];
        let s = site(1, 1, frames, c(1, 48, 0, 0));
        assert_eq!(site_name(&s), "main.buildIndex");
        assert_eq!(caller_frame(&s).unwrap().name(), "main.buildIndex");
        // C sites keep their first frame's name (a wrapper included).
        let s = site(1, 1, vec![frame(Some("operator new"), prog)], c(1, 1, 0, 0));
        assert_eq!(site_name(&s), "operator new");
    }

    #[test]
    fn seen_from_series() {
        let mut s = site(1, 1, vec![], c(5, 50, 5, 50));
        assert_eq!(seen(&s), None);
        s.series = vec![
            pt(1000, c(0, 0, 0, 0)),
            pt(2000, c(3, 30, 0, 0)),
            pt(3000, c(5, 50, 0, 0)),
            pt(4000, c(5, 50, 5, 50)),
        ];
        assert_eq!(seen(&s), Some((2.0, 3.0)));
    }

    #[test]
    fn groups_sort_and_top() {
        let prog = "/usr/bin/prog";
        let libc = frame(Some("malloc"), "/lib/libc.so.6");
        let mut a1 = site(
            1,
            1,
            vec![
                libc.clone(),
                frame(Some("a"), prog),
                frame(Some("main"), prog),
            ],
            c(10, 1000, 10, 1000),
        );
        a1.series = vec![pt(1000, c(10, 1000, 0, 0))];
        let mut a2 = site(1, 2, vec![frame(Some("a"), prog)], c(30, 3000, 0, 0));
        a2.series = vec![pt(2000, c(10, 1000, 0, 0)), pt(5000, c(30, 3000, 0, 0))];
        let b = site(1, 3, vec![frame(Some("b"), prog)], c(100, 3500, 100, 3500));
        let idle = site(1, 4, vec![frame(Some("idle"), prog)], c(0, 0, 3, 30));
        let mut p = profile(5000, vec![]);
        p.sites = vec![a1, a2, b, idle];
        let o = Options::default();
        let h = analyze(&p, &o);
        assert_eq!((h.groups, h.total_bytes), (2, 7500));
        let a = &h.top[0];
        assert_eq!(
            (a.name.as_str(), a.sites, a.allocs, a.bytes),
            ("a", 2, 40, 4000)
        );
        assert!((a.share - 4000.0 / 7500.0).abs() < 1e-9);
        assert_eq!(a.avg_size, 100.0);
        assert_eq!((a.live_bytes, a.live_objects), (3000, 30));
        assert_eq!(
            (a.first_seen, a.last_seen, a.active),
            (Some(1.0), Some(5.0), Some(4.0))
        );
        assert_eq!(a.example_stack, vec!["a"]);
        assert_eq!((h.top[1].name.as_str(), h.top[1].active), ("b", None));

        let h = analyze(
            &p,
            &Options {
                sort: SortBy::Count,
                ..o.clone()
            },
        );
        assert_eq!(h.top[0].name, "b");
        let h = analyze(
            &p,
            &Options {
                sort: SortBy::Live,
                group_by: GroupBy::Stack,
                top: 2,
                ..o
            },
        );
        assert_eq!(h.groups, 3);
        assert_eq!(h.top.len(), 2);
        assert_eq!((h.top[0].stack_id, h.top[0].live_bytes), (Some(2), 3000));
        // Stack 1 and 3 both have no live bytes: bytes decide.
        assert_eq!(h.top[1].stack_id, Some(3));
        assert_eq!(h.top[1].name, "b");
    }

    #[test]
    fn empty_profile() {
        let h = analyze(&profile(0, vec![]), &Options::default());
        assert_eq!((h.groups, h.total_bytes, h.top.len()), (0, 0, 0));
    }
}
