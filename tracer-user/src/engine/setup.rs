//! A trace's set-up: privilege and kernel checks, the target resolved (launched and held,
//! checked, or every process), the mmap watch, the probes resolved, loaded and attached, the
//! drainer, the symbolizer and the event thread; then the tracing line and the held command
//! released.
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use tokio::sync::watch;

use super::events::{watch_events, EventsCtx};
use super::go_mode;
use super::system::SystemSets;
use super::tasks::{retarget_for, Tasks};
use super::{Engine, Settings};
use crate::config::{Config, TargetSpec};
use crate::drain::series::Series;
use crate::drain::{self, Drainer};
use crate::kmaps::loader::{self, Sizes};
use crate::model::Target;
use crate::probe::{self, children, follow, Scope};
use crate::process::mmap_watch::MmapWatch;
use crate::symbolize::Symbolizer;
use crate::target::{self, allocators_of, launch};
use crate::unwind::cfi::{
    code_maps::CodeMaps,
    feed::{Feed, Running},
    tables::Tables,
};
use crate::unwind::Unwind;

impl Engine {
    /// Sets the trace up and starts it: from here on the target runs traced. To be driven
    /// (`advance`) in a tokio runtime made after this returns: the command is forked before
    /// any thread of ours exists.
    pub fn start(cfg: &Config) -> Result<Engine> {
        // Where start-up time goes (`-v`): each step's end, from alloctrace's start.
        let t0 = Instant::now();
        let mark = |step: &str| {
            log::info!(
                "start-up: {step} at {:.1} ms",
                t0.elapsed().as_secs_f64() * 1e3
            )
        };
        target::check_privileges()?;
        if matches!(cfg.target, TargetSpec::System) {
            target::check_system_wide()?;
        }
        target::check_kernel()?;
        // The thread a --pid target is read and attached through (see check_process): before
        // the maps are made, whose settings depend on whether its main thread is gone.
        let pid_via = match &cfg.target {
            TargetSpec::Pid(pid) => Some(target::check_process(*pid)?),
            _ => None,
        };
        let main_gone = matches!(&cfg.target, TargetSpec::Pid(pid) if pid_via != Some(*pid));
        let sizes = |tgid: Option<u32>| Sizes {
            max_stacks: cfg.max_stacks,
            max_live: cfg.max_live,
            sample_bytes: cfg.sample_bytes.unwrap_or(0),
            unwind_mode: cfg.unwind.kernel_mode(),
            unwind_rows: cfg.unwind_rows,
            code_mappings: match cfg.target {
                TargetSpec::System => alloctrace_common::unwind_table::VMA_CACHE_ENTRIES_SYSTEM,
                _ => alloctrace_common::unwind_table::VMA_CACHE_ENTRIES,
            },
            // Must match the probes' scope (the process, not the thread attached through): the
            // programs take the tgid as given. Following forks, the probes fire in several
            // processes: 0 has the programs ask the kernel, as in system-wide mode.
            target_tgid: if cfg.follow_forks {
                0
            } else {
                tgid.unwrap_or(0)
            },
            by_cookie: main_gone,
        };
        // Without a command to launch (forked before any thread of ours exists), the maps are
        // created (and the kernel's BTF read) while the target is resolved: their sizes and
        // the target's tgid are known already.
        let early_maps = match &cfg.target {
            TargetSpec::Command(_) => None,
            TargetSpec::Pid(pid) => Some(sizes(Some(*pid))),
            TargetSpec::System => Some(sizes(None)),
        }
        .and_then(|s| {
            std::thread::Builder::new()
                .name("alloctrace-maps".into())
                .spawn(move || loader::load(&s))
                .ok()
        });

        let mut mmap_watch;
        let mut via = None;
        // The target's program (or the command's), for the line saying why it is unseen.
        let mut program = None;
        let mut system_uses = None;
        // Files whose unwind tables are loaded before the target runs (`unwind::cfi`).
        let unwind_files;
        let (found, scope, mut held, model_target) = match &cfg.target {
            TargetSpec::Pid(pid) => {
                let tid = pid_via.context("checked above")?;
                target::check_may_trace(*pid)?;
                via = Some(tid);
                let via = tid;
                let files = allocators_of::mapped_files(via)?;
                unwind_files = files.clone();
                program = Some(PathBuf::from(format!("/proc/{via}/exe")));
                let found = probe::sets::sets_of(&files, cfg.probe_at);
                // Links name the thread group (a link on another thread's id is refused), and
                // cover its every thread, the main one's end included. One whose main thread
                // has already exited cannot be named (the kernel filters such a link on the
                // main thread's memory): its links name no process, and the programs drop
                // every other process's hits.
                let nz = NonZeroU32::new(*pid).context("pid 0")?;
                let scope = if tid == *pid {
                    Scope::Pid(nz)
                } else {
                    eprintln!(
                        "alloctrace: pid {pid}'s main thread has exited (thread {tid} lives): \
                         its probes go into every process that maps its allocator's files and \
                         count only pid {pid}'s calls; the others pay a probe hit per call \
                         (~0.5 µs) while alloctrace runs"
                    );
                    Scope::Only(nz)
                };
                // Its execs (and the mappings of the programs it runs) are recorded as they
                // happen: one that execs and exits between two looks is not missed. From
                // every thread, those started before alloctrace too.
                mmap_watch = match MmapWatch::open_running() {
                    Ok(mut w) => {
                        // Followed children's mappings are needed as well.
                        if !cfg.follow_forks {
                            w.only(*pid);
                        }
                        Some(w)
                    }
                    // Gone since it was checked: said as such, not as a failed watch.
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                        return Err(target::TargetError::ExitedWhileStarting(*pid).into())
                    }
                    Err(e) => {
                        log::warn!(
                            "cannot record the process's execs and mappings as they are made \
                         ({e}); an exec is noticed at the next interval only"
                        );
                        None
                    }
                };
                (found, scope, None, Target::Pid { pid: *pid })
            }
            TargetSpec::Command(argv) => {
                let exe = target::resolve_command(&argv[0])?;
                // The command's own allocators, read from its files before it runs.
                let files = allocators_of::command_files(&exe);
                let found = probe::sets::sets_of(&files, cfg.probe_at);
                unwind_files = files;
                program = Some(exe.clone());
                // Forked before any thread of ours exists; it waits for the probes.
                let held = launch::hold(&exe, argv)?;
                let nz = NonZeroU32::new(held.pid).context("fork returned pid 0")?;
                // Before the exec: the command's every executable mapping, from the exec's own
                // on, is recorded as it is made, so a command that exits before its maps can be
                // read still symbolizes.
                mmap_watch = match MmapWatch::open(Some(held.pid)) {
                    Ok(w) => Some(w),
                    Err(e) => {
                        log::warn!(
                            "cannot record the command's mappings as they are made ({e}); \
                         a short-lived command's frames may print as bare addresses"
                        );
                        None
                    }
                };
                // The report shows the arguments as text: bytes that are not UTF-8 print as U+FFFD.
                let t = Target::Command {
                    argv: argv
                        .iter()
                        .map(|a| a.to_string_lossy().into_owned())
                        .collect(),
                    pid: held.pid,
                };
                (found, Scope::Pid(nz), Some(held), t)
            }
            TargetSpec::System => {
                // As for a command: processes that exit before their maps are read still
                // symbolize.
                mmap_watch = match MmapWatch::open(None) {
                    Ok(mut w) => {
                        // New allocator files are probed as processes map them.
                        w.collect_files();
                        Some(w)
                    }
                    Err(e) => {
                        log::warn!(
                            "cannot record mappings as they are made ({e}); short-lived \
                         processes' frames may print as bare addresses, and allocator files \
                         first mapped after the start are not probed"
                        );
                        None
                    }
                };
                let (files, uses) = allocators_of::system_files();
                unwind_files = files.clone();
                system_uses = Some(uses);
                let found = probe::sets::sets_of(&files, cfg.probe_at);
                (found, Scope::All, None, Target::System)
            }
        };
        let target_pid = match &model_target {
            Target::Pid { pid } | Target::Command { pid, .. } => Some(*pid),
            Target::System => None,
        };
        let (sets, mode) = match cfg.target {
            TargetSpec::System => (
                go_mode::skip_go_in_full_mode(found.sets, cfg.mode, "at start"),
                cfg.mode,
            ),
            _ => {
                let mode = go_mode::go_mode(cfg.mode, &found.sets);
                (found.sets, mode)
            }
        };
        mark("target and its allocators resolved (probe placement included)");
        // Said once each: a file whose allocator cannot be probed while others can is skipped;
        // with none left, the process is unseen (said below).
        let unseen_reason = sets
            .is_empty()
            .then(|| probe::sets::no_allocator_reason(program.as_deref(), &found.failures));

