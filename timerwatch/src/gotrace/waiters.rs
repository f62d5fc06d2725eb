//! The census's [`WaiterWalk`](super::census::WaiterWalk): `timerwatch-go`'s read-only walk of
//! the runtime's goroutines, keyed the way the census joins timers to waiters — a channel
//! timer by the channel its goroutine is blocked on, a sleep by the sleeping `*g` (the
//! `arg` of `time.sendTime` and `runtime.goroutineReady`).

use std::collections::{HashMap, HashSet};

use timerwatch_go::goroutines::{self, WaitKind, WalkLimits};
use timerwatch_go::GoBinary;
use timerwatch_proc::mem::ProcMem;

use super::census::WaiterFrames;

/// Stacks of the goroutines waiting on `wanted`, symbolized only for the keys asked for.
/// `None` when the goroutine list could not be read whole: the census then falls back to
/// kind and period rather than guess (and drops what a walk cut short by its budget found).
pub fn walk(
    mem: &ProcMem,
    bin: &GoBinary,
    bias: u64,
    wanted: &HashSet<u64>,
) -> Option<WaiterFrames> {
    if wanted.is_empty() {
        return Some(HashMap::new());
    }
    let found = goroutines::waiters(mem, bin, bias, &WalkLimits::default()).ok()?;
    let mut out = WaiterFrames::new();
    for w in &found {
        let sleeping = (w.kind == WaitKind::Sleep).then_some(w.g);
        for key in w.chans.iter().copied().chain(sleeping) {
            if wanted.contains(&key) && !out.contains_key(&key) {
                out.insert(key, w.frames(bin));
            }
        }
    }
    Some(out)
}
