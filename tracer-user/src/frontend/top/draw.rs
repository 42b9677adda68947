//! The live view drawn from its state (`App`): a header, the processes, the selected
//! process's allocation rate as a sparkline, its top sites, and a last line for losses and
//! alloctrace's own messages. Nothing here reads the trace or the keys.
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, Paragraph, Row, Sparkline, Table, TableState};
use ratatui::Frame;

use super::app::{App, SortKey};
use crate::numfmt::{fmt_bytes, fmt_bytes_f, fmt_count_f};

/// Rows of the process table at most, besides its borders and header: the sites need room.
const MAX_PROC_ROWS: u16 = 12;

pub fn draw(f: &mut Frame, app: &App) {
    let procs = (app.procs.len().max(1) as u16).min(MAX_PROC_ROWS) + 3;
    let [head, procs_at, spark_at, sites_at, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(procs),
        Constraint::Length(6),
        Constraint::Min(4),
        Constraint::Length(1),
    ])
    .areas(f.area());
    f.render_widget(Paragraph::new(header(app)), head);
    draw_procs(f, app, procs_at);
    draw_spark(f, app, spark_at);
    draw_sites(f, app, sites_at);
    f.render_widget(footer(app), foot);
}

fn header(app: &App) -> Line<'static> {
    let key = |k: SortKey, label: &'static str| {
        if app.sort == k {
            label.bold().reversed()
        } else {
            label.into()
        }
    };
    let (target, t) = app
        .profile()
        .map(|p| (p.target.to_string(), p.duration.as_secs_f64()))
        .unwrap_or_else(|| ("starting".to_string(), 0.0));
    Line::from(vec![
        "alloctrace top".bold(),
        format!("  {target}  {t:.1}s  ").into(),
        "sort: ".into(),
        key(SortKey::Bytes, "[b]ytes"),
        " ".into(),
        key(SortKey::Count, "[c]ount"),
        " ".into(),
        key(SortKey::Live, "[l]ive"),
        " ".into(),
        key(SortKey::Rate, "[r]ate"),
        "  ↑↓ process  q quit".into(),
    ])
}

fn right(s: String) -> Cell<'static> {
    Cell::from(Line::from(s).right_aligned())
}

fn draw_procs(f: &mut Frame, app: &App, area: Rect) {
    let frees = app.sees_frees();
    let or_dash = |s: String| if frees { s } else { "-".to_string() };
    let rows = app.procs.iter().map(|p| {
        Row::new(vec![
            right(p.pid.to_string()),
            right(format!("{}/s", fmt_bytes_f(p.bytes_per_s))),
            right(fmt_count_f(p.allocs_per_s)),
            right(or_dash(fmt_count_f(p.frees_per_s))),
            right(or_dash(fmt_bytes(p.total.live_bytes()))),
            right(p.total.allocs.to_string()),
            right(fmt_bytes(p.total.bytes)),
            right(p.gc_cycles.map(|n| n.to_string()).unwrap_or_default()),
            Cell::from(format!("  {}", p.comm)),
        ])
    });
    let mut header: Vec<Cell> = [
        "PID",
        "ALLOC B/s",
        "ALLOCS/s",
        "FREES/s",
        "LIVE",
        "ALLOCS",
        "BYTES",
        "GC",
    ]
    .map(|h| Cell::from(Line::from(h).right_aligned()))
    .into();
    header.push(Cell::from("  COMMAND"));
    let header = Row::new(header).bold();
    // As top's: the numbers first, the command name last, taking the rest of the line.
    let widths = [
        Constraint::Length(8),
        Constraint::Length(12),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(10),
        // A Go process's GC cycles (empty for others).
        Constraint::Length(7),
        Constraint::Fill(1),
    ];
    let title = format!(" processes ({}) ", app.procs.len());
    let table = Table::new(rows, widths)
        .header(header)
        .block(Block::bordered().title(title))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default().with_selected(app.selected_row());
    f.render_stateful_widget(table, area, &mut state);
}

fn draw_spark(f: &mut Frame, app: &App, area: Rect) {
    let history = app.history();
    // The newest values that fit inside the borders.
    let fits = usize::from(area.width.saturating_sub(2));
    let shown = &history[history.len().saturating_sub(fits)..];
    let now = shown.last().copied().unwrap_or(0);
    let peak = shown.iter().copied().max().unwrap_or(0);
    let title = match app.selected_proc() {
        Some(p) => format!(
            " pid {} {}: allocation rate {}/s (peak shown {}/s) ",
            p.pid,
            p.comm,
            fmt_bytes_f(now as f64),
            fmt_bytes_f(peak as f64)
        ),
        None => " allocation rate ".to_string(),
    };
    let spark = Sparkline::default()
        .block(Block::bordered().title(title))
        .data(shown)
        .style(Style::new().fg(Color::Cyan));
    f.render_widget(spark, area);
}

