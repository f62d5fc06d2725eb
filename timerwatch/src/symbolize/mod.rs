//! Turning addresses into names: kernel callbacks via kallsyms, user stacks via pclntab (Go
//! binaries), separate debug files and blazesym (`objects`), and, where nothing names a frame,
//! the file it is in and its offset there, which is the same in every process.
//!
//! User stacks also get back the frame that frame-pointer unwinding loses when a frameless libc
//! syscall wrapper is innermost (see `wrapper`), so that the reported caller is the application
//! function and not the wrapper's caller's caller.

mod debug_file;
mod debuginfod;
mod elf_facts;
mod kallsyms;
mod objects;
mod unwind;
mod user;
mod wrapper;

use std::collections::HashMap;

use crate::event::StackCopy;
use kallsyms::Kallsyms;
use objects::{FileKey, Objects};
use timerwatch_proc::{maps::Maps, mem::ProcMem};
use user::{Paths, UserSymbolizer};

/// Where a frame's name came from, so a user knows whether installing debug symbols would help.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Naming {
    /// The binary's own symbol table (and its own DWARF, where it was built with it).
    Symtab,
    /// A separate debug file installed on disk (`/usr/lib/debug`, by build ID or debug link).
    Debuginfo,
    /// A debug file fetched from a debuginfod server.
    Debuginfod,
    /// A Go binary's pclntab.
    Pclntab,
    /// Nothing: the frame is named by its file and offset (`binary+0x…`) or its address.
    #[default]
    None,
}

impl Naming {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Symtab => "symtab",
            Self::Debuginfo => "debuginfo",
            Self::Debuginfod => "debuginfod",
            Self::Pclntab => "pclntab",
            Self::None => "none",
        }
    }
}

/// One symbolized user frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub addr: u64,
    /// Function name, demangled; `None` when nothing covers the address.
    pub function: Option<String>,
    /// Source file and line where debug info exists.
    pub file: Option<String>,
    pub line: Option<u32>,
    /// Path of the binary or library the address falls in.
    pub module: Option<String>,
    /// Offset of the address in `module`'s file (or pseudo mapping such as `[vdso]`): unlike
    /// the address, the same in every process.
    pub offset: Option<u64>,
    pub naming: Naming,
}

impl Frame {
    fn unnamed(addr: u64, module: Option<String>, offset: Option<u64>) -> Self {
        Self {
            addr,
            function: None,
            file: None,
            line: None,
            module,
            offset,
            naming: Naming::None,
        }
    }

    /// `"func (file:line)"`, `"func"`, or, unnamed, `"binary+0xOFFSET"` (the file's base name
    /// and the offset in it, stable across processes, restarts and hosts; one metric series
    /// per callsite); only an address outside any mapping (the process is gone, or anonymous
    /// code) is printed as itself.
    pub fn display(&self) -> String {
        match (&self.function, &self.file, self.line) {
            (Some(f), Some(file), Some(line)) => format!("{f} ({file}:{line})"),
            (Some(f), _, _) => f.clone(),
            (None, _, _) => match (&self.module, self.offset) {
                (Some(m), Some(offset)) => {
                    let base = m.rsplit('/').next().unwrap_or(m);
                    format!("{base}+{offset:#x}")
                }
                (Some(m), None) => format!("{:#x} ({m})", self.addr),
                (None, _) => format!("{:#x}", self.addr),
            },
        }
    }
}

/// A symbolized user stack and the callsite it names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserStack {
    /// Innermost first, including a frame recovered from the stack scan (see `scan`).
    pub frames: Vec<Frame>,
    /// First frame outside libc/ld.so (and, for Go, runtime internals): the application function.
    pub caller: Option<String>,
    /// Frames whose file's debug file is on its way from debuginfod (see `Symbolizer::rename`).
    renames: Vec<Rename>,
    /// `Objects::generation` when the stack was last named.
    generation: u64,
}

/// A frame to name again when its file's debug file arrives.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rename {
    frame: usize,
    file: FileKey,
    offset: u64,
    ret: bool,
}

