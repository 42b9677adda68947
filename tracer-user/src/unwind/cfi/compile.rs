//! A binary's CFI compiled into the kernel's rows: every FDE of `.eh_frame` (and of
//! `.debug_frame`, for the code `.eh_frame` does not cover) evaluated with gimli, each row
//! reduced (`rules`), its address turned into the file offset its `PT_LOAD` maps it from,
//! the gaps between FDEs marked, and consecutive equal rules merged.
use std::time::{Duration, Instant};

use alloctrace_common::unwind_table::{row, Rule};
use gimli::{
    BaseAddresses, CieOrFde, DebugFrame, EhFrame, LittleEndian, UnwindContext, UnwindSection,
};
use object::{Object, ObjectSection, ObjectSegment};

type Slice<'a> = gimli::EndianSlice<'a, LittleEndian>;

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("not an ELF file alloctrace can read: {0}")]
    Elf(#[from] object::Error),
    #[error("malformed CFI: {0}")]
    Cfi(#[from] gimli::Error),
    #[error("no CFI (.eh_frame or .debug_frame)")]
    NoCfi,
}

/// A binary's rows, sorted by file offset (see `alloctrace_common::unwind_table`).
#[derive(Debug)]
pub struct Table {
    pub rows: Vec<u64>,
    /// FDEs read.
    pub fdes: usize,
    pub took: Duration,
}

/// An address range's rule, before it is placed in the file.
struct Span {
    start: u64,
    /// Gap markers (an FDE's end) sort before a rule starting at the same address.
    is_rule: bool,
    rule: Rule,
}

/// Compiles the CFI of the ELF file `data`.
pub fn compile(data: &[u8]) -> Result<Table, CompileError> {
    let t = Instant::now();
    let elf = object::File::parse(data)?;
    let mut spans = Vec::new();
    let mut fdes = 0;
    let mut covered: Vec<(u64, u64)> = Vec::new();
    let mut found = false;
    if let Some(s) = elf.section_by_name(".eh_frame") {
        found = true;
        let mut bases = BaseAddresses::default().set_eh_frame(s.address());
        if let Some(h) = elf.section_by_name(".eh_frame_hdr") {
            bases = bases.set_eh_frame_hdr(h.address());
        }
        if let Some(text) = elf.section_by_name(".text") {
            bases = bases.set_text(text.address());
        }
        if let Some(got) = elf.section_by_name(".got") {
            bases = bases.set_got(got.address());
        }
        let section = EhFrame::new(s.data()?, LittleEndian);
        fdes += walk(&section, &bases, &mut spans, &mut covered, &[])?;
    }
    if let Some(s) = elf.section_by_name(".debug_frame") {
        found = true;
        let mut section = DebugFrame::new(s.data()?, LittleEndian);
        section.set_address_size(8);
        let skip = std::mem::take(&mut covered);
        fdes += walk(
            &section,
            &BaseAddresses::default(),
            &mut spans,
            &mut covered,
            &skip,
        )?;
    }
    if !found {
        return Err(CompileError::NoCfi);
    }
    // Each address's last word wins: a rule over the gap marker of an FDE ending there.
    spans.sort_by_key(|s| (s.start, s.is_rule));
    let loads: Vec<(u64, u64, u64)> = elf
        .segments()
        .filter_map(|s| {
            let (off, size) = s.file_range();
            Some((s.address(), size, off)).filter(|_| size > 0)
        })
        .collect();
    let mut rows: Vec<u64> = Vec::with_capacity(spans.len());
    let mut last: Option<(u32, u32)> = None;
    for (i, s) in spans.iter().enumerate() {
        if spans.get(i + 1).is_some_and(|n| n.start == s.start) {
            continue;
        }
        let Some(off) = file_offset(&loads, s.start) else {
            continue;
        };
        let Ok(off) = u32::try_from(off) else {
            continue;
        };
        let packed = s.rule.pack().unwrap_or(0);
        if last.is_some_and(|(_, r)| r == packed) {
            continue;
        }
        rows.push(row(off, packed));
        last = Some((off, packed));
    }
    // A leading gap row says nothing a missing row does not.
    while rows.first().is_some_and(|r| *r as u32 == 0) {
        rows.remove(0);
    }
    Ok(Table {
        rows,
        fdes,
        took: t.elapsed(),
    })
}

/// Evaluates every FDE of `section` whose start is not in `skip` into `spans`, recording the
/// ranges covered; returns how many FDEs it read.
fn walk<'a, S: UnwindSection<Slice<'a>>>(
    section: &S,
    bases: &BaseAddresses,
    spans: &mut Vec<Span>,
    covered: &mut Vec<(u64, u64)>,
    skip: &[(u64, u64)],
) -> Result<usize, gimli::Error> {
    let mut ctx = Box::new(UnwindContext::new());
    let mut entries = section.entries(bases);
    let mut n = 0;
    while let Some(entry) = entries.next()? {
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        // One bad FDE costs its function's rows, not the binary's.
        let Ok(fde) = partial.parse(|s, b, o| s.cie_from_offset(b, o)) else {
            continue;
        };
        let (start, end) = (fde.initial_address(), fde.end_address());
        if start == 0 || start >= end || skip.iter().any(|&(a, b)| a <= start && start < b) {
            continue;
        }
        n += 1;
        covered.push((start, end));
        let Ok(mut table) = fde.rows(section, bases, &mut ctx) else {
            continue;
        };
        while let Ok(Some(r)) = table.next_row() {
            spans.push(Span {
                start: r.start_address(),
                is_rule: true,
                rule: super::rules::reduce(r, section),
            });
        }
        spans.push(Span {
            start: end,
            is_rule: false,
            rule: Rule::NONE,
        });
    }
    Ok(n)
}

/// The file offset of virtual address `addr`, through the `PT_LOAD` (address, file size,
/// offset) that maps it from the file.
fn file_offset(loads: &[(u64, u64, u64)], addr: u64) -> Option<u64> {
    loads
        .iter()
        .find(|&&(va, size, _)| va <= addr && addr - va <= size)
        .map(|&(va, _, off)| addr - va + off)
}

/// The rule in force at file offset `off` (what the kernel's binary search finds).
#[cfg(test)]
pub fn rule_at(rows: &[u64], off: u32) -> Option<Rule> {
    let i = rows.partition_point(|&r| r <= alloctrace_common::unwind_table::row_bound(off));
    i.checked_sub(1).map(|i| Rule::unpack(rows[i] as u32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloctrace_common::unwind_table::{CFA_END, CFA_RSP, RBP_SAME};
    use object::ObjectSymbol;

    /// Builds `src` with gcc -O2 -fomit-frame-pointer; returns the binary's bytes.
    fn build_c(name: &str, src: &str) -> Vec<u8> {
        let dir =
            std::env::temp_dir().join(format!("alloctrace-cfi-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let c = dir.join("t.c");
        std::fs::write(&c, src).unwrap();
        let out = dir.join("t");
        let st = std::process::Command::new("cc")
            .args(["-O2", "-fomit-frame-pointer", "-o"])
            .arg(&out)
            .arg(&c)
            .status()
            .expect("cc runs");
        assert!(st.success());
        let data = std::fs::read(&out).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        data
    }

    /// The file offset of symbol `name` in `data`.
    fn symbol_offset(data: &[u8], name: &str) -> u32 {
        let elf = object::File::parse(data).unwrap();
        let sym = elf.symbols().find(|s| s.name() == Ok(name)).unwrap();
        let loads: Vec<(u64, u64, u64)> = elf
            .segments()
            .map(|s| (s.address(), s.file_range().1, s.file_range().0))
            .collect();
        file_offset(&loads, sym.address()).unwrap() as u32
    }

    const SRC: &str = r#"
        #include <stdlib.h>
        __attribute__((noinline)) void *leaf(long n) { return malloc(n); }
        __attribute__((noinline)) long busy(long a, long b, long c) {
            long x = a * 3, y = b * 5, z = c * 7;
            void *p = leaf(a); free(p);
            p = leaf(b); free(p);
            return x + y + z + (long)p;
        }
        int main(int argc, char **argv) { return (int)busy(argc, argc + 1, argc + 2); }
    "#;

    #[test]
    fn a_binary_without_frame_pointers_gets_its_functions_rules() {
        let data = build_c("fp", SRC);
        let t = compile(&data).unwrap();
        assert!(t.fdes >= 3, "{t:?}");
        assert!(
            t.rows.windows(2).all(|w| w[0] >> 32 < w[1] >> 32),
            "sorted, one per offset"
        );
        assert!(
            t.rows.windows(2).all(|w| w[0] as u32 != w[1] as u32),
            "equal neighbours merged"
        );
        // At a function's first instruction the CFA is rsp + 8 (the return address).
        let at_entry = rule_at(&t.rows, symbol_offset(&data, "busy")).unwrap();
        assert_eq!(
            (at_entry.cfa, at_entry.cfa_offset, at_entry.rbp),
            (CFA_RSP, 8, RBP_SAME)
        );
        // busy keeps values live across its calls: it pushes callee-saved registers, so
        // somewhere inside it the CFA is further from rsp.
        let busy = symbol_offset(&data, "busy");
        assert!(
            (busy..busy + 64).any(|o| rule_at(&t.rows, o).is_some_and(|r| r.cfa_offset > 8)),
            "no row of busy moves the CFA"
        );
        // _start marks the thread's outermost frame.
        let start = rule_at(&t.rows, symbol_offset(&data, "_start") + 4).unwrap();
        assert_eq!(start.cfa, CFA_END);
    }

    #[test]
    fn glibcs_signal_frame_is_recognized() {
        let data = std::fs::read("/lib/x86_64-linux-gnu/libc.so.6").expect("glibc");
        let t = compile(&data).unwrap();
        // __restore_rt (not in the stripped library's symbols): one range, from the nop
        // before it (the walk looks up the byte before a return address).
        let signal: Vec<Rule> = t
            .rows
            .iter()
            .map(|&r| Rule::unpack(r as u32))
            .filter(|r| r.cfa == alloctrace_common::unwind_table::CFA_SIGNAL)
            .collect();
        assert_eq!(signal.len(), 1, "{signal:?}");
        assert_eq!(signal[0].cfa_offset, 160);
    }

    #[test]
    fn pythons_tables_are_compiled() {
        let data = std::fs::read("/usr/bin/python3").expect("Debian's python3 is installed");
        let t = compile(&data).unwrap();
        eprintln!(
            "python3: {} bytes, {} FDEs, {} rows ({} KiB) in {:.1} ms",
            data.len(),
            t.fdes,
            t.rows.len(),
            t.rows.len() * 8 / 1024,
            t.took.as_secs_f64() * 1e3
        );
        assert!(
            t.fdes > 1000 && t.rows.len() > t.fdes,
            "{} rows",
            t.rows.len()
        );
        let known = t
            .rows
            .iter()
            .filter(|&&r| Rule::unpack(r as u32).cfa != 0)
            .count();
        assert!(
            known * 10 > t.rows.len() * 9,
            "{known} of {} rows have a rule",
            t.rows.len()
        );
    }
}
