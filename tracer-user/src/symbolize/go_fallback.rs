//! Go function names for the frames blazesym cannot name: a Go binary stripped of `.symtab`
//! and DWARF (`-ldflags='-s -w'`) still has its function table (`.gopclntab`), read by
//! `golang::pclntab`. File offsets (what the symbolizer has) are turned into the addresses the
//! table uses through the binary's loadable segments.
use std::path::Path;

use object::{Object, ObjectSegment};

use crate::golang::pclntab::Functions;

/// One Go binary's functions and where its segments lie in the file.
pub struct GoTable {
    functions: Functions,
    /// `(file offset, size in the file, address)` of each loadable segment.
    segments: Vec<(u64, u64, u64)>,
}

impl GoTable {
    /// The table of the binary at `path`; None when it is no Go binary, or its table cannot
    /// be read (said once, at debug level: its frames stay `module+0xoff`).
    pub fn load(path: &Path) -> Option<GoTable> {
        let data = std::fs::read(path).ok()?;
        let elf = object::File::parse(&*data).ok()?;
        let functions = match crate::golang::pclntab::of_elf(&elf)? {
            Ok(f) => f,
            Err(e) => {
                log::debug!("{}: {e}", path.display());
                return None;
            }
        };
        let segments = elf
            .segments()
            .map(|s| {
                let (off, size) = s.file_range();
                (off, size, s.address())
            })
            .collect();
        Some(GoTable {
            functions,
            segments,
        })
    }

    /// The function at file offset `off`: its name and `off`'s distance from its entry.
    pub fn lookup(&self, off: u64) -> Option<(&str, u64)> {
        let &(start, _, vaddr) = self
            .segments
            .iter()
            .find(|&&(start, size, _)| off >= start && off < start + size)?;
        let addr = vaddr + (off - start);
        let (name, entry) = self.functions.lookup(addr)?;
        Some((name, addr - entry))
    }
}
