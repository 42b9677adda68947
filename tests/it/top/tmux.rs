//! A terminal for the live view's tests: a tmux session on a private server (other tests'
//! and people's sessions untouched), driven with send-keys and read with capture-pane; and
//! reading the view's tables off the captured screen.
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// One tmux session running one shell command, killed (with its server) on drop.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `command` (run by `sh -c`) in a detached session of `width` x `height`.
    pub fn start(command: &str, width: u16, height: u16) -> Tmux {
        // A server per session: one killed by the last test's drop may still be going away.
        static SESSIONS: AtomicU32 = AtomicU32::new(0);
        let n = SESSIONS.fetch_add(1, Ordering::Relaxed);
        let socket = format!("alloctrace-test-{}-{n}", std::process::id());
        let t = Tmux { socket };
        t.run(&[
            "new-session",
            "-d",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            command,
        ]);
        t
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run tmux (xtask setup installs it): {e}"));
        assert!(
            out.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The screen as shown now (the alternate screen while an application has it).
    pub fn capture(&self) -> String {
        self.run(&["capture-pane", "-p"])
    }

    pub fn send_keys(&self, keys: &str) {
        self.run(&["send-keys", keys]);
    }

    /// A pane variable (`#{alternate_on}`, `#{pane_pid}`, ...).
    pub fn var(&self, name: &str) -> String {
        self.run(&["display-message", "-p", &format!("#{{{name}}}")])
            .trim()
            .to_string()
    }

    /// The pane's terminal settings as `stty -a` prints them.
    pub fn stty(&self) -> String {
        let tty = self.var("pane_tty");
        let out = Command::new("stty")
            .args(["-a", "-F", &tty])
            .output()
            .expect("run stty");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until `cond` holds for the screen, and returns that screen; panics with `what` and
    /// the last screen after `limit`.
    pub fn wait_for(&self, what: &str, limit: Duration, cond: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.capture();
            if cond(&screen) {
                return screen;
            }
            assert!(
                start.elapsed() < limit,
                "after {limit:?}, {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// The number in column `header` (a right-aligned column of the table whose header line holds
/// `anchor`) of the first row below that header containing `row`; None if absent.
pub fn cell(screen: &str, anchor: &str, header: &str, row: &str) -> Option<String> {
    let lines: Vec<Vec<char>> = screen.lines().map(|l| l.chars().collect()).collect();
    let at = lines
        .iter()
        .position(|l| l.iter().collect::<String>().contains(anchor))?;
    let head: String = lines[at].iter().collect();
    // The column ends where its (right-aligned) header ends.
    let word = format!(" {header} ");
    let start = head.find(&word)?;
    let end = head[..start + word.len() - 1].chars().count();
    let line = lines[at + 1..]
        .iter()
        .find(|l| l.iter().collect::<String>().contains(row))?;
    let before: String = line[..end.min(line.len())].iter().collect();
    before.split_whitespace().last().map(str::to_string)
}

/// The first row's first word in the table whose header line holds `anchor`.
pub fn first_row(screen: &str, anchor: &str) -> Option<String> {
    let mut lines = screen.lines().skip_while(|l| !l.contains(anchor)).skip(1);
    let row = lines.next()?;
    row.trim_start_matches(['│', ' '])
        .split_whitespace()
        .next()
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCREEN: &str = "\
┌ processes (1) ──────────────────────────────────────┐
│     PID    ALLOC B/s   ALLOCS/s     ALLOCS  COMMAND  │
│    4242    1.2 MiB/s      20.1k    1234567  live_sites│
└─────────────────────────────────────────────────────┘
┌ sites ──────────────────────────────────────────────┐
│FUNCTION        ALLOCS/s      ALLOCS                 │
│top_big              100         800                 │
│top_fast           20.0k      160000                 │
";

    #[test]
    fn cells_are_read_under_their_headers() {
        assert_eq!(
            cell(SCREEN, "COMMAND", "ALLOCS", " 4242 ").as_deref(),
            Some("1234567")
        );
        assert_eq!(
            cell(SCREEN, "COMMAND", "ALLOCS/s", " 4242 ").as_deref(),
            Some("20.1k")
        );
        assert_eq!(
            cell(SCREEN, "FUNCTION", "ALLOCS", "top_fast").as_deref(),
            Some("160000")
        );
        assert_eq!(cell(SCREEN, "FUNCTION", "ALLOCS", "top_keep"), None);
        assert_eq!(first_row(SCREEN, "FUNCTION").as_deref(), Some("top_big"));
    }
}
