//! alloctrace's own standard error while the live view owns the terminal. Lines written to it
//! meanwhile (exec decisions, warnings) would be drawn over the view and stay there: they go
//! to a pipe instead, the newest shown in the view's last line, and every one is written to
//! the real standard error when the view ends (`Captured::finish`).
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{Context, Result};

/// Lines kept for the end: older ones are counted, not kept.
const KEPT: usize = 1000;

/// The real standard error, duplicated, while fd 2 is the pipe; -1 otherwise.
static SAVED: AtomicI32 = AtomicI32::new(-1);

#[derive(Default)]
struct Lines {
    kept: Vec<String>,
    dropped: u64,
}

/// Standard error, captured until `finish` (or drop, which gives it back and drops the lines).
pub struct Captured {
    lines: Arc<Mutex<Lines>>,
    reader: Option<JoinHandle<()>>,
}

/// Points fd 2 at a pipe read by a thread of ours.
pub fn capture() -> Result<Captured> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot make a pipe for stderr");
    }
    // SAFETY: two fresh descriptors, owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: duplicates fd 2 (open or not: -1 then) to a new descriptor above 2.
    let saved = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) };
    if saved < 0 {
        return Err(std::io::Error::last_os_error()).context("cannot keep stderr");
    }
    // SAFETY: both descriptors are open; fd 2 becomes the pipe's write end.
    if unsafe { libc::dup2(write.as_raw_fd(), 2) } < 0 {
        let e = std::io::Error::last_os_error();
        // SAFETY: `saved` is ours, used nowhere else.
        unsafe { libc::close(saved) };
        return Err(e).context("cannot redirect stderr");
    }
    drop(write);
    SAVED.store(saved, Ordering::SeqCst);
    let lines = Arc::new(Mutex::new(Lines::default()));
    let into = lines.clone();
    let reader = std::thread::Builder::new()
        .name("alloctrace-stderr".into())
        .spawn(move || {
            let mut r = BufReader::new(std::fs::File::from(read));
            let mut buf = Vec::new();
            // Ends when fd 2 is given back: the pipe's last write end closes.
            while r.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                buf.clear();
                let mut l = into.lock().unwrap_or_else(|e| e.into_inner());
                if l.kept.len() == KEPT {
                    l.kept.remove(0);
                    l.dropped += 1;
                }
                l.kept.push(line);
            }
        });
    let reader = match reader {
        Ok(r) => r,
        Err(e) => {
            give_back();
            return Err(e).context("cannot start the stderr thread");
        }
    };
    Ok(Captured {
        lines,
        reader: Some(reader),
    })
}

/// Points fd 2 back at the real standard error, if it was captured.
pub fn give_back() {
    let saved = SAVED.swap(-1, Ordering::SeqCst);
    if saved >= 0 {
        // SAFETY: `saved` is the open duplicate made by `capture`; fd 2 takes it back and the
        // duplicate is closed, used nowhere else.
        unsafe {
            libc::dup2(saved, 2);
            libc::close(saved);
        }
    }
}

impl Captured {
    /// The newest line written, if any.
    pub fn last(&self) -> Option<String> {
        let l = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        l.kept.last().cloned()
    }

    /// Gives standard error back and writes there every line written meanwhile.
    pub fn finish(mut self) {
        give_back();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let l = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if l.dropped > 0 {
            eprintln!("alloctrace: ({} earlier lines not kept)", l.dropped);
        }
        for line in &l.kept {
            eprintln!("{line}");
        }
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        give_back();
    }
}
