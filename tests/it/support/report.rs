//! The `--report json` document, parsed: its sites with their frames resolved, their counters
//! read as the model's, and sums by process and by innermost function.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use super::{Counters, HIST_BUCKETS};

pub(crate) fn json_u64(v: &Value, what: &str) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("report field {what} is {v}, not an unsigned integer"))
}

/// What the tests need of the model's [`Counters`] beyond the model's own methods.
pub trait CountersExt: Sized {
    fn is_zero(&self) -> bool;
    /// Reads a `{allocs, bytes, frees, freed_bytes}` object; panics naming `what` if a field
    /// is missing or not an unsigned integer.
    fn from_json(v: &Value, what: &str) -> Self;
    /// `allocs=.. bytes=.. frees=.. freed_bytes=.. (live .. objects, .. bytes)`, for failure
    /// messages.
    fn text(&self) -> String;
}

impl CountersExt for Counters {
    fn is_zero(&self) -> bool {
        *self == Counters::default()
    }
    /// As the model deserializes it (as alloctrace reads a report back).
    fn from_json(v: &Value, what: &str) -> Counters {
        serde_json::from_value(v.clone())
            .unwrap_or_else(|e| panic!("report field {what} is {v}, not counters: {e}"))
    }
    fn text(&self) -> String {
        format!(
            "allocs={} bytes={} frees={} freed_bytes={} (live {} objects, {} bytes)",
            self.allocs,
            self.bytes,
            self.frees,
            self.freed_bytes,
            self.live_objects(),
            self.live_bytes()
        )
    }
}

/// What the report says of one function: every site of a process whose `frames[0].function`
/// is that function, summed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FunctionStats {
    pub counters: Counters,
    /// The sum of the sites' own `live_objects`/`live_bytes` fields.
    pub live_objects: u64,
    pub live_bytes: u64,
    pub size_hist: Vec<u64>,
    pub life_hist: Vec<u64>,
    /// How many sites were summed.
    pub sites: usize,
}

/// Key of [`Report::functions`] for sites whose innermost frame has no function name.
pub const NO_FUNCTION: &str = "<frames[0] without a function>";

/// A parsed `--report json` document.
pub struct Report {
    pub json: Value,
    pub text: String,
}

impl Report {
    /// Parses `text`; panics with it and `context` unless it is a JSON object with `version` 2
    /// whose `frames` table holds each frame once and whose sites' frame indices all resolve.
    /// Each site's `frames` is then resolved in [`Report::json`] to the frame objects (as
    /// version 1 wrote them), so tests read `site["frames"][i]["function"]`.
    pub fn parse(text: &str, context: &str) -> Report {
        let mut json: Value = serde_json::from_str(text).unwrap_or_else(|e| {
            panic!(
                "the report is not JSON ({e}):\n{}\n{context}",
                excerpt(text, 4000)
            )
        });
        assert!(
            json.is_object(),
            "the report is not a JSON object:\n{}\n{context}",
            excerpt(text, 4000)
        );
        assert_eq!(
            json["version"],
            Value::from(2),
            "report version:\n{}\n{context}",
            excerpt(text, 2000)
        );
        resolve_frames(&mut json, context);
        Report {
            json,
            text: text.to_string(),
        }
    }

