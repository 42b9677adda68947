//! The stable machine-readable report: the [`Profile`] as serde writes it, plus
//! `"version"`, top-level `"totals"`, a shared `"frames"` table, and computed
//! `"live_objects"`/`"live_bytes"` in every process and site (`null` in alloc-only mode, which
//! does not trace frees). Readers ([`from_json`], [`from_reader`]) ignore the computed fields.
//!
//! Schema (version 2), keys in this order:
//! `version, target{mode,...}, mode ("full" or "alloc_only"), sample_bytes (only when
//!  sampling: then every site's counters and size_hist are estimates and each site has
//!  `sampled`, the number of allocations sampled), start_unix_secs, duration, interval,
//!  totals{allocs,bytes,frees,freed_bytes,live_objects,live_bytes},
//!  processes[]{pid,comm,counters{allocs,bytes,frees,freed_bytes},unknown_frees,
//!   allocators[]{name,path,version?} (the allocators it was counted through),
//!   unseen{since,program,reason} (only for a process that executed a program whose
//!   allocations alloctrace cannot see: its counters stop at `since`),live_objects,live_bytes},
//!  frames[]{addr,function,function_offset,module,module_offset,file,line},
//!  sites[]{pid,stack_id,frames[] (indices into the top-level frames),
//!          counters{...},size_hist,life_hist,series[]{t,counters},
//!          live{at,blocks,bytes,age_hist,oldest_ns,median_ns,youngest_ns,
//!               older{than,blocks,bytes}?}? (the site's blocks never freed, read from the
//!          in-flight table at `at`, with their ages; with sampling only the sampled blocks),
//!          live_objects,live_bytes},
//!  samples[]{t,processes{"<pid>":counters}}, losses{...}, modules[]{pid,path,build_id},
//!  tracer{cpu_time,peak_rss_bytes} (alloctrace's own cost up to the report: CPU time of all
//!  its threads, program loading included, and peak resident set), analysis{...}`.
//! Durations and `t` are seconds as floats; absent symbols are `null`.
//!
//! Version 2 differs from 1 in `frames` alone: version 1 repeated every frame object in each
//! site that had it, which made 131k distinct stacks of ~20 frames a 1.2 GB file; version 2
//! writes each distinct frame once (a frame is the same in two sites when every field is) and
//! a site lists indices. Both versions read.
//!
//! The layout is one entry per line below the top level (each frame, site, sample, process,
//! pattern... on a line of its own, compact inside): a site's 128 histogram buckets on a line
//! each made most of the rest. Together: 131k stacks, 1.19 GB -> 181 MB.
//!
//! `analysis` is [`Analysis`] as serde writes it (computed, ignored by [`from_json`], which also
//! reads files without it): `options{group_by,sort,top,small_max_size,small_min_rate,
//! large_min_size,large_max_rate,short_lived}`, `rate{overall,series[],processes[]}`,
//! `hotspots{group_by,sort,groups,total_bytes,top[]}`, `patterns[]` (every site with
//! allocations, biggest first: `pid, stack_id, site, class` (`small_frequent`,
//! `large_infrequent`, `burst`, `growing`, `steady`), `reason`, size bucket bounds, rates,
//! trend, stack), `lifetimes[]` (every site with freed blocks, same order: `pid, stack_id,
//! site, freed, median_ns, p90_ns, short_lived_share, short_lived_below_ns`), `leaks[]`
//! (every leak candidate, most confident first: `pid, stack_id, site, confidence` (`high`:
//! never or almost never freed while allocating all run long; `medium`: never freed, allocated
//! in one stretch; `low`: listed only), `allocs, frees, unfreed_share, live_blocks, live_bytes,
//! from_table, sampled, oldest_ns, median_ns, birth_span_ns, birth_span_share,
//! series{rising_steps,unfreed_steps,unfreed_span,trend}, throughout, older, evidence`) and
//! `advice[]{kind,pid,stack_id,site,evidence,suggestion,confidence?}` (`kind`: `pool`,
//! `presize`, `large_churn`, `leak`; `confidence` on leak advice). `options.older` is
//! `--older` in seconds, when given.
use std::collections::HashMap;
use std::io;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeSeq, SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

use crate::analyze::Analysis;
#[cfg(test)]
use crate::analyze::{analyze, Options};
use crate::model::{
    duration_secs, Counters, Frame, LiveBlocks, Losses, Module, Process, Profile, Sample, Site,
    SitePoint, Target, TraceMode, TracerCost,
};

