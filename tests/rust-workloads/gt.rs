//! Ground truth for the Rust workloads, in the record format of `tests/workloads/gt.h` (parsed
//! by tests/it/support/truth.rs): `pid`, then one `site` line per function. No `unknown_frees`
//! line: the Rust runtime allocates before `main` and may free that memory after an attach.

use std::io::{Read, Write};

/// What one function allocated and freed, as gt.h's `struct tally`.
pub struct Tally {
    pub name: &'static str,
    allocs: u64,
    bytes: u64,
    frees: u64,
    freed_bytes: u64,
    hist: [u64; 64],
}

impl Tally {
    pub const fn new(name: &'static str) -> Tally {
        Tally { name, allocs: 0, bytes: 0, frees: 0, freed_bytes: 0, hist: [0; 64] }
    }

    pub fn alloc(&mut self, n: usize) {
        self.allocs += 1;
        self.bytes += n as u64;
        // gt.h's gt_bucket: the number of significant bits of the size.
        let bits = (usize::BITS - n.leading_zeros()) as usize;
        self.hist[bits.min(63)] += 1;
    }

    pub fn free(&mut self, n: usize) {
        self.frees += 1;
        self.freed_bytes += n as u64;
    }

    fn record(&self) -> String {
        let hist: Vec<String> = (0..64)
            .filter(|&b| self.hist[b] > 0)
            .map(|b| format!("{b}:{}", self.hist[b]))
            .collect();
        format!(
            "site {} allocs={} bytes={} frees={} freed_bytes={} size_hist={}\n",
            self.name,
            self.allocs,
            self.bytes,
            self.frees,
            self.freed_bytes,
            if hist.is_empty() { "-".to_string() } else { hist.join(",") }
        )
    }
}

/// Writes the ground truth to $GROUND_TRUTH (standard error when unset). Call it after the
/// counted work: it allocates, from functions that are not sites.
pub fn write(sites: &[&Tally]) {
    let mut text = format!("pid {}\n", std::process::id());
    for t in sites {
        text.push_str(&t.record());
    }
    match std::env::var_os("GROUND_TRUTH") {
        Some(p) if !p.is_empty() => std::fs::write(&p, text).expect("write $GROUND_TRUTH"),
        _ => std::io::stderr().write_all(text.as_bytes()).expect("write the ground truth"),
    }
}

/// With the argument `wait`: says `ready` and waits for one byte on standard input (gt.h's
/// gt_ready_and_wait); exits 97 when standard input ends first.
pub fn wait_if_asked() {
    if std::env::args_os().nth(1).is_some_and(|a| a == "wait") {
        let mut out = std::io::stdout();
        out.write_all(b"ready\n").and_then(|_| out.flush()).expect("say ready");
        let mut byte = [0u8; 1];
        match std::io::stdin().read(&mut byte) {
            Ok(1) => {}
            _ => std::process::exit(97),
        }
    }
}