    /// Reads the report alloctrace wrote to `path`.
    pub fn read(path: &Path, context: &str) -> Report {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
            panic!(
                "alloctrace wrote no report to {}: {e}\n{context}",
                path.display()
            )
        });
        Report::parse(&text, context)
    }

    fn array(&self, key: &str) -> &[Value] {
        self.json[key]
            .as_array()
            .unwrap_or_else(|| panic!("report field {key} is {}, not an array", self.json[key]))
    }

    pub fn processes(&self) -> &[Value] {
        self.array("processes")
    }

    pub fn sites(&self) -> &[Value] {
        self.array("sites")
    }

    pub fn samples(&self) -> &[Value] {
        self.array("samples")
    }

    pub fn pids(&self) -> Vec<u64> {
        self.processes()
            .iter()
            .map(|p| json_u64(&p["pid"], "processes[].pid"))
            .collect()
    }

    /// The `processes[]` entry of `pid`; panics listing the pids present if there is none or
    /// more than one.
    pub fn process(&self, pid: u32) -> &Value {
        let found: Vec<&Value> = self
            .processes()
            .iter()
            .filter(|p| p["pid"].as_u64() == Some(u64::from(pid)))
            .collect();
        match found.as_slice() {
            [one] => one,
            [] => panic!(
                "pid {pid} is not among the report's processes {:?}",
                self.pids()
            ),
            _ => panic!(
                "pid {pid} appears {} times among the report's processes {:?}",
                found.len(),
                self.pids()
            ),
        }
    }

    pub fn process_counters(&self, pid: u32) -> Counters {
        Counters::from_json(
            &self.process(pid)["counters"],
            &format!("processes[pid {pid}].counters"),
        )
    }

    pub fn sites_of(&self, pid: u32) -> Vec<&Value> {
        self.sites()
            .iter()
            .filter(|s| s["pid"].as_u64() == Some(u64::from(pid)))
            .collect()
    }

    /// The sites of `pid` whose innermost frame is `function`.
    pub fn sites_in(&self, pid: u32, function: &str) -> Vec<&Value> {
        self.sites_of(pid)
            .into_iter()
            .filter(|s| Report::frame_function(s, 0) == Some(function))
            .collect()
    }

    /// `frames[i].function` of a site, None when the frame is missing or unnamed.
    pub fn frame_function(site: &Value, i: usize) -> Option<&str> {
        site["frames"].get(i).and_then(|f| f["function"].as_str())
    }

    /// The function names of a site's frames, innermost first (`?` for unnamed frames).
    pub fn frame_names(site: &Value) -> Vec<String> {
        site["frames"]
            .as_array()
            .map(|fs| {
                fs.iter()
                    .map(|f| f["function"].as_str().unwrap_or("?").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A frame for failure messages: `function`, else `?module+0xoffset`, else `?0xaddr`.
    pub fn frame_label(f: &Value) -> String {
        if let Some(func) = f["function"].as_str() {
            return func.to_string();
        }
        match (f["module"].as_str(), f["module_offset"].as_u64()) {
            (Some(m), Some(off)) => format!("?{}+{off:#x}", m.rsplit('/').next().unwrap_or(m)),
            _ => format!("?{:#x}", f["addr"].as_u64().unwrap_or(0)),
        }
    }

    /// Every site of `pid` summed by `frames[0].function` (see [`NO_FUNCTION`]).
    pub fn functions(&self, pid: u32) -> BTreeMap<String, FunctionStats> {
        let mut out: BTreeMap<String, FunctionStats> = BTreeMap::new();
        for s in self.sites_of(pid) {
            let name = Report::frame_function(s, 0)
                .unwrap_or(NO_FUNCTION)
                .to_string();
            let what = format!("site {} of pid {pid} ({name})", s["stack_id"]);
            let e = out.entry(name).or_insert_with(|| FunctionStats {
                size_hist: vec![0; HIST_BUCKETS],
                life_hist: vec![0; HIST_BUCKETS],
                ..Default::default()
            });
            e.counters.add(&Counters::from_json(&s["counters"], &what));
            e.live_objects += json_u64(&s["live_objects"], &format!("{what}.live_objects"));
            e.live_bytes += json_u64(&s["live_bytes"], &format!("{what}.live_bytes"));
            for key in ["size_hist", "life_hist"] {
                let hist = s[key]
                    .as_array()
                    .unwrap_or_else(|| panic!("{what}.{key} is not an array"));
                assert_eq!(
                    hist.len(),
                    HIST_BUCKETS,
                    "{what}.{key} has {} buckets, not {HIST_BUCKETS}",
                    hist.len()
                );
                let sum = if key == "size_hist" {
                    &mut e.size_hist
                } else {
                    &mut e.life_hist
                };
                for (acc, v) in sum.iter_mut().zip(hist) {
                    *acc += json_u64(v, &format!("{what}.{key}[]"));
                }
            }
            e.sites += 1;
        }
        out
    }

    /// One block per site of `pid`: counters and the frames' names, for failure messages.
    pub fn describe_sites(&self, pid: u32) -> String {
        let mut out = format!("sites of pid {pid} in the report:\n");
        for s in self.sites_of(pid) {
            let c = Counters::from_json(&s["counters"], "site");
            let _ = writeln!(out, "  stack_id {}: {}", s["stack_id"], c.text());
            let frames: Vec<String> = s["frames"]
                .as_array()
                .map(|fs| fs.iter().map(Report::frame_label).collect())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "    frames: {}",
                if frames.is_empty() {
                    "(none)".into()
                } else {
                    frames.join(" <- ")
                }
            );
        }
        out
    }

    /// The `losses` object as name -> count.
    pub fn losses(&self) -> BTreeMap<String, u64> {
        let obj = self.json["losses"].as_object().unwrap_or_else(|| {
            panic!(
                "report field losses is {}, not an object",
                self.json["losses"]
            )
        });
        obj.iter()
            .map(|(k, v)| (k.clone(), json_u64(v, &format!("losses.{k}"))))
            .collect()
    }
}

/// Replaces every site's frame indices by the frames they point to in the top-level `frames`
/// table; panics if an index is out of range or the table holds a frame twice.
fn resolve_frames(json: &mut Value, context: &str) {
    let table = match json.get_mut("frames").map(Value::take) {
        Some(Value::Array(t)) => t,
        other => panic!("report field frames is {other:?}, not an array\n{context}"),
    };
    let mut seen = std::collections::HashSet::new();
    for f in &table {
        assert!(
            seen.insert(f.to_string()),
            "the report's frames table holds {f} more than once\n{context}"
        );
    }
    let Some(sites) = json.get_mut("sites").and_then(Value::as_array_mut) else {
        return;
    };
    for site in sites {
        let what = format!("site {}", site["stack_id"]);
        let Some(ids) = site.get_mut("frames").and_then(Value::as_array_mut) else {
            continue;
        };
        for id in ids {
            let i = json_u64(id, &format!("{what}.frames[]")) as usize;
            *id = table.get(i).cloned().unwrap_or_else(|| {
                panic!(
                    "{what}: frame index {i} is past the frames table ({} entries)\n{context}",
                    table.len()
                )
            });
        }
    }
    json["frames"] = Value::Array(table);
}

/// The first `max` characters of `s` (with a note when cut).
pub fn excerpt(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((i, _)) => format!("{}\n[… {} more bytes]", &s[..i], s.len() - i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_sites_by_function() {
        let mut hist = vec![0u64; HIST_BUCKETS];
        hist[7] = 1;
        let site = |id: u64, f: u64| {
            serde_json::json!({"pid": 9, "stack_id": id, "frames": [f, 2],
                "counters": {"allocs": 1, "bytes": 100, "frees": 1, "freed_bytes": 100},
                "live_objects": 0, "live_bytes": 0, "size_hist": hist, "life_hist": hist})
        };
        let frames =
            serde_json::json!([{"function": "f"}, {"function": null}, {"function": "main"}]);
        let json = serde_json::json!({"version": 2, "processes": [], "frames": frames,
            "sites": [site(1, 0), site(2, 0), site(3, 1)]});
        let r = Report::parse(&json.to_string(), "");
        let fs = r.functions(9);
        assert_eq!(
            fs["f"].counters,
            Counters {
                allocs: 2,
                bytes: 200,
                frees: 2,
                freed_bytes: 200
            }
        );
        assert_eq!((fs["f"].sites, fs["f"].size_hist[7]), (2, 2));
        assert_eq!(fs[NO_FUNCTION].sites, 1);
        assert_eq!(
            Report::frame_names(r.sites().first().unwrap()),
            ["f", "main"]
        );
    }

    #[test]
    #[should_panic(expected = "holds {\"function\":\"f\"} more than once")]
    fn a_frame_twice_in_the_table_fails() {
        let json = serde_json::json!({"version": 2, "processes": [],
            "frames": [{"function": "f"}, {"function": "f"}], "sites": []});
        Report::parse(&json.to_string(), "");
    }

    #[test]
    #[should_panic(expected = "frame index 1 is past the frames table (1 entries)")]
    fn a_frame_index_past_the_table_fails() {
        let json = serde_json::json!({"version": 2, "processes": [], "frames": [{"function": "f"}],
            "sites": [{"pid": 1, "stack_id": 5, "frames": [0, 1]}]});
        Report::parse(&json.to_string(), "");
    }
}
