//! A hostile target: a Go process whose timer heaps and goroutine list are rewritten in a loop
//! (random words, pointer cycles, huge lengths) while the daemon's census walks them. A Go
//! program cannot scribble its own runtime structures without crashing itself first, so the
//! test stops a real Go leak with SIGSTOP and does the writing for it through /proc/PID/mem,
//! at the addresses the census reads (found with `timerwatch_go`'s own layout). The daemon must
//! not crash or hang, must answer every scrape within a second, must say the process was skipped
//! and why, and must keep reporting another Go process exactly. Root only (BPF).

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::daemon::{Daemon, Sample};
use common::go::{self, Running};

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a PID this test started and still holds.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

fn word(mem: &File, addr: u64) -> u64 {
    let mut b = [0u8; 8];
    mem.read_exact_at(&mut b, addr)
        .unwrap_or_else(|e| panic!("read the target at {addr:#x}: {e}"));
    u64::from_le_bytes(b)
}

/// Where the census reads: each P's timer-heap header (slice pointer and length) and the
/// array it points to, and `runtime.allgs`'s header and array.
struct Targets {
    heaps: Vec<(u64, u64)>,
    allgs: (u64, u64),
}

fn find_targets(pid: u32, exe: &std::path::Path, mem: &File) -> Targets {
    let bin = timerwatch_go::analyze(exe).expect("analyse the Go target");
    assert!(
        !bin.pie,
        "the target is built without -buildmode=pie: no load bias"
    );
    let l = &bin.layout;
    let (allp, nps) = (word(mem, l.allp_vaddr), word(mem, l.allp_vaddr + 8));
    assert!((1..=1024).contains(&nps), "allp has {nps} Ps in {pid}");
    let heaps = (0..nps)
        .map(|i| word(mem, allp + 8 * i))
        .filter(|&p| p != 0)
        .map(|p| {
            let header = p + u64::from(l.p_timers) + u64::from(l.heap_in_timers.unwrap_or(0));
            (header, word(mem, header))
        })
        .collect();
    let allgs = bin.goroutines.allgs_vaddr;
    assert_ne!(allgs, 0, "runtime.allgs not located");
    Targets {
        heaps,
        allgs: (allgs, word(mem, allgs)),
    }
}

