//! End-to-end tests of `timerwatch run` as a CI gate: real commands (C targets, Go programs
//! built with two toolchains, a `go test -c` binary, shell scripts) under the real probes, and
//! the exit codes, JUnit files and baselines a CI job would see. Root only; with CI=true a
//! machine that cannot run them fails instead of skipping.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{go, target_path, Finished, Report, Tool};

/// Bounds a hang; a run that works ends well within it.
const TIMEOUT: Duration = Duration::from_secs(90);

fn run(args: &[&str]) -> Finished {
    run_env(args, &[])
}

fn run_env(args: &[&str], env: &[(&str, &str)]) -> Finished {
    let mut cmd = Command::new(common::BIN);
    cmd.arg("run").args(args).envs(env.iter().copied());
    let finished = Tool::spawn_command(&mut cmd).finish(TIMEOUT);
    finished.assert_no_panic();
    finished
}

fn code(f: &Finished) -> i32 {
    f.status
        .code()
        .unwrap_or_else(|| panic!("timerwatch killed by a signal; stderr:\n{}", f.stderr))
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("run-e2e");
    std::fs::create_dir_all(&dir).expect("create the scratch directory");
    dir.join(name)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// (failing, passing) test case names of a JUnit file, `classname/name`.
fn junit_cases(xml: &str) -> (Vec<String>, Vec<String>) {
    let (mut failing, mut passing) = (Vec::new(), Vec::new());
    for case in xml.split("<testcase ").skip(1) {
        let attr = |name: &str| {
            let key = format!(" {name}=\"");
            let start = format!(" {case}").find(&key).expect("attribute") + key.len() - 1;
            case[start..]
                .split('"')
                .next()
                .unwrap_or_default()
                .to_owned()
        };
        let id = format!("{}/{}", attr("classname"), attr("name"));
        let body = case.split("</testcase>").next().unwrap_or_default();
        if body.contains("<failure") {
            failing.push(id);
        } else {
            passing.push(id);
        }
    }
    (failing, passing)
}

#[test]
fn growth_gate_fails_a_c_leak_fast_and_junit_names_the_function() {
    let Some(_guard) = common::start() else {
        return;
    };
    let junit = scratch("growth.xml");
    let started = Instant::now();
    let f = run(&[
        "--fail-on-growth",
        "--summary",
        "--junit",
        path_str(&junit),
        "--",
        path_str(&target_path("posix_leak")),
    ]);
    let took = started.elapsed();
    assert_eq!(code(&f), 3, "stderr:\n{}", f.stderr);
    assert!(took < Duration::from_secs(30), "took {took:?}");
    let xml = std::fs::read_to_string(&junit).expect("the JUnit file");
    let (failing, passing) = junit_cases(&xml);
    assert_eq!(
        failing,
        ["timerwatch.posix_leak/posix_timer leak_posix_timer"],
        "{xml}"
    );
    assert!(!passing.is_empty(), "{xml}");
    assert!(xml.contains("growing +"), "{xml}");
    // The stack, with file:line.
    assert!(
        xml.lines()
            .any(|l| l.contains("at leak_posix_timer (") && l.contains("posix_leak.c:")),
        "{xml}"
    );
    // --summary: the leak context on stderr.
    assert!(
        f.stderr
            .contains("callsite=leak_posix_timer kind=posix_timer"),
        "{}",
        f.stderr
    );
}

#[test]
fn a_bounded_control_exits_with_the_commands_own_code() {
    let Some(_guard) = common::start() else {
        return;
    };
    let sleeper = target_path("nanosleep_loop");
    // Long enough for verdicts (12 samples): the control must be judged, not just unjudged.
    for (seconds, exit) in [(18, 0), (2, 7)] {
        let script = format!(
            "{} >/dev/null & p=$!; sleep {seconds}; kill $p; wait $p; exit {exit}",
            sleeper.display()
        );
        let f = run(&["--fail-on-growth", "--json", "--", "sh", "-c", &script]);
        assert_eq!(code(&f), exit, "stderr:\n{}", f.stderr);
        let report = Report::parse(&f.stdout, &f.stderr);
        let procs = report.0["processes"].as_array().expect("processes");
        let sleeps = procs
            .iter()
            .find(|p| p["comm"] == "nanosleep_loop")
            .unwrap_or_else(|| panic!("the child was not followed; report:\n{report}"));
        let sites = sleeps["callsites"].as_array().expect("callsites");
        assert!(!sites.is_empty(), "report:\n{report}");
        // A child that lived 2 s may be gone before its stacks are symbolized (a known limit of
        // symbolization through /proc/PID/map_files); one that lived 18 s is named.
        if seconds > 2 {
            assert!(
                sites.iter().any(|c| c["caller"] == "sleep_tick"),
                "report:\n{report}"
            );
        }
        // The control was judged, not merely too short to judge.
        if seconds > 12 {
            assert!(
                sites.iter().any(|c| c["verdict"] == "stable"),
                "report:\n{report}"
            );
        }
    }
    // Not found: 127, as from a shell.
    let f = run(&["--", "/nonexistent/command"]);
    assert_eq!(code(&f), 127, "stderr:\n{}", f.stderr);
}

#[test]
fn only_the_leaking_childs_callsite_fails_the_gate() {
    let Some(_guard) = common::start() else {
        return;
    };
    let (Some(old), Some(new)) = (go::toolchain_for(22), go::toolchain_for(25)) else {
        return;
    };
    let leak_old = go::build(&old, "afterfunc_leak", false);
    let leak_new = go::build(&new, "afterfunc_leak", true);
    let clean = target_path("nanosleep_loop");
    let script = scratch("two_children.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n{} &\n{} &\n{} &\nwait\n",
            leak_old.display(),
            leak_new.display(),
            clean.display()
        ),
    )
    .expect("write the script");
    let junit = scratch("children.xml");
    // The report in a file: the children's output shares stdout.
    let json = scratch("children.json");
    let f = run(&[
        "--fail-on-growth",
        "--json",
        "--output",
        path_str(&json),
        "--junit",
        path_str(&junit),
        "--",
        "sh",
        path_str(&script),
    ]);
    assert_eq!(code(&f), 3, "stderr:\n{}", f.stderr);
    let xml = std::fs::read_to_string(&junit).expect("the JUnit file");
    let (failing, passing) = junit_cases(&xml);
    assert_eq!(
        failing,
        ["timerwatch.afterfunc_leak/go_afterfunc main.leakAfterFunc"],
        "{xml}"
    );
    assert!(
        passing
            .iter()
            .any(|c| c.starts_with("timerwatch.nanosleep_loop/")),
        "{xml}"
    );
    // Both Go children were traced from their exec: two Go versions in the report.
    let report = Report::parse(
        &std::fs::read_to_string(&json).expect("the report file"),
        &f.stderr,
    );
    let versions: BTreeSet<&str> = report.0["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .filter_map(|p| p["go_version"].as_str())
        .collect();
    assert_eq!(
        versions,
        BTreeSet::from([old.version.as_str(), new.version.as_str()]),
        "report:\n{report}"
    );
}

/// `go test -c` of tests/go_targets/`program`, with `tc`.
fn build_go_test(tc: &go::Toolchain, program: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/go_targets")
        .join(program);
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-targets");
    let dir = base.join(&tc.version).join(format!("{program}-test"));
    std::fs::create_dir_all(&dir).expect("create the Go test directory");
    for entry in std::fs::read_dir(&src).expect("read the Go test sources") {
        let path = entry.expect("list the Go test sources").path();
        std::fs::copy(&path, dir.join(path.file_name().expect("a file name")))
            .expect("copy a Go source");
    }
    std::fs::write(
        dir.join("go.mod"),
        format!("module {program}\n\ngo 1.{}\n", tc.minor),
    )
    .expect("write go.mod");
    let out = dir.join(format!("{program}.test"));
    let result = Command::new(tc.root.join("bin/go"))
        .current_dir(&dir)
        .args(["test", "-c", "-o"])
        .arg(&out)
        .arg(".")
        .env("GOROOT", &tc.root)
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "")
        .env("GOCACHE", base.join("cache"))
        .env("GOPATH", base.join("gopath"))
        .output()
        .expect("run go test -c");
    assert!(
        result.status.success(),
        "go test -c of {program} with {} failed:\n{}",
        tc.version,
        String::from_utf8_lossy(&result.stderr)
    );
    out
}

