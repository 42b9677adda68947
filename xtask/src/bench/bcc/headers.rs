//! What BCC needs of the kernel and this kernel lacks: its headers (Debian's linked in their
//! place, installed if need be) and a mounted tracefs.
use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::cmd;

/// Headers for BCC, which compiles memleak's program at start-up against the running kernel's
/// headers, at /lib/modules/$(uname -r)/build (and `source` beside it). A custom kernel often
/// has none: then Debian's newest installed /usr/src/linux-headers-*-amd64 (installed with
/// apt-get if there are none) are linked there, their -common directory as `source`. An
/// existing link or directory is never replaced. Returns the note for the results: which
/// headers memleak's program is compiled against.
pub(super) fn bcc_headers() -> std::result::Result<String, String> {
    // Another version's headers do for memleak: the note says why.
    let why_fine = |headers: &Path, release: &str| {
        format!(
            "Headers of another kernel than the running one ({release}) are fine for memleak: \
             its program only reads pt_regs and calls BPF helpers, whose layout is the same in \
             every version on x86-64 (headers: {})",
            headers.display()
        )
    };
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_err(|e| format!("cannot read the kernel's release: {e}"))?
        .trim()
        .to_string();
    let dir = Path::new("/lib/modules").join(&release);
    let build = dir.join("build");
    if build.symlink_metadata().is_ok() {
        let target = fs::canonicalize(&build).map_err(|e| {
            format!(
                "{} is there but does not resolve ({e}); the bench leaves it as it is",
                build.display()
            )
        })?;
        let mut note = format!(
            "BCC memleak: its program is compiled against the headers at {} → {} (in place \
             before the bench ran)",
            build.display(),
            target.display()
        );
        if !target.to_string_lossy().contains(&release) {
            let _ = write!(note, ". {}", why_fine(&target, &release));
        }
        return Ok(note);
    }
    if std::env::consts::ARCH != "x86_64" {
        return Err(format!(
            "the running kernel {release} has no headers ({} is missing) and the bench only \
             knows Debian's amd64 headers to stand in for them",
            build.display()
        ));
    }
    eprintln!(
        "xtask: bench: the running kernel {release} has no headers ({} is missing), which BCC \
         compiles memleak's program against: linking Debian's amd64 headers there",
        build.display()
    );
    let (headers, how) = match installed_headers() {
        Some(h) => (h, "installed before the bench ran"),
        None => {
            install_headers()?;
            let h = installed_headers().ok_or(
                "apt-get installed the headers, but there is no /usr/src/linux-headers-*-amd64 \
                 with its -common directory",
            )?;
            (h, "installed by the bench with apt-get")
        }
    };
    let link = |target: &Path, link: &Path| {
        std::os::unix::fs::symlink(target, link)
            .map_err(|e| format!("cannot link {} → {}: {e}", link.display(), target.display()))
    };
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    link(&headers.build, &build)?;
    let source = dir.join("source");
    let source_note = if source.symlink_metadata().is_ok() {
        format!(
            "{} was there already and is left as it is",
            source.display()
        )
    } else {
        link(&headers.common, &source)?;
        format!("{} → {}", source.display(), headers.common.display())
    };
    eprintln!(
        "xtask: bench: linked {} → {} ({how}); {source_note}",
        build.display(),
        headers.build.display()
    );
    Ok(format!(
        "BCC memleak: the running kernel ({release}) has no headers, which BCC compiles \
         memleak's program against; the bench linked {} → {} ({how}); {source_note}. {}",
        build.display(),
        headers.build.display(),
        why_fine(&headers.build, &release)
    ))
}

/// Debian's amd64 kernel headers: `build` = /usr/src/linux-headers-VERSION-amd64, `common` =
/// /usr/src/linux-headers-VERSION-common (what its Makefile includes).
struct Headers {
    build: PathBuf,
    common: PathBuf,
}

