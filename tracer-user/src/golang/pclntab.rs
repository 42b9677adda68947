//! A reader of Go's function table (`.gopclntab`), which names every function of a Go binary
//! even when it is stripped of `.symtab` and DWARF (`-ldflags='-s -w'`): the runtime itself
//! needs it for tracebacks.
//!
//! Supported: the layout of Go 1.18 and 1.19 (magic 0xfffffff0) and Go 1.20 and later
//! (0xfffffff1), which differ in nothing read here. Older tables (Go 1.16–1.17's 0xfffffffa,
//! earlier ones) are refused by name.
use std::fmt;

/// Why a table cannot be read.
#[derive(Debug, PartialEq, Eq)]
pub enum PclnError {
    /// The magic of a layout alloctrace does not read: its Go versions, where known.
    Unsupported(String),
    /// Cut short or inconsistent: what was wrong.
    Malformed(&'static str),
}

impl fmt::Display for PclnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PclnError::Unsupported(v) => write!(
                f,
                "a Go function table of {v}: alloctrace reads those of Go 1.18 and later"
            ),
            PclnError::Malformed(why) => write!(f, "a malformed Go function table ({why})"),
        }
    }
}

impl std::error::Error for PclnError {}

/// Every function of one binary: entry addresses (sorted, as the table keeps them), the end of
/// the last, and names.
#[derive(Debug)]
pub struct Functions {
    entries: Vec<u64>,
    end: u64,
    names: Vec<String>,
}

