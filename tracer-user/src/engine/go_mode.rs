//! The trace mode for Go runtimes: Go frees by garbage collection, not by calls, so a full
//! trace would show every Go allocation as live. A launched or --pid target that runs Go is
//! traced alloc-only; system-wide, full mode leaves Go runtimes out and says so.
use crate::allocator::go;
use crate::model::TraceMode;
use crate::probe;

/// System-wide mode: in full mode, the Go runtimes among `sets` are left out, each said with
/// its file (`when` it was found): Go frees by collection, not by calls, so a full trace would
/// show each of its allocations as live. `--mode alloc-only` traces them.
pub(super) fn skip_go_in_full_mode(
    sets: Vec<probe::ProbeSet>,
    mode: TraceMode,
    when: &str,
) -> Vec<probe::ProbeSet> {
    if mode != TraceMode::Full {
        return sets;
    }
    sets.into_iter()
        .filter(|s| {
            let go = s.found.allocator.name() == go::NAME;
            if go {
                eprintln!(
                    "alloctrace: {} runs Go ({when}): not probed in full mode (Go frees by \
                     garbage collection, so its allocations would all look live); \
                     --mode alloc-only traces it",
                    s.shown
                );
            }
            !go
        })
        .collect()
}

/// The mode a trace runs in: alloc-only when the target runs Go code (Go frees nothing by a
/// call: the collector sweeps, so a full trace would show every Go allocation as live). Said
/// once, as the report says it.
pub(super) fn go_mode(asked: TraceMode, sets: &[probe::ProbeSet]) -> TraceMode {
    let go = sets.iter().any(|s| s.found.allocator.name() == go::NAME);
    if go && asked == TraceMode::Full {
        log::warn!(
            "the target runs Go: allocations only (alloc-only mode); Go frees by garbage \
             collection, not by calls, so no free is seen"
        );
        return TraceMode::AllocOnly;
    }
    asked
}

/// Why a full trace cannot take `sets` on (a program the target executed runs Go): None when
/// it can. The exec's program is then unseen with this reason, not counted as all live.
pub(super) fn refused_in(sets: &[probe::ProbeSet], mode: TraceMode) -> Option<String> {
    let go = sets.iter().find(|s| s.found.allocator.name() == go::NAME)?;
    (mode == TraceMode::Full).then(|| go::refused_in_full_mode(&go.shown))
}
