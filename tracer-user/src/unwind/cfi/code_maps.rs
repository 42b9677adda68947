//! Fills the kernel's cache of where each traced process's code lies (`VMA_CACHE`, keyed by
//! process and 64 KiB granule) from the mappings user space reads and records, so the DWARF
//! walk finds a frame's mapping without `bpf_find_vma`. That helper needs the process's
//! mapping lock, which it cannot take while another thread of the process maps or protects
//! memory (glibc's arenas do, as threads start): the walk then could not check the frame and
//! the allocation would lose its site. Filled ahead, only code mapped in the moment before
//! user space sees its record is left to the helper.
use std::collections::HashMap as StdHashMap;

use alloctrace_common::unwind_table::{
    FileKey, VmaEntry, VmaKey, MAP_VMA_CACHE, VMA_GRANULE_SHIFT,
};
use alloctrace_common::VM_EXEC;
use aya::maps::{HashMap, MapData};
use aya::Ebpf;

use super::tables::{file_key, TablesError};
use crate::process::procmaps::Mapping;

/// 4 KiB pages, as `vm_pgoff` counts them.
const PAGE_SHIFT: u32 = 12;

pub struct CodeMaps {
    cache: HashMap<MapData, VmaKey, VmaEntry>,
    /// Entries written, for the log.
    pub written: u64,
    /// Entries the kernel refused (its map is an LRU: none while it works).
    pub failed: u64,
}

impl CodeMaps {
    /// Takes the cache's map out of the loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<CodeMaps, TablesError> {
        let map = ebpf
            .take_map(MAP_VMA_CACHE)
            .ok_or(TablesError::MissingMap(MAP_VMA_CACHE))?;
        let cache = HashMap::try_from(map).map_err(|e| TablesError::Map(MAP_VMA_CACHE, e))?;
        Ok(CodeMaps {
            cache,
            written: 0,
            failed: 0,
        })
    }

    /// Writes process `pid`'s executable `mappings` (in the order they were made: a later one
    /// wins a granule it shares with an earlier one) over whatever the cache held for their
    /// granules.
    pub fn fill(&mut self, pid: u32, mappings: &[Mapping]) {
        for (key, entry) in entries(pid, mappings) {
            match self.cache.insert(key, entry, 0) {
                Ok(()) => self.written += 1,
                Err(e) => {
                    if self.failed == 0 {
                        log::warn!("cannot fill the kernel's code-mapping cache: {e}");
                    }
                    self.failed += 1;
                }
            }
        }
    }
}

/// The cache entries of `mappings`: one per granule each touches, the last mapping touching a
/// granule winning it. Where two code mappings share a granule the kernel finds the other by
/// `bpf_find_vma` (rare: small libraries mapped next to each other).
fn entries(pid: u32, mappings: &[Mapping]) -> Vec<(VmaKey, VmaEntry)> {
    let mut out: StdHashMap<u64, VmaEntry> = StdHashMap::new();
    for m in mappings.iter().filter(|m| m.end > m.start) {
        // The vDSO is code with no file: the walk steps it by frame pointers.
        let file = if m.is_file() {
            file_key(m.dev, m.inode)
        } else {
            FileKey::default()
        };
        let entry = VmaEntry {
            flags: VM_EXEC,
            start: m.start,
            end: m.end,
            pgoff: m.file_offset >> PAGE_SHIFT,
            file,
        };
        for granule in m.start >> VMA_GRANULE_SHIFT..=(m.end - 1) >> VMA_GRANULE_SHIFT {
            out.insert(granule, entry);
        }
    }
    let mut v: Vec<(VmaKey, VmaEntry)> = out
        .into_iter()
        .map(|(granule, e)| {
            (
                VmaKey {
                    tgid: pid,
                    _pad: 0,
                    granule,
                },
                e,
            )
        })
        .collect();
    v.sort_by_key(|(k, _)| k.granule);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(start: u64, end: u64, file_offset: u64, path: &str) -> Mapping {
        Mapping {
            start,
            end,
            file_offset,
            dev: libc::makedev(8, 1),
            inode: 42,
            path: path.into(),
            deleted: false,
        }
    }

    #[test]
    fn every_granule_a_mapping_touches_gets_it_and_the_later_mapping_wins_a_shared_one() {
        let libc = mapping(
            0x7f00_0001_0000,
            0x7f00_0003_1000,
            0x28000,
            "/lib/libc.so.6",
        );
        let small = mapping(0x7f00_0003_2000, 0x7f00_0003_3000, 0x1000, "/lib/small.so");
        let vdso = mapping(0x7fff_0000_0000, 0x7fff_0000_2000, 0, "[vdso]");
        let e = entries(7, &[libc.clone(), small.clone(), vdso]);
        let granules: Vec<u64> = e.iter().map(|(k, _)| k.granule).collect();
        assert_eq!(
            granules,
            vec![0x7f00_0001, 0x7f00_0002, 0x7f00_0003, 0x7fff_0000]
        );
        assert!(e.iter().all(|(k, v)| k.tgid == 7 && v.flags & VM_EXEC != 0));
        assert_eq!(e[0].1.start, libc.start);
        assert_eq!(e[0].1.pgoff, 0x28);
        assert_eq!(e[0].1.file, file_key(libc.dev, 42));
        assert_eq!(e[0].1.file.dev, 8 << 20 | 1);
        // Shared by libc's end and the small library: the later mapping.
        assert_eq!(e[2].1.start, small.start);
        assert_eq!(e[3].1.file, FileKey::default());
    }
}