fn draw_sites(f: &mut Frame, app: &App, area: Rect) {
    let fits = usize::from(area.height.saturating_sub(3));
    let (rows, total) = app.site_rows(fits);
    let frees = app.sees_frees();
    let body = rows.iter().map(|s| {
        Row::new(vec![
            Cell::from(s.function.clone()),
            right(fmt_count_f(s.allocs_per_s)),
            right(format!("{}/s", fmt_bytes_f(s.bytes_per_s))),
            right(s.total.allocs.to_string()),
            right(fmt_bytes(s.total.bytes)),
            right(if frees {
                fmt_bytes(s.total.live_bytes())
            } else {
                "-".to_string()
            }),
            Cell::from(format!("  {}", s.class)),
        ])
    });
    let header = Row::new(vec![
        Cell::from("FUNCTION"),
        right("ALLOCS/s".into()),
        right("ALLOC B/s".into()),
        right("ALLOCS".into()),
        right("BYTES".into()),
        right("LIVE".into()),
        Cell::from("  PATTERN"),
    ])
    .bold();
    // The numbers' widest values: `1023.9 MiB/s`, ten digits, `1023.9 MiB`; the class
    // with its indent (`  large-infrequent`).
    let widths = [
        Constraint::Min(16),
        Constraint::Length(9),
        Constraint::Length(12),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(18),
    ];
    let title = match app.selected_proc() {
        Some(p) => format!(
            " sites of pid {} {} ({} of {total}), by {} ",
            p.pid,
            p.comm,
            rows.len(),
            app.sort.name()
        ),
        None => " sites ".to_string(),
    };
    let table = Table::new(body, widths)
        .header(header)
        .block(Block::bordered().title(title));
    f.render_widget(table, area);
}

/// The losses when there are any (what to do about each), else alloctrace's newest message.
fn footer(app: &App) -> Paragraph<'static> {
    let lost = app.snapshot.losses.nonzero();
    if !lost.is_empty() {
        let text = lost
            .iter()
            .map(|(what, n, hint)| format!("{what} {n} ({hint})"))
            .collect::<Vec<_>>()
            .join("; ");
        return Paragraph::new(format!("lost: {text}")).style(Style::new().fg(Color::Red));
    }
    match &app.note {
        Some(note) => Paragraph::new(note.clone()).style(Style::new().fg(Color::Yellow)),
        None if app.updates == 0 => Paragraph::new("waiting for the first interval…"),
        None => Paragraph::new(""),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    use super::*;
    use crate::analyze::Options;
    use crate::engine::Snapshot;
    use crate::testkit::{c, command_profile, frame, proc_, sample, site};

    fn screen(app: &App) -> String {
        let mut t = Terminal::new(TestBackend::new(120, 30)).unwrap();
        t.draw(|f| draw(f, app)).unwrap();
        let buf = t.backend().buffer();
        (0..buf.area.height)
            .map(|y| {
                (0..buf.area.width)
                    .map(|x| buf[(x, y)].symbol())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn app(losses: crate::model::Losses) -> App {
        let counters = c(1234, 567_890, 1000, 500_000);
        let snapshot = Snapshot {
            sample: sample(2000, &[(100, counters)]),
            previous: Some(sample(1000, &[(100, c(0, 0, 0, 0))])),
            processes: vec![proc_(100, "prog", counters)],
            losses,
        };
        let sites = vec![site(
            100,
            7,
            vec![frame(Some("make_widget"), "/prog")],
            counters,
        )];
        let profile = command_profile(snapshot.processes.clone(), sites, vec![], 2000);
        let mut app = App::new(Options::default());
        app.update(Arc::new(snapshot), profile);
        app
    }

    #[test]
    fn the_view_shows_the_process_its_sites_and_the_sort() {
        let text = screen(&app(Default::default()));
        for want in [
            "./prog -x",
            "processes (1)",
            "prog",
            "1234",
            "make_widget",
            "sites of pid 100 prog (1 of 1), by bytes",
            "allocation rate 554.6 KiB/s",
        ] {
            assert!(text.contains(want), "no {want:?} in\n{text}");
        }
        assert!(!text.contains("lost:"), "{text}");
    }

    #[test]
    fn a_go_process_shows_its_gc_cycles_and_others_none() {
        let counters = c(10, 1000, 0, 0);
        let mut go = proc_(200, "goprog", counters);
        go.go = Some(crate::model::GoRuntime {
            gc_cycles: 31,
            ..Default::default()
        });
        let snapshot = Snapshot {
            sample: sample(2000, &[(100, counters), (200, counters)]),
            previous: None,
            processes: vec![proc_(100, "prog", counters), go],
            losses: Default::default(),
        };
        let profile = command_profile(snapshot.processes.clone(), vec![], vec![], 2000);
        let mut app = App::new(Options::default());
        app.update(Arc::new(snapshot), profile);
        let text = screen(&app);
        let line = |comm: &str| {
            text.lines()
                .find(|l| l.contains(&format!("  {comm} ")))
                .unwrap_or_else(|| panic!("no row of {comm} in\n{text}"))
                .to_string()
        };
        let header = text.lines().find(|l| l.contains("PID")).unwrap();
        let gc_end = header.find(" GC").expect("a GC column") + 3;
        // The column's cells, right-aligned under its header (the lines' first character,
        // the border, is the same in each).
        let cell = |row: String| row[gc_end - 7..gc_end].trim().to_string();
        assert_eq!(cell(line("goprog")), "31", "{text}");
        assert_eq!(cell(line("prog")), "", "no GC for a C process\n{text}");
    }

    #[test]
    fn losses_are_shown_when_not_zero() {
        let losses = crate::model::Losses {
            live_map_full: 3,
            ..Default::default()
        };
        let text = screen(&app(losses));
        assert!(
            text.contains("lost: in-flight map full 3 (raise --max-live)"),
            "{text}"
        );
    }
}