/// Bumped when a field changes meaning or disappears (adding fields does not bump it).
pub const VERSION: u32 = 2;

#[derive(Serialize)]
struct Totals {
    allocs: u64,
    bytes: u64,
    frees: u64,
    freed_bytes: u64,
    /// `null` in alloc-only mode, which does not trace frees.
    live_objects: Option<u64>,
    live_bytes: Option<u64>,
}

impl Totals {
    fn of(c: Counters, mode: TraceMode) -> Self {
        let seen = mode.sees_frees();
        Totals {
            allocs: c.allocs,
            bytes: c.bytes,
            frees: c.frees,
            freed_bytes: c.freed_bytes,
            live_objects: seen.then(|| c.live_objects()),
            live_bytes: seen.then(|| c.live_bytes()),
        }
    }
}

/// A model value with its live counts computed alongside its own fields.
#[derive(Serialize)]
struct WithLive<'a, T> {
    #[serde(flatten)]
    inner: &'a T,
    /// `null` in alloc-only mode, which does not trace frees.
    live_objects: Option<u64>,
    live_bytes: Option<u64>,
}

fn with_live<'a, T>(inner: &'a T, c: &Counters, mode: TraceMode) -> WithLive<'a, T> {
    let seen = mode.sees_frees();
    WithLive {
        inner,
        live_objects: seen.then(|| c.live_objects()),
        live_bytes: seen.then(|| c.live_bytes()),
    }
}

/// Every field of [`Profile`] (a test keeps this list in step with the model) plus the extras.
#[derive(Serialize)]
struct Document<'a> {
    version: u32,
    target: &'a Target,
    mode: TraceMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    sample_bytes: Option<u64>,
    start_unix_secs: u64,
    #[serde(with = "duration_secs")]
    duration: Duration,
    #[serde(with = "duration_secs")]
    interval: Duration,
    #[serde(with = "duration_secs")]
    resolution: Duration,
    totals: Totals,
    processes: Vec<WithLive<'a, Process>>,
    frames: &'a [&'a Frame],
    sites: SitesOut<'a>,
    samples: &'a [Sample],
    losses: &'a Losses,
    modules: &'a [Module],
    #[serde(skip_serializing_if = "Option::is_none")]
    tracer: Option<&'a TracerCost>,
    analysis: &'a Analysis,
}

/// A frame's identity: two sites share a frame when every field is equal (the same address in
/// two processes of one binary mapped alike is one frame; mapped elsewhere, two).
type FrameKey<'a> = (
    u64,
    Option<&'a str>,
    u64,
    Option<&'a str>,
    u64,
    Option<&'a str>,
    Option<u32>,
);

fn frame_key(f: &Frame) -> FrameKey<'_> {
    (
        f.addr,
        f.function.as_deref(),
        f.function_offset,
        f.module.as_deref(),
        f.module_offset,
        f.file.as_deref(),
        f.line,
    )
}

/// Every distinct frame of the sites once, in first-seen order, and each site's frames as
/// indices into it.
struct FrameTable<'a> {
    frames: Vec<&'a Frame>,
    /// Every site's indices one after another, in site order (a site takes
    /// `site.frames.len()` of them). u32: a report holds far fewer than 2^32 frames (the kernel's
    /// maps bound sites, 32 frames each).
    ids: Vec<u32>,
}

impl<'a> FrameTable<'a> {
    fn of(sites: &'a [Site]) -> Self {
        let mut index: HashMap<FrameKey<'a>, u32> = HashMap::new();
        let mut frames = Vec::new();
        let mut ids = Vec::with_capacity(sites.iter().map(|s| s.frames.len()).sum());
        for f in sites.iter().flat_map(|s| &s.frames) {
            let id = *index.entry(frame_key(f)).or_insert_with(|| {
                frames.push(f);
                (frames.len() - 1) as u32
            });
            ids.push(id);
        }
        FrameTable { frames, ids }
    }
}

/// The sites with their frames as indices into a [`FrameTable`] of them, written one by one
/// (no per-site copy is made).
struct SitesOut<'a> {
    sites: &'a [Site],
    ids: &'a [u32],
    mode: TraceMode,
}

impl Serialize for SitesOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.sites.len()))?;
        let mut at = 0;
        for site in self.sites {
            let frames = &self.ids[at..at + site.frames.len()];
            at += site.frames.len();
            seq.serialize_element(&SiteOut {
                site,
                frames,
                mode: self.mode,
            })?;
        }
        seq.end()
    }
}

