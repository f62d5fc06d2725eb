//! Stacks of code built without frame pointers: unwound with each mapped file's `.eh_frame` CFI
//! (framehop) from the registers and stack bytes the probe copied at the syscall, as
//! `perf --call-graph dwarf` does. Only used where the frame-pointer chain is too short to
//! name the callsite (see `Symbolizer::user_stack_copied`).

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, Module, Unwinder};
use timerwatch_common::MAX_STACK_DEPTH;
use timerwatch_go::elf::Elf;
use timerwatch_proc::maps::{MapEntry, Maps};

use crate::event::StackCopy;

/// `PF_X`: an executable `PT_LOAD` segment.
const PF_X: u32 = 1;
/// Unwind sections larger than this are not a real binary's: skip the file.
const MAX_SECTION: u64 = 64 << 20;

/// One process's modules, built once from its maps.
pub(crate) struct Cfi {
    unwinder: UnwinderX86_64<Vec<u8>>,
    cache: CacheX86_64,
}

impl Cfi {
    /// Modules for every executable file mapping of `pid` that has `.eh_frame`.
    pub(crate) fn new(pid: u32, maps: &Maps) -> Self {
        let mut unwinder = UnwinderX86_64::new();
        for entry in maps
            .entries()
            .iter()
            .filter(|e| e.executable && e.is_file())
        {
            if let Some(module) = module(pid, entry) {
                unwinder.add_module(module);
            }
        }
        Self {
            unwinder,
            cache: CacheX86_64::new(),
        }
    }

    /// Addresses innermost first, as a frame-pointer walk gives them: the instruction pointer,
    /// then return addresses. Stops where the copy or the CFI ends.
    pub(crate) fn unwind(&mut self, copy: &StackCopy) -> Vec<u64> {
        let mut read = |addr: u64| read_word(copy, addr);
        let regs = UnwindRegsX86_64::new(copy.ip, copy.sp, copy.bp);
        let mut frames = self
            .unwinder
            .iter_frames(copy.ip, regs, &mut self.cache, &mut read);
        let mut out = Vec::new();
        while out.len() < MAX_STACK_DEPTH {
            match frames.next() {
                Ok(Some(frame)) => out.push(frame.address()),
                // The end of the copy or of the CFI: what was found so far stands.
                Ok(None) | Err(_) => break,
            }
        }
        out
    }
}

/// The stack word at `addr`, if the copy holds all of it.
fn read_word(copy: &StackCopy, addr: u64) -> Result<u64, ()> {
    let at = usize::try_from(addr.checked_sub(copy.sp).ok_or(())?).map_err(|_| ())?;
    let bytes = copy.bytes.get(at..at.checked_add(8).ok_or(())?).ok_or(())?;
    Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| ())?))
}

/// The unwind module of one executable mapping: its file's `.eh_frame` (and header), with the
/// load bias from the mapping's file offset and the segment that holds it.
fn module(pid: u32, entry: &MapEntry) -> Option<Module<Vec<u8>>> {
    let path = format!("/proc/{pid}/map_files/{}", entry.map_files_name());
    let elf = Elf::open(std::path::Path::new(&path)).ok()?;
    let eh_frame = elf.section(".eh_frame")?;
    // The mapping starts at the page holding the executable segment's start, which may be
    // below the segment's own offset (lld leaves the segment mid-page): find the segment by
    // page, among executable ones; file offsets and addresses agree modulo the page size.
    let page = |x: u64| x & !0xfff;
    let segment = elf.segments.iter().find(|s| {
        s.flags & PF_X != 0
            && entry.offset >= page(s.offset)
            && entry.offset - page(s.offset) < s.filesz.max(1) + (s.offset - page(s.offset))
    })?;
    let svma_at_start = segment
        .vaddr
        .wrapping_sub(segment.offset)
        .wrapping_add(entry.offset);
    let bias = entry.range.start.wrapping_sub(svma_at_start);
    let data = |name: &str| {
        let s = elf.section(name)?;
        (s.size <= MAX_SECTION)
            .then(|| elf.section_data(s).ok())
            .flatten()
            .map(|d| (s.addr..s.addr.saturating_add(s.size), d))
    };
    let (eh_frame_svma, eh_frame_data) = (eh_frame.size <= MAX_SECTION)
        .then(|| data(".eh_frame"))
        .flatten()?;
    let hdr = data(".eh_frame_hdr");
    let info = ExplicitModuleSectionInfo {
        base_svma: 0,
        text_svma: elf
            .section(".text")
            .map(|s| s.addr..s.addr.saturating_add(s.size)),
        got_svma: elf
            .section(".got")
            .map(|s| s.addr..s.addr.saturating_add(s.size)),
        eh_frame_svma: Some(eh_frame_svma),
        eh_frame: Some(eh_frame_data),
        eh_frame_hdr_svma: hdr.as_ref().map(|(r, _)| r.clone()),
        eh_frame_hdr: hdr.map(|(_, d)| d),
        ..Default::default()
    };
    Some(Module::new(
        entry.path.clone().unwrap_or_default(),
        entry.range.clone(),
        bias,
        info,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(sp: u64, words: &[u64]) -> StackCopy {
        StackCopy {
            ip: 0,
            sp,
            bp: 0,
            bytes: words.iter().flat_map(|w| w.to_le_bytes()).collect(),
        }
    }

    #[test]
    fn reads_words_inside_the_copy_only() {
        let c = copy(0x1000, &[1, 2]);
        assert_eq!(read_word(&c, 0x1000), Ok(1));
        assert_eq!(read_word(&c, 0x1008), Ok(2));
        assert_eq!(read_word(&c, 0x1009), Err(()));
        assert_eq!(read_word(&c, 0xff8), Err(()));
        assert_eq!(read_word(&c, u64::MAX), Err(()));
    }

    /// This test's own stack, copied and unwound through the test binary's and libc's CFI,
    /// reaches the test function's callers.
    #[test]
    #[inline(never)]
    fn unwinds_own_stack_through_cfi() {
        let (ip, sp, bp): (u64, u64, u64);
        // SAFETY: reads three registers, no memory.
        unsafe {
            std::arch::asm!("lea {}, [rip]", "mov {}, rsp", "mov {}, rbp",
                out(reg) ip, out(reg) sp, out(reg) bp);
        }
        let maps = Maps::read_own().unwrap();
        // A test thread's stack may end within a few KiB: copy only what is mapped.
        let top = maps.find(sp).expect("the stack is mapped").range.end;
        let len = (top - sp).min(16 << 10) as usize;
        // SAFETY: our own live stack, mapped from `sp` to `top`.
        let bytes = unsafe { std::slice::from_raw_parts(sp as *const u8, len) }.to_vec();
        let mut cfi = Cfi::new(std::process::id(), &maps);
        let frames = cfi.unwind(&StackCopy { ip, sp, bp, bytes });
        assert!(frames.len() >= 3, "{frames:x?}");
        assert_eq!(frames[0], ip);
        assert!(
            frames[1..].iter().all(|&a| maps.is_executable(a)),
            "{frames:x?}"
        );
    }
}
