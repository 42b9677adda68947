//! Folded stacks (`root;...;leaf VALUE`, one line per stack), the input of flamegraph.pl,
//! inferno and speedscope.
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;

use crate::analyze::Analysis;
use crate::export::{Exporter, Options};
use crate::model::{Frame, Profile, Site};

/// What the value of each folded stack measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FoldedWeight {
    /// Bytes allocated.
    Bytes,
    /// Number of allocations.
    Count,
    /// Bytes still live at the end.
    Live,
}

impl FoldedWeight {
    fn of(self, s: &Site) -> u64 {
        match self {
            FoldedWeight::Bytes => s.counters.bytes,
            FoldedWeight::Count => s.counters.allocs,
            FoldedWeight::Live => s.counters.live_bytes(),
        }
    }
}

/// A name made safe for one frame of a folded line: `;` (the frame separator) becomes `:`,
/// control characters (newlines) become spaces, and a trailing space-separated number gets
/// an underscore instead of its space — otherwise on the leaf frame inferno would read it as
/// a (differential) sample count.
fn sanitize(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c == ';' {
                ':'
            } else if c.is_control() {
                ' '
            } else {
                c
            }
        })
        .collect();
    if let Some(i) = s.rfind(' ') {
        let tail = &s[i + 1..];
        if !tail.is_empty() && tail.chars().all(|c| c.is_ascii_digit() || c == '.') {
            s.replace_range(i..i + 1, "_");
        }
    }
    if s.trim().is_empty() {
        s = "[unnamed]".to_string();
    }
    s
}

fn frame_name(f: &Frame) -> String {
    sanitize(&f.name())
}

/// `--folded FILE`.
pub struct Folded;

impl Exporter for Folded {
    fn option(&self) -> &'static str {
        "folded"
    }
    fn help(&self) -> &'static str {
        "Write flamegraph folded stacks (`root;...;leaf VALUE` per line) to FILE"
    }
    fn weighted(&self) -> bool {
        true
    }
    fn what(&self, p: &Profile) -> String {
        // The folded format has no room to say the values are estimates: said here instead.
        match p.sample_bytes {
            Some(n) => format!("folded stacks (values are estimates: --sample-bytes {n})"),
            None => "folded stacks".to_string(),
        }
    }
    fn render(&self, p: &Profile, _: &Analysis, o: &Options, _: &Path) -> Result<Vec<u8>> {
        Ok(folded(p, o.weight).into_bytes())
    }
}

