//! Where on an allocator function its probes go.
//!
//! A uprobe costs ~0.4 µs per hit when the kernel can emulate the probed instruction and
//! ~14–23 µs here when it has to single-step it out of line (the #DB trap exits the VM). On
//! x86-64 the kernel emulates (arch/x86/kernel/uprobes.c, `branch_setup_xol_ops` and
//! `push_setup_xol_ops`): the canonical nops `x86_nops[1..=8]` and `0x90` with any prefix;
//! `jmp rel8/rel32`, `call rel32` and `jcc rel8/rel32` without a `0x66` prefix; `push reg`
//! (one byte, or two with exactly the REX prefix `0x41`). Everything else, `endbr64` included,
//! is single-stepped. glibc 2.36's free starts with `test %rdi,%rdi` (single-stepped) followed by
//! a `je` (emulated); posix_memalign, aligned_alloc, memalign, valloc and pvalloc start with
//! `cmpb $0,__malloc_initialized(%rip)` followed by a `push` or a `je`.
//!
//! [`place`] moves a function's probe to the first emulated instruction when that is provably
//! the same as probing the entry:
//! - the instructions before it write no memory, move neither `rsp` nor the instruction flow,
//!   and write no register the function's probes read (its arguments the programs read, `rsp`,
//!   `rbp`): `test`, `cmp`, `endbr64`, nops, and moves, loads and integer operations into other
//!   registers. So at the moved probe the arguments read and `rsp` are those of the entry —
//!   `[rsp]` is still the return address (the caller the eBPF side reads; the return probe
//!   hijacks it);
//! - it is on an instruction boundary found by decoding from the entry;
//! - no direct branch of the whole function (its size from the ELF symbol), nor of the rest of
//!   the binary's code ([`branch_targets_in`]), lands in `(entry, probe]`: a branch there would
//!   fire the probe a second time for one call, or skip it.
//!
//! Otherwise the probe stays at the entry and the decision says why.
use std::collections::BTreeSet;
use std::fmt;

use iced_x86::{
    Code, Decoder, DecoderOptions, FastFormatter, FlowControl, Instruction, InstructionInfoFactory,
    Mnemonic, OpAccess, OpKind, Register,
};

/// Instructions decoded from the entry while looking for an emulated one.
const MAX_PROLOGUE: usize = 12;

/// `x86_nops[]` of the kernel (arch/x86/kernel/alternative.c, 64-bit): the byte sequences it
/// emulates as nops regardless of their opcode.
const X86_NOPS: [&[u8]; 8] = [
    &[0x90],
    &[0x66, 0x90],
    &[0x0f, 0x1f, 0x00],
    &[0x0f, 0x1f, 0x40, 0x00],
    &[0x0f, 0x1f, 0x44, 0x00, 0x00],
    &[0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00],
    &[0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00],
    &[0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
];

/// Which offset the entry probes go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Every probe at offset 0 (the function's first instruction).
    Entry,
    /// The first instruction the kernel emulates, when provably equivalent (see the module).
    Auto,
}

/// The environment variable that selects the mode: `entry` or `auto` (the default).
pub const MODE_ENV: &str = "ALLOCTRACE_PROBE_AT";

impl Mode {
    /// A value of `ALLOCTRACE_PROBE_AT` (read once, into the `Config`); empty is `auto`.
    pub fn parse(s: &str) -> Result<Mode, String> {
        match s.trim() {
            "" | "auto" => Ok(Mode::Auto),
            "entry" => Ok(Mode::Entry),
            other => Err(format!("{MODE_ENV}={other}: expected `entry` or `auto`")),
        }
    }
}

