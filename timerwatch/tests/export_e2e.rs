//! End-to-end tests of the profile exports: a real leak traced from the kernel, exported as
//! pprof, folded stacks and an SVG flame graph, and read back by the tools people use
//! (`go tool pprof`, an XML parser). Root only, like every BPF test.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::go::{self, Running, Toolchain};
use common::{Report, Target};
use serde_json::Value;

const WINDOW_S: &str = "5";

/// Any installed Go toolchain runs `go tool pprof`; CI must have one.
fn pprof_toolchain() -> Option<Toolchain> {
    let found = go::toolchains().into_iter().last();
    if found.is_none() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI=true but no Go toolchain is installed for go tool pprof; run cargo xtask setup"
        );
        eprintln!("skipping: no Go toolchain for go tool pprof");
    }
    found
}

/// `go tool pprof -top [extra] FILE`, failing the test on a non-zero exit.
fn pprof_top(tc: &Toolchain, file: &Path, extra: &[&str]) -> String {
    let home = file.parent().expect("the profile is in a directory");
    let out = Command::new(tc.root.join("bin/go"))
        .args(["tool", "pprof", "-top"])
        .args(extra)
        .arg(file)
        .env("GOROOT", &tc.root)
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "")
        // pprof keeps state under $HOME; keep it out of the tester's.
        .env("HOME", home)
        .output()
        .expect("run go tool pprof");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "go tool pprof failed ({}):\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The `cum` column of `function`'s row in a `-top` listing (flat flat% sum% cum cum% name).
fn cum_of(top: &str, function: &str) -> f64 {
    top.lines()
        .find_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.len() >= 6 && cols[5..].join(" ") == function)
                .then(|| cols[3].parse::<f64>().ok())
                .flatten()
        })
        .unwrap_or_else(|| panic!("go tool pprof -top does not list {function}:\n{top}"))
}

/// Runs `snapshot --json` of `pid` writing pprof and SVG into `dir`; returns the report and
/// the path of the report saved as a file.
fn snapshot_with_exports(pid: u32, dir: &Path) -> (Report, PathBuf) {
    let pid = pid.to_string();
    let pprof = dir.join("live.pb.gz");
    let svg = dir.join("live.svg");
    let out = common::run(
        &[
            "snapshot",
            "--json",
            "-p",
            &pid,
            "-d",
            WINDOW_S,
            "--pprof",
            pprof.to_str().unwrap(),
            "--flamegraph",
            svg.to_str().unwrap(),
        ],
        common::ATTACH_TIMEOUT + Duration::from_secs(60),
    );
    let report = out.report();
    let saved = dir.join("report.json");
    std::fs::write(&saved, &out.stdout).expect("save the report");
    (report, saved)
}

/// Sum of `live` over the callsites of `pid` that have a frame naming `function`: what pprof's
/// cum of that function must be.
fn live_through(report: &Report, pid: u32, function: &str) -> f64 {
    report.process(pid)["callsites"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| {
            c["frames"].as_array().into_iter().flatten().any(|f| {
                f.as_str()
                    .is_some_and(|f| f == function || f.starts_with(&format!("{function} (")))
            })
        })
        .map(|c| report.num(c, "live"))
        .sum()
}

fn total_live(report: &Report) -> u64 {
    report.0["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["live"].as_u64().expect("live is a count"))
        .sum()
}

/// Every XML event parses; returns the text content.
fn well_formed_svg(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read the SVG");
    let mut reader = quick_xml::Reader::from_str(&text);
    let mut content = String::new();
    let mut root = None;
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(quick_xml::events::Event::Start(e)) => {
                root.get_or_insert_with(|| e.name().into_inner().to_owned());
            }
            Ok(quick_xml::events::Event::Text(t)) => {
                content.push_str(&t.into_inner());
            }
            Ok(_) => {}
            Err(e) => panic!(
                "{} is not well-formed XML at byte {}: {e}",
                path.display(),
                reader.buffer_position()
            ),
        }
    }
    assert_eq!(root.as_deref(), Some("svg"), "{}", path.display());
    content
}

