//! Go binaries: what timerwatch needs to trace Go runtime timers without touching the process.
//!
//! [`analyze`] reads a binary once (the caller caches per (dev, inode)) and yields the Go
//! version, uprobe points past each prologue, the register recipe per probe role, struct
//! offsets for reading timers, and callback addresses to classify them. [`heap::walk`] reads the
//! live per-P timer heaps; [`goroutines::waiters`] finds the goroutines parked on channels or
//! sleeps and their stacks; [`GoBinary::symbolize`] names Go code from pclntab, which survives
//! stripping. Reference: docs/go-runtime-timers.md.

pub mod buildinfo;
pub mod elf;
pub mod goroutines;
pub mod heap;
pub mod kinds;
pub mod layout;
pub mod moduledata;
pub mod pclntab;
pub mod probes;
pub mod symbolize;
pub mod version;
pub mod x86;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;
#[cfg(any(test, feature = "toolchains"))]
pub mod toolchain;
#[cfg(test)]
mod waiter_tests;

use std::fmt;
use std::io;
use std::path::Path;

pub use buildinfo::BuildInfo;
pub use goroutines::{waiters, WaitKind, Waiter, WalkLimits};
pub use heap::{load_bias, walk, HeapSnapshot, HeapTimer};
pub use kinds::{GoKind, KindSymbols};
pub use layout::{GoroutineLayout, RuntimeLayout, TimerLayout};
pub use probes::{ProbePoint, ProbeRole, Reg, RoleRegs};
pub use symbolize::{go_caller, GoFrame};
pub use version::GoVersion;

use elf::Elf;
use pclntab::Pclntab;

