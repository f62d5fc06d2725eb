//! This crate against real binaries from every available toolchain: analysis matches the
//! reference tables in docs/go-runtime-timers.md, stripping changes nothing, and live heap walks
//! find exactly the timers the test program holds.

use std::path::Path;
use std::time::{Duration, Instant};

use super::elf::Elf;
use super::testutil::{builds, Built, Running};
use super::*;

/// Offsets from docs/go-runtime-timers.md §5.1, written out independently of layout.rs.
struct Reference {
    when: u32,
    period: u32,
    f: u32,
    arg: u32,
    p_timers: u32,
}

fn reference(v: GoVersion) -> Reference {
    let (when, period, f, arg) = match v.minor {
        19..=22 => (8, 16, 24, 32),
        23 | 24 => (16, 24, 32, 40),
        _ => (24, 32, 40, 48),
    };
    let p_timers = match v.minor {
        22 => 8872,
        25 => 9392,
        26 | 27 => 13672,
        _ => 8840,
    };
    Reference {
        when,
        period,
        f,
        arg,
        p_timers,
    }
}

/// Expected (symbol, bytes from entry to the post-prologue probe) per role (§2).
fn reference_probes(v: GoVersion) -> Vec<(ProbeRole, &'static str, u64)> {
    use ProbeRole::*;
    match v.minor {
        19 => vec![
            (Create, "time.startTimer", 20),
            (Modify, "runtime.modtimer", 24),
            (Stop, "runtime.deltimer", 24),
            (Fire, "runtime.runOneTimer", 24),
            (Sleep, "time.Sleep", 24),
        ],
        20..=22 => vec![
            (Create, "time.startTimer", 10),
            (Modify, "runtime.modtimer", 14),
            (Stop, "runtime.deltimer", 14),
            (Fire, "runtime.runOneTimer", 14),
            (Sleep, "time.Sleep", 14),
        ],
        _ => vec![
            (Modify, "runtime.(*timer).modify", 14),
            (Stop, "runtime.(*timer).stop", 14),
            (Fire, "runtime.(*timer).unlockAndRun", 14),
            (Sleep, "time.Sleep", 14),
        ],
    }
}

fn assert_probe_follows_frame_setup(path: &Path, p: &ProbePoint, v: GoVersion) {
    let elf = Elf::open(path).unwrap();
    let before = elf.read(p.offset - 8, 8).unwrap();
    let after_push_rbp = before.ends_with(&[0x55, 0x48, 0x89, 0xe5]);
    let after_leaq_bp =
        before[3..6] == [0x48, 0x8d, 0x6c] || before[..4] == [0x48, 0x8d, 0xac, 0x24];
    if v.at_least(21) {
        assert!(after_push_rbp, "{v} {}: {before:02x?}", p.symbol);
    } else {
        assert!(after_leaq_bp, "{v} {}: {before:02x?}", p.symbol);
    }
}

