//! The leak candidates' live bytes over time, one line per advised candidate (from its site's
//! series, bytes - freed_bytes, from 0 at the start): a panel of the `--plot` picture and a
//! plot of the HTML page.
use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::analyze::leaks::{Confidence, LeakCandidate};
use crate::analyze::Analysis;
use crate::model::{Profile, Site};
use crate::numfmt::fmt_bytes;

/// The panel's height, in the `--plot` picture and on the page.
pub const PANEL_HEIGHT: u32 = 300;
/// Candidates drawn, most confident and biggest first (the rest are in the report).
pub const MAX_LINES: usize = 6;
/// One colour per line, none of them the other panels' (tests find lines by colour).
pub const COLORS: [RGBColor; MAX_LINES] = [
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x17, 0xbe, 0xcf),
    RGBColor(0xbc, 0xbd, 0x22),
];
const FONT: &str = "sans-serif";

fn drawing<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the leak plot: {e:?}")
}

/// One line: its legend and its (seconds, live bytes) points, from (0, 0).
pub struct Line {
    pub legend: String,
    pub points: Vec<(f64, f64)>,
}

/// The lines of the candidates given leak advice (medium or high confidence).
pub fn lines(p: &Profile, a: &Analysis) -> Vec<Line> {
    let site = |c: &LeakCandidate| -> Option<&Site> {
        p.sites
            .iter()
            .find(|s| (s.pid, s.stack_id) == (c.pid, c.stack_id))
    };
    a.leaks
        .iter()
        .filter(|c| c.confidence >= Confidence::Medium)
        .filter_map(|c| Some((c, site(c)?)))
        .take(MAX_LINES)
        .map(|(c, s)| {
            let mut points = vec![(0.0, 0.0)];
            points.extend(
                s.series
                    .iter()
                    .map(|pt| (pt.t.as_secs_f64(), pt.counters.live_bytes() as f64)),
            );
            // The end state, when the final drain did not add a point.
            let end = p.duration.as_secs_f64();
            if points.last().is_some_and(|&(t, _)| t < end) {
                points.push((end, s.counters.live_bytes() as f64));
            }
            Line {
                legend: format!(
                    "{}: {} live at the end ({} confidence)",
                    c.site,
                    fmt_bytes(s.counters.live_bytes()),
                    c.confidence
                ),
                points,
            }
        })
        .collect()
}

/// A byte scale and its name for values up to `max`.
fn unit(max: f64) -> (f64, &'static str) {
    let names = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let (mut scale, mut i) = (1.0, 0);
    while i + 1 < names.len() && max >= scale * 1024.0 {
        scale *= 1024.0;
        i += 1;
    }
    (scale, names[i])
}

/// Draws the panel on `area`, its x axis from 0 to `x_max` seconds.
pub fn draw<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    p: &Profile,
    a: &Analysis,
    x_max: f64,
) -> Result<()> {
    let lines = lines(p, a);
    let x_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|pt| pt.0))
        .fold(x_max, f64::max)
        .max(f64::MIN_POSITIVE);
    let y_top = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|pt| pt.1))
        .fold(0.0, f64::max);
    let (scale, name) = unit(y_top);
    let y_max = if y_top > 0.0 {
        y_top / scale * 1.3
    } else {
        1.0
    };
    let x_decimals = (1.0 - x_max.log10().floor()).max(1.0) as usize;
    let mut chart = ChartBuilder::on(area)
        .caption("Leak candidates' live bytes", (FONT, 18))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(110)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(drawing)?;
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .y_desc(format!("{name} live"))
        .x_label_formatter(&|v| format!("{v:.x_decimals$}"))
        .y_label_formatter(&|v| format!("{v:.1}"))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .light_line_style(RGBColor(0xee, 0xee, 0xee))
        .draw()
        .map_err(drawing)?;
    if lines.is_empty() {
        let what = if p.mode.sees_frees() {
            "no leak candidate"
        } else {
            "not traced (--mode alloc-only does not see frees)"
        };
        let style = TextStyle::from((FONT, 24).into_font())
            .color(&RGBColor(0x88, 0x88, 0x88))
            .pos(Pos::new(HPos::Center, VPos::Center));
        chart
            .plotting_area()
            .draw(&Text::new(what, (x_max / 2.0, y_max / 2.0), style))
            .map_err(drawing)?;
        return Ok(());
    }
    for (line, &color) in lines.iter().zip(&COLORS) {
        chart
            .draw_series(
                LineSeries::new(
                    line.points.iter().map(|&(t, v)| (t, v / scale)),
                    color.stroke_width(2),
                )
                .point_size(3),
            )
            .map_err(drawing)?
            .label(line.legend.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(0x99, 0x99, 0x99))
        .draw()
        .map_err(drawing)?;
    Ok(())
}

/// The panel alone as an SVG document of `width` pixels (the HTML page's), or None when no
/// candidate was advised. The caller has registered the font (`plot::svg_charts`).
pub fn svg(p: &Profile, a: &Analysis, width: u32) -> Result<Option<String>> {
    if lines(p, a).is_empty() {
        return Ok(None);
    }
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, (width, PANEL_HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        draw(&root, p, a, p.duration.as_secs_f64())?;
        root.present().map_err(drawing)?;
    }
    Ok(Some(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::{analyze, Options};
    use crate::export::plot::tests::polylines;
    use crate::testkit::{profile, series_site};

    #[test]
    fn one_line_per_advised_candidate_from_zero() {
        // A leak over 4 points; a site that frees everything.
        let leak: Vec<_> = (1..=4).map(|i| (i * 1000, i * 50, 0)).collect();
        let churn: Vec<_> = (1..=4).map(|i| (i * 1000, i * 50, i * 50)).collect();
        let mut other = series_site(64, &churn, 100);
        other.stack_id = 2;
        let mut p = profile(4000, vec![]);
        p.sites = vec![series_site(256, &leak, 0), other];
        let a = analyze(&p, &Options::default());
        let ls = lines(&p, &a);
        assert_eq!(ls.len(), 1);
        assert_eq!(ls[0].points.len(), 5);
        assert_eq!(ls[0].points[0], (0.0, 0.0));
        assert_eq!(ls[0].points[4], (4.0, 200.0 * 256.0));
        assert!(ls[0]
            .legend
            .ends_with("50.0 KiB live at the end (high confidence)"));
        crate::export::plot::svg_charts(&p, &a).unwrap();
        let svg = svg(&p, &a, 800).unwrap().unwrap();
        assert_eq!(polylines(&svg, COLORS[0]), vec![5]);
        assert_eq!(polylines(&svg, COLORS[1]), Vec::<usize>::new());
        assert!(svg.contains("Leak candidates"));
        // Nothing advised: no plot on the page.
        p.sites.remove(0);
        let a = analyze(&p, &Options::default());
        assert!(super::svg(&p, &a, 800).unwrap().is_none());
    }
}