struct SiteOut<'a> {
    site: &'a Site,
    frames: &'a [u32],
    mode: TraceMode,
}

impl Serialize for SiteOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Every field of the model by name: a field added to `Site` does not compile here until
        // it is written.
        let Site {
            pid,
            stack_id,
            frames: _,
            counters,
            size_hist,
            life_hist,
            series,
            sampled,
            live,
        } = self.site;
        let seen = self.mode.sees_frees();
        let mut m = s.serialize_struct("Site", 11)?;
        m.serialize_field("pid", pid)?;
        m.serialize_field("stack_id", stack_id)?;
        m.serialize_field("frames", self.frames)?;
        m.serialize_field("counters", counters)?;
        m.serialize_field("size_hist", size_hist)?;
        m.serialize_field("life_hist", life_hist)?;
        m.serialize_field("series", series)?;
        match sampled {
            Some(n) => m.serialize_field("sampled", n)?,
            None => m.skip_field("sampled")?,
        }
        match live {
            Some(l) => m.serialize_field("live", l)?,
            None => m.skip_field("live")?,
        }
        m.serialize_field("live_objects", &seen.then(|| counters.live_objects()))?;
        m.serialize_field("live_bytes", &seen.then(|| counters.live_bytes()))?;
        m.end()
    }
}

/// serde_json's pretty layout for the document's top two levels and the lists directly inside
/// them (one entry per line), compact inside each entry: a site, a frame or a pattern is one
/// line, its histograms and frame indices inline rather than a line per number.
#[derive(Default)]
struct LineFormatter {
    /// Each open array or object: whether it breaks lines, and whether it holds a value yet.
    open: Vec<(bool, bool)>,
}

impl LineFormatter {
    fn breaks(&self, array: bool) -> bool {
        let depth = self.open.len() + 1;
        let parent_breaks = self.open.last().is_none_or(|o| o.0);
        parent_breaks && (depth <= 2 || (array && depth <= 3))
    }

    fn newline<W: ?Sized + io::Write>(w: &mut W, depth: usize) -> io::Result<()> {
        w.write_all(b"\n")?;
        for _ in 0..depth {
            w.write_all(b"  ")?;
        }
        Ok(())
    }

    fn begin<W: ?Sized + io::Write>(&mut self, w: &mut W, array: bool) -> io::Result<()> {
        self.open.push((self.breaks(array), false));
        w.write_all(if array { b"[" } else { b"{" })
    }

    fn end<W: ?Sized + io::Write>(&mut self, w: &mut W, array: bool) -> io::Result<()> {
        if let Some((true, true)) = self.open.pop() {
            Self::newline(w, self.open.len())?;
        }
        w.write_all(if array { b"]" } else { b"}" })
    }

    fn begin_value<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if !first {
            w.write_all(b",")?;
        }
        match self.open.last() {
            Some((true, _)) => Self::newline(w, self.open.len()),
            _ => Ok(()),
        }
    }

    fn end_value(&mut self) {
        if let Some(o) = self.open.last_mut() {
            o.1 = true;
        }
    }
}

impl serde_json::ser::Formatter for LineFormatter {
    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.begin(w, true)
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.end(w, true)
    }
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.begin_value(w, first)
    }
    fn end_array_value<W: ?Sized + io::Write>(&mut self, _w: &mut W) -> io::Result<()> {
        self.end_value();
        Ok(())
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.begin(w, false)
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.end(w, false)
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.begin_value(w, first)
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        match self.open.last() {
            Some((true, _)) => w.write_all(b": "),
            _ => w.write_all(b":"),
        }
    }
    fn end_object_value<W: ?Sized + io::Write>(&mut self, _w: &mut W) -> io::Result<()> {
        self.end_value();
        Ok(())
    }
}

/// The profile as JSON (schema above) with its analysis under the default analyzer settings,
/// newline-terminated.
#[cfg(test)]
pub fn to_json(p: &Profile) -> String {
    to_json_with(p, &analyze(p, &Options::default()))
}

