//! Kernel sites that are one site once their stacks are cut.
//!
//! The kernel side keys a site by the hash of its raw frame-pointer walk, but stores only the
//! frames that lie in executable mappings (tracer-ebpf's
//! `unwind::frame_pointer::walk_and_keep`): code without frame pointers leaves stack data in
//! `rbp`, which the walk reads as more frames, different from call to call. So one call site
//! can be many kernel sites with the same kept frames; here they become one, and its id is
//! derived from the kept frames alone.
use std::collections::HashMap;

use alloctrace_common::{stack_hash_step, FNV_OFFSET};

use crate::model::{Site, SitePoint};

/// A site's id from its (kept) frames: the kernel's stack hash of them, so a stack that was
/// not cut keeps the id the kernel gave it.
pub fn stack_id(addrs: impl ExactSizeIterator<Item = u64>) -> u64 {
    let len = addrs.len() as u64;
    let h = addrs.fold(FNV_OFFSET, stack_hash_step);
    let h = stack_hash_step(h, len);
    if h < 2 {
        h + 2
    } else {
        h
    }
}

/// Merges the sites of one process whose frames are at the same addresses (summing their
/// counters, histograms and series), in the order each was first seen, each with the id of
/// its frames (`stack_id`). `cut[i]` says whether `sites[i]`'s stack was cut; returns the
/// sites and how many of them were cut.
#[cfg(test)]
pub fn merge(sites: Vec<Site>, cut: &[bool]) -> (Vec<Site>, u64) {
    let (out, out_cut) = merge_marked(sites, cut);
    (out, out_cut.iter().filter(|&&c| c).count() as u64)
}

/// `merge`, with each merged site's mark: whether any of its kernel sites was cut.
pub fn merge_marked(sites: Vec<Site>, cut: &[bool]) -> (Vec<Site>, Vec<bool>) {
    let mut out: Vec<Site> = Vec::with_capacity(sites.len());
    let mut out_cut: Vec<bool> = Vec::with_capacity(sites.len());
    let mut index: HashMap<(u32, Vec<u64>), usize> = HashMap::with_capacity(sites.len());
    for (i, mut s) in sites.into_iter().enumerate() {
        let was_cut = cut.get(i).copied().unwrap_or(false);
        let addrs: Vec<u64> = s.frames.iter().map(|f| f.addr).collect();
        match index.get(&(s.pid, addrs.clone())) {
            Some(&at) => {
                add_into(&mut out[at], &s);
                out_cut[at] |= was_cut;
            }
            None => {
                s.stack_id = stack_id(addrs.iter().copied());
                index.insert((s.pid, addrs), out.len());
                out.push(s);
                out_cut.push(was_cut);
            }
        }
    }
    (out, out_cut)
}

/// `into += from`, for two sites of the same stack.
fn add_into(into: &mut Site, from: &Site) {
    into.counters.add_wrapping(&from.counters);
    add_hist(&mut into.size_hist, &from.size_hist);
    add_hist(&mut into.life_hist, &from.life_hist);
    into.series = add_series(&into.series, &from.series);
    into.sampled = match (into.sampled, from.sampled) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    };
}

fn add_hist(into: &mut Vec<u64>, from: &[u64]) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (a, b) in into.iter_mut().zip(from) {
        *a = a.wrapping_add(*b);
    }
}

