//! The first measurement, as a test: Debian's own `redis-server` (linked with
//! `libjemalloc.so.2`, no frame pointers, symbols from `.dynsym`) served by
//! `redis-benchmark` while `alloctrace --pid` watches: its allocations are seen, through
//! jemalloc, and charged to redis's functions, not jemalloc's.
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

const SERVER: &str = "/usr/bin/redis-server";
const BENCHMARK: &str = "/usr/bin/redis-benchmark";
/// Requests per command of the benchmark (SET and GET).
const REQUESTS: u64 = 2000;

/// The server, stopped when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        send_signal(&mut self.0, libc::SIGTERM);
        if wait_timeout(&mut self.0, Duration::from_secs(5)).is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn redis_server_by_pid_is_counted_through_jemalloc() {
    alloctrace_bin();
    for program in [SERVER, BENCHMARK] {
        assert!(
            Path::new(program).is_file(),
            "{program} is missing: cargo xtask setup installs redis-server and redis-tools (as root)"
        );
    }
    let scratch = Scratch::new();
    let (socket, report_path) = (scratch.path("redis.sock"), scratch.path("report.json"));
    // No TCP port (nothing else on the machine is disturbed), no persistence.
    let mut server = Server(
        Command::new(SERVER)
            .args([
                "--port",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
                "--unixsocket",
            ])
            .arg(&socket)
            .arg("--dir")
            .arg(scratch.path("."))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {SERVER}: {e}")),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline && matches!(server.0.try_wait(), Ok(None)),
            "{SERVER} did not open {} within 10 s",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = server.0.id();
    let mut tracer = Running::spawn(&pid_args(pid, &report_path, &[]), &[]);
    tracer.wait_until_tracing();
    let bench = Command::new(BENCHMARK)
        .arg("-s")
        .arg(&socket)
        .args(["-q", "-t", "set,get", "-n", &REQUESTS.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BENCHMARK}: {e}"));
    assert!(
        bench.status.success(),
        "{BENCHMARK} failed ({}): {}",
        bench.status,
        String::from_utf8_lossy(&bench.stderr)
    );
    // One drain after the last request, then the final report.
    std::thread::sleep(Duration::from_millis(600));
    tracer.signal(libc::SIGINT);
    let finished = tracer.wait(RUN_TIMEOUT);
    let context = finished.describe();
    let report = Report::read(&report_path, &context);
    let v = Variant {
        quiet_start: false,
        ..c("redis-server", "jemalloc", Some("libjemalloc.so.2"))
    };
    assert_counted_something(&report, pid, &v, &context);
    let counters = report.process_counters(pid);
    // Every command's arguments are objects the server allocates (and frees).
    assert!(
        counters.allocs >= 2 * REQUESTS && counters.frees > 0,
        "redis-server served {} requests; alloctrace counted {} allocations and {} frees\n{context}",
        2 * REQUESTS,
        counters.allocs,
        counters.frees
    );
    // Frames past the caller may be unnamed (no frame pointers), never an allocator's.
    let sites = report.sites_of(pid);
    let allocator_sites: Vec<&str> = sites
        .iter()
        .filter_map(|s| Report::frame_function(s, 0))
        .filter(|f| is_allocator_function(f))
        .collect();
    assert!(
        allocator_sites.is_empty(),
        "sites charged to allocator functions: {allocator_sites:?}\n{}",
        report.describe_sites(pid)
    );
    let busiest = sites
        .iter()
        .max_by_key(|s| s["counters"]["allocs"].as_u64().unwrap_or(0))
        .expect("a site");
    assert!(
        Report::frame_function(busiest, 0).is_some(),
        "the busiest site's caller is unnamed: {}\n{}",
        busiest,
        report.describe_sites(pid)
    );
    assert_allocator(&report, pid, &v, Path::new(SERVER));
}
