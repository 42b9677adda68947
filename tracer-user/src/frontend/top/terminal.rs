//! The terminal while the live view owns it: raw mode, the alternate screen, the cursor
//! hidden. Given back as it was on every way out: the guard's drop (the view's end by `q`, by
//! SIGTERM or SIGINT ending the trace, by an error or an unwinding panic) and a panic hook
//! that runs before the panic's message is printed (so the message lands on the normal
//! screen, on the real standard error).
use std::io::Stdout;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use anyhow::{Context, Result};
use crossterm::cursor::{Hide, Show};
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;

use super::app::App;

/// Whether the terminal is ours now (the hook and the guard give it back once).
static OWNED: AtomicBool = AtomicBool::new(false);

/// The terminal, owned until dropped.
pub struct Screen {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Screen {
    pub fn enter() -> Result<Screen> {
        install_panic_hook();
        enable_raw_mode().context("cannot put the terminal in raw mode")?;
        OWNED.store(true, Ordering::SeqCst);
        let mut out = std::io::stdout();
        let entered = crossterm::execute!(out, EnterAlternateScreen, Hide)
            .context("cannot switch to the alternate screen")
            .and_then(|_| {
                Terminal::new(CrosstermBackend::new(out)).context("cannot use the terminal")
            });
        match entered {
            Ok(terminal) => Ok(Screen { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }

    /// Draws the view: ratatui writes only the cells that changed since the last draw.
    pub fn draw(&mut self, app: &App) -> Result<()> {
        self.terminal
            .draw(|f| super::draw::draw(f, app))
            .context("cannot draw on the terminal")?;
        Ok(())
    }
}

impl Screen {
    /// Clears the screen and draws the whole view: what else wrote on the terminal (a
    /// launched command shares it) is gone, which a diffed draw would leave.
    pub fn redraw(&mut self, app: &App) -> Result<()> {
        self.terminal.clear().context("cannot clear the terminal")?;
        self.draw(app)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves the alternate screen, shows the cursor and ends raw mode, when the terminal is
/// ours; nothing otherwise.
pub fn restore() {
    if OWNED.swap(false, Ordering::SeqCst) {
        let _ = crossterm::execute!(std::io::stdout(), LeaveAlternateScreen, Show);
        let _ = disable_raw_mode();
    }
}

/// A panic gives back standard error and the terminal before its message is printed.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            super::stderr::give_back();
            restore();
            previous(info);
        }));
    });
}
