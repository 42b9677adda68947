//! `--html FILE.html`: one self-contained page (no network fetch: no external CSS, script,
//! font or image) with the summary, the rate and live-heap plots (inline SVG from
//! [`plot::svg_charts`]), the top sites, hot spots, patterns, advice, and the interactive
//! flame graph.
//!
//! The flame graph is inferno's SVG, which carries its own script (search, zoom) and expects
//! to be the only `<svg>` of its document: it lives in an `<iframe srcdoc>`, a document of
//! its own with the page's origin, so its script runs as in the standalone file. A small
//! script of the page then marks the flame graph's section with what it found inside
//! (`data-frames`, `data-interactive`), for tests and for anyone checking the page works.
//!
//! Every string from the profile (function names hold `<` and `&`, command lines anything)
//! is escaped. Key elements have stable ids: `summary`, `rate-plot`, `live-plot`,
//! `top-sites`, `hotspots`, `patterns`, `leaks` (with `leak-plot` and `leaks-table`),
//! `advice`, `flamegraph`.
//!
//! This file holds the page and the flame graph; [`summary`], [`tables`] and [`leaks`] the
//! sections, [`cells`] the formatting of one value they share.
mod cells;
mod leaks;
mod summary;
mod tables;

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::analyze::Analysis;
use crate::export::flamegraph::{self, xml_escape as esc};
use crate::export::folded::FoldedWeight;
use crate::export::plot;
use crate::export::{Exporter, Options};
use crate::model::Profile;
use summary::{processes, summary};
use tables::{advice, hotspots, patterns, top_sites};