#[test]
fn c_leak_exports_read_back_by_pprof_folded_and_svg() {
    let Some(_serial) = common::start() else {
        return;
    };
    let Some(tc) = pprof_toolchain() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let target = Target::spawn("timerfd_leak", &[]);
    let pid = target.pid();
    let (report, saved) = snapshot_with_exports(pid, dir.path());
    let live = report.num(report.callsite(pid, "leak_timerfd", "timerfd"), "live");
    assert!(
        live >= 100.0,
        "too few leaked timers ({live}); report:\n{report}"
    );

    // pprof: the leaking function carries exactly its callsite's live timers, and the kernel
    // callback is the leaf.
    let pprof = dir.path().join("live.pb.gz");
    let top = pprof_top(&tc, &pprof, &[]);
    assert!(top.contains("Type: live_timers"), "{top}");
    assert_eq!(
        cum_of(&top, "leak_timerfd"),
        live_through(&report, pid, "leak_timerfd"),
        "{top}"
    );
    assert!(cum_of(&top, "timerfd_tmrproc") >= live, "{top}");
    let lines = pprof_top(&tc, &pprof, &["-lines"]);
    assert!(
        lines
            .lines()
            .any(|l| l.contains(" leak_timerfd ") && l.contains("timerfd_leak.c:")),
        "no file:line:\n{lines}"
    );
    let armed = pprof_top(&tc, &pprof, &["-sample_index=armed"]);
    assert!(cum_of(&armed, "leak_timerfd") >= live, "{armed}");

    // Folded stacks of the same report: weights add up to the report's live count.
    let out = common::run(
        &["report", saved.to_str().unwrap(), "--output", "folded"],
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "report failed: {}", out.stderr);
    let mut sum = 0u64;
    for line in out.stdout.lines() {
        let (stack, weight) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        sum += weight
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("bad weight in {line:?}"));
        assert!(
            stack.starts_with("timerfd_leak;"),
            "root is not the process: {line}"
        );
    }
    assert_eq!(
        sum,
        total_live(&report),
        "folded:\n{}\nreport:\n{report}",
        out.stdout
    );
    let leak_line = out
        .stdout
        .lines()
        .find(|l| l.contains(";leak_timerfd ("))
        .unwrap_or_else(|| panic!("no folded stack through leak_timerfd:\n{}", out.stdout));
    assert!(
        leak_line.ends_with(&format!(";timerfd_tmrproc {live}")),
        "the kernel callback is not the leaf, or the weight is wrong: {leak_line}"
    );

    let text = well_formed_svg(&dir.path().join("live.svg"));
    assert!(
        text.contains("leak_timerfd"),
        "the SVG does not name leak_timerfd"
    );
}

#[test]
fn go_leak_pprof_names_the_leaking_function() {
    let Some(_serial) = common::start() else {
        return;
    };
    let Some(tc) = pprof_toolchain() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let leak = Running::spawn(&go::build(&tc, "ticker_leak", false));
    let pid = leak.pid();
    let (report, _) = snapshot_with_exports(pid, dir.path());
    let live = live_through(&report, pid, "main.leakTicker");
    assert!(
        live >= 40.0,
        "too few leaked tickers ({live}); report:\n{report}"
    );
    let top = pprof_top(&tc, &dir.path().join("live.pb.gz"), &[]);
    assert_eq!(
        cum_of(&top, "main.leakTicker"),
        live,
        "{top}\nreport:\n{report}"
    );
    let go_leaf = report.process(pid)["callsites"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c: &Value| c["source"] == "go" && c["kind"] == "go_ticker");
    assert!(go_leaf, "no go_ticker callsite; report:\n{report}");
    assert!(cum_of(&top, "[go_ticker]") >= live, "{top}");
    let text = well_formed_svg(&dir.path().join("live.svg"));
    assert!(
        text.contains("main.leakTicker"),
        "the SVG does not name main.leakTicker"
    );
}