#[test]
fn live_at_exit_catches_a_test_that_leaves_an_afterfunc_pending() {
    let Some(_guard) = common::start() else {
        return;
    };
    for minor in [22, 25] {
        let Some(tc) = go::toolchain_for(minor) else {
            continue;
        };
        let bin = build_go_test(&tc, "pending_afterfunc");
        let junit = scratch(&format!("pending-{minor}.xml"));
        let args = [
            "--fail-on-live-at-exit",
            "0",
            "--junit",
            path_str(&junit),
            "--",
            path_str(&bin),
            "-test.v",
        ];
        let f = run(&args);
        assert_eq!(code(&f), 4, "{}: stderr:\n{}", tc.version, f.stderr);
        assert!(f.stdout.contains("PASS"), "the test ran: {}", f.stdout);
        let xml = std::fs::read_to_string(&junit).expect("the JUnit file");
        let (failing, _) = junit_cases(&xml);
        assert_eq!(failing.len(), 1, "{xml}");
        assert!(
            failing[0].ends_with(" pending_afterfunc.startIdleTimeout"),
            "{xml}"
        );
        assert!(xml.contains("1 live at exit (limit 0)"), "{xml}");
        // The same test, fixed with Stop.
        let fixed = run_env(&args, &[("PENDING_FIXED", "1")]);
        assert_eq!(code(&fixed), 0, "{}: stderr:\n{}", tc.version, fixed.stderr);
    }
}

