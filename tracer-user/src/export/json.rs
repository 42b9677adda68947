//! The stable machine-readable report: the [`Profile`] as serde writes it, plus
//! `"version"`, top-level `"totals"`, and computed `"live_objects"`/`"live_bytes"` in every
//! process and site (`null` in alloc-only mode, which does not trace frees). Readers ([`from_json`]) ignore the computed fields.
//!
//! Schema (version 1), keys in this order:
//! `version, target{mode,...}, mode ("full" or "alloc_only"), sample_bytes (only when
//!  sampling: then every site's counters and size_hist are estimates and each site has
//!  `sampled`, the number of allocations sampled), start_unix_secs, duration, interval,
//!  totals{allocs,bytes,frees,freed_bytes,live_objects,live_bytes},
//!  processes[]{pid,comm,counters{allocs,bytes,frees,freed_bytes},unknown_frees,
//!   unseen{since,program,reason} (only for a process that executed a program whose
//!   allocations alloctrace cannot see: its counters stop at `since`),live_objects,live_bytes},
//!  sites[]{pid,stack_id,frames[]{addr,function,function_offset,module,module_offset,file,line},
//!          counters{...},size_hist,life_hist,live_objects,live_bytes},
//!  samples[]{t,processes{"<pid>":counters}}, losses{...}, modules[]{pid,path,build_id},
//!  tracer{cpu_time,peak_rss_bytes} (alloctrace's own cost up to the report: CPU time of all
//!  its threads, program loading included, and peak resident set), analysis{...}`.
//! Durations and `t` are seconds as floats; absent symbols are `null`.
//!
//! `analysis` is [`Analysis`] as serde writes it (computed, ignored by [`from_json`], which also
//! reads files without it): `options{group_by,sort,top,small_max_size,small_min_rate,
//! large_min_size,large_max_rate,short_lived}`, `rate{overall,series[],processes[]}`,
//! `hotspots{group_by,sort,groups,total_bytes,top[]}`, `patterns[]` (every site with
//! allocations, biggest first: `pid, stack_id, site, class` (`small_frequent`,
//! `large_infrequent`, `burst`, `growing`, `steady`), `reason`, size bucket bounds, rates,
//! trend, stack), `lifetimes[]` (every site with freed blocks, same order: `pid, stack_id,
//! site, freed, median_ns, p90_ns, short_lived_share, short_lived_below_ns`) and
//! `advice[]{kind,pid,stack_id,site,evidence,suggestion}` (`kind`: `pool`, `presize`,
//! `large_churn`, `leak`).
use serde::Serialize;

use crate::analyze::Analysis;
#[cfg(test)]
use crate::analyze::{analyze, Options};
use crate::model::{
    duration_secs, Counters, Losses, Module, Process, Profile, Sample, Site, Target, TraceMode,
    TracerCost,
};

/// Bumped when a field changes meaning or disappears (adding fields does not bump it).
pub const VERSION: u32 = 1;

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
    duration: std::time::Duration,
    #[serde(with = "duration_secs")]
    interval: std::time::Duration,
    totals: Totals,
    processes: Vec<WithLive<'a, Process>>,
    sites: Vec<WithLive<'a, Site>>,
    samples: &'a [Sample],
    losses: &'a Losses,
    modules: &'a [Module],
    #[serde(skip_serializing_if = "Option::is_none")]
    tracer: Option<&'a TracerCost>,
    analysis: &'a Analysis,
}

/// The profile as pretty-printed JSON (schema above) with its analysis under the default
/// analyzer settings, newline-terminated.
#[cfg(test)]
pub fn to_json(p: &Profile) -> String {
    to_json_with(p, &analyze(p, &Options::default()))
}

/// The profile and `analysis` (of that profile) as pretty-printed JSON (schema above),
/// newline-terminated.
pub fn to_json_with(p: &Profile, analysis: &Analysis) -> String {
    let doc = Document {
        version: VERSION,
        target: &p.target,
        mode: p.mode,
        sample_bytes: p.sample_bytes,
        start_unix_secs: p.start_unix_secs,
        duration: p.duration,
        interval: p.interval,
        totals: Totals::of(p.total(), p.mode),
        processes: p
            .processes
            .iter()
            .map(|x| with_live(x, &x.counters, p.mode))
            .collect(),
        sites: p
            .sites
            .iter()
            .map(|s| with_live(s, &s.counters, p.mode))
            .collect(),
        samples: &p.samples,
        losses: &p.losses,
        modules: &p.modules,
        tracer: p.tracer.as_ref(),
        analysis,
    };
    // Serializing plain structs, strings and numbers into memory cannot fail.
    let mut s = serde_json::to_string_pretty(&doc).expect("a profile always serializes");
    s.push('\n');
    s
}

/// Reads back what [`to_json`] wrote (the computed fields, `analysis` and `version` are
/// ignored; files without `analysis` read the same).
pub fn from_json(s: &str) -> Result<Profile, serde_json::Error> {
    serde_json::from_str(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Frame;
    use serde_json::{json, Value};
    use std::collections::BTreeMap;
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
                },
                Process {
                    pid: 8,
                    comm: "child".into(),
                    counters: c2,
                    unknown_frees: 0,
                    unseen: None,
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
    fn extra_fields() {
        let v: Value = serde_json::from_str(&to_json(&sample_profile())).unwrap();
        assert_eq!(v["version"], json!(1));
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
        assert_eq!(
            s0["frames"][0],
            json!({"addr": 0x401000, "function": "alloc_a", "function_offset": 16, "module": "/usr/bin/prog",
                   "module_offset": 4096, "file": "src/main.rs", "line": 12})
        );
        assert_eq!(s0["frames"][1]["function"], Value::Null);
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
            pos("processes") < pos("sites")
                && pos("sites") < pos("samples")
                && pos("samples") < pos("losses")
                && pos("losses") < pos("modules")
                && pos("modules") < pos("tracer")
                && pos("tracer") < pos("analysis")
        );
        assert!(text.ends_with("}\n"));
    }
}
