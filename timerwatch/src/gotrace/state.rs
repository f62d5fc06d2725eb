//! One Go process's timers as the uprobes saw them: which callsite each timer pointer belongs to,
//! and per callsite how often timers were created, re-armed, stopped and fired.
//!
//! Liveness does not come from here. Go removes timers from its heaps without any call a probe
//! could see (zombies compacted in place, channel timers dropped when nobody waits, collected
//! timers), so "created minus stopped" drifts; [`GoState::live`] counts what the heap walk found.
//! No I/O: names come from a [`Namer`], so this is testable without a process.

use crate::table::stack_hash;
use std::collections::HashMap;

use timerwatch_common::EventKind;

use crate::{event::Record, histogram::Histogram, report::Kind};

/// Names for what the probes report, from the traced binary.
pub trait Namer {
    /// The report `kind` (`go_timer`, `go_ticker`, …) of `timer` running `f` (a `*funcval`; 0
    /// when the arm keeps the timer's own) with `period`.
    fn kind(&mut self, timer: u64, f: u64, period: u64) -> Kind;
    /// `(caller, frames)` of a user stack, innermost first.
    fn stack(&mut self, frames: &[u64]) -> (Option<String>, Vec<String>);
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoCallsite {
    pub kind: Kind,
    pub caller: Option<String>,
    pub frames: Vec<String>,
    pub created_total: u64,
    /// Creations and re-arms.
    pub armed_total: u64,
    /// `Stop`s and fires, named as the kernel side's and the report's counters are.
    pub cancelled_total: u64,
    pub expired_total: u64,
    /// Arms of an idle timer (the start of a life), and how many of them were periodic
    /// (tickers: they live until stopped, so the callsite has no finite lifetime).
    pub lives_total: u64,
    pub lives_periodic: u64,
    /// `when` − now at the arm that began each one-shot life, ns.
    pub armed_for: Histogram,
    /// Those durations summed, shortened when a life was stopped early (ns).
    pub life_ns_total: i128,
}

impl GoCallsite {
    /// (mean, longest) lifetime of its timers, seconds, when they all fire by themselves.
    pub fn lifetime_s(&self) -> Option<(f64, f64)> {
        if self.lives_total == 0 || self.lives_periodic > 0 {
            return None;
        }
        let max = self.armed_for.quantile(0.99)? as f64 / 1e9;
        let mean = (self.life_ns_total as f64 / self.lives_total as f64 / 1e9).max(0.0);
        Some((mean, max))
    }
}

#[derive(Clone, Copy, Debug)]
struct Tracked {
    callsite: usize,
    /// When it was last armed after being idle (ns, CLOCK_MONOTONIC): its live age.
    armed_since: u64,
    armed: bool,
    periodic: bool,
    /// When its current one-shot life should end (`when`, ns), if armed.
    due: Option<u64>,
}

/// Per-callsite live counts from one heap walk.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Live {
    /// (live, oldest `armed_since`) by callsite index.
    pub by_callsite: HashMap<usize, (u64, u64)>,
    /// Heap timers no probe attributed: created before we attached.
    pub pre_existing: u64,
}

/// Pointers remembered per process before idle (stopped or fired) ones are dropped. An idle
/// timer may still be re-armed (a stopped Timer reset later), so they are kept until memory,
/// not time, says otherwise.
const MAX_TRACKED: usize = 1 << 20;

#[derive(Default)]
pub struct GoState {
    timers: HashMap<u64, Tracked>,
    callsites: Vec<GoCallsite>,
    index: HashMap<(Kind, u64), usize>,
    /// Re-arms, stops and fires of timers whose callsite never reached us (a lost record).
    pub unattributed: u64,
    /// Size of `timers` that triggers the next pruning; doubles when pruning frees too little,
    /// so a leak of live timers costs amortised O(1) per record.
    prune_at: usize,
}

impl GoState {
    pub fn callsites(&self) -> &[GoCallsite] {
        &self.callsites
    }

