//! Creation stacks on demand (census mode, `--go-sample-window SECS`): when a callsite the
//! census can name only by its signature (kind and period: `time.After` abandoned by a `select`
//! on Go ≤ 1.22, say) is growing, the process gets today's uprobes for a short window, then loses
//! them. Timers created inside the window are named by their creation stack; what the window
//! learned (signature → caller) names the ones created outside it.
//!
//! Budget per process: at most one window per [`DUTY`] window lengths (probes at most 1/30 of
//! the time), closed early after [`MAX_HITS`] probe hits.

use aya::programs::uprobe::UProbeLinkId;

use crate::{report::CallsiteId, sample::ProcessSample};

/// Probe hits (records) one window may cost before it closes early.
pub const MAX_HITS: u64 = 5_000;

/// A process gets at most one window per this many window lengths.
pub const DUTY: u64 = 30;

/// An open window: its probes and what they cost so far.
pub struct Open {
    pub until_ns: u64,
    pub links: Vec<UProbeLinkId>,
    pub hits: u64,
}

impl Open {
    pub fn due(&self, now_ns: u64) -> bool {
        now_ns >= self.until_ns || self.hits >= MAX_HITS
    }
}

/// Whether `p` has a Go callsite only a signature names that `growing` (its verdict) says
/// grows.
pub fn wants_stacks(p: &ProcessSample, growing: impl Fn(CallsiteId) -> bool) -> bool {
    p.callsites
        .iter()
        .any(|c| c.signature_only && growing(c.id))
}

/// Whether a process whose last window opened at `last_ns` may get another now.
pub fn may_open(last_ns: Option<u64>, now_ns: u64, window_ns: u64) -> bool {
    last_ns.is_none_or(|l| now_ns.saturating_sub(l) >= DUTY * window_ns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{fixtures, Attribution, Source};

    #[test]
    fn only_growing_signature_callsites_want_stacks_and_windows_are_rationed() {
        let go = |caller: &str, attribution| {
            let mut c = fixtures::callsite(caller, 100);
            c.source = Source::Go;
            c.attribution = Some(attribution);
            c
        };
        let row = fixtures::process(
            1,
            "x",
            vec![
                go("stable", Attribution::Signature),
                go("named", Attribution::Callback),
                go("grows", Attribution::Signature),
            ],
        );
        let sample = ProcessSample::of(&row);
        let id = |i: usize| row.callsites[i].id(1);
        assert!(!wants_stacks(&sample, |_| false));
        assert!(
            !wants_stacks(&sample, |c| c == id(1)),
            "a callback already names it"
        );
        assert!(wants_stacks(&sample, |c| c == id(2)));
        let w = 2_000_000_000;
        assert!(may_open(None, 5, w));
        assert!(!may_open(Some(0), DUTY * w - 1, w));
        assert!(may_open(Some(0), DUTY * w, w));
        let open = Open {
            until_ns: 10,
            links: Vec::new(),
            hits: 0,
        };
        assert!(!open.due(9) && open.due(10));
        assert!(Open {
            hits: MAX_HITS,
            ..open
        }
        .due(0));
    }
}
