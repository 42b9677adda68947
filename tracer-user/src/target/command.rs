//! The executable a launch command names, resolved as execvp would, and refused when it cannot
//! be run.
use std::ffi::{CString, OsStr};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::TargetError;

/// Resolves `argv0` the way execvp would, and refuses what cannot be run: a file that is not
/// executable, or a file the kernel
/// cannot execute (neither ELF nor `#!` script: execv, unlike a shell, does not fall back to
/// running it with sh), or whose `#!` interpreter is missing.
pub fn resolve_command(argv0: &OsStr) -> Result<PathBuf, TargetError> {
    let shown = || Path::new(argv0).display().to_string();
    let path = if argv0.as_bytes().contains(&b'/') {
        PathBuf::from(argv0)
    } else {
        std::env::var_os("PATH")
            .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into())
            .as_bytes()
            .split(|&b| b == b':')
            .map(|dir| {
                Path::new(if dir.is_empty() {
                    OsStr::new(".")
                } else {
                    OsStr::from_bytes(dir)
                })
                .join(argv0)
            })
            .find(|p| p.is_file() && executable(p))
            .ok_or_else(|| TargetError::CommandNotFound(shown()))?
    };
    let not_exec = |reason: String| TargetError::NotExecutable {
        path: path.display().to_string(),
        reason,
    };
    let meta = fs::metadata(&path).map_err(|e| not_exec(e.to_string()))?;
    if meta.is_dir() {
        return Err(not_exec("it is a directory".into()));
    }
    if !executable(&path) {
        return Err(not_exec("permission denied (not executable)".into()));
    }
    let data = fs::read(&path).map_err(|e| not_exec(e.to_string()))?;
    // A statically linked ELF is traced through the allocator linked into it, if any
    // (`allocators_of`).
    if let Some(line) = data.strip_prefix(b"#!") {
        let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())];
        let interp = line
            .split(|&b| b == b' ' || b == b'\t')
            .find(|w| !w.is_empty())
            .unwrap_or_default();
        let interp = Path::new(OsStr::from_bytes(interp));
        if !interp.is_file() || !executable(interp) {
            return Err(not_exec(format!(
                "its interpreter (#!{}) is not an executable file",
                interp.display()
            )));
        }
    } else if !data.starts_with(b"\x7fELF") {
        return Err(TargetError::NotElfNorScript {
            path: path.display().to_string(),
        });
    }
    Ok(path)
}

fn executable(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::X_OK) == 0 }
}

/// An ELF with no program interpreter (PT_INTERP) is loaded without ld.so, so it maps no
/// shared libc. (A static-pie is ET_DYN without PT_INTERP too, and is rightly refused.)
pub(crate) fn is_static_elf(data: &[u8]) -> bool {
    use object::read::elf::{ElfFile64, ProgramHeader};
    let Ok(elf) = ElfFile64::<object::Endianness>::parse(data) else {
        return false;
    };
    let endian = elf.endian();
    !elf.elf_program_headers()
        .iter()
        .any(|ph| ph.p_type(endian) == object::elf::PT_INTERP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_resolve_through_path() {
        let r = |s: &str| resolve_command(OsStr::new(s));
        let sh = r("sh").expect("sh is on PATH");
        assert!(sh.is_absolute(), "{sh:?}");
        assert!(matches!(
            r("no-such-command-xyz"),
            Err(TargetError::CommandNotFound(_))
        ));
        assert!(matches!(
            r("/etc/passwd"),
            Err(TargetError::NotExecutable { .. })
        ));
        assert!(matches!(r("/tmp"), Err(TargetError::NotExecutable { .. })));
    }

    #[test]
    fn scripts_need_a_shebang_and_its_interpreter() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("alloctrace-target-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let script = |name: &str, text: &str| {
            let p = dir.join(name);
            fs::write(&p, text).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
            p
        };
        let ok = script("ok", "#! /bin/sh -e\nexit 0\n");
        let bare = script("bare", "exit 0\n");
        let lost = script("lost", "#!/nonexistent/interp\n");
        assert_eq!(resolve_command(ok.as_os_str()).unwrap(), ok);
        let e = resolve_command(bare.as_os_str()).unwrap_err().to_string();
        assert!(
            e.contains("neither an ELF binary nor a script starting with #!"),
            "{e}"
        );
        let e = resolve_command(lost.as_os_str()).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/interp"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
