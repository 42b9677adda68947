//! The Go GC cycles the kernel counted (`alloctrace_common::go`): the table set up before
//! tracing, read at each interval (`Table`) and at the end into each Go process's `GoRuntime`.
use std::collections::HashMap;
use std::os::fd::AsFd;
use std::time::Duration;

use alloctrace_common::go::{GO_GC_LOST, MAP_GO_GC};
use alloctrace_common::GoGc;
use aya::maps::{HashMap as BpfHashMap, Map, MapData};

use crate::model::{GoRuntime, Process};

/// Puts the entry at `GO_GC_LOST` in (cycles the full table could not record are counted
/// there). Without the map (an object from before it) nothing is counted, said once.
pub fn prepare(ebpf: &mut aya::Ebpf) {
    let Some(map) = ebpf.map_mut(MAP_GO_GC) else {
        log::warn!("the eBPF object has no {MAP_GO_GC} map: Go GC cycles are not counted");
        return;
    };
    let table: Result<BpfHashMap<&mut MapData, u32, GoGc>, _> = map.try_into();
    if let Err(e) = table.and_then(|mut t| t.insert(GO_GC_LOST, GoGc::default(), 0)) {
        log::warn!("cannot set up the Go GC table ({e}): Go GC cycles are not counted");
    }
}

/// Every process's counted cycles, as the model says them: times since `start_ns` (the trace's
/// start on the kernel's monotonic clock). Cycles the full table lost are said on stderr.
pub fn read(ebpf: &aya::Ebpf, start_ns: u64) -> HashMap<u32, GoRuntime> {
    let Some(map) = ebpf.map(MAP_GO_GC) else {
        return HashMap::new();
    };
    let Ok(table) = BpfHashMap::<&MapData, u32, GoGc>::try_from(map) else {
        return HashMap::new();
    };
    let (counted, lost) = runtimes(&table, start_ns);
    if lost > 0 {
        eprintln!(
            "alloctrace: {lost} Go GC cycles not counted: more than {} Go processes",
            alloctrace_common::go::GO_GC_PROCS - 1
        );
    }
    counted
}

/// The table's entries as the model says them, and the cycles the full table lost.
fn runtimes<T: std::borrow::Borrow<MapData>>(
    table: &BpfHashMap<T, u32, GoGc>,
    start_ns: u64,
) -> (HashMap<u32, GoRuntime>, u64) {
    let since = |ns: u64| Duration::from_nanos(ns.saturating_sub(start_ns));
    let mut out = HashMap::new();
    let mut lost = 0;
    for (tgid, gc) in table.iter().flatten() {
        if tgid == GO_GC_LOST {
            lost = gc.cycles;
            continue;
        }
        out.insert(
            tgid,
            GoRuntime {
                gc_cycles: gc.cycles,
                first_gc: since(gc.first_ns),
                last_gc: since(gc.last_ns),
                memstats: None,
            },
        );
    }
    (out, lost)
}

/// The GC table read at each interval, through a descriptor of its own: the programs' lock
/// (held while the event thread attaches a new process's probes) is not waited for.
pub struct Table {
    table: BpfHashMap<MapData, u32, GoGc>,
    /// The trace's start on the kernel's monotonic clock.
    start_ns: u64,
    /// The runtimes' own statistics, read with the cycles.
    memstats: std::sync::Mutex<super::memstats::Reader>,
}

impl Table {
    /// The programs' GC table, or None (said once) without one.
    pub fn open(ebpf: &aya::Ebpf, start_ns: u64) -> Option<Table> {
        let map = ebpf.map(MAP_GO_GC)?;
        let Map::HashMap(data) = map else {
            return None;
        };
        let opened = data
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(anyhow::Error::from)
            .and_then(|fd| Ok(MapData::from_fd(fd)?))
            .and_then(|d| Ok(BpfHashMap::try_from(Map::HashMap(d))?));
        match opened {
            Ok(table) => Some(Table {
                table,
                start_ns,
                memstats: Default::default(),
            }),
            Err(e) => {
                log::warn!("cannot open the Go GC table ({e}): no GC cycles per interval");
                None
            }
        }
    }

    /// Marks the Go processes among `processes` with the cycles counted so far (as `annotate`
    /// does at the end) and their runtimes' own statistics: a few system calls per Go process traced, none for others.
    pub fn annotate(&self, processes: &mut [Process]) {
        let (counted, _) = runtimes(&self.table, self.start_ns);
        annotate(processes, counted);
        self.memstats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fill(processes);
    }
}

/// Marks the processes that run Go (`go`: their allocators include Go's runtime) with what
/// their runtime did: the cycles counted, or none (a Go process whose collector never ran
/// while traced is told as such, not left out).
pub fn annotate(processes: &mut [Process], mut counted: HashMap<u32, GoRuntime>) {
    for p in processes {
        let runs_go = p.allocators.iter().any(|a| a.name == "go");
        // The runtime's statistics read at the last interval stay.
        let memstats = p.go.take().and_then(|g| g.memstats);
        if let Some(gc) = counted.remove(&p.pid) {
            p.go = Some(GoRuntime { memstats, ..gc });
        } else if runs_go || memstats.is_some() {
            p.go = Some(GoRuntime {
                memstats,
                ..GoRuntime::default()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AllocatorUse;

    #[test]
    fn go_processes_are_annotated_even_without_a_cycle() {
        let mut ps = vec![
            crate::testkit::proc_(1, "c", Default::default()),
            crate::testkit::proc_(2, "g", Default::default()),
        ];
        ps[1].allocators.push(AllocatorUse {
            name: "go".into(),
            path: "/bin/g".into(),
            version: Some("go1.19.8".into()),
        });
        annotate(&mut ps, HashMap::new());
        assert_eq!(ps[0].go, None);
        assert_eq!(ps[1].go, Some(GoRuntime::default()));
        let gc = GoRuntime {
            gc_cycles: 3,
            first_gc: Duration::from_millis(5),
            last_gc: Duration::from_millis(50),
            memstats: None,
        };
        annotate(&mut ps, HashMap::from([(2, gc.clone())]));
        assert_eq!(ps[1].go, Some(gc));
    }
}
