//! `--group-by`: the callsite table folded into coarser rows (caller, Go package, binary,
//! pod), as dashboards rank leaks (`payment/handler: 3821 timers`).

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use clap::ValueEnum;

use crate::report::{CallsiteReport, ProcessReport, Report, Source, Verdict};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GroupBy {
    /// One row per process and callsite (the default table).
    Callsite,
    /// The function that armed the timers, across processes.
    Caller,
    /// The Go package of the caller; the binary's name for non-Go processes.
    Package,
    /// The executable's file name.
    Binary,
    /// namespace/pod from the process's cgroup and the kubelet's log directory (on the
    /// machine that traced; `-` for host processes and for recordings read elsewhere).
    Pod,
}

/// The Go package of a function name: `example.com/pay/handler.(*S).arm` → `example.com/pay/handler`.
pub fn go_package(function: &str) -> &str {
    let (dir, last) = match function.rfind('/') {
        Some(i) => (&function[..=i], &function[i + 1..]),
        None => ("", function),
    };
    let pkg_len = last.find('.').unwrap_or(last.len());
    &function[..dir.len() + pkg_len]
}

fn binary(p: &ProcessReport) -> String {
    match p.exe.rsplit('/').next() {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => p.comm.clone(),
    }
}

fn key(
    by: GroupBy,
    p: &ProcessReport,
    c: &CallsiteReport,
    pod: &mut dyn FnMut(u32, &str) -> String,
) -> String {
    let caller = c.caller.as_deref().unwrap_or("?");
    match by {
        GroupBy::Callsite => format!("{} {} {}", p.pid, c.kind, caller),
        GroupBy::Caller => caller.to_owned(),
        GroupBy::Package if c.source == Source::Go || p.go_version.is_some() => {
            match c.caller.as_deref() {
                Some(f) => go_package(f).to_owned(),
                None => binary(p),
            }
        }
        GroupBy::Package | GroupBy::Binary => binary(p),
        GroupBy::Pod => pod(p.pid, &p.comm),
    }
}

#[derive(Default)]
pub struct Group {
    pub key: String,
    pub live: u64,
    pub armed: u64,
    pub wakeups: u64,
    pub growth_per_s: f64,
    /// The worst of its callsites' verdicts.
    pub verdict: Verdict,
    pub callsites: usize,
    pub pids: BTreeSet<u32>,
}

pub fn groups(
    report: &Report,
    by: GroupBy,
    pod: &mut dyn FnMut(u32, &str) -> String,
) -> Vec<Group> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<Group> = Vec::new();
    for p in &report.processes {
        for c in &p.callsites {
            let k = key(by, p, c, pod);
            let i = *index.entry(k.clone()).or_insert_with(|| {
                out.push(Group {
                    key: k,
                    verdict: Verdict::Unknown,
                    ..Group::default()
                });
                out.len() - 1
            });
            let g = &mut out[i];
            g.live += c.live;
            g.armed += c.armed_total;
            g.wakeups += c.wakeups.as_ref().map_or(0, |w| w.count);
            g.growth_per_s += c.growth_per_s.unwrap_or(0.0);
            if c.verdict.alarm() > g.verdict.alarm() {
                g.verdict = c.verdict;
            }
            g.callsites += 1;
            g.pids.insert(p.pid);
        }
    }
    out.sort_by(|a, b| {
        b.live
            .cmp(&a.live)
            .then(b.armed.cmp(&a.armed))
            .then(a.key.cmp(&b.key))
    });
    out
}

/// Pod names of live processes, as the daemon labels its metrics.
pub fn live_pods() -> impl FnMut(u32, &str) -> String {
    let mut meta = crate::daemon::metadata::Metadata::new(
        std::path::Path::new("/proc"),
        std::path::Path::new("/var/log/pods"),
    );
    move |pid, comm| {
        let l = meta.labels(pid, comm);
        match (l.pod.as_str(), l.pod_uid.as_str()) {
            ("", "") => "-".into(),
            ("", uid) => format!("pod {uid}"),
            (pod, _) => format!("{}/{pod}", l.namespace),
        }
    }
}

/// The grouped table. `live` says the report's PIDs are processes of this machine, now: only
/// then can their pods be looked up (a recording read elsewhere shows `-`).
pub fn render(report: &Report, by: GroupBy, max_rows: Option<usize>, live: bool) -> String {
    let rows = if live {
        groups(report, by, &mut live_pods())
    } else {
        groups(report, by, &mut |_, _| "-".to_string())
    };
    let mut out = String::new();
    let live: u64 = rows.iter().map(|g| g.live).sum();
    let name = format!("{by:?}").to_uppercase();
    let _ = writeln!(
        out,
        "timerwatch: {:.1}s traced, {} groups by {}, {} live timers, {} lost events",
        report.duration_s,
        rows.len(),
        name.to_lowercase(),
        live,
        report.lost_events
    );
    let _ = writeln!(
        out,
        "{:>8} {:<16} {:>9} {:>8} {:>9} {:>5}  {name}",
        "LIVE", "VERDICT", "ARMED", "WAKEUPS", "CALLSITES", "PIDS"
    );
    for g in rows.iter().take(max_rows.unwrap_or(usize::MAX)) {
        let verdict = if g.verdict.trending() {
            format!("{} {:+.1}/s", g.verdict, g.growth_per_s)
        } else {
            g.verdict.to_string()
        };
        let _ = writeln!(
            out,
            "{:>8} {:<16} {:>9} {:>8} {:>9} {:>5}  {}",
            g.live,
            verdict,
            g.armed,
            g.wakeups,
            g.callsites,
            g.pids.len(),
            g.key
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{callsite, process, report};

    #[test]
    fn go_packages_keep_their_path() {
        assert_eq!(go_package("main.leakTicker"), "main");
        assert_eq!(
            go_package("example.com/pay/handler.(*S).arm"),
            "example.com/pay/handler"
        );
        assert_eq!(go_package("net/http.(*persistConn).roundTrip"), "net/http");
        assert_eq!(go_package("plain"), "plain");
    }

    #[test]
    fn callers_add_up_across_processes_and_take_the_worst_verdict() {
        let growing = CallsiteReport {
            verdict: Verdict::Growing,
            growth_per_s: Some(2.0),
            ..callsite("leak", 5)
        };
        let mut a = process(1, "a", vec![growing, callsite("other", 1)]);
        a.exe = "/usr/bin/alpha".into();
        let b = process(2, "b", vec![callsite("leak", 4)]);
        let r = report(vec![a, b]);
        let mut no_pod = |_: u32, _: &str| "-".to_string();
        let g = groups(&r, GroupBy::Caller, &mut no_pod);
        assert_eq!(g[0].key, "leak");
        assert_eq!(
            (g[0].live, g[0].pids.len(), g[0].verdict),
            (9, 2, Verdict::Growing)
        );
        let g = groups(&r, GroupBy::Binary, &mut no_pod);
        let keys: Vec<&str> = g.iter().map(|g| g.key.as_str()).collect();
        assert_eq!(keys, ["alpha", "b"]);
        let g = groups(&r, GroupBy::Package, &mut no_pod);
        assert_eq!(g[0].key, "alpha");
    }
}
