//! Recovering the caller of a frameless libc syscall wrapper, and naming a stack's callsite.
//!
//! glibc's syscall wrappers set up no frame, so the kernel's frame-pointer walk goes from the
//! wrapper straight to its caller's caller: the application function that called
//! `timer_settime` never shows up. Its return address is still near the top of the user stack,
//! which the probe copies into `scan`; this module finds it there.

use super::Frame;
use timerwatch_proc::maps::{MapEntry, Maps};

/// Longest call instruction we recognise (`ff /2` with SIB and disp32).
const MAX_CALL_LEN: usize = 7;

/// Whether a module path is the C runtime or dynamic loader, whose frames are never "the caller".
pub(crate) fn is_runtime_lib(module: &str) -> bool {
    let name = module.rsplit('/').next().unwrap_or(module);
    name.starts_with("libc.so")
        || (name.starts_with("libc-") && name.ends_with(".so"))
        || name.starts_with("ld-linux")
        || (name.starts_with("ld-") && name.contains(".so"))
        || name.starts_with("ld-musl")
        || name.starts_with("libc.musl")
        // Not a bare "librt*": that would also swallow unrelated libraries such as librtmp.
        || name.starts_with("libpthread.so")
        || name.starts_with("libpthread-")
        || name.starts_with("librt.so")
        || name.starts_with("librt-")
}

fn entry_is_runtime_lib(entry: &MapEntry) -> bool {
    entry.is_file() && entry.path.as_deref().is_some_and(is_runtime_lib)
}

fn in_runtime_lib(maps: &Maps, addr: u64) -> bool {
    maps.find(addr).is_some_and(entry_is_runtime_lib)
}

/// Length of an `ff /2` (indirect near call) encoding that starts with this ModRM byte, when
/// ModRM selects the call form; `sib` is the byte after ModRM, if any.
fn indirect_call_len(modrm: u8, sib: Option<u8>) -> Option<usize> {
    if (modrm >> 3) & 7 != 2 {
        return None;
    }
    let (mode, rm) = (modrm >> 6, modrm & 7);
    let sib_base_is_disp32 = || sib.is_some_and(|s| s & 7 == 5);
    Some(match (mode, rm) {
        (3, _) => 2,
        (0, 4) if sib_base_is_disp32() => 7,
        (0, 4) => 3,
        (0, 5) => 6,
        (0, _) => 2,
        (1, 4) => 4,
        (1, _) => 3,
        (2, 4) => 7,
        _ => 6,
    })
}

/// Whether the bytes right before `ret` (`before` ends at `ret`; up to 7 of them) encode a call
/// that returns to `ret`. A direct call must also target code, which filters out most data words
/// that merely happen to have 0xe8 five bytes back.
fn preceded_by_call(ret: u64, before: &[u8], maps: &Maps) -> bool {
    let n = before.len();
    if n >= 5 && before[n - 5] == 0xe8 {
        let rel = i32::from_le_bytes([before[n - 4], before[n - 3], before[n - 2], before[n - 1]]);
        if maps.is_executable(ret.wrapping_add_signed(i64::from(rel))) {
            return true;
        }
    }
    [2, 3, 4, 6, 7].into_iter().any(|len| {
        n >= len
            && before[n - len] == 0xff
            && indirect_call_len(before[n - len + 1], before.get(n - len + 2).copied()) == Some(len)
    })
}

/// Read up to 7 code bytes ending at `ret`, staying inside its mapping.
fn bytes_before(
    ret: u64,
    entry: &MapEntry,
    read: &mut dyn FnMut(u64, &mut [u8]) -> bool,
) -> Option<Vec<u8>> {
    let from = ret
        .saturating_sub(MAX_CALL_LEN as u64)
        .max(entry.range.start);
    let mut buf = vec![0; usize::try_from(ret - from).ok()?];
    (!buf.is_empty() && read(from, &mut buf)).then_some(buf)
}

/// Whether a function name is reserved for the C implementation (C11 7.1.3: identifiers that
/// begin with two underscores): in a statically linked program, libc's wrappers and start-up
/// code live in the program's own mapping, and their names are what tells them apart.
pub(crate) fn is_reserved_name(function: &str) -> bool {
    function.starts_with("__")
}

