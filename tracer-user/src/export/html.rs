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
//! `top-sites`, `hotspots`, `patterns`, `advice`, `flamegraph`.
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Result;

use crate::analyze::histogram::ns_range_text;
use crate::analyze::hotspots::site_name;
use crate::analyze::patterns::pattern_detail;
use crate::analyze::rate::Peak;
use crate::analyze::Analysis;
use crate::export::flamegraph::{self, xml_escape as esc};
use crate::export::folded::FoldedWeight;
use crate::export::plot;
use crate::model::{Frame, Profile};
use crate::numfmt::{fmt_bytes, fmt_bytes_f, fmt_count, fmt_count_f, fmt_ns, percent};

/// Frames of a site's stack listed under it.
const MAX_FRAMES: usize = 24;

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

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An exact byte count and its human form: `1,280,000 B <span>(1.2 MiB)</span>`.
fn bytes_cell(n: u64) -> String {
    if n < 1024 {
        format!("{} B", thousands(n))
    } else {
        format!(
            "{} B <span class=\"h\">({})</span>",
            thousands(n),
            fmt_bytes(n)
        )
    }
}

fn peak_text(p: Option<Peak>, fmt: fn(f64) -> String) -> String {
    p.map(|p| format!(", peak {}/s at {:.1} s", fmt(p.value), p.at))
        .unwrap_or_default()
}

fn frame_text(f: &Frame) -> String {
    match (&f.file, f.line) {
        (Some(file), Some(line)) => format!("{} ({file}:{line})", f.name()),
        (Some(file), None) => format!("{} ({file})", f.name()),
        _ => f.name(),
    }
}

fn kv(out: &mut String, id: &str, name: &str, value_html: &str) {
    let _ = writeln!(
        out,
        "<tr id=\"{id}\"><th>{}</th><td>{value_html}</td></tr>",
        esc(name)
    );
}

/// A frees/live cell: `-` in alloc-only mode, which does not trace frees.
fn traced(p: &Profile, cell: String) -> String {
    if p.mode.sees_frees() {
        cell
    } else {
        "-".to_string()
    }
}

