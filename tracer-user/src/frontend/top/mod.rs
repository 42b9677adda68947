//! `alloctrace top`, the live view, one front end over the engine: a full-screen view of the
//! running trace, drawn every interval and on every key, until `q` (or SIGTERM/SIGINT, or the
//! target's end). Here: the run, the terminal check, and the loop that drives the engine and
//! the keys. State in `app`, drawing in `draw`, keys in `keys`, the terminal's guard in
//! `terminal`, alloctrace's own messages meanwhile in `stderr`.
mod app;
mod draw;
mod keys;
mod stderr;
mod terminal;

use std::io::IsTerminal;

use anyhow::{bail, Context, Result};

use crate::config::Config;
use crossterm::event::Event;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::engine::{End, Ended, Engine};
use app::App;
use keys::Action;
use terminal::Screen;

/// Runs the live view and returns the process exit code.
pub fn run(cfg: Config) -> Result<i32> {
    // Before anything is traced: the view needs a terminal to draw on.
    if !std::io::stdout().is_terminal() {
        bail!(
            "alloctrace top draws on a terminal and standard output is not one (for a report \
             in a file or a pipe, run alloctrace without `top`)"
        );
    }
    if !cfg.files.0.is_empty() || cfg.output.is_some() {
        bail!(
            "alloctrace top shows the trace live and writes no report or file: for those, run \
             alloctrace without `top`"
        );
    }
    let mut engine = Engine::start(&cfg)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let mut app = App::new(cfg.analyze.clone());
    // Every way out of the view gives the terminal and standard error back (the guards'
    // drops; the panic hook); the engine's probes come off in `finish`, or with the engine's
    // drop on an error.
    let finished = {
        let mut screen = Screen::enter()?;
        let captured = stderr::capture()?;
        let (mut events, stop_keys) = keys::reader();
        let _stop_keys = StopOnDrop(stop_keys);
        let mut snapshots = engine.subscribe();
        let ended = rt.block_on(view(
            &mut engine,
            &mut app,
            &mut screen,
            &mut events,
            &captured,
        ));
        let finished = ended.and_then(|(ended, quit)| {
            let end = ended.end();
            let finished = engine.finish(ended)?;
            // The trace ended by itself (the target exited, --duration): the final numbers
            // stay on the screen, the probes already off, until the user quits.
            if !quit && matches!(end, End::TargetExited | End::Duration) {
                let snapshot = snapshots.borrow_and_update().clone();
                app.update(snapshot, finished.profile.clone());
                app.note = Some(match end {
                    End::TargetExited => "the traced program exited; q quits".to_string(),
                    _ => "--duration reached; q quits".to_string(),
                });
                // The command's last words may be on the screen: cleared.
                screen.redraw(&app)?;
                rt.block_on(browse(&mut app, &mut screen, &mut events))?;
            }
            Ok(finished)
        });
        drop(screen);
        captured.finish();
        finished?
    };
    Ok(finished.close())
}

/// What woke the view.
enum Wake {
    Advanced(Result<Option<Ended>>),
    Key(crossterm::event::Event),
}

/// Drives the engine and the keys until the trace ends (its end, and false) or `q` (true).
async fn view(
    engine: &mut Engine,
    app: &mut App,
    screen: &mut Screen,
    events: &mut mpsc::UnboundedReceiver<Event>,
    captured: &stderr::Captured,
) -> Result<(Ended, bool)> {
    let mut snapshots = engine.subscribe();
    screen.draw(app)?;
    loop {
        // A key cancels the engine's `advance` where it waits (its select of the tick, the
        // signals, the target's exit): what it waits on lives in the engine, not in the
        // future, so the next `advance` goes on from there, as its own loop does.
        let wake = tokio::select! {
            r = engine.advance() => Wake::Advanced(r),
            Some(ev) = events.recv() => Wake::Key(ev),
        };
        match wake {
            Wake::Advanced(r) => {
                if let Some(ended) = r? {
                    return Ok((ended, false));
                }
                if snapshots.has_changed()? {
                    let snapshot = snapshots.borrow_and_update().clone();
                    app.update(snapshot, engine.profile_now());
                }
            }
            Wake::Key(ev) => match keys::action(&ev) {
                Some(Action::Quit) => return Ok((engine.stop()?, true)),
                Some(action) => {
                    app.note = captured.last();
                    apply(app, screen, action)?;
                    continue;
                }
                None => continue,
            },
        }
        app.note = captured.last();
        screen.draw(app)?;
    }
}

/// The final view of an ended trace, its keys working, until `q`, SIGTERM or SIGINT.
async fn browse(
    app: &mut App,
    screen: &mut Screen,
    events: &mut mpsc::UnboundedReceiver<Event>,
) -> Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    loop {
        let ev = tokio::select! {
            ev = events.recv() => ev,
            _ = sigterm.recv() => None,
            _ = sigint.recv() => None,
        };
        match ev.as_ref().map(keys::action) {
            // No more keys (the reader ended) or a signal: the view ends.
            None | Some(Some(Action::Quit)) => return Ok(()),
            Some(Some(action)) => apply(app, screen, action)?,
            Some(None) => {}
        }
    }
}

/// What a key other than `q` does to the view, drawn.
fn apply(app: &mut App, screen: &mut Screen, action: Action) -> Result<()> {
    match action {
        Action::Sort(key) => app.sort = key,
        Action::Move(by) => app.select(by),
        Action::Redraw => return screen.redraw(app),
        Action::Quit => return Ok(()),
    }
    screen.draw(app)
}

/// Stops the key thread when the view ends, however it ends.
struct StopOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use crate::cli::{Cli, Sub};

    #[test]
    fn top_takes_the_tracing_options_and_its_own_command() {
        let cli = Cli::try_parse_from([
            "alloctrace",
            "top",
            "--interval",
            "2s",
            "--mode",
            "alloc-only",
            "--",
            "./prog",
            "-x",
        ])
        .unwrap();
        assert_eq!(cli.interval, Duration::from_secs(2));
        assert!(!cli.mode.sees_frees());
        match cli.subcommand {
            Some(Sub::Top { command }) => assert_eq!(command, ["./prog", "-x"]),
            other => panic!("not top: {other:?}"),
        }
        let cli = Cli::try_parse_from(["alloctrace", "top", "--pid", "42"]).unwrap();
        assert_eq!(cli.pid, Some(42));
        assert!(matches!(cli.subcommand, Some(Sub::Top { command }) if command.is_empty()));
    }
}