/// The profile and `analysis` (of that profile) as JSON (schema above), newline-terminated.
/// Written straight into one buffer: no copy of the sites or their frames, no value tree.
pub fn to_json_with(p: &Profile, analysis: &Analysis) -> String {
    let table = FrameTable::of(&p.sites);
    let doc = Document {
        version: VERSION,
        target: &p.target,
        mode: p.mode,
        sample_bytes: p.sample_bytes,
        start_unix_secs: p.start_unix_secs,
        duration: p.duration,
        interval: p.interval,
        resolution: p.resolution,
        totals: Totals::of(p.total(), p.mode),
        processes: p
            .processes
            .iter()
            .map(|x| with_live(x, &x.counters, p.mode))
            .collect(),
        frames: &table.frames,
        sites: SitesOut {
            sites: &p.sites,
            ids: &table.ids,
            mode: p.mode,
        },
        samples: &p.samples,
        losses: &p.losses,
        modules: &p.modules,
        tracer: p.tracer.as_ref(),
        analysis,
    };
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, LineFormatter::default());
    // Serializing plain structs, strings and numbers into memory cannot fail.
    doc.serialize(&mut ser)
        .expect("a profile always serializes");
    buf.push(b'\n');
    String::from_utf8(buf).expect("serde_json writes UTF-8")
}

/// What a reader takes of a document of either version: the model's fields, the sites'
/// frames as written (indices into `frames` in version 2, objects in version 1).
#[derive(Deserialize)]
struct DocIn {
    version: Option<u32>,
    target: Target,
    #[serde(default)]
    mode: TraceMode,
    #[serde(default)]
    sample_bytes: Option<u64>,
    start_unix_secs: u64,
    #[serde(with = "duration_secs")]
    duration: Duration,
    #[serde(with = "duration_secs")]
    interval: Duration,
    #[serde(default, with = "duration_secs")]
    resolution: Duration,
    samples: Vec<Sample>,
    processes: Vec<Process>,
    #[serde(default)]
    frames: Vec<Frame>,
    sites: Vec<SiteIn>,
    losses: Losses,
    #[serde(default)]
    modules: Vec<Module>,
    #[serde(default)]
    tracer: Option<TracerCost>,
}

#[derive(Deserialize)]
struct SiteIn {
    pid: u32,
    stack_id: u64,
    frames: Vec<FrameIn>,
    counters: Counters,
    size_hist: Vec<u64>,
    life_hist: Vec<u64>,
    #[serde(default)]
    series: Vec<SitePoint>,
    #[serde(default)]
    sampled: Option<u64>,
    #[serde(default)]
    live: Option<LiveBlocks>,
}

/// A site's frame: an index into the document's `frames` (version 2) or the frame itself
/// (version 1).
enum FrameIn {
    Id(u64),
    Frame(Frame),
}

impl<'de> Deserialize<'de> for FrameIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FrameIn;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an index into `frames` or a frame object")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<FrameIn, E> {
                Ok(FrameIn::Id(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FrameIn, A::Error> {
                Frame::deserialize(de::value::MapAccessDeserializer::new(map)).map(FrameIn::Frame)
            }
        }
        d.deserialize_any(V)
    }
}

impl DocIn {
    fn into_profile(self) -> Result<Profile, serde_json::Error> {
        if let Some(v) = self.version.filter(|&v| v > VERSION) {
            return Err(de::Error::custom(format!(
                "report version {v} is newer than this alloctrace reads ({VERSION})"
            )));
        }
        let table = self.frames;
        let frame = |f: FrameIn| match f {
            FrameIn::Frame(f) => Ok(f),
            FrameIn::Id(i) => table.get(i as usize).cloned().ok_or_else(|| {
                de::Error::custom(format!(
                    "frame index {i} is out of range: `frames` has {}",
                    table.len()
                ))
            }),
        };
        let sites = self
            .sites
            .into_iter()
            .map(|s| {
                // Every field of the model by name (as in `SiteOut`).
                Ok(Site {
                    pid: s.pid,
                    stack_id: s.stack_id,
                    frames: s.frames.into_iter().map(frame).collect::<Result<_, _>>()?,
                    counters: s.counters,
                    size_hist: s.size_hist,
                    life_hist: s.life_hist,
                    series: s.series,
                    sampled: s.sampled,
                    live: s.live,
                })
            })
            .collect::<Result<_, serde_json::Error>>()?;
        Ok(Profile {
            target: self.target,
            mode: self.mode,
            sample_bytes: self.sample_bytes,
            start_unix_secs: self.start_unix_secs,
            duration: self.duration,
            interval: self.interval,
            resolution: self.resolution,
            samples: self.samples,
            processes: self.processes,
            sites,
            losses: self.losses,
            modules: self.modules,
            tracer: self.tracer,
        })
    }
}

