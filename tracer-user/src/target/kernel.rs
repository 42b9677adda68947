//! Whether the kernel has what alloctrace needs: uprobe events, BTF and uprobe_multi links.
use std::path::Path;

use super::TargetError;

pub fn check_kernel() -> Result<(), TargetError> {
    const UPROBE_PMU: &str = "/sys/bus/event_source/devices/uprobe";
    const BTF: &str = "/sys/kernel/btf/vmlinux";
    if !Path::new(UPROBE_PMU).exists() {
        return Err(TargetError::NoUprobes(UPROBE_PMU));
    }
    if !Path::new(BTF).exists() {
        return Err(TargetError::NoBtf(BTF));
    }
    // The probes are uprobe_multi links (probe::uprobe_multi), which came with 6.6.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    if version(&release).is_some_and(|v| v < MIN_VERSION) {
        return Err(TargetError::OldKernel(release.trim().to_string()));
    }
    Ok(())
}

/// The oldest kernel with uprobe_multi links.
const MIN_VERSION: (u32, u32) = (6, 6);

/// (major, minor) of a release string such as `6.18.44-fc-v1098`.
fn version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::version;

    #[test]
    fn release_strings_give_major_and_minor() {
        assert_eq!(version("6.18.44-fc-v1098\n"), Some((6, 18)));
        assert_eq!(version("6.5.0-1-amd64"), Some((6, 5)));
        assert!(version("6.5.0").unwrap() < super::MIN_VERSION);
        assert_eq!(version("garbage"), None);
    }
}