        // Which program each exec of the target brings.
        let exec_log = match (mmap_watch.as_mut(), target_pid) {
            (Some(w), Some(pid)) => Some(w.track_execs(pid)),
            _ => None,
        };
        if cfg.follow_forks {
            match mmap_watch.as_mut() {
                Some(w) => w.follow_forks(),
                None => anyhow::bail!(
                    "--follow-forks needs the kernel's fork records (a perf event on the target), \
                 which could not be opened (see the warning above)"
                ),
            }
        }

        let ebpf = match early_maps {
            Some(h) => h
                .join()
                .map_err(|_| anyhow::anyhow!("the thread creating the maps panicked"))??,
            None => loader::load(&sizes(target_pid))?,
        };
        mark("maps created");
        let mut programs = probe::Programs::new(ebpf, loader::object())?;
        crate::golang::gc::prepare(&mut programs.ebpf);
        mark("programs relocated");
        let cfi = match cfg.unwind {
            Unwind::Dwarf => {
                let tables = Tables::take(&mut programs.ebpf, cfg.unwind_rows)?;
                let code = CodeMaps::take(&mut programs.ebpf)?;
                let running = match (&cfg.target, via) {
                    (TargetSpec::Pid(pid), Some(via)) => Running::Process { pid: *pid, via },
                    (TargetSpec::System, _) => Running::Every,
                    _ => Running::Nothing,
                };
                let feed = Feed::start(tables, code, &unwind_files, running)?;
                let st = feed.stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
                log::info!(
                    "unwind tables: {} files, {} rows, built in {:.1} ms ({} files without)",
                    st.files,
                    st.rows,
                    st.build_time.as_secs_f64() * 1e3,
                    st.without
                );
                Some(feed)
            }
            Unwind::Fp => None,
        };
        mark("unwind tables loaded");
        let probes_in = match probe::attach(&mut programs, &sets, scope, mode, cfg.bench_floor) {
            Ok(p) => p,
            Err(e) => match cfg.target {
                TargetSpec::Pid(pid) if target::exited_during_start(pid, &e) => {
                    return Err(target::TargetError::ExitedWhileStarting(pid).into())
                }
                _ => return Err(e.into()),
            },
        };
        mark("programs loaded (verified) and linked");
        let attached: usize = probes_in.iter().map(|a| a.points()).sum();
        let (retarget, loose) = retarget_for(scope, &sets, mode, probes_in);
        let drainer = Drainer::take(
            &mut programs.ebpf,
            cfg.max_samples,
            alloctrace_common::live::slots(cfg.max_live),
            alloctrace_common::sites::slots(cfg.max_stacks),
        )?;
        let symbolizer = Arc::new(Symbolizer::new());
        if let Some(pid) = target_pid.filter(|_| held.is_none()) {
            symbolizer.note_process_now(pid);
        }
        if let (Some(pid), Some(tid)) = (target_pid, via.filter(|&t| Some(t) != target_pid)) {
            // Once the main thread has exited, the process's maps read as empty through its pid:
            // a live thread's are the process's.
            if let Ok(maps) = crate::process::procmaps::ProcessMaps::read(tid) {
                symbolizer.add_mappings(pid, maps.mappings().to_vec());
            }
        }
        let stop_events = Arc::new(AtomicBool::new(false));
        let ring = drain::take_events(&mut programs.ebpf)?;
        // Following, the probe sets of new processes are attached from the event thread, which
        // reads their fork records; the main loop moves the target's own (`retarget`).
        let ebpf = Arc::new(Mutex::new(programs));
        // The trace's one start: execs' and forks' times (the kernel's clock, `start_ns`) and the
        // run's duration (`start`) are both measured from it, before the target may go on (the
        // "tracing" line below, the held command's release), so no event precedes the start.
        let start_ns = target::monotonic_ns();
        let start = Instant::now();
        let go_gc = {
            let programs = ebpf.lock().unwrap_or_else(|e| e.into_inner());
            crate::golang::gc::Table::open(&programs.ebpf, start_ns)
        };
        let start_unix_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let (follower, children) = if cfg.follow_forks {
            let (f, shared) =
                follow::Follower::new(ebpf.clone(), sets.clone(), mode, cfg.probe_at, start_ns);
            let c = children::Children::new(shared, start_ns);
            (Some(f), Some(c))
        } else {
            (None, None)
        };
        let system = system_uses
            .map(|uses| SystemSets::new(ebpf.clone(), mode, cfg.probe_at, sets.clone(), uses));
        let exec_wake = Arc::new(tokio::sync::Notify::new());
        let events_thread = {
            let (sym, stop) = (symbolizer.clone(), stop_events.clone());
            let ctx = EventsCtx {
                follower,
                system: system.clone(),
                target: target_pid,
                exec_wake: exec_wake.clone(),
                cfi,
            };
            std::thread::Builder::new()
                .name("alloctrace-events".into())
                .spawn(move || watch_events(ring, mmap_watch, ctx, &sym, &stop))
                .context("cannot start the event thread")?
        };

