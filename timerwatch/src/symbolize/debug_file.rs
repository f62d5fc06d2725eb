//! Finding a binary's separate debug file where distributions install it: by build ID
//! (`DIR/.build-id/xx/rest.debug`), then by `.gnu_debuglink` name (next to the binary, in its
//! `.debug/` directory, and under `DIR/<binary's directory>/`), as gdb and perf look. Every
//! directory is looked up in our mount namespace and, when the target has another one, in the
//! target's (`/proc/PID/root/...`), since that is where its debug packages are installed.

use std::path::{Path, PathBuf};

use super::elf_facts::{hex, ElfFacts};

/// Where distributions install debug files; searched after `TIMERWATCH_DEBUG_DIRS`.
pub(crate) const DEFAULT_DEBUG_DIRS: &[&str] = &["/usr/lib/debug", "/lib/debug"];

/// Colon-separated directories searched before the defaults.
pub(crate) const DEBUG_DIRS_ENV: &str = "TIMERWATCH_DEBUG_DIRS";

/// The debug directories, in search order.
pub(crate) fn debug_dirs() -> Vec<PathBuf> {
    let extra = std::env::var_os(DEBUG_DIRS_ENV).unwrap_or_default();
    std::env::split_paths(&extra)
        .filter(|p| p.is_absolute())
        .chain(DEFAULT_DEBUG_DIRS.iter().map(PathBuf::from))
        .collect()
}

/// Roots the target's paths are seen under: ours, and the target's root when its mount
/// namespace differs from ours.
pub(crate) fn roots(pid: u32) -> Vec<PathBuf> {
    let ns = |p: &str| std::fs::read_link(Path::new("/proc").join(p).join("ns/mnt")).ok();
    let mut roots = vec![PathBuf::from("/")];
    if pid != 0 && ns("self") != ns(&pid.to_string()) {
        roots.push(PathBuf::from(format!("/proc/{pid}/root")));
    }
    roots
}

/// `root` + absolute `path`.
fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// Candidate paths for the debug file of `binary` (its path as the target sees it), best first.
pub(crate) fn candidates(
    binary: &Path,
    facts: &ElfFacts,
    dirs: &[PathBuf],
    roots: &[PathBuf],
) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(id) = facts.build_id.as_deref().filter(|id| id.len() >= 2) {
        let hex = hex(id);
        let rel = format!(".build-id/{}/{}.debug", &hex[..2], &hex[2..]);
        for root in roots {
            for dir in dirs {
                out.push(under(root, dir).join(&rel));
            }
        }
    }
    if let Some((name, _)) = &facts.debuglink {
        let bin_dir = binary.parent().unwrap_or(Path::new("/"));
        for root in roots {
            let dir = under(root, bin_dir);
            out.push(dir.join(name));
            out.push(dir.join(".debug").join(name));
            for debug_dir in dirs {
                out.push(under(&under(root, debug_dir), bin_dir).join(name));
            }
        }
    }
    out.dedup();
    out
}

/// Whether `path` is the debug file of the binary `facts` describes: same build ID when both
/// have one, else the debuglink's CRC-32 of the whole file.
pub(crate) fn matches(path: &Path, facts: &ElfFacts) -> bool {
    if !path.is_file() {
        return false;
    }
    let Some(theirs) = ElfFacts::read(path) else {
        return false;
    };
    if !theirs.own_debug_info {
        return false;
    }
    match (&facts.build_id, &theirs.build_id) {
        (Some(a), Some(b)) => a == b,
        _ => facts
            .debuglink
            .as_ref()
            .is_some_and(|&(_, crc)| crc32(path) == Some(crc)),
    }
}

fn crc32(path: &Path) -> Option<u32> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).ok()?;
    let mut crc = flate2::Crc::new();
    let mut buf = vec![0; 1 << 16];
    loop {
        match file.read(&mut buf).ok()? {
            0 => return Some(crc.sum()),
            n => crc.update(&buf[..n]),
        }
    }
}

/// The first candidate that is the binary's debug file.
pub(crate) fn find(binary: &Path, facts: &ElfFacts, pid: u32) -> Option<PathBuf> {
    candidates(binary, facts, &debug_dirs(), &roots(pid))
        .into_iter()
        .find(|p| matches(p, facts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(build_id: Option<Vec<u8>>, link: Option<&str>) -> ElfFacts {
        ElfFacts {
            build_id,
            debuglink: link.map(|l| (l.to_string(), 0)),
            ..ElfFacts::default()
        }
    }

    #[test]
    fn distribution_debug_dir_is_searched_by_default() {
        assert!(debug_dirs().contains(&PathBuf::from("/usr/lib/debug")));
    }

    #[test]
    fn build_id_paths_come_first_then_debuglink_places() {
        let dirs = [PathBuf::from("/usr/lib/debug")];
        let roots = [PathBuf::from("/"), PathBuf::from("/proc/42/root")];
        let got = candidates(
            Path::new("/usr/bin/app"),
            &facts(Some(vec![0xab, 0xcd, 0xef]), Some("app.debug")),
            &dirs,
            &roots,
        );
        let want: Vec<PathBuf> = [
            "/usr/lib/debug/.build-id/ab/cdef.debug",
            "/proc/42/root/usr/lib/debug/.build-id/ab/cdef.debug",
            "/usr/bin/app.debug",
            "/usr/bin/.debug/app.debug",
            "/usr/lib/debug/usr/bin/app.debug",
            "/proc/42/root/usr/bin/app.debug",
            "/proc/42/root/usr/bin/.debug/app.debug",
            "/proc/42/root/usr/lib/debug/usr/bin/app.debug",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(got, want);
        assert!(candidates(Path::new("/x"), &facts(None, None), &dirs, &roots).is_empty());
    }

    #[test]
    fn own_mount_namespace_has_one_root() {
        assert_eq!(roots(std::process::id()), [PathBuf::from("/")]);
    }

    #[test]
    fn a_file_without_debug_info_is_not_a_debug_file() {
        // /bin/true as "its own debug file": right build ID, but no DWARF (distribution binaries
        // are stripped), so it names nothing.
        let f = ElfFacts::read(Path::new("/bin/true")).unwrap();
        assert!(!matches(Path::new("/bin/true"), &f));
        assert!(!matches(Path::new("/nonexistent"), &f));
    }
}
