//! Keeps the kernel's unwind tables and code-mapping cache current as the traced processes
//! map new code: the target's files are loaded before it runs (`Feed::start`), and where its
//! code lies (a running target's, or every process's system-wide); then every executable
//! mapping a traced process makes (the mmap watch's records: a `dlopen`, a new process in
//! system-wide mode, an exec) is sent to a thread of its own that records where it lies and
//! compiles and loads its file, off the event thread and off the hot path.
use std::collections::HashSet;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use alloctrace_common::unwind_table::FileKey;

use super::code_maps::CodeMaps;
use super::tables::{file_key, TableStats, Tables};
use crate::process::procmaps::{other_pids, Mapping, ProcessMaps};
use crate::target::allocators_of::mapping_file;
use crate::target::elf_deps::Mapped;

/// What the event thread sends: a process's new executable mappings, and the files not sent
/// before.
struct Batch {
    pid: u32,
    mappings: Vec<Mapping>,
    files: Vec<Mapped>,
}

/// Whose code is mapped already when the trace starts.
pub enum Running {
    /// None: a command about to start (its mappings come as the kernel records them).
    Nothing,
    /// Process `pid`, whose maps are read through its live thread `via`.
    Process { pid: u32, via: u32 },
    /// Every process: system-wide.
    Every,
}

/// The sending end, held by the event thread.
pub struct Feed {
    tx: mpsc::Sender<Batch>,
    /// Files already sent: each is resolved to a readable path once.
    sent: HashSet<FileKey>,
    pub stats: Arc<Mutex<TableStats>>,
}

impl Feed {
    /// Loads the tables of `files` now (the target's, before it runs) and a running target's
    /// code mappings, then starts the thread that loads those sent later (and, system-wide,
    /// first every running process's code mappings).
    pub fn start(
        mut tables: Tables,
        mut code: CodeMaps,
        files: &[Mapped],
        running: Running,
    ) -> std::io::Result<Feed> {
        let mut sent = HashSet::new();
        for f in files {
            let key = file_key(f.file.0, f.file.1);
            sent.insert(key);
            tables.add(key, &f.path, &f.shown);
        }
        if let Running::Process { pid, via } = running {
            // Gone already: the attach that follows says so.
            if let Ok(maps) = ProcessMaps::read(via) {
                code.fill(pid, maps.mappings());
            }
        }
        let every = matches!(running, Running::Every);
        let stats = Arc::new(Mutex::new(tables.stats.clone()));
        let (tx, rx) = mpsc::channel::<Batch>();
        let shared = stats.clone();
        std::thread::Builder::new()
            .name("alloctrace-cfi".into())
            .spawn(move || {
                if every {
                    fill_every(&mut code);
                }
                while let Ok(batch) = rx.recv() {
                    code.fill(batch.pid, &batch.mappings);
                    for f in batch.files {
                        tables.add(file_key(f.file.0, f.file.1), &f.path, &f.shown);
                    }
                    *shared.lock().unwrap_or_else(|e| e.into_inner()) = tables.stats.clone();
                }
            })?;
        Ok(Feed { tx, sent, stats })
    }

    /// Sends the executable mappings `pid` was seen to make, and their files unless sent
    /// before. Resolved to a path now, while the process lives (a deleted file is read
    /// through its `map_files`).
    pub fn mapped(&mut self, pid: u32, mappings: &[Mapping]) {
        let files: Vec<Mapped> = mappings
            .iter()
            .filter(|m| m.is_file() && self.sent.insert(file_key(m.dev, m.inode)))
            .map(|m| mapping_file(pid, m))
            .collect();
        let _ = self.tx.send(Batch {
            pid,
            mappings: mappings.to_vec(),
            files,
        });
    }
}

/// Every running process's code mappings.
fn fill_every(code: &mut CodeMaps) {
    let t = std::time::Instant::now();
    for pid in other_pids() {
        // Gone meanwhile, or a kernel thread: nothing to fill.
        if let Ok(maps) = ProcessMaps::read(pid) {
            code.fill(pid, maps.mappings());
        }
    }
    log::info!(
        "code mappings of every process: {} cache entries in {:.1} ms",
        code.written,
        t.elapsed().as_secs_f64() * 1e3
    );
}
