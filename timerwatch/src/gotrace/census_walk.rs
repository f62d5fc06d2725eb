//! One census of a Go process: walk its timer heaps read-only, name each pending timer from its
//! own fields (see [`census`](super::census)), and refuse the result when the process changed
//! under the walk.

use std::collections::{HashMap, HashSet};

use timerwatch_go::{heap, GoFrame, GoKind};
use timerwatch_proc::{budget::Budget, mem::ProcMem};

use crate::report::Kind;

use super::{
    binary::Target,
    census::{self, Group, Seen, WaiterWalk},
    file_id,
    state::GoState,
    walk_budget::{self, CutShort},
};

/// One exec of a process: its binary (device, inode), its auxiliary vector and the 16 random
/// bytes the kernel put at `AT_RANDOM` for that exec. Another exec, even of the same binary,
/// or another process reusing the pid, has other random bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incarnation {
    exe: Option<(u64, u64)>,
    auxv: Vec<u8>,
    random: [u8; 16],
}

/// `AT_RANDOM` in the auxiliary vector (linux/auxvec.h).
const AT_RANDOM: u64 = 25;

impl Incarnation {
    /// `None` when the process is gone or unreadable.
    pub fn of(target: &Target) -> Option<Incarnation> {
        let pid = target.pid();
        let exe = file_id(format!("/proc/{pid}/exe").as_ref());
        let auxv = std::fs::read(format!("/proc/{pid}/auxv")).ok()?;
        let at = auxv
            .chunks_exact(16)
            .find(|kv| u64::from_le_bytes(kv[..8].try_into().unwrap()) == AT_RANDOM)
            .map(|kv| u64::from_le_bytes(kv[8..].try_into().unwrap()))?;
        let mut random = [0u8; 16];
        for (i, chunk) in random.chunks_exact_mut(8).enumerate() {
            let word = target.read_u64(at + 8 * i as u64).ok()?;
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        Some(Incarnation { exe, auxv, random })
    }
}

/// What one process's census remembers between reports.
#[derive(Default)]
pub struct CensusState {
    /// When each pending timer was first seen (CLOCK_MONOTONIC ns): its age. Only the timers
    /// of the last walk are kept, so this is bounded by what the process holds.
    /// With each: how long it had left to run then (ns), the best bound on its duration a
    /// census has (a later `Reset` does not change it).
    first_seen: HashMap<u64, (u64, i64)>,
    /// Callback code address (link-time) → its function, per binary run by this process.
    callbacks: HashMap<u64, Option<GoFrame>>,
    /// The exec `first_seen` belongs to.
    incarnation: Option<Incarnation>,
    /// The last consistent census and when it was taken.
    last: Option<(u64, Census)>,
    /// Callers creation-stack windows taught, by signature (kind, period).
    learned: HashMap<(Kind, i64), String>,
    /// Why the last walk was cut short: the census left out (heap walk) or named without
    /// waiters (goroutine walk). `None` when it ran whole.
    pub cut: Option<CutShort>,
}

/// A census this recent stands for now: the verdict sample and the report of one tick
/// (`top -i 1`) then cost one walk, not two.
const REUSE_NS: u64 = 250_000_000;

/// A consistent census: callsites and the number of timers pending.
#[derive(Clone)]
pub struct Census {
    pub groups: Vec<Group>,
    pub pending: u64,
}

/// Census of `target`, which was `found` as that incarnation. `None` when the walk was torn (a
/// P's heap kept changing, the process exited or exec'd during the walk, a read failed), cut
/// short by its budget ([`walk_budget`]), or the process runs something `target` does not
/// describe any more: it is left out of this report rather than misreported, and
/// `state.cut` says why unless it simply left. A goroutine walk cut short leaves the timers
/// it would have named to their signature, and says so in `state.cut` too. A process that
/// re-exec'd its own fixed-address binary since it was found is still described by `target`
/// (same layout, same addresses), so it is walked: its exec record will replace `target` anyway.
pub fn take(
    target: &Target,
    found: &Incarnation,
    state: &mut CensusState,
    stacks: &GoState,
    waiters: Option<WaiterWalk>,
    now_ns: u64,
) -> Option<Census> {
    if let Some((at, c)) = &state.last {
        if now_ns.saturating_sub(*at) < REUSE_NS {
            return Some(c.clone());
        }
    }
    let (pid, bin, bias) = (target.pid(), target.binary(), target.bias());
    state.cut = None;
    let before = Incarnation::of(target)?;
    if before.exe != found.exe || (bin.pie && before != *found) {
        return None;
    }
    let budget = walk_budget::start();
    let mem = ProcMem::with_budget(pid, budget.clone());
    if state.incarnation.as_ref() != Some(&before) {
        // Another runtime: its timer pointers say nothing about the last one's.
        state.first_seen.clear();
        state.incarnation = Some(before.clone());
    }
    let snap = match heap::walk_detailed_in(&mem, bin, bias) {
        Ok(snap) if snap.unstable_ps == 0 => snap,
        _ => return skip(state, &budget, target, &before),
    };
    let live: Vec<_> = snap
        .timers
        .into_iter()
        // 1.23+: a channel timer nobody is blocked on is not kept by the runtime (it leaves
        // the heap at its next clean-up), so it is not live.
        .filter(|t| !(t.is_chan == Some(true) && t.blocked == Some(0)))
        .collect();
    let kinds: Vec<GoKind> = live
        .iter()
        .map(|t| bin.kinds.classify(t.timer.f, t.timer.period))
        .collect();
    let waited: HashSet<u64> = live
        .iter()
        .zip(&kinds)
        .filter(|(t, k)| t.arg != 0 && matches!(k, GoKind::Timer | GoKind::Ticker | GoKind::Sleep))
        .map(|(t, _)| t.arg)
        .collect();
    // An AfterFunc's `arg` is the user's function value: its first word is the code. Read
    // before the goroutines, whose walk may spend what is left of the budget.
    let mut code_of: HashMap<u64, u64> = HashMap::new();
    for (t, k) in live.iter().zip(&kinds) {
        if *k != GoKind::AfterFunc || t.arg == 0 || code_of.contains_key(&t.arg) {
            continue;
        }
        let Ok(code) = mem.read_u64(t.arg) else {
            return skip(state, &budget, target, &before);
        };
        let pc = code.wrapping_sub(bias);
        code_of.insert(t.arg, pc);
        state
            .callbacks
            .entry(pc)
            .or_insert_with(|| bin.symbolize(pc));
    }
    let mut waiter_frames = match waiters {
        Some(walk) if !waited.is_empty() => walk(&mem, bin, bias, &waited),
        _ => None,
    };
    if let Some(why) = CutShort::of(&budget) {
        // Some goroutines were never read: naming only the others would split one callsite.
        waiter_frames = None;
        state.cut = Some(why);
        walk_budget::count(why);
    }
    // Read last: a process that exec'd (or exited and whose pid was reused) during the walk is
    // another address space now, and what was read may belong to either.
    if Incarnation::of(target).as_ref() != Some(&before) {
        return None;
    }
    let mut first_seen = HashMap::with_capacity(live.len());
    for t in &live {
        // `when` is the runtime's nanotime, CLOCK_MONOTONIC like `now_ns`.
        let seen = state
            .first_seen
            .get(&t.timer.timer)
            .copied()
            .unwrap_or((now_ns, t.timer.when.saturating_sub(now_ns as i64)));
        first_seen.insert(t.timer.timer, seen);
    }
    state.first_seen = first_seen;
    let seen = live.iter().zip(&kinds).map(|(t, k)| Seen {
        kind: Kind::from(*k),
        period_ns: t.timer.period,
        callback: code_of
            .get(&t.arg)
            .filter(|_| *k == GoKind::AfterFunc)
            .and_then(|pc| state.callbacks.get(pc)?.as_ref()),
        waiter: waiter_frames
            .as_ref()
            .and_then(|w| w.get(&t.arg))
            .map(Vec::as_slice),
        since_ns: state.first_seen[&t.timer.timer].0,
        remaining_ns: state.first_seen[&t.timer.timer].1,
        creation: stacks
            .callsite_of(t.timer.timer)
            .filter(|c| c.kind == Kind::from(*k))
            .and_then(|c| Some((c.caller.as_deref()?, c.frames.as_slice()))),
        learned: state
            .learned
            .get(&(Kind::from(*k), t.timer.period.max(0)))
            .map(String::as_str),
    });
    let groups = census::group(seen);
    census::learn(&groups, &mut state.learned);
    let census = Census {
        groups,
        pending: live.len() as u64,
    };
    state.last = Some((now_ns, census.clone()));
    Some(census)
}

/// A walk that produced nothing: counted with its reason, unless the process exited or exec'd
/// under it (then it is simply not there to report).
fn skip(
    state: &mut CensusState,
    budget: &Budget,
    target: &Target,
    before: &Incarnation,
) -> Option<Census> {
    let why = match CutShort::of(budget) {
        Some(why) => why,
        None if Incarnation::of(target).as_ref() == Some(before) => CutShort::Torn,
        None => return None,
    };
    state.cut = Some(why);
    walk_budget::count(why);
    None
}
