//! Which of a process's files hold an allocator (`allocator::detect`), each resolved into a
//! probe set (`resolve`); a file whose allocator cannot be probed is said and skipped, and a
//! program with none gets the reason and what would help.
use std::fs;
use std::path::Path;

use super::placement::Mode;
use super::ProbeSet;
use crate::allocator::{self, Found};
use crate::target::elf_deps::Mapped;

/// What `sets_of` found: the sets, and one line per file whose allocator could not be
/// probed.
#[derive(Default)]
pub struct Detected {
    pub sets: Vec<ProbeSet>,
    pub failures: Vec<String>,
}

/// The allocators in `files` (`allocator::detect`), each resolved into a set. A file whose
/// detection or resolution fails is a line in `failures`, and skipped.
pub fn sets_of(files: &[Mapped], mode: Mode) -> Detected {
    let mut out = Detected::default();
    for f in files {
        let found = match detect(f) {
            Ok(found) => found,
            Err(e) => {
                out.failures.push(format!("cannot read {}: {e}", f.shown));
                continue;
            }
        };
        if allocator::defines_unknown_malloc(&f.path).unwrap_or(false) {
            out.failures.push(format!(
                "{} defines a malloc of its own that is no allocator alloctrace knows: the \
                 allocations made through it are unseen",
                f.shown
            ));
        }
        for found in found {
            match ProbeSet::resolve(&f.path, f.shown.clone(), f.file, found, mode) {
                Ok(set) => out.sets.push(set),
                Err(e) => out.failures.push(format!(
                    "cannot probe {} in {}: {e}",
                    found.allocator.name(),
                    f.shown
                )),
            }
        }
    }
    out
}

/// The allocators the file holds: by its content (`allocator::detect`), and, when that finds
/// none through a path that does not carry the file's name (`/proc/PID/map_files/...`), by
/// the name the process mapped it under.
fn detect(f: &Mapped) -> std::io::Result<Vec<Found>> {
    let found = allocator::detect(&f.path)?;
    if !found.is_empty() || f.path.file_name() == Path::new(&f.shown).file_name() {
        return Ok(found);
    }
    Ok(allocator::holder(f.shown.as_bytes())
        .map(|allocator| Found {
            allocator,
            prefix: allocator.symbol_prefix(),
        })
        .into_iter()
        .collect())
}

/// Why a program (its executable at `exe`, openable) uses no allocator alloctrace can probe,
/// and what would help; `failures` are `sets_of`'s.
pub fn no_allocator_reason(exe: Option<&Path>, failures: &[String]) -> String {
    if !failures.is_empty() {
        return format!(
            "its allocator could not be probed ({})",
            failures.join("; ")
        );
    }
    let data = exe.and_then(|p| fs::read(p).ok()).unwrap_or_default();
    // A Go program whose function table alloctrace cannot read (stripped, of an older Go).
    if let Some(Err(e)) = object::File::parse(&*data)
        .ok()
        .and_then(|elf| crate::golang::pclntab::of_elf(&elf))
    {
        return format!("a Go program alloctrace cannot probe: {e}");
    }
    let names: Vec<&str> = allocator::REGISTRY.iter().map(|a| a.name()).collect();
    if data.starts_with(b"\x7fELF") && crate::target::command::is_static_elf(&data) {
        if has_symbols(&data) {
            format!(
                "statically linked, with no allocator alloctrace knows ({}) in its symbols",
                names.join(", ")
            )
        } else {
            "statically linked and stripped: no allocator symbols (a build that keeps its \
             symbol table, or links its allocator as a shared library, can be probed)"
                .to_string()
        }
    } else {
        format!(
            "it maps no allocator alloctrace knows ({}); a program on another allocator can be \
             traced if that allocator is a shared library alloctrace knows, e.g. through \
             LD_PRELOAD",
            names.join(", ")
        )
    }
}

/// Whether an ELF has a symbol table (`.symtab`) beyond its dynamic one.
fn has_symbols(data: &[u8]) -> bool {
    use object::{Object, ObjectSymbol};
    object::File::parse(data).is_ok_and(|f| f.symbols().any(|s| !s.is_undefined()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::allocators_of::{command_files, mapped_files};

    #[test]
    fn own_process_is_probed_through_its_libc() {
        let pid = std::process::id();
        let found = sets_of(&mapped_files(pid).expect("own maps"), Mode::Auto);
        assert!(found.failures.is_empty(), "{:?}", found.failures);
        let glibc: Vec<_> = found
            .sets
            .iter()
            .filter(|s| s.found.allocator.name() == "glibc")
            .collect();
        assert_eq!(glibc.len(), 1, "{:?}", found.sets);
        assert!(glibc[0].path.exists());
        assert!(
            glibc[0].describe().starts_with("glibc in /"),
            "{}",
            glibc[0].describe()
        );
    }

    #[test]
    fn a_command_is_probed_through_its_own_allocators() {
        let sets = sets_of(&command_files(Path::new("/bin/true")), Mode::Auto).sets;
        assert!(
            sets.iter().any(|s| s.found.allocator.name() == "glibc"),
            "{sets:?}"
        );
    }

    #[test]
    fn a_program_without_an_allocator_is_said_why() {
        let r = no_allocator_reason(Some(Path::new("/nonexistent")), &[]);
        assert!(
            r.contains("maps no allocator alloctrace knows (glibc"),
            "{r}"
        );
        let r = no_allocator_reason(None, &["cannot probe x in y: z".into()]);
        assert_eq!(
            r,
            "its allocator could not be probed (cannot probe x in y: z)"
        );
    }

    /// A static binary stripped of its symbol table is said so, with what would help; with
    /// its symbols kept, that no known allocator is among them.
    #[test]
    fn a_stripped_static_binary_is_said_so() {
        let dir = std::env::temp_dir().join(format!("alloctrace-sets-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let src = dir.join("w.c");
        fs::write(&src, "int main(void){return 0;}\n").unwrap();
        let bin = dir.join("w");
        let st = std::process::Command::new("gcc")
            .args(["-static", "-O1", "-o"])
            .arg(&bin)
            .arg(&src)
            .status()
            .expect("gcc runs");
        assert!(st.success(), "gcc -static failed");
        let with_symbols = no_allocator_reason(Some(&bin), &[]);
        let st = std::process::Command::new("strip")
            .arg(&bin)
            .status()
            .unwrap();
        assert!(st.success(), "strip failed");
        let stripped = no_allocator_reason(Some(&bin), &[]);
        fs::remove_dir_all(&dir).unwrap();
        assert!(
            with_symbols.starts_with("statically linked, with no allocator alloctrace knows"),
            "{with_symbols}"
        );
        assert!(
            stripped.starts_with("statically linked and stripped: no allocator symbols"),
            "{stripped}"
        );
    }
}