        mark("drainer, symbolizer and event thread started");
        // Before the target can go on (and exec) once it is told we are tracing.
        let mut exe = target_pid.map(|pid| target::ExeWatch::new(pid, exec_log, start_ns));
        if let Some(reason) = &unseen_reason {
            let shown = match (&cfg.target, target_pid) {
                (TargetSpec::Pid(_), Some(pid)) => {
                    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|_| "?".into());
                    format!("pid {pid} ({exe})")
                }
                (_, Some(pid)) => format!("pid {pid} ({model_target})"),
                _ => model_target.to_string(),
            };
            eprintln!(
                "alloctrace: {shown}: its allocator cannot be probed: {reason}; its allocations \
                 are unseen"
            );
            if let (Some(w), Some(p)) = (exe.as_mut(), program.as_ref()) {
                let p = match &cfg.target {
                    TargetSpec::Pid(_) => std::fs::read_link(p).unwrap_or_else(|_| p.clone()),
                    _ => p.clone(),
                };
                w.unseen_from_start(p.display().to_string(), reason.clone());
            }
        }
        // Said once the probes are in: a --pid target that died meanwhile is said as such
        // (above), not as files of it that could not be read.
        if unseen_reason.is_none() {
            for f in &found.failures {
                eprintln!("alloctrace: warning: {f}; skipped");
            }
        }
        eprintln!(
            "alloctrace: tracing {model_target}: {}{}",
            if sets.is_empty() {
                "no probes (no allocator alloctrace can probe)".to_string()
            } else {
                format!("{attached} probes: {}", probe::describe_sets(&sets))
            },
            if cfg.duration.is_some() || target_pid.is_none() {
                ""
            } else {
                " (Ctrl-C to stop)"
            }
        );
        if let Some(h) = held.as_mut() {
            h.release()?;
        }
        Ok(Engine {
            settings: Settings {
                mode,
                sample_bytes: cfg.sample_bytes,
                interval: cfg.interval,
                resolution: cfg.resolution,
                duration: cfg.duration,
                system_wide: matches!(cfg.target, TargetSpec::System),
                older: cfg.analyze.older,
            },
            target: model_target,
            target_pid,
            held,
            drainer,
            symbolizer,
            stop_events,
            events: events_thread,
            tasks: Tasks {
                ebpf,
                retarget,
                sets,
                scope,
                mode,
                probe_at: cfg.probe_at,
                loose,
            },
            exe,
            exec_wake,
            system,
            children,
            start,
            start_unix_secs,
            samples: Series::new(cfg.max_samples),
            published_sample: None,
            published: watch::Sender::new(Arc::default()),
            waits: None,
            drains: 0,
            last_drain: None,
            drains_skipped: 0,
            ticks: 0,
            sweep_due: false,
            go_gc,
        })
    }
}
