//! Just enough ELF64 (little-endian) to find a Go binary's sections, segments and symbols.
//!
//! The file stays open and is read with `pread`, so a large binary is never loaded whole: only
//! the pieces `analyze` asks for (pclntab, buildinfo, a few functions' code) come into memory.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use timerwatch_proc::budget::Budget;

use super::Error;

const ET_DYN: u16 = 3;
const PT_LOAD: u32 = 1;
const SHT_SYMTAB: u32 = 2;
const SHT_NOBITS: u32 = 8;
pub const EM_X86_64: u16 = 62;

#[derive(Clone, Debug)]
pub struct Section {
    pub name: String,
    pub kind: u32,
    pub addr: u64,
    pub offset: u64,
    pub size: u64,
    pub link: u32,
}

/// A `PT_LOAD` segment.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub vaddr: u64,
    pub offset: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub flags: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    pub name: String,
    pub value: u64,
    pub size: u64,
}

pub struct Elf {
    file: File,
    /// Bounds every read: sizes in headers are the file's word, not ours to allocate.
    len: u64,
    /// Bounds all reads of one open file together: a binary the target chose (a huge one, or
    /// one on a stalled filesystem) costs one analysis at most this, then fails it with a line.
    budget: Budget,
    pub file_type: u16,
    pub machine: u16,
    pub sections: Vec<Section>,
    pub segments: Vec<Segment>,
}

impl std::fmt::Debug for Elf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elf")
            .field("file_type", &self.file_type)
            .field("machine", &self.machine)
            .field("sections", &self.sections.len())
            .finish()
    }
}

/// What one analysis of a binary may spend reading it. The largest Go servers (kubelet,
/// Prometheus: 100–200 MB, pclntab tens of MB) need a fraction of either.
pub const ANALYSIS_TIME: Duration = Duration::from_secs(10);
pub const ANALYSIS_BYTES: u64 = 1 << 30;

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn malformed(what: &str) -> Error {
    Error::Malformed(format!("ELF: {what}"))
}

