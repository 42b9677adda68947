//! A Go program under `alloctrace serve --pid`, read while it runs: `/metrics`' GC cycles and
//! its runtime's MemStats fields against the program's own runtime.ReadMemStats.
use super::*;

/// The line tests/go-workloads/goalloc prints with its NumGC (no cycle runs after it).
const DONE: &str = "goroutines done, stack growth done, gc cycles ";

/// `alloctrace_go_gc_cycles_total` reaches the program's NumGC (several cycles: its churn
/// starts some, runtime.GC one more) while it still runs, and never passes it; its
/// allocations are labelled with Go's allocator.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn metrics_count_a_running_go_programs_gc_cycles() {
    assert_live_gc_metrics("go_alloc");
}

/// The same of a position-independent Go binary: its MemStats read at its load address.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn metrics_read_a_position_independent_go_programs_memstats() {
    assert_live_gc_metrics("go_alloc_pie");
}

fn assert_live_gc_metrics(name: &str) {
    alloctrace_bin();
    let mut w = Workload::start(name, &["hold"], &[]);
    let pid = w.pid();
    let s = serve(&["--pid", &pid.to_string()]);
    w.release();
    w.wait_for_line("holding");
    let out = w.stdout_text();
    let numgc: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix(DONE))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("the program printed no NumGC\n{}", w.describe()));
    assert!(numgc >= 2, "the churn started no GC cycle: {numgc}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let page = loop {
        let (status, body) = get(&s.addr, "/metrics", &[]);
        let page = String::from_utf8_lossy(&body).into_owned();
        let n = metric_of(&page, "alloctrace_go_gc_cycles_total", pid);
        assert!(
            status == 200 && n.is_none_or(|n| n <= numgc),
            "more GC cycles than the program's NumGC {numgc}:\n{page}"
        );
        if n == Some(numgc) {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "/metrics never showed {numgc} GC cycles for pid {pid} (last {n:?}):\n{page}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let line = page
        .lines()
        .find(|l| l.starts_with("alloctrace_go_gc_cycles_total{"))
        .unwrap();
    assert!(line.contains("allocator=\"go\""), "{line}");
    assert!(
        page.contains("# TYPE alloctrace_go_gc_cycles_total counter\n"),
        "{page}"
    );
    // The runtime's own MemStats, read from its memory: equal to what ReadMemStats gave it.
    let own: Vec<u64> = out
        .lines()
        .find_map(|l| l.strip_prefix("memstats "))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .step_by(2)
                .map(|n| n.parse().unwrap())
                .collect()
        })
        .unwrap_or_else(|| panic!("the program printed no memstats line\n{out}"));
    let families = [
        "alloctrace_go_memstats_gc_total",
        "alloctrace_go_memstats_forced_gc_total",
        "alloctrace_go_memstats_gc_pause_ns_total",
        "alloctrace_go_memstats_last_gc_unix_ns",
    ];
    let read: Vec<Option<u64>> = families.iter().map(|f| metric_of(&page, f, pid)).collect();
    assert_eq!(
        read,
        own.iter().copied().map(Some).collect::<Vec<_>>(),
        "{families:?}: /metrics against the program's runtime.ReadMemStats\n{page}"
    );
    assert!(own[1] >= 1 && own[2] > 0 && own[3] > 0, "{out}");
    drop(s);
    w.release();
    w.wait_code(0);
}