impl Functions {
    /// Reads the table `data` (the `.gopclntab` section's bytes); `text` is the address of
    /// `.text`, which the table's own `textStart` equals in a non-PIE binary (a PIE's is filled
    /// by a relocation at load: 0 in the file).
    pub fn parse(data: &[u8], text: u64) -> Result<Functions, PclnError> {
        let u32_at = |at: usize| -> Result<u32, PclnError> {
            data.get(at..at + 4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
                .ok_or(PclnError::Malformed("cut short"))
        };
        let word = |at: usize| -> Result<usize, PclnError> {
            data.get(at..at + 8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
                .ok_or(PclnError::Malformed("cut short"))
        };
        match u32_at(0)? {
            0xffff_fff0 | 0xffff_fff1 => {}
            0xffff_fffa => return Err(PclnError::Unsupported("Go 1.16 or 1.17".into())),
            0xffff_fffb => return Err(PclnError::Unsupported("Go 1.2 to 1.15".into())),
            m => return Err(PclnError::Unsupported(format!("unknown magic {m:#x}"))),
        }
        if data.get(7) != Some(&8) {
            return Err(PclnError::Unsupported("a 32-bit target".into()));
        }
        let nfunc = word(8)?;
        let text_start = match word(24)? as u64 {
            0 => text,
            t => t,
        };
        let funcnames = word(32)?;
        let pcln = word(64)?;
        if nfunc > data.len() / 8 {
            return Err(PclnError::Malformed("more functions than the table holds"));
        }
        let mut entries = Vec::with_capacity(nfunc);
        let mut names = Vec::with_capacity(nfunc);
        for i in 0..nfunc {
            // functab: (entryoff u32, funcoff u32) pairs; funcoff leads to the _func, whose
            // second field is the name's offset in the names table.
            let entry = u32_at(pcln + 8 * i)?;
            let func = pcln + u32_at(pcln + 8 * i + 4)? as usize;
            let name_off = u32_at(func + 4)? as usize;
            let name = data
                .get(funcnames + name_off..)
                .and_then(|rest| rest.split(|&b| b == 0).next())
                .ok_or(PclnError::Malformed("a name outside the table"))?;
            entries.push(text_start + u64::from(entry));
            names.push(String::from_utf8_lossy(name).into_owned());
        }
        let end = text_start + u64::from(u32_at(pcln + 8 * nfunc)?);
        if entries.windows(2).any(|w| w[0] > w[1]) || entries.last().is_some_and(|&e| e > end) {
            return Err(PclnError::Malformed("entries out of order"));
        }
        Ok(Functions {
            entries,
            end,
            names,
        })
    }

    /// The function containing `addr`: its name and entry.
    pub fn lookup(&self, addr: u64) -> Option<(&str, u64)> {
        if addr >= self.end {
            return None;
        }
        let i = self
            .entries
            .partition_point(|&e| e <= addr)
            .checked_sub(1)?;
        Some((&self.names[i], self.entries[i]))
    }

    /// Entry and size of the function named `name`.
    pub fn find(&self, name: &str) -> Option<(u64, u64)> {
        let i = self.names.iter().position(|n| n == name)?;
        let next = self.entries.get(i + 1).copied().unwrap_or(self.end);
        Some((self.entries[i], next - self.entries[i]))
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.names.len()
    }
}

/// The function table of an ELF file, if it has one (a Go binary): `.gopclntab`, or in a
/// position-independent build `.data.rel.ro.gopclntab`.
pub fn of_elf<'data, R: object::ReadRef<'data>>(
    elf: &object::File<'data, R>,
) -> Option<Result<Functions, PclnError>> {
    use object::{Object, ObjectSection};
    let section = elf
        .section_by_name(".gopclntab")
        .or_else(|| elf.section_by_name(".data.rel.ro.gopclntab"))?;
    let text = elf.section_by_name(".text").map_or(0, |s| s.address());
    Some(
        section
            .data()
            .map_err(|_| PclnError::Malformed("unreadable section"))
            .and_then(|d| Functions::parse(d, text)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table of two functions in the 1.18 layout, as the linker lays it out.
    fn table(magic: u32) -> Vec<u8> {
        let mut t = vec![0u8; 0x48];
        t[0..4].copy_from_slice(&magic.to_le_bytes());
        t[6] = 1;
        t[7] = 8;
        t[8..16].copy_from_slice(&2u64.to_le_bytes());
        t[24..32].copy_from_slice(&0x40_1000u64.to_le_bytes());
        let names = t.len();
        t.extend_from_slice(b"main.a\0runtime.mallocgc\0");
        t[32..40].copy_from_slice(&(names as u64).to_le_bytes());
        let pcln = t.len();
        t[64..72].copy_from_slice(&(pcln as u64).to_le_bytes());
        // functab: 2 entries and the end; then two _func records (entryOff, nameOff).
        for (entry, func) in [(0u32, 24u32), (0x40, 32), (0x100, 0)] {
            t.extend_from_slice(&entry.to_le_bytes());
            t.extend_from_slice(&func.to_le_bytes());
        }
        for (entry, name) in [(0u32, 0u32), (0x40, 7)] {
            t.extend_from_slice(&entry.to_le_bytes());
            t.extend_from_slice(&name.to_le_bytes());
        }
        t
    }

    #[test]
    fn reads_names_and_bounds() {
        for magic in [0xffff_fff0, 0xffff_fff1] {
            let f = Functions::parse(&table(magic), 0).unwrap();
            assert_eq!(f.len(), 2);
            assert_eq!(f.lookup(0x40_1000), Some(("main.a", 0x40_1000)));
            assert_eq!(f.lookup(0x40_103f), Some(("main.a", 0x40_1000)));
            assert_eq!(f.lookup(0x40_1050), Some(("runtime.mallocgc", 0x40_1040)));
            assert_eq!(f.lookup(0x40_1100), None);
            assert_eq!(f.lookup(0x40_0fff), None);
            assert_eq!(f.find("runtime.mallocgc"), Some((0x40_1040, 0xc0)));
        }
    }

    #[test]
    fn refuses_other_layouts() {
        let e = Functions::parse(&table(0xffff_fffa), 0).unwrap_err();
        assert!(e.to_string().contains("Go 1.16 or 1.17"), "{e}");
        assert!(Functions::parse(&table(0xffff_fff0)[..40], 0).is_err());
    }
}
