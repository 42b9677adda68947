//! Reads the kernel's cumulative maps into plain values. The kernel never resets a counter,
//! so a drain is a read, and a delta is the difference of two reads: nothing is lost or
//! counted twice between drains however they interleave with the probes.
pub mod live_blocks;
pub mod sampling;
pub mod series;
mod stack_frames;

use std::collections::{BTreeMap, BTreeSet, HashMap as StdHashMap};
use std::path::Path;
use std::time::Duration;

use alloctrace_common::{self as abi, ProcStats, SiteStats, StackKey, StackTrace};
use aya::maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf};
use aya::Ebpf;

use crate::kmaps::live_table::LiveTable;
use crate::kmaps::owned_totals::OwnedSlots;
use crate::kmaps::site_table::{SiteCounters, SiteTable};
use crate::model::{Counters, Losses, Sample, SitePoint};
use series::Series;

#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("the eBPF object has no map {0}")]
    MissingMap(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error(transparent)]
    Live(#[from] crate::kmaps::live_table::LiveError),
    #[error(transparent)]
    Owned(#[from] crate::kmaps::owned_totals::OwnedError),
    #[error(transparent)]
    Sites(#[from] crate::kmaps::site_table::SiteError),
}

/// One process's totals as the kernel counted them.
#[derive(Clone, Debug, Default)]
pub struct ProcTotals {
    pub comm: String,
    pub counters: Counters,
    pub unknown_frees: u64,
}

/// One allocation site as the kernel counted it, frames still unsymbolized.
#[derive(Clone, Debug)]
pub struct RawSite {
    pub key: StackKey,
    pub stats: SiteStats,
    pub ips: Vec<u64>,
    /// Why the kernel ended the stack where it did (`abi::stack_cut`).
    pub cut: u32,
    /// The site's cumulative counters over the run (see `series::record`).
    pub series: Vec<SitePoint>,
    /// Its blocks never freed, once `read_live` has read them.
    pub live: Option<live_blocks::Births>,
}

pub struct Drainer {
    sites: SiteTable,
    stacks: HashMap<MapData, StackKey, StackTrace>,
    procs: PerCpuHashMap<MapData, u32, ProcStats>,
    live: LiveTable,
    owned: OwnedSlots,
    losses: PerCpuArray<MapData, u64>,
    control: Array<MapData, u32>,
    /// Final state of processes that exited and were removed from the kernel maps
    /// (system-wide mode), so their totals and sites still reach the report.
    retired_procs: BTreeMap<u32, ProcTotals>,
    retired_sites: Vec<RawSite>,
    series: StdHashMap<StackKey, Series<SitePoint>>,
    /// The blocks of retired processes, read as they were swept from the in-flight table.
    retired_live: StdHashMap<StackKey, live_blocks::Births>,
    max_points: usize,
    /// When the last drain was (zero before the first: the run's start).
    last_drain: Duration,
    live_sweep_due: bool,
}

/// Takes map `name` out of `ebpf` as it is (for the tables user space maps itself).
fn untyped(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, DrainError> {
    ebpf.take_map(name).ok_or(DrainError::MissingMap(name))
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<T, DrainError> {
    T::try_from(untyped(ebpf, name)?).map_err(|source| DrainError::Map { name, source })
}

/// Takes the event ring buffer, read by its own thread.
pub fn take_events(ebpf: &mut Ebpf) -> Result<RingBuf<MapData>, DrainError> {
    take(ebpf, abi::MAP_EVENTS)
}

pub fn comm_str(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// The kernel records `comm` at a process's first traced call, which can come before an exec
/// (a shell's child allocates, then execs the program): a live process's own name wins.
fn current_comm(pid: u32) -> Option<String> {
    let c = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(c.trim_end_matches('\n').to_string())
}

fn unattributed(u: &abi::Unattributed) -> Counters {
    counters(u.allocs, u.bytes, u.frees, u.freed_bytes)
}

fn site_counters(st: &SiteStats) -> Counters {
    counters(st.allocs(), st.bytes, st.frees(), st.freed_bytes)
}

fn counters(allocs: u64, bytes: u64, frees: u64, freed_bytes: u64) -> Counters {
    Counters {
        allocs,
        bytes,
        frees,
        freed_bytes,
    }
}

impl Drainer {
    /// Takes the maps out of `ebpf`, so they outlive the programs: dropping `ebpf` detaches
    /// every probe while the final drain can still read what they counted.
    /// `max_points` bounds each site's series (adjacent points merged, `series::Series`).
    pub fn take(
        ebpf: &mut Ebpf,
        max_points: usize,
        live_slots: u32,
        site_slots: u32,
    ) -> Result<Self, DrainError> {
        Ok(Drainer {
            sites: SiteTable::new(
                untyped(ebpf, abi::MAP_SITES)?,
                untyped(ebpf, abi::MAP_SITE_CLAIMS)?,
                site_slots,
            )?,
            stacks: take(ebpf, abi::MAP_STACKS)?,
            procs: take(ebpf, abi::MAP_PROCS)?,
            live: LiveTable::new(untyped(ebpf, abi::MAP_LIVE)?, live_slots)?,
            owned: OwnedSlots::new(untyped(ebpf, abi::MAP_OWNED)?)?,
            losses: take(ebpf, abi::MAP_LOSSES)?,
            control: take(ebpf, abi::MAP_CONTROL)?,
            retired_procs: BTreeMap::new(),
            retired_sites: Vec::new(),
            series: StdHashMap::new(),
            retired_live: StdHashMap::new(),
            max_points,
            last_drain: Duration::ZERO,
            live_sweep_due: false,
        })
    }

    /// Makes every probe stop counting from now on (they stay attached until dropped).
    pub fn stop_probes(&mut self) -> Result<(), DrainError> {
        self.control
            .set(abi::CONTROL_STOPPED, 1, 0)
            .map_err(|source| DrainError::Map {
                name: abi::MAP_CONTROL,
                source,
            })
    }

    /// Every process seen so far, live and retired, given a read of the site map. A live
    /// process's totals are its sites' counters plus what the kernel could attribute to no
    /// site (unsampled allocations, stacks that could not be stored), which it keeps in the
    /// process map and in the per-CPU slots the process owns: that spares an allocation whose
    /// site is known a second map update, and one without a site a hash lookup.
    ///
    /// `names`: a live process's name is read from /proc (see `current_comm`); without, the
    /// kernel's record serves (a fine drain's sample has no names: that spares a file read
    /// per process per drain).
    fn processes_with(
        &self,
        sites: impl IntoIterator<Item = (u32, Counters)>,
        names: bool,
    ) -> BTreeMap<u32, ProcTotals> {
        let mut live = BTreeMap::new();
        // Per CPU in the kernel (threads on different CPUs share no cache line): summed here.
        // The name is in the copy of the CPU that created the entry.
        for (pid, per_cpu) in self.procs.iter().filter_map(Result::ok) {
            let mut t = ProcTotals::default();
            let mut comm = None;
            for p in per_cpu.iter() {
                t.counters.add(&unattributed(&p.totals));
                t.unknown_frees += p.unknown_frees;
                if comm.is_none() && p.comm[0] != 0 {
                    comm = Some(comm_str(&p.comm));
                }
            }
            let current = if names { current_comm(pid) } else { None };
            t.comm = current.or(comm).unwrap_or_default();
            live.insert(pid, t);
        }
        // A process without an entry of its own in the process map (normally there is one).
        fn of(live: &mut BTreeMap<u32, ProcTotals>, pid: u32, names: bool) -> &mut Counters {
            &mut live
                .entry(pid)
                .or_insert_with(|| ProcTotals {
                    comm: if names { current_comm(pid) } else { None }.unwrap_or_default(),
                    ..ProcTotals::default()
                })
                .counters
        }
        for (pid, u) in self.owned.read() {
            of(&mut live, pid, names).add(&unattributed(&u));
        }
        for (pid, c) in sites {
            of(&mut live, pid, names).add(&c);
        }
        let mut out = self.retired_procs.clone();
        out.extend(live);
        out
    }

    /// One drain: a series point for every site that moved, and every process's totals, from
    /// one read of the site map's counters. `full`: an interval's drain, which reads every
    /// process's name (`processes_with`) and every site's histograms; the others read a
    /// site's histograms only when its bytes moved (`SiteTable::read_counters`).
    pub fn sample(&mut self, t: Duration, full: bool) -> (Sample, BTreeMap<u32, ProcTotals>) {
        let sites = self.sites.read_counters(!full);
        self.record_series(t, &sites);
        self.last_drain = self.last_drain.max(t);
        let procs = self.processes_with(sites.iter().map(|s| (s.key.tgid, s.counters)), full);
        let sample = Sample {
            t,
            processes: procs.iter().map(|(p, v)| (*p, v.counters)).collect(),
        };
        (sample, procs)
    }

    pub fn losses(&self) -> Losses {
        let get = |i: u32| -> u64 { self.losses.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0) };
        Losses {
            stack_map_full: get(abi::loss::STACK_MAP_FULL),
            site_map_full: get(abi::loss::SITE_MAP_FULL),
            live_map_full: get(abi::loss::LIVE_MAP_FULL),
            call_map_full: get(abi::loss::CALL_MAP_FULL),
            proc_map_full: get(abi::loss::PROC_MAP_FULL),
            stack_read_failed: get(abi::loss::STACK_READ_FAILED),
            stale_call: get(abi::loss::STALE_CALL),
            event_dropped: get(abi::loss::EVENT_DROPPED),
            stack_preempted: get(abi::loss::STACK_PREEMPTED),
            stale_block: get(abi::loss::STALE_BLOCK),
            // Counted per site once the stacks are symbolized (`trace::symbolize_sites`).
            stacks_cut: 0,
            stacks_cut_bytes: 0,
            retargets: get(abi::loss::RETARGETS),
            retarget_gap_us: get(abi::loss::RETARGET_GAP_US),
            reentry_too_deep: get(abi::loss::REENTRY_TOO_DEEP),
            stack_unchecked: get(abi::loss::STACK_UNCHECKED),
            follow_late: get(abi::loss::FOLLOW_LATE),
            follow_gap_us: get(abi::loss::FOLLOW_GAP_US),
            exec_late: get(abi::loss::EXEC_LATE),
            exec_gap_us: get(abi::loss::EXEC_GAP_US),
        }
    }

    /// Adds `n` to a loss counter user space keeps (`abi::loss::RETARGETS`, ...), in the
    /// kernel's loss map with the others, so every reader of the losses sees it. The programs
    /// never write those counters: no race with them.
    pub fn add_loss(&mut self, which: u32, n: u64) -> anyhow::Result<()> {
        let mut v: Vec<u64> = self.losses.get(&which, 0)?.iter().copied().collect();
        if let Some(first) = v.first_mut() {
            *first = first.wrapping_add(n);
        }
        self.losses
            .set(which, aya::maps::PerCpuValues::try_from(v)?, 0)?;
        Ok(())
    }

    /// `sites` (a read of the site map) with their frames and series.
    fn live_sites(
        &self,
        sites: Vec<(StackKey, SiteStats)>,
        only: Option<&BTreeSet<u32>>,
    ) -> Vec<RawSite> {
        let mut out = Vec::new();
        let sites: Vec<_> = sites
            .into_iter()
            .filter(|(key, _)| only.is_none_or(|set| set.contains(&key.tgid)))
            .collect();
        let want = sites.iter().map(|(key, _)| *key).collect();
        // One entry per key: the site table adds a site's lanes up.
        let mut stacks = stack_frames::read(&self.stacks, &want);
        for (key, stats) in sites {
            let (ips, cut) = stacks
                .remove(&key)
                .unwrap_or((Vec::new(), abi::stack_cut::NONE));
            let series = self
                .series
                .get(&key)
                .map(|pts| pts.iter().copied().collect())
                .unwrap_or_default();
            out.push(RawSite {
                key,
                stats,
                ips,
                cut,
                series,
                live: None,
            });
        }
        out
    }

    /// Adds a point at `t` to the series of every site whose counters moved since its last
    /// point (`series::record`): the per-site data the pattern analyzers and the pictures
    /// need.
    fn record_series(&mut self, t: Duration, sites: &[SiteCounters]) {
        let before = self.last_drain.min(t);
        for s in sites.iter().filter(|s| s.changed) {
            let (key, c) = (s.key, s.counters);
            if c == Counters::default() {
                continue;
            }
            let pts = self
                .series
                .entry(key)
                .or_insert_with(|| Series::new(self.max_points));
            series::record(pts, before, t, c);
        }
    }

    /// Every site with its frames, live and retired.
    pub fn sites(&mut self) -> Vec<RawSite> {
        let mut out = self.retired_sites.clone();
        let sites = self.sites.read();
        out.extend(self.live_sites(sites, None));
        out
    }

    /// The site table's slots in use at the last read, how many of them are lanes past lane
    /// 0, and how many more such lanes may be claimed.
    pub fn site_slots(&self) -> (usize, usize, i64) {
        let (used, lanes) = self.sites.slots_in_use();
        (used, lanes, self.sites.spread_left())
    }

    /// Moves processes that no longer exist out of the kernel maps into user memory, so a
    /// system-wide run over many short-lived processes never fills the maps. Their blocks
    /// still in flight are swept from the in-flight map every `sweep_every` calls.
    pub fn retire_dead(&mut self) {
        let dead: BTreeSet<u32> = self
            .procs
            .keys()
            .filter_map(Result::ok)
            .filter(|pid| !Path::new(&format!("/proc/{pid}")).exists())
            .collect();
        if dead.is_empty() {
            return;
        }
        // One read of the site map serves the dead processes' totals and their sites.
        let sites = self.sites.read();
        let all = self.processes_with(
            sites.iter().map(|(k, st)| (k.tgid, site_counters(st))),
            true,
        );
        for pid in &dead {
            if let Some(p) = all.get(pid) {
                self.retired_procs.insert(*pid, p.clone());
            }
        }
        let sites = self.live_sites(sites, Some(&dead));
        self.sites.retire(|pid| dead.contains(&pid));
        for s in &sites {
            let _ = self.stacks.remove(&s.key);
        }
        for s in &sites {
            self.series.remove(&s.key);
        }
        self.retired_sites.extend(sites);
        for pid in &dead {
            let _ = self.procs.remove(pid);
            log::debug!("process {pid} retired: its sites left the kernel's tables");
        }
        // Counted into the retired totals above; from now on the slots are other processes'.
        for (cpu, pid) in self.owned.release(|pid| dead.contains(&pid)) {
            log::debug!("CPU {cpu}'s slot freed from exited process {pid}");
        }
        self.live_sweep_due = true;
    }

    /// Gives each of `sites` its blocks never freed: those in the in-flight table, as at
    /// `end_ns` (CLOCK_MONOTONIC: the end of the trace, when the probes stopped), and those of
    /// retired processes as they were when swept. A site with none gets an empty set.
    pub fn read_live(&mut self, sites: &mut [RawSite], end_ns: u64) -> Result<(), DrainError> {
        let now = end_ns;
        let mut by_site = live_blocks::by_site(self.live.blocks()?, now);
        for (key, b) in std::mem::take(&mut self.retired_live) {
            by_site.entry(key).or_default().absorb(b);
        }
        for s in sites {
            s.live = Some(by_site.remove(&s.key).unwrap_or(live_blocks::Births {
                read_ns: now,
                blocks: Vec::new(),
            }));
        }
        let orphans: usize = by_site.values().map(|b| b.blocks.len()).sum();
        if orphans > 0 {
            log::debug!("in-flight table: {orphans} blocks of sites no longer in the site table");
        }
        Ok(())
    }

    /// Forgets the processes retired so far (their totals, sites and leaked blocks), once
    /// their blocks have been swept from the in-flight table: a daemon that runs for days
    /// keeps only the processes still running, where a run's report keeps every one. Returns
    /// their pids (none while a sweep is due).
    pub fn forget_retired(&mut self) -> Vec<u32> {
        if self.live_sweep_due {
            return Vec::new();
        }
        self.retired_sites = Vec::new();
        self.retired_live = StdHashMap::new();
        std::mem::take(&mut self.retired_procs)
            .into_keys()
            .collect()
    }

    /// Drops in-flight blocks of processes that are gone (their frees can never come).
    pub fn sweep_live(&mut self) {
        if !std::mem::take(&mut self.live_sweep_due) {
            return;
        }
        let retired = &self.retired_procs;
        match self.live.retire(|tgid| retired.contains_key(&tgid)) {
            Ok((dropped, blocks)) => {
                for (pid, n) in dropped {
                    log::debug!("in-flight table: {n} blocks of exited process {pid} dropped");
                }
                // Kept for the leak report: those blocks were never freed.
                let now = live_blocks::monotonic_ns();
                for (key, b) in live_blocks::by_site(blocks, now) {
                    self.retired_live.entry(key).or_default().absorb(b);
                }
            }
            // Without it, exited processes' blocks hold their slots: new blocks may be lost,
            // and are counted as live_map_full.
            Err(e) => log::warn!("{e}: exited processes' blocks stay in the in-flight table"),
        }
    }
}
