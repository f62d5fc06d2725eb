//! The node agent's image end to end: built from this checkout by `cargo xtask image`, run by
//! podman with the command deploy/README.md gives as the DaemonSet's equivalent (capabilities,
//! host PID namespace, read-only root and mounts, the shipped seccomp profile, the memory
//! limit), tracing a C leak and a Go leak each in its own container, scraped by a real
//! Prometheus. Then the same command under the runtime's default seccomp profile, and without
//! each capability in turn: exit 1 and one line naming the cause. Root, BPF, podman, buildah and
//! runc needed; with CI=true their absence fails the test.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{free_port, manifest_capabilities, Prometheus};
use common::Tool;

const SECCOMP_PROFILE: &str = "deploy/seccomp-timerwatch.json";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the workspace root")
}

fn tools_present() -> bool {
    let missing: Vec<&str> = ["podman", "buildah", "runc", "gcc"]
        .into_iter()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!("{missing:?} not installed (cargo xtask setup installs them)");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true but the image test cannot run: {why}");
    }
    eprintln!("skipping the image test: {why}");
    false
}

/// Runs a command to success and returns its stdout.
fn output(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Limits within the hard ones: root here cannot raise rlimits, and podman's defaults would
/// try to. `cap` stays below them: runc refused nproc at exactly the hard limit here.
fn ulimit(resource: libc::__rlimit_resource_t, name: &str, cap: u64) -> String {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct.
    assert_eq!(unsafe { libc::getrlimit(resource, &mut lim) }, 0);
    let max = lim.rlim_max.min(cap);
    format!("--ulimit={name}={max}:{max}")
}

/// `podman --runtime runc --cgroup-manager cgroupfs`: this host's cgroups are hybrid, which
/// crun (podman's default runtime) refuses.
fn podman() -> Command {
    let mut cmd = Command::new("podman");
    cmd.args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"]);
    cmd
}

/// What the test created, removed on drop whatever happens.
#[derive(Default)]
struct Cleanup {
    containers: Vec<String>,
    images: Vec<String>,
    dirs: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = podman().args(["rm", "-f", "-t", "0", c]).output();
        }
        for i in &self.images {
            let _ = Command::new("buildah").args(["rmi", "-f", i]).output();
        }
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// `cargo xtask image` from this checkout; returns the image reference it printed.
fn build_agent_image() -> String {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = output(
        Command::new(cargo)
            .current_dir(root())
            .args(["run", "--quiet", "--package", "xtask", "--", "image"])
            .stderr(std::process::Stdio::inherit()),
    );
    let reference = out.lines().last().unwrap_or_default().to_string();
    assert!(
        reference.starts_with("localhost/timerwatch:"),
        "cargo xtask image printed {out:?}"
    );
    reference
}

/// A `FROM scratch` image holding only the static `binary` as /leak.
fn leak_image(binary: &Path, name: &str, args: &[&str], cleanup: &mut Cleanup) -> String {
    let reference = format!("localhost/timerwatch-e2e-{name}:{}", std::process::id());
    let ctr = output(Command::new("buildah").args(["from", "scratch"]));
    output(
        Command::new("buildah")
            .args(["copy", "--chmod", "0755", &ctr])
            .arg(binary)
            .arg("/leak"),
    );
    let mut entry = vec!["\"/leak\"".to_string()];
    entry.extend(args.iter().map(|a| format!("\"{a}\"")));
    output(Command::new("buildah").args([
        "config",
        "--entrypoint",
        &format!("[{}]", entry.join(",")),
        &ctr,
    ]));
    output(Command::new("buildah").args(["commit", "--rm", &ctr, &reference]));
    cleanup.images.push(reference.clone());
    reference
}

/// Starts a leak container; returns its full id.
fn run_leak(image: &str, name: &str, cleanup: &mut Cleanup) -> String {
    let name = format!("timerwatch-e2e-{name}-{}", std::process::id());
    cleanup.containers.push(name.clone());
    output(podman().args([
        "run",
        "-d",
        "--name",
        &name,
        &ulimit(libc::RLIMIT_NOFILE, "nofile", 16384),
        &ulimit(libc::RLIMIT_NPROC, "nproc", 4096),
        image,
    ]))
}

/// The podman command of deploy/README.md (between the `podman-equivalent` markers), as words.
fn readme_command() -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("deploy/README.md")).expect("read README");
    let block = readme
        .split("<!-- podman-equivalent -->")
        .nth(1)
        .expect("a podman-equivalent block in deploy/README.md");
    let body = block
        .lines()
        .skip_while(|l| !l.starts_with("```"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    body.split_whitespace().map(str::to_string).collect()
}

/// The README's command for `image`, adapted to the test: its own container name and port, the
/// host's rlimits, the seccomp profile's path in this checkout, `caps` instead of the manifest's
/// list, optionally without the seccomp option, and `extra` daemon arguments.
fn agent_command(
    image: &str,
    port: u16,
    name: &str,
    caps: &[String],
    shipped_seccomp: bool,
    extra: &[&str],
) -> Command {
    let words = readme_command();
    assert_eq!(words[0], "podman", "{words:?}");
    let run = words.iter().position(|w| w == "run").expect("podman run");
    let mut cmd = Command::new("podman");
    cmd.args(&words[1..run + 1]);
    cmd.args(["--name", name]);
    cmd.arg(ulimit(libc::RLIMIT_NOFILE, "nofile", 16384));
    cmd.arg(ulimit(libc::RLIMIT_NPROC, "nproc", 4096));
    let mut saw_image = false;
    for w in &words[run + 1..] {
        if let Some(list) = w.strip_prefix("--cap-add=") {
            assert_eq!(
                list.split(',').collect::<Vec<_>>(),
                manifest_capabilities(),
                "the README's --cap-add is not the DaemonSet's list"
            );
            cmd.arg(format!("--cap-add={}", caps.join(",")));
        } else if let Some(profile) = w.strip_prefix("--security-opt=seccomp=") {
            assert_eq!(profile, SECCOMP_PROFILE, "{words:?}");
            if shipped_seccomp {
                cmd.arg(format!(
                    "--security-opt=seccomp={}",
                    root().join(profile).display()
                ));
            }
        } else if w.starts_with("localhost/timerwatch:") {
            cmd.arg(image);
            saw_image = true;
        } else if w.starts_with("--interval=") && extra.iter().any(|e| e.starts_with("--interval="))
        {
            // The test's own interval, given in `extra`.
        } else if w.starts_with("--listen=") {
            cmd.arg(format!("--listen=127.0.0.1:{port}"));
        } else {
            cmd.arg(w);
        }
    }
    assert!(saw_image, "no localhost/timerwatch image in {words:?}");
    cmd.args(extra);
    cmd
}

/// The value of `promql`'s single series, once it exists.
fn wait_series(
    prometheus: &Prometheus,
    promql: &str,
    timeout: Duration,
) -> Option<serde_json::Value> {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if let Some(s) = prometheus.vector(promql).into_iter().next() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    None
}

/// Runs the agent expecting a start-up failure; returns its stderr lines.
fn failing_start(cmd: &mut Command, what: &str) -> Vec<String> {
    let done = Tool::spawn_command(cmd).finish(Duration::from_secs(60));
    assert_eq!(done.status.code(), Some(1), "{what}: {}", done.stderr);
    let lines: Vec<String> = done.stderr.lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 1, "{what}: not one line:\n{}", done.stderr);
    lines
}

