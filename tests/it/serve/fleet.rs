//! A real Prometheus server scraping the daemon; the daemon's memory as many short processes
//! come and go.
use std::io::Write;
use std::process::Stdio;

use super::*;

/// A free loopback port (bound and released: the caller binds it again at once).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Prometheus (Debian's `prometheus`), started on a loopback port with a scrape config for the
/// daemon (every second), scrapes `/metrics`; its query API returns the workload's
/// allocation and byte counters equal to the ground truth.
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn prometheus_scrapes_the_allocation_counter() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let truth_path = scratch.path("truth.txt");
    let mut w = Workload::start(
        "serve_sites",
        &[],
        &[("GROUND_TRUTH", truth_path.as_os_str())],
    );
    let pid = w.pid();
    let s = serve(&["--pid", &pid.to_string()]);
    let mut n = 0;
    command(&mut w, "a 500", &mut n);
    command(&mut w, "b 7", &mut n);
    let truth = truth_now(&mut w, &truth_path, &mut n);

    let config = scratch.path("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
             - job_name: alloctrace\n    static_configs:\n      - targets: ['{}']\n",
            s.addr
        ),
    )
    .unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let mut prom = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            scratch.path("tsdb").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run prometheus (cargo xtask setup installs it): {e}"));
    let (prom_log, _) = Lines::collect(prom.stderr.take().unwrap());
    let query = |q: &str| -> Option<u64> {
        let path = format!(
            "/api/v1/query?query={}",
            q.replace('{', "%7B")
                .replace('}', "%7D")
                .replace('"', "%22")
        );
        let (status, body) = TcpStream::connect(&web)
            .ok()
            .map(|_| get(&web, &path, &[]))?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    let allocs_q = format!("alloctrace_allocations_total{{pid=\"{pid}\"}}");
    let bytes_q = format!("alloctrace_allocated_bytes_total{{pid=\"{pid}\"}}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let want = truth.total();
    let mut last = None;
    while Instant::now() < deadline {
        last = query(&allocs_q);
        if last == Some(want.allocs) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let bytes = query(&bytes_q);
    let _ = prom.kill();
    let _ = prom.wait();
    assert_eq!(
        last,
        Some(want.allocs),
        "Prometheus never returned {} allocations for pid {pid}\n--- prometheus:\n{}",
        want.allocs,
        excerpt(&prom_log.text(), 4000)
    );
    assert_eq!(bytes, Some(want.bytes));
    drop(s);
    w.close_stdin();
    w.wait_code(0);
}

/// System-wide, 2,400 short processes (each a serve_sites allocating 100 blocks and exiting)
/// come and go: `/metrics` keeps no series of an exited one, and alloctrace's resident memory
/// (its own `process_resident_memory_bytes`, measured after every 200, figures printed) grows
/// by less than 16 MiB over the last 1,600 once warmed up by the first 800 (without the
/// exited processes forgotten it grows with each of them).
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn memory_stays_bounded_as_short_processes_come_and_go() {
    alloctrace_bin();
    let s = serve(&[]);
    let bin = workload("serve_sites");
    const ROUNDS: usize = 12;
    const WARM_UP: usize = 4;
    let mut rss = Vec::new();
    let mut pids = Vec::new();
    for round in 0..ROUNDS {
        for _ in 0..200 {
            let mut c = Command::new(&bin)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            c.stdin.take().unwrap().write_all(b"a 100\n").unwrap();
            assert!(c.wait().unwrap().success());
            pids.push(c.id());
        }
        // Two intervals: the exited processes are swept.
        std::thread::sleep(Duration::from_millis(600));
        let (status, body) = get(&s.addr, "/metrics", &[]);
        assert_eq!(status, 200);
        let page = String::from_utf8_lossy(&body).into_owned();
        let resident = page
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .and_then(|v| v.parse::<u64>().ok())
            .expect("/metrics has process_resident_memory_bytes");
        let series = page
            .lines()
            .filter(|l| l.starts_with("alloctrace_allocations_total{"))
            .count();
        eprintln!(
            "serve memory: after {} short processes: RSS {:.1} MiB, {series} process series",
            (round + 1) * 200,
            resident as f64 / 1048576.0
        );
        rss.push(resident);
        let kept: Vec<&u32> = pids
            .iter()
            .filter(|p| metric_of(&page, "alloctrace_allocations_total", **p).is_some())
            .collect();
        assert!(
            kept.is_empty(),
            "exited processes still have series: {kept:?}"
        );
    }
    let growth = rss.last().unwrap().saturating_sub(rss[WARM_UP - 1]);
    assert!(
        growth < 16 << 20,
        "alloctrace's RSS grew by {:.1} MiB from {} to {} short processes: {rss:?}",
        growth as f64 / 1048576.0,
        WARM_UP * 200,
        ROUNDS * 200
    );
}