/// The newest installed /usr/src/linux-headers-VERSION-amd64 (neither -rt nor -cloud) whose
/// -common directory is installed too.
fn installed_headers() -> Option<Headers> {
    let src = Path::new("/usr/src");
    fs::read_dir(src)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| {
            let version = name
                .strip_prefix("linux-headers-")?
                .strip_suffix("-amd64")?;
            if version.ends_with("-rt") || version.ends_with("-cloud") {
                return None;
            }
            let h = Headers {
                build: src.join(&name),
                common: src.join(format!("linux-headers-{version}-common")),
            };
            (h.build.is_dir() && h.common.is_dir()).then(|| (version_key(version), h))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, h)| h)
}

/// The numbers of a Debian kernel version, in order, to compare versions: "6.1.0-53" → [6, 1,
/// 0, 53], "6.12.107+deb12" → [6, 12, 107, 12].
fn version_key(version: &str) -> Vec<u64> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// The headers package to install: the one Debian's `linux-headers-amd64` meta-package depends
/// on (the distribution's current kernel), else the newest `linux-headers-6.*-amd64` that apt
/// knows (neither -rt nor -cloud).
fn headers_package() -> Option<String> {
    let depends = cmd::output(Command::new("apt-cache").args(["depends", "linux-headers-amd64"]));
    let current = depends.as_deref().and_then(|d| {
        d.lines().find_map(|l| {
            let p = l.trim().strip_prefix("Depends:")?.trim();
            (p.starts_with("linux-headers-") && p.ends_with("-amd64")).then(|| p.to_string())
        })
    });
    current.or_else(|| {
        let found = cmd::output(Command::new("apt-cache").args([
            "search",
            "--names-only",
            r"^linux-headers-6\..*-amd64$",
        ]))?;
        found
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|p| !p.ends_with("-rt-amd64") && !p.ends_with("-cloud-amd64"))
            .max_by_key(|p| version_key(p))
            .map(str::to_string)
    })
}

/// Installs `headers_package()` with apt-get (after refreshing apt's lists if the first try
/// fails: stale lists name .debs the mirror no longer has).
fn install_headers() -> std::result::Result<(), String> {
    let pkg = headers_package().ok_or(
        "the running kernel has no headers and apt-cache knows no linux-headers-amd64 nor any \
         linux-headers-6.*-amd64 package",
    )?;
    eprintln!("xtask: bench: installing {pkg} with apt-get, for BCC memleak");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", &pkg])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run apt-get: {e}"))
    };
    let mut out = install()?;
    if !out.status.success() {
        eprintln!("xtask: bench: apt-get install {pkg} failed: apt-get update, then again");
        let _ = Command::new("apt-get")
            .arg("update")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        out = install()?;
    }
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(format!(
        "the running kernel has no headers and `apt-get install {pkg}` failed ({}: {})",
        out.status,
        err.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no message")
            .trim()
    ))
}

/// BCC detaches its uprobes through tracefs: mounted on /sys/kernel/tracing if it is not.
/// The note for the results, if it had to be (or could not be).
pub(super) fn tracefs() -> Option<String> {
    let dir = Path::new("/sys/kernel/tracing");
    if dir.join("uprobe_events").exists() {
        return None;
    }
    eprintln!(
        "xtask: bench: mounting tracefs on {} (BCC detaches its uprobes through it)",
        dir.display()
    );
    let mounted = Command::new("mount")
        .args(["-t", "tracefs", "nodev"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    if mounted && dir.join("uprobe_events").exists() {
        Some(format!(
            "BCC memleak: tracefs was not mounted; the bench mounted it on {} (BCC detaches \
             its uprobes through it)",
            dir.display()
        ))
    } else {
        eprintln!("xtask: bench: tracefs could not be mounted: memleak may leave uprobes behind");
        Some(format!(
            "BCC memleak: tracefs is not mounted and `mount -t tracefs nodev {}` failed: \
             memleak may leave uprobes behind",
            dir.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_kernel_versions_order() {
        assert!(version_key("6.1.0-56") > version_key("6.1.0-53"));
        assert!(version_key("6.12.107+deb12") > version_key("6.1.0-56"));
    }
}
