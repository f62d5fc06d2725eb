//! `runtime.firstmoduledata`, found without symbols.
//!
//! Needed for two things the pclntab header cannot give: the text base in Go 1.26+ (the header's
//! textStart is always 0 there, and with external linking `.text` starts before `runtime.text`),
//! and `gofunc`, the base of funcdata offsets (inline trees).

use super::elf::Elf;
use super::pclntab::Pclntab;
use super::version::GoVersion;

/// Field offsets shared by 1.19–1.27 (docs/go-runtime-timers.md §7).
const OFF_PCHEADER: usize = 0;
const OFF_FUNCNAMETAB: usize = 8;
const OFF_TEXT: usize = 176;
const OFF_ETEXT: usize = 184;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModuleData {
    pub vaddr: u64,
    pub text: u64,
    pub etext: u64,
    /// Base of `go:func.*`; funcdata values are offsets from it.
    pub gofunc: Option<u64>,
}

/// `gofunc` moved as fields were added before it: `covctrs/ecovctrs` in 1.20,
/// `typedesclen/itaboffset/itabsize` in 1.27 (runtime/symtab.go of each release).
fn gofunc_offset(version: GoVersion) -> usize {
    if version.at_least(27) {
        344
    } else if version.at_least(20) {
        320
    } else {
        304
    }
}

/// Section names to search, most specific first. Go 1.26+ gives moduledata its own section.
const CANDIDATE_SECTIONS: &[&str] = &[".go.module", ".noptrdata", ".data", ".data.rel.ro"];

pub fn find(elf: &Elf, pcln: &Pclntab, version: GoVersion) -> Option<ModuleData> {
    let named: Vec<_> = CANDIDATE_SECTIONS
        .iter()
        .filter_map(|name| elf.section(name))
        .map(|sec| (sec.addr, elf.section_data(sec)))
        .collect();
    // Without section headers (sstrip), search every writable segment instead.
    let regions = if elf.sections.is_empty() {
        elf.segments
            .iter()
            .filter(|s| s.flags & 2 != 0)
            .map(|s| (s.vaddr, elf.read(s.offset, s.filesz as usize)))
            .collect()
    } else {
        named
    };
    regions
        .into_iter()
        .filter_map(|(vaddr, data)| Some((vaddr, data.ok()?)))
        .find_map(|(vaddr, data)| search(elf, pcln, version, vaddr, &data))
}

fn search(
    elf: &Elf,
    pcln: &Pclntab,
    version: GoVersion,
    vaddr: u64,
    data: &[u8],
) -> Option<ModuleData> {
    let header = pcln.vaddr.to_le_bytes();
    let funcnames = pcln.funcname_vaddr().to_le_bytes();
    let word = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?))
    };
    // Sections and segments start 8-aligned, and so does moduledata.
    for at in (0..data.len().saturating_sub(OFF_ETEXT + 8)).step_by(8) {
        if data[at + OFF_PCHEADER..at + OFF_PCHEADER + 8] != header
            || data[at + OFF_FUNCNAMETAB..at + OFF_FUNCNAMETAB + 8] != funcnames
        {
            continue;
        }
        let (Some(text), Some(etext)) = (word(at + OFF_TEXT), word(at + OFF_ETEXT)) else {
            continue;
        };
        if text == 0 || etext <= text {
            continue;
        }
        let gofunc =
            word(at + gofunc_offset(version)).filter(|&g| g != 0 && elf.segment_of(g).is_some());
        return Some(ModuleData {
            vaddr: vaddr + at as u64,
            text,
            etext,
            gofunc,
        });
    }
    None
}