    fn callsite_for(&mut self, kind: Kind, frames: &[u64], namer: &mut dyn Namer) -> usize {
        let key = (kind, stack_hash(frames));
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let (caller, names) = namer.stack(frames);
        self.callsites.push(GoCallsite {
            kind,
            caller,
            frames: names,
            created_total: 0,
            armed_total: 0,
            cancelled_total: 0,
            expired_total: 0,
            lives_total: 0,
            lives_periodic: 0,
            armed_for: Histogram::default(),
            life_ns_total: 0,
        });
        self.index.insert(key, self.callsites.len() - 1);
        self.callsites.len() - 1
    }

    pub fn apply(&mut self, r: &Record, namer: &mut dyn Namer) {
        match (r.kind, &r.stack) {
            (EventKind::GoCreate | EventKind::GoModify | EventKind::GoSleep, Some(stack)) => {
                let kind = if r.kind == EventKind::GoSleep {
                    Kind::GoSleep
                } else {
                    namer.kind(r.timer, r.function, r.arg)
                };
                let cs = self.callsite_for(kind, &stack.frames, namer);
                let arm = r.kind != EventKind::GoSleep;
                let prev = self.timers.get(&r.timer).copied();
                // A Sleep only names the sleeper; its goroutine's timer keeps its arm state.
                let (armed, since, new_life) = match prev {
                    Some(p) if !arm || (p.armed && r.kind == EventKind::GoModify) => {
                        (p.armed, p.armed_since, false)
                    }
                    _ => (arm, r.ts_ns, arm),
                };
                let periodic = r.arg != 0;
                let due = if new_life {
                    self.begin_life(cs, r, periodic)
                } else {
                    prev.and_then(|p| p.due)
                };
                self.timers.insert(
                    r.timer,
                    Tracked {
                        callsite: cs,
                        armed_since: since,
                        armed,
                        periodic,
                        due,
                    },
                );
                let c = &mut self.callsites[cs];
                if r.kind == EventKind::GoCreate {
                    c.created_total += 1;
                }
                if arm {
                    c.armed_total += 1;
                }
                self.bound_memory();
            }
            (EventKind::GoModify, None) => match self.timers.get(&r.timer).copied() {
                Some(mut t) => {
                    t.periodic = r.arg != 0;
                    if !t.armed {
                        t.armed = true;
                        t.armed_since = r.ts_ns;
                        t.due = self.begin_life(t.callsite, r, t.periodic);
                    }
                    self.callsites[t.callsite].armed_total += 1;
                    self.timers.insert(r.timer, t);
                }
                None => self.unattributed += 1,
            },
            (EventKind::GoStop | EventKind::GoFire, _) => match self.timers.get_mut(&r.timer) {
                Some(t) => {
                    let c = &mut self.callsites[t.callsite];
                    if r.kind == EventKind::GoStop {
                        c.cancelled_total += 1;
                        if let Some(due) = t.due.take().filter(|_| t.armed) {
                            c.life_ns_total -= i128::from(due.saturating_sub(r.ts_ns));
                        }
                        t.armed = false;
                    } else {
                        c.expired_total += 1;
                        t.armed &= t.periodic;
                    }
                }
                None => self.unattributed += 1,
            },
            _ => {}
        }
    }

    /// A timer of callsite `cs` armed while idle: one more life, of `when` − now unless periodic.
    /// Returns when it should end.
    fn begin_life(&mut self, cs: usize, r: &Record, periodic: bool) -> Option<u64> {
        let c = &mut self.callsites[cs];
        c.lives_total += 1;
        if periodic {
            c.lives_periodic += 1;
            return None;
        }
        // `when` is CLOCK_MONOTONIC ns, like the record's timestamp; a `when` already past
        // fires at once.
        let d = r.expires.saturating_sub(r.ts_ns);
        c.armed_for.record(d);
        c.life_ns_total += i128::from(d);
        Some(r.ts_ns + d)
    }

    fn bound_memory(&mut self) {
        let limit = self.prune_at.max(MAX_TRACKED);
        if self.timers.len() <= limit {
            return;
        }
        self.timers.retain(|_, t| t.armed);
        self.prune_at = (self.timers.len() * 2).max(MAX_TRACKED);
    }

