//! `timerwatch daemon` end to end: a real Prometheus scrapes it, it runs with only the
//! DaemonSet's capabilities, it labels processes in pod-like cgroups, its manifests validate,
//! and its memory stays flat under a fork storm. Root only (BPF), one at a time.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{
    anon_rss_kib, build_forker, cgroup_mounts, child_of, fake_kubelet_pod, free_port,
    manifest_capabilities, status_field, Daemon, FakeCgroup, Forker, Prometheus, RssWindows,
    Sample,
};
use common::{wait_until, Target, Tool, BIN};

/// How long a 20/s leak may take to be called growing, with start-up and scrape delays.
const VERDICT_TIMEOUT: Duration = Duration::from_secs(60);

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// The live-timer samples of `pid` at callsite `caller`.
fn live_of<'a>(samples: &'a [Sample], pid: u32, caller: &str) -> Option<&'a Sample> {
    let pid = pid.to_string();
    samples.iter().find(|s| {
        s.name == "timerwatch_live_timers" && s.label("pid") == pid && s.label("caller") == caller
    })
}

#[test]
fn prometheus_scrapes_a_growing_leak_by_callsite() {
    let Some(_serial) = common::start() else {
        return;
    };
    let daemon = Daemon::start(&[]);
    let target = Target::spawn("timerfd_leak", &["20"]);
    let prometheus = Prometheus::start(daemon.addr);
    let pid = target.pid();

    let selector = format!("{{pid=\"{pid}\",caller=\"leak_timerfd\"}}");
    let growing = format!("timerwatch_timer_verdict{selector}");
    let end = Instant::now() + VERDICT_TIMEOUT;
    let mut verdict = Vec::new();
    while Instant::now() < end {
        verdict = prometheus.vector(&format!("{growing} == 1"));
        if verdict.iter().any(|s| s["metric"]["verdict"] == "growing") {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        verdict
            .iter()
            .any(|s| s["metric"]["verdict"] == "growing"),
        "no growing verdict for the leak through Prometheus within {VERDICT_TIMEOUT:?}: {verdict:?}\n\
         daemon stderr:\n{}\nprometheus log:\n{}",
        daemon.tool.stderr(),
        prometheus.log()
    );
    let live = prometheus.vector(&format!("timerwatch_live_timers{selector}"));
    assert_eq!(live.len(), 1, "{live:?}");
    let m = &live[0]["metric"];
    assert_eq!(m["comm"], "timerfd_leak", "{m}");
    assert_eq!(m["kind"], "timerfd", "{m}");
    assert_eq!(m["source"], "kernel", "{m}");
    let n: f64 = live[0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("a sample value");
    assert!(
        n >= 100.0,
        "only {n} live timers after the verdict: {live:?}"
    );
    let growth = prometheus.vector(&format!("timerwatch_timer_growth_per_second{selector}"));
    let g: f64 = growth[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!((15.0..=25.0).contains(&g), "growth {g}/s for a 20/s leak");

    // The target's counters never went down between scrapes (a reset would show here).
    let resets = prometheus.vector(&format!(
        "resets(timerwatch_timers_created_total{selector}[5m])"
    ));
    assert_eq!(resets[0]["value"][1], "0", "{resets:?}");
    let up = prometheus.vector("up{job=\"timerwatch\"}");
    assert_eq!(up[0]["value"][1], "1", "{up:?}");

    dashboard_queries_work(&prometheus, pid);

    let (status, health) = daemon.get("/healthz");
    assert_eq!((status, health.as_str()), (200, "ok\n"));
    let (status, report) = daemon.get("/report");
    assert_eq!(status, 200, "{report}");
    let report: serde_json::Value = serde_json::from_str(&report).expect("/report is JSON");
    assert_eq!(report["schema"], "timerwatch.report/v1");
    let process = report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == pid)
        .expect("the target in /report");
    assert!(process["callsites"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["caller"] == "leak_timerfd" && c["verdict"] == "growing"));

    // The verdict change was logged as one JSON line.
    let logged = daemon.tool.stdout();
    let line = logged
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "verdict" && v["pid"] == pid && v["to"] == "growing")
        .unwrap_or_else(|| panic!("no verdict line for {pid} on stdout:\n{logged}"));
    assert_eq!(line["caller"], "leak_timerfd");
    assert!(line["ts"].as_f64().is_some() && line["growth_per_s"].as_f64().is_some());
}

/// Every query of deploy/grafana-dashboard.json runs against the real series.
fn dashboard_queries_work(prometheus: &Prometheus, pid: u32) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read the dashboard"))
            .expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut titles = BTreeSet::new();
    for panel in panels {
        titles.insert(panel["title"].as_str().unwrap_or_default().to_string());
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"]
                .as_str()
                .expect("expr")
                .replace("$__rate_interval", "1m")
                .replace("$namespace", ".*");
            let result = prometheus.vector(&expr);
            if panel["title"] == "Live timers by callsite" {
                assert!(
                    result
                        .iter()
                        .any(|s| s["metric"]["caller"] == "leak_timerfd"),
                    "{expr} does not show the leak (pid {pid}): {result:?}"
                );
            }
            if panel["title"] == "Growing callsites" {
                assert!(
                    result
                        .iter()
                        .any(|s| s["metric"]["pid"].as_str() == Some(pid.to_string().as_str())),
                    "{expr} does not list the leak: {result:?}"
                );
            }
        }
    }
    for want in [
        "Live timers by callsite",
        "Growing callsites",
        "Growth verdicts",
        "Lost events",
        "Wake-up latency p99 by callsite",
    ] {
        assert!(titles.contains(want), "no panel {want:?} in {titles:?}");
    }
}

