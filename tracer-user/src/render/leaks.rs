//! The final text report's leak section: per site, the blocks still allocated at the end with
//! their ages (or, with `--older`, those older than it), and the leak analyzer's confidence.
use std::fmt::Write as _;

use crate::analyze::hotspots::site_name;
use crate::analyze::leaks::{age_buckets_text, live_sites, LeakCandidate};
use crate::analyze::Analysis;
use crate::model::{Profile, Site};
use crate::numfmt::{fmt_bytes, fmt_count, fmt_ns, percent};

fn candidate<'a>(a: &'a Analysis, s: &Site) -> Option<&'a LeakCandidate> {
    a.leaks
        .iter()
        .find(|c| (c.pid, c.stack_id) == (s.pid, s.stack_id))
}

/// Nothing when no site's live blocks were read (alloc-only mode, an older file).
pub(super) fn render_leaks(out: &mut String, p: &Profile, a: &Analysis, top: usize, multi: bool) {
    if !p.sites.iter().any(|s| s.live.is_some()) {
        return;
    }
    let older = a.options.older;
    let sampled = if p.sample_bytes.is_some() {
        "; sampled blocks only"
    } else {
        ""
    };
    let sites: Vec<&Site> = live_sites(p, older)
        .into_iter()
        .filter(|s| match older {
            Some(_) => s
                .live
                .as_ref()
                .and_then(|l| l.older)
                .is_some_and(|o| o.blocks > 0),
            None => true,
        })
        .collect();
    let at = p
        .sites
        .iter()
        .filter_map(|s| s.live.as_ref())
        .map(|l| l.at.as_secs_f64())
        .fold(0.0, f64::max);
    let title = match older {
        Some(d) => format!(
            "Blocks never freed older than {}",
            fmt_ns(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        ),
        None => "Blocks never freed".to_string(),
    };
    if sites.is_empty() {
        let _ = writeln!(out, "\n{title}: none (at {at:.2}s{sampled})");
        return;
    }
    let shown = sites.len().min(top);
    let _ = writeln!(
        out,
        "\n{title}, by bytes ({shown} of {} sites; ages at {at:.2}s{sampled}):",
        sites.len()
    );
    let pid_col = |v: &dyn std::fmt::Display| {
        if multi {
            format!("{v:>7}  ")
        } else {
            String::new()
        }
    };
    let rank_w = shown.to_string().len().max(2);
    let _ = writeln!(
        out,
        "  {:>rank_w$}  {:>8}  {:>10}  {:>9}  {:>9}  {:>6}  {:>10}  {}SITE",
        "#",
        "BLOCKS",
        "BYTES",
        "OLDEST",
        "MEDIAN",
        "FREED",
        "LEAK",
        pid_col(&"PID"),
    );
    let indent = " ".repeat(2 + rank_w + 4);
    for (i, s) in sites.iter().take(shown).enumerate() {
        let Some(l) = &s.live else { continue };
        let (blocks, bytes) = match l.older {
            Some(o) if older.is_some() => (o.blocks, o.bytes),
            _ => (l.blocks, l.bytes),
        };
        let c = &s.counters;
        let _ = writeln!(
            out,
            "  {:>rank_w$}  {:>8}  {:>10}  {:>9}  {:>9}  {:>6}  {:>10}  {}{}",
            i + 1,
            fmt_count(blocks),
            fmt_bytes(bytes),
            fmt_ns(l.oldest_ns),
            fmt_ns(l.median_ns),
            percent(c.frees, c.allocs),
            candidate(a, s).map_or("-".to_string(), |c| c.confidence.to_string()),
            pid_col(&s.pid),
            site_name(s),
        );
        if older.is_some() {
            let _ = writeln!(
                out,
                "{indent}of {} blocks ({}) never freed",
                fmt_count(l.blocks),
                fmt_bytes(l.bytes)
            );
        }
        let _ = writeln!(out, "{indent}ages: {}", age_buckets_text(&l.age_hist));
    }
    if sites.len() > shown {
        let _ = writeln!(out, "  … and {} more sites (--top)", sites.len() - shown);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::analyze::{analyze, Options};
    use crate::model::{LiveBlocks, OlderBlocks};
    use crate::render::render_report;
    use crate::testkit::{hist, profile, series_site, src_frame};

    const MS: u64 = 1_000_000;

    fn live(blocks: u64, bytes: u64, oldest_ms: u64, older: Option<(u64, u64)>) -> LiveBlocks {
        LiveBlocks {
            at: Duration::from_millis(900),
            blocks,
            bytes,
            age_hist: hist(&[(oldest_ms * MS, blocks)]),
            oldest_ns: oldest_ms * MS,
            median_ns: oldest_ms * MS / 2,
            youngest_ns: 0,
            older: older.map(|(blocks, bytes)| OlderBlocks {
                than: Duration::from_millis(500),
                blocks,
                bytes,
            }),
        }
    }

    fn two_sites(older: bool) -> crate::model::Profile {
        let mut leak = series_site(512, &[(900, 1000, 0)], 0);
        leak.frames = vec![src_frame("leak_records", None, None)];
        leak.live = Some(live(1000, 512_000, 880, older.then_some((600, 307_200))));
        let pts: Vec<_> = (1..=9)
            .map(|i| (i * 100, i * 1000, i * 1000 - 64))
            .collect();
        let mut ring = series_site(256, &pts, 1000);
        ring.stack_id = 2;
        ring.frames = vec![src_frame("ring_push", None, None)];
        ring.live = Some(live(64, 16_384, 120, older.then_some((0, 0))));
        let mut p = profile(900, vec![]);
        p.sites = vec![leak, ring];
        p
    }

    fn section(text: &str, title: &str) -> String {
        let s = &text[text
            .find(title)
            .unwrap_or_else(|| panic!("no {title}:\n{text}"))..];
        s[..s.find("\n\n").unwrap_or(s.len())].to_string()
    }

    #[test]
    fn every_site_with_blocks_never_freed_and_its_ages() {
        let p = two_sites(false);
        let a = analyze(&p, &Options::default());
        let text = render_report(&p, &a, 10);
        let s = section(&text, "\nBlocks never freed, by bytes");
        let expected = "
Blocks never freed, by bytes (2 of 2 sites; ages at 0.90s):
   #    BLOCKS       BYTES     OLDEST     MEDIAN   FREED        LEAK  SITE
   1      1.0k   500.0 KiB   880.0 ms   440.0 ms    0.0%        high  leak_records
        ages: 536.9 ms–1.1 s: 1.0k
   2        64    16.0 KiB   120.0 ms    60.0 ms   99.3%           -  ring_push
        ages: 67.1 ms–134.2 ms: 64";
        assert_eq!(s, expected);
    }

    #[test]
    fn older_lists_only_sites_with_old_blocks() {
        let p = two_sites(true);
        let o = Options {
            older: Some(Duration::from_millis(500)),
            ..Default::default()
        };
        let text = render_report(&p, &analyze(&p, &o), 10);
        let s = section(&text, "\nBlocks never freed older than 500.0 ms");
        assert!(
            s.contains("     600   300.0 KiB")
                && s.contains("of 1.0k blocks (500.0 KiB) never freed"),
            "{s}"
        );
        assert!(!s.contains("ring_push"), "{s}");
        // No site read: no section.
        let mut p = two_sites(false);
        for s in &mut p.sites {
            s.live = None;
        }
        let text = render_report(&p, &analyze(&p, &Options::default()), 10);
        assert!(!text.contains("Blocks never freed"), "{text}");
    }
}
