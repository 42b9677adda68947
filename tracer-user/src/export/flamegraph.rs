//! Interactive flame graph SVG (search, zoom, hover titles), rendered by the `inferno` crate
//! from the folded stacks, so the picture and `--folded` always agree.
use std::path::Path;

use anyhow::{anyhow, Result};
use inferno::flamegraph::{self, color::BasicPalette, color::Palette, Options};

use crate::analyze::Analysis;
use crate::export::folded::{folded, FoldedWeight};
use crate::export::Exporter;
use crate::model::Profile;
use crate::numfmt::{fmt_bytes, fmt_count};

/// What one unit of a frame's width is, in inferno's hover titles ("main (1,024 bytes, 40%)").
fn count_name(weight: FoldedWeight) -> &'static str {
    match weight {
        FoldedWeight::Bytes => "bytes",
        FoldedWeight::Count => "allocations",
        FoldedWeight::Live => "live bytes",
    }
}

fn title(p: &Profile, weight: FoldedWeight) -> String {
    let what = match weight {
        FoldedWeight::Bytes => "bytes allocated",
        FoldedWeight::Count => "allocations",
        FoldedWeight::Live => "bytes live at the end",
    };
    // inferno centres the title on a fixed-width image: a long command path would be cut at
    // both ends, so keep its end, which says what it is.
    let target = crate::export::plot::shorten(&p.target.to_string(), 70);
    format!(
        "alloctrace: {target} — {:.1} s — {what}",
        p.duration.as_secs_f64()
    )
}

fn subtitle(p: &Profile) -> String {
    let t = p.total();
    let mut s = format!(
        "{} allocations, {} allocated, {} live at the end",
        fmt_count(t.allocs),
        fmt_bytes(t.bytes),
        fmt_bytes(t.live_bytes())
    );
    if let Some(n) = p.sample_bytes {
        s.push_str(&format!(
            " — sampled every ~{}: frames are estimates",
            fmt_bytes(n)
        ));
    }
    // Cut stacks are sites whose outer frames are missing, not lost events.
    let lost: u64 = p
        .losses
        .nonzero()
        .iter()
        .filter(|(name, _, _)| *name != "stacks cut")
        .map(|(_, n, _)| n)
        .sum();
    if lost > 0 {
        s.push_str(&format!(
            " — {} events lost (see the report)",
            fmt_count(lost)
        ));
    }
    s
}

/// `--flamegraph FILE`.
pub struct Flamegraph;

impl Exporter for Flamegraph {
    fn option(&self) -> &'static str {
        "flamegraph"
    }
    fn help(&self) -> &'static str {
        "Write an interactive flame graph (SVG, rendered by inferno) to FILE"
    }
    fn weighted(&self) -> bool {
        true
    }
    fn what(&self, _: &Profile) -> String {
        "flame graph".to_string()
    }
    fn render(
        &self,
        p: &Profile,
        _: &Analysis,
        o: &crate::export::Options,
        _: &Path,
    ) -> Result<Vec<u8>> {
        svg(p, o.weight).map(String::into_bytes)
    }
}

/// The flame graph of `p` weighed by `weight`, as SVG text. A profile with nothing to draw
/// still gives a valid SVG that says so.
pub fn svg(p: &Profile, weight: FoldedWeight) -> Result<String> {
    let text = folded(p, weight);
    let mut opts = Options::default();
    opts.title = title(p, weight);
    opts.subtitle = Some(subtitle(p));
    opts.count_name = count_name(weight).to_string();
    opts.colors = Palette::Basic(BasicPalette::Mem);
    // The same function gets the same colour in every graph, so two runs compare by eye.
    opts.hash = true;
    opts.deterministic = true;
    // Keep every frame, however narrow: a rare site is still a site.
    opts.min_width = 0.0;
    if text.is_empty() {
        return Ok(empty_svg(&opts.title, &opts.subtitle.unwrap_or_default()));
    }
    let mut out = Vec::new();
    flamegraph::from_lines(&mut opts, text.lines(), &mut out)
        .map_err(|e| anyhow!("inferno: {e}"))?;
    String::from_utf8(out).map_err(|e| anyhow!("inferno wrote invalid UTF-8: {e}"))
}