    /// Per callsite (count, oldest `armed_since`) of the timers still pending when the process
    /// exits: armed by the probes' account, and either in the last heap walk (`heap`, taken at
    /// `walked_ns`) or armed after it. The walk removes what the runtime dropped without a
    /// call a probe could see; the probes cover what happened after the walk, which for a
    /// short test binary is often everything.
    pub fn pending_at_exit(&self, heap: Option<(&[u64], u64)>) -> Live {
        let in_heap: Option<std::collections::HashSet<u64>> =
            heap.map(|(timers, _)| timers.iter().copied().collect());
        let walked_ns = heap.map_or(0, |(_, at)| at);
        let mut out = Live::default();
        for (ptr, t) in &self.timers {
            let seen = in_heap.as_ref().is_none_or(|h| h.contains(ptr));
            if !t.armed || !(seen || t.armed_since >= walked_ns) {
                continue;
            }
            let e = out
                .by_callsite
                .entry(t.callsite)
                .or_insert((0, t.armed_since));
            e.0 += 1;
            e.1 = e.1.min(t.armed_since);
        }
        out
    }

    /// The callsite that created or last re-armed `timer`, if a probe saw it.
    pub fn callsite_of(&self, timer: u64) -> Option<&GoCallsite> {
        self.timers.get(&timer).map(|t| &self.callsites[t.callsite])
    }

