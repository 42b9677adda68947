//! `/debug/pprof/`: the index page, as Go's net/http/pprof has one: the endpoints, and every
//! traced process still running with links to its profiles.
use std::fmt::Write;

use crate::engine::Snapshot;
use crate::numfmt;

/// The page, listing the processes `alive` says are still running.
pub fn index(s: &Snapshot, alive: impl Fn(u32) -> bool, max_seconds: u64) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
         <title>alloctrace: /debug/pprof/</title></head>\n<body>\n<h1>alloctrace</h1>\n<ul>\n",
    );
    for (href, what) in [
        ("/debug/pprof/allocs", "allocs: every allocation since tracing began (pprof, gzipped; ?pid=N, ?seconds=S for a delta)"),
        ("/debug/pprof/heap", "heap: the same, in-use shown first, as Go's"),
        ("/metrics", "metrics: Prometheus text format"),
        ("/", "the HTML report of the running trace"),
    ] {
        let _ = writeln!(out, "<li><a href=\"{href}\">{href}</a>: {}</li>", esc(what));
    }
    let _ = writeln!(
        out,
        "</ul>\n<p>?seconds=S: from 1 to {max_seconds}. \
         <code>go tool pprof http://HOST/debug/pprof/allocs?pid=N</code></p>\n\
         <h2>Processes</h2>\n<table>\n<tr><th>pid</th><th>command</th><th>allocations</th>\
         <th>bytes</th><th>live bytes</th><th>profiles</th></tr>"
    );
    for p in s.processes.iter().filter(|p| alive(p.pid)) {
        let _ = writeln!(
            out,
            "<tr><td>{pid}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td><a href=\"/debug/pprof/allocs?pid={pid}\">allocs</a> \
             <a href=\"/debug/pprof/heap?pid={pid}\">heap</a></td></tr>",
            esc(&p.comm),
            p.counters.allocs,
            numfmt::fmt_bytes(p.counters.bytes),
            numfmt::fmt_bytes(p.counters.live_bytes()),
            pid = p.pid,
        );
    }
    out.push_str("</table>\n</body>\n</html>\n");
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Counters, Process};

    #[test]
    fn lists_live_processes_with_links() {
        let p = |pid, comm: &str| Process {
            pid,
            comm: comm.into(),
            counters: Counters::default(),
            unknown_frees: 0,
            unseen: None,
            go: None,
            allocators: Vec::new(),
        };
        let s = Snapshot {
            processes: vec![p(7, "<x>"), p(8, "gone")],
            ..Snapshot::default()
        };
        let page = index(&s, |pid| pid == 7, 300);
        assert!(page.contains("href=\"/debug/pprof/allocs?pid=7\""));
        assert!(page.contains("&lt;x&gt;"));
        assert!(!page.contains("pid=8"));
    }
}
