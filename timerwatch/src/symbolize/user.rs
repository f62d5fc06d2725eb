//! User addresses to function, file and line, through blazesym: ELF files by link-time address
//! (a binary or its separate debug file), and the process source for what is not a file (vDSO).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use blazesym::symbolize::source::{Elf, Process, Source};
use blazesym::symbolize::{evict, Input, Reason, Symbolized, Symbolizer};
use blazesym::Pid;

use timerwatch_proc::maps::Maps;

/// What one address resolved to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// False when the miss may be temporary (process unreadable, address not mapped yet), so the
    /// answer must not be remembered.
    pub stable: bool,
}

/// How blazesym reaches a process's binaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Paths {
    /// `/proc/PID/map_files/*`: the exact files mapped, even in another mount namespace or after
    /// deletion; needs CAP_SYS_ADMIN (or CAP_CHECKPOINT_RESTORE).
    MapFiles,
    /// The paths printed in `/proc/PID/maps`, only meaningful in our own mount namespace.
    Symbolic,
}

impl Paths {
    /// Prefer `map_files`; fall back to symbolic paths only when `map_files` is refused and the
    /// paths would name the same files for us, since elsewhere they could name a different binary.
    pub fn choose(pid: u32, maps: &Maps) -> Self {
        let Some(entry) = maps.entries().iter().find(|e| e.is_file()) else {
            return Self::MapFiles;
        };
        let probe = format!("/proc/{pid}/map_files/{}", entry.map_files_name());
        match std::fs::metadata(probe) {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && same_mount_ns(pid) => {
                Self::Symbolic
            }
            _ => Self::MapFiles,
        }
    }
}

fn same_mount_ns(pid: u32) -> bool {
    let ns = |p: &str| std::fs::read_link(Path::new("/proc").join(p).join("ns/mnt")).ok();
    matches!((ns("self"), ns(&pid.to_string())), (Some(a), Some(b)) if a == b)
}

pub(crate) struct UserSymbolizer {
    inner: Symbolizer,
    /// Something was looked up since the last [`UserSymbolizer::release`].
    used: bool,
}

impl UserSymbolizer {
    pub fn new() -> Self {
        Self {
            inner: build(),
            used: false,
        }
    }

    /// Drops what blazesym keeps of the files it read (their mappings and parsed symbol
    /// tables and DWARF, tens of MiB for a large binary with debug info) if it read any since
    /// the last call. Names already found are kept per file offset by `objects`; only an
    /// address never named before pays for reading its file again, so a node whose callsites
    /// settle stops paying, while the files of every long-lived process would otherwise stay
    /// resident for as long as the daemon runs. True if it had read any.
    pub fn release(&mut self) -> bool {
        let used = std::mem::take(&mut self.used);
        if used {
            self.inner = build();
        }
        used
    }

    /// One result per address, in order. Addresses are absolute in `pid`; callers adjust return
    /// addresses themselves. A process that cannot be read yields unnamed, unstable results.
    pub fn symbolize(&mut self, pid: u32, paths: Paths, addrs: &[u64]) -> Vec<Resolved> {
        let unknown = || vec![Resolved::default(); addrs.len()];
        // `Pid::from(0)` would mean "this process"; no user stack belongs to pid 0.
        if pid == 0 || addrs.is_empty() {
            return unknown();
        }
        let mut source = Process::new(Pid::from(pid));
        source.map_files = paths == Paths::MapFiles;
        self.run(&Source::Process(source), Input::AbsAddr(addrs), addrs.len())
    }

    /// One result per link-time address `vaddrs` in the ELF file at `path`, with its DWARF
    /// where it has some. A file that cannot be opened yields unnamed, unstable results.
    pub fn symbolize_elf(&mut self, path: &Path, vaddrs: &[u64]) -> Vec<Resolved> {
        if vaddrs.is_empty() {
            return Vec::new();
        }
        let source = Source::Elf(Elf::new(path));
        self.run(&source, Input::VirtOffset(vaddrs), vaddrs.len())
    }

    fn run(&mut self, source: &Source<'_>, input: Input<&[u64]>, n: usize) -> Vec<Resolved> {
        let unknown = || vec![Resolved::default(); n];
        self.used = true;
        let inner = &self.inner;
        // Foreign binaries are arbitrary input to an ELF/DWARF parser; a bug there must cost one
        // stack its names, not the whole tool.
        let result = catch_unwind(AssertUnwindSafe(|| {
            inner
                .symbolize(source, input)
                .map(|syms| syms.into_iter().map(convert).collect::<Vec<_>>())
        }));
        match result {
            Ok(Ok(resolved)) if resolved.len() == n => resolved,
            Ok(_) => unknown(),
            Err(_) => {
                // The caches may be half-updated after an unwind; start them afresh.
                self.inner = build();
                unknown()
            }
        }
    }

    /// Release what blazesym holds for `pid`. With `map_files`, parsed binaries are cached under
    /// per-process paths (`/proc/PID/map_files/START-END`), which would otherwise pile up; the
    /// parsed data itself is shared by file identity and survives while other processes use it.
    pub fn forget(&mut self, pid: u32, maps: &Maps) {
        if pid == 0 {
            return;
        }
        let _ = self
            .inner
            .evict(&evict::Process::new(Pid::from(pid)).into());
        for entry in maps.entries().iter().filter(|e| e.is_file()) {
            let path = format!("/proc/{pid}/map_files/{}", entry.map_files_name());
            let _ = self.inner.evict(&evict::Elf::new(path).into());
        }
    }
}

fn build() -> Symbolizer {
    // Inlined-function chains are not reported: the outermost function names the frame, and the
    // line table already gives the innermost file:line.
    // No debug directories: `debug_file` finds separate debug files itself (also by build ID
    // alone and in the target's mount namespace) and hands them over as files of their own,
    // so that a frame's naming says truthfully where its name came from.
    Symbolizer::builder()
        .enable_code_info(true)
        .enable_inlined_fns(false)
        .set_debug_dirs(Some(Vec::<std::path::PathBuf>::new()))
        .build()
}

fn convert(sym: Symbolized<'_>) -> Resolved {
    match sym {
        Symbolized::Sym(sym) => {
            let (file, line) = match &sym.code_info {
                Some(info) => (Some(info.to_path().display().to_string()), info.line),
                None => (None, None),
            };
            Resolved {
                function: Some(sym.name.into_owned()),
                file,
                line,
                stable: true,
            }
        }
        Symbolized::Unknown(reason) => Resolved {
            stable: matches!(
                reason,
                Reason::MissingComponent
                    | Reason::MissingSyms
                    | Reason::Unsupported
                    | Reason::UnknownAddr
                    | Reason::InvalidFileOffset
            ),
            ..Resolved::default()
        },
    }
}
