//! `--plot FILE.svg|png`: the allocation rate (bytes/s and allocations/s) and the live heap over
//! time, one panel each, drawn with `plotters` from the rate analyzer's overall series (one
//! point per drain, a drain every `--resolution` whatever the print interval, the older part
//! of a long run merged: `Analysis::rate.series`), on a time axis from the run's start. The same panels, as SVG text, are the plots of
//! the HTML page ([`svg_charts`]).
//!
//! Text is laid out (SVG) and rasterized (PNG) with a bundled DejaVu Sans, so neither needs
//! fontconfig or any system font.
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::analyze::rate::{Peak, RatePoint};
use crate::analyze::Analysis;
use crate::export::{leak_plot, Exporter, Options};
use crate::model::Profile;
use crate::numfmt::{fmt_bytes, fmt_bytes_f, fmt_count_f};

/// The output format, from the file name's extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlotFormat {
    Svg,
    Png,
}

impl PlotFormat {
    /// The format a file name asks for (its extension, in any case), if it asks for one.
    pub fn of(path: &Path) -> Option<PlotFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "svg" => Some(PlotFormat::Svg),
            "png" => Some(PlotFormat::Png),
            _ => None,
        }
    }
}

/// Size of the `--plot` picture: a title and three panels, then the leak candidates'
/// (`leak_plot`).
pub const WIDTH: u32 = 1200;
pub const HEIGHT: u32 = TITLE_HEIGHT + 3 * PANEL_HEIGHT + leak_plot::PANEL_HEIGHT;
const TITLE_HEIGHT: u32 = 50;
const PANEL_HEIGHT: u32 = 300;
/// Lines of at most this many points mark each point.
const MARKED_POINTS: usize = 60;
/// Width of the HTML page's plots.
const HTML_WIDTH: u32 = 1100;

/// Line colours, one per panel. The HTML page and the tests find each data line by its colour:
/// nothing else in a panel is drawn as a polyline of that colour (legend marks are boxes).
pub const BYTES_COLOR: RGBColor = RGBColor(0xd6, 0x27, 0x28);
pub const OBJECTS_COLOR: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
pub const LIVE_COLOR: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);

const FONT: &str = "sans-serif";
/// DejaVu Sans (Bitstream Vera license, see assets/fonts/DejaVuSans-LICENSE.txt).
static FONT_TTF: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Registers the bundled font with plotters' ab_glyph text renderer, once.
fn font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FONT, FontStyle::Normal, FONT_TTF).is_ok());
    if ok {
        Ok(())
    } else {
        Err(anyhow!("the bundled font DejaVuSans.ttf does not load"))
    }
}

fn drawing<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the plot: {e:?}")
}

/// What a panel's values count, for the y axis: its ticks are plain numbers in the unit that
/// suits the largest value (`MiB`, `k`), named in the axis' description.
#[derive(Clone, Copy)]
pub(crate) enum Quantity {
    Bytes,
    Count,
}

