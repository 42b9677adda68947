//! The live view's state, apart from any terminal: the newest snapshot and profile, each
//! process's rates over the last interval and their history (the sparkline), each site's
//! rates, the sort key and the selected process. Pure: `draw` reads it, `keys` change it.
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::analyze::hotspots::caller_frame;
use crate::analyze::patterns::{classify, PatternClass};
use crate::analyze::Options;
use crate::engine::Snapshot;
use crate::model::{Counters, Frame, Profile, Site};

/// Intervals of rate history kept per process: more than the widest sparkline draws.
const HISTORY: usize = 512;

/// The order of the selected process's sites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    /// Bytes allocated since the trace began.
    Bytes,
    /// Allocations since the trace began.
    Count,
    /// Live bytes (allocated, not yet freed).
    Live,
    /// Allocations per second over the last interval.
    Rate,
}

impl SortKey {
    pub fn name(self) -> &'static str {
        match self {
            SortKey::Bytes => "bytes",
            SortKey::Count => "count",
            SortKey::Live => "live",
            SortKey::Rate => "rate",
        }
    }
}

/// One process over the last interval, and in total.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcRow {
    pub pid: u32,
    pub comm: String,
    pub bytes_per_s: f64,
    pub allocs_per_s: f64,
    pub frees_per_s: f64,
    /// Since the trace began.
    pub total: Counters,
    /// A Go process's GC cycles completed while traced; None for a process not running Go.
    pub gc_cycles: Option<u64>,
}

/// One site of the selected process.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteRow {
    /// The function that asked for the memory (the first frame outside the allocator).
    pub function: String,
    pub allocs_per_s: f64,
    pub bytes_per_s: f64,
    pub total: Counters,
    pub class: PatternClass,
}

/// What the view shows (see the module's comment).
pub struct App {
    pub sort: SortKey,
    /// The selected process's pid: kept when rows reorder.
    pub selected: Option<u32>,
    /// Most bytes per second first.
    pub procs: Vec<ProcRow>,
    pub snapshot: Arc<Snapshot>,
    profile: Option<Profile>,
    options: Options,
    /// Bytes allocated per second, one value per interval, per pid.
    history: HashMap<u32, VecDeque<u64>>,
    /// Every site's counters at the previous update, and the rates since.
    sites_before: HashMap<(u32, u64), Counters>,
    site_rates: HashMap<(u32, u64), (f64, f64)>,
    /// Updates seen (0: nothing drained yet).
    pub updates: u64,
    /// alloctrace's newest message (its standard error, captured while the view is shown).
    pub note: Option<String>,
}

impl App {
    pub fn new(options: Options) -> App {
        App {
            sort: SortKey::Bytes,
            selected: None,
            procs: Vec::new(),
            snapshot: Arc::default(),
            profile: None,
            options,
            history: HashMap::new(),
            sites_before: HashMap::new(),
            site_rates: HashMap::new(),
            updates: 0,
            note: None,
        }
    }

    /// An interval's snapshot and the profile as of it.
    pub fn update(&mut self, snapshot: Arc<Snapshot>, profile: Profile) {
        let secs = interval_secs(&snapshot);
        let zero = Counters::default();
        let mut procs: Vec<ProcRow> = snapshot
            .processes
            .iter()
            .map(|p| {
                let now = snapshot.sample.processes.get(&p.pid).unwrap_or(&p.counters);
                let before = snapshot
                    .previous
                    .as_ref()
                    .and_then(|s| s.processes.get(&p.pid))
                    .unwrap_or(&zero);
                let d = now.since(before);
                ProcRow {
                    pid: p.pid,
                    comm: p.comm.clone(),
                    bytes_per_s: d.bytes as f64 / secs,
                    allocs_per_s: d.allocs as f64 / secs,
                    frees_per_s: d.frees as f64 / secs,
                    total: *now,
                    gc_cycles: p.go.as_ref().map(|g| g.gc_cycles),
                }
            })
            .collect();
        procs.sort_by(|a, b| {
            b.bytes_per_s
                .total_cmp(&a.bytes_per_s)
                .then(b.total.bytes.cmp(&a.total.bytes))
                .then(a.pid.cmp(&b.pid))
        });
        for p in &procs {
            let h = self.history.entry(p.pid).or_default();
            if h.len() == HISTORY {
                h.pop_front();
            }
            h.push_back(p.bytes_per_s.round() as u64);
        }
        // Processes no longer listed (retired) take their history with them.
        let listed: HashSet<u32> = procs.iter().map(|p| p.pid).collect();
        self.history.retain(|pid, _| listed.contains(pid));
        let mut before = HashMap::with_capacity(profile.sites.len());
        self.site_rates.clear();
        for s in &profile.sites {
            let key = (s.pid, s.stack_id);
            let d = s
                .counters
                .since(self.sites_before.get(&key).unwrap_or(&zero));
            self.site_rates
                .insert(key, (d.allocs as f64 / secs, d.bytes as f64 / secs));
            before.insert(key, s.counters);
        }
        self.sites_before = before;
        if !self
            .selected
            .is_some_and(|pid| procs.iter().any(|p| p.pid == pid))
        {
            self.selected = procs.first().map(|p| p.pid);
        }
        self.procs = procs;
        self.snapshot = snapshot;
        self.profile = Some(profile);
        self.updates += 1;
    }