#[test]
fn a_baseline_accepts_the_known_leak_and_fails_a_new_one_on_top() {
    let Some(_guard) = common::start() else {
        return;
    };
    let baseline = scratch("baseline.json");
    let _ = std::fs::remove_file(&baseline);
    let leaker = target_path("short_lived");
    // short_lived leaks `rate` POSIX timers over one second and exits holding them.
    let with = |rate: &str, flag: &str| {
        run(&[
            "--fail-on-live-at-exit",
            "0",
            flag,
            path_str(&baseline),
            "--",
            path_str(&leaker),
            rate,
        ])
    };
    let unbaselined = run(&["--fail-on-live-at-exit", "0", "--", path_str(&leaker), "50"]);
    assert_eq!(code(&unbaselined), 4, "stderr:\n{}", unbaselined.stderr);
    let written = with("50", "--write-baseline");
    assert_eq!(code(&written), 0, "stderr:\n{}", written.stderr);
    let text = std::fs::read_to_string(&baseline).expect("the baseline");
    let json: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(json["schema"], "timerwatch.baseline/v1", "{text}");
    let entry = json["callsites"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["caller"] == "leak_posix_timer"))
        .unwrap_or_else(|| panic!("no leak_posix_timer in {text}"));
    assert_eq!(entry["live"], 50, "{text}");
    let again = with("50", "--baseline");
    assert_eq!(code(&again), 0, "stderr:\n{}", again.stderr);
    let more = with("100", "--baseline");
    assert_eq!(code(&more), 4, "stderr:\n{}", more.stderr);
    // The known leak as before, and a new one from another program: only the new one fails.
    let junit = scratch("baseline.xml");
    let script = format!(
        "{} 50; {} & p=$!; sleep 1; kill $p; wait $p; exit 0",
        leaker.display(),
        target_path("timerfd_leak").display()
    );
    let new = run(&[
        "--fail-on-live-at-exit",
        "0",
        "--baseline",
        path_str(&baseline),
        "--junit",
        path_str(&junit),
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(code(&new), 4, "stderr:\n{}", new.stderr);
    let xml = std::fs::read_to_string(&junit).expect("the JUnit file");
    let (failing, _) = junit_cases(&xml);
    assert_eq!(
        failing,
        ["timerwatch.timerfd_leak/timerfd leak_timerfd"],
        "{xml}"
    );
    assert!(
        xml.contains("name=\"posix_timer leak_posix_timer\" time=\"0\">\n      <skipped message=\"in the baseline\""),
        "{xml}"
    );
}

/// BPF program ids held by `pid`'s descriptors (programs and links show them in fdinfo).
fn program_ids_of(pid: u32) -> BTreeSet<u64> {
    let mut ids = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return ids;
    };
    for entry in entries.flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        ids.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("prog_id:"))
                .filter_map(|v| v.trim().parse::<u64>().ok()),
        );
    }
    ids
}

#[test]
fn sigint_stops_the_command_prints_the_partial_report_and_unloads() {
    let Some(_guard) = common::start() else {
        return;
    };
    let mut tool = Tool::spawn(&["run", "--", path_str(&target_path("posix_leak"))]);
    tool.wait_attached();
    let pid: u32 = tool
        .stderr()
        .split("(pid ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no command pid in:\n{}", tool.stderr()));
    std::thread::sleep(Duration::from_secs(2));
    let tool_pid = {
        // The tool's own pid: the parent of the command.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("command stat");
        let after = stat.rsplit(')').next().expect("stat fields");
        after
            .split_whitespace()
            .nth(1)
            .expect("ppid")
            .parse()
            .expect("a pid")
    };
    let loaded = program_ids_of(tool_pid);
    assert!(!loaded.is_empty(), "no BPF programs held by pid {tool_pid}");
    tool.signal(libc::SIGINT);
    let f = tool.finish(TIMEOUT);
    f.assert_no_panic();
    // The command died of the forwarded SIGINT: 128 + 2, passed through.
    assert_eq!(code(&f), 130, "stderr:\n{}", f.stderr);
    assert!(f.stdout.contains("leak_posix_timer"), "{}", f.stdout);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the command is still running"
    );
    common::assert_unloaded(&loaded);
}

#[test]
fn duration_stops_the_command_with_sigterm_then_sigkill() {
    let Some(_guard) = common::start() else {
        return;
    };
    let leak = path_str(&target_path("posix_leak")).to_owned();
    let f = run(&["--duration", "2", "--", &leak]);
    // SIGTERM at --duration, passed through as 128 + 15.
    assert_eq!(code(&f), 143, "stderr:\n{}", f.stderr);
    assert!(f.stderr.contains("--duration reached"), "{}", f.stderr);
    // A command that ignores SIGTERM (and whose children inherit that) gets SIGKILL.
    let started = Instant::now();
    let stubborn = "trap '' TERM; while :; do sleep 0.1; done";
    let f = run(&[
        "--duration",
        "1",
        "--kill-after",
        "1",
        "--",
        "sh",
        "-c",
        stubborn,
    ]);
    assert_eq!(code(&f), 137, "stderr:\n{}", f.stderr);
    assert!(started.elapsed() < Duration::from_secs(20));
}
