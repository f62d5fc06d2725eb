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
/// `live`: the report is of this machine, now (not a recording), see [`group::render`].
pub fn render(
    report: &Report,
    args: &ExportArgs,
    json_flag: bool,
    rows: Option<usize>,
    live: bool,
) -> String {
    let format = if json_flag { Format::Json } else { args.output };
    match (format, args.group_by) {
        (Format::Json, _) => crate::output::json::render(report) + "\n",
        (Format::Folded, _) => folded::render(report),
        (Format::Text, Some(by)) if by != group::GroupBy::Callsite => {
            group::render(report, by, rows, live)
        }
        (Format::Text, _) => crate::output::text::render(report, rows),
    }
}

/// Fails early, before any tracing, when a profile file could not be written at the end: its
/// directory is missing or not a directory.
pub fn check_paths(args: &ExportArgs) -> Result<()> {
    for path in args.pprof.iter().chain(&args.flamegraph) {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.is_dir() || path.is_dir() {
            return Err(Failure::bad_input(format!(
                "cannot write {}: {} is not a directory",
                path.display(),
                if path.is_dir() { path } else { dir }.display()
            ))
            .into());
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_directories_are_caught_before_tracing() {
        let dir = tempfile::tempdir().unwrap();
        let args = |pprof: &Path| ExportArgs {
            output: Format::Text,
            pprof: Some(pprof.to_owned()),
            flamegraph: None,
            group_by: None,
        };
        assert!(check_paths(&args(&dir.path().join("p.pb.gz"))).is_ok());
        assert!(check_paths(&args(Path::new("p.pb.gz"))).is_ok());
        let err = check_paths(&args(&dir.path().join("no/p.pb.gz"))).unwrap_err();
        assert_eq!(crate::failure::one_line(&err).0, 2);
        assert!(check_paths(&args(dir.path())).is_err());
    }
}
