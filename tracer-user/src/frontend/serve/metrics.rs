//! `/metrics`: the newest snapshot in Prometheus' text format (version 0.0.4). Per live
//! process (labels `pid`, `comm`, `allocator`): allocations, bytes, frees, freed bytes and
//! unknown frees as counters, live bytes and objects as gauges; Go processes' GC cycles and
//! their runtimes' own MemStats fields where read; the losses; alloctrace's own
//! CPU time and resident memory. A process that exited leaves the page, so the series do not
//! grow with every pid the machine ever ran.
use std::fmt::Write;

use crate::engine::Snapshot;
use crate::model::{GoMemStats, Process};

/// alloctrace's own cost, as Prometheus' client libraries name it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Own {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub start_unix_secs: u64,
}

/// The page, listing the processes `alive` says are still running.
pub fn render(s: &Snapshot, alive: impl Fn(u32) -> bool, own: Own) -> String {
    let live: Vec<&Process> = s.processes.iter().filter(|p| alive(p.pid)).collect();
    let mut out = String::with_capacity(256 + live.len() * 900);
    type Value = fn(&Process) -> u64;
    let per_process: [(&str, &str, &str, Value); 7] = [
        (
            "alloctrace_allocations_total",
            "counter",
            "Allocations (malloc, calloc, realloc, aligned and allocator-specific calls) since tracing began.",
            |p| p.counters.allocs,
        ),
        (
            "alloctrace_allocated_bytes_total",
            "counter",
            "Bytes requested by those allocations.",
            |p| p.counters.bytes,
        ),
        (
            "alloctrace_frees_total",
            "counter",
            "Frees of blocks allocated while traced.",
            |p| p.counters.frees,
        ),
        (
            "alloctrace_freed_bytes_total",
            "counter",
            "Bytes of those blocks.",
            |p| p.counters.freed_bytes,
        ),
        (
            "alloctrace_unknown_frees_total",
            "counter",
            "Frees of blocks allocated before tracing began (or lost).",
            |p| p.unknown_frees,
        ),
        (
            "alloctrace_live_bytes",
            "gauge",
            "Bytes allocated while traced and not freed yet.",
            |p| p.counters.live_bytes(),
        ),
        (
            "alloctrace_live_objects",
            "gauge",
            "Blocks allocated while traced and not freed yet.",
            |p| p.counters.live_objects(),
        ),
    ];
    for (name, kind, help, value) in per_process {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for p in &live {
            let _ = writeln!(out, "{name}{{{}}} {}", labels(p), value(p));
        }
    }
    let _ = writeln!(
        out,
        "# HELP alloctrace_go_gc_cycles_total Go GC cycles completed while traced \
         (runtime.gcMarkTermination entries: MemStats.NumGC's steps), Go processes only.\n\
         # TYPE alloctrace_go_gc_cycles_total counter"
    );
    for p in &live {
        if let Some(go) = &p.go {
            let _ = writeln!(
                out,
                "alloctrace_go_gc_cycles_total{{{}}} {}",
                labels(p),
                go.gc_cycles
            );
        }
    }
    go_memstats(&mut out, &live);
    let _ = writeln!(
        out,
        "# HELP alloctrace_processes Traced processes still running.\n\
         # TYPE alloctrace_processes gauge\nalloctrace_processes {}",
        live.len()
    );
    let _ = writeln!(
        out,
        "# HELP alloctrace_lost_total Data alloctrace could not record, by what was lost.\n\
         # TYPE alloctrace_lost_total counter"
    );
    for (what, n, _) in s.losses.nonzero() {
        let _ = writeln!(
            out,
            "alloctrace_lost_total{{what=\"{}\"}} {n}",
            escape(what)
        );
    }
    let _ = writeln!(
        out,
        "# HELP alloctrace_trace_seconds Time since tracing began, as of the last snapshot.\n\
         # TYPE alloctrace_trace_seconds gauge\nalloctrace_trace_seconds {:.3}",
        s.sample.t.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "# HELP process_cpu_seconds_total alloctrace's own user and system CPU time.\n\
         # TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {:.3}\n\
         # HELP process_resident_memory_bytes alloctrace's own resident memory.\n\
         # TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}\n\
         # HELP process_start_time_seconds When alloctrace started tracing, Unix time.\n\
         # TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {}",
        own.cpu_seconds, own.resident_bytes, own.start_unix_secs
    );
    out
}

/// The Go runtimes' own MemStats fields, read from their memory (`golang::memstats`), for the
/// processes where they could be read.
fn go_memstats(out: &mut String, live: &[&Process]) {
    type Field = fn(&GoMemStats) -> u64;
    let families: [(&str, &str, &str, Field); 4] = [
        (
            "alloctrace_go_memstats_gc_total",
            "counter",
            "The Go runtime's MemStats.NumGC (cycles since the program started), read from its memory.",
            |m| m.num_gc,
        ),
        (
            "alloctrace_go_memstats_forced_gc_total",
            "counter",
            "The Go runtime's MemStats.NumForcedGC.",
            |m| m.num_forced_gc,
        ),
        (
            "alloctrace_go_memstats_gc_pause_ns_total",
            "counter",
            "The Go runtime's MemStats.PauseTotalNs.",
            |m| m.pause_total_ns,
        ),
        (
            "alloctrace_go_memstats_last_gc_unix_ns",
            "gauge",
            "The Go runtime's MemStats.LastGC, nanoseconds since the Unix epoch (0: no cycle yet).",
            |m| m.last_gc_unix_ns,
        ),
    ];
    for (name, kind, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for p in live {
            if let Some(m) = p.go.as_ref().and_then(|g| g.memstats.as_ref()) {
                let _ = writeln!(out, "{name}{{{}}} {}", labels(p), value(m));
            }
        }
    }
}

