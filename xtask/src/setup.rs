//! `cargo xtask setup`: installs what the build needs, and does nothing (quickly) when it is there.
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd;

pub const NIGHTLY: &str = "nightly";
const BPF_LINKER_VERSION: &str = "0.9.15";

pub fn setup() -> Result<()> {
    rust_src()?;
    bpf_linker()?;
    python_protobuf()?;
    chromium()?;
    setcap()?;
    heaptrack()?;
    allocator_packages()?;
    gcc()
}

/// The eBPF object is built with `-Z build-std=core`, which needs nightly's rust-src.
fn rust_src() -> Result<()> {
    let installed = cmd::output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))
    .with_context(|| {
        format!(
            "cannot list the components of the {NIGHTLY} toolchain: is rustup installed, and \
             the toolchain too (`rustup toolchain install {NIGHTLY} --profile minimal`)?"
        )
    })?;
    if installed
        .lines()
        .any(|l| l.trim() == "rust-src" || l.starts_with("rust-src-"))
    {
        return Ok(());
    }
    eprintln!("xtask: installing rust-src for {NIGHTLY}");
    cmd::run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
}

/// rustc links BPF objects with bpf-linker, found on PATH (we put ~/.cargo/bin first).
fn bpf_linker() -> Result<()> {
    let mut candidates = vec![std::path::PathBuf::from("bpf-linker")];
    candidates.extend(cmd::cargo_bin().map(|bin| bin.join("bpf-linker")));
    let want = format!("bpf-linker {BPF_LINKER_VERSION}");
    for linker in &candidates {
        if let Some(out) = cmd::output(Command::new(linker).arg("--version")) {
            if out.trim() == want {
                return Ok(());
            }
        }
    }
    eprintln!("xtask: installing bpf-linker {BPF_LINKER_VERSION} (takes a few minutes)");
    cmd::run(cmd::cargo("stable")?.args([
        "install",
        &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        "--locked",
    ]))
}

/// gcc links the Rust binaries and compiles the test and demo workloads.
fn gcc() -> Result<()> {
    if cmd::output(Command::new("gcc").arg("--version")).is_none() {
        bail!(
            "gcc not found on PATH: it links alloctrace and compiles the C workloads in \
             tests/workloads (on Debian/Ubuntu: apt-get install gcc)"
        );
    }
    Ok(())
}

/// PyPI versions known to work together: grpcio-tools' protoc writes code this protobuf runs.
const PY_PROTOBUF: &str = "protobuf==7.36.2";
const PY_GRPCIO_TOOLS: &str = "grpcio-tools==1.85.1";

/// tests/it/pprof.rs decodes `--pprof` output with the official profile.proto, compiled by
/// grpcio-tools' protoc into Python that runs on the protobuf module.
fn python_protobuf() -> Result<()> {
    let python = || Command::new("python3");
    if cmd::output(python().args(["-c", "import google.protobuf, grpc_tools"])).is_some() {
        return Ok(());
    }
    if cmd::output(python().arg("--version")).is_none() {
        bail!(
            "python3 not found on PATH: the pprof test decodes profiles with it \
             (on Debian/Ubuntu: apt-get install python3 python3-pip)"
        );
    }
    eprintln!(
        "xtask: installing the Python modules {PY_PROTOBUF} and {PY_GRPCIO_TOOLS} (pprof test)"
    );
    let pip = |extra: &[&str]| {
        let mut c = python();
        c.args(["-m", "pip", "install", "--quiet"])
            .args(extra)
            .args([PY_PROTOBUF, PY_GRPCIO_TOOLS]);
        c.output()
            .with_context(|| format!("cannot run {}", cmd::describe(&c)))
    };
    let mut out = pip(&[])?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() && stderr.contains("externally-managed-environment") {
        // Debian's own python3 (PEP 668): pip installs under /usr/local, apart from apt's files.
        eprintln!(
            "xtask: the system Python is externally managed: retrying with --break-system-packages"
        );
        out = pip(&["--break-system-packages"])?;
    }
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let hint = if stderr.contains("No module named pip") {
            " (on Debian/Ubuntu: apt-get install python3-pip)"
        } else {
            ""
        };
        bail!(
            "python3 -m pip install {PY_PROTOBUF} {PY_GRPCIO_TOOLS} failed ({}){hint}:\n{stderr}",
            out.status
        );
    }
    Ok(())
}

/// Where tests/it/pictures/html.rs expects Chromium (Debian's package `chromium`).
const CHROMIUM: &str = "/usr/bin/chromium";

/// tests/it/pictures/html.rs renders the `--html` page in headless Chromium. Installed with apt when
/// missing and we are root; otherwise a note (the pictures test then fails saying the same).
fn chromium() -> Result<()> {
    if std::path::Path::new(CHROMIUM).is_file() {
        return Ok(());
    }
    let apt = cmd::output(Command::new("apt-get").arg("--version")).is_some();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !apt || !root {
        eprintln!(
            "xtask: note: {CHROMIUM} is missing; the pictures test needs it (on Debian, as root: \
             apt-get update && apt-get install -y --no-install-recommends chromium)"
        );
        return Ok(());
    }
    eprintln!("xtask: installing chromium with apt-get (pictures test)");
    cmd::run(Command::new("apt-get").arg("update"))?;
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "chromium"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    if !std::path::Path::new(CHROMIUM).is_file() {
        bail!("apt-get installed chromium, but {CHROMIUM} is still missing");
    }
    Ok(())
}

