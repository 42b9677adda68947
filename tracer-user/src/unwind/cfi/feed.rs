//! Keeps the kernel's unwind tables current as the traced processes map new code: the
//! target's files are loaded before it runs (`Feed::start`), then every executable file a
//! traced process maps (the mmap watch's records: a `dlopen`, a new process in system-wide
//! mode, an exec) is sent to a thread of its own that compiles and loads it, off the event
//! thread and off the hot path.
use std::collections::HashSet;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use alloctrace_common::unwind_table::FileKey;

use super::tables::{file_key, TableStats, Tables};
use crate::process::procmaps::Mapping;
use crate::target::allocators_of::mapping_file;
use crate::target::elf_deps::Mapped;

/// What the event thread sends: new executable mappings as (pid, start, end), whose range
/// the kernel's mapping cache must forget, and the files not sent before.
struct Batch {
    remapped: Vec<(u32, u64, u64)>,
    files: Vec<Mapped>,
}

/// The sending end, held by the event thread.
pub struct Feed {
    tx: mpsc::Sender<Batch>,
    /// Files already sent: each is resolved to a readable path once.
    sent: HashSet<FileKey>,
    pub stats: Arc<Mutex<TableStats>>,
}

impl Feed {
    /// Loads the tables of `files` now (the target's, before it runs), then starts the
    /// thread that loads those sent later.
    pub fn start(mut tables: Tables, files: &[Mapped]) -> std::io::Result<Feed> {
        let mut sent = HashSet::new();
        for f in files {
            let key = file_key(f.file.0, f.file.1);
            sent.insert(key);
            tables.add(key, &f.path, &f.shown);
        }
        let stats = Arc::new(Mutex::new(tables.stats.clone()));
        let (tx, rx) = mpsc::channel::<Batch>();
        let shared = stats.clone();
        std::thread::Builder::new()
            .name("alloctrace-cfi".into())
            .spawn(move || {
                while let Ok(batch) = rx.recv() {
                    for (pid, start, end) in batch.remapped {
                        tables.remap(pid, start, end);
                    }
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
        let remapped = mappings.iter().map(|m| (pid, m.start, m.end)).collect();
        let _ = self.tx.send(Batch { remapped, files });
    }
}
