//! Whether the kernel has what alloctrace needs: uprobe events and BTF.
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
    Ok(())
}