/// Where one function's probes go, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Bytes from the function's entry to the probed instruction.
    pub offset: u64,
    /// The probed instruction, as text.
    pub probed: String,
    /// Whether the kernel emulates the probed instruction (no single-step).
    pub emulated: bool,
    pub why: Why,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    /// The first instruction is emulated already.
    FirstEmulated,
    /// Moved past these instructions (test/cmp/endbr64/nop, a load into a register no probe
    /// reads), which change nothing the probes
    /// read.
    Past(Vec<String>),
    /// `--probe-at entry` (ALLOCTRACE_PROBE_AT=entry).
    Asked,
    /// Kept at the entry: the reason.
    Kept(String),
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{} `{}`", self.offset, self.probed)?;
        let how = if self.emulated {
            "emulated"
        } else {
            "single-stepped"
        };
        match &self.why {
            Why::FirstEmulated => write!(f, " ({how}: first instruction)"),
            Why::Past(skipped) => write!(
                f,
                " ({how}), past {}",
                skipped
                    .iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Why::Asked => write!(f, " ({how}): {MODE_ENV}=entry"),
            Why::Kept(reason) => write!(f, " ({how}), kept at the entry: {reason}"),
        }
    }
}

fn text(i: &Instruction) -> String {
    let mut s = String::new();
    FastFormatter::new().format(i, &mut s);
    s
}

/// Decodes one instruction at the start of `code` (whose first byte is at `ip`).
fn decode_one(code: &[u8], ip: u64) -> Option<Instruction> {
    let mut d = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    if !d.can_decode() {
        return None;
    }
    let i = d.decode();
    (!i.is_invalid()).then_some(i)
}

/// Whether the kernel emulates `bytes`, the encoding of `i`, instead of single-stepping it.
pub fn kernel_emulates(i: &Instruction, bytes: &[u8]) -> bool {
    if X86_NOPS.contains(&bytes) {
        return true;
    }
    // The prefixes: legacy ones and REX, before the opcode byte.
    let n_prefix = bytes
        .iter()
        .take_while(|b| {
            matches!(
                b,
                0xf0 | 0xf2 | 0xf3 | 0x2e | 0x36 | 0x3e | 0x26 | 0x64 | 0x65 | 0x66 | 0x67
            ) || (0x40..=0x4f).contains(*b)
        })
        .count();
    let prefixes = &bytes[..n_prefix];
    // `case 0x90: /* prefix* + nop */` — only when it really is a nop (41 90 is xchg r8, rax,
    // which the kernel would emulate as a nop).
    if bytes.get(n_prefix) == Some(&0x90) && i.mnemonic() == Mnemonic::Nop {
        return true;
    }
    let branch = matches!(
        i.code(),
        Code::Jmp_rel8_64 | Code::Jmp_rel32_64 | Code::Call_rel32_64
    ) || (i.is_jcc_short_or_near() && matches!(i.op0_kind(), OpKind::NearBranch64));
    if branch {
        return !prefixes.contains(&0x66);
    }
    // push_setup_xol_ops: 50+r, or 41 50+r.
    match bytes {
        [op] => (0x50..=0x57).contains(op),
        [0x41, op] => (0x50..=0x57).contains(op),
        _ => false,
    }
}

/// Whether `i` may run before the probe without changing anything the probes read: a `test`,
/// `cmp`, `endbr64` or nop, or a move, load or integer operation (`mov`, `lea`, `add`, `and`,
/// `shr`, ...) into a register the probes do not read; and (checked by the decoder's own
/// instruction info, not just its name) it writes no memory and none of the registers the
/// probes read ([`read_by_probes`]), does not move `rsp` and does not branch. The flags it
/// writes are read by no probe. (tcmalloc's malloc starts with `mov rax,[rip+..]; test
/// rax,rax; jne`; jemalloc's free computes its fast path's lookup from `rdi` into `rax`,
/// `rcx`, `rdx` before its first branch.)
fn harmless(i: &Instruction, info: &mut InstructionInfoFactory, args: usize) -> bool {
    if !matches!(
        i.mnemonic(),
        Mnemonic::Test
            | Mnemonic::Cmp
            | Mnemonic::Endbr64
            | Mnemonic::Nop
            | Mnemonic::Mov
            | Mnemonic::Movzx
            | Mnemonic::Movsx
            | Mnemonic::Movsxd
            | Mnemonic::Lea
            | Mnemonic::Add
            | Mnemonic::Sub
            | Mnemonic::And
            | Mnemonic::Or
            | Mnemonic::Xor
            | Mnemonic::Shl
            | Mnemonic::Shr
            | Mnemonic::Sar
    ) {
        return false;
    }
    if i.flow_control() != FlowControl::Next || i.stack_pointer_increment() != 0 {
        return false;
    }
    let info = info.info(i);
    let writes =
        |a: OpAccess| !matches!(a, OpAccess::None | OpAccess::Read | OpAccess::NoMemAccess);
    let only_flags = matches!(
        i.mnemonic(),
        Mnemonic::Test | Mnemonic::Cmp | Mnemonic::Endbr64 | Mnemonic::Nop
    );
    let read = read_by_probes(args);
    !info
        .used_registers()
        .iter()
        .any(|r| writes(r.access()) && (only_flags || read.contains(&r.register().full_register())))
        && !info.used_memory().iter().any(|m| writes(m.access()))
}

