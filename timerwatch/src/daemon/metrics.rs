//! The OpenMetrics exposition of the last snapshot, encoded at scrape time.
//!
//! Families (Prometheus conventions: `timerwatch_` prefix, base units, `_total` counters):
//! per series (labels `pid, comm, source, kind, caller, container_id, pod_uid, pod, namespace,
//! container`) `timerwatch_live_timers`, `timerwatch_timers_{created,armed,cancelled,expired}_total`,
//! `timerwatch_timer_growth_per_second`, `timerwatch_timer_verdict` (value 1, the current verdict
//! in a `verdict` label: a change ends one series and starts another),
//! `timerwatch_live_timers_plateau` (only for series whose timers expire by themselves) and the
//! histogram
//! `timerwatch_wakeup_latency_seconds`; host-wide `timerwatch_lost_events_total`,
//! `timerwatch_unattributed_events_total`, `timerwatch_traced_processes` and
//! `timerwatch_go_binaries_analyzed_total` (analyses are cached per binary: N processes of one
//! image count one), `timerwatch_go_census_walks_total` and
//! `timerwatch_go_census_cpu_seconds_total` (the census's own cost), and
//! `timerwatch_go_walks_cut_total{reason}` (Go memory walks cut short: `time`, `bytes`, `torn`).

use std::fmt;

use prometheus_client::{
    collector::Collector,
    encoding::{text, DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
    registry::{Registry, Unit},
};

use super::{fold::Series, snapshot::Shared};

struct SnapshotCollector(Shared);

impl fmt::Debug for SnapshotCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SnapshotCollector")
    }
}

type Labels<'a> = [(&'static str, &'a str); 10];

/// Reads one counter of a series.
type Field = fn(&Series) -> u64;

fn labels<'a>(s: &'a Series, pid: &'a str) -> Labels<'a> {
    [
        ("pid", pid),
        ("comm", &s.comm),
        ("source", s.source.as_str()),
        ("kind", s.kind.as_str()),
        ("caller", &s.caller),
        ("container_id", &s.pod.container_id),
        ("pod_uid", &s.pod.pod_uid),
        ("pod", &s.pod.pod),
        ("namespace", &s.pod.namespace),
        ("container", &s.pod.container),
    ]
}

fn pid_label(s: &Series) -> String {
    s.pid
        .map_or_else(|| super::fold::OTHER.to_string(), |p| p.to_string())
}

/// One family over every series, `value` giving each one's sample.
fn family(
    enc: &mut DescriptorEncoder,
    series: &[Series],
    name: &str,
    help: &str,
    kind: MetricType,
    value: impl Fn(&Series) -> f64,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for s in series {
        let pid = pid_label(s);
        let set = labels(s, &pid);
        let mut one = m.encode_family(&set)?;
        match kind {
            MetricType::Counter => {
                one.encode_counter::<NoLabelSet, _, u64>(&(value(s) as u64), None)?
            }
            _ => one.encode_gauge(&value(s))?,
        }
    }
    Ok(())
}

