//! The Go runtime as an allocator: `runtime.mallocgc`, the one function every heap object of a
//! Go program goes through (`new`, `make`, `append`'s growth, string concatenation, boxing into
//! interfaces), linked into the program itself (Go binaries are static, with no libc).
//!
//! Supported: amd64 binaries of Go 1.18 or later (the register ABI, Go 1.17+, puts the size in
//! `rax`; 1.18 is the first whose `.go.buildinfo` holds its version inline, which alloctrace
//! reads as `go version -m` does). Older binaries are refused with the reason, never probed
//! with the wrong ABI. Tested with Debian's Go 1.19. Only the allocations are counted: Go frees nothing by a
//! call (the collector sweeps), so Go processes are traced in alloc-only mode.
use alloctrace_common as abi;

use super::{Allocator, ProbeSpec, Symbols};

pub struct Go;

pub const MALLOCGC: &str = "runtime.mallocgc";
/// Its `Allocator::name`.
pub const NAME: &str = "go";

/// Why a full trace leaves the Go program `shown` out (a target's exec, a followed child's).
pub fn refused_in_full_mode(shown: &str) -> String {
    format!(
        "{shown} runs Go, which a full trace does not probe (Go frees by garbage collection, \
         so its allocations would all look live); --mode alloc-only traces it"
    )
}

/// Entry only, in both modes: never a return probe in Go code (Go moves goroutine stacks, and
/// a uretprobe rewrites a return address on them).
pub const PROBES: &[ProbeSpec] = &[
    ProbeSpec {
        symbol: MALLOCGC,
        program: abi::PROG_GO_MALLOCGC_COUNT,
        returns_block: false,
        required: true,
        count: Some(abi::PROG_GO_MALLOCGC_COUNT),
    },
    // Not an allocation: one completed GC cycle (the runtime counts NumGC there).
    ProbeSpec {
        symbol: GC_MARK_TERMINATION,
        program: abi::PROG_GO_GC_COUNT,
        returns_block: false,
        required: false,
        count: Some(abi::PROG_GO_GC_COUNT),
    },
];

pub const GC_MARK_TERMINATION: &str = "runtime.gcMarkTermination";

/// The runtime's functions that only turn a language construct into a `mallocgc` call: a hot
/// spot is their caller, as in `go tool pprof -top`.
const ALLOCATING_RUNTIME: &[&str] = &[
    "runtime.mallocgc",
    "runtime.newobject",
    "runtime.newarray",
    "runtime.makeslice",
    "runtime.makeslicecopy",
    "runtime.growslice",
    "runtime.makemap",
    "runtime.makemap_small",
    "runtime.makechan",
    "runtime.hashGrow",
    "runtime.newstack",
    "runtime.rawstring",
    "runtime.rawstringtmp",
    "runtime.rawbyteslice",
    "runtime.rawruneslice",
    "runtime.slicebytetostring",
    "runtime.slicerunetostring",
    "runtime.stringtoslicebyte",
    "runtime.stringtoslicerune",
    "runtime.intstring",
    "runtime.convT",
    "runtime.convTnoptr",
    "runtime.convT16",
    "runtime.convT32",
    "runtime.convT64",
    "runtime.convTstring",
    "runtime.convTslice",
    "runtime.bytealg.MakeNoZero",
    "reflect.unsafe_New",
    "reflect.unsafe_NewArray",
];

/// Name prefixes of the same: the concatenations (`concatstring2`...), map assignments that
/// grow buckets (`mapassign_faststr`...).
const ALLOCATING_PREFIXES: &[&str] = &[
    "runtime.concatstring",
    "runtime.mapassign",
    "runtime.makeBucketArray",
    "runtime.newBucket",
];

impl Allocator for Go {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Never by a file's name: the runtime is in the program.
    fn holds(&self, _path: &[u8]) -> bool {
        false
    }

    fn probes(&self) -> &'static [ProbeSpec] {
        PROBES
    }

    fn markers(&self) -> &'static [&'static str] {
        &[MALLOCGC]
    }

    fn defined_in(&self, s: &Symbols) -> Option<&'static str> {
        s.has(MALLOCGC).then_some("")
    }

    fn version_section(&self) -> &'static str {
        ".go.buildinfo"
    }

    /// `.go.buildinfo` (Go 1.18+ layout): a 16-byte magic, the pointer size and flags bytes,
    /// and with flag 2 (versions inline) the version as a varint-prefixed string at offset 32.
    fn version(&self, data: &[u8]) -> Option<String> {
        buildinfo_version(data)
    }

    fn owns_function(&self, name: &str) -> bool {
        ALLOCATING_RUNTIME.contains(&name)
            || ALLOCATING_PREFIXES.iter().any(|p| name.starts_with(p))
    }
}

/// The Go version in a `.go.buildinfo` section's bytes; None before Go 1.18's inline layout
/// (older binaries point at `runtime.buildVersion` instead).
pub fn buildinfo_version(data: &[u8]) -> Option<String> {
    const MAGIC: &[u8] = b"\xff Go buildinf:";
    if !data.starts_with(MAGIC) || data.get(15)? & 2 == 0 {
        return None;
    }
    let (len, used) = uvarint(data.get(32..)?)?;
    let start = 32 + used;
    let bytes = data.get(start..start.checked_add(usize::try_from(len).ok()?)?)?;
    std::str::from_utf8(bytes).ok().map(str::to_string)
}