/// Bit numbers of the capabilities the manifest may name.
fn cap_bit(name: &str) -> u32 {
    match name {
        "DAC_READ_SEARCH" => 2,
        "SYS_PTRACE" => 19,
        "SYS_ADMIN" => 21,
        "PERFMON" => 38,
        "BPF" => 39,
        "CHECKPOINT_RESTORE" => 40,
        other => panic!("the test does not know capability {other}"),
    }
}

/// A daemon in its own mount namespace with read-only tracefs and BTF (as the DaemonSet mounts
/// them), as root with only `caps` (bounding set reduced, so nothing can be regained).
fn least_privilege_command(caps: &[String], addr: SocketAddr) -> Command {
    let set: Vec<String> = caps
        .iter()
        .map(|c| format!("+{}", c.to_lowercase()))
        .collect();
    let bounding = format!("-all,{}", set.join(","));
    let args = Daemon::args(addr).join(" ");
    let script = format!(
        "set -e; mount -o remount,bind,ro /sys/kernel/tracing; \
         mount --bind /sys/kernel/btf /sys/kernel/btf; mount -o remount,bind,ro /sys/kernel/btf; \
         exec setpriv --bounding-set={bounding} --inh-caps=-all -- {BIN} {args}"
    );
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    cmd
}

#[test]
fn runs_with_only_the_manifest_capabilities_and_names_a_missing_one() {
    let Some(_serial) = common::start() else {
        return;
    };
    let caps = manifest_capabilities();
    for forbidden in ["SYS_ADMIN", "ALL"] {
        assert!(
            !caps.iter().any(|c| c == forbidden),
            "the manifest adds {forbidden}"
        );
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let daemon = Daemon::attach(&mut least_privilege_command(&caps, addr), addr);
    let want: u64 = caps.iter().map(|c| 1u64 << cap_bit(c)).sum();
    let eff = status_field(daemon.pid(), "CapEff:").expect("the daemon's CapEff");
    assert_eq!(
        u64::from_str_radix(&eff, 16).unwrap(),
        want,
        "CapEff {eff} is not exactly the manifest's {caps:?}"
    );

    // A target in its own mount namespace: its binary is reachable only through map_files.
    let mut leak = Command::new("unshare");
    leak.args(["--mount", "--fork", "--kill-child", "--"])
        .arg(common::target_path("timerfd_leak"))
        .arg("20")
        .stdout(Stdio::null());
    let mut unshare = leak.spawn().expect("start unshare");
    let mut pid = None;
    wait_until(Duration::from_secs(5), || {
        pid = child_of(unshare.id());
        pid.is_some()
    });
    let pid = pid.expect("the leak started under unshare");
    let found = daemon.wait_for(Duration::from_secs(20), |s| {
        live_of(s, pid, "leak_timerfd").map(|x| x.value)
    });
    let _ = unshare.kill();
    let _ = unshare.wait();
    assert!(
        found.is_some_and(|n| n > 0.0),
        "the least-privileged daemon did not report the leak's callsite; metrics:\n{:?}\nstderr:\n{}",
        daemon
            .metrics()
            .iter()
            .filter(|s| s.label("pid") == pid.to_string())
            .collect::<Vec<_>>(),
        daemon.tool.stderr()
    );
    drop(daemon);

    // Each capability of the manifest is needed: without it the daemon says so in one line.
    for missing in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let done = Tool::spawn_command(&mut least_privilege_command(&fewer, addr))
            .finish(common::ATTACH_TIMEOUT);
        let lines: Vec<&str> = done.stderr.lines().collect();
        assert_eq!(
            done.status.code(),
            Some(1),
            "without {missing}: {}",
            done.stderr
        );
        assert_eq!(lines.len(), 1, "without {missing}: {}", done.stderr);
        assert!(
            lines[0].contains(&format!("CAP_{missing}")),
            "without {missing}: {}",
            lines[0]
        );
    }
}