/// A NUL-terminated string at `off` in a string table.
fn cstr(table: &[u8], off: usize) -> Option<&[u8]> {
    let rest = table.get(off..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    Some(&rest[..end])
}

impl Elf {
    /// Anything that is not a 64-bit little-endian ELF file is "not Go" as far as timerwatch is
    /// concerned: there is nothing it could attach to.
    pub fn open(path: &Path) -> Result<Elf, Error> {
        Elf::open_within(path, Budget::new(ANALYSIS_TIME, ANALYSIS_BYTES))
    }

    /// [`Elf::open`] with its reads bounded by `budget`.
    pub fn open_within(path: &Path, budget: Budget) -> Result<Elf, Error> {
        let file = File::open(path)?;
        let mut header = [0u8; 64];
        match file.read_exact_at(&mut header, 0) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(Error::NotGo),
            Err(e) => return Err(e.into()),
        }
        if &header[..4] != b"\x7fELF" || header[4] != 2 || header[5] != 1 {
            return Err(Error::NotGo);
        }
        let file_type = u16_at(&header, 16);
        let machine = u16_at(&header, 18);
        let phoff = u64_at(&header, 32);
        let shoff = u64_at(&header, 40);
        let phentsize = u16_at(&header, 54) as usize;
        let phnum = u16_at(&header, 56) as usize;
        let shentsize = u16_at(&header, 58) as usize;
        let shnum = u16_at(&header, 60) as usize;
        let shstrndx = u16_at(&header, 62) as usize;

        let len = file.metadata()?.len();
        let mut elf = Elf {
            file,
            len,
            budget,
            file_type,
            machine,
            sections: Vec::new(),
            segments: Vec::new(),
        };
        if phnum > 0 {
            if phentsize < 56 {
                return Err(malformed("program header entries too small"));
            }
            let table = elf.read(phoff, phentsize * phnum)?;
            for raw in table.chunks_exact(phentsize) {
                if u32_at(raw, 0) == PT_LOAD {
                    elf.segments.push(Segment {
                        flags: u32_at(raw, 4),
                        offset: u64_at(raw, 8),
                        vaddr: u64_at(raw, 16),
                        filesz: u64_at(raw, 32),
                        memsz: u64_at(raw, 40),
                    });
                }
            }
        }
        // Section headers are optional (sstrip removes them); callers fall back to scanning.
        if shnum > 0 && shoff != 0 {
            if shentsize < 64 || shstrndx >= shnum {
                return Err(malformed("bad section header table"));
            }
            let table = elf.read(shoff, shentsize * shnum)?;
            let raw: Vec<&[u8]> = table.chunks_exact(shentsize).collect();
            let strtab_hdr = raw[shstrndx];
            let names = elf.read(u64_at(strtab_hdr, 24), u64_at(strtab_hdr, 32) as usize)?;
            for s in raw {
                let name = cstr(&names, u32_at(s, 0) as usize).unwrap_or_default();
                elf.sections.push(Section {
                    name: String::from_utf8_lossy(name).into_owned(),
                    kind: u32_at(s, 4),
                    addr: u64_at(s, 16),
                    offset: u64_at(s, 24),
                    size: u64_at(s, 32),
                    link: u32_at(s, 40),
                });
            }
        }
        Ok(elf)
    }

    pub fn is_pie(&self) -> bool {
        self.file_type == ET_DYN
    }

    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    pub fn has_symtab(&self) -> bool {
        self.sections.iter().any(|s| s.kind == SHT_SYMTAB)
    }

    pub fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        // A corrupt (or hostile) size must fail here rather than allocate terabytes.
        if offset.saturating_add(len as u64) > self.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{len} bytes at {offset:#x} run past the end of the file"),
            ));
        }
        self.budget.spend(len).map_err(|cut| {
            io::Error::other(format!(
                "reading the binary took over its analysis budget ({}: {} s, {} MiB)",
                cut.as_str(),
                ANALYSIS_TIME.as_secs(),
                ANALYSIS_BYTES >> 20
            ))
        })?;
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// Section contents; `SHT_NOBITS` sections (.bss) have none in the file.
    pub fn section_data(&self, section: &Section) -> io::Result<Vec<u8>> {
        if section.kind == SHT_NOBITS {
            return Ok(Vec::new());
        }
        self.read(section.offset, section.size as usize)
    }

    /// The segment whose file-backed part holds `vaddr`.
    pub fn segment_of(&self, vaddr: u64) -> Option<&Segment> {
        self.segments
            .iter()
            .find(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.filesz)
    }

    /// File offset of a link-time virtual address. This is the number uprobes want: the kernel
    /// attaches to (inode, offset), and aya's `UProbeAttachLocation::AbsoluteOffset` is exactly
    /// that offset (same result as its `from_virtual_address` on the containing section).
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.segment_of(vaddr).map(|s| vaddr - s.vaddr + s.offset)
    }

    pub fn read_vaddr(&self, vaddr: u64, len: usize) -> io::Result<Vec<u8>> {
        let seg = self.segment_of(vaddr).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("address {vaddr:#x} is not backed by the file"),
            )
        })?;
        // Clamp to the segment so a read near its end does not run into unrelated bytes.
        let avail = (seg.vaddr + seg.filesz - vaddr) as usize;
        self.read(vaddr - seg.vaddr + seg.offset, len.min(avail))
    }

    /// Looks up several symbols in one pass over `.symtab`. Only the wanted names are
    /// materialised: a Go symtab has tens of thousands of entries.
    pub fn find_symbols(&self, wanted: &[&str]) -> Result<Vec<Option<Symbol>>, Error> {
        let mut found = vec![None; wanted.len()];
        let Some(symtab) = self.sections.iter().find(|s| s.kind == SHT_SYMTAB) else {
            return Ok(found);
        };
        let strtab = self
            .sections
            .get(symtab.link as usize)
            .ok_or_else(|| malformed(".symtab has no string table"))?;
        let syms = self.section_data(symtab)?;
        let names = self.section_data(strtab)?;
        for raw in syms.chunks_exact(24) {
            let Some(name) = cstr(&names, u32_at(raw, 0) as usize) else {
                continue;
            };
            if let Some(i) = wanted.iter().position(|w| w.as_bytes() == name) {
                if found[i].is_none() {
                    found[i] = Some(Symbol {
                        name: wanted[i].to_string(),
                        value: u64_at(raw, 8),
                        size: u64_at(raw, 16),
                    });
                }
            }
        }
        Ok(found)
    }

    pub fn find_symbol(&self, name: &str) -> Result<Option<Symbol>, Error> {
        Ok(self.find_symbols(&[name])?.pop().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_system_binary() {
        let elf = Elf::open(Path::new("/bin/true")).unwrap();
        assert!(!elf.segments.is_empty());
        let text = elf.section(".text").expect(".text");
        assert_eq!(elf.file_offset(text.addr), Some(text.offset));
    }

    /// Found by the go_binary fuzz target: a section header claiming 2^57 bytes made `read`
    /// allocate before reading.
    #[test]
    fn a_section_larger_than_the_file_is_an_error_not_an_allocation() {
        let mut bytes = std::fs::read("/bin/true").unwrap();
        let shoff = u64_at(&bytes, 40) as usize;
        let shentsize = u16_at(&bytes, 58) as usize;
        let shstrndx = u16_at(&bytes, 62) as usize;
        let size_at = shoff + shstrndx * shentsize + 32;
        bytes[size_at..size_at + 8].copy_from_slice(&(1u64 << 57).to_le_bytes());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge-strtab");
        std::fs::write(&path, &bytes).unwrap();
        assert!(Elf::open(&path).is_err());
    }

    #[test]
    fn reads_past_the_end_fail_without_allocating() {
        let elf = Elf::open(Path::new("/bin/true")).unwrap();
        assert!(elf.read(0, usize::MAX / 2).is_err());
        assert!(elf.read(u64::MAX, 1).is_err());
        assert_eq!(elf.read(0, 4).unwrap(), b"\x7fELF");
    }

    #[test]
    fn reads_stop_at_the_analysis_budget() {
        // This test's own executable: megabytes, more than the budget.
        let exe = std::env::current_exe().unwrap();
        let elf = Elf::open_within(&exe, Budget::new(Duration::from_secs(60), 1 << 20)).unwrap();
        assert!(elf.read(0, 512 << 10).is_ok());
        let e = elf.read(0, 768 << 10).unwrap_err();
        assert!(e.to_string().contains("analysis budget (bytes"), "{e}");
        let late = Elf::open_within(&exe, Budget::new(Duration::ZERO, 1 << 20));
        // Opening reads the section headers through the budget: a spent one fails it.
        assert!(late.is_err(), "a spent time budget still read");
    }

    #[test]
    fn non_elf_is_not_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("script");
        std::fs::write(&path, "#!/bin/sh\necho hi\n").unwrap();
        assert!(matches!(Elf::open(&path), Err(Error::NotGo)));
        std::fs::write(&path, "").unwrap();
        assert!(matches!(Elf::open(&path), Err(Error::NotGo)));
    }
}