fn encode(snap: &super::snapshot::Snapshot, enc: &mut DescriptorEncoder) -> fmt::Result {
    let series = &snap.series;
    family(
        enc,
        series,
        "timerwatch_live_timers",
        "Live timers now, by process and arming callsite (`other`: folded beyond the limits).",
        MetricType::Gauge,
        |s| s.live as f64,
    )?;
    let counters: [(&str, &str, Field); 4] = [
        (
            "timerwatch_timers_created",
            "Timers first seen at the callsite.",
            |s| s.totals.created,
        ),
        (
            "timerwatch_timers_armed",
            "Arms and re-arms of the callsite's timers.",
            |s| s.totals.armed,
        ),
        (
            "timerwatch_timers_cancelled",
            "Cancellations of armed timers.",
            |s| s.totals.cancelled,
        ),
        (
            "timerwatch_timers_expired",
            "Expiries of the callsite's timers.",
            |s| s.totals.expired,
        ),
    ];
    for (name, help, get) in counters {
        family(enc, series, name, help, MetricType::Counter, |s| {
            get(s) as f64
        })?;
    }
    family(
        enc,
        series,
        "timerwatch_timer_growth_per_second",
        "Trend of the live count (Theil-Sen slope, timers/s) when growing or draining, else 0.",
        MetricType::Gauge,
        |s| s.growth_per_s,
    )?;
    let with_plateau: Vec<Series> = series
        .iter()
        .filter(|s| s.plateau.is_some())
        .cloned()
        .collect();
    family(
        enc,
        &with_plateau,
        "timerwatch_live_timers_plateau",
        "Where the live count levels off (arrival rate x lifetime), for timers that expire by themselves.",
        MetricType::Gauge,
        |s| s.plateau.unwrap_or(0.0),
    )?;
    let mut m = enc.encode_descriptor(
        "timerwatch_timer_verdict",
        "1 for the current growth verdict (growing, draining, stable, unknown) of the series.",
        None,
        MetricType::Gauge,
    )?;
    for s in series {
        let pid = pid_label(s);
        let set = (labels(s, &pid), [("verdict", s.verdict.as_str())]);
        m.encode_family(&set)?.encode_gauge(&1u64)?;
    }
    let mut m = enc.encode_descriptor(
        "timerwatch_wakeup_latency",
        "Timer expiry to the woken task running (each report's counts at fixed bounds, 1 us to 1 s).",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for s in series.iter().filter(|s| s.latency.count() > 0) {
        let pid = pid_label(s);
        let set = labels(s, &pid);
        m.encode_family(&set)?.encode_histogram::<NoLabelSet>(
            s.latency.sum_s(),
            s.latency.count(),
            &s.latency.buckets(),
            None,
        )?;
    }
    let host: [(&str, &str, MetricType, u64); 4] = [
        (
            "timerwatch_lost_events",
            "Records the kernel dropped because the ring buffer was full.",
            MetricType::Counter,
            snap.lost_events,
        ),
        (
            "timerwatch_unattributed_events",
            "Events about timers whose start was not seen.",
            MetricType::Counter,
            snap.unattributed_events,
        ),
        (
            "timerwatch_traced_processes",
            "Processes with timers in the last report.",
            MetricType::Gauge,
            snap.processes,
        ),
        (
            "timerwatch_go_binaries_analyzed",
            "Go binaries analysed (version, pclntab, runtime layout) since start; cached per binary.",
            MetricType::Counter,
            crate::gotrace::binaries_analyzed(),
        ),
    ];
    for (name, help, kind, v) in host {
        let mut m = enc.encode_descriptor(name, help, None, kind)?;
        match kind {
            MetricType::Counter => m.encode_counter::<NoLabelSet, _, u64>(&v, None)?,
            _ => m.encode_gauge(&v)?,
        }
    }
    // The census's own cost, so "agent CPU per Go process per report" is the ratio of two
    // counters rather than a difference of host-wide CPU figures that other load moves.
    enc.encode_descriptor(
        "timerwatch_go_census_walks",
        "Census walks of one Go process (heaps and waiting goroutines), since start.",
        None,
        MetricType::Counter,
    )?
    .encode_counter::<NoLabelSet, _, u64>(&crate::gotrace::census_walks(), None)?;
    enc.encode_descriptor(
        "timerwatch_go_census_cpu",
        "CPU time the agent's thread spent in census walks, since start.",
        Some(&Unit::Seconds),
        MetricType::Counter,
    )?
    .encode_counter::<NoLabelSet, _, f64>(&crate::gotrace::census_cpu_seconds(), None)?;
    let mut m = enc.encode_descriptor(
        "timerwatch_go_walks_cut",
        "Walks of a Go process's runtime memory cut short, by reason: its time or bytes budget spent, or the memory torn (changing, or not a runtime's).",
        None,
        MetricType::Counter,
    )?;
    for (reason, v) in crate::gotrace::walks_cut() {
        m.encode_family(&[("reason", reason)])?
            .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
    }
    Ok(())
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        encode(&self.0.lock(), &mut enc)
    }
}