    /// Attribute the timers a heap walk found (their `*runtime.timer` pointers).
    pub fn live(&self, heap: &[u64]) -> Live {
        let mut out = Live::default();
        for ptr in heap {
            match self.timers.get(ptr) {
                Some(t) => {
                    let e = out
                        .by_callsite
                        .entry(t.callsite)
                        .or_insert((0, t.armed_since));
                    e.0 += 1;
                    e.1 = e.1.min(t.armed_since);
                }
                None => out.pre_existing += 1,
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Callstack;

    struct Names;
    impl Namer for Names {
        fn kind(&mut self, _timer: u64, f: u64, period: u64) -> Kind {
            match (f, period) {
                (0x10, 0) => Kind::GoTimer,
                (0x10, _) => Kind::GoTicker,
                (0x20, _) => Kind::GoAfterFunc,
                _ => Kind::GoNetpoll,
            }
        }
        fn stack(&mut self, frames: &[u64]) -> (Option<String>, Vec<String>) {
            let names: Vec<String> = frames.iter().map(|a| format!("f{a:x}")).collect();
            (names.get(1).cloned(), names)
        }
    }

    fn rec(kind: EventKind, timer: u64, ts: u64, stack: Option<&[u64]>) -> Record {
        Record {
            kind,
            ts_ns: ts,
            timer,
            function: 0x20,
            expires: 0,
            arg: 0,
            tgid: 1,
            tid: 1,
            cur_tgid: 1,
            timer_list: false,
            new_owner: stack.is_some(),
            slack_ns: None,
            stack: stack.map(|f| Callstack {
                comm: "x".into(),
                user_sp: 0,
                scan: vec![],
                frames: f.to_vec(),
                copy: None,
            }),
        }
    }

    #[test]
    fn one_shot_timers_have_a_lifetime_and_tickers_none() {
        let (mut s, mut n) = (GoState::default(), Names);
        let sec = 1_000_000_000u64;
        // Two AfterFuncs due 30 s after creation; the second is stopped after 10 s.
        for (t, at) in [(0xa0u64, 5 * sec), (0xb0, 6 * sec)] {
            let create = Record {
                expires: at + 30 * sec,
                ..rec(EventKind::GoCreate, t, at, Some(&[1, 2]))
            };
            s.apply(&create, &mut n);
        }
        s.apply(&rec(EventKind::GoStop, 0xb0, 16 * sec, None), &mut n);
        let (mean, max) = s.callsites()[0].lifetime_s().unwrap();
        assert!((mean - 20.0).abs() < 1e-6, "{mean}");
        assert!((max - 30.0).abs() < 1.5, "{max}");
        // A ticker (period set) lives until stopped: no lifetime.
        let ticker = Record {
            function: 0x10,
            arg: sec,
            expires: 8 * sec,
            ..rec(EventKind::GoCreate, 0xc0, 7 * sec, Some(&[1, 3]))
        };
        s.apply(&ticker, &mut n);
        assert_eq!(s.callsites()[1].kind, Kind::GoTicker);
        assert_eq!(s.callsites()[1].lifetime_s(), None);
    }

    #[test]
    fn live_comes_from_the_heap_not_from_create_minus_stop() {
        let mut s = GoState::default();
        let mut n = Names;
        for (i, t) in [0xa0u64, 0xb0, 0xc0].iter().enumerate() {
            s.apply(
                &rec(EventKind::GoCreate, *t, 100 + i as u64, Some(&[1, 2])),
                &mut n,
            );
        }
        // Never stopped, yet gone from the heap (fired and compacted, say): not live.
        let live = s.live(&[0xa0, 0xc0, 0xdead]);
        assert_eq!(live.by_callsite[&0], (2, 100));
        assert_eq!(live.pre_existing, 1);
        let c = &s.callsites()[0];
        assert_eq!(
            (c.kind, c.caller.as_deref()),
            (Kind::GoAfterFunc, Some("f2"))
        );
        assert_eq!((c.created_total, c.armed_total), (3, 3));
    }

    #[test]
    fn stacks_and_kinds_split_callsites_and_small_records_count_for_their_timer() {
        let mut s = GoState::default();
        let mut n = Names;
        s.apply(&rec(EventKind::GoCreate, 0xa0, 1, Some(&[1, 2])), &mut n);
        s.apply(&rec(EventKind::GoCreate, 0xb0, 2, Some(&[1, 3])), &mut n);
        s.apply(&rec(EventKind::GoModify, 0xa0, 3, None), &mut n);
        s.apply(&rec(EventKind::GoStop, 0xa0, 4, None), &mut n);
        s.apply(&rec(EventKind::GoFire, 0xb0, 5, None), &mut n);
        s.apply(&rec(EventKind::GoStop, 0xeee, 6, None), &mut n);
        let cs = s.callsites();
        assert_eq!(cs.len(), 2);
        assert_eq!((cs[0].armed_total, cs[0].cancelled_total), (2, 1));
        assert_eq!(cs[1].expired_total, 1);
        assert_eq!(s.unattributed, 1);
        // Re-armed after its stop: its age restarts.
        s.apply(&rec(EventKind::GoModify, 0xa0, 9, None), &mut n);
        assert_eq!(s.live(&[0xa0]).by_callsite[&0], (1, 9));
    }

    #[test]
    fn pending_at_exit_trusts_the_walk_until_it_and_the_probes_after_it() {
        let mut s = GoState::default();
        let mut n = Names;
        s.apply(&rec(EventKind::GoCreate, 0xa0, 10, Some(&[1, 2])), &mut n);
        s.apply(&rec(EventKind::GoCreate, 0xb0, 20, Some(&[1, 2])), &mut n);
        s.apply(&rec(EventKind::GoCreate, 0xc0, 30, Some(&[1, 3])), &mut n);
        s.apply(&rec(EventKind::GoCreate, 0xd0, 40, Some(&[1, 3])), &mut n);
        s.apply(&rec(EventKind::GoStop, 0xd0, 45, None), &mut n);
        // Never walked: the probes' account alone (0xd0 was stopped).
        let all = s.pending_at_exit(None);
        assert_eq!(all.by_callsite[&0], (2, 10));
        assert_eq!(all.by_callsite[&1], (1, 30));
        // Walked at 25 without 0xa0 (dropped by the runtime): 0xb0 is in it, 0xc0 came later.
        let walked = s.pending_at_exit(Some((&[0xb0], 25)));
        assert_eq!(walked.by_callsite[&0], (1, 20));
        assert_eq!(walked.by_callsite[&1], (1, 30));
    }

    #[test]
    fn a_sleep_renames_the_goroutine_timer_without_counting_an_arm() {
        let mut s = GoState::default();
        let mut n = Names;
        // 1.25+: the first arm's stack ends at mcall.
        s.apply(&rec(EventKind::GoModify, 0xa0, 1, Some(&[7])), &mut n);
        s.apply(&rec(EventKind::GoSleep, 0xa0, 2, Some(&[8, 9])), &mut n);
        s.apply(&rec(EventKind::GoModify, 0xa0, 3, None), &mut n);
        let cs = s.callsites();
        assert_eq!(cs[1].kind, Kind::GoSleep);
        assert_eq!(cs[1].armed_total, 1);
        assert_eq!(s.live(&[0xa0]).by_callsite[&1], (1, 1));
    }
}