impl Quantity {
    /// The scale and its name for values up to `max`.
    fn unit(self, max: f64) -> (f64, &'static str) {
        let (step, names): (f64, &[&'static str]) = match self {
            Quantity::Bytes => (1024.0, &["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"]),
            Quantity::Count => (1000.0, &["", "thousand", "million", "billion", "trillion"]),
        };
        let mut scale = 1.0;
        let mut i = 0;
        while i + 1 < names.len() && max >= scale * step {
            scale *= step;
            i += 1;
        }
        (scale, names[i])
    }
}

/// One panel: a quantity over time (another file's panel, e.g. of leak candidates, is one
/// of these drawn with [`draw_panel`]).
pub(crate) struct Panel {
    pub caption: &'static str,
    pub quantity: Quantity,
    /// The y axis' description, `{}` standing for the unit (`MiB allocated per second`).
    pub y_desc: &'static str,
    pub color: RGBColor,
    pub legend: String,
    /// (seconds since the start, value), oldest first.
    pub points: Vec<(f64, f64)>,
}

fn fmt_rate_bytes(v: f64) -> String {
    format!("{}/s", fmt_bytes_f(v))
}

fn fmt_rate_count(v: f64) -> String {
    format!("{}/s", fmt_count_f(v))
}

fn fmt_live(v: f64) -> String {
    fmt_bytes(v.max(0.0).round() as u64)
}

fn peak_text(p: Option<Peak>, fmt: fn(f64) -> String) -> String {
    p.map(|p| format!(", peak {} at {:.1} s", fmt(p.value), p.at))
        .unwrap_or_default()
}

fn avg_text(v: Option<f64>, fmt: fn(f64) -> String) -> String {
    match v {
        Some(v) => format!("avg {}", fmt(v)),
        None => "avg n/a (zero duration)".to_string(),
    }
}

fn rate_points(series: &[RatePoint], get: fn(&RatePoint) -> Option<f64>) -> Vec<(f64, f64)> {
    series
        .iter()
        .filter_map(|x| get(x).map(|v| (x.t, v)))
        .collect()
}

fn bytes_panel(a: &Analysis) -> Panel {
    let o = &a.rate.overall;
    Panel {
        caption: "Allocation rate: bytes",
        quantity: Quantity::Bytes,
        y_desc: "{} allocated per second",
        color: BYTES_COLOR,
        legend: format!(
            "bytes/s: {}{}",
            avg_text(o.avg_alloc_rate, fmt_rate_bytes),
            peak_text(o.peak_alloc_rate, fmt_rate_bytes)
        ),
        points: rate_points(&a.rate.series, |x| x.alloc_rate),
    }
}

fn objects_panel(a: &Analysis) -> Panel {
    let o = &a.rate.overall;
    Panel {
        caption: "Allocation rate: allocations",
        quantity: Quantity::Count,
        y_desc: "{} allocations per second",
        color: OBJECTS_COLOR,
        legend: format!(
            "allocations/s: {}{}",
            avg_text(o.avg_object_rate, fmt_rate_count),
            peak_text(o.peak_object_rate, fmt_rate_count)
        ),
        points: rate_points(&a.rate.series, |x| x.object_rate),
    }
}

fn live_panel(p: &Profile, a: &Analysis) -> Panel {
    let o = &a.rate.overall;
    if !p.mode.sees_frees() {
        return Panel {
            caption: "Live heap",
            quantity: Quantity::Bytes,
            y_desc: "{} live",
            color: LIVE_COLOR,
            legend: "live bytes: not traced (--mode alloc-only does not see frees)".to_string(),
            points: vec![],
        };
    }
    Panel {
        caption: "Live heap",
        quantity: Quantity::Bytes,
        y_desc: "{} live",
        color: LIVE_COLOR,
        legend: format!(
            "live bytes: {} in {} objects at the end{}",
            fmt_bytes(o.live_bytes_end),
            o.live_objects_end,
            peak_text(o.peak_live_bytes, fmt_live)
        ),
        points: a
            .rate
            .series
            .iter()
            .map(|x| (x.t, x.live_bytes as f64))
            .collect(),
    }
}

/// A y tick: as few decimals as the value needs (`0`, `2.5`, `0.25`).
fn fmt_tick(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// At most `max` characters of `s`: its end, after an ellipsis (a command's path is long, its
/// end says what it is).
pub fn shorten(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    let tail: String = s.chars().skip(n - (max - 1)).collect();
    format!("…{tail}")
}

/// `alloctrace: TARGET — 3.8 s, 190 samples every 20ms`.
pub fn title(p: &Profile) -> String {
    let n = p.samples.len();
    format!(
        "alloctrace: {} — {:.1} s, {n} sample{} every {}",
        shorten(&p.target.to_string(), 60),
        p.duration.as_secs_f64(),
        if n == 1 { "" } else { "s" },
        humantime::format_duration(p.drain_step())
    )
}

/// The x axis ends at the end of the run (or the last sample, if later).
fn x_max(p: &Profile, a: &Analysis) -> f64 {
    let last = a.rate.series.last().map_or(0.0, |x| x.t);
    let m = p.duration.as_secs_f64().max(last);
    if m > 0.0 {
        m
    } else {
        1.0
    }
}

pub(crate) fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    x_max: f64,
) -> Result<()> {
    // Enough decimals that the ticks of a short run differ (0.0005 s apart for a 3 ms run).
    let x_decimals = (1.0 - x_max.log10().floor()).max(1.0) as usize;
    let y_top = panel.points.iter().map(|p| p.1).fold(0.0f64, f64::max);
    let (scale, unit) = panel.quantity.unit(y_top);
    let y_desc = panel.y_desc.replace("{}", unit);
    let y_desc = y_desc.trim();
    let y_top = y_top / scale;
    let y_max = if y_top > 0.0 { y_top * 1.3 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(panel.caption, (FONT, 18))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(110)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(drawing)?;
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .y_desc(y_desc)
        .x_label_formatter(&|v| format!("{v:.x_decimals$}"))
        .y_label_formatter(&|v| fmt_tick(*v))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .light_line_style(RGBColor(0xee, 0xee, 0xee))
        .draw()
        .map_err(drawing)?;
    if panel.points.is_empty() {
        let style = TextStyle::from((FONT, 28).into_font())
            .color(&RGBColor(0x88, 0x88, 0x88))
            .pos(Pos::new(HPos::Center, VPos::Center));
        chart
            .plotting_area()
            .draw(&Text::new("no data", (x_max / 2.0, y_max / 2.0), style))
            .map_err(drawing)?;
        return Ok(());
    }
    let color = panel.color;
    chart
        .draw_series(
            LineSeries::new(
                panel.points.iter().map(|&(t, v)| (t, v / scale)),
                color.stroke_width(2),
            )
            // Marks show where the drains were on a sparse line; on a fine one they would
            // hide it.
            .point_size(if panel.points.len() <= MARKED_POINTS {
                3
            } else {
                0
            }),
        )
        .map_err(drawing)?
        .label(panel.legend.as_str())
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], color.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(0x99, 0x99, 0x99))
        .draw()
        .map_err(drawing)?;
    Ok(())
}

