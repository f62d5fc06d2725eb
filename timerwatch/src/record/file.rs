//! The recording format: gzipped JSON Lines. The first line is a [`Header`]; every other line
//! is one `timerwatch.report/v1` document, as `--json` and the daemon's `/report` print it.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Result;
use flate2::{read::MultiGzDecoder, write::GzEncoder, Compression};
use serde::{Deserialize, Serialize};

use crate::failure::Failure;
use crate::report::Report;

pub const FORMAT: &str = "timerwatch.recording/v1";

/// Decompressed bytes a recording may hold: far beyond any real one, and a bound on what a
/// crafted file can make us allocate.
const MAX_BYTES: u64 = 4 << 30;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Header {
    pub format: String,
    pub host: String,
    pub kernel: String,
    pub timerwatch_version: String,
    /// When tracing started, seconds since the Unix epoch, and the same as UTC text.
    pub started_unix_s: f64,
    pub started: String,
    pub interval_s: f64,
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
}

fn first_line(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// `2026-12-01T06:15:02Z` from Unix seconds (UTC; civil-from-days, proleptic Gregorian).
pub fn utc_text(unix_s: f64) -> String {
    let secs = unix_s.max(0.0) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl Header {
    pub fn here(interval_s: f64, pids: &[u32], comms: &[String]) -> Header {
        let started_unix_s = crate::export::unix_now_ns() as f64 / 1e9;
        Header {
            format: FORMAT.into(),
            host: first_line("/proc/sys/kernel/hostname"),
            kernel: first_line("/proc/sys/kernel/osrelease"),
            timerwatch_version: env!("CARGO_PKG_VERSION").into(),
            started_unix_s,
            started: utc_text(started_unix_s),
            interval_s,
            pids: pids.to_vec(),
            comms: comms.to_vec(),
        }
    }
}

/// A recording being written: each report is flushed as it is added, so `tail`-like readers
/// and a crash lose at most the compressor's trailer.
pub struct Writer {
    gz: GzEncoder<File>,
    path: PathBuf,
}

impl Writer {
    pub fn create(path: &Path, header: &Header) -> Result<Writer> {
        let file = File::create(path)
            .map_err(|e| Failure::bad_input(format!("cannot create {}: {e}", path.display())))?;
        let mut w = Writer {
            gz: GzEncoder::new(file, Compression::default()),
            path: path.to_owned(),
        };
        w.line(&serde_json::to_string(header)?)?;
        Ok(w)
    }

    fn line(&mut self, json: &str) -> Result<()> {
        self.gz
            .write_all(json.as_bytes())
            .and_then(|_| self.gz.write_all(b"\n"))
            .and_then(|_| self.gz.flush())
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", self.path.display()))
    }

    pub fn add(&mut self, report: &Report) -> Result<()> {
        self.line(&crate::output::json::render(report))
    }

    pub fn finish(self) -> Result<()> {
        let path = self.path;
        self.gz
            .finish()
            .and_then(|f| f.sync_all())
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
    }
}

/// A recording, or a single `--json` report, read back.
#[derive(Debug)]
pub struct Recording {
    /// None for a plain `--json` report.
    pub header: Option<Header>,
    pub reports: Vec<Report>,
}

impl Recording {
    /// The report that saw the whole window: the last one.
    pub fn last(&self) -> &Report {
        // `read` never returns a recording without reports.
        self.reports.last().expect("a recording has a report")
    }
}

fn bad(path: &Path, what: impl std::fmt::Display) -> anyhow::Error {
    Failure::bad_input(format!("{}: {what}", path.display())).into()
}

/// Reads a gzipped recording, or a plain (`--json`) report or JSON Lines of them. Every
/// problem is one line naming the file, with exit code 2.
pub fn read(path: &Path) -> Result<Recording> {
    let mut file = File::open(path).map_err(|e| bad(path, format!("cannot open: {e}")))?;
    let mut magic = [0u8; 2];
    let n = file
        .read(&mut magic)
        .map_err(|e| bad(path, format!("cannot read: {e}")))?;
    let head = std::io::Cursor::new(magic[..n].to_vec());
    let raw = head.chain(file);
    let gz = n == 2 && magic == [0x1f, 0x8b];
    let reader: Box<dyn Read> = if gz {
        Box::new(MultiGzDecoder::new(raw))
    } else {
        Box::new(raw)
    };
    parse(path, BufReader::new(reader.take(MAX_BYTES)), gz)
}

fn parse(path: &Path, reader: impl BufRead, gz: bool) -> Result<Recording> {
    let mut header = None;
    let mut reports = Vec::new();
    for (i, line) in reader.split(b'\n').enumerate() {
        let line = line.map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => bad(
                path,
                "truncated recording: the compressed stream ends early (was `record` killed or the copy cut short?)",
            ),
            _ if gz => bad(path, format!("corrupt recording: {e}")),
            _ => bad(path, format!("cannot read: {e}")),
        })?;
        let text = std::str::from_utf8(&line)
            .map_err(|_| bad(path, format!("line {}: not UTF-8 text", i + 1)))?
            .trim();
        if text.is_empty() {
            continue;
        }
        if i == 0 && text.contains(FORMAT) {
            let h: Header = serde_json::from_str(text)
                .map_err(|e| bad(path, format!("line 1: bad recording header: {e}")))?;
            header = Some(h);
            continue;
        }
        // Through an owned Value: the report's `&'static str` fields make its Deserialize
        // borrow for 'static, which only an owned deserializer satisfies.
        let report = serde_json::from_str::<serde_json::Value>(text)
            .and_then(Report::deserialize)
            .map_err(|e| {
                bad(
                    path,
                    format!(
                        "line {}: not a timerwatch recording or --json report ({e})",
                        i + 1
                    ),
                )
            })?;
        if report.schema != crate::report::SCHEMA {
            return Err(bad(
                path,
                format!("line {}: unknown report schema {:?}", i + 1, report.schema),
            ));
        }
        reports.push(report);
    }
    if reports.is_empty() {
        return Err(bad(path, "no reports in it (empty or not a recording)"));
    }
    Ok(Recording { header, reports })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{callsite, process, report};

    fn sample() -> Report {
        report(vec![process(4, "leaky", vec![callsite("leak", 3)])])
    }

    fn recorded(dir: &Path) -> PathBuf {
        let path = dir.join("r.twr");
        let mut w = Writer::create(&path, &Header::here(1.0, &[4], &[])).unwrap();
        w.add(&sample()).unwrap();
        w.add(&sample()).unwrap();
        w.finish().unwrap();
        path
    }

    fn error_of(path: &Path) -> (u8, String) {
        crate::failure::one_line(&read(path).unwrap_err())
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let rec = read(&recorded(dir.path())).unwrap();
        assert_eq!(rec.reports.len(), 2);
        assert_eq!(rec.last(), &sample());
        let h = rec.header.unwrap();
        assert_eq!(h.format, FORMAT);
        assert_eq!(h.pids, [4]);
        assert!(!h.kernel.is_empty());
    }

    #[test]
    fn plain_json_report_reads_as_one_report() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        std::fs::write(&path, crate::output::json::render(&sample()) + "\n").unwrap();
        let rec = read(&path).unwrap();
        assert!(rec.header.is_none());
        assert_eq!(rec.last(), &sample());
    }

    #[test]
    fn truncated_and_corrupt_files_are_one_line_exit_2() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = std::fs::read(recorded(dir.path())).unwrap();
        let cut = dir.path().join("cut");
        std::fs::write(&cut, &bytes[..bytes.len() - 12]).unwrap();
        let (code, line) = error_of(&cut);
        assert_eq!(code, 2);
        assert!(line.contains("truncated"), "{line}");
        assert!(!line.contains('\n'));
        let mut flipped = bytes.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0xff;
        let bad_file = dir.path().join("bad");
        std::fs::write(&bad_file, &flipped).unwrap();
        let (code, line) = error_of(&bad_file);
        assert_eq!(code, 2);
        assert!(line.starts_with(&bad_file.display().to_string()), "{line}");
        let junk = dir.path().join("junk");
        std::fs::write(&junk, "hello\n").unwrap();
        assert_eq!(error_of(&junk).0, 2);
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "").unwrap();
        assert!(error_of(&empty).1.contains("no reports"));
        assert_eq!(error_of(&dir.path().join("missing")).0, 2);
    }

    #[test]
    fn utc_text_is_civil_time() {
        assert_eq!(utc_text(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_text(1_796_105_702.0), "2026-12-01T06:15:02Z");
        assert_eq!(utc_text(951_782_400.0), "2000-02-29T00:00:00Z");
    }
}
