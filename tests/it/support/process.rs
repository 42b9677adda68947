//! Child processes of the tests: their output lines collected by threads and waited for with a
//! timeout, signals, stopping one a test gave up on, and pinning to a CPU.
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The lines a child writes to one of its pipes, collected by a thread, waitable with a timeout.
#[derive(Clone)]
pub struct Lines {
    inner: Arc<(Mutex<LinesState>, Condvar)>,
}

#[derive(Default)]
struct LinesState {
    lines: Vec<String>,
    eof: bool,
}

impl Lines {
    /// Starts a thread reading `r` to its end.
    pub fn collect(r: impl Read + Send + 'static) -> (Lines, JoinHandle<()>) {
        let lines = Lines {
            inner: Arc::new((Mutex::new(LinesState::default()), Condvar::new())),
        };
        let l = lines.clone();
        let handle = thread::spawn(move || {
            let mut reader = BufReader::new(r);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf)
                            .trim_end_matches(['\n', '\r'])
                            .to_string();
                        let (m, cv) = &*l.inner;
                        m.lock().unwrap().lines.push(line);
                        cv.notify_all();
                    }
                }
            }
            let (m, cv) = &*l.inner;
            m.lock().unwrap().eof = true;
            cv.notify_all();
        });
        (lines, handle)
    }

    /// The first line (seen so far or arriving within `timeout`) that starts with `prefix`;
    /// Err(why) when the stream ends or the time runs out first.
    pub fn wait_for(&self, prefix: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.inner;
        let mut st = m.lock().unwrap();
        loop {
            if let Some(l) = st.lines.iter().find(|l| l.starts_with(prefix)) {
                return Ok(l.clone());
            }
            if st.eof {
                return Err(format!(
                    "the stream ended without a line starting with {prefix:?}"
                ));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "no line starting with {prefix:?} within {timeout:?}"
                ));
            }
            st = cv.wait_timeout(st, deadline - now).unwrap().0;
        }
    }

    /// Everything collected so far, newline-terminated lines.
    pub fn text(&self) -> String {
        let st = self.inner.0.lock().unwrap();
        st.lines.iter().map(|l| format!("{l}\n")).collect()
    }
}

/// Waits up to `timeout` for `child` to exit.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            Err(e) => panic!("cannot wait for pid {}: {e}", child.id()),
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `sig` to `child` (ours, by its pid), unless it has been reaped.
pub fn send_signal(child: &mut Child, sig: libc::c_int) {
    if let Ok(None) = child.try_wait() {
        // SAFETY: kill(2) on the pid of our own unreaped child, which therefore cannot have
        // been recycled for another process.
        unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    }
}

/// Stops a child that is still running when a test gives up on it: SIGTERM (alloctrace
/// detaches and exits), then SIGKILL after two seconds.
pub(crate) fn stop(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        send_signal(child, libc::SIGTERM);
        if wait_timeout(child, Duration::from_secs(2)).is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The byte at `addr` in process `pid`'s memory, read through /proc (the process untouched):
/// an int3, 0xcc, where a uprobe is installed.
pub fn byte_at(pid: u32, addr: u64) -> u8 {
    let path = format!("/proc/{pid}/mem");
    let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, addr)
        .unwrap_or_else(|e| panic!("cannot read {path} at {addr:#x}: {e}"));
    b[0]
}

/// Pins the calling thread (and the processes and threads it starts later) to `cpu`.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_setaffinity(0, ..) applies to
    // the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}