/// Where to insert the frameless wrapper's caller into `stack`, and its return address.
///
/// `read(addr, buf)` fills `buf` with the process's memory at `addr` and says whether it could.
/// Only a stack whose innermost frame is runtime code qualifies: in libc/ld.so, or (static
/// programs) named as the implementation's (`innermost_reserved`). The first `scan` word that is
/// in executable memory and right after a call instruction is the return address the wrapper
/// will use; libc-internal return addresses are stepped over (a wrapper may go through a helper).
/// If that word is already in the stack, the frame-pointer walk did see the caller, and scanning
/// further would only reach stale words in the caller's own frame, so recovery stops there.
pub(crate) fn recover_caller(
    stack: &[u64],
    scan: &[u64],
    maps: &Maps,
    innermost_reserved: bool,
    read: &mut dyn FnMut(u64, &mut [u8]) -> bool,
) -> Option<(usize, u64)> {
    if !in_runtime_lib(maps, *stack.first()?) && !innermost_reserved {
        return None;
    }
    // libc has no frame pointers, so the chain's next entry is the return address *of* the
    // innermost function that has one: our recovered frame, its callee, belongs before it even
    // when that entry points back into libc (main returning to __libc_start_call_main).
    let insert_at = 1;
    for &word in scan {
        let Some(entry) = maps.find(word).filter(|e| e.executable) else {
            continue;
        };
        let Some(before) = bytes_before(word, entry, read) else {
            continue;
        };
        if !preceded_by_call(word, &before, maps) {
            continue;
        }
        if stack.contains(&word) {
            return None;
        }
        if entry_is_runtime_lib(entry) {
            continue;
        }
        return Some((insert_at, word));
    }
    None
}

