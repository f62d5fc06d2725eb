//! `/proc/PID/maps`: which mapping an address falls in, whether it holds code, what file it is
//! and where in that file (for load biases). The one parser of that file.

use std::ops::Range;

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapEntry {
    pub range: Range<u64>,
    pub executable: bool,
    /// Offset of the mapping's start in the mapped file.
    pub offset: u64,
    /// Device as printed (`fd:01`): overlay filesystems may print a different one than `stat`.
    pub dev: String,
    pub inode: u64,
    /// The mapped file's path, a pseudo name such as `[vdso]`, or `None` for anonymous memory.
    /// A trailing " (deleted)" is dropped: the frame still names the binary that was mapped.
    pub path: Option<String>,
}

impl MapEntry {
    /// Whether the mapping is backed by a file, i.e. has a `/proc/PID/map_files` entry.
    pub fn is_file(&self) -> bool {
        self.path.as_deref().is_some_and(|p| p.starts_with('/'))
    }

    /// This mapping's name under `/proc/PID/map_files/`: the kernel prints it unpadded, unlike
    /// the maps line.
    pub fn map_files_name(&self) -> String {
        format!("{:x}-{:x}", self.range.start, self.range.end)
    }
}

/// Parse one maps line; `None` for anything malformed.
pub fn parse_line(line: &str) -> Option<MapEntry> {
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
    let offset = u64::from_str_radix(field()?, 16).ok()?;
    let dev = field()?.to_string();
    let inode = field()?.parse().ok()?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    // The kernel pads the path into a column, and the path itself may contain spaces, so it is
    // everything after the padding rather than the next whitespace-separated field.
    let path = rest.trim_start_matches(' ');
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    Some(MapEntry {
        range: start..end,
        executable: perms.as_bytes().get(2) == Some(&b'x'),
        offset,
        dev,
        inode,
        path: (!path.is_empty()).then(|| path.to_string()),
    })
}

/// A process's mappings, sorted by address.
#[derive(Clone, Debug, Default)]
pub struct Maps {
    entries: Vec<MapEntry>,
}

impl Maps {
    pub fn parse(text: &str) -> Self {
        let mut entries: Vec<MapEntry> = text.lines().filter_map(parse_line).collect();
        entries.sort_by_key(|e| e.range.start);
        Self { entries }
    }

    pub fn read(pid: u32) -> std::io::Result<Self> {
        std::fs::read_to_string(crate::proc_path(pid, "maps")).map(|text| Self::parse(&text))
    }

    /// Our own mappings.
    pub fn read_own() -> std::io::Result<Self> {
        std::fs::read_to_string("/proc/self/maps").map(|text| Self::parse(&text))
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
    fn parses_offset_device_and_inode() {
        let m = parse_line(
            "7f3c2a000000-7f3c2a0c9000 r-xp 00001000 fd:01 1234567   /usr/bin/app (deleted)",
        )
        .unwrap();
        assert_eq!(m.range.start, 0x7f3c2a000000);
        assert_eq!(m.offset, 0x1000);
        assert_eq!(m.dev, "fd:01");
        assert_eq!(m.inode, 1234567);
        assert_eq!(m.map_files_name(), "7f3c2a000000-7f3c2a0c9000");
        assert!(parse_line("garbage").is_none());
        let low = parse_line("00400000-00401000 r-xp 00000000 08:01 42 /bin/app").unwrap();
        assert_eq!(low.map_files_name(), "400000-401000");
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