/// tests/it/security/privileges.rs gives a copy of alloctrace capabilities with setcap (Debian's package
/// libcap2-bin) and runs it as nobody with setpriv (util-linux, always installed). Installed
/// with apt when missing and we are root; otherwise a note (the test then fails saying so).
fn setcap() -> Result<()> {
    let found = ["/usr/sbin/setcap", "/sbin/setcap", "/usr/bin/setcap"]
        .iter()
        .any(|p| std::path::Path::new(p).is_file());
    if found {
        return Ok(());
    }
    let apt = cmd::output(Command::new("apt-get").arg("--version")).is_some();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !apt || !root {
        eprintln!(
            "xtask: note: setcap is missing; the security test needs it (on Debian, as root: \
             apt-get update && apt-get install -y --no-install-recommends libcap2-bin)"
        );
        return Ok(());
    }
    eprintln!("xtask: installing libcap2-bin (setcap) with apt-get (security test)");
    cmd::run(Command::new("apt-get").arg("update"))?;
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "libcap2-bin"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// `cargo xtask bench`'s start-up section compares `alloctrace -- /bin/true` with `heaptrack
/// /bin/true` (Debian's package heaptrack). Installed with apt when missing and we are root;
/// otherwise a note (the section then leaves heaptrack's column empty, saying so).
fn heaptrack() -> Result<()> {
    if cmd::which("heaptrack").is_some() {
        return Ok(());
    }
    let apt = cmd::output(Command::new("apt-get").arg("--version")).is_some();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !apt || !root {
        eprintln!(
            "xtask: note: heaptrack is missing; the bench's start-up section compares with it \
             (on Debian, as root: apt-get update && apt-get install -y --no-install-recommends \
             heaptrack)"
        );
        return Ok(());
    }
    eprintln!("xtask: installing heaptrack with apt-get (bench start-up section)");
    cmd::run(Command::new("apt-get").arg("update"))?;
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "heaptrack"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Debian packages the tests build workloads with and run: musl-gcc, jemalloc, tcmalloc
/// (gperftools), mimalloc (shared and static builds, headers) and Debian's redis, which runs
/// on jemalloc (tests/it/allocators); Go for the Go workloads and `go tool pprof`; Prometheus
/// scraping the daemon; tmux driving the live view; sqlite3 as an unmodified Debian program.
const ALLOCATOR_PACKAGES: &[&str] = &[
    "musl-tools",
    "libjemalloc-dev",
    "libjemalloc2",
    "libgoogle-perftools-dev",
    "libtcmalloc-minimal4",
    "libmimalloc-dev",
    "libmimalloc2.0",
    "redis-server",
    "redis-tools",
    "golang-go",
    "prometheus",
    "tmux",
    "sqlite3",
];

/// Installs the missing [`ALLOCATOR_PACKAGES`] with one apt-get call when we are root;
/// otherwise a note naming them (the allocator workloads that need them then leave
/// `.build-error` files, which their tests report).
fn allocator_packages() -> Result<()> {
    let Some(listed) = dpkg_query(ALLOCATOR_PACKAGES) else {
        eprintln!(
            "xtask: note: dpkg-query is missing (not Debian?): the tests need {}",
            ALLOCATOR_PACKAGES.join(" ")
        );
        return Ok(());
    };
    let missing = missing_packages(ALLOCATOR_PACKAGES, &listed);
    if missing.is_empty() {
        return Ok(());
    }
    let apt = cmd::output(Command::new("apt-get").arg("--version")).is_some();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !apt || !root {
        eprintln!(
            "xtask: note: the tests need {} (on Debian, as root: apt-get update && \
             apt-get install -y --no-install-recommends {0})",
            missing.join(" ")
        );
        return Ok(());
    }
    eprintln!(
        "xtask: installing {} with apt-get (tests)",
        missing.join(" ")
    );
    cmd::run(Command::new("apt-get").arg("update"))?;
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let still = dpkg_query(&missing)
        .map(|listed| missing_packages(&missing, &listed))
        .unwrap_or_default();
    if !still.is_empty() {
        bail!(
            "apt-get install succeeded, but these are still not installed: {}",
            still.join(" ")
        );
    }
    Ok(())
}

/// `dpkg-query -W` of `packages`, one `name<TAB>status` line per package dpkg knows (it exits
/// non-zero when it knows some not: its output is still good); None without dpkg-query.
fn dpkg_query(packages: &[&str]) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Package}\t${db:Status-Abbrev}\n"])
        .args(packages)
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `packages` that `listed` (dpkg_query's output) does not show installed (`ii`).
fn missing_packages<'a>(packages: &[&'a str], listed: &str) -> Vec<&'a str> {
    packages
        .iter()
        .copied()
        .filter(|p| {
            !listed.lines().any(|l| {
                l.split_once('\t')
                    .is_some_and(|(name, status)| name == *p && status.starts_with("ii"))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_means_ii() {
        let listed = "musl-tools\tii \nlibjemalloc2\trc \nredis-tools\tun \n";
        assert_eq!(
            missing_packages(
                &[
                    "musl-tools",
                    "libjemalloc2",
                    "redis-tools",
                    "libmimalloc-dev"
                ],
                listed
            ),
            ["libjemalloc2", "redis-tools", "libmimalloc-dev"]
        );
        assert!(missing_packages(&["musl-tools"], listed).is_empty());
    }
}
