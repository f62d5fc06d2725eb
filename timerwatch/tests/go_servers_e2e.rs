//! Go servers no one here wrote: Debian's Prometheus and node exporter (both stripped, built by
//! Debian's toolchain), started after an unfiltered daemon and kept busy (Prometheus scrapes
//! the exporter and itself every second, and this test queries both). The census must find
//! them, report their Go version, name their timers by package-qualified functions with an
//! attribution, and never call a steady-state server `growing`. Root only (BPF).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{free_port, http_get, Daemon};
use common::wait_until;
use serde_json::Value;

/// Long enough for every periodic timer of the servers (their slowest tickers are 10 s) to be
/// seen several times before verdicts count.
const WARM_UP: Duration = Duration::from_secs(20);
/// The steady state the verdicts are judged over.
const STEADY: Duration = Duration::from_secs(60);

/// The servers, their packages and how each is started on `addr`.
const EXPORTER: &str = "prometheus-node-exporter";
const PROMETHEUS: &str = "prometheus";

/// A server process killed on drop.
struct Server {
    child: Child,
    name: &'static str,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn start(name: &'static str, args: impl FnOnce(&Path, SocketAddr) -> Vec<String>) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::fs::File::create(dir.path().join("log")).expect("log file");
        let child = Command::new(name)
            .args(args(dir.path(), addr))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let s = Server {
            child,
            name,
            addr,
            _dir: dir,
        };
        let up = wait_until(Duration::from_secs(30), || {
            http_get(s.addr, "/metrics").is_ok_and(|(st, _)| st == 200)
        });
        let log = std::fs::read_to_string(s._dir.path().join("log")).unwrap_or_default();
        assert!(up, "{name} not serving on {addr}; log:\n{log}");
        s
    }
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether `name` is installed; missing is a failure in CI, a skip elsewhere.
fn installed(name: &str) -> bool {
    if which(name).is_some() {
        return true;
    }
    let why = format!("`{name}` is not installed (cargo xtask setup installs Debian's)");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true but {why}");
    }
    eprintln!("skipping the Go servers test: {why}");
    false
}

fn stripped(name: &str) -> bool {
    let path = which(name).expect("installed");
    let out = Command::new("file")
        .arg("-L")
        .arg(&path)
        .output()
        .expect("run file(1)");
    String::from_utf8_lossy(&out.stdout).contains(", stripped")
}

fn process(report: &Value, pid: u32) -> Option<&Value> {
    report["processes"]
        .as_array()?
        .iter()
        .find(|p| p["pid"] == pid)
}

fn go_callsites(p: &Value) -> Vec<&Value> {
    p["callsites"]
        .as_array()
        .map(|cs| cs.iter().filter(|c| c["source"] == "go").collect())
        .unwrap_or_default()
}

/// `net/http.(*Transport).dialConn`, `github.com/x/y.F`: a function qualified by an import
/// path (a `/` before the last `.`), not a bare kind like `<go_ticker every 5s>`.
fn package_qualified(caller: &str) -> bool {
    !caller.starts_with('<')
        && caller
            .rfind('.')
            .is_some_and(|dot| caller[..dot].contains('/'))
}

fn line(c: &Value) -> String {
    format!(
        "{} {} attribution={} live={} verdict={} duration_s={} period_s={}",
        c["caller"].as_str().unwrap_or("?"),
        c["kind"].as_str().unwrap_or("?"),
        c["attribution"].as_str().unwrap_or("-"),
        c["live"],
        c["verdict"].as_str().unwrap_or("?"),
        c["duration_s"],
        c["period_s"],
    )
}