const STYLE: &str = r#"
body { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; margin: 1.5em 2em; color: #222; background: #fff; max-width: 1400px; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; word-break: break-all; }
h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { padding: 0.25em 0.7em; text-align: left; vertical-align: top; }
table.data th { background: #f3f3f3; border-bottom: 1px solid #ccc; white-space: nowrap; }
table.data td { border-bottom: 1px solid #eee; }
table.data td.num, table.data th.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
table.kv th { font-weight: 600; white-space: nowrap; padding-left: 0; }
.fn { font-family: ui-monospace, "DejaVu Sans Mono", monospace; overflow-wrap: anywhere; }
table.data td.fn, table.data td.site { min-width: 14em; }
.h { color: #777; font-size: 0.85em; }
details summary { cursor: pointer; color: #555; font-size: 0.85em; }
details ol { margin: 0.3em 0; padding-left: 2em; font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 0.85em; }
.plot svg { max-width: 100%; height: auto; border: 1px solid #eee; }
.loss { color: #b00; }
.class { display: inline-block; padding: 0 0.4em; border-radius: 3px; background: #eef; white-space: nowrap; }
ul.advice li { margin-bottom: 0.6em; }
#flamegraph-frame { width: 100%; border: 1px solid #eee; }
.note { color: #666; font-size: 0.85em; }
"#;

/// Marks the flame graph's section with what its document holds once loaded: the number of
/// frames (`data-frames`) and whether inferno's script initialized (`data-interactive`).
const SCRIPT: &str = r#"
(function () {
  var frame = document.getElementById("flamegraph-frame");
  var section = document.getElementById("flamegraph");
  if (!frame || !section) return;
  function check() {
    try {
      var d = frame.contentDocument, w = frame.contentWindow;
      var g = d && d.getElementById("frames");
      section.setAttribute("data-frames", g ? g.getElementsByTagName("g").length : 0);
      var ok = g && typeof w.zoom === "function" && typeof w.search === "function" && w.frames === g;
      section.setAttribute("data-interactive", ok ? "yes" : "no");
    } catch (e) {
      section.setAttribute("data-interactive", "error: " + e);
    }
  }
  frame.addEventListener("load", check);
  if (frame.contentDocument && frame.contentDocument.readyState === "complete") check();
})();
"#;

fn plots(out: &mut String, p: &Profile, a: &Analysis) -> Result<()> {
    let charts = plot::svg_charts(p, a)?;
    let _ = write!(
        out,
        "<section id=\"rate\">\n<h2>Allocation rate over time</h2>\n\
         <p class=\"note\">Per drain (every {}, the older part of a long run merged): bytes and allocations per second over the period ending at each point.</p>\n\
         <div class=\"plot\" id=\"rate-plot\" data-points=\"{}\">\n{}\n</div>\n</section>\n\
         <section id=\"live\">\n<h2>Live heap over time</h2>\n\
         <p class=\"note\">Bytes allocated and not yet freed, at each drain.</p>\n\
         <div class=\"plot\" id=\"live-plot\" data-points=\"{}\">\n{}\n</div>\n</section>\n",
        humantime::format_duration(p.drain_step()),
        a.rate.series.iter().filter(|x| x.alloc_rate.is_some()).count(),
        charts.rate.trim(),
        a.rate.series.len(),
        charts.live.trim()
    );
    Ok(())
}

/// The height the flame graph asks for (its root `height` attribute), for the iframe.
fn svg_height(svg: &str) -> Option<u32> {
    let root = &svg[svg.find("<svg")?..];
    let root = &root[..root.find('>')?];
    let h = root.split(" height=\"").nth(1)?;
    h[..h.find('"')?].trim_end_matches("px").parse().ok()
}

/// inferno's SVG as an HTML document for `srcdoc`: without its XML declaration and SVG
/// doctype (which would put the document in quirks mode), inline in an HTML body.
///
/// inferno's script saves the zoom and search state in the URL with `history.replaceState`,
/// which an `about:srcdoc` document may not do (SecurityError, which would abort a search
/// half-way): a shim makes that call best-effort.
fn flame_document(svg: &str) -> String {
    let body = svg.find("<svg").map_or(svg, |i| &svg[i..]);
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\">\
         <style>html,body{{margin:0;padding:0}} svg{{display:block;width:100%}}</style>\
         <script>{HISTORY_SHIM}</script></head><body>{body}</body></html>"
    )
}

/// The width of the page's plots (`plot::svg_charts`').
const HTML_PLOT_WIDTH: u32 = 1100;

const HISTORY_SHIM: &str = "(function(){var r=history.replaceState.bind(history);\
    history.replaceState=function(s,t,u){try{r(s,t,u);}catch(e){}};})();";

fn flame(out: &mut String, p: &Profile, w: FoldedWeight) -> Result<()> {
    let svg = flamegraph::svg(p, w)?;
    let what = match w {
        FoldedWeight::Bytes => "bytes allocated",
        FoldedWeight::Count => "allocations",
        FoldedWeight::Live => "bytes live at the end",
    };
    let height = svg_height(&svg).unwrap_or(600) + 4;
    let _ = writeln!(
        out,
        "<section id=\"flamegraph\">\n<h2>Flame graph ({what})</h2>\n\
         <p class=\"note\">Click a frame to zoom in, \"Reset Zoom\" to zoom out, \"Search\" (or Ctrl-F) to highlight functions.</p>\n\
         <iframe id=\"flamegraph-frame\" title=\"flame graph\" style=\"height:{height}px\" srcdoc=\"{}\"></iframe>\n</section>",
        esc(&flame_document(&svg))
    );
    Ok(())
}

/// `--html FILE.html`.
pub struct Html;

impl Exporter for Html {
    fn option(&self) -> &'static str {
        "html"
    }
    fn help(&self) -> &'static str {
        "Write one self-contained HTML page (summary, plots, top sites, patterns, advice, flame \
         graph) to FILE"
    }
    fn what(&self, _: &Profile) -> String {
        "HTML report".to_string()
    }
    fn render(&self, p: &Profile, a: &Analysis, o: &Options, _: &Path) -> Result<Vec<u8>> {
        render(p, a, o.weight, o.top).map(String::into_bytes)
    }
}

/// The page: see the module's documentation.
pub fn render(p: &Profile, a: &Analysis, w: FoldedWeight, top: usize) -> Result<String> {
    let multi = p.is_multi_process();
    let mut out = String::new();
    let title = format!("alloctrace: {}", p.target);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"alloctrace {}\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        env!("CARGO_PKG_VERSION"),
        esc(&title),
        esc(&title)
    );
    summary(&mut out, p, a);
    processes(&mut out, p);
    plots(&mut out, p, a)?;
    top_sites(&mut out, p, top);
    hotspots(&mut out, p, a, multi);
    patterns(&mut out, a, top, multi);
    leaks::leaks(&mut out, p, a, top, multi, HTML_PLOT_WIDTH)?;
    if !a.patterns.is_empty() {
        advice(&mut out, a, top, multi);
    }
    flame(&mut out, p, w)?;
    let _ = write!(out, "<script>{SCRIPT}</script>\n</body>\n</html>\n");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::cells::{bytes_cell, thousands};
    use super::*;
    use crate::analyze::{analyze, Options};
    use crate::model::{Frame, Process, Target};
    use crate::testkit::{c, profile, series_site};

    fn named(mut s: crate::model::Site, name: &str, stack_id: u64) -> crate::model::Site {
        s.stack_id = stack_id;
        s.frames = vec![
            Frame {
                addr: 0x10,
                function: Some(name.into()),
                file: Some("/src/a<b>.c".into()),
                line: Some(7),
                ..Default::default()
            },
            Frame {
                addr: 0x20,
                function: Some("main".into()),
                ..Default::default()
            },
        ];
        s
    }

    fn sample_profile() -> Profile {
        let pts: Vec<_> = (1..=5).map(|i| (i * 1000, i * 1000, i * 1000)).collect();
        let mut p = profile(
            5000,
            (1..=5u64)
                .map(|i| (i * 1000, vec![(1, c(i * 20, i * 2000, i * 10, i * 1000))]))
                .collect(),
        );
        let a = named(series_site(64, &pts, 100), "Vec<T, &A>::push", 1);
        let b = named(series_site(16, &pts, 100), "leak_<it>", 2);
        let mut total = a.counters;
        total.add(&b.counters);
        p.sites = vec![b, a];
        p.processes = vec![Process {
            pid: 1,
            comm: "prog".into(),
            counters: total,
            unknown_frees: 0,
            unseen: None,
            allocators: Vec::new(),
            go: None,
        }];
        p.target = Target::Command {
            argv: vec!["./prog".into(), "--x=<&>".into()],
            pid: 1,
        };
        p
    }

    #[test]
    fn page_holds_every_part_escaped() {
        let p = sample_profile();
        let a = analyze(&p, &Options::default());
        let html = render(&p, &a, FoldedWeight::Bytes, 10).unwrap();
        for id in [
            "summary",
            "rate-plot",
            "live-plot",
            "top-sites",
            "hotspots",
            "patterns",
            "advice",
            "flamegraph",
        ] {
            assert!(html.contains(&format!("id=\"{id}\"")), "no #{id}");
        }
        assert!(html.contains("<title>alloctrace: ./prog --x=&lt;&amp;&gt;</title>"));
        assert!(html.contains("<span class=\"fn\">Vec&lt;T, &amp;A&gt;::push</span>"));
        assert!(html.contains("leak_&lt;it&gt;"));
        assert!(html.contains("Vec&lt;T, &amp;A&gt;::push (/src/a&lt;b&gt;.c:7)"));
        assert!(!html.contains("Vec<T"), "an unescaped name");
        assert!(!html.contains("leak_<it>"), "an unescaped name");
        // The site table follows Profile::sites_by_bytes, with exact numbers.
        let rows: Vec<&str> = html.split("<tr class=\"site\"").skip(1).collect();
        let sites = p.sites_by_bytes();
        assert_eq!(rows.len(), sites.len());
        for (row, s) in rows.iter().zip(&sites) {
            assert!(row.contains(&format!("data-allocs=\"{}\"", s.counters.allocs)));
            assert!(row.contains(&format!("data-bytes=\"{}\"", s.counters.bytes)));
            assert!(row.contains(&format!(
                "<td class=\"num\">{}</td>",
                thousands(s.counters.allocs)
            )));
        }
        // Plots inline, flame graph in srcdoc with its script.
        assert_eq!(html.matches("<svg").count(), 2, "two inline plots");
        assert!(html.contains("srcdoc=\"&lt;!DOCTYPE html&gt;"));
        assert!(html.contains("function init(evt)"));
        assert!(!html.contains("DTD SVG 1.1"));
    }

    #[test]
    fn no_network_fetch() {
        let p = sample_profile();
        let a = analyze(&p, &Options::default());
        let html = render(&p, &a, FoldedWeight::Count, 10).unwrap();
        for needle in [
            "src=",
            "href=",
            "url(",
            "@import",
            "src=&quot;",
            "href=&quot;",
        ] {
            for (i, _) in html.match_indices(needle) {
                let rest = html[i + needle.len()..].trim_start_matches(['"', '\'']);
                let rest = rest.trim_start_matches("&quot;");
                assert!(
                    !rest.starts_with("http") && !rest.starts_with("//"),
                    "a fetch: {}",
                    &html[i..(i + 80).min(html.len())]
                );
            }
        }
    }

    #[test]
    fn several_processes_get_a_pid_column_and_a_process_table() {
        let mut p = sample_profile();
        p.sites[0].pid = 2;
        let mut other = p.processes[0].clone();
        other.pid = 2;
        other.comm = "child<1>".into();
        p.processes.push(other);
        let a = analyze(&p, &Options::default());
        let html = render(&p, &a, FoldedWeight::Bytes, 10).unwrap();
        assert!(html.contains("id=\"processes\""));
        assert!(html.contains("child&lt;1&gt;"));
        assert!(section_has(
            &html,
            "top-sites",
            "<th class=\"num\">PID</th>"
        ));
        assert!(html.contains("data-pid=\"2\""));
    }

    fn section_has(html: &str, id: &str, needle: &str) -> bool {
        let start = html.find(&format!("id=\"{id}\"")).unwrap();
        let rest = &html[start..];
        rest[..rest.find("</section>").unwrap()].contains(needle)
    }

    #[test]
    fn empty_profile_renders() {
        let p = profile(0, vec![]);
        let a = analyze(&p, &Options::default());
        let html = render(&p, &a, FoldedWeight::Bytes, 10).unwrap();
        assert!(html.contains("id=\"summary\"") && html.contains("id=\"flamegraph\""));
        assert!(html.contains("no data"));
        assert!(html.contains("None recorded."));
        assert!(html.contains("no allocations were recorded"));
    }

    #[test]
    fn helpers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(100), "100");
        assert_eq!(bytes_cell(1000), "1,000 B");
        assert_eq!(
            svg_height("<?xml?><svg version=\"1.1\" width=\"100%\" height=\"342\" x>"),
            Some(342)
        );
    }
}