impl UserStack {
    /// A stack whose frames are named by `name` and whose caller is the second frame (the
    /// innermost is the libc wrapper): what the table's tests and the decode benchmark resolve
    /// stacks to, without symbols.
    #[doc(hidden)]
    pub fn named(addrs: &[u64], name: impl Fn(u64) -> String) -> Self {
        let frames: Vec<Frame> = addrs
            .iter()
            .map(|&addr| Frame {
                function: Some(name(addr)),
                naming: Naming::Symtab,
                ..Frame::unnamed(addr, None, None)
            })
            .collect();
        Self {
            caller: frames.get(1).and_then(|f| f.function.clone()),
            frames,
            ..Self::default()
        }
    }

    /// This stack with its frame `frame` waiting for a name, as a frame of a file whose debug
    /// file is being fetched is: for the table's tests.
    #[doc(hidden)]
    pub fn awaiting(mut self, frame: usize) -> Self {
        self.renames.push(Rename {
            frame,
            file: (String::new(), 0),
            offset: 0,
            ret: false,
        });
        self
    }

    /// Whether some frames may still be renamed by [`Symbolizer::rename`].
    pub fn awaits_names(&self) -> bool {
        !self.renames.is_empty()
    }
}

/// Frame-pointer chains of more frames than this (wrapper, caller, and two above) are taken whole;
/// shorter ones are checked against a CFI unwind of the copied stack.
const FP_CHAIN_TRUSTED: usize = 3;

/// Names for kernel and user addresses, with caches that live as long as the tracing session.
///
/// Not `Send`: blazesym's symbolizer keeps its caches in `Rc`/`RefCell`.
pub struct Symbolizer {
    /// Loaded on the first kernel lookup.
    kallsyms: Option<Kallsyms>,
    kernel_names: HashMap<u64, Option<String>>,
    user: UserSymbolizer,
    objects: Objects,
    processes: HashMap<u32, ProcessCache>,
}

/// What is remembered about one process until `forget`.
#[derive(Default)]
struct ProcessCache {
    maps: Maps,
    paths: Option<Paths>,
    /// CFI unwind modules for `maps`, built on a stack that needs them, until `release_files`.
    cfi: Option<unwind::Cfi>,
}

impl ProcessCache {
    /// How to reach the process's files, decided once per process (while it has maps).
    fn paths(&mut self, pid: u32) -> Paths {
        match self.paths {
            Some(paths) => paths,
            None => {
                let paths = Paths::choose(pid, &self.maps);
                if !self.maps.entries().is_empty() {
                    self.paths = Some(paths);
                }
                paths
            }
        }
    }
}

impl Symbolizer {
    pub fn new() -> Self {
        Self {
            kallsyms: None,
            kernel_names: HashMap::new(),
            user: UserSymbolizer::new(),
            objects: Objects::new(),
            processes: HashMap::new(),
        }
    }

    /// The kernel function at `addr` (a timer callback), without any module tag.
    pub fn kernel(&mut self, addr: u64) -> Option<String> {
        if let Some(name) = self.kernel_names.get(&addr) {
            return name.clone();
        }
        let name = self
            .kallsyms
            .get_or_insert_with(Kallsyms::load)
            .lookup(addr)
            .map(str::to_string);
        self.kernel_names.insert(addr, name.clone());
        name
    }

    /// Symbolize a user stack captured at a syscall in `pid` (innermost first), restoring the
    /// caller of a frameless libc wrapper from `scan`, the 16 words read upwards from `user_sp`.
    pub fn user_stack(&mut self, pid: u32, stack: &[u64], user_sp: u64, scan: &[u64]) -> UserStack {
        // `scan` already holds the words at `user_sp`; where the stack pointer was adds nothing.
        let _ = user_sp;
        self.user_stack_copied(pid, stack, scan, None)
    }