/// The whole `--plot` picture: the title, then bytes/s, allocations/s and live bytes.
fn draw_all<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    p: &Profile,
    a: &Analysis,
) -> Result<()> {
    root.fill(&WHITE).map_err(drawing)?;
    let body = root.titled(&title(p), (FONT, 22)).map_err(drawing)?;
    let (body, leaks) = body.split_vertically(3 * PANEL_HEIGHT);
    leak_plot::draw(&leaks, p, a, x_max(p, a))?;
    let panels = [bytes_panel(a), objects_panel(a), live_panel(p, a)];
    let areas = body.split_evenly((panels.len(), 1));
    let xm = x_max(p, a);
    for (area, panel) in areas.iter().zip(&panels) {
        draw_panel(area, panel, xm)?;
    }
    root.present().map_err(drawing)
}

/// `--plot FILE.svg|png`.
pub struct Plot;

impl Exporter for Plot {
    fn option(&self) -> &'static str {
        "plot"
    }
    fn help(&self) -> &'static str {
        "Plot the allocation rate and the live heap over time to FILE (.svg or .png)"
    }
    fn check_path(&self, path: &Path) -> Result<(), String> {
        match PlotFormat::of(path) {
            Some(_) => Ok(()),
            None => Err(format!(
                "--plot {}: the file name must end in .svg or .png",
                path.display()
            )),
        }
    }
    fn what(&self, _: &Profile) -> String {
        "plot".to_string()
    }
    fn render(&self, p: &Profile, a: &Analysis, _: &Options, path: &Path) -> Result<Vec<u8>> {
        let f =
            PlotFormat::of(path).ok_or_else(|| anyhow!("{}: not .svg or .png", path.display()))?;
        render(p, a, f)
    }
}