#[derive(Debug)]
pub enum Error {
    /// Not an ELF file, or an ELF file without Go build information.
    NotGo,
    /// A Go release (or architecture) whose runtime internals timerwatch does not know.
    Unsupported(String),
    /// Neither `.symtab` nor `.gopclntab`: no way to find functions.
    NoSymbols,
    Io(io::Error),
    Malformed(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotGo => write!(f, "not a Go binary"),
            Self::Unsupported(v) => write!(
                f,
                "unsupported Go binary: {v} (supported: go1.19 to go1.27 on linux/amd64)"
            ),
            Self::NoSymbols => write!(f, "Go binary has neither .symtab nor .gopclntab"),
            Self::Io(e) => write!(f, "reading Go binary or process: {e}"),
            Self::Malformed(what) => write!(f, "malformed Go binary: {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Everything timerwatch needs to know about one Go binary.
#[derive(Debug)]
pub struct GoBinary {
    pub version: GoVersion,
    /// As recorded, e.g. "go1.22.10".
    pub version_string: String,
    /// No `.symtab` (`-ldflags=-s`); everything still works through pclntab.
    pub stripped: bool,
    /// 1.23–1.26: `asynctimerchan=1` in DefaultGODEBUG (go.mod older than 1.23), i.e. channel
    /// timers stay in the heap while pending. `None` where the setting does not exist: ≤1.22
    /// (always heaped) and 1.27+ (never: heaped only while a goroutine waits on the channel).
    /// The process environment can override it; see [`heap::read_async_timer_chan`].
    pub async_timer_chan: Option<bool>,
    pub probes: Vec<ProbePoint>,
    pub layout: TimerLayout,
    pub kinds: KindSymbols,
    pub runtime: RuntimeLayout,
    pub goroutines: GoroutineLayout,
    pub build: BuildInfo,
    /// ET_DYN (`-buildmode=pie`): runtime addresses = link-time addresses + load bias.
    pub pie: bool,
    pub pclntab: Pclntab,
    /// `moduledata.gofunc`, base of funcdata (inline trees); `None` if moduledata was not found.
    pub gofunc: Option<u64>,
    elf: Elf,
}

impl GoBinary {
    /// Link-time entry address of a function, by its pclntab name.
    pub fn func_entry(&self, name: &str) -> Option<u64> {
        self.pclntab.func_by_name(name).map(|f| f.entry)
    }

    pub fn probe(&self, role: ProbeRole) -> Option<&ProbePoint> {
        self.probes.iter().find(|p| p.role == role)
    }

    /// Whether pending channel timers (NewTimer/After/NewTicker) may be missing from the heaps
    /// because nobody is receiving (1.23+ "sync" channel timers); only probes see those.
    pub fn sync_timer_chans(&self) -> bool {
        self.version.new_timers() && self.async_timer_chan != Some(true)
    }
}

/// Analyzes the Go binary at `path` (a file or `/proc/PID/exe`), read-only.
pub fn analyze(path: &Path) -> Result<GoBinary, Error> {
    let elf = Elf::open(path)?;
    let build = match buildinfo::read(&elf)? {
        Some(b) => b,
        None if find_pclntab(&elf, None)?.is_some() => {
            return Err(Error::Unsupported(
                "Go older than go1.13 (no build info)".into(),
            ))
        }
        None => return Err(Error::NotGo),
    };
    let version_string = build.version.clone();
    let version = GoVersion::parse(&version_string)
        .ok_or_else(|| Error::Unsupported(version_string.clone()))?;
    if elf.machine != elf::EM_X86_64 {
        return Err(Error::Unsupported(format!(
            "{version_string} for ELF machine {}",
            elf.machine
        )));
    }
    if !version.is_supported() {
        return Err(Error::Unsupported(version_string));
    }

    let stripped = !elf.has_symtab();
    let [allp_sym, allgs_sym, text_sym, pclntab_sym, epclntab_sym]: [Option<elf::Symbol>; 5] = elf
        .find_symbols(&[
            "runtime.allp",
            "runtime.allgs",
            "runtime.text",
            "runtime.pclntab",
            "runtime.epclntab",
        ])?
        .try_into()
        .expect("five names in, five results out");
    let symtab_range = pclntab_sym
        .zip(epclntab_sym)
        .map(|(start, end)| (start.value, end.value));
    let mut pcln = match find_pclntab(&elf, symtab_range)? {
        Some(p) => p,
        None if stripped => return Err(Error::NoSymbols),
        None => return Err(Error::Malformed("no .gopclntab".into())),
    };

    let module = moduledata::find(&elf, &pcln, version);
    if pcln.header_text_start() == 0 {
        let text = module
            .map(|m| m.text)
            .or(text_sym.map(|s| s.value))
            .or_else(|| elf.section(".text").map(|s| s.addr))
            .ok_or_else(|| Error::Malformed("text base unknown".into()))?;
        pcln.set_text_base(text);
    }

    let probes = probes::resolve(&elf, &pcln, version)?;
    let (layout, runtime) =
        layout::compute(&elf, &pcln, version, &build, allp_sym.map(|s| s.value))?;
    let goroutines = layout::goroutines(&elf, &pcln, version, allgs_sym.map(|s| s.value));
    let kinds = KindSymbols::resolve(&pcln);
    let async_timer_chan = (version.new_timers() && !version.at_least(27))
        .then(|| build.default_godebug("asynctimerchan") == Some("1"));

    Ok(GoBinary {
        version,
        version_string,
        stripped,
        async_timer_chan,
        probes,
        layout,
        kinds,
        runtime,
        goroutines,
        pie: elf.is_pie(),
        build,
        pclntab: pcln,
        gofunc: module.and_then(|m| m.gofunc),
        elf,
    })
}

/// The pclntab by section name (`.data.rel.ro.gopclntab` in 1.19 PIE), by symbol, or, when
/// section headers are gone, by scanning read-only segments for a header that parses.
fn find_pclntab(elf: &Elf, symtab_range: Option<(u64, u64)>) -> Result<Option<Pclntab>, Error> {
    for name in [".gopclntab", ".data.rel.ro.gopclntab"] {
        if let Some(sec) = elf.section(name) {
            return Pclntab::parse(elf.section_data(sec)?, sec.addr).map(Some);
        }
    }
    if let Some((start, end)) = symtab_range.filter(|(s, e)| e > s) {
        return Pclntab::parse(elf.read_vaddr(start, (end - start) as usize)?, start).map(Some);
    }
    if !elf.sections.is_empty() {
        return Ok(None);
    }
    for seg in elf.segments.iter().filter(|s| s.flags & 1 == 0) {
        let data = elf.read(seg.offset, seg.filesz as usize)?;
        for at in (0..data.len().saturating_sub(72)).step_by(8) {
            if !Pclntab::looks_like_header(&data[at..]) {
                continue;
            }
            if let Ok(p) = Pclntab::parse(data[at..].to_vec(), seg.vaddr + at as u64) {
                if p.func_by_name("runtime.main").is_some() {
                    return Ok(Some(p));
                }
            }
        }
    }
    Ok(None)
}
