//! What alloctrace reads of Go programs beyond their symbols: the function table (`pclntab`),
//! for stripped binaries; the GC cycles the kernel counted (`gc`); the runtime's own
//! statistics read from its memory (`memstats`).
pub mod gc;
pub mod memstats;
pub mod pclntab;

use crate::model::{Frame, Profile};

/// A Go site's stack as Go's own heap profile writes it (runtime/pprof's `writeHeapProto`):
/// without the leading `runtime.` frames (`runtime.newobject`, `runtime.makeslice`...) when a
/// frame outside the runtime follows, so `go tool pprof -top` lists `main.buildIndex` where
/// Go's `allocs` profile does. A stack entirely in the runtime is kept whole.
pub fn profile_frames(frames: &[Frame]) -> &[Frame] {
    let runtime = |f: &Frame| {
        f.function
            .as_deref()
            .is_some_and(|n| n.starts_with("runtime."))
    };
    match frames.iter().position(|f| !runtime(f)) {
        Some(i) => &frames[i..],
        None => frames,
    }
}

/// The text report's line on the Go processes' runtimes: their GC cycles, and why no free is
/// counted for them. None when no process ran Go.
pub fn runtime_line(p: &Profile) -> Option<String> {
    let go: Vec<_> = p
        .processes
        .iter()
        .filter_map(|p| p.go.as_ref().map(|g| (p.pid, g)))
        .collect();
    if go.is_empty() {
        return None;
    }
    let cycles: u64 = go.iter().map(|(_, g)| g.gc_cycles).sum();
    let last = go
        .iter()
        .filter(|(_, g)| g.gc_cycles > 0)
        .map(|(_, g)| g.last_gc)
        .max();
    let whose = if go.len() == 1 {
        format!("pid {}", go[0].0)
    } else {
        format!("{} processes", go.len())
    };
    let when = last.map_or(String::new(), |t| {
        format!(", the last ending at {:.2}s", t.as_secs_f64())
    });
    Some(format!(
        "{cycles} GC cycles completed ({whose}){when}; frees and live heap not measured: Go \
         frees by garbage collection, not by calls"
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::GoRuntime;

    #[test]
    fn profile_frames_hide_the_runtime_as_go_does() {
        let f = |n: &str| crate::testkit::frame(Some(n), "/bin/g");
        let stack = [f("runtime.makeslice"), f("main.build"), f("runtime.main")];
        assert_eq!(profile_frames(&stack)[0].name(), "main.build");
        assert_eq!(profile_frames(&stack).len(), 2);
        let runtime_only = [f("runtime.malg"), f("runtime.newm")];
        assert_eq!(profile_frames(&runtime_only).len(), 2);
    }

    #[test]
    fn runtime_line_says_cycles_and_why_no_frees() {
        let mut p = crate::testkit::profile(1000, vec![]);
        assert_eq!(runtime_line(&p), None);
        let mut g = crate::testkit::proc_(42, "g", Default::default());
        g.go = Some(GoRuntime {
            gc_cycles: 3,
            first_gc: Duration::from_millis(100),
            last_gc: Duration::from_millis(1500),
            memstats: None,
        });
        p.processes = vec![g];
        assert_eq!(
            runtime_line(&p).unwrap(),
            "3 GC cycles completed (pid 42), the last ending at 1.50s; frees and live heap not \
             measured: Go frees by garbage collection, not by calls"
        );
    }
}
