//! A traced process's new program after an exec: its allocators resolved again (as a launched
//! command's are, from the process's root and environment), and the sets not yet attached for
//! the process picked out, for the caller to attach.
use std::path::Path;

use super::placement::Mode;
use super::sets::{no_allocator_reason, sets_of};
use super::ProbeSet;
use crate::process::mmap_watch::ExecSeen;
use crate::target::allocators_of;
use crate::target::elf_deps::{self, Context};

/// What the program of one exec is probed through.
pub enum Decision {
    /// All its allocators' sets, and those of them not attached for the process yet.
    Sets {
        all: Vec<ProbeSet>,
        new: Vec<ProbeSet>,
    },
    /// None can be probed, for this reason.
    Unseen(String),
}

/// Decides the sets of the program process `pid` executed in `exec`; `current` when it is
/// the process's program now (its last exec seen), so it is read through `/proc/PID/exe` (the
/// very file); an earlier one, or one of a process gone since, through the path its first
/// mapping named. `have` are the sets attached for the process. A set that could not be
/// resolved while others were is said in a warning, and skipped.
pub fn decide(pid: u32, exec: &ExecSeen, current: bool, have: &[ProbeSet], mode: Mode) -> Decision {
    // The process may have executed yet another program since (its record not read yet):
    // then /proc/PID/exe is that one's.
    let files = if current && runs(pid, exec) {
        allocators_of::exec_files(pid)
    } else {
        Vec::new()
    };
    let mut found = sets_of(&files, mode);
    let mut exe = files.first().map(|f| f.path.clone());
    // Not read through the process (it has exited, or runs another program by now): through
    // the path its first mapping named, from our root. The sets are the same files (one
    // device and inode), so those already attached are known as such.
    if found.sets.is_empty() {
        if let Some(path) = &exec.exe {
            let env = elf_deps::environ_of(pid);
            let ctx = Context {
                root: Path::new("/"),
                env: &env,
            };
            let by_path = elf_deps::program_files(&ctx, Path::new(path), Path::new(path));
            if !by_path.is_empty() {
                found = sets_of(&by_path, mode);
                exe = Some(path.into());
            }
        }
    }
    if exe.is_none() {
        return Decision::Unseen(
            "its program could not be read (it ended or executed another at once)".into(),
        );
    }
    if found.sets.is_empty() {
        return Decision::Unseen(no_allocator_reason(exe.as_deref(), &found.failures));
    }
    for f in &found.failures {
        eprintln!("alloctrace: warning: pid {pid}: {f}; skipped");
    }
    let new = not_in(&found.sets, have);
    Decision::Sets {
        all: found.sets,
        new,
    }
}

/// Whether `pid` runs the program of `exec` now: the path its first mapping named, or else
/// (that record not read yet) the command name the exec gave it.
fn runs(pid: u32, exec: &ExecSeen) -> bool {
    let Ok(now) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
        return false;
    };
    match &exec.exe {
        Some(path) => now == Path::new(path),
        None => {
            let name = now
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            // The kernel keeps the first 15 bytes.
            name.chars().take(15).eq(exec.comm.chars())
        }
    }
}

/// The sets of `found` that `have` does not hold (the same allocator in the same file).
pub fn not_in(found: &[ProbeSet], have: &[ProbeSet]) -> Vec<ProbeSet> {
    found
        .iter()
        .filter(|s| !have.iter().any(|h| h.same(s)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator::{Found, REGISTRY};

    fn set(file: (u64, u64), prefix: &'static str) -> ProbeSet {
        ProbeSet {
            version: None,
            path: "/x".into(),
            shown: "/x".into(),
            file,
            found: Found {
                allocator: REGISTRY[0],
                prefix,
            },
            entries: Vec::new(),
        }
    }

    #[test]
    fn only_sets_not_attached_yet_are_new() {
        let have = [set((1, 2), "")];
        let found = [set((1, 2), ""), set((1, 3), ""), set((1, 2), "je_")];
        let new = not_in(&found, &have);
        let ids: Vec<_> = new.iter().map(|s| (s.file, s.found.prefix)).collect();
        assert_eq!(ids, [((1, 3), ""), ((1, 2), "je_")]);
        assert!(not_in(&have, &have).is_empty());
    }

    /// The program a process runs now is read through /proc/PID/exe: our own, whose libc is
    /// found; a program named only by its path that no longer exists cannot be read.
    #[test]
    fn an_exec_is_decided_from_the_program_it_runs() {
        let exec = |exe: Option<&str>| ExecSeen {
            time: 0,
            comm: String::new(),
            exe: exe.map(Into::into),
            probed: None,
        };
        let me = std::process::id();
        let own = std::fs::read_link("/proc/self/exe").unwrap();
        let own = exec(Some(own.to_str().unwrap()));
        let Decision::Sets { all, new } = decide(me, &own, true, &[], Mode::Auto) else {
            panic!("our own program has an allocator");
        };
        // Read through /proc/PID/exe and its root.
        assert!(all
            .iter()
            .any(|s| s.path.starts_with(format!("/proc/{me}/"))));
        assert!(all.iter().any(|s| s.found.allocator.name() == "glibc"));
        assert_eq!(all.len(), new.len());
        let Decision::Sets { new, .. } = decide(me, &own, true, &all, Mode::Auto) else {
            panic!("decided differently the second time");
        };
        assert!(new.is_empty(), "attached sets are not new");
        // An exec whose program the process no longer runs (named otherwise): by its path,
        // from our root; the same files, so nothing new.
        let mut other = own.clone();
        other.comm = "someone-else".into();
        other.exe = Some("/bin/true".into());
        match decide(me, &other, true, &all, Mode::Auto) {
            Decision::Sets { all: by_path, new } => {
                assert!(by_path.iter().all(|s| !s.path.starts_with("/proc/")));
                assert!(new.is_empty(), "the same libc is not new: {new:?}");
            }
            Decision::Unseen(r) => panic!("{r}"),
        }
        match decide(me, &exec(Some("/nonexistent/prog")), false, &[], Mode::Auto) {
            Decision::Unseen(r) => assert!(r.contains("could not be read"), "{r}"),
            Decision::Sets { .. } => panic!("a missing program decided"),
        }
    }
}