fn summary(out: &mut String, p: &Profile, a: &Analysis) {
    let t = p.total();
    let r = &a.rate.overall;
    out.push_str("<section id=\"summary\">\n<h2>Summary</h2>\n<table class=\"kv\">\n");
    kv(out, "summary-target", "Target", &esc(&p.target.to_string()));
    let started = UNIX_EPOCH + Duration::from_secs(p.start_unix_secs);
    kv(
        out,
        "summary-start",
        "Started",
        &humantime::format_rfc3339_seconds(started).to_string(),
    );
    kv(
        out,
        "summary-duration",
        "Duration",
        &format!(
            "<span data-seconds=\"{}\">{:.2} s</span> ({} sample{} every {})",
            p.duration.as_secs_f64(),
            p.duration.as_secs_f64(),
            p.samples.len(),
            if p.samples.len() == 1 { "" } else { "s" },
            humantime::format_duration(p.interval)
        ),
    );
    if p.is_multi_process() {
        kv(
            out,
            "summary-processes",
            "Processes",
            &p.processes.len().to_string(),
        );
    }
    let avg = if t.allocs > 0 {
        format!(" (avg {})", fmt_bytes_f(t.bytes as f64 / t.allocs as f64))
    } else {
        String::new()
    };
    kv(
        out,
        "summary-allocated",
        "Total allocated",
        &format!(
            "<span data-bytes=\"{}\" data-allocs=\"{}\">{} in {} allocations</span>{avg}",
            t.bytes,
            t.allocs,
            bytes_cell(t.bytes),
            thousands(t.allocs)
        ),
    );
    kv(
        out,
        "summary-freed",
        "Total freed",
        &format!(
            "<span data-bytes=\"{}\" data-frees=\"{}\">{} in {} frees</span>",
            t.freed_bytes,
            t.frees,
            bytes_cell(t.freed_bytes),
            thousands(t.frees)
        ),
    );
    let avg_or_na = |v: Option<f64>, fmt: fn(f64) -> String| match v {
        Some(v) => format!("avg {}/s", fmt(v)),
        None => "n/a (zero duration)".to_string(),
    };
    kv(
        out,
        "summary-alloc-rate",
        "Alloc rate",
        &format!(
            "{}{}",
            avg_or_na(r.avg_alloc_rate, fmt_bytes_f),
            peak_text(r.peak_alloc_rate, fmt_bytes_f)
        ),
    );
    kv(
        out,
        "summary-object-rate",
        "Object rate",
        &format!(
            "{}{}",
            avg_or_na(r.avg_object_rate, fmt_count_f),
            peak_text(r.peak_object_rate, fmt_count_f)
        ),
    );
    let peak_live = r
        .peak_live_bytes
        .map(|pk| {
            format!(
                " (peak live {} at {:.1} s)",
                fmt_bytes(pk.value as u64),
                pk.at
            )
        })
        .unwrap_or_default();
    let live = if p.mode.sees_frees() {
        format!(
            "<span data-bytes=\"{}\" data-objects=\"{}\">{} in {} objects</span>{peak_live}",
            r.live_bytes_end,
            r.live_objects_end,
            bytes_cell(r.live_bytes_end),
            thousands(r.live_objects_end)
        )
    } else {
        "not traced (alloc-only mode)".to_string()
    };
    kv(out, "summary-live", "Live at end", &live);
    if !p.mode.sees_frees() {
        kv(
            out,
            "summary-mode",
            "Mode",
            "alloc-only: entry probes only; frees, live bytes and lifetimes not traced",
        );
    }
    if let Some(n) = p.sample_bytes {
        kv(
            out,
            "summary-sampling",
            "Sampling",
            &format!(
                "one allocation per {} on average: per-site numbers are estimates, totals exact",
                esc(&fmt_bytes(n))
            ),
        );
    }
    let unknown: u64 = p.processes.iter().map(|x| x.unknown_frees).sum();
    if unknown > 0 {
        kv(
            out,
            "summary-unknown-frees",
            "Unknown frees",
            &format!(
                "{} (blocks allocated before tracing started)",
                thousands(unknown)
            ),
        );
    }
    let losses = p.losses.nonzero();
    let lost = if losses.is_empty() {
        "none".to_string()
    } else {
        losses
            .iter()
            .map(|(name, n, hint)| {
                format!(
                    "<span class=\"loss\">{}: {}</span> ({})",
                    esc(name),
                    thousands(*n),
                    esc(hint)
                )
            })
            .collect::<Vec<_>>()
            .join("<br>")
    };
    kv(out, "summary-losses", "Lost data", &lost);
    if let Some(t) = &p.tracer {
        kv(
            out,
            "summary-tracer",
            "Tracer cost",
            &format!(
                "{:.2}s CPU (loading the programs included), peak RSS {}",
                t.cpu_time.as_secs_f64(),
                esc(&fmt_bytes(t.peak_rss_bytes))
            ),
        );
    }
    out.push_str("</table>\n</section>\n");
}

fn processes(out: &mut String, p: &Profile) {
    if !p.is_multi_process() {
        return;
    }
    let mut procs: Vec<_> = p.processes.iter().collect();
    procs.sort_by(|a, b| {
        b.counters
            .bytes
            .cmp(&a.counters.bytes)
            .then(a.pid.cmp(&b.pid))
    });
    out.push_str(
        "<section id=\"processes\">\n<h2>Processes</h2>\n<table class=\"data\">\n\
         <tr><th class=\"num\">PID</th><th>Command</th><th class=\"num\">Allocations</th>\
         <th class=\"num\">Bytes</th><th class=\"num\">Live bytes</th><th class=\"num\">Unknown frees</th></tr>\n",
    );
    for x in procs {
        let c = &x.counters;
        let _ = writeln!(
            out,
            "<tr data-pid=\"{}\"><td class=\"num\">{}</td><td class=\"fn\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            x.pid,
            x.pid,
            esc(&x.comm),
            thousands(c.allocs),
            bytes_cell(c.bytes),
            traced(p, bytes_cell(c.live_bytes())),
            thousands(x.unknown_frees)
        );
    }
    out.push_str("</table>\n</section>\n");
}

fn plots(out: &mut String, p: &Profile, a: &Analysis) -> Result<()> {
    let charts = plot::svg_charts(p, a)?;
    let _ = write!(
        out,
        "<section id=\"rate\">\n<h2>Allocation rate over time</h2>\n\
         <p class=\"note\">Per drain interval: bytes and allocations per second over the interval ending at each point.</p>\n\
         <div class=\"plot\" id=\"rate-plot\" data-points=\"{}\">\n{}\n</div>\n</section>\n\
         <section id=\"live\">\n<h2>Live heap over time</h2>\n\
         <p class=\"note\">Bytes allocated and not yet freed, at each drain.</p>\n\
         <div class=\"plot\" id=\"live-plot\" data-points=\"{}\">\n{}\n</div>\n</section>\n",
        a.rate.series.iter().filter(|x| x.alloc_rate.is_some()).count(),
        charts.rate.trim(),
        a.rate.series.len(),
        charts.live.trim()
    );
    Ok(())
}