    /// The profile as of the last update.
    pub fn profile(&self) -> Option<&Profile> {
        self.profile.as_ref()
    }

    /// Whether frees are traced (not in `--mode alloc-only`): live bytes and frees mean
    /// something.
    pub fn sees_frees(&self) -> bool {
        self.profile.as_ref().is_none_or(|p| p.mode.sees_frees())
    }

    /// The selected process's row.
    pub fn selected_proc(&self) -> Option<&ProcRow> {
        self.selected_row().map(|i| &self.procs[i])
    }

    /// Moves the selection `by` rows (negative: up), staying within the rows.
    pub fn select(&mut self, by: isize) {
        let Some(last) = self.procs.len().checked_sub(1) else {
            return;
        };
        let at = self.selected_row().unwrap_or(0);
        let to = at.saturating_add_signed(by).min(last);
        self.selected = Some(self.procs[to].pid);
    }

    /// The selected process's row index.
    pub fn selected_row(&self) -> Option<usize> {
        let pid = self.selected?;
        self.procs.iter().position(|p| p.pid == pid)
    }

    /// The selected process's allocation rate (bytes per second), oldest interval first.
    pub fn history(&self) -> Vec<u64> {
        self.selected
            .and_then(|pid| self.history.get(&pid))
            .map(|h| h.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The selected process's first `n` sites in the sort order, and how many it has.
    pub fn site_rows(&self, n: usize) -> (Vec<SiteRow>, usize) {
        let (Some(pid), Some(p)) = (self.selected, self.profile.as_ref()) else {
            return (Vec::new(), 0);
        };
        let rate = |s: &Site| {
            self.site_rates
                .get(&(s.pid, s.stack_id))
                .copied()
                .unwrap_or((0.0, 0.0))
        };
        let mut sites: Vec<&Site> = p.sites.iter().filter(|s| s.pid == pid).collect();
        let total = sites.len();
        sites.sort_by(|a, b| {
            let by = match self.sort {
                SortKey::Bytes => b.counters.bytes.cmp(&a.counters.bytes),
                SortKey::Count => b.counters.allocs.cmp(&a.counters.allocs),
                SortKey::Live => b.counters.live_bytes().cmp(&a.counters.live_bytes()),
                SortKey::Rate => rate(b).0.total_cmp(&rate(a).0),
            };
            by.then(b.counters.bytes.cmp(&a.counters.bytes))
                .then(a.stack_id.cmp(&b.stack_id))
        });
        // Only the rows shown are classified: a process can have thousands of sites.
        let rows = sites
            .into_iter()
            .take(n)
            .map(|s| {
                let (allocs_per_s, bytes_per_s) = rate(s);
                SiteRow {
                    function: caller_frame(s).map_or_else(|| "[no stack]".to_string(), Frame::name),
                    allocs_per_s,
                    bytes_per_s,
                    total: s.counters,
                    class: classify(p, s, &self.options).class,
                }
            })
            .collect();
        (rows, total)
    }
}

/// The snapshot's interval in seconds (since the start for the first one), never zero.
fn interval_secs(s: &Snapshot) -> f64 {
    let start = s.previous.as_ref().map_or(Duration::ZERO, |p| p.t);
    s.sample.t.saturating_sub(start).as_secs_f64().max(1e-3)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::testkit::{c, command_profile, frame, proc_, sample, site};

    /// An update at `t_ms` (the previous sample at `t_ms - 1000`) of processes 100 and 200,
    /// with these sites of process 100.
    fn update(app: &mut App, t_ms: u64, procs: [(Counters, Counters); 2], sites: Vec<Site>) {
        let snapshot = Snapshot {
            sample: sample(t_ms, &[(100, procs[0].1), (200, procs[1].1)]),
            previous: Some(sample(t_ms - 1000, &[(100, procs[0].0), (200, procs[1].0)])),
            processes: vec![
                proc_(100, "prog", procs[0].1),
                proc_(200, "other", procs[1].1),
            ],
            losses: Default::default(),
        };
        let profile = command_profile(snapshot.processes.clone(), sites, vec![], t_ms);
        app.update(Arc::new(snapshot), profile);
    }

    fn named(stack_id: u64, name: &str, counters: Counters) -> Site {
        site(100, stack_id, vec![frame(Some(name), "/prog")], counters)
    }

    #[test]
    fn processes_show_the_intervals_rates_busiest_first() {
        let mut app = App::new(Options::default());
        let (a0, a1) = (c(10, 1000, 5, 500), c(110, 3000, 105, 2500));
        let (b0, b1) = (c(0, 0, 0, 0), c(4, 40_000, 0, 0));
        update(&mut app, 2000, [(a0, a1), (b0, b1)], vec![]);
        let pids: Vec<u32> = app.procs.iter().map(|p| p.pid).collect();
        assert_eq!(pids, [200, 100], "most bytes per second first");
        let a = &app.procs[1];
        assert_eq!(
            (a.bytes_per_s, a.allocs_per_s, a.frees_per_s, a.total),
            (2000.0, 100.0, 100.0, a1)
        );
        assert_eq!(app.selected, Some(200), "the first row is selected");
        app.select(1);
        assert_eq!(app.selected, Some(100));
        app.select(5);
        assert_eq!(
            app.selected,
            Some(100),
            "the selection stays within the rows"
        );
        app.select(-3);
        assert_eq!(app.selected, Some(200));
        assert_eq!(app.history(), [40_000]);
    }

    #[test]
    fn a_go_process_alone_has_gc_cycles() {
        let mut app = App::new(Options::default());
        let zero = c(0, 0, 0, 0);
        let p = [(zero, c(1, 16, 0, 0)), (zero, c(2, 32, 0, 0))];
        let snapshot = Snapshot {
            sample: sample(2000, &[(100, p[0].1), (200, p[1].1)]),
            previous: Some(sample(1000, &[(100, zero), (200, zero)])),
            processes: vec![proc_(100, "prog", p[0].1), {
                let mut g = proc_(200, "goprog", p[1].1);
                g.go = Some(crate::model::GoRuntime {
                    gc_cycles: 7,
                    ..Default::default()
                });
                g
            }],
            losses: Default::default(),
        };
        let profile = command_profile(snapshot.processes.clone(), vec![], vec![], 2000);
        app.update(Arc::new(snapshot), profile);
        let gc: Vec<(u32, Option<u64>)> = app.procs.iter().map(|p| (p.pid, p.gc_cycles)).collect();
        assert_eq!(gc, [(200, Some(7)), (100, None)]);
    }

    #[test]
    fn each_sort_key_puts_its_own_site_first() {
        let mut app = App::new(Options::default());
        let zero = c(0, 0, 0, 0);
        let early = |n| named(1, "early", c(n, 16 * n, n, 16 * n));
        let fast = |n| named(2, "fast", c(n, 64 * n, n, 64 * n));
        let big = |n| named(3, "big", c(n, n << 20, n, n << 20));
        let keep = |n| named(4, "keep", c(n, 256 * n, 0, 0));
        let p = [(zero, c(1, 1, 0, 0)), (zero, zero)];
        update(
            &mut app,
            1000,
            p,
            vec![early(1_000_000), fast(0), big(0), keep(0)],
        );
        update(
            &mut app,
            2000,
            p,
            vec![early(1_000_000), fast(20_000), big(100), keep(100)],
        );
        app.selected = Some(100);
        let first = |app: &App| app.site_rows(1).0[0].function.clone();
        for (key, want) in [
            (SortKey::Bytes, "big"),
            (SortKey::Count, "early"),
            (SortKey::Live, "keep"),
            (SortKey::Rate, "fast"),
        ] {
            app.sort = key;
            assert_eq!(first(&app), want, "sorted by {}", key.name());
        }
        let (rows, total) = app.site_rows(10);
        assert_eq!(total, 4);
        let fast = rows.iter().find(|r| r.function == "fast").unwrap();
        assert_eq!(
            (fast.allocs_per_s, fast.bytes_per_s),
            (20_000.0, 1_280_000.0)
        );
        app.selected = Some(200);
        assert_eq!(app.site_rows(10).1, 0, "the other process has no site");
    }
}
