//! A real Prometheus server scraping the daemon; the daemon's memory as many short processes
//! come and go.
use std::collections::BTreeSet;
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
    let mut t = serve_sites(&scratch);
    let pid = t.w.pid();
    t.command("a 500");
    t.command("b 7");
    let truth = t.truth_now();

    let config = scratch.path("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
             - job_name: alloctrace\n    static_configs:\n      - targets: ['{}']\n",
            t.s.addr
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
    t.finish();
}

/// System-wide, 1,200 short processes (each a serve_sites allocating 100 blocks and exiting)
/// come and go: `/metrics` keeps no series of an exited one, and once their blocks are swept
/// the daemon forgets them: the every-process profile (`go tool pprof -raw`, `pid` labels)
/// holds none of them, so what it keeps is bounded by the processes running at once.
/// alloctrace's resident memory (its own `process_resident_memory_bytes`) is printed after
/// every 200 (system-wide, it also counts whatever else runs on the machine).
#[test]
#[ignore = "needs root and BPF: run with cargo xtask test"]
fn memory_stays_bounded_as_short_processes_come_and_go() {
    alloctrace_bin();
    let scratch = Scratch::new();
    let s = serve(&[]);
    // Still running at the end: its pid in the profile shows the labels are read.
    let mut stays = Workload::start("serve_sites", &[], &[]);
    let mut n = 0;
    command(&mut stays, "a 5", &mut n);
    let bin = workload("serve_sites");
    let mut pids = BTreeSet::new();
    for round in 1..=6 {
        for _ in 0..200 {
            let mut c = Command::new(&bin)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            c.stdin.take().unwrap().write_all(b"a 100\n").unwrap();
            assert!(c.wait().unwrap().success());
            pids.insert(c.id());
        }
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
            round * 200,
            resident as f64 / 1048576.0
        );
        let kept: Vec<&u32> = pids
            .iter()
            .filter(|p| metric_of(&page, "alloctrace_allocations_total", **p).is_some())
            .collect();
        assert!(
            kept.is_empty(),
            "exited processes still have series: {kept:?}"
        );
    }
    // Retired at the next interval, swept within ten, then forgotten.
    let pprof_dir = scratch.path("pprof");
    std::fs::create_dir_all(&pprof_dir).unwrap();
    let url = format!("http://{}/debug/pprof/allocs", s.addr);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let raw = go_pprof(&pprof_dir, &["-raw", &url]);
        let labelled: BTreeSet<u32> = raw
            .split("pid:[")
            .skip(1)
            .filter_map(|r| r.split(']').next()?.trim().parse().ok())
            .collect();
        let held: Vec<&u32> = labelled.intersection(&pids).collect();
        if held.is_empty() {
            assert!(
                labelled.contains(&stays.pid()),
                "the running workload (pid {}) is not in the profile's pid labels {labelled:?}:\n{}",
                stays.pid(),
                excerpt(&raw, 4000)
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "20 s after they exited, the profile still holds {} of the {} short processes \
             (e.g. {:?})",
            held.len(),
            pids.len(),
            &held[..held.len().min(5)]
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    stays.close_stdin();
    stays.wait_code(0);
}
