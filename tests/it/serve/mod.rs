//! `alloctrace serve` read by the tools a fleet uses: the real `go tool pprof` (Debian's
//! golang-go) and a real Prometheus server, against workloads/serve_sites.c, which allocates
//! only when told (so every window's ground truth is known); bad requests, the bearer token,
//! SIGTERM during a request. Helpers here: the daemon under test, a small HTTP client, `go tool
//! pprof -raw`'s output parsed.
mod endpoints;
mod fleet;
mod go;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

/// A running `alloctrace serve` and the address it said it serves on.
struct Served {
    tracer: Running,
    addr: String,
}

/// `alloctrace serve --listen 127.0.0.1:0 --interval 250ms -v ARGS`, once it serves.
fn serve(args: &[&str]) -> Served {
    let mut all = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--interval",
        INTERVAL,
        "-v",
    ];
    all.extend_from_slice(args);
    let mut tracer = Running::spawn(&all, &[]);
    tracer.wait_until_tracing();
    const SERVING: &str = "alloctrace: serving http://";
    await_stderr(&tracer, SERVING);
    let text = tracer.stderr_text();
    let at = text.find(SERVING).unwrap() + SERVING.len();
    let addr = text[at..].split('/').next().unwrap().to_string();
    Served { tracer, addr }
}

/// A serve_sites workload, waiting for commands, and `alloctrace serve --pid` tracing it.
struct SitesServed {
    w: Workload,
    s: Served,
    /// Where the workload writes its ground truth (`truth` command).
    truth_path: PathBuf,
    /// Commands the workload has carried out (it answers each with `done N`).
    done: u32,
}

/// Starts serve_sites (its ground truth in `scratch`), then `alloctrace serve --pid` on it.
fn serve_sites(scratch: &Scratch) -> SitesServed {
    let truth_path = scratch.path("truth.txt");
    let w = Workload::start(
        "serve_sites",
        &[],
        &[("GROUND_TRUTH", truth_path.as_os_str())],
    );
    let s = serve(&["--pid", &w.pid().to_string()]);
    SitesServed {
        w,
        s,
        truth_path,
        done: 0,
    }
}

impl SitesServed {
    /// See [`command`].
    fn command(&mut self, cmd: &str) {
        command(&mut self.w, cmd, &mut self.done);
    }

    /// See [`truth_now`].
    fn truth_now(&mut self) -> GroundTruth {
        truth_now(&mut self.w, &self.truth_path, &mut self.done)
    }

    /// Stops the daemon, then lets the workload end: it must exit 0.
    fn finish(mut self) {
        drop(self.s);
        self.w.close_stdin();
        self.w.wait_code(0);
    }
}

/// The status and body of `GET PATH` (HTTP/1.0: the body ends with the connection).
fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
    let mut s =
        TcpStream::connect(addr).unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
    let mut req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)
        .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"));
    split_response(&resp, &format!("GET http://{addr}{path}"))
}

/// A raw request (any method, any headers), for the refusals.
fn request(addr: &str, raw: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let (status, body) = split_response(&resp, raw);
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn split_response(resp: &[u8], what: &str) -> (u16, Vec<u8>) {
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "{what}: no complete response: {:?}",
                String::from_utf8_lossy(resp)
            )
        });
    let head = String::from_utf8_lossy(&resp[..end]);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{what}: bad status line in {head:?}"));
    (status, resp[end + 4..].to_vec())
}

/// `/metrics`' value of `family` for `pid` (None when the page has no such line).
fn metric_of(page: &str, family: &str, pid: u32) -> Option<u64> {
    let label = format!("pid=\"{pid}\"");
    page.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(&label))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Polls `/metrics` until `pid`'s allocation counter reaches `allocs` (the engine publishes
/// every interval); panics after 20 s.
fn await_allocs(addr: &str, pid: u32, allocs: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = get(addr, "/metrics", &[]);
        let page = String::from_utf8_lossy(&body).into_owned();
        let n = metric_of(&page, "alloctrace_allocations_total", pid);
        if status == 200 && n == Some(allocs) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/metrics never showed {allocs} allocations for pid {pid} (last {n:?}, status {status}):\n{page}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `go tool pprof ARGS` (its profile cache in `scratch`): stdout, or a panic with its stderr.
fn go_pprof(scratch: &Path, args: &[&str]) -> String {
    let out = go_pprof_command(scratch, args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run go tool pprof (is golang-go installed? cargo xtask setup): {e}")
        });
    assert!(
        out.status.success(),
        "go tool pprof {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("pprof's output is UTF-8")
}

fn go_pprof_command(scratch: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("go");
    c.args(["tool", "pprof"])
        .args(args)
        .env("PPROF_TMPDIR", scratch)
        .env("HOME", scratch)
        .env("GOCACHE", scratch.join("gocache"));
    c
}

/// `go tool pprof -raw`'s samples summed by their leaf function (the allocator's caller):
/// function -> the sample values, in the profile's sample-type order.
fn raw_by_leaf(raw: &str) -> BTreeMap<String, Vec<u64>> {
    let mut functions: BTreeMap<u64, String> = BTreeMap::new();
    let mut samples: Vec<(Vec<u64>, u64)> = Vec::new();
    let mut section = "";
    for line in raw.lines() {
        match line.trim_end() {
            "Samples:" | "Locations" | "Mappings" => {
                section = line.trim_end();
                continue;
            }
            _ => {}
        }
        let Some((left, right)) = line.split_once(':') else {
            continue;
        };
        match section {
            "Samples:" => {
                let values: Option<Vec<u64>> =
                    left.split_whitespace().map(|v| v.parse().ok()).collect();
                let first = right.split_whitespace().next().and_then(|l| l.parse().ok());
                if let (Some(values), Some(first)) = (values.filter(|v| !v.is_empty()), first) {
                    samples.push((values, first));
                }
            }
            "Locations" => {
                let Ok(id) = left.trim().parse::<u64>() else {
                    continue;
                };
                let name = right
                    .split_whitespace()
                    .find(|t| !t.starts_with("0x") && !t.starts_with("M="))
                    .unwrap_or("?");
                functions.insert(id, name.to_string());
            }
            _ => {}
        }
    }
    let mut by_leaf: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (values, leaf) in samples {
        let name = functions
            .get(&leaf)
            .cloned()
            .unwrap_or_else(|| format!("#{leaf}"));
        let sum = by_leaf.entry(name).or_insert_with(|| vec![0; values.len()]);
        for (s, v) in sum.iter_mut().zip(&values) {
            *s += v;
        }
    }
    by_leaf
}

/// The ground truth so far of a serve_sites workload (`truth` command).
fn truth_now(w: &mut Workload, path: &Path, n: &mut u32) -> GroundTruth {
    w.send("truth\n");
    *n += 1;
    w.wait_for_line(&format!("done {n}"));
    GroundTruth::read(path, &w.describe())
}

/// Sends a serve_sites command and waits for its `done`.
fn command(w: &mut Workload, cmd: &str, n: &mut u32) {
    w.send(&format!("{cmd}\n"));
    *n += 1;
    w.wait_for_line(&format!("done {n}"));
}
