//! `/proc/PID/maps`: which mapping an address falls in, whether it holds code, and what file it is.

use std::ops::Range;

/// One line of `/proc/PID/maps`, reduced to what stack recovery and frame labels need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MapEntry {
    pub range: Range<u64>,
    pub executable: bool,
    /// The mapped file's path, a pseudo name such as `[vdso]`, or `None` for anonymous memory.
    /// A trailing " (deleted)" is dropped: the frame still names the binary that was mapped.
    pub path: Option<String>,
}

impl MapEntry {
    /// Whether the mapping is backed by a file, i.e. has a `/proc/PID/map_files` entry.
    pub fn is_file(&self) -> bool {
        self.path.as_deref().is_some_and(|p| p.starts_with('/'))
    }
}

/// Parse one maps line; `None` for anything malformed.
pub(crate) fn parse_line(line: &str) -> Option<MapEntry> {
    let mut rest = line;
    let mut field = || {
        let trimmed = rest.trim_start_matches(' ');
        let end = trimmed.find(' ').unwrap_or(trimmed.len());
        let (f, tail) = trimmed.split_at(end);
        rest = tail;
        (!f.is_empty()).then_some(f)
    };
    let (start, end) = field()?.split_once('-')?;
    let perms = field()?;
    let _offset = field()?;
    let _dev = field()?;
    let _inode = field()?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    // The kernel pads the path into a column, and the path itself may contain spaces, so it is
    // everything after the padding rather than the next whitespace-separated field.
    let path = rest.trim_start_matches(' ');
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    Some(MapEntry {
        range: start..end,
        executable: perms.as_bytes().get(2) == Some(&b'x'),
        path: (!path.is_empty()).then(|| path.to_string()),
    })
}

/// A process's mappings, sorted by address.
#[derive(Clone, Debug, Default)]
pub(crate) struct Maps {
    entries: Vec<MapEntry>,
}

impl Maps {
    pub fn parse(text: &str) -> Self {
        let mut entries: Vec<MapEntry> = text.lines().filter_map(parse_line).collect();
        entries.sort_by_key(|e| e.range.start);
        Self { entries }
    }

    pub fn read(pid: u32) -> std::io::Result<Self> {
        std::fs::read_to_string(format!("/proc/{pid}/maps")).map(|text| Self::parse(&text))
    }

    pub fn find(&self, addr: u64) -> Option<&MapEntry> {
        let idx = self.entries.partition_point(|e| e.range.start <= addr);
        let entry = self.entries.get(idx.checked_sub(1)?)?;
        entry.range.contains(&addr).then_some(entry)
    }

    pub fn is_executable(&self, addr: u64) -> bool {
        self.find(addr).is_some_and(|e| e.executable)
    }

    /// The name a frame at `addr` is labelled with.
    pub fn module(&self, addr: u64) -> Option<String> {
        self.find(addr)?.path.clone()
    }

    pub fn entries(&self) -> &[MapEntry] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_backed_code() {
        let e = parse_line(
            "7f1c2a628000-7f1c2a7b0000 r-xp 00028000 fd:01 3946     \
             /usr/lib/x86_64-linux-gnu/libc.so.6",
        )
        .unwrap();
        assert_eq!(e.range, 0x7f1c2a628000..0x7f1c2a7b0000);
        assert!(e.executable);
        assert_eq!(
            e.path.as_deref(),
            Some("/usr/lib/x86_64-linux-gnu/libc.so.6")
        );
        assert!(e.is_file());
    }

    #[test]
    fn keeps_spaces_in_paths_and_drops_deleted() {
        let e = parse_line("400000-401000 r-xp 00000000 08:01 42   /opt/my app/bin x (deleted)")
            .unwrap();
        assert_eq!(e.path.as_deref(), Some("/opt/my app/bin x"));
    }

    #[test]
    fn pseudo_and_anonymous_mappings() {
        let vdso = parse_line("7ffd1b3f0000-7ffd1b3f2000 r-xp 00000000 00:00 0   [vdso]").unwrap();
        assert_eq!(vdso.path.as_deref(), Some("[vdso]"));
        assert!(vdso.executable);
        assert!(!vdso.is_file());

        let anon = parse_line("7f1c2a400000-7f1c2a600000 rw-p 00000000 00:00 0 ").unwrap();
        assert_eq!(anon.path, None);
        assert!(!anon.executable);
        let bare = parse_line("7f1c2a400000-7f1c2a600000 rw-p 00000000 00:00 0").unwrap();
        assert_eq!(bare.path, None);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_line(""), None);
        assert_eq!(parse_line("not a maps line"), None);
        assert_eq!(parse_line("zz-10 r-xp 0 0:0 0"), None);
    }

    #[test]
    fn finds_addresses_in_unsorted_maps() {
        let maps = Maps::parse(
            "2000-3000 rw-p 00000000 00:00 0\n\
             1000-2000 r-xp 00000000 08:01 7 /bin/app\n\
             5000-6000 r-xp 00000000 00:00 0 [vdso]\n",
        );
        assert_eq!(maps.module(0x1000).as_deref(), Some("/bin/app"));
        assert!(maps.is_executable(0x1fff));
        assert!(!maps.is_executable(0x2000));
        assert_eq!(maps.find(0x2000).unwrap().path, None);
        assert_eq!(maps.find(0x3000), None);
        assert_eq!(maps.find(0xfff), None);
        assert_eq!(maps.module(0x5800).as_deref(), Some("[vdso]"));
        assert_eq!(maps.find(0x6000), None);
    }
}