fn top_sites(out: &mut String, p: &Profile, top: usize) {
    let sites = p.sites_by_bytes();
    let multi = p.is_multi_process();
    out.push_str("<section id=\"top-sites\">\n");
    if sites.is_empty() {
        out.push_str("<h2>Allocation sites</h2>\n<p>None recorded.</p>\n</section>\n");
        return;
    }
    let whole = p.share_base();
    let shown = sites.len().min(top);
    let _ = writeln!(
        out,
        "<h2>Top {shown} allocation sites by bytes (of {})</h2>",
        sites.len()
    );
    out.push_str("<table class=\"data\" id=\"top-sites-table\">\n<tr><th class=\"num\">#</th>");
    if multi {
        out.push_str("<th class=\"num\">PID</th>");
    }
    out.push_str(
        "<th>Function</th><th class=\"num\">Allocations</th><th class=\"num\">Bytes</th>\
         <th class=\"num\">Share</th><th class=\"num\">Avg size</th><th class=\"num\">Live bytes</th>\
         <th class=\"num\">Live objects</th><th class=\"num\">Frees</th></tr>\n",
    );
    for (i, s) in sites.iter().take(shown).enumerate() {
        let c = &s.counters;
        let _ = write!(
            out,
            "<tr class=\"site\" data-rank=\"{}\" data-pid=\"{}\" data-stack-id=\"{}\" data-function=\"{}\" \
             data-allocs=\"{}\" data-bytes=\"{}\" data-frees=\"{}\" data-live-bytes=\"{}\">\
             <td class=\"num\">{}</td>",
            i + 1,
            s.pid,
            s.stack_id,
            esc(&site_name(s)),
            c.allocs,
            c.bytes,
            c.frees,
            c.live_bytes(),
            i + 1
        );
        if multi {
            let _ = write!(out, "<td class=\"num\">{}</td>", s.pid);
        }
        let _ = write!(
            out,
            "<td class=\"site\"><span class=\"fn\">{}</span>",
            esc(&site_name(s))
        );
        if !s.frames.is_empty() {
            let _ = write!(
                out,
                "<details><summary>stack ({} frames)</summary><ol>",
                s.frames.len()
            );
            for f in s.frames.iter().take(MAX_FRAMES) {
                let _ = write!(out, "<li>{}</li>", esc(&frame_text(f)));
            }
            if s.frames.len() > MAX_FRAMES {
                let _ = write!(out, "<li>… {} more</li>", s.frames.len() - MAX_FRAMES);
            }
            out.push_str("</ol></details>");
        }
        let share = percent(c.bytes, whole);
        let _ = writeln!(
            out,
            "</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{share}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            thousands(c.allocs),
            bytes_cell(c.bytes),
            fmt_bytes_f(c.bytes as f64 / c.allocs as f64),
            traced(p, bytes_cell(c.live_bytes())),
            traced(p, thousands(c.live_objects())),
            traced(p, thousands(c.frees))
        );
    }
    out.push_str("</table>\n");
    if sites.len() > shown {
        let _ = writeln!(
            out,
            "<p class=\"note\">… and {} more sites (--top)</p>",
            sites.len() - shown
        );
    }
    out.push_str("</section>\n");
}

