//! The page's tables of sites: top sites with their stacks, hot spots, patterns with their
//! lifetimes, advice.
use std::fmt::Write as _;

use super::cells::{bytes_cell, thousands, traced};
use crate::analyze::histogram::ns_range_text;
use crate::analyze::hotspots::{frame_line, site_name};
use crate::analyze::patterns::pattern_detail;
use crate::analyze::Analysis;
use crate::export::flamegraph::xml_escape as esc;
use crate::model::Profile;
use crate::numfmt::{fmt_bytes_f, fmt_count, fmt_ns, percent};

/// Frames of a site's stack listed under it.
const MAX_FRAMES: usize = 24;

pub(super) fn top_sites(out: &mut String, p: &Profile, top: usize) {
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
                let _ = write!(out, "<li>{}</li>", esc(&frame_line(f)));
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

pub(super) fn hotspots(out: &mut String, p: &Profile, a: &Analysis, multi: bool) {
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

pub(super) fn patterns(out: &mut String, a: &Analysis, top: usize, multi: bool) {
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

pub(super) fn advice(out: &mut String, a: &Analysis, top: usize, multi: bool) {
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
