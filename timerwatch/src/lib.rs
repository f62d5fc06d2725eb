//! timerwatch: live timers per process and callsite, observed from the kernel.
//!
//! Data flows one way: `probe` loads and attaches the eBPF programs; their records are decoded by
//! `event`, applied to the live `table` (names from `symbolize` and `procfs`), turned into a
//! `report` and rendered by `output`. `session` runs that loop; `cli` and `main` drive it.

pub mod cli;
pub mod daemon;
pub mod event;
pub mod failure;
pub mod gate;
pub mod go;
pub mod gotrace;
pub mod histogram;
pub mod kind;
pub mod output;
pub mod probe;
pub mod procfs;
pub mod report;
pub mod session;
pub mod symbolize;
pub mod table;
pub mod trend;
pub mod verdict;
