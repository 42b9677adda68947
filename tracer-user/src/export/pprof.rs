//! The pprof profile (`profile.proto`, gzipped) of a run, with the sample types of a Go heap
//! profile, so `go tool pprof`, pprof.me, Speedscope, Pyroscope and IDEs open it as one:
//! `alloc_objects/count`, `alloc_space/bytes`, `inuse_objects/count`, `inuse_space/bytes`
//! (in use = still live at the end). One sample per allocation site.
//!
//! The protobuf encoding is written by hand: the format is small (varints and
//! length-delimited fields), and a code generator would need protoc or a build script.
//! `tests/it/pprof.rs` decodes the output with the official `profile.proto`.
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use flate2::{write::GzEncoder, Compression};

use crate::analyze::Analysis;
use crate::export::{Exporter, Options};
use crate::model::{Profile, Site};

/// The sample types, in the order of every sample's values. In alloc-only mode (frees not
/// traced) only the first two: nothing is known of what is in use.
pub const SAMPLE_TYPES: [(&str, &str); 4] = [
    ("alloc_objects", "count"),
    ("alloc_space", "bytes"),
    ("inuse_objects", "count"),
    ("inuse_space", "bytes"),
];

/// The sample type `go tool pprof` shows first: what was allocated (a program that ran to its
/// end has usually freed most of it, so `inuse_space` would often show nearly nothing).
pub const DEFAULT_SAMPLE_TYPE: &str = "alloc_space";

/// The name of the one location of sites whose stack could not be read.
pub const NO_STACK: &str = "[no stack]";

/// `--pprof FILE`.
pub struct Pprof;

impl Exporter for Pprof {
    fn option(&self) -> &'static str {
        "pprof"
    }
    fn help(&self) -> &'static str {
        "Write a gzipped pprof profile (Go heap-profile sample types) to FILE (e.g. x.pb.gz), \
         for `go tool pprof`, Pyroscope or Grafana"
    }
    fn what(&self, _: &Profile) -> String {
        "pprof profile".to_string()
    }
    fn render(&self, p: &Profile, _: &Analysis, _: &Options, _: &Path) -> Result<Vec<u8>> {
        encode(p)
    }
}

/// `p` as a gzipped `perftools.profiles.Profile`.
pub fn encode(p: &Profile) -> Result<Vec<u8>> {
    encode_showing(p, DEFAULT_SAMPLE_TYPE)
}

/// `p` as `encode` makes it, with `default` as the sample type pprof shows first (Go's
/// `/debug/pprof/heap` shows `inuse_space`, its `allocs` `alloc_space`); `alloc_space` when
/// the profile has no such type (alloc-only mode has no in-use data).
pub fn encode_showing(p: &Profile, default: &str) -> Result<Vec<u8>> {
    let raw = encode_raw(p, default);
    let mut gz = GzEncoder::new(
        Vec::with_capacity(raw.len() / 4 + 64),
        Compression::default(),
    );
    gz.write_all(&raw).context("gzip")?;
    gz.finish().context("gzip")
}

// Field numbers of profile.proto.
mod field {
    // Profile
    pub const SAMPLE_TYPE: u32 = 1;
    pub const SAMPLE: u32 = 2;
    pub const MAPPING: u32 = 3;
    pub const LOCATION: u32 = 4;
    pub const FUNCTION: u32 = 5;
    pub const STRING_TABLE: u32 = 6;
    pub const TIME_NANOS: u32 = 9;
    pub const DURATION_NANOS: u32 = 10;
    pub const PERIOD_TYPE: u32 = 11;
    pub const PERIOD: u32 = 12;
    pub const COMMENT: u32 = 13;
    pub const DEFAULT_SAMPLE_TYPE: u32 = 14;
    // ValueType
    pub const VT_TYPE: u32 = 1;
    pub const VT_UNIT: u32 = 2;
    // Sample
    pub const S_LOCATION_ID: u32 = 1;
    pub const S_VALUE: u32 = 2;
    pub const S_LABEL: u32 = 3;
    // Label
    pub const L_KEY: u32 = 1;
    pub const L_STR: u32 = 2;
    pub const L_NUM: u32 = 3;
    // Mapping
    pub const M_ID: u32 = 1;
    pub const M_MEMORY_START: u32 = 2;
    pub const M_MEMORY_LIMIT: u32 = 3;
    pub const M_FILE_OFFSET: u32 = 4;
    pub const M_FILENAME: u32 = 5;
    pub const M_BUILD_ID: u32 = 6;
    pub const M_HAS_FUNCTIONS: u32 = 7;
    pub const M_HAS_FILENAMES: u32 = 8;
    pub const M_HAS_LINE_NUMBERS: u32 = 9;
    // Location
    pub const LOC_ID: u32 = 1;
    pub const LOC_MAPPING_ID: u32 = 2;
    pub const LOC_ADDRESS: u32 = 3;
    pub const LOC_LINE: u32 = 4;
    // Line
    pub const LINE_FUNCTION_ID: u32 = 1;
    pub const LINE_LINE: u32 = 2;
    // Function
    pub const F_ID: u32 = 1;
    pub const F_NAME: u32 = 2;
    pub const F_SYSTEM_NAME: u32 = 3;
    pub const F_FILENAME: u32 = 4;
}