const ID_A: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";
const ID_B: &str = "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecf";
const ID_C: &str = "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf";
const UID_A: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
const UID_B: &str = "6fa459ea-ee8a-3ca4-894e-db77e160355e";
const UID_C: &str = "9c5b94b1-35ad-49bb-b118-8e8fc24abf80";

/// A v1 hierarchy: the host's, or a named one the test mounts (and unmounts on drop).
struct V1Root {
    path: std::path::PathBuf,
    mounted: Option<tempfile::TempDir>,
}

impl V1Root {
    fn find() -> Option<V1Root> {
        if let (_, Some(path)) = cgroup_mounts() {
            return Some(V1Root {
                path,
                mounted: None,
            });
        }
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "cgroup", "-o", "none,name=timerwatch-e2e", "cgroup"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| V1Root {
            path: dir.path().to_path_buf(),
            mounted: Some(dir),
        })
    }
}

impl Drop for V1Root {
    fn drop(&mut self) {
        if let Some(dir) = &self.mounted {
            let _ = Command::new("umount").arg(dir.path()).status();
        }
    }
}

#[test]
fn processes_in_pod_cgroups_get_container_and_pod_labels() {
    let Some(_serial) = common::start() else {
        return;
    };
    let (Some(v2), _) = cgroup_mounts() else {
        panic!("no cgroup v2 hierarchy mounted");
    };
    let logs = tempfile::tempdir().expect("tempdir for kubelet logs");
    fake_kubelet_pod(logs.path(), "shop", "web-0", UID_A, "nginx", Some(ID_A));
    fake_kubelet_pod(logs.path(), "batch", "cron-1", UID_B, "worker", None);
    let base = format!("timerwatch-e2e-{}", std::process::id());

    // A: cgroup v2, containerd with the systemd driver; names from both kubelet directories.
    let a_cg = FakeCgroup::new(
        &v2,
        &format!(
            "{base}/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{ID_A}.scope",
            UID_A.replace('-', "_")
        ),
    );
    let a = Target::spawn("timerfd_leak", &["20"]);
    a_cg.add(a.pid());

    // B: cgroup v1, cgroupfs driver (bare ID directory); names from the pod directory alone.
    let v1 = V1Root::find();
    let b_cg = v1.as_ref().map(|root| {
        FakeCgroup::new(
            &root.path,
            &format!("{base}/kubepods/burstable/pod{UID_B}/{ID_B}"),
        )
    });
    let b = Target::spawn("timerfd_leak", &["20"]);
    match &b_cg {
        Some(cg) => cg.add(b.pid()),
        None if in_ci() => panic!("CI=true but no cgroup v1 hierarchy could be used"),
        None => eprintln!("note: no cgroup v1 hierarchy: the v1 case is left to the unit tests"),
    }

    // C: CRI-O scope, in its own cgroup and mount namespaces, no kubelet entry: IDs only.
    let c_cg = FakeCgroup::new(
        &v2,
        &format!(
            "{base}/kubepods.slice/kubepods-pod{}.slice/crio-{ID_C}.scope",
            UID_C.replace('-', "_")
        ),
    );
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec unshare --mount --cgroup --fork --kill-child -- {} 20",
        c_cg.leaf().display(),
        common::target_path("timerfd_leak").display()
    );
    let mut c_parent = Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .spawn()
        .expect("start sh");
    let mut c = None;
    wait_until(Duration::from_secs(5), || {
        c = child_of(c_parent.id());
        c.is_some()
    });
    let c = c.expect("the namespaced leak started");

    let logs_arg = format!("--kubelet-logs={}", logs.path().display());
    let daemon = Daemon::start(&[&logs_arg]);
    let filtered = Daemon::start(&[&logs_arg, "--namespace=shop", "--pod=web-0"]);

    let pids = [a.pid(), b.pid(), c];
    let found = daemon.wait_for(Duration::from_secs(20), |s| {
        let all: Option<Vec<Sample>> = pids
            .iter()
            .map(|&p| live_of(s, p, "leak_timerfd").cloned())
            .collect();
        all
    });
    let _ = c_parent.kill();
    let _ = c_parent.wait();
    let found = found.unwrap_or_else(|| {
        panic!(
            "not every pod process has a leak_timerfd series; metrics for them:\n{:#?}",
            daemon
                .metrics()
                .into_iter()
                .filter(|s| pids.iter().any(|p| s.label("pid") == p.to_string()))
                .collect::<Vec<_>>()
        )
    });
    let labels = |s: &Sample| {
        ["container_id", "pod_uid", "namespace", "pod", "container"].map(|k| s.label(k).to_string())
    };
    assert_eq!(
        labels(&found[0]),
        [ID_A, UID_A, "shop", "web-0", "nginx"].map(String::from),
        "{:?}",
        found[0]
    );
    if b_cg.is_some() {
        assert_eq!(
            labels(&found[1]),
            [ID_B, UID_B, "batch", "cron-1", "worker"].map(String::from),
            "{:?}",
            found[1]
        );
    }
    assert_eq!(
        labels(&found[2]),
        [ID_C, UID_C, "", "", ""].map(String::from),
        "{:?}",
        found[2]
    );

    // The pod filter keeps A and nothing else.
    let only = filtered
        .wait_for(Duration::from_secs(10), |s| {
            live_of(s, a.pid(), "leak_timerfd").map(|_| s.to_vec())
        })
        .expect("the filtered daemon exports the shop/web-0 process");
    let others: BTreeSet<&str> = only
        .iter()
        .filter(|s| s.name == "timerwatch_live_timers")
        .map(|s| s.label("pod"))
        .collect();
    assert_eq!(
        others,
        BTreeSet::from(["web-0"]),
        "filter leaked: {others:?}"
    );
    drop((a, b));
    // Newest first: C's directories sit inside ones A created.
    drop(c_cg);
    drop(b_cg);
    drop(v1);
    drop(a_cg);
    let leftover = v2.join(&base);
    assert!(!leftover.exists(), "{} left behind", leftover.display());
}

