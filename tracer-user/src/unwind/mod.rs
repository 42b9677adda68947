//! How a stack's frames are found, user side. By default the kernel walks each binary's DWARF
//! CFI, which user space compiles into tables for it and keeps current as processes map code
//! (`cfi`); with `--unwind fp` it walks frame pointers (tracer-ebpf's
//! `unwind/frame_pointer.rs`). Either keeps only frames inside executable mappings; a
//! frame-pointer walk that meets code built without frame pointers is cut there, and sites
//! that differ only past the cut are one site again here (`site_merge`).
pub mod cfi;
pub mod site_merge;

use alloctrace_common as abi;

/// How the kernel walks stacks (`--unwind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Unwind {
    /// Each binary's DWARF CFI, compiled into tables for the kernel (`cfi`); frame pointers
    /// where a binary has none.
    Dwarf,
    /// Frame pointers only.
    Fp,
}

impl Unwind {
    /// The kernel's `GLOBAL_UNWIND_MODE`.
    pub fn kernel_mode(self) -> u32 {
        match self {
            Unwind::Dwarf => abi::unwind_table::UNWIND_DWARF,
            Unwind::Fp => abi::unwind_table::UNWIND_FP,
        }
    }
}

/// How many of a stack's frames are kept, and whether the stack was cut. The kernel keeps
/// only frames inside executable mappings (`kernel_cut` says where it stopped and why); as a
/// second guard a stack ends here too at its first frame outside every executable mapping
/// user space knows of the process (`in_code`), so no other value reaches a report.
pub fn kept_frames(ips: &[u64], kernel_cut: u32, in_code: impl Fn(u64) -> bool) -> (usize, bool) {
    let kept = ips.iter().take_while(|&&a| in_code(a)).count();
    (kept, kernel_cut != abi::stack_cut::NONE || kept < ips.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stack_ends_at_its_first_frame_outside_code() {
        let code = |a: u64| a < 100;
        assert_eq!(
            kept_frames(&[1, 2, 3], abi::stack_cut::NONE, code),
            (3, false)
        );
        assert_eq!(
            kept_frames(&[1, 200, 3], abi::stack_cut::NONE, code),
            (1, true)
        );
        assert_eq!(kept_frames(&[], abi::stack_cut::NONE, code), (0, false));
        // Cut by the kernel's walk, every frame it kept in code.
        assert_eq!(
            kept_frames(&[1, 2], abi::stack_cut::NOT_CODE, code),
            (2, true)
        );
    }
}
