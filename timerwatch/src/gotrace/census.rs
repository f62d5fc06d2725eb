//! Census mode: Go callsites from the runtime's own memory, with no probe in the target.
//!
//! At every report each pending timer found by the heap walk is named by what its fields say:
//! an `AfterFunc`'s function value (`arg`) names the code that scheduled it (`callback`); a
//! channel timer's or a sleep's waiting goroutine names the code waiting on it (`waiter`, when a
//! [`WaiterWalk`] supplies goroutine stacks); otherwise only its kind and period name it
//! (`signature`). No I/O here: the walk (`census_walk`) resolves names, this groups them.

use std::collections::{HashMap, HashSet};

use timerwatch_go::{GoBinary, GoFrame};
use timerwatch_proc::mem::ProcMem;

use crate::report::{Attribution, Kind};

/// Goroutine stacks (innermost first, symbolized) by the `arg` data word of the timers they
/// wait on: the channel a goroutine is blocked on (channel timers: `time.sendTime`'s `arg`)
/// or the sleeping goroutine's `*g` (`runtime.goroutineReady`'s `arg`).
pub type WaiterFrames = HashMap<u64, Vec<GoFrame>>;

/// The hook through which a walk of the runtime's goroutines names the waiters of channel
/// timers and sleeps: given the process's memory (charging the walk's budget), its binary and
/// load bias, and the `arg`s wanted, return the stacks found. `None` (or a missing `arg`)
/// leaves those timers to `signature`. A torn read of the goroutine list must return `None`,
/// never a guess.
pub type WaiterWalk =
    fn(mem: &ProcMem, bin: &GoBinary, bias: u64, wanted: &HashSet<u64>) -> Option<WaiterFrames>;

/// What the census knows of one pending timer, names resolved.
#[derive(Clone, Debug)]
pub struct Seen<'a> {
    /// `go_timer`, `go_ticker`, `go_afterfunc`, `go_sleep`, …
    pub kind: Kind,
    pub period_ns: i64,
    /// An `AfterFunc`'s function, from its function value.
    pub callback: Option<&'a GoFrame>,
    /// The goroutine waiting on it (channel timers, sleeps).
    pub waiter: Option<&'a [GoFrame]>,
    /// `(caller, frames)` of the stack that created it, when a creation-stack window saw it.
    pub creation: Option<(&'a str, &'a [String])>,
    /// The caller a window learned for timers of this kind and period.
    pub learned: Option<&'a str>,
    /// When the census first saw this timer pending (CLOCK_MONOTONIC ns).
    pub since_ns: u64,
    /// How long it had left to run then (ns).
    pub remaining_ns: i64,
}

/// One census callsite: its identity stays the same across reports as long as the same code
/// keeps timers pending, so growth verdicts can follow it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey {
    pub kind: Kind,
    pub caller: String,
    pub frames: Vec<String>,
    pub attribution: Attribution,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub key: GroupKey,
    pub live: u64,
    pub oldest_since_ns: u64,
    /// The period shared by all its timers, ns; `None` if they differ or are one-shot.
    pub period_ns: Option<i64>,
    /// One-shot timers: the longest any had left to run when first seen (ns), a lower bound
    /// on the duration they were armed for that is close for timers seen young. `None` when
    /// any is periodic.
    pub duration_ns: Option<i64>,
}

/// The function a Go closure or method value belongs to: `main.scheduleRetry.func1` and
/// `main.scheduleRetry.func1.2` → `main.scheduleRetry`; `main.(*S).retry-fm` →
/// `main.(*S).retry`; `main.worker.gowrap1` → `main.worker`.
pub fn enclosing(function: &str) -> &str {
    let mut name = function.strip_suffix("-fm").unwrap_or(function);
    loop {
        // Only the part after the package path: a `.` inside it (example.com/x.y) is not a
        // closure suffix.
        let pkg_end = name.rfind('/').map_or(0, |i| i + 1);
        let Some(dot) = name[pkg_end..].rfind('.').map(|i| i + pkg_end) else {
            return name;
        };
        let last = &name[dot + 1..];
        let closure = last.chars().all(|c| c.is_ascii_digit()) && !last.is_empty()
            || ["func", "gowrap", "deferwrap"].iter().any(|p| {
                last.strip_prefix(p)
                    .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
            });
        // Keep at least `pkg.Func`: a package-level name is never stripped.
        if !closure || !name[pkg_end..dot].contains('.') {
            return name;
        }
        name = &name[..dot];
    }
}

