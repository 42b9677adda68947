//! Reads the frames of the sites a drain reports from the kernel's stack map, each kept at its
//! own depth: a map entry holds `MAX_FRAMES` (127) slots, most stacks a few dozen.
use std::collections::{HashMap as StdHashMap, HashSet};
use std::os::fd::AsFd;

use alloctrace_common::{self as abi, StackKey, StackTrace};
use aya::maps::{HashMap, IterableMap, MapData};

use crate::kmaps::map_batch;

/// A stack's frames, innermost first, and why it ends there (`abi::stack_cut`).
pub type Frames = (Vec<u64>, u32);

/// The frames of the stacks in `want` that the map holds. Streamed a batch at a time, so the
/// map's 1 KiB entries are never all copied at once (17 MiB for a full map at the default
/// `--max-stacks`), only the frames of the stacks asked for.
pub fn read(
    stacks: &HashMap<MapData, StackKey, StackTrace>,
    want: &HashSet<StackKey>,
) -> StdHashMap<StackKey, Frames> {
    let mut out = StdHashMap::new();
    let kept = map_batch::for_each_batch::<StackKey, StackTrace>(
        stacks.map().fd().as_fd(),
        |keys, values| {
            for (k, st) in keys.iter().zip(values) {
                if want.contains(k) {
                    out.insert(*k, frames(st));
                }
            }
        },
    );
    if let Err(e) = kept {
        log::debug!("batched map read refused ({e}): reading entry by entry");
        out.clear();
        for k in want {
            if let Ok(st) = stacks.get(k, 0) {
                out.insert(*k, frames(&st));
            }
        }
    }
    out
}

/// The frames `st` holds: its first `len`, never past the array.
fn frames(st: &StackTrace) -> Frames {
    (
        st.ips[..(st.len as usize).min(abi::MAX_FRAMES)].to_vec(),
        st.cut,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(len: u32, cut: u32) -> StackTrace {
        let mut ips = [0u64; abi::MAX_FRAMES];
        for (i, ip) in ips.iter_mut().enumerate() {
            *ip = 0x1000 + i as u64;
        }
        StackTrace { len, cut, ips }
    }

    #[test]
    fn a_stack_keeps_its_own_depth() {
        let (ips, cut) = frames(&trace(3, abi::stack_cut::NONE));
        assert_eq!(ips, vec![0x1000, 0x1001, 0x1002]);
        assert_eq!(cut, abi::stack_cut::NONE);
    }

    #[test]
    fn the_deepest_stack_is_whole_and_a_bad_length_stops_at_the_array() {
        let (ips, cut) = frames(&trace(abi::MAX_FRAMES as u32, abi::stack_cut::TRUNCATED));
        assert_eq!(ips.len(), abi::MAX_FRAMES);
        assert_eq!(ips.last(), Some(&(0x1000 + abi::MAX_FRAMES as u64 - 1)));
        assert_eq!(cut, abi::stack_cut::TRUNCATED);
        assert_eq!(frames(&trace(u32::MAX, 0)).0.len(), abi::MAX_FRAMES);
    }
}