/// The sum of two cumulative series: a point at every time either has one, each side
/// contributing its latest point up to then (0 before its first: a series starts when its
/// site first moved).
fn add_series(a: &[SitePoint], b: &[SitePoint]) -> Vec<SitePoint> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    let (mut last_a, mut last_b) = (Default::default(), Default::default());
    while i < a.len() || j < b.len() {
        let t = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => x.t.min(y.t),
            (Some(x), None) => x.t,
            (None, Some(y)) => y.t,
            (None, None) => break,
        };
        if a.get(i).is_some_and(|p| p.t == t) {
            last_a = a[i].counters;
            i += 1;
        }
        if b.get(j).is_some_and(|p| p.t == t) {
            last_b = b[j].counters;
            j += 1;
        }
        let mut c: crate::model::Counters = last_a;
        c.add_wrapping(&last_b);
        out.push(SitePoint { t, counters: c });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::{Counters, Frame};

    fn counters(allocs: u64, bytes: u64) -> Counters {
        Counters {
            allocs,
            bytes,
            frees: allocs / 2,
            freed_bytes: bytes / 2,
        }
    }

    fn point(ms: u64, allocs: u64, bytes: u64) -> SitePoint {
        SitePoint {
            t: Duration::from_millis(ms),
            counters: counters(allocs, bytes),
        }
    }

    fn site(pid: u32, raw_hash: u64, addrs: &[u64], allocs: u64, series: Vec<SitePoint>) -> Site {
        let mut size_hist = vec![0; 64];
        size_hist[5] = allocs;
        Site {
            pid,
            stack_id: raw_hash,
            frames: addrs
                .iter()
                .map(|&addr| Frame {
                    addr,
                    ..Frame::default()
                })
                .collect(),
            counters: counters(allocs, allocs * 16),
            size_hist,
            life_hist: vec![1; 64],
            series,
            sampled: None,
            live: None,
        }
    }

    #[test]
    fn an_uncut_stack_keeps_the_kernel_id() {
        // As tracer-ebpf's walk hashes it: each frame, then the count.
        let addrs = [0x401000u64, 0x402000];
        let mut h = FNV_OFFSET;
        for a in addrs {
            h = stack_hash_step(h, a);
        }
        h = stack_hash_step(h, 2);
        assert_eq!(stack_id(addrs.into_iter()), h);
        assert_ne!(stack_id([0x401000u64].into_iter()), h);
        assert!(stack_id(std::iter::empty()) >= 2);
    }

    #[test]
    fn sites_with_the_same_frames_in_one_process_become_one() {
        let a = site(
            7,
            111,
            &[0x10, 0x20],
            3,
            vec![point(100, 1, 16), point(300, 3, 48)],
        );
        let b = site(7, 222, &[0x10, 0x20], 5, vec![point(200, 5, 80)]);
        let other_pid = site(8, 333, &[0x10, 0x20], 2, vec![]);
        let other_stack = site(7, 444, &[0x10], 4, vec![]);
        let (out, cut) = merge(
            vec![a, other_pid.clone(), b, other_stack.clone()],
            &[true, false, true, false],
        );
        assert_eq!(cut, 1, "one merged site was cut");
        assert_eq!(out.len(), 3);
        let m = &out[0];
        assert_eq!(
            (m.pid, m.stack_id),
            (7, stack_id([0x10u64, 0x20].into_iter()))
        );
        let sum = Counters {
            allocs: 8,
            bytes: 128,
            frees: 1 + 2,
            freed_bytes: 24 + 40,
        };
        assert_eq!(m.counters, sum);
        assert_eq!(m.size_hist[5], 8);
        assert_eq!(m.life_hist[0], 2);
        // Cumulative at each drain: a alone at 100 ms, a's 1 + b's 5 at 200, 3 + 5 at 300.
        let want: Vec<(u64, u64)> = vec![(100, 1), (200, 6), (300, 8)];
        let got: Vec<(u64, u64)> = m
            .series
            .iter()
            .map(|p| (p.t.as_millis() as u64, p.counters.allocs))
            .collect();
        assert_eq!(got, want);
        assert_eq!(m.series[2].counters.bytes, 48 + 80);
        // The others are untouched but for their ids.
        assert_eq!(out[1].counters, other_pid.counters);
        assert_eq!(out[1].pid, 8);
        assert_eq!(out[2].counters, other_stack.counters);
        assert_eq!(out[2].stack_id, stack_id([0x10u64].into_iter()));
    }

    #[test]
    fn sampled_counts_add_up() {
        let mut a = site(1, 1, &[0x10], 1, vec![]);
        let mut b = site(1, 2, &[0x10], 1, vec![]);
        a.sampled = Some(3);
        b.sampled = Some(4);
        let (out, cut) = merge(vec![a, b], &[false, false]);
        assert_eq!((out.len(), cut, out[0].sampled), (1, 0, Some(7)));
    }
}