/// Where the validator `cargo xtask setup` installs (xtask/src/daemon_deps.rs; same version).
fn validator_dir() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
    let dir = base.join("timerwatch/kubernetes-validate-1.37.0");
    dir.join("kubernetes_validate").is_dir().then_some(dir)
}

fn kubernetes_validate(dir: &Path, version: &str, files: &[&Path]) -> (bool, String) {
    let out = Command::new("python3")
        .env("PYTHONPATH", dir)
        .args(["-m", "kubernetes_validate", "--strict", "-k", version])
        .args(files)
        .output()
        .expect("run python3 -m kubernetes_validate");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn manifests_validate_offline_against_the_kubernetes_schemas() {
    let Some(dir) = validator_dir() else {
        assert!(
            !in_ci(),
            "CI=true but kubernetes-validate is not installed (cargo xtask setup installs it)"
        );
        eprintln!("skipping: kubernetes-validate not installed (run cargo xtask setup)");
        return;
    };
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let files: Vec<std::path::PathBuf> = [
        "namespace.yaml",
        "daemonset.yaml",
        "service.yaml",
        "networkpolicy.yaml",
    ]
    .iter()
    .map(|f| deploy.join(f))
    .collect();
    let refs: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    // The oldest release with every field used here, and the newest the schemas cover.
    for version in ["1.29.0", "1.37.0"] {
        let (ok, out) = kubernetes_validate(&dir, version, &refs);
        assert!(ok, "manifests invalid for Kubernetes {version}:\n{out}");
        // Namespace, ServiceAccount, DaemonSet, Service, NetworkPolicy.
        assert_eq!(out.matches("passed").count(), 5, "{out}");
    }
    // The validator is not vacuous: a misspelt field fails.
    let tmp = tempfile::tempdir().expect("tempdir");
    let broken = tmp.path().join("daemonset.yaml");
    let text = std::fs::read_to_string(&files[1]).expect("read daemonset.yaml");
    std::fs::write(
        &broken,
        text.replace("readOnlyRootFilesystem:", "readOnlyRootFileSystem:"),
    )
    .expect("write the broken copy");
    let (ok, out) = kubernetes_validate(&dir, "1.37.0", &[&broken]);
    assert!(!ok, "a misspelt field passed validation:\n{out}");

    // Least privilege, as the issue spells it out.
    for needle in [
        "privileged: false",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "hostPID: true",
        "path: /sys/kernel/tracing",
        "path: /sys/kernel/btf",
        "path: /var/log/pods",
        "path: /var/log/containers",
    ] {
        assert!(text.contains(needle), "daemonset.yaml lacks {needle:?}");
    }
    let mounts = text.matches("mountPath:").count();
    assert_eq!(
        text.matches("readOnly: true").count(),
        mounts,
        "every host mount must be read-only"
    );
    let caps: BTreeSet<String> = manifest_capabilities().into_iter().collect();
    let want: BTreeSet<String> = [
        "BPF",
        "PERFMON",
        "SYS_PTRACE",
        "DAC_READ_SEARCH",
        "CHECKPOINT_RESTORE",
    ]
    .map(String::from)
    .into();
    assert_eq!(caps, want);
    let service = std::fs::read_to_string(&files[2]).expect("read service.yaml");
    assert!(service.contains("prometheus.io/scrape: \"true\""));
}

/// Seconds the memory soak runs: TIMERWATCH_SOAK_SECS, else 120 in CI and 60 elsewhere (600 for the figures in BENCHMARKS.md).
fn soak_secs() -> u64 {
    std::env::var("TIMERWATCH_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if in_ci() { 120 } else { 60 })
}

/// The daemon's resident memory may grow from the first third of the soak to the last by at
/// most 20% or 10 MiB, whichever is larger: start-up allocations and the one-minute dead-PID
/// memory settle in the first third; a leak proportional to processes seen (1000/s) would add
/// tens of MiB per third.
#[test]
fn memory_stays_bounded_under_a_fork_storm() {
    let Some(_serial) = common::start() else {
        return;
    };
    let secs = soak_secs().max(30);
    let rate: u32 = 1000;
    let tmp = tempfile::tempdir().expect("tempdir");
    let forker = build_forker(tmp.path());
    let daemon = Daemon::start(&[]);
    let daemon_pid = daemon.pid();
    let storm = Forker::start(&forker, rate);

    let start = Instant::now();
    let mut rss: Vec<u64> = Vec::new();
    let mut scrapes = 0;
    while start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(1));
        let kib = anon_rss_kib(daemon_pid)
            .unwrap_or_else(|| panic!("daemon gone; stderr:\n{}", daemon.tool.stderr()));
        rss.push(kib);
        if rss.len().is_multiple_of(5) {
            let (status, body) = daemon.get_patiently("/metrics");
            assert_eq!(status, 200, "{body}");
            scrapes += 1;
        }
    }
    let (forked, _) = storm.stop();
    let (status, health) = daemon.get_patiently("/healthz");
    let (_, metrics) = daemon.get_patiently("/metrics");
    let lost = common::daemon::parse_metrics(&metrics)
        .iter()
        .find(|s| s.name == "timerwatch_lost_events_total")
        .map_or(0.0, |s| s.value);

    let third = rss.len() / 3;
    let memory = RssWindows::of(&rss[..third], &rss[rss.len() - third..]);
    let (first, last, allowed) = (memory.first, memory.last, memory.allowed);
    eprintln!(
        "soak: {secs}s, {forked} processes forked ({:.0}/s), {scrapes} scrapes, {lost} lost events; \
         daemon RssAnon KiB: first third max {first}, last third max {last}, min {}, bound {allowed}",
        forked as f64 / secs as f64,
        rss.iter().min().unwrap()
    );
    assert_eq!(status, 200, "daemon unhealthy after the soak: {health}");
    memory.assert_flat_under_load(forked, rate, secs, &rss);
}