#[test]
fn debian_go_servers_under_load_are_named_and_not_called_growing() {
    let Some(_serial) = common::start() else {
        return;
    };
    if !installed(EXPORTER) || !installed(PROMETHEUS) {
        return;
    }
    assert!(
        stripped(EXPORTER) || stripped(PROMETHEUS),
        "the issue wants at least one stripped server; file(1) says neither is"
    );
    let daemon = Daemon::start(&[]);
    // Started after the daemon: discovery, not start-up enumeration, must find them.
    let exporter = Server::start(EXPORTER, |_, addr| {
        vec![format!("--web.listen-address={addr}")]
    });
    let exporter_addr = exporter.addr;
    let prometheus = Server::start(PROMETHEUS, |dir, addr| {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['{exporter_addr}']\n\
                 \x20 - job_name: self\n    static_configs:\n      - targets: ['{addr}']\n"
            ),
        )
        .expect("write prometheus.yml");
        vec![
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address={addr}"),
        ]
    });
    let servers = [&exporter, &prometheus];

    // Load from outside as well: queries on Prometheus, scrapes of the exporter.
    let load = |until: Instant| {
        while Instant::now() < until {
            let _ = http_get(exporter.addr, "/metrics");
            let _ = http_get(
                prometheus.addr,
                "/api/v1/query?query=rate(node_cpu_seconds_total%5B10s%5D)",
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    load(Instant::now() + WARM_UP);

    let mut growing = Vec::new();
    let mut last = Value::Null;
    let mut reports = 0;
    let end = Instant::now() + STEADY;
    while Instant::now() < end {
        load(Instant::now() + Duration::from_secs(5));
        let (status, body) = daemon.get("/report");
        assert_eq!(status, 200, "/report answered {status}: {body}");
        let report: Value = serde_json::from_str(&body).expect("/report is JSON");
        for s in servers {
            let Some(p) = process(&report, s.pid()) else {
                continue;
            };
            for c in go_callsites(p) {
                if c["verdict"] == "growing" {
                    growing.push(format!("{}: {}", s.name, line(c)));
                }
            }
        }
        last = report;
        reports += 1;
    }
    assert!(reports >= 6, "only {reports} reports in {STEADY:?}");

    let mut seen = String::new();
    for s in servers {
        let p = process(&last, s.pid()).unwrap_or_else(|| {
            panic!(
                "{} (pid {}) missing from /report; daemon stderr:\n{}",
                s.name,
                s.pid(),
                daemon.tool.stderr()
            )
        });
        let version = p["go_version"].as_str().unwrap_or("");
        assert!(
            version.starts_with("go1."),
            "{}: no go_version in {p}",
            s.name
        );
        seen += &format!("{} pid {} {version}\n", s.name, s.pid());
        for c in go_callsites(p) {
            seen += &format!("  {}\n", line(c));
        }
    }
    eprintln!("what the census saw:\n{seen}");
    assert!(
        growing.is_empty(),
        "steady-state servers called growing:\n{}\nlast report:\n{seen}",
        growing.join("\n")
    );
    // Prometheus keeps tickers and HTTP keep-alive timers pending at every instant; the
    // exporter may hold none between scrapes, so only Prometheus must show named callsites.
    let p = process(&last, prometheus.pid()).expect("checked above");
    let named: Vec<&Value> = go_callsites(p)
        .into_iter()
        .filter(|c| c["caller"].as_str().is_some_and(package_qualified))
        .collect();
    assert!(
        !named.is_empty(),
        "Prometheus has no Go callsite named by a package-qualified function:\n{seen}"
    );
    for c in &named {
        assert!(
            matches!(
                c["attribution"].as_str(),
                Some("waiter" | "callback" | "creation_stack" | "signature")
            ),
            "no attribution on {}",
            line(c)
        );
    }
    assert!(
        named.iter().any(|c| c["attribution"] == "waiter")
            && named.iter().any(|c| c["attribution"] == "callback"),
        "Prometheus's tickers (a goroutine waits on each) and keep-alive AfterFuncs should be \
         named by waiter and by callback:\n{seen}"
    );
}

#[test]
fn package_qualified_names_have_an_import_path() {
    assert!(package_qualified(
        "net/http.(*persistConn).closeConnIfStillIdle"
    ));
    assert!(package_qualified(
        "github.com/prometheus/prometheus/scrape.(*scrapeLoop).run"
    ));
    assert!(!package_qualified("main.leak"));
    assert!(!package_qualified("<go_ticker every 5s>"));
    assert!(!package_qualified("runtime.futex"));
}