/// One line per distinct stack, root (outermost frame) first, valued by `weight`; sites of
/// value 0 are skipped and sites whose symbolized stacks are identical are summed. When the
/// profile holds more than one process, every stack starts with a `comm (pid)` frame. Lines
/// are sorted, so equal profiles give identical files.
pub fn folded(p: &Profile, weight: FoldedWeight) -> String {
    let multi = p.is_multi_process();
    let comms: BTreeMap<u32, &str> = p
        .processes
        .iter()
        .map(|x| (x.pid, x.comm.as_str()))
        .collect();

    let mut stacks: BTreeMap<String, u64> = BTreeMap::new();
    for s in &p.sites {
        let value = weight.of(s);
        if value == 0 {
            continue;
        }
        let mut parts: Vec<String> = Vec::with_capacity(s.frames.len() + 1);
        if multi {
            let comm = comms
                .get(&s.pid)
                .copied()
                .filter(|c| !c.is_empty())
                .unwrap_or("[unknown]");
            parts.push(sanitize(&format!("{comm} ({})", s.pid)));
        }
        if s.frames.is_empty() {
            parts.push("[no stack]".to_string());
        }
        parts.extend(s.frames.iter().rev().map(frame_name));
        let slot = stacks.entry(parts.join(";")).or_default();
        *slot = slot.saturating_add(value);
    }

    let mut out = String::new();
    for (stack, value) in stacks {
        out.push_str(&stack);
        out.push(' ');
        out.push_str(&value.to_string());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Counters, Losses, Process, Target};
    use std::time::Duration;

    fn f(name: &str) -> Frame {
        Frame {
            addr: 1,
            function: Some(name.into()),
            ..Default::default()
        }
    }

    fn site(
        pid: u32,
        stack_id: u64,
        frames: &[&str],
        allocs: u64,
        bytes: u64,
        freed_bytes: u64,
    ) -> Site {
        Site {
            pid,
            stack_id,
            frames: frames.iter().map(|n| f(n)).collect(),
            counters: Counters {
                allocs,
                bytes,
                frees: 0,
                freed_bytes,
            },
            size_hist: vec![],
            life_hist: vec![],
            series: vec![],
            sampled: None,
            live: None,
        }
    }

    fn profile(processes: &[(u32, &str)], sites: Vec<Site>) -> Profile {
        Profile {
            target: Target::System,
            mode: crate::model::TraceMode::Full,
            start_unix_secs: 0,
            duration: Duration::from_secs(1),
            interval: Duration::from_secs(1),
            resolution: Duration::from_millis(100),
            samples: vec![],
            processes: processes
                .iter()
                .map(|(pid, comm)| Process {
                    pid: *pid,
                    comm: comm.to_string(),
                    counters: Counters::default(),
                    unknown_frees: 0,
                    unseen: None,
                    allocators: Vec::new(),
                    go: None,
                })
                .collect(),
            sites,
            losses: Losses::default(),
            modules: vec![],
            sample_bytes: None,
            tracer: None,
        }
    }

    fn one_process() -> Profile {
        profile(
            &[(7, "prog")],
            vec![
                site(7, 1, &["alloc_a", "main", "_start"], 10, 1000, 1000),
                site(7, 2, &["alloc_b", "main", "_start"], 3, 300, 100),
                // Same symbols as stack 1 (different return addresses): merged.
                site(7, 3, &["alloc_a", "main", "_start"], 1, 24, 0),
                site(7, 4, &["never"], 0, 0, 0),
                site(7, 5, &[], 2, 64, 0),
                site(7, 6, &["Vec<[u8; 8]>::push", "weird\nname 42"], 1, 8, 0),
            ],
        )
    }

    #[test]
    fn folded_one_process() {
        let p = one_process();
        assert_eq!(
            folded(&p, FoldedWeight::Bytes),
            "[no stack] 64\n_start;main;alloc_a 1024\n_start;main;alloc_b 300\nweird name_42;Vec<[u8: 8]>::push 8\n"
        );
        assert_eq!(
            folded(&p, FoldedWeight::Count),
            "[no stack] 2\n_start;main;alloc_a 11\n_start;main;alloc_b 3\nweird name_42;Vec<[u8: 8]>::push 1\n"
        );
        assert_eq!(
            folded(&p, FoldedWeight::Live),
            "[no stack] 64\n_start;main;alloc_a 24\n_start;main;alloc_b 200\nweird name_42;Vec<[u8: 8]>::push 8\n"
        );
    }

    #[test]
    fn folded_system_wide_prefixes_process() {
        let p = profile(
            &[(1, "app"), (2, "app")],
            vec![
                site(1, 1, &["alloc_a", "main"], 1, 100, 0),
                site(2, 1, &["alloc_a", "main"], 1, 50, 0),
                site(3, 1, &[], 1, 8, 0),
            ],
        );
        assert_eq!(
            folded(&p, FoldedWeight::Bytes),
            "[unknown] (3);[no stack] 8\napp (1);main;alloc_a 100\napp (2);main;alloc_a 50\n"
        );
    }

    #[test]
    fn folded_empty() {
        assert_eq!(folded(&profile(&[], vec![]), FoldedWeight::Bytes), "");
    }

    #[test]
    fn inferno_renders_it() {
        let p = profile(
            &[(7, "prog")],
            vec![
                site(7, 1, &["alloc_a", "main", "_start"], 1, 1000, 0),
                site(7, 2, &["alloc_b", "main", "_start"], 1, 234, 0),
                site(7, 3, &["alloc 5", "main", "_start"], 1, 6, 0),
            ],
        );
        let text = folded(&p, FoldedWeight::Bytes);
        let mut svg = Vec::new();
        let mut opts = inferno::flamegraph::Options::default();
        inferno::flamegraph::from_lines(&mut opts, text.lines(), &mut svg)
            .expect("inferno accepts the folded output");
        let svg = String::from_utf8(svg).unwrap();
        for want in [
            "<title>all (1,240 samples, 100%)</title>",
            "<title>_start (1,240 samples, 100.00%)</title>",
            "<title>main (1,240 samples, 100.00%)</title>",
            "<title>alloc_a (1,000 samples, 80.65%)</title>",
            "<title>alloc_b (234 samples, 18.87%)</title>",
            "<title>alloc_5 (6 samples, 0.48%)</title>",
        ] {
            assert!(svg.contains(want), "{want} missing from:\n{svg}");
        }
    }
}