/// The report line for a Go frame: `function (file.go:line)`.
pub fn display(f: &GoFrame) -> String {
    let file = f.file.as_deref().map(|p| p.rsplit('/').next().unwrap_or(p));
    match (file, f.line) {
        (Some(file), Some(line)) => format!("{} ({file}:{line})", f.function),
        _ => f.function.clone(),
    }
}

/// A stable name for timers nothing but their own fields describe: the kind, and a ticker's
/// period (two tickers of different periods are two callsites).
fn signature(kind: Kind, period_ns: i64) -> String {
    if period_ns > 0 {
        format!("<{kind} every {}>", format_period(period_ns))
    } else {
        format!("<{kind}>")
    }
}

fn format_period(ns: i64) -> String {
    let ns = ns as u64;
    let unit = [(1_000_000_000, "s"), (1_000_000, "ms"), (1_000, "us")]
        .into_iter()
        .find(|(n, _)| ns.is_multiple_of(*n));
    match unit {
        Some((n, unit)) => format!("{}{unit}", ns / n),
        None => format!("{ns}ns"),
    }
}

fn key_of(t: &Seen<'_>) -> GroupKey {
    // The waiter first: it is the code that chose to wait (and to keep the timer); the
    // first frame outside timer machinery, as for creation stacks.
    if let Some(frames) = t.waiter {
        if let Some(i) = frames.iter().position(|f| {
            !f.function.is_empty() && !timerwatch_go::symbolize::is_go_machinery(&f.function)
        }) {
            return GroupKey {
                kind: t.kind,
                caller: enclosing(&frames[i].function).to_string(),
                frames: frames[i..].iter().map(display).collect(),
                attribution: Attribution::Waiter,
            };
        }
    }
    if let Some(f) = t.callback {
        return GroupKey {
            kind: t.kind,
            caller: enclosing(&f.function).to_string(),
            frames: vec![display(f)],
            attribution: Attribution::Callback,
        };
    }
    if let Some((caller, frames)) = t.creation {
        return GroupKey {
            kind: t.kind,
            caller: caller.to_string(),
            frames: frames.to_vec(),
            attribution: Attribution::CreationStack,
        };
    }
    if let Some(caller) = t.learned {
        return GroupKey {
            kind: t.kind,
            caller: caller.to_string(),
            frames: Vec::new(),
            attribution: Attribution::Signature,
        };
    }
    GroupKey {
        kind: t.kind,
        caller: signature(t.kind, t.period_ns),
        frames: Vec::new(),
        attribution: Attribution::Signature,
    }
}

/// What creation-stack windows taught: the caller of each signature (kind, period), from the
/// largest group a creation stack named, so timers created outside a window are named too.
pub fn learn(groups: &[Group], learned: &mut HashMap<(Kind, i64), String>) {
    let mut taught = HashSet::new();
    for g in groups
        .iter()
        .filter(|g| g.key.attribution == Attribution::CreationStack)
    {
        let signature = (g.key.kind, g.period_ns.unwrap_or(0));
        // `groups` is sorted most live first: the first group of a signature wins.
        if taught.insert(signature) {
            learned.insert(signature, g.key.caller.clone());
        }
    }
}

