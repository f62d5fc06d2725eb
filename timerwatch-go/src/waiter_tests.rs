//! The goroutine walk against live programs from every available toolchain: it finds the
//! goroutines parked on timers, names the functions that parked them, and its channels and
//! Sleep timers are exactly the ones the heap walk reports, which is what the census joins on.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use super::elf::Elf;
use super::goroutines::WaitKind;
use super::heap::walk_detailed;
use super::testutil::{waiter_builds, Running};
use super::*;
use timerwatch_proc::mem::ProcMem;

const HOUR: i64 = 3_600_000_000_000;

/// (caller, goroutines, how they wait), as WAITERS_PROGRAM starts them.
const EXPECTED: [(&str, usize, WaitKind); 3] = [
    ("main.tickLoop", 3, WaitKind::Select),
    ("main.afterWait", 2, WaitKind::ChanReceive),
    ("main.sleeper", 4, WaitKind::Sleep),
];

fn by_caller(bin: &GoBinary, ws: &[Waiter]) -> HashMap<String, Vec<Waiter>> {
    let mut by: HashMap<String, Vec<Waiter>> = HashMap::new();
    for w in ws {
        if let Some(c) = w.caller(bin) {
            by.entry(c).or_default().push(w.clone());
        }
    }
    by
}

fn check_waiters(path: &Path) {
    let bin = analyze(path).unwrap();
    let v = bin.version_string.clone();
    let running = Running::start(path, &[]);
    let pid = running.pid();
    let bias = load_bias(pid, path).unwrap();
    let mem = ProcMem::new(pid);
    let limits = WalkLimits::default();

    // The goroutines may still be on their way to parking when "ready" is printed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (ws, by) = loop {
        let ws = waiters(&mem, &bin, bias, &limits).unwrap();
        let by = by_caller(&bin, &ws);
        let all_parked = EXPECTED
            .iter()
            .all(|(c, n, _)| by.get(*c).map_or(0, Vec::len) == *n);
        if all_parked || Instant::now() > deadline {
            break (ws, by);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for (caller, n, kind) in EXPECTED {
        let got = by.get(caller).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(got.len(), n, "{v} {caller}: {ws:#x?}");
        assert!(
            got.iter().all(|w| w.kind == kind),
            "{v} {caller}: {got:#x?}"
        );
    }
    assert!(
        by.keys().all(|c| EXPECTED.iter().any(|(e, _, _)| e == c)),
        "{v}: unexpected callers {:?}",
        by.keys().collect::<Vec<_>>()
    );
    eprintln!(
        "{v} {}: {} waiters, callers {:?}",
        path.display(),
        ws.len(),
        by.iter().map(|(c, w)| (c, w.len())).collect::<Vec<_>>()
    );
    let mut goids: Vec<_> = ws.iter().map(|w| w.goid).collect();
    goids.sort_unstable();
    goids.dedup();
    assert_eq!(goids.len(), ws.len(), "{v}: distinct goids");

    // The stack reads like a goroutine dump: gopark innermost, the parking primitive, the
    // caller, then goexit at the base.
    for (caller, _, kind) in EXPECTED {
        let w = &by[caller][0];
        let names: Vec<_> = w.frames(&bin).into_iter().map(|f| f.function).collect();
        let parker = match kind {
            WaitKind::Select => "runtime.selectgo",
            WaitKind::ChanReceive => "runtime.chanrecv",
            _ => "time.Sleep",
        };
        assert_eq!(names.first().map(String::as_str), Some("runtime.gopark"));
        assert!(names.iter().any(|n| n == parker), "{v}: {names:?}");
        assert_eq!(
            names.last().map(String::as_str),
            Some("runtime.goexit"),
            "{v}: {names:?}"
        );
    }

    // The cross-links the census joins on, against the heap walk.
    let heap = walk_detailed(pid, &bin, bias).unwrap();
    let by_arg: HashMap<u64, Vec<_>> = heap.timers.iter().fold(HashMap::new(), |mut m, t| {
        m.entry(t.arg).or_default().push(t);
        m
    });
    let kind_of = |t: &heap::TimerDetail| bin.kinds.classify(t.timer.f, t.timer.period);

    // Each ticker loop waits on two channels: its Ticker's (a heap timer's arg) and `done`.
    let done: Vec<u64> = by["main.tickLoop"]
        .iter()
        .map(|w| {
            assert_eq!(w.chans.len(), 2, "{v}: {w:#x?}");
            let timed: Vec<_> = w
                .chans
                .iter()
                .filter_map(|c| by_arg.get(c).map(|ts| (*c, ts)))
                .collect();
            assert_eq!(timed.len(), 1, "{v}: {w:#x?}");
            let (chan, ts) = &timed[0];
            assert_eq!(ts.len(), 1, "{v}");
            assert_eq!(kind_of(ts[0]), GoKind::Ticker, "{v}");
            assert_eq!(ts[0].timer.period, HOUR, "{v}");
            *w.chans.iter().find(|c| *c != chan).unwrap()
        })
        .collect();
    assert!(done.windows(2).all(|d| d[0] == d[1]), "{v}: one done chan");

    let mut after_chans = Vec::new();
    for w in &by["main.afterWait"] {
        assert_eq!(w.chans.len(), 1, "{v}: {w:#x?}");
        let ts = by_arg
            .get(&w.chans[0])
            .unwrap_or_else(|| panic!("{v}: afterWait's channel is no heap timer's arg: {w:#x?}"));
        assert_eq!(ts.len(), 1, "{v}");
        assert_eq!(kind_of(ts[0]), GoKind::Timer, "{v}");
        after_chans.push(w.chans[0]);
    }
    after_chans.dedup();
    assert_eq!(after_chans.len(), 2, "{v}: distinct After channels");

    for w in &by["main.sleeper"] {
        assert!(w.chans.is_empty(), "{v}: {w:#x?}");
        let timer = w.sleep_timer.unwrap_or_else(|| panic!("{v}: {w:#x?}"));
        let t = heap
            .timers
            .iter()
            .find(|t| t.timer.timer == timer)
            .unwrap_or_else(|| panic!("{v}: sleep timer {timer:#x} not in any heap"));
        assert_eq!(kind_of(t), GoKind::Sleep, "{v}");
        // A Sleep timer's arg is the sleeping g itself.
        assert_eq!(t.arg, w.g, "{v}");
    }
    for (caller, _, _) in &EXPECTED[..2] {
        assert!(by[*caller].iter().all(|w| w.sleep_timer.is_none()), "{v}");
    }
}

#[test]
fn goroutine_walk_names_timer_waiters() {
    let Some(all) = waiter_builds() else { return };
    for b in all {
        check_waiters(&b.plain);
    }
}

#[test]
fn goroutine_walk_works_stripped_and_pie() {
    let Some(all) = waiter_builds() else { return };
    let newest = all.last().unwrap();
    assert_ne!(newest.stripped, newest.plain);
    assert!(analyze(&newest.stripped).unwrap().stripped);
    check_waiters(&newest.stripped);
    // PIE: PCs come back link-time, so the callers still resolve.
    let pie = newest.pie.as_deref().unwrap();
    assert!(analyze(pie).unwrap().pie);
    check_waiters(pie);
}

/// Goroutines that park and wake every 50 µs while the walk reads them: whatever it returns is
/// whole (a churner is either skipped or reported with its caller, kind and both channels),
/// and the steady waiters are all still there.
#[test]
fn goroutine_walk_under_churn_returns_only_whole_waiters() {
    let Some(all) = waiter_builds() else { return };
    let b = all.last().unwrap();
    let bin = analyze(&b.plain).unwrap();
    let running = Running::start(&b.plain, &["churn", "64"]);
    let mem = ProcMem::new(running.pid());
    let limits = WalkLimits::default();
    let (mut seen_churners, mut full_walks) = (0, 0);
    let started = Instant::now();
    for _ in 0..200 {
        let ws = waiters(&mem, &bin, 0, &limits).unwrap();
        let by = by_caller(&bin, &ws);
        for w in by.get("main.churn").into_iter().flatten() {
            assert_eq!(w.kind, WaitKind::Select, "{w:#x?}");
            assert_eq!(w.chans.len(), 2, "{w:#x?}");
            seen_churners += 1;
        }
        assert_eq!(ws.iter().filter(|w| w.caller(&bin).is_none()).count(), 0);
        full_walks += usize::from(
            EXPECTED
                .iter()
                .all(|(c, n, _)| by.get(*c).map_or(0, Vec::len) == *n),
        );
    }
    eprintln!("churn: {:?} per walk", started.elapsed() / 200);
    eprintln!("churn: {seen_churners} parked churners over 200 walks, {full_walks} full walks");
    assert!(seen_churners > 0, "no churner was ever seen parked");
    assert!(full_walks > 0, "the steady waiters were never all found");
}

/// A process that exits before the walk: an error, not a panic or a hang.
#[test]
fn goroutine_walk_of_exited_process_is_an_error() {
    let Some(all) = waiter_builds() else { return };
    let b = all.last().unwrap();
    let bin = analyze(&b.plain).unwrap();
    let running = Running::start(&b.plain, &[]);
    let pid = running.pid();
    drop(running);
    let got = waiters(&ProcMem::new(pid), &bin, 0, &WalkLimits::default());
    assert!(got.is_err(), "{got:?}");
}

/// Stripped binaries decode what unstripped ones name: `allgs` from `forEachG` matches the
/// symbol, and wait reasons read from `waitReasonStrings` match the releases' DWARF constants.
#[test]
fn goroutine_layout_decodes_without_symbols() {
    let Some(all) = waiter_builds() else { return };
    for b in all {
        let v = b.version;
        let plain = analyze(&b.plain).unwrap();
        let elf = Elf::open(&b.plain).unwrap();
        let allgs = elf.find_symbol("runtime.allgs").unwrap().unwrap().value;
        assert_eq!(plain.goroutines.allgs_vaddr, allgs, "{v}");
        let decoded = layout::goroutines(&plain.elf, &plain.pclntab, v, None);
        assert_eq!(decoded, plain.goroutines, "{v}");
        assert!(plain.goroutines.wait_reasons_decoded, "{v}");
        // (chan receive, select, select (no cases), sleep) from each release's DWARF.
        let dwarf = match v.minor {
            21..=23 => Some((14, 9, 10, 19)),
            25 => Some((14, 9, 10, 20)),
            27 => Some((19, 18, 17, 14)),
            _ => None,
        };
        if let Some((chan_receive, select, select_no_cases, sleep)) = dwarf {
            let w = plain.goroutines.wait.unwrap();
            assert_eq!(
                (w.chan_receive, w.select, w.select_no_cases, w.sleep),
                (chan_receive, select, select_no_cases, sleep),
                "{v}"
            );
        }
    }
    let newest = all.last().unwrap();
    let stripped = analyze(&newest.stripped).unwrap();
    let plain = analyze(&newest.plain).unwrap();
    assert_ne!(stripped.goroutines.allgs_vaddr, 0);
    assert_eq!(stripped.goroutines.wait, plain.goroutines.wait);
}

/// A pid whose memory is not a Go process: the walk fails with an error, never a panic.
#[test]
fn goroutine_walk_of_wrong_process_is_an_error() {
    let Some(all) = waiter_builds() else { return };
    let bin = analyze(&all[0].plain).unwrap();
    let mem = ProcMem::new(std::process::id());
    let got = waiters(&mem, &bin, 0, &WalkLimits::default());
    assert!(got.is_err() || got.unwrap().is_empty());
}

/// The heap and goroutine walks stay within a budget shared between them: with bytes enough
/// they find what an unbudgeted walk finds; with fewer than one whole walk needs they stop
/// with the budget saying `bytes`, having read no more than it allowed; out of time they stop
/// at their first read.
#[test]
fn walks_stop_within_their_budget_and_say_why() {
    use timerwatch_proc::budget::{Budget, Cut};
    let Some(all) = waiter_builds() else { return };
    let b = all.last().unwrap();
    let bin = analyze(&b.plain).unwrap();
    let running = Running::start(&b.plain, &[]);
    let pid = running.pid();
    let limits = WalkLimits::default();
    let budgeted = |time: Duration, bytes: u64| {
        let budget = std::sync::Arc::new(Budget::new(time, bytes));
        (ProcMem::with_budget(pid, budget.clone()), budget)
    };
    let minute = Duration::from_secs(60);

    // A whole walk of both, then the same walk again under a fresh budget, and what that one
    // cost. The target parks its goroutines and (Go 1.23+) puts a channel's timer in the heap
    // only once a goroutine blocks on it, so the two walks are retried until both see the
    // program settled and agree with each other.
    let parked: usize = EXPECTED.iter().map(|(_, n, _)| n).sum();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (heap, ws, heap_again, ws_again, whole, one) = loop {
        let (mem, whole) = budgeted(minute, u64::MAX);
        let heap = heap::walk_detailed_in(&mem, &bin, 0).unwrap();
        let ws = waiters(&mem, &bin, 0, &limits).unwrap();
        let (mem, one) = budgeted(minute, u64::MAX);
        let heap_again = heap::walk_detailed_in(&mem, &bin, 0).unwrap();
        let ws_again = waiters(&mem, &bin, 0, &limits).unwrap();
        let settled = ws.len() >= parked
            && heap.timers.len() == heap_again.timers.len()
            && ws.len() == ws_again.len();
        if settled || Instant::now() > deadline {
            break (heap, ws, heap_again, ws_again, whole, one);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(whole.cut(), None);
    assert!(!heap.timers.is_empty() && !ws.is_empty());
    assert_eq!(heap_again.timers.len(), heap.timers.len());
    assert_eq!(ws_again.len(), ws.len());
    let cost = one.spent();
    assert!(cost > 0);

    // Half of that: the heap walk may fit, the goroutines cannot, and nothing beyond is read.
    let (mem, half) = budgeted(minute, cost / 2);
    let heap_half = heap::walk_detailed_in(&mem, &bin, 0);
    let ws_half = waiters(&mem, &bin, 0, &limits);
    assert_eq!(half.cut(), Some(Cut::Bytes), "{heap_half:?} {ws_half:?}");
    assert!(half.spent() <= cost / 2);
    // Whatever the goroutine walk returned is short of the whole: it was cut.
    assert!(ws_half.map_or(true, |w| w.len() < ws.len()));

    // A few bytes: the heap walk itself fails, at once.
    let (mem, tiny) = budgeted(minute, 16);
    assert!(heap::walk_detailed_in(&mem, &bin, 0).is_err());
    assert_eq!(tiny.cut(), Some(Cut::Bytes));

    // No time left: both fail at their first read, reading nothing.
    let late = std::sync::Arc::new(Budget::starting_at(
        Instant::now() - Duration::from_secs(2),
        Duration::from_secs(1),
        u64::MAX,
    ));
    let mem = ProcMem::with_budget(pid, late.clone());
    assert!(heap::walk_detailed_in(&mem, &bin, 0).is_err());
    assert!(waiters(&mem, &bin, 0, &limits).is_err());
    assert_eq!(late.cut(), Some(Cut::Time));
    assert_eq!(late.spent(), 0);
}
