//! The fuzz targets' bodies: each takes bytes an attacker controls (a target's binary, its
//! `/proc` files, a ring-buffer record, a recording file) and feeds them to the parser that
//! reads them in production. A body must never panic, loop without bound or allocate in
//! proportion to a length it read; libFuzzer (`cargo xtask fuzz`) checks that with coverage,
//! and the regression test below replays every kept input without the fuzzer.

use std::io::Write;
use std::os::fd::FromRawFd;

/// A fuzz target: its name (the file under fuzz_targets/) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target by name, as `cargo xtask fuzz` and the regression replay find them.
pub const TARGETS: &[Target] = &[
    ("go_binary", go_binary),
    ("pclntab", pclntab),
    ("buildinfo", buildinfo),
    ("x86", x86),
    ("proc_maps", proc_maps),
    ("proc_text", proc_text),
    ("record", record),
    ("recording", recording),
];

/// The bytes as a file only this process sees: the analysis opens binaries by path.
fn memfd(data: &[u8]) -> Option<std::fs::File> {
    // SAFETY: a NUL-terminated name and no flags; the returned descriptor is owned below.
    let fd = unsafe { libc::memfd_create(c"fuzz".as_ptr(), 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just created and nothing else owns it.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.write_all(data).ok()?;
    Some(file)
}

/// A whole binary through the analysis a Go process gets on discovery: ELF, buildinfo,
/// pclntab, moduledata, prologue decoding, layouts and probe points.
pub fn go_binary(data: &[u8]) {
    let Some(file) = memfd(data) else { return };
    let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file));
    if let Ok(bin) = timerwatch_go::analyze(std::path::Path::new(&path)) {
        let text = bin.pclntab.text_base();
        for pc in [text, text.wrapping_add(0x40), text.wrapping_add(0x1000)] {
            let _ = bin.symbolize_inline(pc);
        }
    }
}

/// A `.gopclntab` section and lookups of addresses inside and around it.
pub fn pclntab(data: &[u8]) {
    let vaddr = 0x40_0000;
    if let Ok(tab) = timerwatch_go::pclntab::Pclntab::parse(data.to_vec(), vaddr) {
        let text = tab.text_base();
        for f in tab.funcs().take(64) {
            let _ = f.name();
            let _ = f.file_line(text);
            let _ = f.pcdata(0, text);
            let _ = f.funcdata(0);
        }
        for pc in [text, text.wrapping_add(0x1000), u64::MAX] {
            if let Some(f) = tab.func_at(pc) {
                let _ = f.file_line(pc);
            }
        }
        let _ = tab.func_by_name("runtime.main");
    }
}

/// A `.go.buildinfo` blob; pointers (pre-1.18 layout) resolve into the blob itself.
pub fn buildinfo(data: &[u8]) {
    let read = |vaddr: u64, len: usize| {
        let start = usize::try_from(vaddr).ok()?;
        data.get(start..start.checked_add(len)?).map(<[u8]>::to_vec)
    };
    let _ = timerwatch_go::buildinfo::BuildInfo::parse(data, read);
}

/// Machine code through every decoder the probe placement uses.
pub fn x86(data: &[u8]) {
    let _ = timerwatch_go::x86::post_prologue(data);
    let _ = timerwatch_go::x86::loads(data, 0x40_1000);
    let _ = timerwatch_go::x86::first_movl_global_ecx(data, 0x40_1000);
}

/// `/proc/PID/maps` text and lookups in it.
pub fn proc_maps(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let maps = timerwatch_proc::maps::Maps::parse(&text);
    for entry in maps.entries() {
        let _ = maps.find(entry.range.start);
        let _ = maps.module(entry.range.end.wrapping_sub(1));
        let _ = entry.map_files_name();
    }
}

/// The small `/proc` text files: `status`, `timers`, `cgroup`.
pub fn proc_text(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for key in ["Tgid", "NSpid", "CapEff", "VmRSS"] {
        let _ = timerwatch_proc::status_field(&text, key);
    }
    let _ = timerwatch_proc::count_posix_timers(&text);
    let _ = timerwatch::daemon::cgroup::parse(&text);
}

/// One ring-buffer record as the kernel side would write it (the kernel is trusted, but the
/// stack words in it are copied from the target).
pub fn record(data: &[u8]) {
    let _ = timerwatch::event::decode(data);
}

/// A recording file given to `diff`, `replay` or `run --baseline`.
pub fn recording(data: &[u8]) {
    let Some(file) = memfd(data) else { return };
    let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file));
    let _ = timerwatch::record::file::read(std::path::Path::new(&path));
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every kept input (crashes found once, hand-made edge cases, a minimized corpus) still
    /// passes through its target; this runs in `cargo xtask test` without the fuzzer.
    #[test]
    fn kept_inputs_replay_without_a_panic() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut replayed = 0;
        for (name, run) in super::TARGETS {
            for dir in ["regressions", "corpus"] {
                let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let data = std::fs::read(entry.path()).expect("read a kept input");
                    run(&data);
                    replayed += 1;
                }
            }
        }
        assert!(
            replayed >= super::TARGETS.len(),
            "only {replayed} inputs kept"
        );
    }

    /// Real inputs and their truncations: the test binary itself (an ELF, not Go) and this
    /// process's own `/proc` files.
    #[test]
    fn real_inputs_and_their_prefixes_pass() {
        let exe = std::fs::read("/proc/self/exe").expect("read own binary");
        for len in [0, 4, 64, 4096, exe.len() / 2] {
            super::go_binary(&exe[..len.min(exe.len())]);
        }
        let maps = std::fs::read("/proc/self/maps").expect("read own maps");
        for len in [0, 7, maps.len() / 3, maps.len()] {
            super::proc_maps(&maps[..len]);
        }
        for file in [
            "/proc/self/status",
            "/proc/self/cgroup",
            "/proc/self/timers",
        ] {
            if let Ok(text) = std::fs::read(file) {
                super::proc_text(&text);
            }
        }
    }
}