    /// [`Self::user_stack`], with the copy of the user stack the probe took at the syscall:
    /// where the frame-pointer chain is too short to reach past the callsite (code built
    /// without frame pointers), the stack is unwound by CFI from the copy instead.
    pub fn user_stack_copied(
        &mut self,
        pid: u32,
        stack: &[u64],
        scan: &[u64],
        copy: Option<&StackCopy>,
    ) -> UserStack {
        if stack.is_empty() {
            return UserStack::default();
        }
        let mut scratch = ProcessCache::default();
        let process = match process_cache(&mut self.processes, pid, stack) {
            Some(process) => process,
            None => &mut scratch,
        };
        // A libc function may use rbp as a plain register (glibc's timer_create keeps the
        // sigevent pointer there), so the frame-pointer walk past frame 0 can read data, not
        // return addresses: the chain ends at the first address outside executable memory.
        // Without maps (the process is gone) there is nothing to judge by: keep it whole.
        let valid = if process.maps.entries().is_empty() {
            stack.len()
        } else {
            1 + stack[1..]
                .iter()
                .take_while(|&&a| process.maps.is_executable(a))
                .count()
        };
        let stack = &stack[..valid];
        let mut addrs = stack.to_vec();
        let memory = ProcMem::new(pid);
        let mut read = |addr: u64, buf: &mut [u8]| memory.read(addr, buf).is_ok();
        // A static program carries libc inside itself: its wrapper is known by its name.
        let innermost_reserved = symbolize_frames(
            &mut self.user,
            &mut self.objects,
            pid,
            process,
            &addrs[..1],
            &mut Vec::new(),
        )
        .first()
        .and_then(|f| f.function.as_deref())
        .is_some_and(wrapper::is_reserved_name);
        if let Some((at, ret)) =
            wrapper::recover_caller(stack, scan, &process.maps, innermost_reserved, &mut read)
        {
            addrs.insert(at, ret);
        }
        // Frame pointers are the fast path: a chain that reaches past wrapper, caller and the
        // caller's caller is kept as it is. A shorter one (frameless code: the chain stops, or
        // follows rbp used as a plain register into data) is replaced by the CFI unwind when
        // that goes further.
        if let Some(copy) = copy.filter(|_| addrs.len() <= FP_CHAIN_TRUSTED) {
            let cfi = process
                .cfi
                .get_or_insert_with(|| unwind::Cfi::new(pid, &process.maps));
            let unwound = cfi.unwind(copy);
            if unwound.len() > addrs.len() {
                addrs = unwound;
            }
        }
        let generation = self.objects.generation();
        let mut renames = Vec::new();
        let frames = symbolize_frames(
            &mut self.user,
            &mut self.objects,
            pid,
            process,
            &addrs,
            &mut renames,
        );
        let caller = wrapper::choose_caller(&frames);
        UserStack {
            frames,
            caller,
            renames,
            generation,
        }
    }

    /// `stack` with the names of debug files fetched since it was named, or `None` when
    /// nothing new arrived. Works after the process is gone: names are per file and offset.
    pub fn rename(&mut self, stack: &UserStack) -> Option<UserStack> {
        let generation = self.objects.generation();
        if stack.renames.is_empty() || generation == stack.generation {
            return None;
        }
        let mut out = stack.clone();
        out.generation = generation;
        out.renames.clear();
        for r in &stack.renames {
            match self
                .objects
                .rename(&mut self.user, &r.file, r.offset, r.ret)
            {
                Err(()) => out.renames.push(r.clone()),
                Ok(None) => {}
                Ok(Some(named)) => {
                    let frame = &mut out.frames[r.frame];
                    frame.function = named.function;
                    frame.file = named.file;
                    frame.line = named.line;
                    frame.naming = named.naming;
                }
            }
        }
        out.caller = wrapper::choose_caller(&out.frames);
        Some(out)
    }

    /// Drop everything known about `pid`: after exec or exit its addresses mean something else.
    /// Let go of the files read to name stacks since the last call (see
    /// `UserSymbolizer::release`) and of the processes' CFI (copies of every mapped file's
    /// `.eh_frame`, hundreds of KiB per process); names found stay (`objects`). A new stack
    /// reads them again: on a node whose callsites have settled, that is rare, while holding
    /// them costs memory every second. True if anything was let go.
    pub fn release_files(&mut self) -> bool {
        let files = self.user.release();
        let mut cfi = false;
        for p in self.processes.values_mut() {
            cfi |= p.cfi.take().is_some();
        }
        files || cfi
    }

    pub fn forget(&mut self, pid: u32) {
        let process = self.processes.remove(&pid).unwrap_or_default();
        self.user.forget(pid, &process.maps);
        self.objects.forget(pid);
    }
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

/// The process's cache with maps covering `stack`, re-reading maps when a frame falls outside
/// the known ones (a library loaded since). A process never seen and no longer readable gets
/// no entry, so late events of exited processes leave nothing behind.
fn process_cache<'a>(
    processes: &'a mut HashMap<u32, ProcessCache>,
    pid: u32,
    stack: &[u64],
) -> Option<&'a mut ProcessCache> {
    let covers = |maps: &Maps| stack.iter().all(|&addr| maps.find(addr).is_some());
    if processes.get(&pid).is_some_and(|p| covers(&p.maps)) {
        return processes.get_mut(&pid);
    }
    match Maps::read(pid) {
        Ok(maps) if pid != 0 => {
            let process = processes.entry(pid).or_default();
            process.maps = maps;
            process.cfi = None;
            Some(process)
        }
        _ => processes.get_mut(&pid),
    }
}