/// Group pending timers into callsites, most live first (ties by key, so the order is
/// stable).
pub fn group<'a>(timers: impl IntoIterator<Item = Seen<'a>>) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    let mut by_key: HashMap<GroupKey, usize> = HashMap::new();
    // Thousands of timers share a handful of callbacks and waiters: build each key (strings)
    // once per distinct (kind, period, callback, waiter), not once per timer.
    type Memo = (Kind, i64, [usize; 4]);
    let mut by_memo: HashMap<Memo, usize> = HashMap::new();
    for t in timers {
        let memo = (
            t.kind,
            t.period_ns,
            [
                t.callback.map_or(0, |f| f as *const GoFrame as usize),
                t.waiter.map_or(0, |w| w.as_ptr() as usize),
                t.creation.map_or(0, |(c, _)| c.as_ptr() as usize),
                t.learned.map_or(0, |c| c.as_ptr() as usize),
            ],
        );
        let period = (t.period_ns > 0).then_some(t.period_ns);
        let duration = period.is_none().then_some(t.remaining_ns.max(0));
        let i = *by_memo.entry(memo).or_insert_with(|| {
            let key = key_of(&t);
            *by_key.entry(key.clone()).or_insert_with(|| {
                out.push(Group {
                    key,
                    live: 0,
                    oldest_since_ns: t.since_ns,
                    period_ns: period,
                    duration_ns: duration,
                });
                out.len() - 1
            })
        });
        let g = &mut out[i];
        g.live += 1;
        g.oldest_since_ns = g.oldest_since_ns.min(t.since_ns);
        if g.period_ns != period {
            g.period_ns = None;
        }
        g.duration_ns = g.duration_ns.zip(duration).map(|(a, b)| a.max(b));
    }
    out.sort_by(|a, b| b.live.cmp(&a.live).then_with(|| a.key.cmp(&b.key)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_names_what_it_saw_and_teaches_the_rest_by_signature() {
        let frames = ["main.poll (main.go:9)".to_string()];
        let seen = |creation, learned, since_ns| Seen {
            kind: Kind::GoTimer,
            period_ns: 0,
            callback: None,
            waiter: None,
            since_ns,
            remaining_ns: 1,
            creation,
            learned,
        };
        let during = group([
            seen(Some(("main.poll", &frames[..])), None, 1),
            seen(Some(("main.poll", &frames[..])), None, 2),
            seen(None, None, 0),
        ]);
        assert_eq!(during[0].key.attribution, Attribution::CreationStack);
        assert_eq!(
            (during[0].key.caller.as_str(), during[0].live),
            ("main.poll", 2)
        );
        assert_eq!(during[1].key.caller, "<go_timer>");
        let mut learned = HashMap::new();
        learn(&during, &mut learned);
        assert_eq!(learned[&(Kind::GoTimer, 0)], "main.poll");
        let after = group([
            seen(None, Some(learned[&(Kind::GoTimer, 0)].as_str()), 0),
            seen(None, Some(learned[&(Kind::GoTimer, 0)].as_str()), 5),
        ]);
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].key.caller, "main.poll");
        assert_eq!(
            (after[0].key.attribution, after[0].live),
            (Attribution::Signature, 2)
        );
    }

    fn frame(function: &str, line: u32) -> GoFrame {
        GoFrame {
            function: function.into(),
            file: Some("/src/app/main.go".into()),
            line: Some(line),
        }
    }

    #[test]
    fn closures_name_their_enclosing_function() {
        assert_eq!(enclosing("main.scheduleRetry.func1"), "main.scheduleRetry");
        assert_eq!(
            enclosing("main.scheduleRetry.func1.2"),
            "main.scheduleRetry"
        );
        assert_eq!(
            enclosing("main.scheduleRetry.func1.func3"),
            "main.scheduleRetry"
        );
        assert_eq!(enclosing("main.(*Server).retry-fm"), "main.(*Server).retry");
        assert_eq!(enclosing("main.worker.gowrap1"), "main.worker");
        assert_eq!(enclosing("main.func1"), "main.func1");
        assert_eq!(
            enclosing("example.com/a.b/pkg.Run.func2"),
            "example.com/a.b/pkg.Run"
        );
        assert_eq!(
            enclosing("example.com/a.b/pkg.Run"),
            "example.com/a.b/pkg.Run"
        );
    }

    #[test]
    fn groups_by_callback_waiter_and_signature() {
        let cb = frame("main.leakAfterFunc.func1", 11);
        let other_cb = frame("main.boundedTimers.func1", 14);
        let waiter = [
            frame("runtime.gopark", 1),
            frame("runtime.chanrecv", 2),
            frame("main.leakTicker.func1", 9),
            frame("runtime.goexit", 3),
        ];
        let hour = 3_600_000_000_000;
        let seen = |kind, period_ns, callback, waiter, since_ns| Seen {
            kind,
            period_ns,
            callback,
            waiter,
            since_ns,
            remaining_ns: 3_600_000_000_000 - since_ns as i64,
            creation: None,
            learned: None,
        };
        let timers = vec![
            seen(Kind::GoAfterFunc, 0, Some(&cb), None, 30),
            seen(Kind::GoAfterFunc, 0, Some(&cb), None, 10),
            seen(Kind::GoAfterFunc, 0, Some(&cb), None, 20),
            seen(Kind::GoAfterFunc, 0, Some(&other_cb), None, 5),
            seen(Kind::GoTicker, hour, None, Some(&waiter[..]), 7),
            seen(Kind::GoTicker, hour, None, Some(&waiter[..]), 8),
            // No waiter known: named by kind and period only, one callsite per period.
            seen(Kind::GoTicker, hour, None, None, 1),
            seen(Kind::GoTicker, 1_500_000_000, None, None, 2),
            seen(Kind::GoTimer, 0, None, None, 3),
        ];
        let groups = group(timers);
        let by = |caller: &str| {
            groups
                .iter()
                .find(|g| g.key.caller == caller)
                .unwrap_or_else(|| panic!("no group {caller} in {groups:#?}"))
        };
        let leak = by("main.leakAfterFunc");
        assert_eq!((leak.live, leak.oldest_since_ns), (3, 10));
        assert_eq!(leak.key.attribution, Attribution::Callback);
        assert_eq!(leak.key.frames, ["main.leakAfterFunc.func1 (main.go:11)"]);
        assert_eq!(leak.period_ns, None);
        assert_eq!(
            leak.duration_ns,
            Some(3_600_000_000_000 - 10),
            "the youngest at sight"
        );
        assert_eq!(groups[0], *leak, "most live first");
        assert_eq!(by("main.boundedTimers").live, 1);
        let ticker = by("main.leakTicker");
        assert_eq!(
            (ticker.live, ticker.key.attribution),
            (2, Attribution::Waiter)
        );
        assert_eq!(ticker.period_ns, Some(hour));
        assert_eq!(ticker.duration_ns, None);
        assert_eq!(
            ticker.key.frames.len(),
            2,
            "machinery frames above the waiter dropped"
        );
        assert_eq!(
            by("<go_ticker every 3600s>").key.attribution,
            Attribution::Signature
        );
        assert_eq!(by("<go_ticker every 1500ms>").live, 1);
        assert_eq!(by("<go_timer>").period_ns, None);
        assert_eq!(groups.len(), 6);
        // The same timers in another order: the same callsites in the same order.
        let mut again = vec![
            seen(Kind::GoTimer, 0, None, None, 3),
            seen(Kind::GoTicker, 1_500_000_000, None, None, 2),
            seen(Kind::GoTicker, hour, None, None, 1),
        ];
        again.extend(
            groups
                .iter()
                .skip(3)
                .map(|_| seen(Kind::GoTimer, 0, None, None, 9)),
        );
        let a = group(again.clone());
        again.reverse();
        assert_eq!(a, group(again));
    }

    #[test]
    fn a_waiter_made_only_of_machinery_falls_back_to_the_signature() {
        let waiter = [frame("runtime.gopark", 1), frame("time.Sleep", 2)];
        let g = group([Seen {
            kind: Kind::GoSleep,
            period_ns: 0,
            callback: None,
            waiter: Some(&waiter[..]),
            since_ns: 0,
            remaining_ns: 5,
            creation: None,
            learned: None,
        }]);
        assert_eq!(g[0].key.caller, "<go_sleep>");
        assert_eq!(g[0].key.attribution, Attribution::Signature);
    }
}