/// A process's labels: `pid`, `comm`, `allocator` (its allocators, comma-separated).
fn labels(p: &Process) -> String {
    let allocators: Vec<&str> = p.allocators.iter().map(|a| a.name.as_str()).collect();
    format!(
        "pid=\"{}\",comm=\"{}\",allocator=\"{}\"",
        p.pid,
        escape(&p.comm),
        escape(&allocators.join(","))
    )
}

/// A label value as the format wants it: backslash, double quote and newline escaped.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// alloctrace's CPU time (getrusage) and resident memory (/proc/self/statm) now.
pub fn own(start_unix_secs: u64) -> Own {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one rusage into the pointer it is given.
    let cpu_seconds = if unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) } == 0 {
        // SAFETY: filled by the successful call above.
        let ru = unsafe { ru.assume_init() };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    } else {
        0.0
    };
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64;
    let resident_pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    Own {
        cpu_seconds,
        resident_bytes: resident_pages * page,
        start_unix_secs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AllocatorUse, Counters, Losses};

    fn process(pid: u32, comm: &str, allocs: u64) -> Process {
        Process {
            pid,
            comm: comm.to_string(),
            counters: Counters {
                allocs,
                bytes: allocs * 100,
                frees: 1,
                freed_bytes: 100,
            },
            unknown_frees: 2,
            unseen: None,
            go: None,
            allocators: vec![AllocatorUse {
                name: "glibc".into(),
                path: "/lib/libc.so.6".into(),
                version: None,
            }],
        }
    }

    #[test]
    fn live_processes_only_with_their_labels() {
        let s = Snapshot {
            processes: vec![process(10, "a\"b", 5), process(20, "gone", 7)],
            losses: Losses {
                stack_map_full: 3,
                ..Losses::default()
            },
            ..Snapshot::default()
        };
        let text = render(&s, |pid| pid == 10, Own::default());
        assert!(text.contains(
            "alloctrace_allocations_total{pid=\"10\",comm=\"a\\\"b\",allocator=\"glibc\"} 5\n"
        ));
        assert!(text.contains("alloctrace_allocated_bytes_total{pid=\"10\",comm=\"a\\\"b\",allocator=\"glibc\"} 500\n"));
        assert!(text.contains(
            "alloctrace_live_objects{pid=\"10\",comm=\"a\\\"b\",allocator=\"glibc\"} 4\n"
        ));
        assert!(
            !text.contains("pid=\"20\""),
            "an exited process leaves:\n{text}"
        );
        assert!(text.contains("alloctrace_lost_total{what=\"stack map full\"} 3\n"));
        assert!(text.contains("alloctrace_processes 1\n"));
        // Every sample line belongs to a declared family.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(text.contains(&format!("# TYPE {name} ")), "{line}");
        }
    }

    #[test]
    fn go_processes_alone_have_gc_cycles() {
        let mut go = process(30, "goprog", 9);
        go.allocators[0].name = "go".into();
        go.go = Some(crate::model::GoRuntime {
            gc_cycles: 12,
            memstats: Some(GoMemStats {
                num_gc: 40,
                num_forced_gc: 2,
                pause_total_ns: 9000,
                last_gc_unix_ns: 1_700_000_000_000_000_000,
            }),
            ..Default::default()
        });
        let s = Snapshot {
            processes: vec![process(10, "c", 5), go],
            ..Snapshot::default()
        };
        let text = render(&s, |_| true, Own::default());
        assert!(text.contains(
            "alloctrace_go_gc_cycles_total{pid=\"30\",comm=\"goprog\",allocator=\"go\"} 12\n"
        ));
        assert_eq!(text.matches("alloctrace_go_gc_cycles_total{").count(), 1);
        for (family, value) in [
            ("alloctrace_go_memstats_gc_total", "40"),
            ("alloctrace_go_memstats_forced_gc_total", "2"),
            ("alloctrace_go_memstats_gc_pause_ns_total", "9000"),
            (
                "alloctrace_go_memstats_last_gc_unix_ns",
                "1700000000000000000",
            ),
        ] {
            assert!(
                text.contains(&format!(
                    "{family}{{pid=\"30\",comm=\"goprog\",allocator=\"go\"}} {value}\n"
                )),
                "{family}:\n{text}"
            );
            assert_eq!(text.matches(&format!("{family}{{")).count(), 1, "{text}");
        }
        assert!(text.contains("# TYPE alloctrace_go_gc_cycles_total counter\n"));
    }

    #[test]
    fn own_cost_is_measured() {
        let o = own(1);
        assert!(o.resident_bytes > 0);
    }
}