pub fn registry(shared: Shared) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(SnapshotCollector(shared)));
    r
}

/// The OpenMetrics text of `registry`, ending in `# EOF`.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; the encoder only errs on its writer's errors.
    text::encode(&mut out, registry).expect("encode into a String");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::{
        fold::Totals,
        latency::{Cumulative, LatencyHistogram},
        metadata::PodLabels,
    };

    fn series(pid: Option<u32>, caller: &str) -> Series {
        let mut latency = LatencyHistogram::default();
        // 5 wake-ups within 10 µs, 4 more within 100 µs, 1 slower.
        let mut at_most = [0; 19];
        for (i, slot) in at_most.iter_mut().enumerate().skip(3) {
            *slot = if i < 6 { 5 } else { 9 };
        }
        latency.add_increase(
            &Cumulative {
                at_most,
                count: 10,
                sum_s: 1.5e-3,
            },
            &Cumulative::default(),
        );
        Series {
            pid,
            comm: "leaky \"one\"".into(),
            pod: PodLabels {
                pod: "web-0".into(),
                namespace: "shop".into(),
                ..PodLabels::default()
            },
            source: crate::report::Source::Kernel,
            kind: crate::report::Kind::Timerfd,
            caller: caller.into(),
            live: 42,
            growth_per_s: 19.5,
            verdict: crate::report::Verdict::Growing,
            plateau: (caller == "leak_timerfd").then_some(480.0),
            totals: Totals {
                created: 100,
                armed: 120,
                cancelled: 3,
                expired: 7,
            },
            latency,
        }
    }

    #[test]
    fn exposition_follows_the_conventions() {
        let shared = Shared::default();
        {
            let mut s = shared.lock();
            s.series = vec![series(Some(7), "leak_timerfd"), series(None, "other")];
            s.lost_events = 5;
        }
        let text = render(&registry(shared));
        for want in [
            "# TYPE timerwatch_live_timers gauge",
            "timerwatch_live_timers{pid=\"7\",comm=\"leaky \\\"one\\\"\",source=\"kernel\",kind=\"timerfd\",caller=\"leak_timerfd\",container_id=\"\",pod_uid=\"\",pod=\"web-0\",namespace=\"shop\",container=\"\"} 42",
            "# TYPE timerwatch_timers_created counter",
            "timerwatch_timers_created_total{pid=\"7\"",
            "timerwatch_timer_verdict{pid=\"other\"",
            "# TYPE timerwatch_live_timers_plateau gauge",
            "timerwatch_live_timers_plateau{pid=\"7\",comm=\"leaky \\\"one\\\"\",source=\"kernel\",kind=\"timerfd\",caller=\"leak_timerfd\",container_id=\"\",pod_uid=\"\",pod=\"web-0\",namespace=\"shop\",container=\"\"} 480",
            "verdict=\"growing\"} 1",
            "# TYPE timerwatch_wakeup_latency_seconds histogram",
            "# UNIT timerwatch_wakeup_latency_seconds seconds",
            "timerwatch_wakeup_latency_seconds_bucket{le=\"0.00001\",pid=\"7\"",
            "_bucket{le=\"+Inf\",pid=\"7\"",
            "timerwatch_wakeup_latency_seconds_count{pid=\"7\"",
            "timerwatch_lost_events_total 5",
            "timerwatch_traced_processes 0",
            "# TYPE timerwatch_go_binaries_analyzed counter",
            "timerwatch_go_binaries_analyzed_total ",
            "# TYPE timerwatch_go_census_walks counter",
            "timerwatch_go_census_walks_total ",
            "# UNIT timerwatch_go_census_cpu_seconds seconds",
            "timerwatch_go_census_cpu_seconds_total ",
            "# TYPE timerwatch_go_walks_cut counter",
            "timerwatch_go_walks_cut_total{reason=\"time\"} ",
            "timerwatch_go_walks_cut_total{reason=\"bytes\"} ",
            "timerwatch_go_walks_cut_total{reason=\"torn\"} ",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        assert!(!text.contains("timerwatch_live_timers_plateau{pid=\"other\""));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