fn empty_svg(title: &str, subtitle: &str) -> String {
    format!(
        r##"<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="1200" height="90" xmlns="http://www.w3.org/2000/svg"><rect x="0" y="0" width="100%" height="100%" fill="#eef2ee"/><text x="600" y="24" text-anchor="middle" font-family="Verdana" font-size="17">{}</text><text x="600" y="48" text-anchor="middle" font-family="Verdana" font-size="12">{}</text><text x="600" y="72" text-anchor="middle" font-family="Verdana" font-size="12">no allocations were recorded</text></svg>
"##,
        xml_escape(title),
        xml_escape(subtitle)
    )
}

pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Counters, Frame, Losses, Process, Site, Target};
    use std::time::Duration;

    fn site(stack_id: u64, frames: &[&str], allocs: u64, bytes: u64, freed: u64) -> Site {
        Site {
            pid: 7,
            stack_id,
            frames: frames
                .iter()
                .map(|n| Frame {
                    addr: 1,
                    function: Some((*n).into()),
                    ..Default::default()
                })
                .collect(),
            counters: Counters {
                allocs,
                bytes,
                frees: 0,
                freed_bytes: freed,
            },
            size_hist: vec![],
            life_hist: vec![],
            series: vec![],
            sampled: None,
            live: None,
        }
    }

    fn profile(sites: Vec<Site>) -> Profile {
        let mut total = Counters::default();
        for s in &sites {
            total.add(&s.counters);
        }
        Profile {
            target: Target::Command {
                argv: vec!["./prog".into(), "<x>".into()],
                pid: 7,
            },
            mode: crate::model::TraceMode::Full,
            start_unix_secs: 0,
            duration: Duration::from_millis(2500),
            interval: Duration::from_secs(1),
            resolution: Duration::from_millis(100),
            samples: vec![],
            processes: vec![Process {
                pid: 7,
                comm: "prog".into(),
                counters: total,
                unknown_frees: 0,
                unseen: None,
                allocators: Vec::new(),
                go: None,
            }],
            sites,
            losses: Losses::default(),
            modules: vec![],
            sample_bytes: None,
            tracer: None,
        }
    }

    #[test]
    fn titled_and_weighed() {
        let p = profile(vec![
            site(1, &["alloc_a", "main"], 4, 1000, 1000),
            site(2, &["alloc_b", "main"], 1, 24, 0),
        ]);
        let s = svg(&p, FoldedWeight::Bytes).unwrap();
        assert!(
            s.contains("alloctrace: ./prog &lt;x&gt; — 2.5 s — bytes allocated"),
            "{s}"
        );
        assert!(
            s.contains("5 allocations, 1.0 KiB allocated, 24 B live at the end"),
            "{s}"
        );
        assert!(s.contains("<title>all (1,024 bytes, 100%)</title>"), "{s}");
        assert!(
            s.contains("<title>alloc_a (1,000 bytes, 97.66%)</title>"),
            "{s}"
        );
        let s = svg(&p, FoldedWeight::Count).unwrap();
        assert!(
            s.contains("<title>all (5 allocations, 100%)</title>"),
            "{s}"
        );
        assert!(s.contains("— allocations<"), "{s}");
        let s = svg(&p, FoldedWeight::Live).unwrap();
        assert!(
            s.contains("<title>all (24 live bytes, 100%)</title>"),
            "{s}"
        );
        assert!(
            !s.contains("alloc_a ("),
            "a site with nothing live is not drawn: {s}"
        );
    }

    #[test]
    fn empty_profile_is_a_valid_svg_that_says_so() {
        let s = svg(&profile(vec![]), FoldedWeight::Bytes).unwrap();
        assert!(s.contains("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("no allocations were recorded"));
    }
}
