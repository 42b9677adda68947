//! The kernel's copy of the unwind tables: each binary's rows (`compile`) written into its
//! own slice of the row array, then its (device, inode) -> slice entry into the file map, so
//! the kernel never sees a slice half written. Once per binary per run; a binary without
//! CFI, or whose rows do not fit in what is left, is walked by frame pointers (said once).
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use alloctrace_common::unwind_table::{kernel_dev, FileKey, FileRows, SEARCH_STEPS};
use alloctrace_common::unwind_table::{MAP_UNWIND_FILES, MAP_UNWIND_ROWS};
use aya::maps::{HashMap, MapData};
use aya::Ebpf;

use super::compile::compile;
use crate::kmaps::shared_array::SharedArray;

#[derive(Debug, thiserror::Error)]
pub enum TablesError {
    #[error("the eBPF object has no map {0}")]
    MissingMap(&'static str),
    #[error("map {0}: {1}")]
    Map(&'static str, #[source] aya::maps::MapError),
    #[error("cannot map the unwind rows into memory: {0}")]
    Mmap(#[source] std::io::Error),
}

/// What the tables hold, for the log and the report.
#[derive(Clone, Debug, Default)]
pub struct TableStats {
    pub files: u32,
    pub rows: u32,
    /// Binaries walked by frame pointers: no CFI, unreadable, or no room left.
    pub without: u32,
    pub no_room: u32,
    pub build_time: Duration,
}

pub struct Tables {
    rows: SharedArray<u64>,
    files: HashMap<MapData, FileKey, FileRows>,
    next: u32,
    /// Every file looked at, loaded or not: none is compiled twice.
    seen: HashSet<FileKey>,
    pub stats: TableStats,
}

/// The kernel's key of a file user space knows by its `stat` device and inode.
pub fn file_key(dev: u64, ino: u64) -> FileKey {
    FileKey {
        dev: kernel_dev(libc::major(dev) as u64, libc::minor(dev) as u64),
        ino,
    }
}

impl Tables {
    /// Takes the two maps out of the loaded object; `capacity` is the row array's size.
    pub fn take(ebpf: &mut Ebpf, capacity: u32) -> Result<Tables, TablesError> {
        let rows = ebpf
            .take_map(MAP_UNWIND_ROWS)
            .ok_or(TablesError::MissingMap(MAP_UNWIND_ROWS))?;
        let files = ebpf
            .take_map(MAP_UNWIND_FILES)
            .ok_or(TablesError::MissingMap(MAP_UNWIND_FILES))?;
        let files = HashMap::try_from(files).map_err(|e| TablesError::Map(MAP_UNWIND_FILES, e))?;
        let aya::maps::Map::Array(rows) = rows else {
            return Err(TablesError::Map(
                MAP_UNWIND_ROWS,
                aya::maps::MapError::InvalidName {
                    name: MAP_UNWIND_ROWS.into(),
                },
            ));
        };
        Ok(Tables {
            rows: SharedArray::owning(rows, capacity as usize).map_err(TablesError::Mmap)?,
            files,
            next: 0,
            seen: HashSet::new(),
            stats: TableStats::default(),
        })
    }

    /// Compiles and loads the table of the file `key` read at `path`, unless looked at
    /// already. `shown` names it in the one line said if it does not fit.
    pub fn add(&mut self, key: FileKey, path: &Path, shown: &str) {
        if !self.seen.insert(key) {
            return;
        }
        let table = match map_file(path).and_then(|d| compile(&d).map_err(|e| e.to_string())) {
            Ok(t) => t,
            Err(e) => {
                log::debug!("no unwind table for {shown}: {e}; frame pointers there");
                self.stats.without += 1;
                return;
            }
        };
        self.stats.build_time += table.took;
        let n = table.rows.len() as u32;
        if n == 0 {
            self.stats.without += 1;
            return;
        }
        let room = self.rows.count() as u32 - self.next;
        if n > room || n >= 1 << SEARCH_STEPS {
            if self.stats.no_room == 0 {
                eprintln!(
                    "alloctrace: the unwind tables are full ({} rows): {shown} needs {n} more; \
                     its frames are walked by frame pointers (raise --unwind-rows)",
                    self.rows.count()
                );
            }
            self.stats.no_room += 1;
            self.stats.without += 1;
            return;
        }
        for (i, r) in table.rows.iter().enumerate() {
            // SAFETY: a slot of the mapped array past every published slice: no program
            // reads it until the file's entry below is in.
            unsafe { self.rows.slot(self.next as usize + i).write_volatile(*r) };
        }
        let slice = FileRows {
            first: self.next,
            count: n,
        };
        if let Err(e) = self.files.insert(key, slice, 0) {
            log::warn!("cannot load the unwind table of {shown}: {e}; frame pointers there");
            self.stats.without += 1;
            return;
        }
        self.next += n;
        self.stats.files += 1;
        self.stats.rows += n;
        log::info!(
            "unwind table of {shown}: {n} rows from {} FDEs in {:.1} ms",
            table.fdes,
            table.took.as_secs_f64() * 1e3
        );
    }
}

/// The file at `path`, mapped read-only.
fn map_file(path: &Path) -> Result<memmap2::Mmap, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    // SAFETY: a private read-only mapping; a binary a process has mapped is not written in
    // place (a write would only garble this one table, which the walk checks frame by frame).
    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| e.to_string())
}
