//! timerwatch: live timers per process and callsite, observed from the kernel.
//!
//! Data flows one way: `probe` loads and attaches the eBPF programs; their records are decoded by
//! `event`, applied to the live `table` (names from `symbolize`, process facts from
//! `timerwatch-proc`), turned into a `report` and rendered by `output`. `session` runs that loop;
//! `cli` and `main` drive it. docs/ARCHITECTURE.md has the whole map.

pub mod cli;
pub mod daemon;
pub mod event;
pub mod export;
pub mod failure;
pub mod gate;
pub mod gotrace;
pub mod heap;
pub mod histogram;
pub mod kind;
pub mod output;
pub mod probe;
pub mod record;
pub mod report;
pub mod sample;
pub mod session;
pub mod symbolize;
pub mod table;
pub mod trace_args;
pub mod trend;
pub mod tui;
pub mod verdict;
pub mod vocab;

/// Process facts from /proc live in their own crate, shared with the Go analysis.
pub use timerwatch_proc as procfs;
