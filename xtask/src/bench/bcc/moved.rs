//! A copy of memleak whose free uprobe is where alloctrace's placement puts it, checked with
//! `bpftool perf`.
use std::{fs, os::unix::fs::PermissionsExt, path::Path};

use super::attach::{memleak_attach, multiset_diff, Memleak};

/// BCC 0.26 memleak's attach call for free (at its entry): what the moved copy changes.
const FREE_ATTACH: &str = r#"sym="free", fn_name="free_enter","#;

/// alloctrace's placement line for free (`free +3 ...`) and its offset.
fn free_placement(placements: &[String]) -> Option<(&str, u64)> {
    placements.iter().find_map(|p| {
        let rest = p.strip_prefix("free +")?;
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        Some((p.as_str(), rest[..digits].parse().ok()?))
    })
}

/// BCC memleak with its free uprobe at alloctrace's placement for free, free+N (Debian 12's
/// glibc: +3, the emulated `je` past `test rdi,rdi`, which the kernel would single-step): a
/// copy of the stock script, in `scratch`, whose free attach call gets BCC's `sym_off=N`
/// (memleak reads the pointer from rdi, which the `test` leaves as it is). Checked with
/// `bpftool perf`: the copy's uprobes must be the stock script's (`stock_probes`) with exactly
/// one moved, by N. Returns the copy and the note for the results.
pub(super) fn moved_memleak(
    stock: &Path,
    bpftool: &Path,
    scratch: &Path,
    placements: &[String],
    stock_probes: &[u64],
) -> std::result::Result<(Memleak, String), String> {
    let (placement, off) =
        free_placement(placements).ok_or("alloctrace -v printed no `free +N` placement")?;
    if off == 0 {
        return Err(format!(
            "alloctrace probes free at its entry on this libc, as memleak does ({placement}): \
             nothing to move"
        ));
    }
    let text =
        fs::read_to_string(stock).map_err(|e| format!("cannot read {}: {e}", stock.display()))?;
    let found = text.matches(FREE_ATTACH).count();
    if found != 1 {
        return Err(format!(
            "{} has {found} `{FREE_ATTACH}` where BCC 0.26's has one, its free attach call: \
             not rewritten (and not run unmodified under this name)",
            stock.display()
        ));
    }
    let moved = scratch.join("memleak-free-moved");
    let rewritten = text.replacen(
        FREE_ATTACH,
        &format!(r#"sym="free", sym_off={off}, fn_name="free_enter","#),
        1,
    );
    fs::write(&moved, rewritten).map_err(|e| format!("cannot write {}: {e}", moved.display()))?;
    fs::set_permissions(&moved, fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("cannot make {} executable: {e}", moved.display()))?;
    let probes = memleak_attach(&moved, bpftool, scratch).map_err(|(_, why)| {
        format!(
            "the rewritten copy {} did not attach: {why}",
            moved.display()
        )
    })?;
    let (gone, new) = multiset_diff(stock_probes, &probes);
    match (gone.as_slice(), new.as_slice()) {
        ([s], [m]) if *m == s + off => {
            eprintln!(
                "xtask: bench: BCC memleak (free moved): free's uprobe at {m:#x}, the stock \
                 script's at {s:#x}"
            );
            let note = format!(
                "BCC memleak (free moved): {} copied at bench time to {} with `sym_off={off}` on \
                 its free attach call, so its free uprobe is at free+{off} (alloctrace's \
                 placement: {placement}); `bpftool perf` showed it at file offset {m:#x} where \
                 the stock script's is at {s:#x}, and its {} other probes where the stock \
                 script's are",
                stock.display(),
                moved.display(),
                probes.len() - 1
            );
            Ok((
                Memleak {
                    script: moved,
                    probes,
                },
                note,
            ))
        }
        _ => Err(format!(
            "`bpftool perf` does not show the copy's uprobes as the stock script's with one \
             moved by {off} (only the stock script's: {gone:x?}; only the copy's: {new:x?})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_placement_and_moved_probe() {
        let placements = vec![
            "malloc +0 `push r12` (emulated: first instruction)".to_string(),
            "free +3 `je 98FB8h` (emulated), past `test rdi,rdi`".to_string(),
        ];
        assert_eq!(free_placement(&placements).map(|(_, o)| o), Some(3));
        let stock = [0x98930, 0x996e0, 0x99650, 0x99650, 0x98ef0];
        let moved = [0x98930, 0x99650, 0x996e0, 0x98ef3, 0x99650];
        assert_eq!(
            multiset_diff(&stock, &moved),
            (vec![0x98ef0], vec![0x98ef3])
        );
    }
}