fn check_analysis(b: &Built) {
    let v = b.version;
    let plain = analyze(&b.plain).unwrap();
    let stripped = analyze(&b.stripped).unwrap();
    assert_eq!(plain.version, v);
    assert_eq!(plain.version_string, v.to_string());
    assert!(!plain.stripped && stripped.stripped, "{v}");
    assert!(!plain.pie && !stripped.pie);

    let expected = reference_probes(v);
    let got: Vec<_> = plain
        .probes
        .iter()
        .map(|p| (p.role, p.symbol.as_str()))
        .collect();
    let want: Vec<_> = expected.iter().map(|(r, s, _)| (*r, *s)).collect();
    assert_eq!(got, want, "{v}");
    for (p, (_, _, skip)) in plain.probes.iter().zip(&expected) {
        let entry = plain.func_entry(&p.symbol).unwrap();
        assert_eq!(p.vaddr - entry, *skip, "{v} {}", p.symbol);
        assert_eq!(
            p.offset,
            p.vaddr - 0x400000,
            "{v} {}: non-PIE text maps at 0x400000",
            p.symbol
        );
        assert_probe_follows_frame_setup(&b.plain, p, v);
    }
    assert_eq!(plain.probes, stripped.probes, "{v}");

    let r = reference(v);
    let l = &plain.layout;
    assert_eq!(
        (
            l.timer_when,
            l.timer_period,
            l.timer_f,
            l.timer_arg,
            l.p_timers
        ),
        (r.when, r.period, r.f, r.arg, r.p_timers),
        "{v}"
    );
    assert!(plain.runtime.p_timers_decoded, "{v}");
    let g = match v.minor {
        19 => (152, 368),
        21 | 22 => (152, 352),
        23 | 24 => (160, 360),
        25 => (152, 352),
        _ => (152, 360),
    };
    assert_eq!((plain.runtime.g_goid, plain.runtime.g_timer), g, "{v}");
    if v.new_timers() {
        assert_eq!((l.heap_in_timers, l.heap_entry_size), (Some(8), 16), "{v}");
    } else {
        assert_eq!((l.heap_in_timers, l.heap_entry_size), (None, 8), "{v}");
    }
    // `-ldflags` lands in the build info, which shifts data (not code) between the builds.
    let code_only = |l: &TimerLayout| TimerLayout {
        allp_vaddr: 0,
        ..l.clone()
    };
    assert_eq!(code_only(&plain.layout), code_only(&stripped.layout), "{v}");
    assert_ne!(stripped.layout.allp_vaddr, 0, "{v}");
    assert_eq!(
        plain.runtime.p_timers_decoded,
        stripped.runtime.p_timers_decoded
    );

    // The unstripped symtab is the independent witness for what stripped binaries decode.
    let elf = Elf::open(&b.plain).unwrap();
    let allp = elf.find_symbol("runtime.allp").unwrap().unwrap();
    assert_eq!(plain.layout.allp_vaddr, allp.value, "{v}");
    let (decoded, runtime) =
        layout::compute(&plain.elf, &plain.pclntab, v, &plain.build, None).unwrap();
    assert_eq!(decoded, plain.layout, "{v}: decoded allp");
    assert_eq!(runtime, plain.runtime, "{v}");
    if let Some(n) = match v.minor {
        23 => Some(116),
        24 => Some(120),
        25 | 26 => Some(132),
        _ => None,
    } {
        let debug = elf.find_symbol("runtime.debug").unwrap().unwrap();
        assert_eq!(
            plain.runtime.async_timer_chan_vaddr,
            Some(debug.value + n),
            "{v}"
        );
    } else {
        assert_eq!(plain.runtime.async_timer_chan_vaddr, None, "{v}");
    }
    // go.mod says `go 1.<minor>`, so no asynctimerchan=1 default.
    let expected_async = (23..=26).contains(&v.minor).then_some(false);
    assert_eq!(plain.async_timer_chan, expected_async, "{v}");

    let kinds = &plain.kinds;
    for (sym, name) in [
        (kinds.send_time, "time.sendTime"),
        (kinds.go_func, "time.goFunc"),
        (kinds.goroutine_ready, "runtime.goroutineReady"),
    ] {
        assert_eq!(
            sym,
            Some(elf.find_symbol(name).unwrap().unwrap().value),
            "{v} {name}"
        );
    }

    if let Some(pie) = &b.pie {
        let pie = analyze(pie).unwrap();
        assert!(pie.pie && pie.stripped);
        let roles: Vec<_> = pie
            .probes
            .iter()
            .map(|p| (p.role, p.symbol.clone()))
            .collect();
        let want: Vec<_> = plain
            .probes
            .iter()
            .map(|p| (p.role, p.symbol.clone()))
            .collect();
        assert_eq!(roles, want, "{v} pie");
        assert_eq!(pie.layout.p_timers, plain.layout.p_timers);
        assert_ne!(pie.layout.allp_vaddr, 0);
    }
}

