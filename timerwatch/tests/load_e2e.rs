//! The daemon under load: a storm of short-lived C and Go processes with the Go census on.
//! Memory must stay flat, every scrape must be answered within a second, long-lived processes
//! must still be reported whole, and events lost must be counted. Root only (BPF).

mod common;

use std::time::{Duration, Instant};

use common::daemon::{anon_rss_kib, build_forker, http_get, Daemon, Forker, RssWindows, Sample};
use common::go::{self, Running};

/// Seconds the churn runs: TIMERWATCH_CHURN_SECS (600 for the figures in BENCHMARKS.md), else
/// 150 in CI (enough to judge memory after the warm-up), else the test does not run: on a
/// developer's machine a 1,000-process-a-second storm for minutes is not a default.
fn churn_secs() -> Option<u64> {
    match std::env::var("TIMERWATCH_CHURN_SECS") {
        Ok(v) => {
            Some(v.parse().unwrap_or_else(|_| {
                panic!("TIMERWATCH_CHURN_SECS={v:?} is not a number of seconds")
            }))
        }
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => Some(150),
        Err(_) => None,
    }
}

/// Dead processes' rows are kept a minute (table.rs), so memory levels off after ~70 s.
const WARM_UP_S: usize = 70;

fn metric(samples: &[Sample], name: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .sum()
}

/// 1,000 process creations a second, one in twenty a Go program that lives ~300 ms with timers
/// pending, against the daemon in its default mode (unfiltered, Go census on). After the
/// warm-up the daemon's resident memory may grow from the first half of the rest to the second
/// by at most 20% or 10 MiB (as the fork-storm soak); every `/metrics` scrape, one a second, is
/// answered within 1 s; reports keep coming (`/healthz`); a long-lived Go leak started before
/// the storm is walked whole and counted through it.
#[test]
fn process_churn_with_the_go_census_keeps_memory_flat_and_scrapes_fast() {
    let Some(_serial) = common::start() else {
        return;
    };
    let Some(tc) = go::newest() else {
        return;
    };
    let Some(secs) = churn_secs() else {
        eprintln!("churn test not run: set TIMERWATCH_CHURN_SECS (e.g. 150) or CI=true to run it");
        return;
    };
    let secs = secs.max(2 * WARM_UP_S as u64);
    let (rate, go_every) = (1000u32, 20u32);
    let tmp = tempfile::tempdir().expect("tempdir");
    let forker = build_forker(tmp.path());
    let short = go::build(&tc, "short_lived", false);
    let canary_bin = go::build(&tc, "afterfunc_leak", false);
    let canary = Running::spawn(&canary_bin);
    let canary_started = Instant::now();
    let daemon = Daemon::start(&[]);
    let daemon_pid = daemon.pid();
    let storm = Forker::start_execing(&forker, rate, go_every, &short);

    let start = Instant::now();
    let mut rss: Vec<u64> = Vec::new();
    let mut scrapes: Vec<u128> = Vec::new();
    // /healthz every ten seconds: whether reports kept coming during the storm.
    let mut health: Vec<u16> = Vec::new();
    while start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(1));
        let kib = anon_rss_kib(daemon_pid)
            .unwrap_or_else(|| panic!("daemon gone; stderr:\n{}", daemon.tool.stderr()));
        rss.push(kib);
        let asked = Instant::now();
        let got = http_get(daemon.addr, "/metrics");
        let took = asked.elapsed();
        scrapes.push(took.as_millis());
        let (status, body) = got.unwrap_or_else(|e| panic!("scrape {}: {e}", scrapes.len()));
        assert_eq!(status, 200, "{body}");
        if scrapes.len().is_multiple_of(10) {
            health.push(daemon.get("/healthz").0);
        }
    }
    let (forked, go_forked) = storm.stop();
    let (status, health_text) = daemon.get("/healthz");
    let samples = daemon.metrics();
    let lost = metric(&samples, "timerwatch_lost_events_total");
    let cut = metric(&samples, "timerwatch_go_walks_cut_total");
    let analyses = metric(&samples, "timerwatch_go_binaries_analyzed_total");
    let (report_status, report) = daemon.get("/report");

    // The daemon remembers dead processes for a minute (late records), so memory can level off
    // only after that: the two halves of the rest are compared.
    let settled = &rss[WARM_UP_S.min(rss.len() / 2)..];
    let half = settled.len() / 2;
    let memory = RssWindows::of(&settled[..half], &settled[half..]);
    let (first, last, allowed) = (memory.first, memory.last, memory.allowed);
    let mut sorted = scrapes.clone();
    sorted.sort_unstable();
    eprintln!(
        "churn: {secs}s, {forked} processes forked ({:.0}/s), {go_forked} of them Go; \
         {lost} lost events, {cut} Go walks cut, {analyses} Go analyses; \
         daemon RssAnon KiB after {WARM_UP_S} s: first half max {first}, second half max {last}, \
         min {}, bound {allowed}; \
         {} scrapes, median {} ms, max {} ms; /healthz every 10 s: {health:?}",
        forked as f64 / secs as f64,
        rss.iter().min().unwrap(),
        sorted.len(),
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1],
    );
    assert!(
        health.iter().all(|&h| h == 200),
        "reports stopped under the churn (/healthz every 10 s: {health:?})"
    );
    assert_eq!(
        status, 200,
        "daemon unhealthy after the churn: {health_text}"
    );
    eprintln!("scrapes (ms): {scrapes:?}");
    assert!(
        scrapes.iter().all(|&ms| ms < 1000),
        "a scrape took over 1 s under the churn; all (ms): {scrapes:?}"
    );
    memory.assert_flat_under_load(forked, rate, secs, &rss);
    // The long-lived Go leak, 50 a second: walked whole through the storm.
    assert_eq!(report_status, 200, "/report: {report}");
    let report: serde_json::Value = serde_json::from_str(&report).expect("/report JSON");
    let row = report["processes"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["pid"] == canary.pid()))
        .unwrap_or_else(|| panic!("the Go canary is not in the report:\n{report}"));
    assert!(row.get("go_walk_cut").is_none(), "{row}");
    let heap = row["go_heap_timers"].as_u64().unwrap_or(0) as f64;
    let expected = 50.0 * canary_started.elapsed().as_secs_f64();
    assert!(
        heap >= 0.8 * expected && heap <= 1.05 * expected,
        "the Go canary holds {heap} timers, expected ~{expected:.0}: {row}"
    );
}