/// The `--plot` file's bytes: SVG text or a PNG image of [`WIDTH`] x [`HEIGHT`] pixels. A
/// profile without samples still gives a valid picture whose panels say "no data".
pub fn render(p: &Profile, a: &Analysis, f: PlotFormat) -> Result<Vec<u8>> {
    font()?;
    match f {
        PlotFormat::Svg => {
            let mut s = String::new();
            {
                let root = SVGBackend::with_string(&mut s, (WIDTH, HEIGHT)).into_drawing_area();
                draw_all(&root, p, a)?;
            }
            Ok(s.into_bytes())
        }
        PlotFormat::Png => {
            let mut rgb = vec![0u8; WIDTH as usize * HEIGHT as usize * 3];
            {
                let root =
                    BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
                draw_all(&root, p, a)?;
            }
            encode_png(&rgb, WIDTH, HEIGHT)
        }
    }
}

fn encode_png(rgb: &[u8], w: u32, h: u32) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc
        .write_header()
        .map_err(|e| anyhow!("encoding the PNG: {e}"))?;
    writer
        .write_image_data(rgb)
        .map_err(|e| anyhow!("encoding the PNG: {e}"))?;
    writer
        .finish()
        .map_err(|e| anyhow!("encoding the PNG: {e}"))?;
    Ok(out)
}

/// The HTML page's plots, as SVG documents (without the XML declaration, ready to inline).
pub struct SvgCharts {
    /// Bytes/s and allocations/s over time, one panel each.
    pub rate: String,
    /// Live bytes over time.
    pub live: String,
}

