//! The symbols a file defines, as much of them as allocator detection asks about: each
//! allocator's marker names (`Allocator::markers`), with their addresses, from `.dynsym` and
//! `.symtab` both (a static executable has only the latter, a stripped library only the
//! former).
use std::collections::{HashMap, HashSet};

use object::{Object, ObjectSymbol, ReadRef};

/// Marker names a file defines, and their addresses.
#[derive(Debug, Default)]
pub struct Symbols {
    defined: HashMap<&'static str, u64>,
}

impl Symbols {
    /// The symbols of `elf` named in `wanted` that it defines (not undefined references, not
    /// zero addresses).
    pub fn of_elf<'data, R: ReadRef<'data>>(
        elf: &object::File<'data, R>,
        wanted: &HashSet<&'static str>,
    ) -> Symbols {
        let mut defined = HashMap::new();
        let longest = wanted.iter().map(|n| n.len()).max().unwrap_or(0);
        for sym in elf.dynamic_symbols().chain(elf.symbols()) {
            // Most of a large library's names are long C++ ones (`_Z...`, which no marker
            // is): rejected before hashing (libLLVM's 100k+ names).
            let Ok(bytes) = sym.name_bytes() else {
                continue;
            };
            if bytes.len() > longest || bytes.starts_with(b"_Z") {
                continue;
            }
            if sym.is_undefined() || sym.address() == 0 {
                continue;
            }
            let Ok(name) = std::str::from_utf8(bytes) else {
                continue;
            };
            if let Some(&name) = wanted.get(name) {
                defined.entry(name).or_insert(sym.address());
            }
        }
        Symbols { defined }
    }

    /// Adds the names of `wanted` that the Go function table (`.gopclntab`) of `elf` has, if it
    /// has one that alloctrace reads (a Go binary stripped of its symbol table).
    pub fn add_go_functions<'data, R: ReadRef<'data>>(
        &mut self,
        elf: &object::File<'data, R>,
        wanted: &HashSet<&'static str>,
    ) {
        let Some(Ok(functions)) = crate::golang::pclntab::of_elf(elf) else {
            return;
        };
        for &name in wanted {
            if let Some((entry, _)) = functions.find(name) {
                self.defined.entry(name).or_insert(entry);
            }
        }
    }

    /// A set of symbols, for tests.
    #[cfg(test)]
    pub fn from_pairs(pairs: &[(&'static str, u64)]) -> Symbols {
        Symbols {
            defined: pairs.iter().copied().collect(),
        }
    }

    /// The address of `name`, if the file defines it.
    pub fn address(&self, name: &str) -> Option<u64> {
        self.defined.get(name).copied()
    }

    pub fn has(&self, name: &str) -> bool {
        self.defined.contains_key(name)
    }

    /// Whether `a` and `b` are both defined, at one address (aliases of one function).
    pub fn same(&self, a: &str, b: &str) -> bool {
        matches!((self.address(a), self.address(b)), (Some(x), Some(y)) if x == y)
    }
}

/// The text between `after` and the first byte of `end` following it, where `after` first
/// occurs in `data`: a version string in a library's read-only data.
pub fn text_after(data: &[u8], after: &[u8], end: &[u8]) -> Option<String> {
    let at = data.windows(after.len()).position(|w| w == after)? + after.len();
    let rest = &data[at..data.len().min(at + 80)];
    let len = rest.iter().position(|b| end.contains(b))?;
    let s = std::str::from_utf8(&rest[..len]).ok()?;
    (!s.is_empty()).then(|| s.to_string())
}
