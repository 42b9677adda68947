//! `alloctrace top --pid` of a running Go program: its row's GC column reaches the program's
//! own runtime.ReadMemStats NumGC while it still runs.
use super::*;

/// The line tests/go-workloads/goalloc prints with its NumGC (no cycle runs after it).
const DONE: &str = "goroutines done, stack growth done, gc cycles ";

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn top_shows_a_go_programs_gc_cycles() {
    let bin = alloctrace_bin();
    let mut w = Workload::start("go_alloc", &["hold"], &[]);
    let pid = w.pid();
    let command = format!(
        "{bin} top --interval 250ms --pid {pid}; echo alloctrace exited $?; sleep 600",
        bin = bin.display(),
    );
    let t = Tmux::start(&command, 200, 50);
    // The view is drawn once the engine has started: the probes are in.
    t.wait_for("the view was never drawn", SHOW, |s| {
        s.contains("processes (")
    });
    w.release();
    w.wait_for_line("holding");
    let numgc: u64 = w
        .stdout_text()
        .lines()
        .find_map(|l| l.strip_prefix(DONE))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("the program printed no NumGC\n{}", w.describe()));
    assert!(numgc >= 2, "the churn started no GC cycle: {numgc}");
    let screen = t.wait_for(
        &format!("the GC column never showed the program's NumGC {numgc}"),
        SHOW,
        |s| proc_cell(s, pid, "GC") == Some(numgc),
    );
    assert!(
        proc_cell(&screen, pid, "ALLOCS").is_some_and(|n| n > 0),
        "{screen}"
    );
    t.send_keys("q");
    let screen = t.wait_for("q did not end alloctrace", SHOW, |s| {
        s.contains("alloctrace exited")
    });
    assert!(screen.contains("alloctrace exited 0"), "{screen}");
    w.release();
    w.wait_code(0);
}