/// A stack's addresses (frame 0 where the thread was, the others return addresses) as frames:
/// file-backed ones by the file they are in and their offset there, so names are shared by every
/// process mapping that file; the rest (vDSO, anonymous code) through the process.
fn symbolize_frames(
    user: &mut UserSymbolizer,
    objects: &mut Objects,
    pid: u32,
    process: &mut ProcessCache,
    addrs: &[u64],
    renames: &mut Vec<Rename>,
) -> Vec<Frame> {
    let mut frames = Vec::with_capacity(addrs.len());
    for (i, &addr) in addrs.iter().enumerate() {
        // Return addresses are one past their call, which may already be the next line or
        // function: they are looked up one byte earlier.
        let ret = i > 0;
        let Some(entry) = process.maps.find(addr).cloned() else {
            frames.push(Frame::unnamed(addr, None, None));
            continue;
        };
        let offset = addr - entry.range.start + entry.offset;
        let module = entry.path.clone();
        if !entry.is_file() {
            let paths = process.paths(pid);
            let lookup = if ret { addr.saturating_sub(1) } else { addr };
            let r = user
                .symbolize(pid, paths, &[lookup])
                .pop()
                .unwrap_or_default();
            let mut frame = Frame::unnamed(addr, module.clone(), module.as_ref().map(|_| offset));
            if r.function.is_some() {
                frame.naming = Naming::Symtab;
            }
            frame.function = r.function;
            frame.file = r.file;
            frame.line = r.line;
            frames.push(frame);
            continue;
        }
        let paths = process.paths(pid);
        let (named, awaiting) = objects.name(user, pid, paths, &entry, offset, ret);
        if awaiting && named.len() <= 1 {
            renames.push(Rename {
                frame: frames.len(),
                file: objects::file_key(&entry),
                offset,
                ret,
            });
        }
        if named.is_empty() {
            frames.push(Frame::unnamed(addr, module.clone(), Some(offset)));
        }
        for n in named {
            frames.push(Frame {
                addr,
                function: n.function,
                file: n.file,
                line: n.line,
                module: module.clone(),
                offset: Some(offset),
                naming: n.naming,
            });
        }
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[inline(never)]
    fn marker_for_symbolize_test() -> u64 {
        std::hint::black_box(0x5eed)
    }

    /// The address right after a real `call`, as a stack scan finds it above a wrapper.
    #[inline(never)]
    fn return_address_for_symbolize_test() -> u64 {
        let ret: u64;
        // SAFETY: the call pushes its return address and the pop takes it off again, leaving
        // the stack as it was; nothing else is touched.
        unsafe { std::arch::asm!("call 2f", "2:", "pop {r}", r = out(reg) ret) };
        ret
    }

    fn addr_of_marker() -> u64 {
        marker_for_symbolize_test as *const () as u64
    }

    fn addr_of_getpid() -> u64 {
        libc::getpid as *const () as u64
    }

    #[test]
    fn own_function_resolves_with_source_file() {
        let addr = addr_of_marker();
        let mut sym = Symbolizer::new();
        let stack = sym.user_stack(std::process::id(), &[addr], 0, &[]);
        assert_eq!(stack.frames.len(), 1);
        let frame = &stack.frames[0];
        assert_eq!(frame.addr, addr);
        let function = frame.function.as_deref().expect("function name");
        assert!(function.contains("marker_for_symbolize_test"), "{function}");
        let file = frame.file.as_deref().expect("source file");
        assert!(Path::new(file).ends_with(file!()), "{file}");
        assert!(frame.line.is_some());
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert_eq!(frame.module.as_deref(), exe.to_str());
        assert_eq!(frame.naming, Naming::Symtab);
        assert!(stack.caller.unwrap().contains("marker_for_symbolize_test"));
        // Served from the cache the second time, identically.
        let again = sym.user_stack(std::process::id(), &[addr], 0, &[]);
        assert_eq!(again.frames, stack.frames);
    }

    #[test]
    fn libc_function_is_classified_as_libc() {
        let mut sym = Symbolizer::new();
        let stack = sym.user_stack(std::process::id(), &[addr_of_getpid()], 0, &[]);
        let frame = &stack.frames[0];
        let module = frame.module.as_deref().expect("module");
        assert!(wrapper::is_runtime_lib(module), "{module}");
        let function = frame.function.as_deref().unwrap_or_default();
        assert!(function.contains("getpid"), "{function}");
    }

    #[test]
    fn wrapper_caller_is_recovered_from_live_memory() {
        let pid = std::process::id();
        let ret = return_address_for_symbolize_test();
        let outer = addr_of_marker();
        let mut sym = Symbolizer::new();
        let stack = sym.user_stack(pid, &[addr_of_getpid(), outer], 0, &[0, 7, ret, outer]);
        let addrs: Vec<u64> = stack.frames.iter().map(|f| f.addr).collect();
        assert_eq!(addrs, [addr_of_getpid(), ret, outer]);
        let recovered = stack.frames[1].function.as_deref().unwrap_or_default();
        assert!(
            recovered.contains("return_address_for_symbolize_test"),
            "{recovered}"
        );
        assert!(stack
            .caller
            .unwrap()
            .contains("return_address_for_symbolize_test"));
    }

    #[test]
    fn unnamed_frames_print_file_and_offset_not_address() {
        let frame = |module: Option<&str>, offset| {
            Frame::unnamed(0x55aa_0000_1234, module.map(str::to_string), offset)
        };
        assert_eq!(
            frame(Some("/usr/sbin/nginx"), Some(0x4d2e)).display(),
            "nginx+0x4d2e"
        );
        assert_eq!(frame(Some("[vdso]"), Some(0x9a0)).display(), "[vdso]+0x9a0");
        assert_eq!(frame(None, None).display(), "0x55aa00001234");
    }

    #[test]
    fn frames_carry_their_file_offset() {
        let addr = addr_of_marker();
        let maps = Maps::read_own().unwrap();
        let entry = maps.find(addr).unwrap();
        let mut sym = Symbolizer::new();
        let stack = sym.user_stack(std::process::id(), &[addr], 0, &[]);
        assert_eq!(
            stack.frames[0].offset,
            Some(addr - entry.range.start + entry.offset)
        );
    }

    #[test]
    fn gone_process_yields_unnamed_frames() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let mut sym = Symbolizer::new();
        let stack = sym.user_stack(pid, &[0x401000, 0x401234], 0, &[0x401100]);
        assert_eq!(stack.frames.len(), 2);
        assert!(stack
            .frames
            .iter()
            .all(|f| f.function.is_none() && f.module.is_none()));
        assert_eq!(stack.caller.as_deref(), Some("0x401000"));
        assert!(sym.processes.is_empty());
        let zero = sym.user_stack(0, &[0x401000], 0, &[]);
        assert_eq!(zero.frames[0].function, None);
    }

    #[test]
    fn empty_stack_has_no_caller() {
        let mut sym = Symbolizer::default();
        assert_eq!(
            sym.user_stack(std::process::id(), &[], 0, &[1, 2]),
            UserStack::default()
        );
    }

    #[test]
    fn forget_drops_the_process() {
        let pid = std::process::id();
        let mut sym = Symbolizer::new();
        sym.user_stack(pid, &[addr_of_marker()], 0, &[]);
        assert!(sym.processes.contains_key(&pid));
        sym.forget(pid);
        assert!(sym.processes.is_empty());
        sym.forget(pid);
    }

    #[test]
    fn kernel_names_come_from_kallsyms() {
        let mut sym = Symbolizer::new();
        let text = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
        let known = text.lines().find_map(|line| {
            let mut f = line.split_whitespace();
            let addr = u64::from_str_radix(f.next()?, 16).ok()?;
            let kind = f.next()?;
            let name = f.next()?;
            (addr != 0 && kind.eq_ignore_ascii_case("t") && name == "hrtimer_wakeup")
                .then_some(addr)
        });
        match known {
            Some(addr) => {
                assert_eq!(sym.kernel(addr).as_deref(), Some("hrtimer_wakeup"));
                assert_eq!(sym.kernel(addr).as_deref(), Some("hrtimer_wakeup"));
            }
            // Without privileges kallsyms hides addresses; nothing can be named then, and an
            // address below every symbol never is.
            None => assert_eq!(sym.kernel(1), None),
        }
    }
}
