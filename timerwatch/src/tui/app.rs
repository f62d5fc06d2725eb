//! The interactive view's state: rows from the latest report, live-count history per
//! callsite, sort column, filter, selection, and what each key does. No terminal here, so it
//! is tested directly.

use std::collections::{HashMap, VecDeque};

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::report::{Kind, Report, Source, Verdict};

/// Which table the view shows: every callsite, or those whose timers woke tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Timers,
    Wakeups,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    Live,
    Growth,
    Armed,
    Wakeups,
    Oldest,
}

impl Column {
    pub const ALL: [Column; 5] = [
        Column::Live,
        Column::Growth,
        Column::Armed,
        Column::Wakeups,
        Column::Oldest,
    ];
}

/// Samples of each callsite's live count kept for the sparkline: the trend window at one
/// refresh a second.
const HISTORY: usize = 300;

/// A callsite's identity across refreshes.
pub type Key = (u32, Kind, String);

#[derive(Clone, Debug)]
pub struct Row {
    pub key: Key,
    pub pid: u32,
    pub comm: String,
    pub pod: String,
    pub source: Source,
    pub kind: Kind,
    pub caller: String,
    pub timer_function: Option<String>,
    pub frames: Vec<String>,
    pub live: u64,
    pub growth_per_s: Option<f64>,
    pub verdict: Verdict,
    pub armed: u64,
    pub wakeups_per_s: Option<f64>,
    pub slack_p50_s: Option<f64>,
    pub latency_p99_s: Option<f64>,
    pub oldest_s: Option<f64>,
}

impl Row {
    fn sort_value(&self, c: Column) -> f64 {
        match c {
            Column::Live => self.live as f64,
            Column::Growth => self.growth_per_s.unwrap_or(0.0),
            Column::Armed => self.armed as f64,
            Column::Wakeups => self.wakeups_per_s.unwrap_or(-1.0),
            Column::Oldest => self.oldest_s.unwrap_or(-1.0),
        }
    }