#[test]
fn analysis_matches_reference_for_every_toolchain() {
    let Some(all) = builds() else { return };
    let versions: Vec<_> = all.iter().map(|b| b.version.to_string()).collect();
    eprintln!("Go toolchains under test: {}", versions.join(", "));
    for b in all {
        check_analysis(b);
    }
}

fn line_of(source: &Path, needle: &str) -> u32 {
    let text = std::fs::read_to_string(source).unwrap();
    text.lines().position(|l| l.contains(needle)).unwrap() as u32 + 1
}

#[test]
fn symbolizes_go_functions_without_symbols() {
    let Some(all) = builds() else { return };
    for b in all {
        let v = b.version;
        let decl = line_of(&b.source, "func someFunc(");
        let call = line_of(&b.source, "x := inlinedHelper(n)");
        let symtab = Elf::open(&b.plain)
            .unwrap()
            .find_symbol("main.someFunc")
            .unwrap()
            .unwrap();
        for path in [&b.plain, &b.stripped] {
            let bin = analyze(path).unwrap();
            let entry = bin.func_entry("main.someFunc").unwrap();
            assert_eq!(entry, symtab.value, "{v}");
            let frame = bin.symbolize(entry).unwrap();
            assert_eq!(frame.function, "main.someFunc", "{v}");
            assert!(
                frame.file.as_deref().unwrap().ends_with("main.go"),
                "{v} {frame:?}"
            );
            // 1.21+ attribute the stack check at the entry to the `func` line; 1.19 compiles
            // this leaf without one, so its entry is already in the body.
            let line = frame.line.unwrap();
            assert!(
                (decl..=decl + 2).contains(&line),
                "{v}: line {line}, func at {decl}"
            );

            // Inlined code: the inline tree names the helper, and plain symbolize stays with the
            // physical function at the call line. 1.20 has no verified inline record format.
            if v.minor != 20 {
                let inlined = (entry..entry + symtab.size)
                    .map(|pc| bin.symbolize_inline(pc))
                    .find(|frames| frames.len() == 2)
                    .unwrap_or_else(|| panic!("{v}: no inlined PC in main.someFunc"));
                assert_eq!(inlined[0].function, "main.inlinedHelper", "{v}");
                assert_eq!(inlined[1].function, "main.someFunc", "{v}");
                assert_eq!(inlined[1].line, Some(call), "{v}");
            }
            assert!(bin.symbolize(0x10).is_none());
            let callsite = go_caller(&[
                bin.symbolize(bin.func_entry("time.Sleep").unwrap())
                    .unwrap(),
                frame,
            ]);
            assert_eq!(callsite.as_deref(), Some("main.someFunc"));
        }
    }
}