/// The plots of the HTML page: the panels of [`render`] without its title, as inline SVG.
pub fn svg_charts(p: &Profile, a: &Analysis) -> Result<SvgCharts> {
    font()?;
    let xm = x_max(p, a);
    let svg = |panels: &[Panel]| -> Result<String> {
        let mut s = String::new();
        {
            let h = PANEL_HEIGHT * panels.len() as u32;
            let root = SVGBackend::with_string(&mut s, (HTML_WIDTH, h)).into_drawing_area();
            root.fill(&WHITE).map_err(drawing)?;
            for (area, panel) in root.split_evenly((panels.len(), 1)).iter().zip(panels) {
                draw_panel(area, panel, xm)?;
            }
            root.present().map_err(drawing)?;
        }
        Ok(s)
    };
    Ok(SvgCharts {
        rate: svg(&[bytes_panel(a), objects_panel(a)])?,
        live: svg(&[live_panel(p, a)])?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::analyze::{analyze, Options};
    use crate::model::{Process, Target};
    use crate::testkit::{c, profile};

    fn three_samples() -> Profile {
        let end = c(30, 3000, 10, 1000);
        let mut p = profile(
            3000,
            vec![
                (1000, vec![(1, c(10, 1000, 0, 0))]),
                (2000, vec![(1, c(25, 2500, 0, 0))]),
                (3000, vec![(1, end)]),
            ],
        );
        p.processes = vec![Process {
            pid: 1,
            comm: "p".into(),
            counters: end,
            unknown_frees: 0,
            unseen: None,
            allocators: Vec::new(),
            go: None,
        }];
        p.target = Target::Command {
            argv: vec!["./prog".into(), "<&>".into()],
            pid: 1,
        };
        p
    }

    /// The `points` of the polylines drawn in `color` (the leak plot's tests read them too).
    pub(crate) fn polylines(svg: &str, color: RGBColor) -> Vec<usize> {
        let stroke = format!("stroke=\"#{:02X}{:02X}{:02X}\"", color.0, color.1, color.2);
        svg.split("<polyline")
            .skip(1)
            .map(|t| &t[..t.find("/>").unwrap()])
            .filter(|t| t.contains(&stroke))
            .map(|t| {
                let pts = t.split("points=\"").nth(1).unwrap();
                pts[..pts.find('"').unwrap()].split_whitespace().count()
            })
            .collect()
    }

    #[test]
    fn svg_has_one_line_per_panel_with_one_point_per_sample() {
        let p = three_samples();
        let a = analyze(&p, &Options::default());
        let svg = String::from_utf8(render(&p, &a, PlotFormat::Svg).unwrap()).unwrap();
        assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(
            svg.contains("alloctrace: ./prog &lt;&amp;&gt; — 3.0 s, 3 samples every 1s"),
            "{svg}"
        );
        assert_eq!(polylines(&svg, BYTES_COLOR), vec![3]);
        assert_eq!(polylines(&svg, OBJECTS_COLOR), vec![3]);
        assert_eq!(polylines(&svg, LIVE_COLOR), vec![3]);
        assert!(svg.contains("peak 1.5 KiB/s at 2.0 s"), "{svg}");
        assert!(
            svg.contains("live bytes: 2.0 KiB in 20 objects at the end"),
            "{svg}"
        );
        assert!(svg.contains("time since start (s)") && svg.contains("allocations per second"));
        assert!(!svg.contains("no data"));
    }

    #[test]
    fn units_and_titles() {
        assert_eq!(Quantity::Bytes.unit(1000.0), (1.0, "bytes"));
        assert_eq!(
            Quantity::Bytes.unit(5.0 * 1024.0 * 1024.0),
            (1024.0 * 1024.0, "MiB")
        );
        assert_eq!(Quantity::Count.unit(999.0), (1.0, ""));
        assert_eq!(Quantity::Count.unit(12_000.0), (1000.0, "thousand"));
        assert_eq!(
            (fmt_tick(2.0), fmt_tick(0.25), fmt_tick(1.5)),
            ("2".into(), "0.25".into(), "1.5".into())
        );
        assert_eq!(shorten("abcdef", 6), "abcdef");
        assert_eq!(shorten("/very/long/path/prog", 6), "…/prog");
    }

    #[test]
    fn empty_profile_says_no_data() {
        let p = profile(0, vec![]);
        let a = analyze(&p, &Options::default());
        let svg = String::from_utf8(render(&p, &a, PlotFormat::Svg).unwrap()).unwrap();
        assert_eq!(svg.matches("no data").count(), 3, "{svg}");
        let png = render(&p, &a, PlotFormat::Png).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let charts = svg_charts(&p, &a).unwrap();
        assert_eq!(charts.rate.matches("no data").count(), 2);
        assert_eq!(charts.live.matches("no data").count(), 1);
    }

    #[test]
    fn png_decodes_with_text_drawn() {
        let p = three_samples();
        let a = analyze(&p, &Options::default());
        let png_bytes = render(&p, &a, PlotFormat::Png).unwrap();
        let dec = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut reader = dec.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (WIDTH, HEIGHT));
        let px = |x: u32, y: u32| {
            let i = ((y * WIDTH + x) * 3) as usize;
            (buf[i], buf[i + 1], buf[i + 2])
        };
        // The title band has dark (text) pixels: the font rasterizes.
        let dark = (0..TITLE_HEIGHT)
            .flat_map(|y| (0..WIDTH).map(move |x| (x, y)))
            .filter(|&(x, y)| {
                let (r, g, b) = px(x, y);
                (r as u32 + g as u32 + b as u32) < 200
            })
            .count();
        assert!(dark > 200, "title text is missing: {dark} dark pixels");
        // Every panel's line colour is there.
        for c in [BYTES_COLOR, OBJECTS_COLOR, LIVE_COLOR] {
            let n = (0..HEIGHT)
                .flat_map(|y| (0..WIDTH).map(move |x| (x, y)))
                .filter(|&(x, y)| px(x, y) == (c.0, c.1, c.2))
                .count();
            assert!(n > 100, "{c:?} drawn in only {n} pixels");
        }
    }
}
