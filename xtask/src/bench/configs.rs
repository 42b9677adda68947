//! What the bench compares: its options, every configuration (a tracer and how it is set up),
//! and the bpftrace script that stands in for BCC memleak's hot path.
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use clap::Args;

#[derive(Debug, Args)]
pub struct BenchOpts {
    /// Loop iterations of each workload (two allocator calls, two events, each).
    #[arg(long, default_value_t = 100_000)]
    pub iterations: u64,
    /// Rounds: every configuration runs once per round (medians and spread over the rounds).
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Only this workload (a file stem of bench/workloads/*.c); repeatable. All by default.
    #[arg(long = "workload", value_name = "NAME")]
    pub workloads: Vec<String>,
    /// Leave bpftrace out even when it is installed.
    #[arg(long)]
    pub no_bpftrace: bool,
    /// Only this allocator in the per-allocator section (glibc, jemalloc, tcmalloc, mimalloc,
    /// musl); repeatable. All by default.
    #[arg(long = "allocator", value_name = "NAME")]
    pub allocators: Vec<String>,
    /// Run only the per-allocator section (churn.c with each allocator, untraced and traced);
    /// its results go to target/bench/RESULTS-allocators.md unless --output says otherwise.
    #[arg(long)]
    pub allocators_only: bool,
    /// Run only the start-up section (`alloctrace -- /bin/true` against `heaptrack /bin/true`,
    /// --pid and system-wide start and end); its results go to bench/RESULTS-startup.md
    /// unless --output says otherwise.
    #[arg(long)]
    pub startup_only: bool,
    /// Run only the Go section (bench/go/churn: alloctrace against Go's own MemProfileRate = 1
    /// and default-rate profiling, 10 × --iterations loop iterations); its results go to
    /// bench/RESULTS-go.md unless --output says otherwise.
    #[arg(long)]
    pub go_only: bool,

    /// Run only the unwinding section (a no-frame-pointer call chain under the floor,
    /// `--unwind fp` and `--unwind dwarf`); its results go to bench/RESULTS-unwinding.md
    /// unless --output says otherwise.
    #[arg(long)]
    pub unwinding_only: bool,
    /// Another alloctrace binary (the build before a change) measured in the start-up
    /// section's rounds too, side by side.
    #[arg(long, value_name = "FILE")]
    pub startup_baseline: Option<PathBuf>,
    /// Where to write the results (default bench/RESULTS.md).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tracer {
    None,
    /// `args`: extra options (the mode, sampling).
    Alloctrace {
        entry: bool,
        floor: bool,
        args: &'static [&'static str],
    },
    Bpftrace,
    /// heaptrack (LD_PRELOAD; must launch the program), if installed.
    Heaptrack,
    /// BCC's memleak (`memleak-bpfcc -p PID 1`), if installed and able to compile its program:
    /// attached to the waiting workload (BENCH_WAIT), which is released once memleak has
    /// attached. `moved`: the copy whose free uprobe is at alloctrace's placement for free.
    Memleak {
        moved: bool,
    },
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Config {
    pub(super) name: &'static str,
    pub(super) tracer: Tracer,
    /// The configuration this one's cost is compared with (`× floor`).
    pub(super) floor: Option<&'static str>,
}

const ALLOC_ONLY: &[&str] = &["--mode", "alloc-only"];
const SAMPLED: &[&str] = &["--mode", "alloc-only", "--sample-bytes", "524288"];
const FULL_SAMPLED: &[&str] = &["--sample-bytes", "524288"];
/// Following forks, the programs ask the kernel for each call's tgid (the probes may fire in
/// several processes) instead of taking the target's from the loader.
const FOLLOW: &[&str] = &["--follow-forks"];

pub(super) const CONFIGS: &[Config] = &[
    Config {
        name: "untraced",
        tracer: Tracer::None,
        floor: None,
    },
    Config {
        name: "floor (placed)",
        tracer: Tracer::Alloctrace {
            entry: false,
            floor: true,
            args: &[],
        },
        floor: None,
    },
    Config {
        name: "floor (entry)",
        tracer: Tracer::Alloctrace {
            entry: true,
            floor: true,
            args: &[],
        },
        floor: None,
    },
    Config {
        name: "alloctrace (placed)",
        tracer: Tracer::Alloctrace {
            entry: false,
            floor: false,
            args: &[],
        },
        floor: Some("floor (placed)"),
    },
    Config {
        name: "alloctrace (entry)",
        tracer: Tracer::Alloctrace {
            entry: true,
            floor: false,
            args: &[],
        },
        floor: Some("floor (entry)"),
    },
    Config {
        name: "alloctrace --follow-forks",
        tracer: Tracer::Alloctrace {
            entry: false,
            floor: false,
            args: FOLLOW,
        },
        floor: Some("floor (placed)"),
    },
    Config {
        name: "full --sample-bytes 512K",
        tracer: Tracer::Alloctrace {
            entry: false,
            floor: false,
            args: FULL_SAMPLED,
        },
        floor: Some("floor (placed)"),
    },
    Config {
        name: "floor alloc-only",
        tracer: Tracer::Alloctrace {
            entry: false,
            floor: true,
            args: ALLOC_ONLY,
        },
        floor: None,
    },
    Config {
        name: "alloctrace alloc-only",
        tracer: Tracer::Alloctrace {
            entry: false,
            floor: false,
            args: ALLOC_ONLY,
        },
        floor: Some("floor alloc-only"),
    },
    Config {
        name: "alloc-only --sample-bytes 512K",
        tracer: Tracer::Alloctrace {
            entry: false,
            floor: false,
            args: SAMPLED,
        },
        floor: Some("floor alloc-only"),
    },
    Config {
        name: "bpftrace memleak-like",
        tracer: Tracer::Bpftrace,
        floor: None,
    },
    Config {
        name: "heaptrack",
        tracer: Tracer::Heaptrack,
        floor: None,
    },
    Config {
        name: "BCC memleak",
        tracer: Tracer::Memleak { moved: false },
        floor: None,
    },
    Config {
        name: "BCC memleak (free moved)",
        tracer: Tracer::Memleak { moved: true },
        floor: None,
    },
];

/// The bpftrace script: BCC memleak's hot path (entry: size; return: address -> size, count and
/// bytes per user stack; free: forget the address), on the allocator functions memleak probes.
/// mmap and munmap, which memleak probes too, are left out: the workloads reach them only
/// when glibc maps a large block (phases' 1 MiB ones) or a thread's arena, a few times per run.
pub(super) fn bpftrace_script(libc: &Path) -> String {
    let l = libc.display();
    // Each entry as memleak's `*_enter`: the size from the argument that holds it. realloc
    // forgets its old address first, as memleak's `realloc_enter` does (even when realloc then
    // fails and the old block lives on); its return records the new block like malloc's.
    //
    // `guarded`: in glibc, another probed function can run inside the call or at the same
    // address (realloc(NULL, n) and memalign with a small alignment call malloc; before 2.38
    // aligned_alloc and memalign are one function) and its return takes the size first. Then
    // memleak's return finds no size and does nothing ("missed alloc entry"), and so does this
    // one rather than count the block twice. bpftrace 0.17 has no has_key(), so a size of 0
    // reads as missing too. Nothing nests inside malloc. posix_memalign (below) keeps the form
    // it had: it calls malloc only for an alignment of 16 or less, which no workload asks for.
    let entries = [
        ("malloc", "@size[tid] = arg0;", false),
        ("calloc", "@size[tid] = arg0 * arg1;", false),
        ("realloc", "delete(@addr[arg0]); @size[tid] = arg1;", true),
        ("aligned_alloc", "@size[tid] = arg1;", true),
        ("memalign", "@size[tid] = arg1;", true),
        ("valloc", "@size[tid] = arg0;", false),
        ("pvalloc", "@size[tid] = arg0;", false),
    ];
    let mut s = String::new();
    for (f, entry, guarded) in entries {
        let guard = if guarded { " && @size[tid]" } else { "" };
        let _ = write!(
            s,
            r#"uprobe:{l}:{f} /pid == cpid/ {{ {entry} }}
uretprobe:{l}:{f} /pid == cpid{guard}/ {{
  @addr[retval] = @size[tid]; @allocs[ustack] = count(); @bytes[ustack] = sum(@size[tid]);
  delete(@size[tid]);
}}
"#
        );
    }
    let _ = write!(
        s,
        r#"uprobe:{l}:posix_memalign /pid == cpid/ {{ @size[tid] = arg2; @memptr[tid] = arg0; }}
uretprobe:{l}:posix_memalign /pid == cpid/ {{
  $p = *(uint64 *)@memptr[tid];
  @addr[$p] = @size[tid]; @allocs[ustack] = count(); @bytes[ustack] = sum(@size[tid]);
  delete(@size[tid]); delete(@memptr[tid]);
}}
uprobe:{l}:free /pid == cpid/ {{ delete(@addr[arg0]); }}
END {{ clear(@addr); clear(@size); clear(@memptr); }}
"#
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpftrace_script_probes_what_memleak_does() {
        let script = bpftrace_script(Path::new("/libc.so.6"));
        let probed = |kind: &str| -> Vec<String> {
            let mut v: Vec<String> = script
                .lines()
                .filter_map(|l| l.strip_prefix(kind)?.strip_prefix("/libc.so.6:"))
                .map(|r| r.split_whitespace().next().unwrap_or("").to_string())
                .collect();
            v.sort();
            v
        };
        // BCC 0.26 memleak's attach_probes() calls, less mmap (and munmap, attached beside free).
        let allocs = [
            "aligned_alloc",
            "calloc",
            "malloc",
            "memalign",
            "posix_memalign",
            "pvalloc",
            "realloc",
            "valloc",
        ];
        assert_eq!(probed("uretprobe:"), allocs);
        let mut entries = allocs.to_vec();
        entries.push("free");
        entries.sort();
        assert_eq!(probed("uprobe:"), entries);
        assert!(script.contains(
            "uprobe:/libc.so.6:realloc /pid == cpid/ { delete(@addr[arg0]); @size[tid] = arg1; }"
        ));
        assert!(script.contains("uretprobe:/libc.so.6:realloc /pid == cpid && @size[tid]/ {"));
        assert!(script.contains("uretprobe:/libc.so.6:malloc /pid == cpid/ {"));
    }
}