fn monotonic_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// Walks until `kind` shows `n` timers (goroutines may still be starting), then checks them.
fn walk_until(path: &Path, mode: &str, n: usize, kind: GoKind) {
    let bin = analyze(path).unwrap();
    let v = bin.version;
    let running = Running::start(path, &[mode, &n.to_string()]);
    let pid = running.pid();
    let bias = load_bias(pid, path).unwrap();
    assert_eq!(bias == 0, !bin.pie, "{v} {}", path.display());
    let deadline = Instant::now() + Duration::from_secs(10);
    let snap = loop {
        let snap = walk(pid, &bin, bias).unwrap();
        let count = snap
            .timers
            .iter()
            .filter(|t| bin.kinds.classify(t.f, t.period) == kind)
            .count();
        if count >= n || Instant::now() > deadline {
            break snap;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mine: Vec<_> = snap
        .timers
        .iter()
        .filter(|t| bin.kinds.classify(t.f, t.period) == kind)
        .collect();
    assert_eq!(mine.len(), n, "{v} {}: {snap:?}", path.display());
    assert_eq!(snap.per_p.iter().sum::<usize>(), snap.timers.len());
    let hour = 3_600_000_000_000i64;
    let now = monotonic_ns();
    for t in &mine {
        assert!(
            (t.when - (now + hour)).abs() < 120_000_000_000,
            "{v}: when {} vs now {now}",
            t.when
        );
        let expected_period = if kind == GoKind::Ticker { hour } else { 0 };
        assert_eq!(t.period, expected_period, "{v}");
    }
    // go.mod matches the toolchain, so nothing turns asynctimerchan on.
    let async_chan = heap::read_async_timer_chan(pid, &bin, bias).unwrap();
    let expected = (23..=26).contains(&v.minor).then_some(0);
    assert_eq!(async_chan, expected, "{v}");
    let mut addrs: Vec<_> = mine.iter().map(|t| t.timer).collect();
    addrs.sort_unstable();
    addrs.dedup();
    assert_eq!(addrs.len(), n, "{v}: distinct timers");
}

fn binaries(b: &Built) -> Vec<&Path> {
    let mut out = vec![b.plain.as_path(), b.stripped.as_path()];
    out.extend(b.pie.as_deref());
    out
}

#[test]
fn heap_walk_finds_afterfunc_timers() {
    let Some(all) = builds() else { return };
    for b in all {
        for path in binaries(b) {
            walk_until(path, "afterfunc", 50, GoKind::AfterFunc);
        }
    }
}

#[test]
fn heap_walk_finds_tickers() {
    let Some(all) = builds() else { return };
    for b in all {
        for path in binaries(b) {
            walk_until(path, "ticker", 20, GoKind::Ticker);
        }
    }
}

#[test]
fn non_go_binaries_are_refused() {
    assert!(matches!(analyze(Path::new("/bin/true")), Err(Error::NotGo)));
    assert!(matches!(
        analyze(Path::new("/nonexistent/timerwatch")),
        Err(Error::Io(_))
    ));
    assert_eq!(Error::NotGo.to_string(), "not a Go binary");
    assert!(Error::Unsupported("go1.17.13".into())
        .to_string()
        .contains("go1.17.13"));
}

/// `sstrip`-style binaries keep no section headers; everything must come from segments.
#[test]
fn binaries_without_section_headers_analyze_the_same() {
    let Some(all) = builds() else { return };
    let dir = tempfile::tempdir().unwrap();
    for b in all {
        let mut bytes = std::fs::read(&b.stripped).unwrap();
        bytes[40..48].fill(0); // e_shoff
        bytes[60..64].fill(0); // e_shnum, e_shstrndx
        let path = dir.path().join(format!("headerless-{}", b.version));
        std::fs::write(&path, bytes).unwrap();
        let headerless = analyze(&path).unwrap();
        let stripped = analyze(&b.stripped).unwrap();
        assert_eq!(headerless.version, stripped.version);
        assert_eq!(headerless.probes, stripped.probes, "{}", b.version);
        assert_eq!(headerless.layout, stripped.layout, "{}", b.version);
        assert_eq!(headerless.kinds, stripped.kinds, "{}", b.version);
        let entry = headerless.func_entry("main.someFunc").unwrap();
        assert_eq!(
            headerless.symbolize(entry).unwrap().function,
            "main.someFunc"
        );
    }
}

#[test]
fn stripped_binary_without_pclntab_has_no_symbols() {
    let Some(all) = builds() else { return };
    let dir = tempfile::tempdir().unwrap();
    let b = &all[0];
    let out = dir.path().join("nopclntab");
    let objcopy = std::process::Command::new("objcopy")
        .args(["--remove-section", ".gopclntab"])
        .arg(&b.stripped)
        .arg(&out)
        .status();
    match objcopy {
        Ok(s) if s.success() => {}
        _ => {
            eprintln!("note: objcopy unavailable; skipping");
            return;
        }
    }
    assert!(
        matches!(analyze(&out), Err(Error::NoSymbols)),
        "{}",
        b.version
    );
}