fn uvarint(data: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &b) in data.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// `(major, minor)` of a version string `go1.19.8` (`go1.21rc2`, `go1.22`); None for a
/// development build (`devel go1.23-abc...`) or anything else.
pub fn parse_version(v: &str) -> Option<(u32, u32)> {
    let rest = v.strip_prefix("go")?;
    let mut parts = rest.splitn(3, '.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor.parse().ok()?))
}

/// Whether alloctrace can probe a Go binary of version `v` (its buildinfo's): the register ABI
/// (1.17+) on amd64. A binary whose buildinfo does not say its version inline (before 1.18) is
/// refused with the reason, as are older versions.
pub fn check_version(v: Option<&str>) -> Result<(), String> {
    match v.map(|v| (v, parse_version(v))) {
        Some((_, Some(ver))) if ver >= (1, 17) => Ok(()),
        Some((v, Some(_))) => Err(format!(
            "{v} passes arguments on the stack (Go 1.17 moved them to registers): \
             supported are Go 1.17 and later on amd64"
        )),
        Some((v, None)) => Err(format!("unrecognized Go version {v:?}")),
        None => Err(
            "no Go version in .go.buildinfo (before Go 1.18): supported are Go \
                     binaries of 1.18 and later on amd64"
                .into(),
        ),
    }
}

/// Where a Go function's stack check branches (`jbe` to `runtime.morestack`), in bytes from its
/// entry: the only place its probe may go (see tracer-ebpf's `alloc::go`). The check is
/// `cmp rsp, [r14+0x10]` (small frames) or `lea r12, [rsp-N]; cmp r12, [r14+0x10]`, then a
/// `jbe` rel32 or rel8. None when the function does not start that way.
pub fn stack_check_branch(code: &[u8]) -> Option<u64> {
    const CMP_RSP: [u8; 4] = [0x49, 0x3b, 0x66, 0x10];
    const CMP_R12: [u8; 4] = [0x4d, 0x3b, 0x66, 0x10];
    let at = if code.starts_with(&CMP_RSP) {
        4
    } else {
        // lea r12, [rsp + disp8] (4c 8d 64 24 d8) or disp32 (4c 8d a4 24 d32).
        let lea = match code {
            [0x4c, 0x8d, 0x64, 0x24, ..] => 5,
            [0x4c, 0x8d, 0xa4, 0x24, ..] => 8,
            _ => return None,
        };
        code.get(lea..lea + 4)
            .filter(|c| *c == CMP_R12)
            .map(|_| lea + 4)?
    };
    match code.get(at..)? {
        [0x0f, 0x86, ..] | [0x76, ..] => Some(at as u64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_checks() {
        // Go 1.19's runtime.mallocgc: cmp 0x10(%r14),%rsp; jbe rel32.
        let small = [0x49, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0xbe, 0x08, 0, 0, 0x48];
        assert_eq!(stack_check_branch(&small), Some(4));
        let rel8 = [0x49, 0x3b, 0x66, 0x10, 0x76, 0x20];
        assert_eq!(stack_check_branch(&rel8), Some(4));
        // Go 1.19's runtime.gcMarkTermination: lea -0x130(%rsp),%r12; cmp 0x10(%r14),%r12;
        // jbe.
        let big = [
            0x4c, 0x8d, 0xa4, 0x24, 0xd0, 0xfe, 0xff, 0xff, 0x4d, 0x3b, 0x66, 0x10, 0x0f, 0x86,
        ];
        assert_eq!(stack_check_branch(&big), Some(12));
        let disp8 = [
            0x4c, 0x8d, 0x64, 0x24, 0xb0, 0x4d, 0x3b, 0x66, 0x10, 0x76, 0x10,
        ];
        assert_eq!(stack_check_branch(&disp8), Some(9));
        assert_eq!(stack_check_branch(&[0x55, 0x48, 0x89, 0xe5]), None);
        assert_eq!(stack_check_branch(&[0x49, 0x3b, 0x66, 0x10, 0x90]), None);
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("go1.19.8"), Some((1, 19)));
        assert_eq!(parse_version("go1.21rc2"), Some((1, 21)));
        assert_eq!(parse_version("devel go1.23-abc"), None);
        assert!(check_version(Some("go1.19.8")).is_ok());
        assert!(check_version(Some("go1.22")).is_ok());
        assert!(check_version(Some("go1.16.3"))
            .unwrap_err()
            .contains("Go 1.17"));
        assert!(check_version(None).is_err());
        let mut info = b"\xff Go buildinf:\x08\x02".to_vec();
        info.resize(32, 0);
        info.push(8);
        info.extend_from_slice(b"go1.19.8\x00");
        assert_eq!(buildinfo_version(&info).as_deref(), Some("go1.19.8"));
        info[15] = 0;
        assert_eq!(buildinfo_version(&info), None);
    }

    #[test]
    fn runtime_frames_are_the_allocators() {
        for f in [
            "runtime.newobject",
            "runtime.concatstring3",
            "runtime.growslice",
        ] {
            assert!(Go.owns_function(f), "{f}");
        }
        for f in ["main.buildIndex", "encoding/json.Marshal", "runtime.main"] {
            assert!(!Go.owns_function(f), "{f}");
        }
    }
}