/// The registers the probes on a function read at the probed instruction: its first `args`
/// arguments (the entry programs' `alloctrace_common::args_read`), the stack pointer (and
/// through it the return address) and the frame pointer the unwinder starts from.
fn read_by_probes(args: usize) -> Vec<Register> {
    const ARGS: [Register; 6] = [
        Register::RDI,
        Register::RSI,
        Register::RDX,
        Register::RCX,
        Register::R8,
        Register::R9,
    ];
    ARGS[..args.min(6)]
        .iter()
        .copied()
        .chain([Register::RSP, Register::RBP])
        .collect()
}

/// The direct (near) branch targets of every instruction in `code` (first byte at `ip`), or
/// `None` if some bytes do not decode (then nothing can be proven).
pub fn branch_targets(code: &[u8], ip: u64) -> Option<BTreeSet<u64>> {
    let mut out = BTreeSet::new();
    let mut d = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut i = Instruction::default();
    while d.can_decode() {
        d.decode_out(&mut i);
        if i.is_invalid() {
            return None;
        }
        if let Some(t) = near_target(&i) {
            out.insert(t);
        }
    }
    Some(out)
}

fn near_target(i: &Instruction) -> Option<u64> {
    (0..i.op_count())
        .any(|n| {
            matches!(
                i.op_kind(n),
                OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
            )
        })
        .then(|| i.near_branch_target())
}

/// Decodes the whole of `code` (first byte at `ip`, e.g. an executable segment) linearly and
/// returns the direct branch targets that fall in one of `windows` (`(start, end]`, end
/// included). Bytes that do not decode are skipped one at a time; a linear sweep that
/// misdecodes can only add targets (which keeps a probe at its entry), never hide the ones of
/// the functions it decodes in step.
pub fn branch_targets_in(code: &[u8], ip: u64, windows: &[(u64, u64)]) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    if windows.is_empty() {
        return out;
    }
    let inside = |t: u64| windows.iter().any(|&(s, e)| t > s && t <= e);
    let mut d = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut i = Instruction::default();
    while d.can_decode() {
        d.decode_out(&mut i);
        if let Some(t) = near_target(&i).filter(|&t| inside(t)) {
            out.insert(t);
        }
    }
    out
}

/// The first instruction at or after the entry of `func` (its code; entry at `ip`) that the
/// kernel emulates, provided only harmless instructions come before it: `(offset, skipped
/// instructions, the instruction)`. Otherwise the reason there is none.
pub fn candidate(func: &[u8], ip: u64, args: usize) -> Result<(u64, Vec<String>, String), String> {
    let mut info = InstructionInfoFactory::new();
    let mut skipped = Vec::new();
    let mut off = 0usize;
    for _ in 0..MAX_PROLOGUE {
        let Some(i) = decode_one(&func[off.min(func.len())..], ip + off as u64) else {
            return Err(format!("no valid instruction at +{off}"));
        };
        let bytes = &func[off..off + i.len()];
        if kernel_emulates(&i, bytes) {
            return Ok((off as u64, skipped, text(&i)));
        }
        if !harmless(&i, &mut info, args) {
            return Err(if off == 0 {
                format!("its first instruction `{}` is not emulated", text(&i))
            } else {
                format!(
                    "`{}` at +{off} comes before any emulated instruction and may change what the probes read",
                    text(&i)
                )
            });
        }
        skipped.push(text(&i));
        off += i.len();
    }
    Err(format!(
        "no emulated instruction in its first {MAX_PROLOGUE} instructions"
    ))
}

