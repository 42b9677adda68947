//! The live view's keys: a thread reading the terminal's events into a channel, and what each
//! key does to the view.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use tokio::sync::mpsc;

use super::app::SortKey;

/// How long the reader waits for an event before it looks whether it should stop.
const POLL: Duration = Duration::from_millis(100);

/// What a key asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Quit,
    Sort(SortKey),
    /// Select the process this many rows down (negative: up).
    Move(isize),
    /// Clear the screen and draw it all again (Ctrl-L, as in top and less; a resize).
    Redraw,
}

/// What `ev` asks for, if anything.
pub fn action(ev: &Event) -> Option<Action> {
    let key = match ev {
        Event::Key(k) if k.kind != KeyEventKind::Release => k,
        Event::Resize(..) => return Some(Action::Redraw),
        _ => return None,
    };
    let KeyEvent {
        code, modifiers, ..
    } = *key;
    // Raw mode: Ctrl-C reaches us as a key, not as SIGINT.
    if modifiers.contains(KeyModifiers::CONTROL) {
        return match code {
            KeyCode::Char('c') => Some(Action::Quit),
            KeyCode::Char('l') => Some(Action::Redraw),
            _ => None,
        };
    }
    Some(match code {
        KeyCode::Char('q') | KeyCode::Esc => Action::Quit,
        KeyCode::Char('b') => Action::Sort(SortKey::Bytes),
        KeyCode::Char('c') => Action::Sort(SortKey::Count),
        KeyCode::Char('l') => Action::Sort(SortKey::Live),
        KeyCode::Char('r') => Action::Sort(SortKey::Rate),
        KeyCode::Up | KeyCode::Char('k') => Action::Move(-1),
        KeyCode::Down | KeyCode::Char('j') => Action::Move(1),
        KeyCode::PageUp => Action::Move(-10),
        KeyCode::PageDown => Action::Move(10),
        _ => return None,
    })
}

/// The terminal's events, read by a thread until the returned flag is set (or the receiver
/// dropped).
pub fn reader() -> (mpsc::UnboundedReceiver<Event>, Arc<AtomicBool>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let spawned = std::thread::Builder::new()
        .name("alloctrace-keys".into())
        .spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match crossterm::event::poll(POLL) {
                    Ok(true) => match crossterm::event::read() {
                        Ok(ev) => {
                            if tx.send(ev).is_err() {
                                break;
                            }
                        }
                        Err(e) => {
                            log::warn!("cannot read the terminal's keys: {e}");
                            break;
                        }
                    },
                    Ok(false) => {}
                    Err(e) => {
                        log::warn!("cannot read the terminal's keys: {e}");
                        break;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot start the key thread (q will not work; SIGTERM ends the view): {e}");
    }
    (rx, stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode, modifiers: KeyModifiers) -> Event {
        Event::Key(KeyEvent::new(code, modifiers))
    }

    #[test]
    fn keys_map_to_their_actions() {
        let none = KeyModifiers::NONE;
        assert_eq!(action(&key(KeyCode::Char('q'), none)), Some(Action::Quit));
        assert_eq!(
            action(&key(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Action::Quit)
        );
        assert_eq!(
            action(&key(KeyCode::Char('c'), none)),
            Some(Action::Sort(SortKey::Count))
        );
        assert_eq!(
            action(&key(KeyCode::Char('l'), none)),
            Some(Action::Sort(SortKey::Live))
        );
        assert_eq!(action(&key(KeyCode::Down, none)), Some(Action::Move(1)));
        assert_eq!(action(&key(KeyCode::Char('x'), none)), None);
        assert_eq!(action(&Event::Resize(80, 24)), Some(Action::Redraw));
        assert_eq!(
            action(&key(KeyCode::Char('l'), KeyModifiers::CONTROL)),
            Some(Action::Redraw)
        );
    }
}
