//! The live-timer table: every timer we can see, grouped by owning process and callsite.
//!
//! Liveness rules:
//! - a POSIX timer is live from `timer_create` to `timer_delete` (or exit/exec), armed or not:
//!   that is the memory and the queued-signal slot it holds;
//! - an interval timer is live while its value is non-zero;
//! - any other timer (timerfd, sleeps, kernel timers) is live while armed: between a start and
//!   its expiry or cancellation.
//!
//! This module does no I/O: names come from a [`Resolver`], so the state machine is testable
//! without a kernel.

use std::hash::{DefaultHasher, Hash, Hasher};

use timerwatch_common::EventKind;

use crate::{
    event::{Callstack, Record},
    histogram::Histogram,
    kind::{classify, Kind},
    report::{CallsiteId, Source},
    symbolize::{Naming, UserStack},
};

/// The table's maps hash with foldhash (seeded per process) rather than SipHash: every record
/// costs several lookups, and SipHash was about a fifth of a node agent's CPU time. Their keys are
/// kernel addresses, pids and the table's own ids, which no target chooses.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// Lookups the table needs from the outside world.
pub trait Resolver {
    /// Kernel symbol of a callback address.
    fn kernel(&mut self, addr: u64) -> Option<String>;
    /// Symbolized user stack of a process.
    fn user(&mut self, tgid: u32, stack: &Callstack) -> UserStack;
    /// (comm, exe) of a live process.
    fn process(&mut self, tgid: u32) -> (Option<String>, Option<String>);
    /// The process exec'd or exited: its cached symbols are stale.
    fn forget(&mut self, tgid: u32);
    /// `stack` named again where better names arrived since (debug files fetched in the
    /// background), or `None`.
    fn rename(&mut self, _stack: &UserStack) -> Option<UserStack> {
        None
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum TimerKey {
    Addr(u64),
    Posix { tgid: u32, id: u32 },
    Itimer { tgid: u32, which: u32 },
}

#[derive(Clone, Debug)]
struct Timer {
    tgid: u32,
    /// The kernel's cumulative re-arm count at the last `Rearms` record (see `on_rearms`).
    rearms_seen: u32,
    callsite: u64,
    armed: bool,
    /// Set while the timer counts as live: when it became live (ns, CLOCK_MONOTONIC).
    live_since: Option<u64>,
    /// Live from creation (POSIX timers) rather than while armed.
    object: bool,
    /// Itimer reload interval (ns); 0 for one-shot.
    interval: u64,
    /// When the current life should end if nothing cancels or re-arms it (ns, CLOCK_MONOTONIC);
    /// None when its expiry is on a clock we cannot convert.
    life_end: Option<u64>,
}

impl Timer {
    fn set_live(&mut self, c: Option<&mut Callsite>, live: bool, now: u64) {
        if self.live_since.is_some() == live {
            return;
        }
        self.live_since = live.then_some(now);
        if let Some(c) = c {
            if live {
                c.live += 1;
            } else {
                c.live = c.live.saturating_sub(1);
            }
        }
    }

    /// An arm at `now`, to end at `end`: a new life, or a live one re-armed.
    fn arm(&mut self, mut c: Option<&mut Callsite>, now: u64, end: Option<u64>) {
        self.armed = true;
        if let Some(c) = c.as_deref_mut() {
            c.armed_total += 1;
        }
        if self.live_since.is_some() {
            self.extend_life(c, end);
        } else {
            self.set_live(c.as_deref_mut(), true, now);
            self.begin_life(c, now, end);
        }
    }

    fn begin_life(&mut self, c: Option<&mut Callsite>, now: u64, end: Option<u64>) {
        if self.object {
            return;
        }
        self.life_end = end;
        if let Some(c) = c {
            c.lives_total += 1;
            match end {
                Some(end) => {
                    let d = end.saturating_sub(now);
                    c.armed_for.record(d);
                    c.life_ns_total += i128::from(d);
                }
                None => c.lives_unknown += 1,
            }
        }
    }

    /// A live timer re-armed to end at `end`: its life's expected length moves by as much.
    fn extend_life(&mut self, c: Option<&mut Callsite>, end: Option<u64>) {
        let (Some(old), Some(new)) = (self.life_end, end) else {
            return;
        };
        self.life_end = Some(new);
        if let Some(c) = c {
            c.life_ns_total += i128::from(new) - i128::from(old);
        }
    }

    /// A life that ended at `now`, before its expected end (a cancel): shorten it.
    fn end_life_early(&mut self, c: Option<&mut Callsite>, now: u64) {
        let Some(end) = self.life_end.take() else {
            return;
        };
        if let Some(c) = c {
            c.life_ns_total -= i128::from(end.saturating_sub(now));
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Callsite {
    pub tgid: u32,
    pub kind: Kind,
    pub timer_function: Option<String>,
    pub caller: Option<String>,
    pub frames: Vec<String>,
    /// How each of `frames` was named.
    pub naming: Vec<Naming>,
    pub live: u64,
    pub created_total: u64,
    pub armed_total: u64,
    pub cancelled_total: u64,
    pub expired_total: u64,
    /// Expiry → woken task running, ns, one sample per timer-caused wake-up.
    pub wakeup_latency: Histogram,
    /// Requested → actual expiry, ns, one sample per hrtimer expiry.
    pub slack: Histogram,
    /// Lives begun: times one of its timers became live while armed (the arrivals of Little's
    /// law, live = arrival rate × lifetime). POSIX and interval timers, live for as long as
    /// they exist, never count here.
    pub lives_total: u64,
    /// Of `lives_total`, those whose armed duration was unknown (a clock other than
    /// CLOCK_MONOTONIC, or jiffies before the tick rate is known).
    pub lives_unknown: u64,
    /// How long each life with a known duration was armed for, ns, at the arm that began it.
    pub armed_for: Histogram,
    /// The expected lifetimes of those lives, summed (ns): the armed durations, shortened when a
    /// life ended early (cancel) and lengthened or shortened when it was re-armed while live.
    pub life_ns_total: i128,
    /// `report::CallsiteId` of its names, computed when they are given (creation, rename):
    /// the trend test samples every callsite every second.
    identity: CallsiteId,
}

impl Callsite {
    /// Its identity across reports (`report::CallsiteReport::id` of its row).
    pub fn identity(&self) -> CallsiteId {
        self.identity
    }

    fn identify(&mut self) {
        self.identity = CallsiteId::of(
            self.tgid,
            Source::Kernel,
            self.kind.into(),
            self.caller.as_deref(),
            &self.frames,
            self.timer_function.as_deref(),
        );
    }

    /// Expected lifetime of one of its timers, seconds: (mean, longest), where every life begun
    /// had a known duration (at most a tenth unknown). None for timers that live until deleted.
    pub fn lifetime_s(&self) -> Option<(f64, f64)> {
        let known = self.lives_total - self.lives_unknown;
        if known == 0 || self.lives_unknown * 10 > self.lives_total {
            return None;
        }
        let max = self.armed_for.quantile(0.99)? as f64 / 1e9;
        let mean = (self.life_ns_total as f64 / known as f64 / 1e9).max(0.0);
        Some((mean, max))
    }
}

/// Armed durations beyond this are taken as a clock we cannot convert (CLOCK_REALTIME and
/// CLOCK_TAI expiries are ~1.7e18 ns ahead of CLOCK_MONOTONIC).
const MAX_ARMED_NS: u64 = 7 * 86_400 * 1_000_000_000;

/// Tick rates Linux is built with (CONFIG_HZ).
const HZ_CHOICES: [u64; 5] = [100, 250, 300, 1000, 1024];

/// `jiffies` starts 5 minutes before wrapping its low 32 bits: INITIAL_JIFFIES, which depends
/// on the tick rate. A single (CLOCK_MONOTONIC, jiffies) pair therefore tells the tick rate: the
/// one for which jiffies − INITIAL_JIFFIES ≈ HZ × seconds since boot.
fn tick_rate(ts_ns: u64, jiffies: u64) -> Option<u64> {
    let secs = ts_ns as f64 / 1e9;
    HZ_CHOICES.into_iter().find(|&hz| {
        let initial = u64::from((300 * hz as u32).wrapping_neg());
        let ticks = jiffies.wrapping_sub(initial) as f64;
        (ticks - hz as f64 * secs).abs() <= 0.01 * hz as f64 * secs + 2.0 * hz as f64
    })
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    pub tgid: u32,
    pub comm: String,
    pub exe: Option<String>,
    callsites: Vec<u64>,
    /// Its entries in [`Table::index`], so an exit or exec drops them without a scan.
    index_keys: Vec<IndexKey>,
}

/// (tgid, kind, hash of the raw stack, kernel callback of kernel timers).
type IndexKey = (u32, Kind, u64, u64);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exited {
    pub tgid: u32,
    pub comm: String,
    pub at_ns: u64,
}

/// A callsite as the report sees it, with the age of its oldest live timer.
#[derive(Clone, Debug)]
pub struct CallsiteView<'a> {
    pub callsite: &'a Callsite,
    pub oldest_live_since_ns: Option<u64>,
}

#[derive(Default)]
pub struct Table {
    timers: HashMap<TimerKey, Timer>,
    /// Each process's keys in `timers`: a host that starts and ends a thousand processes a second
    /// would otherwise pay a scan of every timer for each exit and exec.
    timers_of: HashMap<u32, HashSet<TimerKey>>,
    /// A POSIX timer's hrtimer address → the POSIX timer, so its arms and expiries count for it.
    posix_by_hrtimer: HashMap<u64, TimerKey>,
    /// The reverse of `posix_by_hrtimer` (a `k_itimer` has one hrtimer).
    hrtimer_of_posix: HashMap<TimerKey, u64>,
    /// A process's ITIMER_REAL hrtimer → its interval timer, for the wake-ups it causes (its
    /// arms and expiries come from the itimer tracepoints instead).
    itimer_by_hrtimer: HashMap<u64, TimerKey>,
    callsites: HashMap<u64, Callsite>,
    /// Callsites whose stacks have frames still waiting for names (see [`Table::rename`]).
    renaming: HashMap<u64, UserStack>,
    /// (tgid, kind, hash of the raw stack, kernel callback of kernel timers) → callsite id. Raw
    /// addresses symbolize the same way for the life of an address space, so a stack seen before
    /// costs no symbolization. Kernel timers armed under one user stack (a socket's retransmit,
    /// delayed-ACK and TIME_WAIT timers) are told apart by their callback.
    index: HashMap<IndexKey, u64>,
    processes: HashMap<u32, Process>,
    /// The most recent exits only: a long-running daemon on a host that forks constantly would
    /// otherwise keep every exit it ever saw.
    exited: Vec<Exited>,
    /// hrtimers of POSIX timers deleted while armed, whose cancel record is still to come.
    expected_cancels: HashSet<u64>,
    /// Recently exited processes → when (ns).
    dead: HashMap<u32, u64>,
    next_id: u64,
    /// Kind by kernel callback address: every arm needs it, and its name (a lookup and a copy)
    /// only the first time. Callbacks are kernel functions, a few dozen on a node.
    kinds: HashMap<u64, Kind>,
    /// The kernel's tick rate, learnt from timer_list arms (see [`tick_rate`]).
    hz: Option<u64>,
    /// Records that could not be attributed (a timer we never saw start, an unknown id).
    pub unmatched: u64,
}

/// Exits kept for the report's `exited` list.
pub const MAX_EXITED: usize = 4096;

/// The identity of a user stack (kernel or Go source alike): a callsite is a stack.
pub(crate) fn stack_hash(frames: &[u64]) -> u64 {
    let mut h = DefaultHasher::new();
    frames.hash(&mut h);
    // 0 is reserved for "no stack".
    h.finish() | 1
}

impl Table {
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives callsites the names that arrived since they were first named (a debug file fetched
    /// in the background): their identity stays, only caller, frames and naming change.
    pub fn rename(&mut self, res: &mut dyn Resolver) {
        let callsites = &mut self.callsites;
        self.renaming.retain(|id, stack| {
            let Some(callsite) = callsites.get_mut(id) else {
                return false;
            };
            if let Some(renamed) = res.rename(stack) {
                callsite.caller = renamed.caller.clone();
                callsite.frames = renamed.frames.iter().map(|f| f.display()).collect();
                callsite.naming = renamed.frames.iter().map(|f| f.naming).collect();
                callsite.identify();
                *stack = renamed;
            }
            stack.awaits_names()
        });
    }

    /// Make sure a process has a row even before any timer event (for `-p` targets).
    pub fn ensure_process(&mut self, tgid: u32, res: &mut dyn Resolver) {
        self.process_mut(tgid, None, res);
    }

    fn process_mut(
        &mut self,
        tgid: u32,
        comm: Option<&str>,
        res: &mut dyn Resolver,
    ) -> &mut Process {
        self.processes.entry(tgid).or_insert_with(|| {
            let (pcomm, exe) = res.process(tgid);
            Process {
                tgid,
                comm: comm.map(str::to_string).or(pcomm).unwrap_or_default(),
                exe,
                callsites: Vec::new(),
                index_keys: Vec::new(),
            }
        })
    }

    fn callsite_for(
        &mut self,
        tgid: u32,
        kind: Kind,
        function: u64,
        stack: Option<&Callstack>,
        res: &mut dyn Resolver,
    ) -> u64 {
        let hash = stack.map_or(0, |s| stack_hash(&s.frames));
        let callback = if matches!(kind, Kind::Kernel | Kind::Other) {
            function
        } else {
            0
        };
        if let Some(&id) = self.index.get(&(tgid, kind, hash, callback)) {
            if self.callsites.contains_key(&id) {
                return id;
            }
        }
        let timer_function = (function != 0).then(|| res.kernel(function)).flatten();
        let id = self.next_id;
        let (caller, frames, naming) = match stack {
            Some(s) => {
                let u = res.user(tgid, s);
                let frames = u.frames.iter().map(|f| f.display()).collect();
                let naming = u.frames.iter().map(|f| f.naming).collect();
                let caller = u.caller.clone();
                if u.awaits_names() {
                    self.renaming.insert(id, u);
                }
                (caller, frames, naming)
            }
            None => (None, Vec::new(), Vec::new()),
        };
        self.next_id += 1;
        let mut callsite = Callsite {
            tgid,
            kind,
            timer_function,
            caller,
            frames,
            naming,
            live: 0,
            created_total: 0,
            armed_total: 0,
            cancelled_total: 0,
            expired_total: 0,
            wakeup_latency: Histogram::default(),
            slack: Histogram::default(),
            lives_total: 0,
            lives_unknown: 0,
            armed_for: Histogram::default(),
            life_ns_total: 0,
            identity: CallsiteId::default(),
        };
        callsite.identify();
        self.callsites.insert(id, callsite);
        let key = (tgid, kind, hash, callback);
        self.index.insert(key, id);
        let p = self.process_mut(tgid, stack.map(|s| s.comm.as_str()), res);
        p.callsites.push(id);
        p.index_keys.push(key);
        id
    }

    /// A new, unarmed timer of `callsite`; `object`: live from creation (POSIX timers).
    fn create(&mut self, key: TimerKey, tgid: u32, callsite: u64, object: bool) {
        let timer = Timer {
            tgid,
            rearms_seen: 0,
            callsite,
            armed: false,
            live_since: None,
            object,
            interval: 0,
            life_end: None,
        };
        if let Some(old) = self.timers.insert(key, timer) {
            self.unlist(old.tgid, key);
        }
        self.timers_of.entry(tgid).or_default().insert(key);
        self.bump(key, |c| c.created_total += 1);
    }

    fn unlist(&mut self, tgid: u32, key: TimerKey) {
        if let Some(keys) = self.timers_of.get_mut(&tgid) {
            keys.remove(&key);
            if keys.is_empty() {
                self.timers_of.remove(&tgid);
            }
        }
    }

    /// Count `addr`'s arms and expiries for the POSIX timer `key` from now on.
    fn link_posix(&mut self, addr: u64, key: TimerKey) {
        if let Some(old) = self.posix_by_hrtimer.insert(addr, key) {
            if old != key && self.hrtimer_of_posix.get(&old) == Some(&addr) {
                self.hrtimer_of_posix.remove(&old);
            }
        }
        if let Some(old) = self.hrtimer_of_posix.insert(key, addr) {
            if old != addr && self.posix_by_hrtimer.get(&old) == Some(&key) {
                self.posix_by_hrtimer.remove(&old);
            }
        }
    }

    /// Drop the link of hrtimer `addr`, returning whether there was one.
    fn unlink_hrtimer(&mut self, addr: u64) -> bool {
        let Some(key) = self.posix_by_hrtimer.remove(&addr) else {
            return false;
        };
        if self.hrtimer_of_posix.get(&key) == Some(&addr) {
            self.hrtimer_of_posix.remove(&key);
        }
        true
    }

    /// Drop the link of POSIX timer `key`, returning its hrtimer.
    fn unlink_posix(&mut self, key: TimerKey) -> Option<u64> {
        let addr = self.hrtimer_of_posix.remove(&key)?;
        if self.posix_by_hrtimer.get(&addr) == Some(&key) {
            self.posix_by_hrtimer.remove(&addr);
        }
        Some(addr)
    }

    fn set_live(&mut self, key: TimerKey, live: bool, now: u64) {
        if let Some((t, c)) = self.entry(key) {
            t.set_live(c, live, now);
        }
    }

    /// A timer and its callsite, found once: the per-record path ran up to nine hash lookups
    /// per record through helpers that each looked both up again, most of the node agent's time.
    fn entry(&mut self, key: TimerKey) -> Option<(&mut Timer, Option<&mut Callsite>)> {
        let t = self.timers.get_mut(&key)?;
        let c = self.callsites.get_mut(&t.callsite);
        Some((t, c))
    }

    fn remove_timer(&mut self, key: TimerKey) {
        self.set_live(key, false, 0);
        if let Some(t) = self.timers.remove(&key) {
            self.unlist(t.tgid, key);
        }
    }

    fn bump(&mut self, key: TimerKey, f: impl FnOnce(&mut Callsite)) {
        if let Some((_, Some(c))) = self.entry(key) {
            f(c);
        }
    }

    /// Whether a record is about a process that already exited: the kernel may still credit it
    /// with timers it set up (an object initialised in its syscall, armed later by others) until
    /// the addresses are reused. A record from the pid's own context means the pid was reused.
    fn credited_to_the_dead(&mut self, r: &Record) -> bool {
        if !self.dead.contains_key(&r.tgid) {
            return false;
        }
        if r.cur_tgid == r.tgid && r.kind != EventKind::ProcessExit {
            self.dead.remove(&r.tgid);
            return false;
        }
        true
    }

    fn bury(&mut self, tgid: u32, now: u64) {
        // Late records arrive within milliseconds; a minute bounds the set on a busy host.
        self.dead
            .retain(|_, &mut at| now.saturating_sub(at) < 60_000_000_000);
        self.dead.insert(tgid, now);
    }

    /// Apply one record. Returns kernel timer addresses the probes should forget (a process exited).
    pub fn apply(&mut self, r: &Record, res: &mut dyn Resolver) -> Vec<u64> {
        if self.credited_to_the_dead(r) {
            return Vec::new();
        }
        match r.kind {
            EventKind::Start => self.on_start(r, res),
            EventKind::Cancel | EventKind::Expire => self.on_stop(r),
            EventKind::Rearms => self.on_rearms(r),
            EventKind::Wakeup => {
                let key = match self.itimer_by_hrtimer.get(&r.timer) {
                    Some(&k) => k,
                    None => self.key_of(r.timer),
                };
                self.bump(key, |c| c.wakeup_latency.record(r.arg));
            }
            EventKind::Forget => {
                // A POSIX timer object keeps living; only its link to the reused hrtimer goes.
                if !self.unlink_hrtimer(r.timer) {
                    self.remove_timer(TimerKey::Addr(r.timer));
                }
            }
            EventKind::ItimerState => self.on_itimer_state(r, res),
            EventKind::ItimerExpire => {
                let key = TimerKey::Itimer {
                    tgid: r.tgid,
                    which: r.timer as u32,
                };
                self.bump(key, |c| c.expired_total += 1);
                if self.timers.get(&key).is_some_and(|t| t.interval == 0) {
                    if let Some(t) = self.timers.get_mut(&key) {
                        t.armed = false;
                    }
                    self.set_live(key, false, r.ts_ns);
                }
            }
            EventKind::PosixCreate => {
                let key = TimerKey::Posix {
                    tgid: r.tgid,
                    id: r.timer as u32,
                };
                self.remove_timer(key);
                let cs = self.callsite_for(r.tgid, Kind::PosixTimer, 0, r.stack.as_ref(), res);
                self.create(key, r.tgid, cs, true);
                self.set_live(key, true, r.ts_ns);
                if r.arg != 0 {
                    self.remove_timer(TimerKey::Addr(r.arg));
                    self.link_posix(r.arg, key);
                }
            }
            EventKind::PosixDelete => {
                let key = TimerKey::Posix {
                    tgid: r.tgid,
                    id: r.timer as u32,
                };
                let Some(armed) = self.timers.get(&key).map(|t| t.armed) else {
                    self.unmatched += 1;
                    return Vec::new();
                };
                if armed {
                    self.bump(key, |c| c.cancelled_total += 1);
                }
                let hrtimers = self.unlink_posix(key);
                // The syscall-entry record comes before the hrtimer cancel that the deletion
                // causes; that cancel is expected, not unattributed.
                if armed {
                    self.expected_cancels.extend(hrtimers);
                }
                self.remove_timer(key);
            }
            EventKind::ProcessExit => return self.on_exit(r, res),
            EventKind::ProcessExec => self.on_exec(r.tgid, res),
            // Go runtime timers live in the Go heap, not the kernel: `gotrace` keeps them.
            EventKind::GoCreate
            | EventKind::GoModify
            | EventKind::GoStop
            | EventKind::GoFire
            | EventKind::GoSleep => {}
        }
        Vec::new()
    }

    fn on_start(&mut self, r: &Record, res: &mut dyn Resolver) {
        if let Some(&pk) = self.posix_by_hrtimer.get(&r.timer) {
            if let Some(t) = self.timers.get_mut(&pk) {
                t.armed = true;
            }
            self.bump(pk, |c| c.armed_total += 1);
            return;
        }
        let kind = match self.kinds.get(&r.function) {
            Some(&kind) => kind,
            None => {
                let function = (r.function != 0).then(|| res.kernel(r.function)).flatten();
                let kind = classify(function.as_deref());
                self.kinds.insert(r.function, kind);
                kind
            }
        };
        if kind == Kind::Itimer {
            // signal->real_timer is set up by the parent at fork; `itimer_state` attributes it,
            // and the wake-ups of this hrtimer count for it.
            let key = TimerKey::Itimer {
                tgid: r.tgid,
                which: 0, // ITIMER_REAL: the only interval timer with an hrtimer
            };
            self.itimer_by_hrtimer.insert(r.timer, key);
            return;
        }
        let key = TimerKey::Addr(r.timer);
        let end = self.armed_ns(r).map(|d| r.ts_ns.saturating_add(d));
        if !r.new_owner {
            if let Some((t, c)) = self.entry(key).filter(|(t, _)| t.tgid == r.tgid) {
                t.arm(c, r.ts_ns, end);
                return;
            }
            // A re-arm of a timer whose first arm we missed (lost record, or armed before we
            // attached and owned elsewhere): count it, without a callsite.
            self.unmatched += 1;
        }
        self.remove_timer(key);
        let cs = self.callsite_for(r.tgid, kind, r.function, r.stack.as_ref(), res);
        self.create(key, r.tgid, cs, false);
        if let Some((t, c)) = self.entry(key) {
            t.arm(c, r.ts_ns, end);
        }
    }

    /// How long a start arms its timer for, ns, if its expiry converts to CLOCK_MONOTONIC:
    /// hrtimers on CLOCK_MONOTONIC (timerfds, sleeps, poll timeouts) directly, timer_list timers
    /// through the jiffies the probe sends with the arm.
    fn armed_ns(&mut self, r: &Record) -> Option<u64> {
        if r.timer_list {
            let hz = match self.hz {
                Some(hz) => hz,
                None => {
                    self.hz = tick_rate(r.ts_ns, r.arg);
                    self.hz?
                }
            };
            let ticks = r.expires.wrapping_sub(r.arg);
            return (ticks as i64 >= 0)
                .then(|| ticks.saturating_mul(1_000_000_000) / hz)
                .filter(|&d| d <= MAX_ARMED_NS);
        }
        let d = r.expires as i64 - r.ts_ns as i64;
        // Already due when armed: a life of zero, not an unknown clock.
        (d > -1_000_000_000 && d <= MAX_ARMED_NS as i64).then_some(d.max(0) as u64)
    }

    /// The timer a kernel address stands for: a POSIX timer's hrtimer counts for the POSIX timer.
    fn key_of(&self, addr: u64) -> TimerKey {
        match self.posix_by_hrtimer.get(&addr) {
            Some(&pk) => pk,
            None => TimerKey::Addr(addr),
        }
    }

    fn on_stop(&mut self, r: &Record) {
        let key = self.key_of(r.timer);
        let Some((t, mut c)) = self.entry(key) else {
            if !self.expected_cancels.remove(&r.timer) {
                self.unmatched += 1;
            }
            return;
        };
        let was_armed = std::mem::replace(&mut t.armed, false);
        if let Some(c) = c.as_deref_mut() {
            match r.kind {
                EventKind::Expire => {
                    c.expired_total += 1;
                    if let Some(slack) = r.slack_ns {
                        c.slack.record(slack);
                    }
                }
                // hrtimer_start on an armed timer emits a cancel first; only real disarms count.
                _ if was_armed => c.cancelled_total += 1,
                _ => {}
            }
        }
        if !t.object {
            if r.kind == EventKind::Cancel && was_armed {
                t.end_life_early(c.as_deref_mut(), r.ts_ns);
            } else {
                t.life_end = None;
            }
            t.set_live(c, false, r.ts_ns);
        }
    }

    /// Re-arms the probes counted in the kernel: each was a cancel and an arm of an armed timer,
    /// so only the totals move. The count is cumulative per timer, which makes a record that
    /// overtook a later one harmless.
    fn on_rearms(&mut self, r: &Record) {
        let key = self.key_of(r.timer);
        let Some((t, mut c)) = self.entry(key).filter(|(t, _)| t.tgid == r.tgid) else {
            self.unmatched += 1;
            return;
        };
        let total = r.arg as u32;
        let n = total.wrapping_sub(t.rearms_seen);
        if n == 0 || n > u32::MAX / 2 {
            return;
        }
        t.rearms_seen = total;
        if let Some(c) = c.as_deref_mut() {
            c.armed_total += u64::from(n);
            c.cancelled_total += u64::from(n);
        }
        // The record carries the last re-arm's expiry: for hrtimers an absolute CLOCK_MONOTONIC
        // time (timer_list ones are in jiffies without the jiffies of the arm: left as they were).
        if !r.timer_list && r.expires.abs_diff(r.ts_ns) <= MAX_ARMED_NS {
            t.extend_life(c, Some(r.expires));
        }
    }

    fn on_itimer_state(&mut self, r: &Record, res: &mut dyn Resolver) {
        let key = TimerKey::Itimer {
            tgid: r.tgid,
            which: r.timer as u32,
        };
        let armed = r.expires != 0;
        if !self.timers.contains_key(&key) {
            if !armed {
                return;
            }
            let cs = self.callsite_for(r.tgid, Kind::Itimer, 0, r.stack.as_ref(), res);
            self.create(key, r.tgid, cs, false);
        }
        let was_armed = self.timers.get(&key).is_some_and(|t| t.armed);
        if let Some(t) = self.timers.get_mut(&key) {
            t.armed = armed;
            t.interval = r.arg;
        }
        if armed {
            self.bump(key, |c| c.armed_total += 1);
        } else if was_armed {
            self.bump(key, |c| c.cancelled_total += 1);
        }
        self.set_live(key, armed, r.ts_ns);
    }

    fn drop_process_state(&mut self, tgid: u32) -> Vec<u64> {
        let mut addrs = Vec::new();
        for k in self.timers_of.remove(&tgid).unwrap_or_default() {
            match k {
                TimerKey::Addr(a) => addrs.push(a),
                TimerKey::Posix { .. } => addrs.extend(self.unlink_posix(k)),
                TimerKey::Itimer { .. } => {}
            }
            self.timers.remove(&k);
        }
        // One entry per process that ever armed ITIMER_REAL: small, unlike the maps above.
        self.itimer_by_hrtimer
            .retain(|_, k| !matches!(k, TimerKey::Itimer { tgid: t, .. } if *t == tgid));
        if let Some(p) = self.processes.remove(&tgid) {
            for k in p.index_keys {
                self.index.remove(&k);
            }
            for id in p.callsites {
                self.callsites.remove(&id);
            }
        }
        addrs
    }

    fn on_exit(&mut self, r: &Record, res: &mut dyn Resolver) -> Vec<u64> {
        let comm = self.processes.get(&r.tgid).map(|p| p.comm.clone());
        let addrs = self.drop_process_state(r.tgid);
        if let Some(comm) = comm {
            self.remember_exit(Exited {
                tgid: r.tgid,
                comm,
                at_ns: r.ts_ns,
            });
        }
        self.bury(r.tgid, r.ts_ns);
        res.forget(r.tgid);
        addrs
    }

    fn on_exec(&mut self, tgid: u32, res: &mut dyn Resolver) {
        res.forget(tgid);
        // exec destroys POSIX timers (exit_itimers) and replaces the address space: stacks seen
        // before mean something else now.
        let posix: Vec<TimerKey> = self
            .timers_of
            .get(&tgid)
            .into_iter()
            .flatten()
            .filter(|k| matches!(k, TimerKey::Posix { .. }))
            .copied()
            .collect();
        for k in posix {
            self.unlink_posix(k);
            self.remove_timer(k);
        }
        if let Some(p) = self.processes.get_mut(&tgid) {
            for k in std::mem::take(&mut p.index_keys) {
                self.index.remove(&k);
            }
        }
        let (comm, exe) = res.process(tgid);
        if let Some(p) = self.processes.get_mut(&tgid) {
            if let Some(comm) = comm {
                p.comm = comm;
            }
            p.exe = exe.or(p.exe.take());
        }
    }

    /// A process that is gone without our seeing its exit (e.g. it exited before we attached).
    pub fn mark_exited(&mut self, tgid: u32, now: u64, res: &mut dyn Resolver) -> Vec<u64> {
        let comm = self
            .processes
            .get(&tgid)
            .map(|p| p.comm.clone())
            .unwrap_or_default();
        let addrs = self.drop_process_state(tgid);
        self.remember_exit(Exited {
            tgid,
            comm,
            at_ns: now,
        });
        self.bury(tgid, now);
        res.forget(tgid);
        addrs
    }

    pub fn processes(&self) -> impl Iterator<Item = &Process> {
        self.processes.values()
    }

    pub fn process(&self, tgid: u32) -> Option<&Process> {
        self.processes.get(&tgid)
    }

    pub fn exited(&self) -> &[Exited] {
        &self.exited
    }

    fn remember_exit(&mut self, e: Exited) {
        // Dropping the older half at once keeps the cost per exit constant.
        if self.exited.len() >= MAX_EXITED {
            self.exited.drain(..MAX_EXITED / 2);
        }
        self.exited.push(e);
    }

    /// Live timers of a process.
    pub fn process_live(&self, tgid: u32) -> u64 {
        self.callsites(tgid).map(|v| v.callsite.live).sum()
    }

    /// The callsites of a process, with the oldest live timer's start.
    pub fn callsites(&self, tgid: u32) -> impl Iterator<Item = CallsiteView<'_>> {
        let oldest = oldest_live(
            self.timers_of
                .get(&tgid)
                .into_iter()
                .flatten()
                .filter_map(|k| self.timers.get(k)),
        );
        self.views(tgid, &oldest).into_iter()
    }

    /// The callsites of a process, without ages (what the trend test samples).
    pub fn callsites_of(&self, tgid: u32) -> impl Iterator<Item = &Callsite> {
        self.processes
            .get(&tgid)
            .into_iter()
            .flat_map(|p| p.callsites.iter().filter_map(|id| self.callsites.get(id)))
    }

    /// [`Table::callsites`] of every process, from one pass over the timers: a report over a
    /// node's processes would otherwise take processes × timers.
    pub fn callsites_by_process(&self) -> HashMap<u32, Vec<CallsiteView<'_>>> {
        let oldest = oldest_live(self.timers.values());
        self.processes
            .keys()
            .map(|&tgid| (tgid, self.views(tgid, &oldest)))
            .collect()
    }

    fn views(&self, tgid: u32, oldest: &HashMap<(u32, u64), u64>) -> Vec<CallsiteView<'_>> {
        let Some(p) = self.processes.get(&tgid) else {
            return Vec::new();
        };
        p.callsites
            .iter()
            .filter_map(|id| {
                self.callsites.get(id).map(|c| CallsiteView {
                    callsite: c,
                    oldest_live_since_ns: oldest.get(&(tgid, *id)).copied(),
                })
            })
            .collect()
    }

    /// Timers tracked in total (live or not); bounded by what the processes hold.
    pub fn tracked_timers(&self) -> usize {
        self.timers.len()
    }
}

/// The earliest start of a live timer, per (process, callsite), among `timers`.
fn oldest_live<'a>(timers: impl Iterator<Item = &'a Timer>) -> HashMap<(u32, u64), u64> {
    let mut oldest: HashMap<(u32, u64), u64> = HashMap::default();
    for t in timers {
        if let Some(since) = t.live_since {
            oldest
                .entry((t.tgid, t.callsite))
                .and_modify(|o| *o = (*o).min(since))
                .or_insert(since);
        }
    }
    oldest
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resolves names from fixed tables, the way kallsyms and blazesym would.
    #[derive(Default)]
    struct Names {
        forgotten: Vec<u32>,
    }

    const POSIX_FN: u64 = 0xffff_ffff_8100_0010;
    const TIMERFD_FN: u64 = 0xffff_ffff_8100_0020;
    const WAKEUP_FN: u64 = 0xffff_ffff_8100_0030;
    const TCP_FN: u64 = 0xffff_ffff_8100_0040;
    const ITREAL_FN: u64 = 0xffff_ffff_8100_0050;

    impl Resolver for Names {
        fn kernel(&mut self, addr: u64) -> Option<String> {
            Some(
                match addr {
                    POSIX_FN => "posix_timer_fn",
                    TIMERFD_FN => "timerfd_tmrproc",
                    WAKEUP_FN => "hrtimer_wakeup",
                    TCP_FN => "tcp_delack_timer",
                    ITREAL_FN => "it_real_fn",
                    _ => return None,
                }
                .to_string(),
            )
        }
        fn user(&mut self, _tgid: u32, stack: &Callstack) -> UserStack {
            UserStack::named(&stack.frames, |a| format!("f{a:x}"))
        }
        fn process(&mut self, tgid: u32) -> (Option<String>, Option<String>) {
            (
                Some(format!("proc{tgid}")),
                Some(format!("/bin/proc{tgid}")),
            )
        }
        fn forget(&mut self, tgid: u32) {
            self.forgotten.push(tgid);
        }
    }

    fn stack(frames: &[u64]) -> Option<Callstack> {
        Some(Callstack {
            comm: "target".into(),
            user_sp: 0,
            scan: vec![],
            frames: frames.to_vec(),
            copy: None,
        })
    }

    fn rec(kind: EventKind, tgid: u32, timer: u64, function: u64, ts: u64) -> Record {
        Record {
            kind,
            ts_ns: ts,
            timer,
            function,
            expires: 0,
            arg: 0,
            tgid,
            tid: tgid,
            cur_tgid: tgid,
            timer_list: false,
            new_owner: false,
            slack_ns: None,
            stack: None,
        }
    }

    fn first_start(tgid: u32, timer: u64, function: u64, ts: u64, frames: &[u64]) -> Record {
        Record {
            new_owner: true,
            stack: stack(frames),
            ..rec(EventKind::Start, tgid, timer, function, ts)
        }
    }

    fn only_callsite(t: &Table, tgid: u32) -> Callsite {
        let v: Vec<_> = t.callsites(tgid).map(|v| v.callsite.clone()).collect();
        assert_eq!(v.len(), 1, "{v:?}");
        v[0].clone()
    }

    /// Names arrive late: the first stack awaits names, `rename` gives the final ones.
    #[derive(Default)]
    struct LateNames {
        names: Names,
        arrived: bool,
    }

    impl Resolver for LateNames {
        fn kernel(&mut self, addr: u64) -> Option<String> {
            self.names.kernel(addr)
        }
        fn user(&mut self, _tgid: u32, stack: &Callstack) -> UserStack {
            UserStack::named(&stack.frames, |a| format!("lib+{a:#x}")).awaiting(1)
        }
        fn process(&mut self, tgid: u32) -> (Option<String>, Option<String>) {
            self.names.process(tgid)
        }
        fn forget(&mut self, tgid: u32) {
            self.names.forget(tgid);
        }
        fn rename(&mut self, stack: &UserStack) -> Option<UserStack> {
            let addrs: Vec<u64> = stack.frames.iter().map(|f| f.addr).collect();
            self.arrived
                .then(|| UserStack::named(&addrs, |a| format!("f{a:x}")))
        }
    }

    #[test]
    fn callsites_are_renamed_when_names_arrive() {
        let (mut t, mut n) = (Table::new(), LateNames::default());
        t.apply(&first_start(10, 0xa, TIMERFD_FN, 1, &[1, 2]), &mut n);
        t.rename(&mut n);
        assert_eq!(only_callsite(&t, 10).caller.as_deref(), Some("lib+0x2"));
        n.arrived = true;
        t.rename(&mut n);
        let c = only_callsite(&t, 10);
        assert_eq!(c.caller.as_deref(), Some("f2"));
        assert_eq!(c.frames, ["f1", "f2"]);
        assert_eq!(c.naming, [Naming::Symtab, Naming::Symtab]);
        assert!(t.renaming.is_empty(), "nothing left to rename");
        // Same callsite: its timers keep counting there.
        t.apply(&rec(EventKind::Expire, 10, 0xa, TIMERFD_FN, 2), &mut n);
        assert_eq!(only_callsite(&t, 10).expired_total, 1);
    }

    /// The trend test's samples, taken from the table, are the report's rows reduced: same
    /// identities, counts, lifetimes and order, before and after names arrive.
    #[test]
    fn samples_from_the_table_are_the_reports_rows() {
        let (mut t, mut n) = (Table::new(), LateNames::default());
        let check = |t: &Table| {
            let ctx = crate::report::Context {
                start_ns: 0,
                now_ns: 10,
                lost_events: 0,
                pre_existing: &std::collections::HashMap::new(),
                missing_tracepoints: &[],
            };
            let rows = crate::report::kernel_rows(t, &ctx);
            let report = crate::report::assemble(&ctx, rows, vec![], None);
            let mut want = crate::sample::of_report(&report);
            let mut got = crate::sample::combine(crate::sample::kernel(t), vec![]);
            want.sort_by_key(|p| p.pid);
            got.sort_by_key(|p| p.pid);
            assert_eq!(got, want);
            assert!(got.iter().map(|p| p.callsites.len()).sum::<usize>() >= 4);
        };
        t.apply(&first_start(10, 0xa, TIMERFD_FN, 1, &[1, 2]), &mut n);
        t.apply(&first_start(10, 0xb, TIMERFD_FN, 1, &[1, 3]), &mut n);
        t.apply(&first_start(10, 0xc, WAKEUP_FN, 1, &[4]), &mut n);
        t.apply(&rec(EventKind::Expire, 10, 0xc, WAKEUP_FN, 2), &mut n);
        t.apply(&rec(EventKind::Start, 10, 0xc, WAKEUP_FN, 3), &mut n);
        t.apply(&first_start(20, 0xd, TIMERFD_FN, 1, &[1, 2]), &mut n);
        t.apply(&first_start(20, 0xe, TCP_FN, 1, &[5]), &mut n);
        check(&t);
        n.arrived = true;
        t.rename(&mut n);
        check(&t);
    }

    #[test]
    fn arm_expire_rearm_cycle() {
        let (mut t, mut n) = (Table::new(), Names::default());
        t.apply(&first_start(10, 0xa, TIMERFD_FN, 1, &[1, 2]), &mut n);
        let c = only_callsite(&t, 10);
        assert_eq!((c.kind, c.live, c.armed_total), (Kind::Timerfd, 1, 1));
        assert_eq!(c.caller.as_deref(), Some("f2"));
        assert_eq!(c.timer_function.as_deref(), Some("timerfd_tmrproc"));
        t.apply(&rec(EventKind::Expire, 10, 0xa, TIMERFD_FN, 2), &mut n);
        assert_eq!(only_callsite(&t, 10).live, 0);
        // The re-arm of a known timer carries no stack and lands on the same callsite.
        t.apply(&rec(EventKind::Start, 10, 0xa, TIMERFD_FN, 3), &mut n);
        let c = only_callsite(&t, 10);
        assert_eq!(
            (c.live, c.armed_total, c.expired_total, c.created_total),
            (1, 2, 1, 1)
        );
        assert_eq!(t.unmatched, 0);
    }

    #[test]
    fn start_while_armed_does_not_double_count() {
        let (mut t, mut n) = (Table::new(), Names::default());
        t.apply(&first_start(10, 0xa, TIMERFD_FN, 1, &[1, 2]), &mut n);
        t.apply(&rec(EventKind::Start, 10, 0xa, TIMERFD_FN, 2), &mut n);
        let c = only_callsite(&t, 10);
        assert_eq!((c.live, c.armed_total), (1, 2));
        // The kernel reports the implicit dequeue of a re-armed timer as a cancel.
        t.apply(&rec(EventKind::Cancel, 10, 0xa, 0, 3), &mut n);
        t.apply(&rec(EventKind::Start, 10, 0xa, TIMERFD_FN, 4), &mut n);
        let c = only_callsite(&t, 10);
        assert_eq!((c.live, c.armed_total, c.cancelled_total), (1, 3, 1));
    }

    fn rearms(tgid: u32, timer: u64, total: u64, ts: u64) -> Record {
        Record {
            arg: total,
            ..rec(EventKind::Rearms, tgid, timer, 0, ts)
        }
    }

    #[test]
    fn kernel_counted_rearms_move_only_the_totals() {
        let (mut t, mut n) = (Table::new(), Names::default());
        t.apply(&first_start(10, 0xa, TIMERFD_FN, 1, &[1, 2]), &mut n);
        t.apply(&rearms(10, 0xa, 64, 2), &mut n);
        let c = only_callsite(&t, 10);
        assert_eq!(
            (c.live, c.armed_total, c.cancelled_total, c.created_total),
            (1, 65, 64, 1)
        );
        // Cumulative: a record that overtook a later one changes nothing, the later one adds
        // only the difference.
        t.apply(&rearms(10, 0xa, 100, 3), &mut n);
        t.apply(&rearms(10, 0xa, 80, 4), &mut n);
        let c = only_callsite(&t, 10);
        assert_eq!((c.live, c.armed_total, c.cancelled_total), (1, 101, 100));
        // A held-back cancel that arrives after them still disarms the timer.
        t.apply(&rec(EventKind::Cancel, 10, 0xa, 0, 5), &mut n);
        let c = only_callsite(&t, 10);
        assert_eq!((c.live, c.cancelled_total), (0, 101));
        // The count wraps with the kernel's u32.
        t.apply(&rec(EventKind::Start, 10, 0xa, TIMERFD_FN, 6), &mut n);
        t.apply(&rearms(10, 0xa, 1 << 31, 7), &mut n);
        t.apply(&rearms(10, 0xa, u64::from(u32::MAX), 7), &mut n);
        t.apply(&rearms(10, 0xa, 3, 8), &mut n);
        let c = only_callsite(&t, 10);
        assert_eq!(c.armed_total, 102 + u64::from(u32::MAX) - 100 + 4);
        assert_eq!(t.unmatched, 0);
        // Another process's record for the address, or an unknown address: unattributed.
        t.apply(&rearms(11, 0xa, 5, 9), &mut n);
        t.apply(&rearms(10, 0xb, 5, 9), &mut n);
        assert_eq!(t.unmatched, 2);
    }

    #[test]
    fn wakeups_and_slack_land_on_the_arming_callsite() {
        let (mut t, mut n) = (Table::new(), Names::default());
        t.apply(&first_start(10, 0xa, TIMERFD_FN, 1, &[1, 2]), &mut n);
        for i in 0..10 {
            let exp = Record {
                slack_ns: Some(50_000 + i),
                ..rec(EventKind::Expire, 10, 0xa, TIMERFD_FN, 2 + i)
            };
            t.apply(&exp, &mut n);
            let woke = Record {
                arg: 20_000 * (i + 1),
                cur_tgid: 0,
                ..rec(EventKind::Wakeup, 10, 0xa, 0, 2 + i)
            };
            t.apply(&woke, &mut n);
            t.apply(&rec(EventKind::Start, 10, 0xa, TIMERFD_FN, 3 + i), &mut n);
        }
        let c = only_callsite(&t, 10);
        assert_eq!(c.wakeup_latency.count(), 10);
        assert_eq!(c.wakeup_latency.max(), Some(200_000));
        assert_eq!(c.slack.count(), 10);
        let p50 = c.slack.quantile(0.5).unwrap();
        assert!((48_000..=54_000).contains(&p50), "{p50}");
    }

    #[test]
    fn cancel_of_unknown_timer_is_counted_not_attributed() {
        let (mut t, mut n) = (Table::new(), Names::default());
        t.apply(&rec(EventKind::Cancel, 10, 0xdead, 0, 1), &mut n);
        t.apply(&rec(EventKind::Expire, 10, 0xdead, WAKEUP_FN, 2), &mut n);
        assert_eq!(t.unmatched, 2);
        assert_eq!(t.callsites(10).count(), 0);
    }

    #[test]
    fn rearm_from_interrupt_context_keeps_owner() {
        let (mut t, mut n) = (Table::new(), Names::default());
        t.apply(&first_start(10, 0xa, TCP_FN, 1, &[1, 2]), &mut n);
        t.apply(&rec(EventKind::Expire, 10, 0xa, TCP_FN, 2), &mut n);
        // The kernel credits the owner (tgid 10) although `current` was pid 99 in softirq.
        let re = Record {
            cur_tgid: 99,
            ..rec(EventKind::Start, 10, 0xa, TCP_FN, 3)
        };
        t.apply(&re, &mut n);
        let c = only_callsite(&t, 10);
        assert_eq!((c.kind, c.live, c.armed_total), (Kind::Kernel, 1, 2));
        assert_eq!(t.callsites(99).count(), 0);
        assert!(t.process(99).is_none());
    }

    #[test]
    fn new_owner_resets_a_reused_address() {
        let (mut t, mut n) = (Table::new(), Names::default());
        t.apply(&first_start(10, 0xa, WAKEUP_FN, 1, &[1, 2]), &mut n);
        // The stack slot is reused by the next sleep from another function of the same process.
        t.apply(&first_start(10, 0xa, WAKEUP_FN, 2, &[1, 3]), &mut n);
        let live: Vec<_> = t
            .callsites(10)
            .map(|v| (v.callsite.caller.clone().unwrap(), v.callsite.live))
            .collect();
        assert_eq!(live.len(), 2);
        assert!(live.contains(&("f2".into(), 0)));
        assert!(live.contains(&("f3".into(), 1)));
    }

    #[test]
    fn posix_timer_lives_from_create_to_delete_armed_or_not() {
        let (mut t, mut n) = (Table::new(), Names::default());
        let create = Record {
            arg: 0xb0,
            stack: stack(&[1, 5]),
            ..rec(EventKind::PosixCreate, 10, 3, 0, 1)
        };
        t.apply(&create, &mut n);
        let c = only_callsite(&t, 10);
        assert_eq!(
            (c.kind, c.live, c.created_total, c.armed_total),
            (Kind::PosixTimer, 1, 1, 0)
        );
        // Arming and expiring its hrtimer counts on the POSIX callsite and keeps it live.
        t.apply(&rec(EventKind::Start, 10, 0xb0, POSIX_FN, 2), &mut n);
        t.apply(&rec(EventKind::Expire, 10, 0xb0, POSIX_FN, 3), &mut n);
        let c = only_callsite(&t, 10);
        assert_eq!((c.live, c.armed_total, c.expired_total), (1, 1, 1));
        t.apply(&rec(EventKind::Start, 10, 0xb0, POSIX_FN, 4), &mut n);
        t.apply(&rec(EventKind::PosixDelete, 10, 3, 0, 5), &mut n);
        let c = only_callsite(&t, 10);
        assert_eq!((c.live, c.cancelled_total), (0, 1));
        // The cancel that timer_delete causes arrives after the delete record: expected.
        t.apply(&rec(EventKind::Cancel, 10, 0xb0, 0, 6), &mut n);
        assert_eq!(t.unmatched, 0);
        // Deleting an id we never saw is counted, not a crash.
        t.apply(&rec(EventKind::PosixDelete, 10, 77, 0, 5), &mut n);
        assert_eq!(t.unmatched, 1);
    }

    #[test]
    fn itimer_real_hrtimer_is_left_to_itimer_state() {
        let (mut t, mut n) = (Table::new(), Names::default());
        t.apply(&first_start(10, 0xc, ITREAL_FN, 1, &[1]), &mut n);
        assert_eq!(t.callsites(10).count(), 0);
        let set = Record {
            expires: 5_000_000,
            arg: 0,
            stack: stack(&[1, 7]),
            ..rec(EventKind::ItimerState, 10, 0, 0, 2)
        };
        t.apply(&set, &mut n);
        assert_eq!(only_callsite(&t, 10).live, 1);
        t.apply(&rec(EventKind::ItimerExpire, 10, 0, 0, 3), &mut n);
        // Its hrtimer's wake-ups count for it.
        let woke = Record {
            arg: 30_000,
            ..rec(EventKind::Wakeup, 10, 0xc, 0, 3)
        };
        t.apply(&woke, &mut n);
        let c = only_callsite(&t, 10);
        assert_eq!((c.kind, c.live, c.expired_total), (Kind::Itimer, 0, 1));
        assert_eq!(c.wakeup_latency.count(), 1);
        // A periodic itimer stays live across expiries.
        let periodic = Record {
            expires: 1_000_000,
            arg: 1_000_000,
            ..rec(EventKind::ItimerState, 10, 0, 0, 4)
        };
        t.apply(&periodic, &mut n);
        t.apply(&rec(EventKind::ItimerExpire, 10, 0, 0, 5), &mut n);
        assert_eq!(only_callsite(&t, 10).live, 1);
        let off = rec(EventKind::ItimerState, 10, 0, 0, 6);
        t.apply(&off, &mut n);
        assert_eq!(only_callsite(&t, 10).live, 0);
    }

    #[test]
    fn exit_drops_rows_and_pid_reuse_starts_fresh() {
        let (mut t, mut n) = (Table::new(), Names::default());
        t.apply(&first_start(10, 0xa, TIMERFD_FN, 1, &[1, 2]), &mut n);
        let create = Record {
            arg: 0xb0,
            stack: stack(&[1, 5]),
            ..rec(EventKind::PosixCreate, 10, 3, 0, 1)
        };
        t.apply(&create, &mut n);
        // Another process's state is not touched by 10's exit.
        t.apply(&first_start(11, 0xc, TIMERFD_FN, 1, &[1, 2]), &mut n);
        let mut addrs = t.apply(&rec(EventKind::ProcessExit, 10, 0, 0, 5), &mut n);
        addrs.sort();
        assert_eq!(addrs, vec![0xa, 0xb0]);
        assert!(t.process(10).is_none());
        // The per-process indexes went with it, without a scan of the others.
        assert!(!t.timers_of.contains_key(&10));
        assert!(t.posix_by_hrtimer.is_empty() && t.hrtimer_of_posix.is_empty());
        assert!(t.index.keys().all(|k| k.0 == 11), "{:?}", t.index);
        assert_eq!(t.timers.len(), 1);
        assert_eq!(t.timers_of[&11].len(), 1);
        assert_eq!(t.exited().len(), 1);
        assert_eq!(t.exited()[0].comm, "target");
        assert_eq!(n.forgotten, vec![10]);
        // Same pid, new process: the re-arm of an address we dropped is not credited to the old
        // callsite, and the new process starts from zero.
        t.apply(&first_start(10, 0xa, WAKEUP_FN, 6, &[9, 9]), &mut n);
        let c = only_callsite(&t, 10);
        assert_eq!((c.kind, c.live, c.armed_total), (Kind::Sleep, 1, 1));
        assert_eq!(t.process(10).unwrap().comm, "target");
    }

    #[test]
    fn exits_kept_are_bounded_and_the_latest() {
        let (mut t, mut n) = (Table::new(), Names::default());
        let total = MAX_EXITED as u32 * 3;
        for tgid in 1..=total {
            t.apply(&first_start(tgid, 0xa, TIMERFD_FN, 1, &[1, 2]), &mut n);
            t.apply(&rec(EventKind::ProcessExit, tgid, 0, 0, 2), &mut n);
        }
        assert!(t.exited().len() <= MAX_EXITED);
        assert_eq!(t.exited().last().unwrap().tgid, total);
    }

    #[test]
    fn late_records_credited_to_an_exited_process_do_not_resurrect_it() {
        let (mut t, mut n) = (Table::new(), Names::default());
        t.apply(&first_start(10, 0xa, TIMERFD_FN, 1, &[1, 2]), &mut n);
        t.apply(&rec(EventKind::ProcessExit, 10, 0, 0, 2), &mut n);
        // The kernel still names pid 10 as the owner of an object it set up; a kworker arms it.
        let late = Record {
            new_owner: true,
            cur_tgid: 55,
            ..rec(EventKind::Start, 10, 0xf, TCP_FN, 3)
        };
        t.apply(&late, &mut n);
        assert!(t.process(10).is_none());
        assert_eq!(t.exited().len(), 1);
    }

    #[test]
    fn exec_drops_posix_timers_and_refreshes_names() {
        let (mut t, mut n) = (Table::new(), Names::default());
        let create = Record {
            stack: stack(&[1, 5]),
            ..rec(EventKind::PosixCreate, 10, 3, 0, 1)
        };
        t.apply(&create, &mut n);
        t.apply(&rec(EventKind::ProcessExec, 10, 0, 0, 2), &mut n);
        assert_eq!(only_callsite(&t, 10).live, 0);
        assert!(t.timers.is_empty() && t.timers_of.is_empty() && t.index.is_empty());
        assert_eq!(n.forgotten, vec![10]);
        assert_eq!(t.process(10).unwrap().comm, "proc10");
    }

    #[test]
    fn tick_rate_is_told_by_initial_jiffies() {
        // A reading taken on a CONFIG_HZ=250 kernel 437 s after boot.
        assert_eq!(tick_rate(437_245_709_572, 4_295_001_582), Some(250));
        // HZ=1000, an hour after boot: INITIAL_JIFFIES is 2^32 − 300,000.
        let j = (1u64 << 32) - 300_000 + 3_600_000;
        assert_eq!(tick_rate(3_600_000_000_000, j), Some(1000));
        assert_eq!(tick_rate(3_600_000_000_000, 12345), None);
    }

    #[test]
    fn lives_record_armed_durations_shortened_by_cancels() {
        let (mut t, mut n) = (Table::new(), Names::default());
        let s = 1_000_000_000u64;
        // Two timerfds armed for 60 s: one expires, one is cancelled after 30 s.
        for (timer, at) in [(0xa, 10 * s), (0xb, 11 * s)] {
            let arm = Record {
                expires: at + 60 * s,
                ..first_start(10, timer, TIMERFD_FN, at, &[1, 2])
            };
            t.apply(&arm, &mut n);
        }
        t.apply(&rec(EventKind::Expire, 10, 0xa, TIMERFD_FN, 70 * s), &mut n);
        t.apply(&rec(EventKind::Cancel, 10, 0xb, 0, 41 * s), &mut n);
        let c = only_callsite(&t, 10);
        assert_eq!((c.lives_total, c.lives_unknown), (2, 0));
        let (mean, max) = c.lifetime_s().unwrap();
        assert!((mean - 45.0).abs() < 0.01, "{mean}");
        assert!((max - 60.0).abs() < 3.0, "{max}");
        // A timer_list timer armed for 250 jiffies at HZ=250 lives 1 s.
        let j = (1u64 << 32) - 75_000 + 250 * 437;
        let arm = Record {
            expires: j + 250,
            arg: j,
            timer_list: true,
            ..first_start(11, 0xc, TCP_FN, 437 * s, &[3, 4])
        };
        t.apply(&arm, &mut n);
        let (mean, _) = only_callsite(&t, 11).lifetime_s().unwrap();
        assert!((mean - 1.0).abs() < 1e-6, "{mean}");
        // A CLOCK_REALTIME expiry (~1.7e18 ns) is a clock we cannot convert: no lifetime.
        let arm = Record {
            expires: 1_700_000_000 * s,
            ..first_start(12, 0xd, TIMERFD_FN, 5 * s, &[5, 6])
        };
        t.apply(&arm, &mut n);
        assert_eq!(only_callsite(&t, 12).lifetime_s(), None);
    }

    #[test]
    fn posix_timers_have_no_lifetime() {
        let (mut t, mut n) = (Table::new(), Names::default());
        let create = Record {
            arg: 0xb0,
            stack: stack(&[1, 5]),
            ..rec(EventKind::PosixCreate, 10, 3, 0, 1)
        };
        t.apply(&create, &mut n);
        let arm = Record {
            expires: 1_000_000_002,
            ..rec(EventKind::Start, 10, 0xb0, POSIX_FN, 2)
        };
        t.apply(&arm, &mut n);
        assert_eq!(only_callsite(&t, 10).lifetime_s(), None);
    }

    #[test]
    fn oldest_live_is_reported() {
        let (mut t, mut n) = (Table::new(), Names::default());
        t.apply(&first_start(10, 0xa, TIMERFD_FN, 100, &[1, 2]), &mut n);
        t.apply(&first_start(10, 0xb, TIMERFD_FN, 200, &[1, 2]), &mut n);
        let v: Vec<_> = t.callsites(10).collect();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].callsite.live, 2);
        assert_eq!(v[0].oldest_live_since_ns, Some(100));
        assert_eq!(t.process_live(10), 2);
    }

    #[test]
    fn every_process_s_callsites_at_once_match_one_process_s() {
        let (mut t, mut n) = (Table::new(), Names::default());
        t.apply(&first_start(10, 0xa, TIMERFD_FN, 300, &[1, 2]), &mut n);
        t.apply(&first_start(10, 0xb, TIMERFD_FN, 100, &[1, 2]), &mut n);
        t.apply(&first_start(10, 0xc, TIMERFD_FN, 50, &[3, 4]), &mut n);
        t.apply(&first_start(11, 0xd, TIMERFD_FN, 20, &[1, 2]), &mut n);
        t.apply(&first_start(11, 0xe, TIMERFD_FN, 10, &[5, 6]), &mut n);
        t.apply(&rec(EventKind::Cancel, 11, 0xe, TIMERFD_FN, 30), &mut n);
        let all = t.callsites_by_process();
        assert_eq!(all.len(), 2);
        for tgid in [10, 11] {
            let one: Vec<_> = t
                .callsites(tgid)
                .map(|v| (v.callsite.clone(), v.oldest_live_since_ns))
                .collect();
            let at_once: Vec<_> = all[&tgid]
                .iter()
                .map(|v| (v.callsite.clone(), v.oldest_live_since_ns))
                .collect();
            assert_eq!(one, at_once, "pid {tgid}");
        }
        let oldest: Vec<_> = all[&10].iter().map(|v| v.oldest_live_since_ns).collect();
        assert_eq!(oldest, [Some(100), Some(50)]);
        // A cancelled timer's callsite has nothing live.
        let oldest: Vec<_> = all[&11].iter().map(|v| v.oldest_live_since_ns).collect();
        assert!(
            oldest.contains(&None) && oldest.contains(&Some(20)),
            "{oldest:?}"
        );
    }
}
