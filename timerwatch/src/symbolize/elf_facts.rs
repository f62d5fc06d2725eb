//! What symbolization needs to know about one mapped ELF file, read once per binary: how file
//! offsets map to link-time addresses, its build ID and `.gnu_debuglink`, and whether it carries
//! its own DWARF. Read through `timerwatch_go`'s ELF reader (the project's one ELF parser).

use std::path::Path;

use timerwatch_go::elf::{Elf, Segment};

/// A build ID longer than this is not one any linker writes; the note is malformed.
const MAX_BUILD_ID: usize = 64;
/// `.gnu_debuglink` holds a file name and a CRC: anything larger is not one.
const MAX_DEBUGLINK: u64 = 4096;
/// Notes sections are small; a huge one is hostile input, not a build ID.
const MAX_NOTES: u64 = 1 << 16;
const SHT_NOTE: u32 = 7;
const SHT_NOBITS: u32 = 8;
const NT_GNU_BUILD_ID: u32 = 3;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ElfFacts {
    /// `PT_LOAD` segments, to turn a file offset into the link-time address symbols use.
    pub(crate) segments: Vec<(u64, u64, u64)>,
    pub build_id: Option<Vec<u8>>,
    /// File name and CRC-32 from `.gnu_debuglink`.
    pub debuglink: Option<(String, u32)>,
    /// The file has DWARF of its own (not stripped of it), so no separate file is needed.
    pub own_debug_info: bool,
    /// Go's linker marks its binaries with these sections (kept by `-ldflags=-s -w`).
    pub go: bool,
}

impl ElfFacts {
    pub fn read(path: &Path) -> Option<Self> {
        let elf = Elf::open(path).ok()?;
        Some(Self::from_elf(&elf))
    }

    pub fn from_elf(elf: &Elf) -> Self {
        Self {
            segments: elf
                .segments
                .iter()
                .map(|s: &Segment| (s.offset, s.vaddr, s.filesz))
                .collect(),
            build_id: build_id(elf),
            debuglink: debuglink(elf),
            own_debug_info: elf
                .section(".debug_info")
                .is_some_and(|s| s.kind != SHT_NOBITS && s.size > 0),
            go: elf.section(".go.buildinfo").is_some() || elf.section(".gopclntab").is_some(),
        }
    }

    /// The link-time address of file offset `offset`, if a loaded segment holds it.
    pub fn vaddr(&self, offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|&&(off, _, size)| offset >= off && offset - off < size)
            .map(|&(off, vaddr, _)| vaddr + (offset - off))
    }
}

/// The lowercase hex spelling used in `.build-id` paths and debuginfod URLs.
pub(crate) fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn build_id(elf: &Elf) -> Option<Vec<u8>> {
    elf.sections
        .iter()
        .filter(|s| s.kind == SHT_NOTE && s.size <= MAX_NOTES)
        .find_map(|s| gnu_build_id(&elf.section_data(s).ok()?))
}

/// The `NT_GNU_BUILD_ID` descriptor in a notes section's bytes.
pub(crate) fn gnu_build_id(notes: &[u8]) -> Option<Vec<u8>> {
    let word = |at: usize| -> Option<usize> {
        let b = notes.get(at..at + 4)?;
        usize::try_from(u32::from_le_bytes(b.try_into().ok()?)).ok()
    };
    let align4 = |n: usize| n.checked_add(3).map(|n| n & !3);
    let mut at = 0;
    while at + 12 <= notes.len() {
        let (namesz, descsz, kind) = (word(at)?, word(at + 4)?, word(at + 8)?);
        let name_at = at + 12;
        let desc_at = name_at.checked_add(align4(namesz)?)?;
        let next = desc_at.checked_add(align4(descsz)?)?;
        let name = notes.get(name_at..name_at.checked_add(namesz)?)?;
        let desc = notes.get(desc_at..desc_at.checked_add(descsz)?)?;
        if kind == NT_GNU_BUILD_ID as usize
            && name == b"GNU\0"
            && (1..=MAX_BUILD_ID).contains(&desc.len())
        {
            return Some(desc.to_vec());
        }
        at = next;
    }
    None
}

fn debuglink(elf: &Elf) -> Option<(String, u32)> {
    let section = elf.section(".gnu_debuglink")?;
    if section.size > MAX_DEBUGLINK {
        return None;
    }
    parse_debuglink(&elf.section_data(section).ok()?)
}

/// A file name (no directories, which would let a binary point us anywhere), NUL, padding to
/// four bytes, then the CRC-32 of the debug file.
pub(crate) fn parse_debuglink(data: &[u8]) -> Option<(String, u32)> {
    let end = data.iter().position(|&b| b == 0)?;
    let name = std::str::from_utf8(&data[..end]).ok()?;
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return None;
    }
    let crc_at = (end + 1 + 3) & !3;
    let crc = u32::from_le_bytes(data.get(crc_at..crc_at + 4)?.try_into().ok()?);
    Some((name.to_string(), crc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(name);
        out.resize(out.len().next_multiple_of(4), 0);
        out.extend_from_slice(desc);
        out.resize(out.len().next_multiple_of(4), 0);
        out
    }

    #[test]
    fn build_id_is_found_after_other_notes() {
        let mut notes = note(b"GNU\0", 1, &[0; 16]);
        notes.extend(note(b"GNU\0", NT_GNU_BUILD_ID, &[0xab, 0xcd, 1, 2, 3]));
        assert_eq!(gnu_build_id(&notes), Some(vec![0xab, 0xcd, 1, 2, 3]));
        assert_eq!(hex(&[0xab, 0x01]), "ab01");
    }

    #[test]
    fn malformed_notes_yield_nothing() {
        assert_eq!(gnu_build_id(&[]), None);
        // A size that runs past the end, and one that would overflow.
        let mut notes = note(b"GNU\0", NT_GNU_BUILD_ID, &[1; 8]);
        notes[4..8].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(gnu_build_id(&notes), None);
        notes[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(gnu_build_id(&notes), None);
        // Another vendor's note of the same type.
        assert_eq!(
            gnu_build_id(&note(b"Go\0\0", NT_GNU_BUILD_ID, &[1; 8])),
            None
        );
    }

    #[test]
    fn debuglink_names_a_file_and_its_crc() {
        let mut data = b"app.debug\0\0\0".to_vec();
        data.extend_from_slice(&0x1234_5678u32.to_le_bytes());
        assert_eq!(
            parse_debuglink(&data),
            Some(("app.debug".to_string(), 0x1234_5678))
        );
        let mut escape = b"../../etc/x\0".to_vec();
        escape.extend_from_slice(&[0; 4]);
        assert_eq!(parse_debuglink(&escape), None);
        assert_eq!(parse_debuglink(b"short\0"), None);
    }

    #[test]
    fn own_binary_has_segments_and_a_build_id() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let facts = ElfFacts::read(&exe).expect("our own ELF");
        assert!(facts.own_debug_info, "tests are built with debug info");
        // Rust's linker invocation asks for a build ID on Linux.
        let elf = Elf::open(&exe).unwrap();
        let text = elf.section(".text").expect(".text");
        assert_eq!(facts.vaddr(text.offset), Some(text.addr));
        assert_eq!(facts.vaddr(u64::MAX), None);
    }
}
