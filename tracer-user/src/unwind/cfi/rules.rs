//! One row of a binary's CFI (gimli's evaluated `UnwindTableRow`) reduced to the few rule
//! kinds x86-64 code uses and the kernel's walk knows (`alloctrace_common::unwind_table`):
//! the CFA as rsp or rbp plus an offset, the PLT's expression, the thread's outermost frame
//! (return address undefined), and where the caller's rbp was saved. Anything else becomes
//! `Rule::NONE`: the kernel falls back to frame pointers there.
use alloctrace_common::unwind_table::{
    Rule, CFA_END, CFA_NONE, CFA_PLT, CFA_RBP, CFA_RSP, CFA_SIGNAL, MAX_CFA_OFFSET, MAX_RBP_WORDS,
    RBP_AT_CFA, RBP_SAME, SIGNAL_RBP_BELOW_RSP,
};
use gimli::{CfaRule, Reader, RegisterRule, UnwindSection, UnwindTableRow, X86_64};

/// The rule of `row`; `section` resolves its expressions.
pub fn reduce<R: Reader, S: UnwindSection<R>>(
    row: &UnwindTableRow<R::Offset>,
    section: &S,
) -> Rule {
    if matches!(row.register(X86_64::RA), Some(RegisterRule::Undefined)) {
        return Rule {
            cfa: CFA_END,
            ..Rule::NONE
        };
    }
    let (cfa, cfa_offset) = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => {
            let kind = match *register {
                X86_64::RSP => CFA_RSP,
                X86_64::RBP => CFA_RBP,
                _ => return Rule::NONE,
            };
            match u32::try_from(*offset) {
                Ok(o) if o <= MAX_CFA_OFFSET => (kind, o),
                _ => return Rule::NONE,
            }
        }
        CfaRule::Expression(e) => {
            let Ok(e) = e.get(section) else {
                return Rule::NONE;
            };
            if let Some(t) = plt_threshold(e.0.clone()) {
                (CFA_PLT, t)
            } else if let Some(off) = signal_frame(row, section, e.0) {
                return Rule {
                    cfa: CFA_SIGNAL,
                    cfa_offset: off,
                    ..Rule::NONE
                };
            } else {
                return Rule::NONE;
            }
        }
    };
    // The return address is at CFA - 8 on x86-64 (the call pushed it); a row that says
    // otherwise is one the walk cannot follow.
    match row.register(X86_64::RA) {
        None | Some(RegisterRule::Offset(-8)) => {}
        Some(_) => return Rule::NONE,
    }
    let (rbp, rbp_words) = match row.register(X86_64::RBP) {
        Some(RegisterRule::Offset(k)) if k < 0 && k % 8 == 0 && -k / 8 <= MAX_RBP_WORDS as i64 => {
            (RBP_AT_CFA, (-k / 8) as u32)
        }
        None | Some(RegisterRule::SameValue) | Some(RegisterRule::Undefined) => (RBP_SAME, 0),
        // Kept in another register or computed: unknown to the walk. Its CFA is still right;
        // only a caller whose CFA is rbp-based would go wrong, and the walk checks every
        // frame it keeps against the process's code.
        Some(_) => (RBP_SAME, 0),
    };
    debug_assert!(cfa != CFA_NONE);
    Rule {
        cfa,
        cfa_offset,
        rbp,
        rbp_words,
    }
}

/// The threshold of the PLT's CFA expression (the one GNU ld writes for `.plt` and
/// `.plt.sec`): `rsp + 8 + ((rip & 15) >= T) << 3`; None for any other expression.
fn plt_threshold<R: Reader>(mut e: R) -> Option<u32> {
    let mut b = [0u8; 11];
    use gimli::ReaderOffset;
    if e.len().into_u64() != b.len() as u64 || e.read_slice(&mut b).is_err() {
        return None;
    }
    // DW_OP_breg7 8, DW_OP_breg16 0, DW_OP_lit15, DW_OP_and, DW_OP_litT, DW_OP_ge,
    // DW_OP_lit3, DW_OP_shl, DW_OP_plus.
    let pattern = [0x77, 8, 0x80, 0, 0x3f, 0x1a, 0, 0x2a, 0x33, 0x24, 0x22];
    let lit = b[6];
    b[6] = 0;
    (b == pattern && (0x30..=0x4f).contains(&lit)).then(|| (lit - 0x30) as u32)
}

/// The rsp-slot offset N of a signal frame (glibc's `__restore_rt`: CFA = `[rsp + N]`, rip
/// saved at `rsp + N + 8`, rbp at `rsp + N - 40`), None for any other rule.
fn signal_frame<R: Reader, S: UnwindSection<R>>(
    row: &UnwindTableRow<R::Offset>,
    section: &S,
    cfa: R,
) -> Option<u32> {
    let off = breg7(cfa, true)?;
    let saved = |reg| match row.register(reg) {
        Some(RegisterRule::Expression(e)) => e.get(section).ok().and_then(|e| breg7(e.0, false)),
        _ => None,
    };
    (saved(X86_64::RA) == Some(off + 8) && saved(X86_64::RBP) == Some(off - SIGNAL_RBP_BELOW_RSP))
        .then_some(off)
}

/// N of the expression `DW_OP_breg7 N` (with `deref`, `DW_OP_breg7 N; DW_OP_deref`).
fn breg7<R: Reader>(mut e: R, deref: bool) -> Option<u32> {
    if e.read_u8().ok()? != 0x77 {
        return None;
    }
    let n = u32::try_from(e.read_sleb128().ok()?).ok()?;
    if deref && e.read_u8().ok()? != 0x06 {
        return None;
    }
    (e.is_empty() && (SIGNAL_RBP_BELOW_RSP..=MAX_CFA_OFFSET).contains(&n)).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gimli::{EndianSlice, LittleEndian};

    #[test]
    fn the_plt_expression_is_recognized_and_others_are_not() {
        let plt = [0x77, 8, 0x80, 0, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22];
        assert_eq!(
            plt_threshold(EndianSlice::new(&plt, LittleEndian)),
            Some(11)
        );
        let mut other = plt;
        other[0] = 0x76;
        assert_eq!(plt_threshold(EndianSlice::new(&other, LittleEndian)), None);
        assert_eq!(
            plt_threshold(EndianSlice::new(&plt[..5], LittleEndian)),
            None
        );
    }
}