    /// `pid:42 comm:x caller:leak kind:timerfd pod:ns/name`, or a bare word matching any of
    /// them; case-insensitive substrings, all words must match.
    fn matches(&self, filter: &str) -> bool {
        filter.split_whitespace().all(|word| {
            let word = word.to_lowercase();
            let has = |field: &str, w: &str| field.to_lowercase().contains(w);
            match word.split_once(':') {
                Some(("pid", w)) => self.pid.to_string() == w,
                Some(("comm", w)) => has(&self.comm, w),
                Some(("caller", w)) => has(&self.caller, w),
                Some(("kind", w)) => has(self.kind.as_str(), w),
                Some(("pod", w)) => has(&self.pod, w),
                _ => {
                    has(&self.pid.to_string(), &word)
                        || has(&self.comm, &word)
                        || has(&self.caller, &word)
                        || has(self.kind.as_str(), &word)
                        || has(&self.pod, &word)
                }
            }
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Table,
    /// Typing into the filter box.
    Filter,
    /// The selected callsite's stack and sparkline.
    Detail,
    Help,
}

pub struct App {
    pub view: View,
    pub rows: Vec<Row>,
    pub history: HashMap<Key, VecDeque<u64>>,
    pub sort: Column,
    pub filter: String,
    pub mode: Mode,
    /// Index into `visible()`; follows its callsite across refreshes.
    pub selected: usize,
    selected_key: Option<Key>,
    pub heading: String,
    pub reports: u64,
}

impl App {
    pub fn new(view: View) -> App {
        App {
            view,
            rows: Vec::new(),
            history: HashMap::new(),
            sort: match view {
                View::Timers => Column::Live,
                View::Wakeups => Column::Wakeups,
            },
            filter: String::new(),
            mode: Mode::Table,
            selected: 0,
            selected_key: None,
            heading: "timerwatch: waiting for the first report…".into(),
            reports: 0,
        }
    }

    /// Take a fresh report; `pod` names a process's pod.
    pub fn update(&mut self, report: &Report, pod: &mut dyn FnMut(u32, &str) -> String) {
        self.reports += 1;
        let live: u64 = report.processes.iter().map(|p| p.live).sum();
        let wakeups: f64 = report
            .processes
            .iter()
            .flat_map(|p| &p.callsites)
            .filter_map(|c| c.wakeups.as_ref().map(|w| w.per_s))
            .sum::<f64>()
            + 0.0;
        self.heading = match self.view {
            View::Timers => format!(
                "timerwatch: {:.1}s traced, {} processes, {} live timers, {} lost events",
                report.duration_s,
                report.processes.len(),
                live,
                report.lost_events
            ),
            View::Wakeups => format!(
                "timerwatch: {:.1}s traced, {:.0} timer wake-ups/s, {} lost events",
                report.duration_s, wakeups, report.lost_events
            ),
        };
        let mut rows = Vec::new();
        for p in &report.processes {
            let pod = pod(p.pid, &p.comm);
            for c in &p.callsites {
                if self.view == View::Wakeups && c.wakeups.is_none() {
                    continue;
                }
                let caller = c.caller.clone().unwrap_or_else(|| "?".into());
                // Frames tell callsites with one caller apart (several stacks reach it).
                let key: Key = (p.pid, c.kind, format!("{caller}\n{}", c.frames.join("\n")));
                rows.push(Row {
                    key,
                    pid: p.pid,
                    comm: p.comm.clone(),
                    pod: pod.clone(),
                    source: c.source,
                    kind: c.kind,
                    caller,
                    timer_function: c.timer_function.clone(),
                    frames: c.frames.clone(),
                    live: c.live,
                    growth_per_s: c.growth_per_s,
                    verdict: c.verdict,
                    armed: c.armed_total,
                    wakeups_per_s: c.wakeups.as_ref().map(|w| w.per_s),
                    slack_p50_s: c.wakeups.as_ref().and_then(|w| w.slack_p50_s),
                    latency_p99_s: c.wakeups.as_ref().and_then(|w| w.latency_p99_s),
                    oldest_s: c.oldest_age_s,
                });
            }
        }
        let present: std::collections::HashSet<&Key> = rows.iter().map(|r| &r.key).collect();
        self.history.retain(|k, _| present.contains(k));
        for r in &rows {
            let h = self.history.entry(r.key.clone()).or_default();
            if h.len() == HISTORY {
                h.pop_front();
            }
            h.push_back(r.live);
        }
        self.rows = rows;
        self.reselect();
    }

    /// The rows that pass the filter, in sort order (ties: pid, then caller, for a steady
    /// screen).
    pub fn visible(&self) -> Vec<&Row> {
        let mut v: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.matches(&self.filter))
            .collect();
        v.sort_by(|a, b| {
            b.sort_value(self.sort)
                .total_cmp(&a.sort_value(self.sort))
                .then(a.pid.cmp(&b.pid))
                .then(a.caller.cmp(&b.caller))
        });
        v
    }

    pub fn selected_row(&self) -> Option<&Row> {
        self.visible().get(self.selected).copied()
    }

    /// Keep the selection on the same callsite when rows move.
    fn reselect(&mut self) {
        let keys: Vec<Key> = self.visible().iter().map(|r| r.key.clone()).collect();
        let found = self
            .selected_key
            .as_ref()
            .and_then(|k| keys.iter().position(|r| r == k));
        self.selected = found.unwrap_or(self.selected.min(keys.len().saturating_sub(1)));
        self.selected_key = keys.get(self.selected).cloned();
    }

    fn select(&mut self, index: usize) {
        let keys: Vec<Key> = self.visible().iter().map(|r| r.key.clone()).collect();
        self.selected = index.min(keys.len().saturating_sub(1));
        self.selected_key = keys.get(self.selected).cloned();
    }

    /// Apply a key; false means quit.
    pub fn on_key(&mut self, key: KeyEvent, page: usize) -> bool {
        if key.kind == KeyEventKind::Release {
            return true;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && key.code == KeyCode::Char('c') {
            return false;
        }
        match self.mode {
            Mode::Filter => match key.code {
                KeyCode::Enter => self.mode = Mode::Table,
                KeyCode::Esc => {
                    self.filter.clear();
                    self.mode = Mode::Table;
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) if !ctrl => self.filter.push(c),
                _ => {}
            },
            Mode::Help => self.mode = Mode::Table,
            Mode::Table | Mode::Detail => match key.code {
                KeyCode::Char('q') => return false,
                KeyCode::Char('?') | KeyCode::F(1) => self.mode = Mode::Help,
                KeyCode::Char('/') | KeyCode::Char('f') => self.mode = Mode::Filter,
                KeyCode::Enter => {
                    self.mode = if self.mode == Mode::Detail || self.selected_row().is_none() {
                        Mode::Table
                    } else {
                        Mode::Detail
                    }
                }
                KeyCode::Esc if self.mode == Mode::Detail => self.mode = Mode::Table,
                KeyCode::Esc => self.filter.clear(),
                KeyCode::Char('l') => self.sort = Column::Live,
                KeyCode::Char('g') => self.sort = Column::Growth,
                KeyCode::Char('a') => self.sort = Column::Armed,
                KeyCode::Char('w') => self.sort = Column::Wakeups,
                KeyCode::Char('o') => self.sort = Column::Oldest,
                KeyCode::Char('s') | KeyCode::Tab => {
                    let i = Column::ALL
                        .iter()
                        .position(|c| *c == self.sort)
                        .unwrap_or(0);
                    self.sort = Column::ALL[(i + 1) % Column::ALL.len()];
                }
                KeyCode::Up | KeyCode::Char('k') => self.select(self.selected.saturating_sub(1)),
                KeyCode::Down | KeyCode::Char('j') => self.select(self.selected + 1),
                KeyCode::PageUp => self.select(self.selected.saturating_sub(page.max(1))),
                KeyCode::PageDown => self.select(self.selected + page.max(1)),
                KeyCode::Home => self.select(0),
                KeyCode::End => self.select(usize::MAX),
                _ => {}
            },
        }
        // Sorting or filtering moved rows: stay on the callsite if it is still shown.
        if self.mode != Mode::Detail {
            self.reselect();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{callsite, process, report};
    use crate::report::CallsiteReport;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn app() -> App {
        let leak = CallsiteReport {
            verdict: Verdict::Growing,
            growth_per_s: Some(50.0),
            armed_total: 10,
            ..callsite("leak_timerfd", 500)
        };
        let busy = CallsiteReport {
            armed_total: 90_000,
            ..callsite("rearm_pool", 64)
        };
        let r = report(vec![
            process(10, "leaker", vec![leak]),
            process(20, "pool", vec![busy]),
        ]);
        let mut a = App::new(View::Timers);
        a.update(&r, &mut |pid, _| format!("ns/pod-{pid}"));
        a
    }

    fn callers(a: &App) -> Vec<&str> {
        a.visible().iter().map(|r| r.caller.as_str()).collect()
    }

    #[test]
    fn sorting_by_column_keys() {
        let mut a = app();
        assert_eq!(callers(&a), ["leak_timerfd", "rearm_pool"]);
        a.on_key(key(KeyCode::Char('a')), 10);
        assert_eq!(callers(&a), ["rearm_pool", "leak_timerfd"]);
        a.on_key(key(KeyCode::Char('g')), 10);
        assert_eq!(a.sort, Column::Growth);
        assert_eq!(callers(&a)[0], "leak_timerfd");
    }

    #[test]
    fn filter_box_narrows_by_field_or_any() {
        let mut a = app();
        for c in "/pod-20".chars() {
            a.on_key(key(KeyCode::Char(c)), 10);
        }
        assert_eq!(a.mode, Mode::Filter);
        a.on_key(key(KeyCode::Enter), 10);
        assert_eq!(callers(&a), ["rearm_pool"]);
        a.on_key(key(KeyCode::Esc), 10);
        assert_eq!(callers(&a).len(), 2);
        a.filter = "pid:10 kind:timerfd".into();
        assert_eq!(callers(&a), ["leak_timerfd"]);
        a.filter = "pid:1".into();
        assert!(callers(&a).is_empty());
    }

    #[test]
    fn selection_follows_its_callsite_and_enter_opens_detail() {
        let mut a = app();
        a.on_key(key(KeyCode::Down), 10);
        assert_eq!(a.selected_row().unwrap().caller, "rearm_pool");
        a.on_key(key(KeyCode::Char('a')), 10);
        assert_eq!(a.selected, 0);
        assert_eq!(a.selected_row().unwrap().caller, "rearm_pool");
        a.on_key(key(KeyCode::Enter), 10);
        assert_eq!(a.mode, Mode::Detail);
        a.on_key(key(KeyCode::Esc), 10);
        assert_eq!(a.mode, Mode::Table);
        assert!(!a.on_key(key(KeyCode::Char('q')), 10));
        assert!(!a.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL), 10));
    }

    #[test]
    fn history_keeps_live_counts_of_present_callsites() {
        let mut a = app();
        let r = report(vec![process(
            10,
            "leaker",
            vec![callsite("leak_timerfd", 600)],
        )]);
        a.update(&r, &mut |_, _| "-".into());
        let key = a.rows[0].key.clone();
        assert_eq!(a.history[&key], [500, 600]);
        assert_eq!(a.history.len(), 1);
    }
}
