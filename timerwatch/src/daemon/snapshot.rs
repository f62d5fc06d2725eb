//! What the tracing loop last produced, shared with the HTTP handlers.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use super::fold::Series;
use crate::report::Report;

#[derive(Default)]
pub struct Snapshot {
    pub series: Vec<Series>,
    pub lost_events: u64,
    pub unattributed_events: u64,
    /// Processes in the last report after the pod filters.
    pub processes: u64,
    /// The last report, after the pod filters; None until the first interval has passed.
    pub report: Option<Report>,
    pub last_tick: Option<Instant>,
}

#[derive(Clone, Default)]
pub struct Shared(Arc<Mutex<Snapshot>>);

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Snapshot> {
        // A panicking handler must not take the exporter down with it.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