#[test]
fn the_image_runs_under_the_daemonset_restrictions_and_names_what_is_missing() {
    let Some(_serial) = common::start() else {
        return;
    };
    if !tools_present() {
        return;
    }
    let started = Instant::now();
    let mut cleanup = Cleanup::default();
    let image = build_agent_image();
    cleanup.images.push(image.clone());
    eprintln!("image built in {:?}", started.elapsed());

    // The DaemonSet's hostPath volumes must exist (type: Directory).
    for dir in ["/var/log/pods", "/var/log/containers"] {
        if !Path::new(dir).exists() {
            std::fs::create_dir(dir).expect("create a kubelet log directory");
            cleanup.dirs.push(dir.into());
        }
    }

    // The leaks: static binaries, each the only file of its own image and container.
    let scratch = tempfile::tempdir().expect("tempdir");
    let c_leak = scratch.path().join("timerfd_leak");
    let gcc = Command::new("gcc")
        .args(["-static", "-O2", "-g", "-fno-omit-frame-pointer"])
        .arg("-fno-optimize-sibling-calls")
        .arg("-o")
        .arg(&c_leak)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/targets/timerfd_leak.c"))
        .output()
        .expect("run gcc");
    assert!(
        gcc.status.success(),
        "{}",
        String::from_utf8_lossy(&gcc.stderr)
    );
    let toolchain = common::go::toolchains()
        .pop()
        .expect("no Go toolchain (cargo xtask setup installs them)");
    // CGO_ENABLED=0: a static Go binary.
    let go_leak = common::go::build(&toolchain, "afterfunc_leak", false);
    let c_image = leak_image(&c_leak, "c-leak", &["20"], &mut cleanup);
    let go_image = leak_image(&go_leak, "go-leak", &[], &mut cleanup);
    let c_id = run_leak(&c_image, "c-leak", &mut cleanup);
    let go_id = run_leak(&go_image, "go-leak", &mut cleanup);

    // The agent, exactly as deploy/README.md runs it.
    let caps = manifest_capabilities();
    let port = free_port();
    let name = format!("timerwatch-e2e-agent-{}", std::process::id());
    cleanup.containers.push(name.clone());
    let mut agent = Tool::spawn_command(&mut agent_command(
        &image,
        port,
        &name,
        &caps,
        true,
        // Both leaks run as /leak (the daemon census finds Go processes without --comm too).
        &["--interval=1", "--comm=leak"],
    ));
    agent.wait_attached();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let prometheus = Prometheus::start(addr);
    let c_series = format!(
        "timerwatch_live_timers{{comm=\"leak\",source=\"kernel\",caller=\"leak_timerfd\",container_id=\"{c_id}\"}} > 100"
    );
    let go_series = format!(
        "timerwatch_live_timers{{source=\"go\",caller=\"main.leakAfterFunc\",container_id=\"{go_id}\"}} > 0"
    );
    // A static C binary carries its libc: its wrapper (`__timerfd_settime`) is known by its
    // reserved name, and the leak's own function is recovered as the caller.
    let c_found = wait_series(&prometheus, &c_series, Duration::from_secs(60));
    assert!(
        c_found.is_some(),
        "no C leak series {c_series} in Prometheus; live series: {:?}\nagent stderr:\n{}",
        prometheus.vector("timerwatch_live_timers > 10"),
        agent.stderr()
    );
    let (status, report) =
        common::daemon::http_get(SocketAddr::from(([127, 0, 0, 1], port)), "/report")
            .expect("GET /report");
    assert_eq!(status, 200, "{report}");
    assert!(
        report.contains("timerfd_leak.c:"),
        "the C leak's source is in no frame of /report: {report}"
    );
    // Checked after the start-up cases below, so that they run whatever this says.
    let go_found = wait_series(&prometheus, &go_series, Duration::from_secs(30));
    let go_failure = format!(
        "no Go leak series {go_series} in Prometheus; live series: {:?}\nagent stderr:\n{}",
        prometheus.vector("timerwatch_live_timers > 10"),
        agent.stderr()
    );
    let inspect = output(podman().args([
        "inspect",
        "--format",
        "{{.HostConfig.Memory}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.PidMode}}",
        &name,
    ]));
    assert_eq!(
        inspect,
        format!("{} true host", 256 << 20),
        "agent container settings"
    );
    drop(prometheus);
    let _ = podman().args(["stop", "-t", "5", &name]).output();
    let done = agent.finish(Duration::from_secs(30));
    done.assert_no_panic();
    let _ = podman().args(["rm", "-f", &name]).output();

    // The runtime's default seccomp profile: one line naming seccomp and the profile.
    let lines = failing_start(
        &mut agent_command(&image, free_port(), &name, &caps, false, &[]),
        "default seccomp profile",
    );
    assert!(
        lines[0].contains("seccomp") && lines[0].contains(SECCOMP_PROFILE),
        "{}",
        lines[0]
    );
    let _ = podman().args(["rm", "-f", &name]).output();

    // Each capability of the manifest is needed, and named when missing.
    for missing in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let lines = failing_start(
            &mut agent_command(&image, free_port(), &name, &fewer, true, &[]),
            &format!("without {missing}"),
        );
        assert!(
            lines[0].contains(&format!("CAP_{missing}")),
            "without {missing}: {}",
            lines[0]
        );
        let _ = podman().args(["rm", "-f", &name]).output();
    }

    // A memory limit below what the maps and ring buffer need.
    let small = agent_command(&image, free_port(), &name, &caps, true, &[]);
    let args: Vec<String> = small
        .get_args()
        .map(|a| {
            let a = a.to_string_lossy().into_owned();
            if a.starts_with("--memory=") {
                "--memory=64m".to_string()
            } else {
                a
            }
        })
        .collect();
    let lines = failing_start(Command::new("podman").args(&args), "--memory=64m");
    assert!(lines[0].contains("memory limit is 64 MiB"), "{}", lines[0]);
    eprintln!("image test took {:?}", started.elapsed());
    // The daemon's census reads the Go container's heaps with no uprobe (which the agent's
    // container may not place on another container's binary).
    assert!(go_found.is_some(), "{go_failure}");
}
