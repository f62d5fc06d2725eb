//! Live timers as profiles: folded stacks, pprof and an SVG flame graph, plus the sinks the
//! commands share (`--output`, `--pprof FILE`, `--flamegraph FILE`).

pub mod flamegraph;
pub mod folded;
pub mod group;
pub mod pprof;
pub mod stacks;

use std::path::Path;

use anyhow::{Context, Result};

use crate::cli::{ExportArgs, Format};
use crate::failure::Failure;
use crate::report::Report;

/// Writes `bytes` to `path` whole or not at all: a reader never sees half a profile.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| Failure::bad_input(format!("{}: not a file name", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Failure::bad_input(format!("cannot write {}: {e}", path.display()))
        })?;
    Ok(())
}

/// The report on stdout in the chosen format.
pub fn render(report: &Report, args: &ExportArgs, json_flag: bool, rows: Option<usize>) -> String {
    let format = if json_flag { Format::Json } else { args.output };
    match (format, args.group_by) {
        (Format::Json, _) => crate::output::json::render(report) + "\n",
        (Format::Folded, _) => folded::render(report),
        (Format::Text, Some(by)) if by != group::GroupBy::Callsite => {
            group::render(report, by, rows)
        }
        (Format::Text, _) => crate::output::text::render(report, rows),
    }
}

/// Writes the profile files asked for; `end_unix_ns` stamps the pprof profile.
pub fn write_files(report: &Report, args: &ExportArgs, end_unix_ns: i64) -> Result<()> {
    if let Some(path) = &args.pprof {
        write_file(path, &pprof::encode(&pprof::build(report, end_unix_ns)))?;
    }
    if let Some(path) = &args.flamegraph {
        let svg = flamegraph::render(report).context("flame graph")?;
        write_file(path, &svg)?;
    }
    Ok(())
}

/// Now, for profiles of a live trace.
pub fn unix_now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}