/// The application function that made the call: the first frame outside libc/ld.so/vdso (and Go
/// runtime internals, when an application frame follows them). A stack that is runtime code all
/// the way down is named by its innermost frame rather than left unnamed. `[uprobes]` is the
/// kernel's out-of-line slot where a probed instruction is single-stepped (a thread caught
/// there, e.g. on a Go runtime probe, is in the function whose frame follows).
pub(crate) fn choose_caller(frames: &[Frame]) -> Option<String> {
    let outside_runtime = |f: &&Frame| {
        !f.module.as_deref().is_some_and(|m| {
            m == "[vdso]" || m == "[uprobes]" || (m.starts_with('/') && is_runtime_lib(m))
        })
    };
    // Go programs make system calls without libc: their equivalent of the wrapper is the Go
    // machinery the Go callsite rule passes over too.
    let not_go_runtime = |f: &&Frame| {
        !f.function
            .as_deref()
            .is_some_and(timerwatch_go::symbolize::is_go_machinery)
    };
    // A static program's own copy of libc: `__timerfd_settime`, `__libc_start_call_main`.
    let not_reserved = |f: &&Frame| !f.function.as_deref().is_some_and(is_reserved_name);
    let frame = frames
        .iter()
        .filter(outside_runtime)
        .filter(not_reserved)
        .find(not_go_runtime)
        .or_else(|| frames.iter().filter(outside_runtime).find(not_go_runtime))
        .or_else(|| frames.iter().find(outside_runtime))
        .or_else(|| frames.first())?;
    Some(frame.function.clone().unwrap_or_else(|| frame.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";

    /// App code at 0x1000.., libc code at 0x7000.., a data page and the stack elsewhere.
    fn maps() -> Maps {
        Maps::parse(&format!(
            "1000-3000 r-xp 00001000 08:01 10 /usr/bin/app\n\
             3000-4000 rw-p 00000000 08:01 10 /usr/bin/app\n\
             7000-9000 r-xp 00028000 08:01 20 {LIBC}\n\
             f000-10000 rw-p 00000000 00:00 0 [stack]\n"
        ))
    }

    /// Process memory: code bytes placed at chosen addresses, everything else unreadable.
    #[derive(Default)]
    struct Memory(HashMap<u64, u8>);

    impl Memory {
        fn put(&mut self, addr: u64, bytes: &[u8]) -> &mut Self {
            for (i, b) in bytes.iter().enumerate() {
                self.0.insert(addr + i as u64, *b);
            }
            self
        }

        /// Code ending at `ret`, after `nop` padding so that all 7 bytes before it are readable.
        fn code_before(&mut self, ret: u64, code: &[u8]) -> &mut Self {
            let mut bytes = vec![0x90; MAX_CALL_LEN - code.len()];
            bytes.extend_from_slice(code);
            self.put(ret - MAX_CALL_LEN as u64, &bytes)
        }

        /// A 5-byte `call rel32` that returns to `ret` and targets `target`.
        fn direct_call(&mut self, ret: u64, target: u64) -> &mut Self {
            let rel = (target as i64 - ret as i64) as i32;
            let mut code = vec![0xe8];
            code.extend_from_slice(&rel.to_le_bytes());
            self.code_before(ret, &code)
        }

        fn reader(&self) -> impl FnMut(u64, &mut [u8]) -> bool + '_ {
            |addr, buf| {
                for (i, b) in buf.iter_mut().enumerate() {
                    match self.0.get(&(addr + i as u64)) {
                        Some(v) => *b = *v,
                        None => return false,
                    }
                }
                true
            }
        }
    }

    fn recover(stack: &[u64], scan: &[u64], mem: &Memory) -> Option<(usize, u64)> {
        recover_caller(stack, scan, &maps(), false, &mut mem.reader())
    }

    #[test]
    fn frameless_wrapper_gets_its_caller_inserted() {
        let mut mem = Memory::default();
        // leak_posix_timers+0x20 returns from `call timer_settime@plt`.
        mem.direct_call(0x1220, 0x1800);
        // stack: timer_settime (libc), main; scan: a saved register, a stack pointer, the return.
        let stack = [0x7100, 0x1500];
        let scan = [0x0, 0xf800, 0x1220, 0x1500];
        assert_eq!(recover(&stack, &scan, &mem), Some((1, 0x1220)));
    }

    #[test]
    fn inserts_right_after_the_innermost_frame_even_before_a_libc_return() {
        let mut mem = Memory::default();
        mem.direct_call(0x1220, 0x1800);
        // clock_nanosleep (libc), then main's own return into __libc_start_call_main (libc).
        let stack = [0x7100, 0x7400, 0x1500];
        assert_eq!(recover(&stack, &[0x1220], &mem), Some((1, 0x1220)));
    }

    #[test]
    fn caller_already_in_chain_is_not_duplicated() {
        let mut mem = Memory::default();
        mem.direct_call(0x1500, 0x1800);
        // A stale return address further up must not be taken instead.
        mem.direct_call(0x1220, 0x1800);
        let stack = [0x7100, 0x1500];
        assert_eq!(recover(&stack, &[0x1500, 0x1220], &mem), None);
    }

    #[test]
    fn libc_internal_return_is_skipped() {
        let mut mem = Memory::default();
        // __timer_settime64 returning into the exported timer_settime, both in libc.
        mem.direct_call(0x7300, 0x7100);
        mem.direct_call(0x1220, 0x1800);
        let stack = [0x7100, 0x1500];
        assert_eq!(recover(&stack, &[0x7300, 0x1220], &mem), Some((1, 0x1220)));
    }

    #[test]
    fn words_not_after_a_call_are_skipped() {
        let mut mem = Memory::default();
        // Code, but preceded by a `mov` rather than a call.
        mem.code_before(0x1100, &[0x48, 0x89, 0xc7, 0x48, 0x89, 0xc6, 0x90]);
        // 0xe8 five bytes back, but the "target" is not code.
        mem.code_before(0x1200, &[0xe8, 0x00, 0x00, 0x00, 0x10]);
        // `ff` with a ModRM that is `jmp *%rax` (/4), not a call.
        mem.code_before(0x1300, &[0xff, 0xe0]);
        // Call-preceded, but in data; then a stack address; then code that cannot be read.
        mem.code_before(0x3100, &[0xe8, 0, 0, 0, 0]);
        mem.direct_call(0x1400, 0x1800);
        let stack = [0x7100, 0x1500];
        let scan = [0x1100, 0x1200, 0x1300, 0x3100, 0xf800, 0x2f00, 0x1400];
        assert_eq!(recover(&stack, &scan, &mem), Some((1, 0x1400)));
    }

    #[test]
    fn unreadable_code_is_skipped() {
        let mem = Memory::default();
        assert_eq!(recover(&[0x7100, 0x1500], &[0x1220], &mem), None);
    }

    #[test]
    fn indirect_call_forms() {
        let cases: &[&[u8]] = &[
            &[0xff, 0xd0],                         // call *%rax
            &[0x41, 0xff, 0xd3],                   // call *%r11
            &[0xff, 0x10],                         // call *(%rax)
            &[0xff, 0x50, 0x08],                   // call *0x8(%rax)
            &[0xff, 0x14, 0x24],                   // call *(%rsp)
            &[0xff, 0x54, 0x24, 0x08],             // call *0x8(%rsp)
            &[0xff, 0x15, 0x10, 0x20, 0x00, 0x00], // call *0x2010(%rip)
            &[0xff, 0x90, 0x10, 0x01, 0x00, 0x00], // call *0x110(%rax)
            &[0xff, 0x14, 0xc5, 0, 0x30, 0, 0],    // call *0x3000(,%rax,8)
        ];
        for code in cases {
            let mut before = vec![0x90; 7];
            before.extend_from_slice(code);
            let before = &before[before.len() - 7..];
            assert!(preceded_by_call(0x1100, before, &maps()), "{code:x?}");
        }
        // ModRM says "disp32 follows", so the call would be 6 bytes long, not 2.
        assert!(!preceded_by_call(
            0x1100,
            &[0x90, 0x90, 0x90, 0x90, 0x90, 0xff, 0x15],
            &maps()
        ));
        // Too few bytes available (start of a mapping).
        assert!(!preceded_by_call(0x1100, &[0xd0], &maps()));
    }

    #[test]
    fn stack_not_starting_in_libc_is_unchanged() {
        let mut mem = Memory::default();
        mem.direct_call(0x1220, 0x1800);
        assert_eq!(recover(&[0x1100, 0x1500], &[0x1220], &mem), None);
        assert_eq!(recover(&[], &[0x1220], &mem), None);
    }

    #[test]
    fn nothing_qualifying_leaves_stack_alone() {
        let mem = Memory::default();
        assert_eq!(recover(&[0x7100, 0x1500], &[], &mem), None);
        assert_eq!(recover(&[0x7100, 0x1500], &[0, 1, 0xf800], &mem), None);
    }

    #[test]
    fn runtime_library_names() {
        for lib in [
            LIBC,
            "/lib/x86_64-linux-gnu/libc-2.31.so",
            "/lib64/ld-linux-x86-64.so.2",
            "/lib/ld-2.31.so",
            "/lib/ld-musl-x86_64.so.1",
            "/usr/lib/libc.musl-x86_64.so.1",
            "/lib/x86_64-linux-gnu/libpthread.so.0",
            "/lib/x86_64-linux-gnu/libpthread-2.31.so",
            "/lib/x86_64-linux-gnu/librt.so.1",
            "/lib/x86_64-linux-gnu/librt-2.31.so",
        ] {
            assert!(is_runtime_lib(lib), "{lib}");
        }
        for other in [
            "/usr/bin/app",
            "/usr/lib/libcurl.so.4",
            "/usr/lib/librtmp.so.1",
            "/usr/lib/libcrypt.so.1",
            "/opt/ld-helper",
        ] {
            assert!(!is_runtime_lib(other), "{other}");
        }
    }

    fn frame(function: Option<&str>, module: Option<&str>) -> Frame {
        Frame {
            addr: 0x1234,
            function: function.map(str::to_string),
            file: Some("app.c".into()),
            line: Some(7),
            module: module.map(str::to_string),
            offset: None,
            naming: super::super::Naming::Symtab,
        }
    }

    #[test]
    fn caller_is_first_frame_outside_runtime() {
        let frames = [
            frame(Some("timer_settime"), Some(LIBC)),
            frame(Some("leak_posix_timers"), Some("/usr/bin/app")),
            frame(Some("main"), Some("/usr/bin/app")),
        ];
        assert_eq!(choose_caller(&frames).as_deref(), Some("leak_posix_timers"));
        let vdso = [
            frame(Some("__vdso_clock_gettime"), Some("[vdso]")),
            frame(Some("tick"), Some("/usr/bin/app")),
        ];
        assert_eq!(choose_caller(&vdso).as_deref(), Some("tick"));
        let uprobe_slot = [
            frame(None, Some("[uprobes]")),
            frame(Some("main.work"), Some("/usr/bin/goapp")),
        ];
        assert_eq!(choose_caller(&uprobe_slot).as_deref(), Some("main.work"));
    }

    #[test]
    fn unknown_caller_renders_file_and_offset() {
        let mut stripped = frame(None, Some("/usr/bin/stripped"));
        stripped.offset = Some(0x2034);
        let frames = [frame(Some("nanosleep"), Some(LIBC)), stripped];
        assert_eq!(choose_caller(&frames).as_deref(), Some("stripped+0x2034"));
        assert_eq!(
            choose_caller(&[frame(None, None)]).as_deref(),
            Some("0x1234")
        );
    }

    #[test]
    fn go_runtime_frames_are_passed_over() {
        let bin = Some("/usr/bin/goapp");
        let frames = [
            frame(Some("internal/runtime/syscall.Syscall6"), bin),
            frame(Some("syscall.Syscall"), bin),
            frame(Some("golang.org/x/sys/unix.TimerfdSettime"), bin),
            frame(Some("main.arm"), bin),
        ];
        assert_eq!(choose_caller(&frames).as_deref(), Some("main.arm"));
        let runtime_only = [
            frame(Some("runtime.usleep"), bin),
            frame(Some("runtime.sysmon"), bin),
        ];
        assert_eq!(
            choose_caller(&runtime_only).as_deref(),
            Some("runtime.usleep")
        );
    }

    #[test]
    fn all_runtime_or_empty() {
        let frames = [
            frame(Some("timer_create"), Some(LIBC)),
            frame(Some("start_thread"), Some(LIBC)),
        ];
        assert_eq!(choose_caller(&frames).as_deref(), Some("timer_create"));
        assert_eq!(choose_caller(&[]), None);
    }
}
