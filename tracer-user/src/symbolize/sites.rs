//! The end of a trace's symbolization: the drained sites' stacks turned into named frames, cut
//! at the first value outside the process's code, merged and (with sampling) scaled; and the
//! binaries those frames fall in.
use std::collections::BTreeMap;
use std::sync::Arc;

use std::collections::HashMap;

use crate::drain::live_blocks::{self, AgeBasis, Births};
use crate::drain::sampling;
use crate::drain::RawSite;
use crate::model::{Counters, Module, Site};
use crate::symbolize::Symbolizer;
use crate::unwind::{self, site_merge};

/// A site as `site_merge` tells sites apart: its process and its frames' addresses.
type SiteFrames = (u32, Vec<u64>);

/// A binary some frame of a process falls in, and one address inside it (for its build id).
pub type ModulesSeen = BTreeMap<(u32, Arc<str>), u64>;

/// Symbolized sites, the binaries their frames fall in, and how many sites' stacks were cut
/// (with their bytes);
/// with sampling (`sample_bytes`), their counters, size histograms and series are scaled to
/// estimates (`sampling::estimate`). Each distinct address of a process is symbolized once;
/// its frame is shared by every stack it appears in (the names are `Arc<str>`s).
///
/// A stack keeps its frames up to the first outside the process's code (`unwind::kept_frames`);
/// sites left with the same frames are merged (`site_merge`). With `ages`, each site's blocks
/// never freed (`RawSite::live`) are summarized with their ages (`Site::live`), after the
/// merge (a merged site's median is of all its blocks).
pub fn symbolize_sites(
    sym: &Symbolizer,
    raw: Vec<RawSite>,
    sample_bytes: Option<u64>,
    ages: Option<AgeBasis>,
) -> (Vec<Site>, ModulesSeen, CutStacks) {
    let mut by_pid: BTreeMap<u32, Vec<RawSite>> = BTreeMap::new();
    for s in raw {
        by_pid.entry(s.key.tgid).or_default().push(s);
    }
    let mut sites = Vec::new();
    let mut cut = Vec::new();
    let mut births: Vec<(SiteFrames, Option<Births>)> = Vec::new();
    let mut modules = ModulesSeen::new();
    for (pid, raws) in by_pid {
        let mut addrs: Vec<u64> = raws.iter().flat_map(|s| s.ips.iter().copied()).collect();
        addrs.sort_unstable();
        addrs.dedup();
        let frames: std::collections::HashMap<u64, _> = addrs
            .iter()
            .copied()
            .zip(sym.symbolize(pid, &addrs))
            .collect();
        for r in raws {
            let (in_code, was_cut) =
                unwind::kept_frames(&r.ips, r.cut, |a| frames[&a].module.is_some());
            let kept: Vec<_> = r.ips[..in_code].iter().map(|a| frames[a].clone()).collect();
            for f in &kept {
                if let Some(m) = &f.module {
                    modules.entry((pid, m.clone())).or_insert(f.addr);
                }
            }
            cut.push(was_cut);
            births.push(((pid, kept.iter().map(|f| f.addr).collect()), r.live));
            let st = &r.stats;
            sites.push(Site {
                pid,
                stack_id: r.key.hash,
                frames: kept,
                counters: Counters {
                    allocs: st.allocs(),
                    bytes: st.bytes,
                    frees: st.frees(),
                    freed_bytes: st.freed_bytes,
                },
                size_hist: st.size_hist.to_vec(),
                life_hist: st.life_hist.to_vec(),
                series: r.series,
                sampled: None,
                live: None,
            });
        }
    }
    let (mut sites, cut) = site_merge::merge_marked(sites, &cut);
    if let Some(basis) = ages {
        attach_live(&mut sites, births, &basis);
    }
    let sites = match sample_bytes {
        Some(mean) => sites
            .into_iter()
            .map(|s| sampling::estimate(s, mean))
            .collect(),
        None => sites,
    };
    let n_cut = cut.iter().filter(|&&c| c).count() as u64;
    let cut_bytes = sites
        .iter()
        .zip(&cut)
        .filter(|(_, &c)| c)
        .map(|(s, _)| s.counters.bytes)
        .sum();
    (
        sites,
        modules,
        CutStacks {
            sites: n_cut,
            bytes: cut_bytes,
        },
    )
}

/// Sites whose stacks end before their thread's entry, and the bytes allocated there.
#[derive(Clone, Copy, Debug, Default)]
pub struct CutStacks {
    pub sites: u64,
    pub bytes: u64,
}

/// Each merged site's live blocks: those of every kernel site it was made of (matched as
/// `site_merge` matches them, by process and frame addresses).
fn attach_live(sites: &mut [Site], births: Vec<(SiteFrames, Option<Births>)>, basis: &AgeBasis) {
    let index: HashMap<SiteFrames, usize> = sites
        .iter()
        .enumerate()
        .map(|(i, s)| ((s.pid, s.frames.iter().map(|f| f.addr).collect()), i))
        .collect();
    let mut merged: Vec<Option<Births>> = vec![None; sites.len()];
    for (key, b) in births {
        let (Some(&i), Some(b)) = (index.get(&key), b) else {
            continue;
        };
        merged[i].get_or_insert_with(Births::default).absorb(b);
    }
    for (s, b) in sites.iter_mut().zip(merged) {
        s.live = b.map(|b| live_blocks::summarize(b, basis));
    }
}

/// One `Module` per process and binary the sites' frames fall in, with its build id (asked of
/// the symbolizer through any address inside it).
pub fn modules_of(sym: &Symbolizer, seen: ModulesSeen) -> Vec<Module> {
    seen.into_iter()
        .map(|((pid, path), addr)| Module {
            pid,
            path: path.to_string(),
            build_id: sym
                .build_id(pid, addr)
                .map(|id| id.iter().map(|b| format!("{b:02x}")).collect()),
        })
        .collect()
}
