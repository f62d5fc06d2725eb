//! pprof's profile.proto, gzipped: what `go tool pprof`, Grafana Pyroscope and speedscope read.
//!
//! The messages are declared here with prost's derive and the field numbers of
//! github.com/google/pprof/proto/profile.proto; only the fields timerwatch fills are declared
//! (protobuf readers skip absent fields). No .proto file or protoc is needed at build time.

use std::collections::HashMap;
use std::io::Write;

use flate2::{write::GzEncoder, Compression};
use prost::Message;

use super::stacks::{self, Frame};
use crate::report::Report;

#[derive(Clone, PartialEq, Message)]
pub struct Profile {
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct ValueType {
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    /// Leaf first.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Label {
    #[prost(int64, tag = "1")]
    pub key: i64,
    #[prost(int64, tag = "2")]
    pub str: i64,
    #[prost(int64, tag = "3")]
    pub num: i64,
}

/// One mapping for every location, saying they are symbolized already, so that pprof
/// neither looks for binaries nor complains that the main one is unknown.
#[derive(Clone, PartialEq, Message)]
pub struct Mapping {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "5")]
    pub filename: i64,
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct Location {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Line {
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    #[prost(int64, tag = "2")]
    pub line: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Function {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "2")]
    pub name: i64,
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    #[prost(int64, tag = "4")]
    pub filename: i64,
}

/// The profile's string table: index 0 must be "".
#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn id(&mut self, s: &str) -> i64 {
        if self.table.is_empty() {
            self.table.push(String::new());
            self.index.insert(String::new(), 0);
        }
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }
}

/// The value columns, in order; the first is the default view.
pub const SAMPLE_TYPES: [&str; 3] = ["live_timers", "armed", "wakeups"];

/// `report` as a profile: one sample per callsite, valued live timers, arms and wake-ups over
/// the window, labelled with pid, comm and kind. `time_nanos` is when the window ended.
pub fn build(report: &Report, end_unix_ns: i64) -> Profile {
    let mut strings = Strings::default();
    strings.id("");
    let count = strings.id("count");
    let sample_type = SAMPLE_TYPES
        .iter()
        .map(|t| ValueType {
            r#type: strings.id(t),
            unit: count,
        })
        .collect();
    let (pid, comm, kind) = (strings.id("pid"), strings.id("comm"), strings.id("kind"));
    let mut functions: HashMap<(String, Option<String>), u64> = HashMap::new();
    let mut function = Vec::new();
    let mut locations: HashMap<Frame, u64> = HashMap::new();
    let mut location = Vec::new();
    let mut sample = Vec::new();
    for s in stacks::of_report(report) {
        let mut ids = Vec::with_capacity(s.frames.len());
        for f in s.frames.iter().rev() {
            let key = (f.function.clone(), f.file.clone());
            let next_fn = functions.len() as u64 + 1;
            let function_id = *functions.entry(key).or_insert_with(|| {
                let name = strings.id(&f.function);
                function.push(Function {
                    id: next_fn,
                    name,
                    system_name: name,
                    filename: f.file.as_deref().map_or(0, |file| strings.id(file)),
                });
                next_fn
            });
            let next_loc = locations.len() as u64 + 1;
            let id = *locations.entry(f.clone()).or_insert_with(|| {
                location.push(Location {
                    id: next_loc,
                    mapping_id: 1,
                    line: vec![Line {
                        function_id,
                        line: f.line.map_or(0, |l| l as i64),
                    }],
                });
                next_loc
            });
            ids.push(id);
        }
        sample.push(Sample {
            location_id: ids,
            value: vec![s.live as i64, s.armed as i64, s.wakeups as i64],
            label: vec![
                Label {
                    key: pid,
                    str: 0,
                    num: i64::from(s.pid),
                },
                Label {
                    key: comm,
                    str: strings.id(&s.comm),
                    num: 0,
                },
                Label {
                    key: kind,
                    str: strings.id(s.kind.as_str()),
                    num: 0,
                },
            ],
        });
    }
    let comment = vec![strings.id(&format!(
        "timerwatch {}: live timers per callsite",
        env!("CARGO_PKG_VERSION")
    ))];
    let default_sample_type = strings.id(SAMPLE_TYPES[0]);
    let mapping = vec![Mapping {
        id: 1,
        filename: strings.id("[timerwatch]"),
        has_functions: true,
        has_filenames: true,
        has_line_numbers: true,
    }];
    Profile {
        sample_type,
        sample,
        mapping,
        location,
        function,
        string_table: strings.table,
        time_nanos: end_unix_ns,
        duration_nanos: (report.duration_s * 1e9) as i64,
        comment,
        default_sample_type,
    }
}

/// The gzipped encoding, as pprof files are stored.
pub fn encode(profile: &Profile) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    // Writing to a Vec cannot fail.
    gz.write_all(&profile.encode_to_vec())
        .expect("gzip to memory");
    gz.finish().expect("gzip to memory")
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::report::fixtures::{callsite, process, report};
    use crate::report::CallsiteReport;

    #[test]
    fn profile_round_trips_with_leaf_first_locations_and_shared_functions() {
        let c = CallsiteReport {
            frames: vec!["timer_settime".into(), "leak (a.c:3)".into()],
            naming: Vec::new(),
            ..callsite("leak", 5)
        };
        let r = report(vec![process(9, "app", vec![c.clone(), c])]);
        let bytes = encode(&build(&r, 1));
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut raw)
            .unwrap();
        let p = Profile::decode(&raw[..]).unwrap();
        let s = |i: i64| p.string_table[i as usize].as_str();
        assert_eq!(p.string_table[0], "");
        let types: Vec<&str> = p.sample_type.iter().map(|t| s(t.r#type)).collect();
        assert_eq!(types, SAMPLE_TYPES);
        assert_eq!(p.sample.len(), 2);
        assert_eq!(p.sample[0].value, vec![5, 5, 0]);
        assert_eq!(p.sample[0].location_id, p.sample[1].location_id);
        // app;leak;timer_settime;timerfd_tmrproc: four locations, leaf first.
        assert_eq!(p.location.len(), 4);
        let leaf = &p.location[p.sample[0].location_id[0] as usize - 1];
        let f = &p.function[leaf.line[0].function_id as usize - 1];
        assert_eq!(s(f.name), "timerfd_tmrproc");
        let leak = p.function.iter().find(|f| s(f.name) == "leak").unwrap();
        assert_eq!(s(leak.filename), "a.c");
        assert_eq!(s(p.default_sample_type), "live_timers");
    }
}