const VARINT: u32 = 0;
const LEN: u32 = 2;

/// A protobuf message being written. Zero scalars are omitted, as proto3 allows.
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn key(&mut self, field: u32, wire: u32) {
        self.varint(u64::from(field << 3 | wire));
    }
    fn uint(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.key(field, VARINT);
            self.varint(v);
        }
    }
    fn int(&mut self, field: u32, v: i64) {
        // int64 is encoded as the two's complement u64 (not zigzag).
        self.uint(field, v as u64);
    }
    fn bool(&mut self, field: u32, v: bool) {
        self.uint(field, u64::from(v));
    }
    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, LEN);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn msg(&mut self, field: u32, m: Msg) {
        self.bytes(field, &m.0);
    }
    /// A packed repeated varint field (proto3's default encoding of repeated scalars).
    fn packed(&mut self, field: u32, vs: impl IntoIterator<Item = u64>) {
        let mut inner = Msg::default();
        for v in vs {
            inner.varint(v);
        }
        if !inner.0.is_empty() {
            self.bytes(field, &inner.0);
        }
    }
}

/// The string table: `""` first, each string once.
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Strings {
        Strings {
            table: vec![String::new()],
            index: HashMap::from([(String::new(), 0)]),
        }
    }
    fn id(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

/// Saturates the unsigned counters into the int64 of `Sample.value`.
fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A mapping being built: one per `Profile::modules` entry (process and path).
struct MappingBuild {
    id: u64,
    path: String,
    build_id: Option<String>,
    /// Lowest and highest frame address seen in it, and the module offset of the lowest.
    range: Option<(u64, u64, u64)>,
    has_functions: bool,
    has_filenames: bool,
    has_line_numbers: bool,
}

/// Whether `path` looks like a shared library rather than an executable.
fn is_shared_library(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.contains(".so") || base.starts_with('[')
}

fn encode_raw(p: &Profile, default: &str) -> Vec<u8> {
    let mut st = Strings::new();
    let mut out = Msg::default();

    let n_types = if p.mode.sees_frees() {
        SAMPLE_TYPES.len()
    } else {
        2
    };
    for (ty, unit) in &SAMPLE_TYPES[..n_types] {
        let mut vt = Msg::default();
        vt.int(field::VT_TYPE, st.id(ty));
        vt.int(field::VT_UNIT, st.id(unit));
        out.msg(field::SAMPLE_TYPE, vt);
    }

    // Mappings: one per module, executables first (pprof takes mapping[0] for the main
    // binary), ids in that order.
    let mut modules: Vec<_> = p.modules.iter().collect();
    modules.sort_by_key(|m| is_shared_library(&m.path));
    let mut mappings: Vec<MappingBuild> = Vec::with_capacity(modules.len());
    let mut mapping_of: HashMap<(u32, &str), usize> = HashMap::new();
    for m in modules {
        if mapping_of.contains_key(&(m.pid, m.path.as_str())) {
            continue;
        }
        mapping_of.insert((m.pid, m.path.as_str()), mappings.len());
        mappings.push(MappingBuild {
            id: mappings.len() as u64 + 1,
            path: m.path.clone(),
            build_id: m.build_id.clone(),
            range: None,
            has_functions: false,
            has_filenames: false,
            has_line_numbers: false,
        });
    }
    let sites = p.sites_by_bytes();
    for s in &sites {
        for f in &s.frames {
            let Some(i) = f
                .module
                .as_deref()
                .and_then(|m| mapping_of.get(&(s.pid, m)))
            else {
                continue;
            };
            let m = &mut mappings[*i];
            m.range = Some(match m.range {
                None => (f.addr, f.addr, f.module_offset),
                Some((lo, hi, _)) if f.addr < lo => (f.addr, hi, f.module_offset),
                Some((lo, hi, off)) => (lo, hi.max(f.addr), off),
            });
            m.has_functions |= f.function.is_some();
            m.has_filenames |= f.file.is_some();
            m.has_line_numbers |= f.line.is_some();
        }
    }

    // Functions, per (name, file); locations, per (pid, address).
    let mut functions: Vec<Msg> = Vec::new();
    let mut function_of: HashMap<(String, String), u64> = HashMap::new();
    let mut locations: Vec<Msg> = Vec::new();
    let mut location_of: HashMap<(u32, u64), u64> = HashMap::new();
    let mut no_stack_location: Option<u64> = None;

    let mut function_id = |st: &mut Strings, name: String, file: String| -> u64 {
        let n = function_of.len() as u64 + 1;
        *function_of
            .entry((name, file))
            .or_insert_with_key(|(name, file)| {
                let mut f = Msg::default();
                f.uint(field::F_ID, n);
                let name = st.id(name);
                f.int(field::F_NAME, name);
                f.int(field::F_SYSTEM_NAME, name);
                f.int(field::F_FILENAME, st.id(file));
                functions.push(f);
                n
            })
    };

    let multi = p.is_multi_process();
    let comms: HashMap<u32, &str> = p
        .processes
        .iter()
        .map(|x| (x.pid, x.comm.as_str()))
        .collect();

    // Go processes' stacks as Go's own heap profiles write them.
    let go_pids: std::collections::HashSet<u32> = p
        .processes
        .iter()
        .filter(|x| x.go.is_some())
        .map(|x| x.pid)
        .collect();
    let mut samples: Vec<Msg> = Vec::with_capacity(sites.len());
    for s in &sites {
        let frames = if go_pids.contains(&s.pid) {
            crate::golang::profile_frames(&s.frames)
        } else {
            &s.frames[..]
        };
        let mut ids: Vec<u64> = Vec::with_capacity(s.frames.len().max(1));
        if s.frames.is_empty() {
            let id = *no_stack_location.get_or_insert_with(|| {
                let id = locations.len() as u64 + 1;
                let fid = function_id(&mut st, NO_STACK.to_string(), String::new());
                locations.push(location(id, 0, 0, fid, None));
                id
            });
            ids.push(id);
        }
        for f in frames {
            let id = match location_of.get(&(s.pid, f.addr)) {
                Some(&id) => id,
                None => {
                    let id = locations.len() as u64 + 1;
                    let fid = function_id(
                        &mut st,
                        f.name(),
                        f.file.as_deref().unwrap_or_default().to_string(),
                    );
                    let mapping = f
                        .module
                        .as_deref()
                        .and_then(|m| mapping_of.get(&(s.pid, m)))
                        .map_or(0, |&i| mappings[i].id);
                    locations.push(location(id, mapping, f.addr, fid, f.line));
                    location_of.insert((s.pid, f.addr), id);
                    id
                }
            };
            ids.push(id);
        }
        samples.push(sample(s, &ids, n_types, multi, &comms, &mut st));
    }

    for s in samples {
        out.msg(field::SAMPLE, s);
    }
    for m in &mappings {
        let mut mm = Msg::default();
        mm.uint(field::M_ID, m.id);
        if let Some((lo, hi, off)) = m.range {
            mm.uint(field::M_MEMORY_START, lo);
            mm.uint(field::M_MEMORY_LIMIT, hi.saturating_add(1));
            mm.uint(field::M_FILE_OFFSET, off);
        }
        mm.int(field::M_FILENAME, st.id(&m.path));
        if let Some(b) = &m.build_id {
            mm.int(field::M_BUILD_ID, st.id(b));
        }
        mm.bool(field::M_HAS_FUNCTIONS, m.has_functions);
        mm.bool(field::M_HAS_FILENAMES, m.has_filenames);
        mm.bool(field::M_HAS_LINE_NUMBERS, m.has_line_numbers);
        out.msg(field::MAPPING, mm);
    }
    for l in locations {
        out.msg(field::LOCATION, l);
    }
    for f in functions {
        out.msg(field::FUNCTION, f);
    }

    out.int(
        field::TIME_NANOS,
        i64_of(p.start_unix_secs.saturating_mul(1_000_000_000)),
    );
    out.int(
        field::DURATION_NANOS,
        i64::try_from(p.duration.as_nanos()).unwrap_or(i64::MAX),
    );
    let mut period_type = Msg::default();
    period_type.int(field::VT_TYPE, st.id("space"));
    period_type.int(field::VT_UNIT, st.id("bytes"));
    out.msg(field::PERIOD_TYPE, period_type);
    // As in Go heap profiles: the sampling rate in bytes (1: every allocation counted), with
    // the values already scaled to estimates.
    out.int(field::PERIOD, i64_of(p.sample_bytes.unwrap_or(1)));
    let mut comments = vec![format!("alloctrace: {}", p.target)];
    if let Some(n) = p.sample_bytes {
        comments.push(format!(
            "alloctrace --sample-bytes {n}: values are estimates from sampled allocations"
        ));
    }
    if !p.mode.sees_frees() {
        comments.push(format!(
            "alloctrace --mode {}: frees were not traced, so there is no in-use data",
            p.mode
        ));
    }
    for (what, n, hint) in p.losses.nonzero() {
        comments.push(format!("alloctrace lost data: {what}: {n} ({hint})"));
    }
    let comment_ids: Vec<u64> = comments.iter().map(|c| st.id(c) as u64).collect();
    out.packed(field::COMMENT, comment_ids);
    let default = if SAMPLE_TYPES[..n_types].iter().any(|(t, _)| *t == default) {
        default
    } else {
        DEFAULT_SAMPLE_TYPE
    };
    out.int(field::DEFAULT_SAMPLE_TYPE, st.id(default));

    // Last, now that every string is in it.
    for s in &st.table {
        out.bytes(field::STRING_TABLE, s.as_bytes());
    }
    out.0
}

fn location(id: u64, mapping: u64, addr: u64, function: u64, line: Option<u32>) -> Msg {
    let mut l = Msg::default();
    l.uint(field::LOC_ID, id);
    l.uint(field::LOC_MAPPING_ID, mapping);
    l.uint(field::LOC_ADDRESS, addr);
    let mut ln = Msg::default();
    ln.uint(field::LINE_FUNCTION_ID, function);
    ln.int(field::LINE_LINE, line.map_or(0, i64::from));
    l.msg(field::LOC_LINE, ln);
    l
}

fn sample(
    s: &Site,
    location_ids: &[u64],
    n_types: usize,
    multi: bool,
    comms: &HashMap<u32, &str>,
    st: &mut Strings,
) -> Msg {
    let c = &s.counters;
    let mut m = Msg::default();
    m.packed(field::S_LOCATION_ID, location_ids.iter().copied());
    m.packed(
        field::S_VALUE,
        [c.allocs, c.bytes, c.live_objects(), c.live_bytes()][..n_types]
            .iter()
            .map(|&v| i64_of(v) as u64),
    );
    if multi {
        let mut pid = Msg::default();
        pid.int(field::L_KEY, st.id("pid"));
        pid.int(field::L_NUM, i64::from(s.pid));
        m.msg(field::S_LABEL, pid);
        if let Some(comm) = comms.get(&s.pid).filter(|c| !c.is_empty()) {
            let mut l = Msg::default();
            l.int(field::L_KEY, st.id("comm"));
            l.int(field::L_STR, st.id(comm));
            m.msg(field::S_LABEL, l);
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Counters, Frame, Losses, Module, Process, Target, TraceMode};
    use std::collections::BTreeMap;
    use std::io::Read;
    use std::time::Duration;

    // ---- A tiny protobuf decoder, independent of the encoder above. ----

    enum Val {
        Int(u64),
        Bytes(Vec<u8>),
    }

    fn read_varint(b: &[u8], i: &mut usize) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let byte = b[*i];
            *i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return v;
            }
            shift += 7;
            assert!(shift < 64, "varint too long");
        }
    }

    fn fields(b: &[u8]) -> Vec<(u32, Val)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let key = read_varint(b, &mut i);
            let (field, wire) = ((key >> 3) as u32, key & 7);
            match wire {
                0 => out.push((field, Val::Int(read_varint(b, &mut i)))),
                2 => {
                    let n = read_varint(b, &mut i) as usize;
                    out.push((field, Val::Bytes(b[i..i + n].to_vec())));
                    i += n;
                }
                w => panic!("unexpected wire type {w} for field {field}"),
            }
        }
        out
    }

    fn int(fs: &[(u32, Val)], f: u32) -> u64 {
        let mut v = 0;
        for (n, x) in fs {
            if *n == f {
                match x {
                    Val::Int(x) => v = *x,
                    Val::Bytes(_) => panic!("field {f} is not a varint"),
                }
            }
        }
        v
    }

    fn ints(fs: &[(u32, Val)], f: u32) -> Vec<u64> {
        let mut out = Vec::new();
        for (n, x) in fs {
            if *n == f {
                match x {
                    Val::Int(x) => out.push(*x),
                    Val::Bytes(b) => {
                        let mut i = 0;
                        while i < b.len() {
                            out.push(read_varint(b, &mut i));
                        }
                    }
                }
            }
        }
        out
    }

    fn msgs(fs: &[(u32, Val)], f: u32) -> Vec<Vec<(u32, Val)>> {
        fs.iter()
            .filter(|(n, _)| *n == f)
            .map(|(_, x)| match x {
                Val::Bytes(b) => fields(b),
                Val::Int(_) => panic!("field {f} is not a message"),
            })
            .collect()
    }

    #[derive(Debug, PartialEq)]
    struct Mapping {
        id: u64,
        start: u64,
        limit: u64,
        offset: u64,
        file: String,
        build_id: String,
        has_functions: bool,
    }

    /// A decoded sample: location ids, values, labels (key -> string, or `#num`).
    type DecodedSample = (Vec<u64>, Vec<i64>, BTreeMap<String, String>);

    #[derive(Debug)]
    struct Decoded {
        strings: Vec<String>,
        sample_types: Vec<(String, String)>,
        samples: Vec<DecodedSample>,
        mappings: Vec<Mapping>,
        /// id -> (mapping id, address, function id, line)
        locations: BTreeMap<u64, (u64, u64, u64, i64)>,
        /// id -> (name, system name, file)
        functions: BTreeMap<u64, (String, String, String)>,
        time_nanos: i64,
        duration_nanos: i64,
        period_type: (String, String),
        period: i64,
        comments: Vec<String>,
        default_sample_type: String,
    }

    impl Decoded {
        fn new(gz: &[u8]) -> Decoded {
            assert_eq!(&gz[..2], &[0x1f, 0x8b], "not gzip");
            let mut raw = Vec::new();
            flate2::read::GzDecoder::new(gz)
                .read_to_end(&mut raw)
                .unwrap();
            let fs = fields(&raw);
            let strings: Vec<String> = fs
                .iter()
                .filter(|(n, _)| *n == 6)
                .map(|(_, v)| match v {
                    Val::Bytes(b) => String::from_utf8(b.clone()).unwrap(),
                    Val::Int(_) => panic!("string_table entry is a varint"),
                })
                .collect();
            let s = |i: u64| strings[i as usize].clone();
            let vt = |m: &[(u32, Val)]| (s(int(m, 1)), s(int(m, 2)));
            let samples = msgs(&fs, 2)
                .iter()
                .map(|m| {
                    let labels = msgs(m, 3)
                        .iter()
                        .map(|l| {
                            let v = if int(l, 2) != 0 {
                                s(int(l, 2))
                            } else {
                                format!("#{}", int(l, 3))
                            };
                            (s(int(l, 1)), v)
                        })
                        .collect();
                    let values = ints(m, 2).into_iter().map(|v| v as i64).collect();
                    (ints(m, 1), values, labels)
                })
                .collect();
            let mappings = msgs(&fs, 3)
                .iter()
                .map(|m| Mapping {
                    id: int(m, 1),
                    start: int(m, 2),
                    limit: int(m, 3),
                    offset: int(m, 4),
                    file: s(int(m, 5)),
                    build_id: s(int(m, 6)),
                    has_functions: int(m, 7) != 0,
                })
                .collect();
            let locations = msgs(&fs, 4)
                .iter()
                .map(|m| {
                    let lines = msgs(m, 4);
                    assert_eq!(lines.len(), 1, "one line per location");
                    (
                        int(m, 1),
                        (
                            int(m, 2),
                            int(m, 3),
                            int(&lines[0], 1),
                            int(&lines[0], 2) as i64,
                        ),
                    )
                })
                .collect();
            let functions = msgs(&fs, 5)
                .iter()
                .map(|m| (int(m, 1), (s(int(m, 2)), s(int(m, 3)), s(int(m, 4)))))
                .collect();
            Decoded {
                sample_types: msgs(&fs, 1).iter().map(|m| vt(m)).collect(),
                samples,
                mappings,
                locations,
                functions,
                time_nanos: int(&fs, 9) as i64,
                duration_nanos: int(&fs, 10) as i64,
                period_type: vt(&msgs(&fs, 11)[0]),
                period: int(&fs, 12) as i64,
                comments: ints(&fs, 13).into_iter().map(s).collect(),
                default_sample_type: s(int(&fs, 14)),
                strings,
            }
        }

        /// The function names of a sample's locations, innermost first.
        fn names(&self, sample: usize) -> Vec<String> {
            self.samples[sample]
                .0
                .iter()
                .map(|id| self.functions[&self.locations[id].2].0.clone())
                .collect()
        }
    }

    // ---- Synthetic profiles. ----

    const EXE: &str = "/usr/bin/prog";
    const LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";

    /// A frame of the executable (loaded at 0x5000_0000 - 0x1000 file offset) or of libc.
    fn frame(name: Option<&str>, module: &str, module_offset: u64, line: Option<u32>) -> Frame {
        let base = if module == EXE {
            0x5000_0000
        } else {
            0x7f00_0000
        };
        Frame {
            addr: base + module_offset,
            function: name.map(Into::into),
            function_offset: 4,
            module: Some(module.into()),
            module_offset,
            file: name.map(|_| format!("{module}.c").into()),
            line,
        }
    }

    fn site(pid: u32, stack_id: u64, frames: Vec<Frame>, c: (u64, u64, u64, u64)) -> Site {
        Site {
            pid,
            stack_id,
            frames,
            counters: Counters {
                allocs: c.0,
                bytes: c.1,
                frees: c.2,
                freed_bytes: c.3,
            },
            size_hist: vec![],
            life_hist: vec![],
            series: vec![],
            sampled: None,
            live: None,
        }
    }

    fn profile(processes: &[(u32, &str)], sites: Vec<Site>) -> Profile {
        let mut modules = Vec::new();
        for s in &sites {
            for f in &s.frames {
                let m = Module {
                    pid: s.pid,
                    path: f.module.as_deref().unwrap().to_string(),
                    build_id: Some(format!("{:02x}abcdef", s.pid)),
                };
                if !modules.contains(&m) {
                    modules.push(m);
                }
            }
        }
        // libc first, to check the executable still becomes mapping 1.
        modules.sort_by_key(|m| !m.path.contains(".so"));
        Profile {
            target: Target::Command {
                argv: vec![EXE.into(), "--x".into()],
                pid: processes.first().map_or(1, |p| p.0),
            },
            mode: TraceMode::Full,
            start_unix_secs: 1_700_000_000,
            duration: Duration::from_millis(2500),
            interval: Duration::from_secs(1),
            resolution: Duration::from_millis(100),
            samples: vec![],
            processes: processes
                .iter()
                .map(|(pid, comm)| Process {
                    pid: *pid,
                    comm: comm.to_string(),
                    counters: Counters::default(),
                    unknown_frees: 0,
                    unseen: None,
                    allocators: Vec::new(),
                    go: None,
                })
                .collect(),
            sites,
            losses: Losses::default(),
            modules,
            sample_bytes: None,
            tracer: None,
        }
    }

    fn main_frame() -> Frame {
        frame(Some("main"), EXE, 0x1200, Some(30))
    }

    fn one_process() -> Profile {
        profile(
            &[(7, "prog")],
            vec![
                site(
                    7,
                    1,
                    vec![frame(Some("alloc_a"), EXE, 0x1100, Some(10)), main_frame()],
                    (10, 1000, 4, 400),
                ),
                site(
                    7,
                    2,
                    vec![
                        frame(None, EXE, 0x1180, None),
                        main_frame(),
                        frame(Some("__libc_start_call_main"), LIBC, 0x2a000, Some(58)),
                    ],
                    (3, 300, 3, 300),
                ),
                // Another call site in alloc_a: same function, another location.
                site(
                    7,
                    3,
                    vec![frame(Some("alloc_a"), EXE, 0x1108, Some(11)), main_frame()],
                    (1, 24, 0, 0),
                ),
                site(7, 4, vec![], (2, 64, 0, 0)),
                // Nothing allocated: no sample.
                site(
                    7,
                    5,
                    vec![frame(Some("never"), EXE, 0x1300, None)],
                    (0, 0, 0, 0),
                ),
            ],
        )
    }

    #[test]
    fn header_sample_types_period_times_comment() {
        let d = Decoded::new(&encode(&one_process()).unwrap());
        assert_eq!(d.strings[0], "");
        let types: Vec<(&str, &str)> = d
            .sample_types
            .iter()
            .map(|(t, u)| (t.as_str(), u.as_str()))
            .collect();
        assert_eq!(types, SAMPLE_TYPES);
        assert_eq!(d.period_type, ("space".into(), "bytes".into()));
        assert_eq!(d.period, 1);
        assert_eq!(d.time_nanos, 1_700_000_000_000_000_000);
        assert_eq!(d.duration_nanos, 2_500_000_000);
        assert_eq!(d.comments, ["alloctrace: /usr/bin/prog --x"]);
        assert_eq!(d.default_sample_type, "alloc_space");
        let unique: std::collections::BTreeSet<&String> = d.strings.iter().collect();
        assert_eq!(unique.len(), d.strings.len(), "strings are interned");
    }

    #[test]
    fn one_sample_per_site_with_its_values_and_stack() {
        let d = Decoded::new(&encode(&one_process()).unwrap());
        assert_eq!(d.samples.len(), 4, "{d:#?}");
        // Biggest (bytes) first, like the report.
        assert_eq!(d.names(0), ["alloc_a", "main"]);
        assert_eq!(d.samples[0].1, [10, 1000, 6, 600]);
        assert_eq!(
            d.names(1),
            ["prog+0x1180", "main", "__libc_start_call_main"]
        );
        assert_eq!(d.samples[1].1, [3, 300, 0, 0]);
        assert_eq!(d.names(2), [NO_STACK]);
        assert_eq!(d.samples[2].1, [2, 64, 2, 64]);
        assert_eq!(d.names(3), ["alloc_a", "main"]);
        assert_eq!(d.samples[3].1, [1, 24, 1, 24]);
        for s in &d.samples {
            assert!(s.2.is_empty(), "one process: no labels");
        }
        let totals: Vec<i64> = (0..4)
            .map(|i| d.samples.iter().map(|s| s.1[i]).sum())
            .collect();
        assert_eq!(totals, [16, 1388, 9, 688]);
    }

    #[test]
    fn locations_per_address_functions_per_name_and_file() {
        let d = Decoded::new(&encode(&one_process()).unwrap());
        // alloc_a+0x1100, alloc_a+0x1108, main, prog+0x1180, libc, [no stack].
        assert_eq!(d.locations.len(), 6, "{:#?}", d.locations);
        let names: Vec<&str> = d.functions.values().map(|f| f.0.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            [
                "[no stack]",
                "__libc_start_call_main",
                "alloc_a",
                "main",
                "prog+0x1180"
            ]
        );
        let main_loc = d.samples[0].0[1];
        assert_eq!(d.samples[1].0[1], main_loc, "main's frame is one location");
        assert_ne!(
            d.samples[0].0[0], d.samples[3].0[0],
            "two call sites in alloc_a"
        );
        assert_eq!(
            d.locations[&d.samples[0].0[0]].2, d.locations[&d.samples[3].0[0]].2,
            "one function alloc_a"
        );
        let main = &d.functions[&d.locations[&main_loc].2];
        assert_eq!(main, &("main".into(), "main".into(), format!("{EXE}.c")));
        assert_eq!(d.locations[&main_loc].3, 30, "line");
        assert_eq!(d.locations[&main_loc].1, 0x5000_1200, "address");
        let no_stack = &d.locations[&d.samples[2].0[0]];
        assert_eq!(
            (no_stack.0, no_stack.1),
            (0, 0),
            "[no stack] has no mapping"
        );
        let unnamed = &d.functions[&d.locations[&d.samples[1].0[0]].2];
        assert_eq!(unnamed.2, "", "no file for an unsymbolized frame");
    }

    #[test]
    fn mappings_from_modules_and_frames() {
        let d = Decoded::new(&encode(&one_process()).unwrap());
        assert_eq!(
            d.mappings,
            [
                Mapping {
                    id: 1,
                    start: 0x5000_1100,
                    limit: 0x5000_1201, // "never" (no allocation) adds no sample
                    offset: 0x1100,
                    file: EXE.into(),
                    build_id: "07abcdef".into(),
                    has_functions: true,
                },
                Mapping {
                    id: 2,
                    start: 0x7f02_a000,
                    limit: 0x7f02_a001,
                    offset: 0x2a000,
                    file: LIBC.into(),
                    build_id: "07abcdef".into(),
                    has_functions: true,
                },
            ]
        );
        // Every location of a mapping lies in it, at its module offset.
        let p = one_process();
        for s in &p.sites {
            for f in &s.frames {
                let loc = d.locations.values().find(|l| l.1 == f.addr);
                let Some(loc) = loc else { continue };
                let m = d.mappings.iter().find(|m| m.id == loc.0).unwrap();
                assert!(m.start <= f.addr && f.addr < m.limit);
                assert_eq!(f.addr - m.start + m.offset, f.module_offset);
            }
        }
    }

    #[test]
    fn several_processes_get_pid_and_comm_labels_and_own_locations() {
        let stack = || vec![frame(Some("alloc_a"), EXE, 0x1100, Some(10)), main_frame()];
        let p = profile(
            &[(1, "app"), (2, "other")],
            vec![
                site(1, 1, stack(), (1, 100, 0, 0)),
                site(2, 1, stack(), (1, 50, 0, 0)),
                site(3, 1, vec![], (1, 8, 0, 0)),
            ],
        );
        let d = Decoded::new(&encode(&p).unwrap());
        let label = |i: usize| d.samples[i].2.clone();
        assert_eq!(
            label(0),
            BTreeMap::from([("pid".into(), "#1".into()), ("comm".into(), "app".into())])
        );
        assert_eq!(
            label(1),
            BTreeMap::from([("pid".into(), "#2".into()), ("comm".into(), "other".into())])
        );
        assert_eq!(label(2), BTreeMap::from([("pid".into(), "#3".into())]));
        assert_ne!(d.samples[0].0, d.samples[1].0, "locations are per process");
        assert_eq!(
            d.functions.len(),
            3,
            "functions are shared: alloc_a, main, [no stack]"
        );
        assert_eq!(d.mappings.len(), 2, "one mapping per process and module");
        assert_eq!(
            d.locations[&d.samples[1].0[0]].0,
            d.mappings
                .iter()
                .find(|m| m.build_id == "02abcdef")
                .unwrap()
                .id
        );
    }

    #[test]
    fn losses_are_comments() {
        let mut p = one_process();
        p.losses.stack_map_full = 3;
        let d = Decoded::new(&encode(&p).unwrap());
        assert_eq!(d.comments.len(), 2);
        assert!(
            d.comments[1].contains("stack map full: 3 (raise --max-stacks)"),
            "{:?}",
            d.comments
        );
    }

    #[test]
    fn heap_shows_inuse_first_when_there_is_inuse_data() {
        let mut p = one_process();
        let d = Decoded::new(&encode_showing(&p, "inuse_space").unwrap());
        assert_eq!(d.default_sample_type, "inuse_space");
        p.mode = TraceMode::AllocOnly;
        let d = Decoded::new(&encode_showing(&p, "inuse_space").unwrap());
        assert_eq!(d.default_sample_type, "alloc_space");
    }

    #[test]
    fn alloc_only_mode_has_no_inuse_types() {
        let mut p = one_process();
        p.mode = TraceMode::AllocOnly;
        let d = Decoded::new(&encode(&p).unwrap());
        let types: Vec<&str> = d.sample_types.iter().map(|t| t.0.as_str()).collect();
        assert_eq!(types, ["alloc_objects", "alloc_space"]);
        assert!(d.samples.iter().all(|s| s.1.len() == 2));
        assert_eq!(d.samples[0].1, [10, 1000]);
        assert_eq!(d.default_sample_type, "alloc_space");
        assert!(d.comments[1].contains("no in-use data"), "{:?}", d.comments);
    }

    #[test]
    fn empty_profile() {
        let d = Decoded::new(&encode(&profile(&[], vec![])).unwrap());
        assert_eq!(d.sample_types.len(), 4);
        assert!(d.samples.is_empty() && d.locations.is_empty() && d.mappings.is_empty());
    }

    #[test]
    fn huge_counters_saturate_and_varints_round_trip() {
        let p = profile(
            &[(7, "prog")],
            vec![site(7, 1, vec![main_frame()], (u64::MAX, 1 << 40, 0, 0))],
        );
        let d = Decoded::new(&encode(&p).unwrap());
        assert_eq!(d.samples[0].1, [i64::MAX, 1 << 40, i64::MAX, 1 << 40]);
    }
}