/// xorshift64: reproducible garbage.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Rewrites the heaps and the goroutine list of the stopped target until `stop`, one pattern
/// per round: random words, the header pointing at itself (a cycle), the real array with the
/// largest length the walk accepts or a huge one, and entries pointing back into the structure
/// that lists them. Returns how many rounds were written.
fn scribble(mem: File, t: Targets, stop: Arc<AtomicBool>, rounds: Arc<AtomicU64>) {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let put = |addr: u64, words: &[u64]| {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        mem.write_all_at(&bytes, addr)
            .unwrap_or_else(|e| panic!("write the target at {addr:#x}: {e}"));
    };
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for &(header, array) in &t.heaps {
            let (ptr, len) = match round % 4 {
                0 => (next(&mut rng), next(&mut rng)),
                1 => (header, 64),
                2 => (array, 1 << 22),
                _ => (array, u64::MAX),
            };
            put(header, &[ptr, len]);
            // Entries that point back at the header: each "timer" is the P's own fields.
            put(array, &[header; 16]);
        }
        let (header, array) = t.allgs;
        let (ptr, len) = match round % 4 {
            0 => (next(&mut rng), next(&mut rng)),
            1 => (header, 2),
            2 => (array, 1 << 22),
            _ => (array, u64::MAX >> 3),
        };
        put(header, &[ptr, len]);
        // Goroutines that are the goroutine list itself.
        put(array, &[array; 16]);
        round += 1;
        rounds.store(round, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn cuts(samples: &[Sample]) -> u64 {
    samples
        .iter()
        .filter(|s| s.name == "timerwatch_go_walks_cut_total")
        .map(|s| s.value as u64)
        .sum()
}

fn process(report: &Value, pid: u32) -> Option<&Value> {
    report["processes"]
        .as_array()?
        .iter()
        .find(|p| p["pid"] == pid)
}

#[test]
fn a_target_rewriting_its_heaps_and_goroutine_list_is_skipped_with_a_reason() {
    let Some(_serial) = common::start() else {
        return;
    };
    let Some(tc) = go::newest() else {
        return;
    };
    let exe = go::build(&tc, "afterfunc_leak", false);
    let hostile = Running::spawn(&exe);
    let healthy = Running::spawn(&exe);
    let (bad, good) = (hostile.pid(), healthy.pid());
    // Let the runtime grow its heaps and goroutine list before reading where they are.
    std::thread::sleep(Duration::from_secs(1));

    let daemon = Daemon::start(&[]);
    let report = || -> Value {
        let (status, body) = daemon.get("/report");
        if status != 200 {
            return Value::Null;
        }
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/report is not JSON ({e}): {body}"))
    };
    // Both walked whole first: the census knows the hostile process as a healthy one.
    let mut last = Value::Null;
    let walked = common::wait_until(Duration::from_secs(30), || {
        last = report();
        [bad, good]
            .iter()
            .all(|&pid| process(&last, pid).is_some_and(|p| p["go_heap_timers"].is_u64()))
    });
    assert!(
        walked,
        "the daemon never walked both targets; last report:\n{last}"
    );
    let before = cuts(&daemon.metrics());

    signal(bad, libc::SIGSTOP);
    let mem = File::options()
        .read(true)
        .write(true)
        .open(format!("/proc/{bad}/mem"))
        .expect("open the target's memory for writing");
    let targets = find_targets(bad, &exe, &mem);
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, rounds) = (stop.clone(), rounds.clone());
        std::thread::spawn(move || scribble(mem, targets, stop, rounds))
    };

    // Eight one-second reports under the rewriting, scraped four times a second.
    let storm = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut scrapes = 0;
    let mut took_all = Vec::new();
    while storm.elapsed() < Duration::from_secs(8) {
        let start = Instant::now();
        let samples = daemon.metrics();
        let took = start.elapsed();
        took_all.push(took.as_millis());
        slowest = slowest.max(took);
        scrapes += 1;
        assert!(
            took < Duration::from_secs(1),
            "scrape {scrapes} took {took:?} under the hostile target; stderr:\n{}",
            daemon.tool.stderr()
        );
        assert!(!samples.is_empty());
        std::thread::sleep(Duration::from_millis(250));
    }
    let last = report();
    let samples = daemon.metrics();
    let after = cuts(&samples);
    let by_reason: Vec<_> = samples
        .iter()
        .filter(|s| s.name == "timerwatch_go_walks_cut_total")
        .map(|s| format!("{}={}", s.label("reason"), s.value))
        .collect();
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("the writer thread");
    let rounds = rounds.load(Ordering::Relaxed);
    eprintln!(
        "{rounds} rounds of rewriting; {scrapes} scrapes, slowest {slowest:?}; \
         walks cut {before} -> {after} ({by_reason:?})"
    );
    eprintln!("scrapes (ms): {took_all:?}");
    assert!(rounds > 100, "only {rounds} rounds of rewriting");

    let (status, _) = daemon.get("/healthz");
    assert_eq!(
        status, 200,
        "the daemon is stalled after the hostile target"
    );
    // About one cut walk per report: the census walks the target at each of them.
    assert!(
        after >= before + 4,
        "walks cut went {before} -> {after} over 8 reports of a scribbled target"
    );
    let skipped = process(&last, bad).unwrap_or_else(|| panic!("no row for {bad}:\n{last}"));
    assert!(
        matches!(
            skipped["go_walk_cut"].as_str(),
            Some("time" | "bytes" | "torn")
        ),
        "the hostile process is not marked as cut: {skipped}"
    );
    let go_sites = skipped["callsites"]
        .as_array()
        .map_or(0, |cs| cs.iter().filter(|c| c["source"] == "go").count());
    assert!(
        skipped["go_heap_timers"].is_null() && go_sites == 0,
        "Go callsites reported from a scribbled heap: {skipped}"
    );
    // The other Go process: walked whole, its leak named and counted as it grew (50 a second
    // since it started, ~10 s ago).
    let fine = process(&last, good).unwrap_or_else(|| panic!("no row for {good}:\n{last}"));
    assert!(fine.get("go_walk_cut").is_none(), "{fine}");
    let site = fine["callsites"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["caller"] == "main.leakAfterFunc"))
        .unwrap_or_else(|| panic!("the healthy leak is not named: {fine}"));
    let live = site["live"].as_u64().unwrap_or(0);
    assert!(
        live >= 300,
        "the healthy leak has {live} live timers after ~10 s at 50/s: {fine}"
    );
    assert!(
        fine["go_heap_timers"].as_u64().unwrap_or(0) >= live,
        "{fine}"
    );
    drop(hostile);
    drop(healthy);
}
