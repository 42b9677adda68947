//! The page's leak section: the leak candidates' live bytes over time (`leak_plot`), then per
//! site the blocks never freed with their ages (or, with `--older`, those older than it), and
//! the leak analyzer's confidence and evidence.
use std::fmt::Write as _;

use anyhow::Result;

use super::cells::{bytes_cell, thousands};
use crate::analyze::leaks::{age_buckets_text, live_sites};
use crate::analyze::Analysis;
use crate::export::flamegraph::xml_escape as esc;
use crate::export::leak_plot;
use crate::model::Profile;
use crate::numfmt::fmt_ns;

/// Nothing when no site's live blocks were read and no candidate was found (alloc-only mode,
/// an older file).
pub(super) fn leaks(
    out: &mut String,
    p: &Profile,
    a: &Analysis,
    top: usize,
    multi: bool,
    width: u32,
) -> Result<()> {
    let read = p.sites.iter().any(|s| s.live.is_some());
    if !read && a.leaks.is_empty() {
        return Ok(());
    }
    out.push_str("<section id=\"leaks\">\n<h2>Blocks never freed</h2>\n");
    if let Some(svg) = leak_plot::svg(p, a, width)? {
        let _ = writeln!(
            out,
            "<p class=\"note\">Live bytes (allocated, not yet freed) of each site given leak advice, at each drain.</p>\n\
             <div class=\"plot\" id=\"leak-plot\">\n{}\n</div>",
            svg.trim()
        );
    }
    let older = a.options.older;
    let mut sites = live_sites(p, older);
    if older.is_some() {
        sites.retain(|s| {
            s.live
                .as_ref()
                .and_then(|l| l.older)
                .is_some_and(|o| o.blocks > 0)
        });
    }
    let sampled = if p.sample_bytes.is_some() {
        " With sampling, only the sampled blocks are in the in-flight table: counts are of those."
    } else {
        ""
    };
    let what = match older {
        Some(d) => format!(
            "Blocks still allocated at the end and older than {}, per site.",
            fmt_ns(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        ),
        None => "Blocks still allocated at the end, per site, with their ages.".to_string(),
    };
    let _ = writeln!(out, "<p class=\"note\">{}{sampled}</p>", esc(&what));
    if sites.is_empty() {
        out.push_str("<p>None.</p>\n");
    } else {
        out.push_str("<table class=\"data\" id=\"leaks-table\">\n<tr><th class=\"num\">#</th>");
        if multi {
            out.push_str("<th class=\"num\">PID</th>");
        }
        out.push_str(
            "<th>Function</th><th class=\"num\">Blocks</th><th class=\"num\">Bytes</th>\
             <th class=\"num\">Oldest</th><th class=\"num\">Median age</th><th>Ages</th>\
             <th>Leak</th></tr>\n",
        );
        for (i, s) in sites.iter().take(top).enumerate() {
            let Some(l) = &s.live else { continue };
            let (blocks, bytes) = match (older, l.older) {
                (Some(_), Some(o)) => (o.blocks, o.bytes),
                _ => (l.blocks, l.bytes),
            };
            let cand = a
                .leaks
                .iter()
                .find(|c| (c.pid, c.stack_id) == (s.pid, s.stack_id));
            let site = crate::analyze::hotspots::site_name(s);
            let _ = write!(
                out,
                "<tr class=\"leak\" data-pid=\"{}\" data-stack-id=\"{}\" data-function=\"{}\" \
                 data-blocks=\"{blocks}\" data-bytes=\"{bytes}\" data-oldest-ns=\"{}\" \
                 data-confidence=\"{}\"><td class=\"num\">{}</td>",
                s.pid,
                s.stack_id,
                esc(&site),
                l.oldest_ns,
                cand.map_or("none".to_string(), |c| c.confidence.to_string()),
                i + 1
            );
            if multi {
                let _ = write!(out, "<td class=\"num\">{}</td>", s.pid);
            }
            let _ = writeln!(
                out,
                "<td class=\"fn\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
                esc(&site),
                thousands(blocks),
                bytes_cell(bytes),
                fmt_ns(l.oldest_ns),
                fmt_ns(l.median_ns),
                esc(&age_buckets_text(&l.age_hist)),
                cand.map_or("-".to_string(), |c| format!(
                    "<b>{}</b>: {}",
                    c.confidence,
                    esc(&c.evidence)
                )),
            );
        }
        out.push_str("</table>\n");
        if sites.len() > top {
            let _ = writeln!(
                out,
                "<p class=\"note\">… and {} more sites (--top, or --report json)</p>",
                sites.len() - top
            );
        }
    }
    out.push_str("</section>\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::analyze::{analyze, Options};
    use crate::export::folded::FoldedWeight;
    use crate::model::LiveBlocks;
    use crate::testkit::{profile, series_site, src_frame};

    #[test]
    fn leak_table_and_plot_on_the_page() {
        let pts: Vec<_> = (1..=4).map(|i| (i * 200, i * 250, 0)).collect();
        let mut leak = series_site(512, &pts, 0);
        leak.frames = vec![src_frame("leak_<records>", None, None)];
        leak.live = Some(LiveBlocks {
            at: Duration::from_millis(800),
            blocks: 1000,
            bytes: 512_000,
            age_hist: crate::testkit::hist(&[(500_000_000, 1000)]),
            oldest_ns: 790_000_000,
            median_ns: 400_000_000,
            youngest_ns: 0,
            older: None,
        });
        let mut p = profile(800, vec![]);
        p.sites = vec![leak];
        let a = analyze(&p, &Options::default());
        let html = super::super::render(&p, &a, FoldedWeight::Bytes, 10).unwrap();
        let sec = &html[html.find("id=\"leaks\"").expect("a leak section")..];
        let sec = &sec[..sec.find("</section>").unwrap()];
        assert!(
            sec.contains("id=\"leak-plot\"") && sec.contains("<svg"),
            "{sec}"
        );
        assert!(sec.contains(
            "data-function=\"leak_&lt;records&gt;\" data-blocks=\"1000\" data-bytes=\"512000\" \
             data-oldest-ns=\"790000000\" data-confidence=\"high\""
        ), "{sec}");
        assert!(sec.contains("<td class=\"num\">1,000</td>"), "{sec}");
        assert!(!sec.contains("leak_<records>"), "an unescaped name");
    }
}