fn hotspots(out: &mut String, p: &Profile, a: &Analysis, multi: bool) {
    let h = &a.hotspots;
    if h.top.is_empty() {
        return;
    }
    let by = match h.group_by {
        crate::analyze::GroupBy::Function => "function",
        crate::analyze::GroupBy::Stack => "stack",
    };
    let sort = match h.sort {
        crate::analyze::SortBy::Bytes => "bytes",
        crate::analyze::SortBy::Count => "allocations",
        crate::analyze::SortBy::Live => "live bytes",
    };
    let _ = writeln!(
        out,
        "<section id=\"hotspots\">\n<h2>Hot spots by {by}, by {sort} ({} of {})</h2>",
        h.top.len(),
        h.groups
    );
    out.push_str("<table class=\"data\">\n<tr><th class=\"num\">#</th>");
    if multi {
        out.push_str("<th class=\"num\">PID</th>");
    }
    out.push_str(
        "<th>Function</th><th class=\"num\">Allocations</th><th class=\"num\">Bytes</th>\
         <th class=\"num\">Share</th><th class=\"num\">Live bytes</th><th class=\"num\">First</th>\
         <th class=\"num\">Last</th><th class=\"num\">Sites</th></tr>\n",
    );
    let secs = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |x| format!("{x:.1} s"));
    for (i, x) in h.top.iter().enumerate() {
        let _ = write!(out, "<tr><td class=\"num\">{}</td>", i + 1);
        if multi {
            let _ = write!(out, "<td class=\"num\">{}</td>", x.pid);
        }
        let _ = writeln!(
            out,
            "<td class=\"fn\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{:.1}%</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&x.name),
            thousands(x.allocs),
            bytes_cell(x.bytes),
            x.share * 100.0,
            traced(p, bytes_cell(x.live_bytes)),
            secs(x.first_seen),
            secs(x.last_seen),
            x.sites
        );
    }
    out.push_str("</table>\n</section>\n");
}

fn patterns(out: &mut String, a: &Analysis, top: usize, multi: bool) {
    let shown = a.patterns.len().min(top);
    if shown == 0 {
        return;
    }
    let _ = writeln!(
        out,
        "<section id=\"patterns\">\n<h2>Patterns of the top {shown} sites</h2>\n\
         <p class=\"note\">Sizes and lifetimes are log2 bucket bounds.</p>"
    );
    out.push_str("<table class=\"data\">\n<tr><th class=\"num\">#</th>");
    if multi {
        out.push_str("<th class=\"num\">PID</th>");
    }
    out.push_str("<th>Site</th><th>Class</th><th>Why</th><th>Sizes and frequency</th><th>Lifetimes</th></tr>\n");
    for (i, x) in a.patterns.iter().take(shown).enumerate() {
        let _ = write!(
            out,
            "<tr class=\"pattern\" data-function=\"{}\" data-class=\"{}\"><td class=\"num\">{}</td>",
            esc(&x.site),
            x.class,
            i + 1
        );
        if multi {
            let _ = write!(out, "<td class=\"num\">{}</td>", x.pid);
        }
        let sizes = pattern_detail(x);
        let life = a
            .lifetimes
            .iter()
            .find(|l| (l.pid, l.stack_id) == (x.pid, x.stack_id))
            .map(|l| &l.lifetimes);
        let life = match life {
            Some(l) => format!(
                "{} freed: median {}, p90 {}, {:.0}% under {}",
                fmt_count(l.freed),
                ns_range_text(l.median_ns),
                ns_range_text(l.p90_ns),
                l.short_lived_share * 100.0,
                fmt_ns(l.short_lived_below_ns)
            ),
            None => "no block freed".to_string(),
        };
        let _ = writeln!(
            out,
            "<td class=\"fn\">{}</td><td><span class=\"class\">{}</span></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&x.site),
            x.class,
            esc(&x.reason),
            esc(&sizes),
            esc(&life)
        );
    }
    out.push_str("</table>\n</section>\n");
}

fn advice(out: &mut String, a: &Analysis, top: usize, multi: bool) {
    out.push_str("<section id=\"advice\">\n<h2>Advice</h2>\n");
    if a.advice.is_empty() {
        out.push_str("<p>None: no site's numbers met a rule.</p>\n</section>\n");
        return;
    }
    let shown = a.advice.len().min(top.max(1));
    out.push_str("<ul class=\"advice\">\n");
    for x in a.advice.iter().take(shown) {
        let pid = if multi {
            format!("pid {} ", x.pid)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "<li data-kind=\"{}\" data-function=\"{}\"><b>[{}]</b> {pid}<span class=\"fn\">{}</span>: {}<br>→ {}</li>",
            esc(&x.kind.to_string()),
            esc(&x.site),
            esc(&x.kind.to_string()),
            esc(&x.site),
            esc(&x.evidence),
            esc(&x.suggestion)
        );
    }
    out.push_str("</ul>\n");
    if a.advice.len() > shown {
        let _ = writeln!(
            out,
            "<p class=\"note\">… and {} more (--top, or --report json)</p>",
            a.advice.len() - shown
        );
    }
    out.push_str("</section>\n");
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
    if !a.patterns.is_empty() {
        advice(&mut out, a, top, multi);
    }
    flame(&mut out, p, w)?;
    let _ = write!(out, "<script>{SCRIPT}</script>\n</body>\n</html>\n");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::{analyze, Options};
    use crate::model::{Process, Target};
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