/// Reads back what [`to_json`] wrote, version 2 or 1 (the computed fields and `analysis` are
/// ignored; files without `analysis` read the same). `compare` reads with [`from_reader`].
#[cfg(test)]
pub fn from_json(s: &str) -> Result<Profile, serde_json::Error> {
    serde_json::from_str::<DocIn>(s)?.into_profile()
}

/// [`from_json`] from a reader, parsed as it is read (no copy of the whole text).
pub fn from_reader(r: impl io::Read) -> Result<Profile, serde_json::Error> {
    serde_json::from_reader::<_, DocIn>(io::BufReader::new(r))?.into_profile()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Frame;
    use serde_json::{json, Value};
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    fn sample_profile() -> Profile {
        let c1 = Counters {
            allocs: 10,
            bytes: 1000,
            frees: 4,
            freed_bytes: 400,
        };
        let c2 = Counters {
            allocs: 5,
            bytes: 50,
            frees: 5,
            freed_bytes: 50,
        };
        Profile {
            target: Target::Command {
                argv: vec!["./prog".into(), "arg".into()],
                pid: 7,
            },
            mode: crate::model::TraceMode::Full,
            start_unix_secs: 1_700_000_000,
            duration: Duration::from_millis(2500),
            interval: Duration::from_secs(1),
            resolution: Duration::from_millis(100),
            samples: vec![
                Sample {
                    t: Duration::from_millis(1000),
                    processes: BTreeMap::from([(7, c2)]),
                },
                Sample {
                    t: Duration::from_millis(2500),
                    processes: BTreeMap::from([(7, c1), (8, c2)]),
                },
            ],
            processes: vec![
                Process {
                    pid: 7,
                    comm: "prog".into(),
                    counters: c1,
                    unknown_frees: 2,
                    unseen: None,
                    allocators: Vec::new(),
                    go: None,
                },
                Process {
                    pid: 8,
                    comm: "child".into(),
                    counters: c2,
                    unknown_frees: 0,
                    unseen: None,
                    allocators: Vec::new(),
                    go: None,
                },
            ],
            sites: vec![
                Site {
                    pid: 7,
                    stack_id: 0xfeed,
                    frames: vec![
                        Frame {
                            addr: 0x401000,
                            function: Some("alloc_a".into()),
                            function_offset: 0x10,
                            module: Some("/usr/bin/prog".into()),
                            module_offset: 0x1000,
                            file: Some("src/main.rs".into()),
                            line: Some(12),
                        },
                        Frame {
                            addr: 0x7f00,
                            ..Default::default()
                        },
                    ],
                    counters: c1,
                    size_hist: vec![0, 1, 9],
                    life_hist: vec![4],
                    series: vec![],
                    sampled: None,
                    live: None,
                },
                Site {
                    pid: 8,
                    stack_id: 1,
                    frames: vec![],
                    counters: c2,
                    size_hist: vec![],
                    life_hist: vec![],
                    series: vec![],
                    sampled: None,
                    live: None,
                },
            ],
            losses: Losses {
                stack_map_full: 3,
                ..Default::default()
            },
            modules: vec![Module {
                pid: 7,
                path: "/usr/bin/prog".into(),
                build_id: Some("0badc0de".into()),
            }],
            sample_bytes: None,
            tracer: Some(TracerCost {
                cpu_time: Duration::from_millis(1250),
                peak_rss_bytes: 47 << 20,
            }),
        }
    }

    #[test]
    fn round_trip() {
        let p = sample_profile();
        let text = to_json(&p);
        assert_eq!(from_json(&text).unwrap(), p);
        let sys = Profile {
            target: Target::System,
            ..p.clone()
        };
        assert_eq!(from_json(&to_json(&sys)).unwrap(), sys);
        let pid = Profile {
            target: Target::Pid { pid: 9 },
            samples: vec![],
            sites: vec![],
            ..p
        };
        assert_eq!(from_json(&to_json(&pid)).unwrap(), pid);
        // Files from before the tracer's own cost was measured have no `tracer`.
        let old = Profile {
            tracer: None,
            ..pid
        };
        assert!(!to_json(&old).contains("\"tracer\""));
        assert_eq!(from_json(&to_json(&old)).unwrap(), old);
        assert!(!to_json(&old).contains("\"unseen\""));
    }

    #[test]
    fn unseen_process_says_since_when_and_why() {
        let mut p = sample_profile();
        p.processes[0].unseen = Some(crate::model::Unseen {
            since: Duration::from_millis(1500),
            program: "/tmp/static".into(),
            reason: "it maps no libc alloctrace probes (statically linked)".into(),
        });
        let text = to_json(&p);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v["processes"][0]["unseen"],
            json!({"since": 1.5, "program": "/tmp/static",
                   "reason": "it maps no libc alloctrace probes (statically linked)"})
        );
        assert_eq!(from_json(&text).unwrap(), p);
    }

    #[test]
    fn processes_name_their_allocators_and_late_execs_are_losses() {
        let mut p = sample_profile();
        p.processes[0].allocators = vec![crate::model::AllocatorUse {
            name: "jemalloc".into(),
            path: "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2".into(),
            version: None,
        }];
        p.losses.exec_late = 2;
        p.losses.exec_gap_us = 1500;
        let text = to_json(&p);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v["processes"][0]["allocators"],
            json!([{"name": "jemalloc", "path": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}])
        );
        assert_eq!(
            (&v["losses"]["exec_late"], &v["losses"]["exec_gap_us"]),
            (&json!(2), &json!(1500))
        );
        assert_eq!(from_json(&text).unwrap(), p);
    }

    #[test]
    fn extra_fields() {
        let v: Value = serde_json::from_str(&to_json(&sample_profile())).unwrap();
        assert_eq!(v["version"], json!(2));
        assert_eq!(
            v["totals"],
            json!({"allocs": 15, "bytes": 1050, "frees": 9, "freed_bytes": 450, "live_objects": 6, "live_bytes": 600})
        );
        assert_eq!(
            v["target"],
            json!({"mode": "command", "argv": ["./prog", "arg"], "pid": 7})
        );
        assert_eq!(v["duration"], json!(2.5));
        assert_eq!(v["interval"], json!(1.0));
        let p0 = &v["processes"][0];
        assert_eq!(p0["pid"], json!(7));
        assert_eq!(p0["comm"], json!("prog"));
        assert_eq!(
            p0["counters"],
            json!({"allocs": 10, "bytes": 1000, "frees": 4, "freed_bytes": 400})
        );
        assert_eq!(p0["unknown_frees"], json!(2));
        assert_eq!(
            (p0["live_objects"].clone(), p0["live_bytes"].clone()),
            (json!(6), json!(600))
        );
        assert_eq!(
            (
                v["processes"][1]["live_objects"].clone(),
                v["processes"][1]["live_bytes"].clone()
            ),
            (json!(0), json!(0))
        );
        let s0 = &v["sites"][0];
        assert_eq!(s0["stack_id"], json!(0xfeed));
        assert_eq!(
            (s0["live_objects"].clone(), s0["live_bytes"].clone()),
            (json!(6), json!(600))
        );
        assert_eq!(s0["frames"], json!([0, 1]));
        assert_eq!(
            v["frames"][0],
            json!({"addr": 0x401000, "function": "alloc_a", "function_offset": 16, "module": "/usr/bin/prog",
                   "module_offset": 4096, "file": "src/main.rs", "line": 12})
        );
        assert_eq!(v["frames"][1]["function"], Value::Null);
        assert_eq!(v["frames"].as_array().unwrap().len(), 2);
        assert_eq!(v["sites"][1]["frames"], json!([]));
        assert_eq!(s0["size_hist"], json!([0, 1, 9]));
        assert_eq!(s0["life_hist"], json!([4]));
        assert_eq!(v["samples"][1]["t"], json!(2.5));
        assert_eq!(v["samples"][1]["processes"]["8"]["allocs"], json!(5));
        assert_eq!(v["losses"]["stack_map_full"], json!(3));
        assert_eq!(v["losses"]["event_dropped"], json!(0));
        assert_eq!(
            v["tracer"],
            json!({"cpu_time": 1.25, "peak_rss_bytes": 47 << 20})
        );
    }

    /// The document carries every field serde writes for the model, so a field added to
    /// `Profile`, `Process` or `Site` cannot silently go missing from the JSON.
    #[test]
    fn document_covers_the_model() {
        let p = sample_profile();
        let plain = serde_json::to_value(&p).unwrap();
        let mut ours = serde_json::from_str::<Value>(&to_json(&p)).unwrap();
        let top = ours.as_object_mut().unwrap();
        assert!(top.remove("version").is_some() && top.remove("totals").is_some());
        assert!(top.remove("analysis").is_some());
        let table = top.remove("frames").unwrap();
        for site in top["sites"].as_array_mut().unwrap() {
            let ids = site["frames"].as_array().unwrap();
            let frames: Vec<Value> = ids
                .iter()
                .map(|i| table[i.as_u64().unwrap() as usize].clone())
                .collect();
            site["frames"] = Value::Array(frames);
        }
        for list in ["processes", "sites"] {
            for item in top[list].as_array_mut().unwrap() {
                let o = item.as_object_mut().unwrap();
                assert!(o.remove("live_objects").is_some() && o.remove("live_bytes").is_some());
            }
        }
        assert_eq!(ours, plain);
    }

    #[test]
    fn analysis_is_included_and_optional() {
        let p = sample_profile();
        let o = Options {
            top: 1,
            ..Default::default()
        };
        let a = analyze(&p, &o);
        let text = to_json_with(&p, &a);
        let v: Value = serde_json::from_str(&text).unwrap();
        // Floats may differ in the last digit after a text round trip (serde_json's default
        // parser), so compare what is exact.
        let back: Analysis = serde_json::from_value(v["analysis"].clone()).unwrap();
        assert_eq!((back.options, back.patterns.len()), (o, a.patterns.len()));
        assert_eq!(back.rate.overall.totals, a.rate.overall.totals);
        assert_eq!(v["analysis"]["options"]["top"], json!(1));
        assert_eq!(v["analysis"]["options"]["short_lived"], json!(0.001));
        assert_eq!(v["analysis"]["hotspots"]["group_by"], json!("function"));
        assert_eq!(
            v["analysis"]["hotspots"]["top"][0]["name"],
            json!("alloc_a")
        );
        assert_eq!(v["analysis"]["patterns"][0]["class"], json!("steady"));
        assert_eq!(v["analysis"]["patterns"][0]["site"], json!("alloc_a"));
        assert_eq!(v["analysis"]["lifetimes"][0]["site"], json!("alloc_a"));
        assert_eq!(v["analysis"]["lifetimes"][0]["freed"], json!(4));
        assert!(v["analysis"]["lifetimes"][0]["short_lived_share"].is_f64());
        assert!(v["analysis"]["advice"].is_array());
        assert_eq!(
            v["analysis"]["rate"]["overall"]["totals"]["bytes"],
            json!(1050)
        );
        assert_eq!(from_json(&text).unwrap(), p);
        // A file written before the analysis existed still reads.
        let mut old = v.clone();
        old.as_object_mut().unwrap().remove("analysis");
        assert_eq!(from_json(&old.to_string()).unwrap(), p);
        // The default-settings wrapper analyzes the same profile.
        assert_eq!(
            to_json(&p),
            to_json_with(&p, &analyze(&p, &Options::default()))
        );
    }

    #[test]
    fn key_order_is_readable() {
        let text = to_json(&sample_profile());
        let pos = |k: &str| {
            text.find(&format!("\"{k}\""))
                .unwrap_or_else(|| panic!("{k} missing"))
        };
        assert!(pos("version") < pos("target"));
        assert!(pos("interval") < pos("totals") && pos("totals") < pos("processes"));
        assert!(
            pos("processes") < pos("frames")
                && pos("frames") < pos("sites")
                && pos("sites") < pos("samples")
                && pos("samples") < pos("losses")
                && pos("losses") < pos("modules")
                && pos("modules") < pos("tracer")
                && pos("tracer") < pos("analysis")
        );
        assert!(text.ends_with("}\n"));
    }

    /// `text` as version 1 wrote it: every site's frames as objects, no `frames` table.
    fn as_version_1(text: &str) -> String {
        let mut v: Value = serde_json::from_str(text).unwrap();
        let top = v.as_object_mut().unwrap();
        let table = top.remove("frames").unwrap();
        top.insert("version".into(), json!(1));
        for site in top["sites"].as_array_mut().unwrap() {
            let frames: Vec<Value> = site["frames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| table[i.as_u64().unwrap() as usize].clone())
                .collect();
            site["frames"] = Value::Array(frames);
        }
        v.to_string()
    }

    #[test]
    fn reads_version_1() {
        let p = sample_profile();
        let v1 = as_version_1(&to_json(&p));
        assert!(v1.contains(r#""function":"alloc_a""#) && v1.contains(r#""version":1"#));
        assert_eq!(from_json(&v1).unwrap(), p);
        assert_eq!(from_reader(v1.as_bytes()).unwrap(), p);
        assert_eq!(from_reader(to_json(&p).as_bytes()).unwrap(), p);
    }

    #[test]
    fn bad_frame_index_and_newer_version_are_errors() {
        let text = to_json(&sample_profile());
        let bad = text.replacen(r#""frames":[0,1]"#, r#""frames":[0,7]"#, 1);
        assert_ne!(bad, text);
        let err = from_json(&bad).unwrap_err().to_string();
        assert!(
            err.contains("frame index 7 is out of range: `frames` has 2"),
            "{err}"
        );
        let newer = text.replacen(r#""version": 2"#, r#""version": 3"#, 1);
        assert_ne!(newer, text);
        let err = from_json(&newer).unwrap_err().to_string();
        assert!(err.contains("report version 3 is newer"), "{err}");
    }

    /// `depth` levels of a binary call tree under `main`, as `bench/special/stacks.c` makes
    /// them: 2^depth sites of depth + 2 frames, from 2 * 2 + 2 distinct frames.
    fn tree_profile(depth: u32) -> Profile {
        let module: Arc<str> = "/usr/lib/a-long-module-path/libexample.so.1".into();
        let file: Arc<str> = "/home/someone/src/example/tree.c".into();
        let frame = |name: &str, at: u64| Frame {
            addr: 0x5555_0000_0000 + at,
            function: Some(name.into()),
            function_offset: at & 0xff,
            module: Some(module.clone()),
            module_offset: at,
            file: Some(file.clone()),
            line: Some(at as u32),
        };
        let (leaf, main) = (frame("leaf", 0x1010), frame("main", 0x1020));
        let calls = [
            frame("a", 0x1100),
            frame("a", 0x1108),
            frame("b", 0x1200),
            frame("b", 0x1208),
        ];
        let mut hist = vec![0; 64];
        hist[5] = 1;
        let sites = (0..1u64 << depth)
            .map(|path| {
                let mut frames = vec![leaf.clone()];
                frames.extend((0..depth).map(|bit| {
                    calls[((path >> bit) & 1) as usize * 2 + (bit & 1) as usize].clone()
                }));
                frames.push(main.clone());
                Site {
                    pid: 7,
                    stack_id: path,
                    frames,
                    counters: Counters {
                        allocs: 1,
                        bytes: 16,
                        frees: 1,
                        freed_bytes: 16,
                    },
                    size_hist: hist.clone(),
                    life_hist: hist.clone(),
                    series: vec![SitePoint {
                        t: Duration::from_millis(1234),
                        counters: Counters {
                            allocs: 1,
                            bytes: 16,
                            frees: 1,
                            freed_bytes: 16,
                        },
                    }],
                    sampled: None,
                    live: None,
                }
            })
            .collect();
        Profile {
            sites,
            samples: vec![],
            ..sample_profile()
        }
    }

    /// Each distinct frame is written once however many sites share it, and a site of 20
    /// frames, with its analysis entries, stays under 1,500 bytes (the bound README states).
    #[test]
    fn frames_are_written_once_and_sites_stay_small() {
        let p = tree_profile(12);
        assert_eq!(p.sites.len(), 1 << 12);
        let text = to_json(&p);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["frames"].as_array().unwrap().len(), 6);
        // The module path: once per frame in the table, once in `modules`... of which the
        // sample's is another path.
        assert_eq!(text.matches("libexample.so.1").count(), 6);
        assert_eq!(text.matches("tree.c").count(), 6);
        let per_site = text.len() / p.sites.len();
        assert!(per_site < 1500, "{per_site} bytes per site");
        assert_eq!(from_json(&text).unwrap(), p);
    }

    /// One site, frame, process or pattern per line; the document's own keys on lines of their own.
    #[test]
    fn one_entry_per_line() {
        let p = tree_profile(4);
        let text = to_json(&p);
        let lines: Vec<&str> = text.lines().collect();
        let starting = |prefix: &str| lines.iter().filter(|l| l.starts_with(prefix)).count();
        assert_eq!(starting(r#"    {"pid":7,"stack_id":"#), 16, "{text}");
        // Patterns and lifetimes, one level deeper (in `analysis`).
        assert_eq!(starting(r#"      {"pid":7,"stack_id":"#), 32, "{text}");
        assert_eq!(starting(r#"    {"addr":"#), 6, "{text}");
        assert_eq!(starting(r#"  "sites": ["#), 1, "{text}");
        assert_eq!(starting(r#"  "version": 2,"#), 1, "{text}");
        assert!(
            text.starts_with("{\n  \"version\": 2,\n  \"target\": {\n    \"mode\": \"command\",")
        );
        assert!(text.contains("\n  \"samples\": [],\n"), "{text}");
    }
}