/// Where the probes of the function `func` (its whole code, entry at `ip`) go, given `mode`,
/// `outside` (the direct branch targets found elsewhere in the binary, see
/// [`branch_targets_in`]) and `args`, how many of its arguments its programs read.
pub fn place(func: &[u8], ip: u64, mode: Mode, outside: &BTreeSet<u64>, args: usize) -> Placement {
    let at_entry = |why: Why| {
        let (probed, emulated) = match decode_one(func, ip) {
            Some(i) => (text(&i), kernel_emulates(&i, &func[..i.len()])),
            None => ("(undecodable)".into(), false),
        };
        Placement {
            offset: 0,
            probed,
            emulated,
            why,
        }
    };
    if mode == Mode::Entry {
        return at_entry(Why::Asked);
    }
    let (off, skipped, probed) = match candidate(func, ip, args) {
        Ok(c) => c,
        Err(reason) => return at_entry(Why::Kept(reason)),
    };
    if off == 0 {
        return Placement {
            offset: 0,
            probed,
            emulated: true,
            why: Why::FirstEmulated,
        };
    }
    let Some(inner) = branch_targets(func, ip) else {
        return at_entry(Why::Kept(
            "the function does not decode as a whole, so branches into its prologue cannot be ruled out"
                .into(),
        ));
    };
    let window = (ip + 1)..=(ip + off);
    if let Some(t) = inner.range(window.clone()).next() {
        return at_entry(Why::Kept(format!(
            "+{} is the target of a branch inside the function",
            t - ip
        )));
    }
    if let Some(t) = outside.range(window).next() {
        return at_entry(Why::Kept(format!(
            "+{} is the target of a branch elsewhere in the binary",
            t - ip
        )));
    }
    Placement {
        offset: off,
        probed,
        emulated: true,
        why: Why::Past(skipped),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: u64 = 0x98ef0;

    fn none() -> BTreeSet<u64> {
        BTreeSet::new()
    }

    /// glibc 2.36's free: test %rdi,%rdi; je +200; push %rbp; lea -0x10(%rdi),%rsi; push %rbx;
    /// ... ; the NULL path returns at +200.
    fn glibc_free() -> Vec<u8> {
        let mut f = vec![
            0x48, 0x85, 0xff, // test rdi,rdi
            0x0f, 0x84, 0xbf, 0x00, 0x00, 0x00, // je +200
            0x55, // push rbp
            0x48, 0x8d, 0x77, 0xf0, // lea rsi,[rdi-0x10]
            0x53, // push rbx
        ];
        f.resize(200, 0x90);
        f.push(0xc3); // +200: ret
        f
    }

    #[test]
    fn placement_glibc_free_goes_past_its_null_check() {
        let p = place(&glibc_free(), IP, Mode::Auto, &none(), 6);
        assert_eq!(p.offset, 3, "{p}");
        assert!(p.emulated);
        assert!(p.probed.starts_with("je"), "{p}");
        assert_eq!(p.why, Why::Past(vec!["test rdi,rdi".into()]), "{p}");
    }

    #[test]
    fn placement_entry_mode_keeps_offset_zero() {
        let p = place(&glibc_free(), IP, Mode::Entry, &none(), 6);
        assert_eq!(
            (p.offset, p.emulated, p.why.clone()),
            (0, false, Why::Asked),
            "{p}"
        );
    }

    #[test]
    fn placement_push_first_stays_at_zero() {
        // glibc malloc: push r12; push rbp; push rbx; mov rbx,rdi; ret
        let f = [0x41, 0x54, 0x55, 0x53, 0x48, 0x89, 0xfb, 0xc3];
        let p = place(&f, IP, Mode::Auto, &none(), 6);
        assert_eq!((p.offset, p.emulated), (0, true), "{p}");
        assert_eq!(p.why, Why::FirstEmulated);
    }

    #[test]
    fn placement_endbr64_prologue() {
        // endbr64; push rbp; mov rbp,rsp; ret
        let f = [0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48, 0x89, 0xe5, 0xc3];
        let p = place(&f, IP, Mode::Auto, &none(), 6);
        assert_eq!(p.offset, 4, "{p}");
        assert_eq!(p.why, Why::Past(vec!["endbr64".into()]));
    }

    #[test]
    fn placement_cmpb_then_push_like_posix_memalign() {
        // cmpb $0,0x140201(%rip); push %r12; mov %rdx,%r12; ret
        let f = [
            0x80, 0x3d, 0x01, 0x02, 0x14, 0x00, 0x00, 0x41, 0x54, 0x49, 0x89, 0xd4, 0xc3,
        ];
        let p = place(&f, IP, Mode::Auto, &none(), 6);
        assert_eq!(p.offset, 7, "{p}");
        assert!(p.probed.starts_with("push r12"), "{p}");
    }

    #[test]
    fn placement_candidate_that_is_a_branch_target_stays_at_zero() {
        // +0 test rdi,rdi; +3 je +10 (target of the jmp below); +5 push rbp; +6 dec rdi;
        // +9 jmp +3; +11 ret
        let f = [
            0x48, 0x85, 0xff, // +0 test rdi,rdi
            0x74, 0x06, // +3 je +11
            0x55, // +5 push rbp
            0x48, 0xff, 0xcf, // +6 dec rdi
            0xeb, 0xf8, // +9 jmp +3
            0xc3, // +11 ret
        ];
        assert_eq!(branch_targets(&f, IP).unwrap(), [IP + 3, IP + 11].into());
        let p = place(&f, IP, Mode::Auto, &none(), 6);
        assert_eq!(p.offset, 0, "{p}");
        assert!(
            matches!(&p.why, Why::Kept(r) if r.contains("+3 is the target of a branch inside")),
            "{p}"
        );
    }

    #[test]
    fn placement_branch_from_elsewhere_into_the_prologue_keeps_the_entry() {
        let outside: BTreeSet<u64> = [IP + 3].into();
        let p = place(&glibc_free(), IP, Mode::Auto, &outside, 6);
        assert_eq!(p.offset, 0, "{p}");
        // A sweep of other code finds the branch.
        let mut other = vec![0xe9, 0, 0, 0, 0]; // jmp rel32 at IP+0x1000 to IP+3
        let rel = (IP + 3).wrapping_sub(IP + 0x1000 + 5) as u32;
        other[1..].copy_from_slice(&rel.to_le_bytes());
        assert_eq!(
            branch_targets_in(&other, IP + 0x1000, &[(IP, IP + 3)]),
            [IP + 3].into()
        );
    }

    #[test]
    fn placement_argument_register_write_keeps_the_entry() {
        // glibc reallocarray: mov rax,rsi; mul rdx; mov rsi,rax; jo ..; jmp realloc
        let f = [
            0x48, 0x89, 0xf0, 0x48, 0xf7, 0xe2, 0x48, 0x89, 0xc6, 0x70, 0x05, 0xc3,
        ];
        let p = place(&f, IP, Mode::Auto, &none(), 6);
        assert_eq!((p.offset, p.emulated), (0, false), "{p}");
        assert!(
            matches!(&p.why, Why::Kept(r) if r.contains("mul rdx")),
            "{p}"
        );
        // A load into an argument register keeps the entry too (mimalloc's mi_malloc:
        // mov rax,[rip+..]; mov rsi,rdi; ...).
        let f = [
            0x48, 0x8b, 0x05, 0, 0, 0, 0, 0x48, 0x89, 0xfe, 0x75, 0x05, 0xc3,
        ];
        let p = place(&f, IP, Mode::Auto, &none(), 6);
        assert!(
            matches!(&p.why, Why::Kept(r) if r.contains("mov rsi,rdi")),
            "{p}"
        );
    }

    /// jemalloc 5.3's free: its fast path's lookup computed from `rdi` into `rax`, `rcx`
    /// and `rdx`, then `jne` (+0x30). free's program reads `rdi` alone: the probe moves to the
    /// `jne`; a program reading three arguments would see `rdx` changed, so it stays.
    #[test]
    fn placement_jemalloc_free_goes_past_its_lookup_for_a_one_argument_program() {
        let mut f = vec![
            0x48, 0x89, 0xf8, // mov rax,rdi
            0x48, 0x8b, 0x15, 0x0e, 0x53, 0x0a, 0x00, // mov rdx,[rip+..]
            0x48, 0x89, 0xf9, // mov rcx,rdi
            0x48, 0xc1, 0xe8, 0x1a, // shr rax,0x1a
            0x48, 0x81, 0xe1, 0x00, 0x00, 0x00, 0xc0, // and rcx,..
            0x25, 0xf0, 0x00, 0x00, 0x00, // and eax,0xf0
            0x64, 0x48, 0x03, 0x04, 0x25, 0, 0, 0, 0, // add rax,fs:0
            0x48, 0x01, 0xd0, // add rax,rdx
            0x48, 0x3b, 0x88, 0xb0, 0x01, 0x00, 0x00, // cmp rcx,[rax+0x1b0]
            0x0f, 0x85, 0x8a, 0x00, 0x00, 0x00, // jne
        ];
        f.resize(0xd0, 0x90);
        f.push(0xc3);
        let p = place(&f, IP, Mode::Auto, &none(), 1);
        assert_eq!((p.offset, p.emulated), (0x30, true), "{p}");
        let p = place(&f, IP, Mode::Auto, &none(), 3);
        assert_eq!(p.offset, 0, "{p}");
        assert!(
            matches!(&p.why, Why::Kept(r) if r.contains("mov rdx")),
            "{p}"
        );
    }

    #[test]
    fn placement_tcmalloc_malloc_goes_past_its_global_load() {
        // tcmalloc 2.10's tc_malloc: mov rax,[rip+..]; test rax,rax; jne +0x81; ...
        let mut f = vec![
            0x48, 0x8b, 0x05, 0x59, 0xab, 0, 0, // mov rax,[rip+0xab59]
            0x48, 0x85, 0xc0, // test rax,rax
            0x75, 0x75, // jne +0x81
        ];
        f.resize(0x81, 0x90);
        f.push(0xc3);
        let p = place(&f, IP, Mode::Auto, &none(), 6);
        assert_eq!((p.offset, p.emulated), (10, true), "{p}");
        assert!(p.probed.starts_with("jne"), "{p}");
    }

    #[test]
    fn placement_kernel_emulation_rules() {
        let cases: &[(&[u8], bool)] = &[
            (&[0x55], true),                                         // push rbp
            (&[0x41, 0x57], true),                                   // push r15
            (&[0x66, 0x55], false),                                  // push bp (16-bit)
            (&[0xe8, 0, 0, 0, 0], true),                             // call rel32
            (&[0xeb, 0x00], true),                                   // jmp rel8
            (&[0x74, 0x00], true),                                   // je rel8
            (&[0x0f, 0x85, 0, 0, 0, 0], true),                       // jne rel32
            (&[0x66, 0x0f, 0x1f, 0x44, 0, 0], true),                 // nopw 6 (x86_nops[6])
            (&[0x0f, 0x1f, 0x44, 0, 0], true),                       // nopl 5
            (&[0x66, 0x2e, 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0], false), // cs nopw 10
            (&[0xf3, 0x0f, 0x1e, 0xfa], false),                      // endbr64
            (&[0x48, 0x85, 0xff], false),                            // test rdi,rdi
            (&[0x41, 0x90], false),                                  // xchg r8,rax
            (&[0xff, 0xe0], false),                                  // jmp rax
            (&[0xc3], false),                                        // ret
        ];
        for (bytes, want) in cases {
            let i = decode_one(bytes, IP).unwrap();
            assert_eq!(i.len(), bytes.len(), "{bytes:02x?}");
            assert_eq!(
                kernel_emulates(&i, bytes),
                *want,
                "{bytes:02x?} `{}`",
                text(&i)
            );
        }
    }

    #[test]
    fn placement_mode_parses() {
        assert_eq!(Mode::parse("entry"), Ok(Mode::Entry));
        assert_eq!(Mode::parse("auto"), Ok(Mode::Auto));
        assert!(Mode::parse("middle").is_err());
    }
}
