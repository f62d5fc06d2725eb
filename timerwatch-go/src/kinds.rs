//! What a Go timer is for, judged by its callback (docs/go-runtime-timers.md §4).
//!
//! A timer's `f` is a `*funcval` whose first word is the code address. Static funcvals such as
//! `time.sendTime·f` have no symbol in newer toolchains, so classification compares the code
//! address (`*f`), which pclntab always names. Callers dereference `f` once (a single 8-byte
//! read, `bpf_probe_read_user` on the kernel side) and pass the link-time code address.

use serde::Serialize;

use super::pclntab::Pclntab;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum GoKind {
    /// `time.NewTimer`, `time.After`, `Timer.Reset`.
    Timer,
    /// `time.NewTicker`, `time.Tick` (sendTime with a period).
    Ticker,
    /// `time.AfterFunc`, including context deadlines.
    AfterFunc,
    /// `time.Sleep` (the goroutine's own timer, `goroutineReady`).
    Sleep,
    /// net/os deadlines.
    Netpoll,
    /// Runtime-internal (GC scavenger, tracer) or unknown.
    Other,
}

impl GoKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timer => "go_timer",
            Self::Ticker => "go_ticker",
            Self::AfterFunc => "go_afterfunc",
            Self::Sleep => "go_sleep",
            Self::Netpoll => "go_netpoll",
            Self::Other => "go_other",
        }
    }
}

/// Link-time entry addresses of the callbacks that identify each kind. For a PIE process
/// subtract the load bias from the runtime code address before comparing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KindSymbols {
    /// `time.sendTime` (Timer, After, Ticker, Tick).
    pub send_time: Option<u64>,
    /// `time.goFunc` (AfterFunc; context.WithDeadline).
    pub go_func: Option<u64>,
    /// `runtime.goroutineReady` (Sleep).
    pub goroutine_ready: Option<u64>,
    /// `runtime.netpollDeadline`, `netpollReadDeadline`, `netpollWriteDeadline`.
    pub netpoll_deadline: Vec<u64>,
}

impl KindSymbols {
    pub fn resolve(pcln: &Pclntab) -> KindSymbols {
        let entry = |name: &str| pcln.func_by_name(name).map(|f| f.entry);
        KindSymbols {
            send_time: entry("time.sendTime"),
            go_func: entry("time.goFunc"),
            goroutine_ready: entry("runtime.goroutineReady"),
            netpoll_deadline: [
                "runtime.netpollDeadline",
                "runtime.netpollReadDeadline",
                "runtime.netpollWriteDeadline",
            ]
            .into_iter()
            .filter_map(entry)
            .collect(),
        }
    }

    /// `f_pc`: the callback's code address (`*(u64 *)f`, minus the load bias), not the funcval
    /// pointer. `period`: the timer's period in ns (> 0 only for tickers).
    pub fn classify(&self, f_pc: u64, period: i64) -> GoKind {
        let is = |sym: Option<u64>| f_pc != 0 && sym == Some(f_pc);
        if is(self.send_time) {
            if period > 0 {
                GoKind::Ticker
            } else {
                GoKind::Timer
            }
        } else if is(self.go_func) {
            GoKind::AfterFunc
        } else if is(self.goroutine_ready) {
            GoKind::Sleep
        } else if f_pc != 0 && self.netpoll_deadline.contains(&f_pc) {
            GoKind::Netpoll
        } else {
            GoKind::Other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_code_address() {
        let k = KindSymbols {
            send_time: Some(0x10),
            go_func: Some(0x20),
            goroutine_ready: Some(0x30),
            netpoll_deadline: vec![0x40, 0x48],
        };
        assert_eq!(k.classify(0x10, 0), GoKind::Timer);
        assert_eq!(k.classify(0x10, 1_000_000), GoKind::Ticker);
        assert_eq!(k.classify(0x20, 0), GoKind::AfterFunc);
        assert_eq!(k.classify(0x30, 0), GoKind::Sleep);
        assert_eq!(k.classify(0x48, 0), GoKind::Netpoll);
        assert_eq!(k.classify(0x99, 0), GoKind::Other);
        assert_eq!(KindSymbols::default().classify(0, 0), GoKind::Other);
        assert_eq!(GoKind::AfterFunc.as_str(), "go_afterfunc");
    }
}
