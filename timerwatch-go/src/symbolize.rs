//! Go function names and source positions from pclntab, so stripped binaries still get
//! "main.handleReconcile main.go:42".

use super::pclntab::{Func, FUNCDATA_INL_TREE, PCDATA_INL_TREE_INDEX};
use super::GoBinary;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GoFrame {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// Go packages that implement timers and system calls rather than choose them: a callsite is
/// the first frame outside. `runtime.` and `runtime/` (runtime/internal/…), `time.`,
/// `context.`, `sync.` and `sync/` (sync/atomic), `internal/` (internal/poll arms netpoll
/// deadlines; internal/runtime/syscall and internal/syscall/unix make system calls), and the
/// system-call packages `syscall.` and `golang.org/x/sys/unix.`. `net.` and `os.` are
/// deliberately kept: a deadline set inside net/http is attributed to net/http, the code that
/// chose it. The one rule for Go frames, whether the timer is the runtime's or the kernel's.
pub const NON_CALLSITE_PREFIXES: &[&str] = &[
    "runtime.",
    "runtime/",
    "time.",
    "context.",
    "sync.",
    "sync/",
    "internal/",
    "syscall.",
    "golang.org/x/sys/unix.",
];

/// Whether a Go function is timer or system-call machinery rather than a callsite.
pub fn is_go_machinery(function: &str) -> bool {
    NON_CALLSITE_PREFIXES
        .iter()
        .any(|p| function.starts_with(p))
}

/// The Go callsite of a stack (innermost first): the first function not in
/// [`NON_CALLSITE_PREFIXES`].
pub fn go_caller(frames: &[GoFrame]) -> Option<String> {
    frames
        .iter()
        .find(|f| !f.function.is_empty() && !is_go_machinery(&f.function))
        .map(|f| f.function.clone())
}

/// Bound on inline depth, against a corrupt tree looping.
const MAX_INLINE_DEPTH: usize = 64;

/// Layout of one inline-tree record (`runtime.inlinedCall`).
struct InlRecord {
    size: u64,
    name_off: u64,
    parent_pc: u64,
}

impl GoBinary {
    /// The function containing link-time address `vaddr`, with the source position of `vaddr`
    /// in that function. For code inlined into it, the position is the call site of the
    /// outermost inlined call, so name and file:line always belong together (a caller that
    /// wants the inlined frames uses [`GoBinary::symbolize_inline`]). Return addresses should be
    /// decremented by the caller first.
    pub fn symbolize(&self, vaddr: u64) -> Option<GoFrame> {
        self.symbolize_inline(vaddr).pop()
    }

    /// Every frame at `vaddr`, innermost (inlined) first, the physical function last. Without
    /// an inline tree (or its base) this is just the physical function, with the innermost
    /// source position.
    pub fn symbolize_inline(&self, vaddr: u64) -> Vec<GoFrame> {
        let Some(func) = self.pclntab.func_at(vaddr) else {
            return Vec::new();
        };
        let mut frames = Vec::new();
        let mut pc = vaddr;
        let tree = self.inline_tree(&func);
        for _ in 0..MAX_INLINE_DEPTH {
            let (file, line) = func.file_line(pc);
            let inlined = tree.as_ref().and_then(|(base, rec)| {
                let ix = u64::try_from(func.pcdata(PCDATA_INL_TREE_INDEX, pc)?).ok()?;
                let raw = self
                    .elf
                    .read_vaddr(base + ix * rec.size, rec.size as usize)
                    .ok()?;
                let field = |at: u64| -> Option<i64> {
                    let at = at as usize;
                    let b = raw.get(at..at + 4)?;
                    Some(i64::from(i32::from_le_bytes(b.try_into().ok()?)))
                };
                Some((field(rec.name_off)?, field(rec.parent_pc)?))
            });
            let Some((name_off, parent_pc)) = inlined else {
                frames.push(GoFrame {
                    function: func.name().unwrap_or("?").to_string(),
                    file: file.map(str::to_string),
                    line,
                });
                break;
            };
            let name = u32::try_from(name_off)
                .ok()
                .and_then(|o| self.pclntab.name_at(o))
                .unwrap_or("?");
            frames.push(GoFrame {
                function: name.to_string(),
                file: file.map(str::to_string),
                line,
            });
            pc = func.entry.wrapping_add_signed(parent_pc);
        }
        frames
    }

    /// Address of `func`'s inline tree and its record layout. 1.20 is unverified (its record
    /// format sits between the two known ones), so it gets no inline expansion.
    fn inline_tree(&self, func: &Func<'_>) -> Option<(u64, InlRecord)> {
        let rec = if self.version.at_least(21) {
            // {funcID u8, _ [3]byte, nameOff i32, parentPc i32, startLine i32}
            InlRecord {
                size: 16,
                name_off: 4,
                parent_pc: 8,
            }
        } else if !self.version.at_least(20) {
            // {parent i16, funcID u8, _ byte, file i32, line i32, func_ i32, parentPc i32}
            InlRecord {
                size: 20,
                name_off: 12,
                parent_pc: 16,
            }
        } else {
            return None;
        };
        let base = self.gofunc? + u64::from(func.funcdata(FUNCDATA_INL_TREE)?);
        Some((base, rec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(name: &str) -> GoFrame {
        GoFrame {
            function: name.to_string(),
            file: None,
            line: None,
        }
    }

    #[test]
    fn one_rule_for_runtime_and_system_call_frames() {
        for machinery in [
            "runtime.futex",
            "runtime/internal/syscall.Syscall6",
            "internal/runtime/syscall.Syscall6",
            "internal/syscall/unix.Eventfd",
            "syscall.Syscall",
            "golang.org/x/sys/unix.TimerfdSettime",
            "time.Sleep",
        ] {
            assert!(is_go_machinery(machinery), "{machinery}");
        }
        for callsite in ["main.arm", "net.(*conn).SetReadDeadline", "os.(*File).Read"] {
            assert!(!is_go_machinery(callsite), "{callsite}");
        }
    }

    #[test]
    fn caller_skips_timer_machinery() {
        let stack = [
            frame("runtime.(*timer).modify"),
            frame("time.newTimer"),
            frame("time.NewTimer"),
            frame("context.WithDeadlineCause"),
            frame("internal/poll.(*FD).SetDeadline"),
            frame("sync.(*Once).doSlow"),
            frame("sync/atomic.(*Value).Load"),
            frame("main.handleReconcile"),
            frame("main.main"),
        ];
        assert_eq!(go_caller(&stack).as_deref(), Some("main.handleReconcile"));
        assert_eq!(
            go_caller(&[
                frame("runtime.goexit"),
                frame("net.(*conn).SetReadDeadline")
            ])
            .as_deref(),
            Some("net.(*conn).SetReadDeadline")
        );
        assert_eq!(go_caller(&[frame("runtime.mcall")]), None);
        assert_eq!(go_caller(&[]), None);
    }
}
