//! `cargo xtask bench`: what timerwatch costs, against doing nothing, against the cheapest BPF
//! program on the same tracepoints ("the floor") and against bpftrace doing the same job.
//!
//! VMs are noisy and this machine is shared, so every figure is a ratio or difference taken
//! within one run, with the columns of a table interleaved round by round, and reported as
//! median (min–max). Results go to stdout as Markdown and into BENCHMARKS.md.

mod cost;
mod e2e;
mod go_census;
mod json;
mod memory;
mod node_agent;
mod proc;
mod report;
mod stats;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use json::Fields;
use xtask::util::{self, cargo, is_root, target_dir, workspace_root};

/// Loading timerwatch's ~19 programs takes well under a second on an idle machine; a parallel
/// build can stretch that a lot.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(clap::Args)]
pub struct Args {
    /// Fewer rounds and shorter runs: finishes in under 3 minutes.
    #[arg(long)]
    quick: bool,
    /// Rounds per figure (default 3 with --quick, 7 otherwise).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=50))]
    rounds: Option<u32>,
    /// Print the results without rewriting BENCHMARKS.md.
    #[arg(long)]
    no_write: bool,
    /// Run only these sections (repeatable; implies --no-write, as the results are partial).
    #[arg(long, value_enum, value_name = "SECTION")]
    only: Vec<Section>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Section {
    /// Added cost per event: timerfd loop and pipe ping-pong.
    Cost,
    /// End-to-end rate and loss.
    E2e,
    /// Memory per live timer.
    Memory,
    /// Start to first report.
    Startup,
    /// Decode + aggregate in userspace.
    Decode,
    /// Go census mode: the Go worst case under the daemon, its CPU per Go process.
    GoCensus,
    /// The daemon's own CPU and memory beside a realistic node load.
    NodeAgent,
}

pub struct Plan {
    pub rounds: usize,
    /// Wall time of each workload run.
    pub loop_seconds: f64,
    pub e2e_copies: Vec<usize>,
    pub e2e_small_ring_copies: Vec<usize>,
    pub e2e_rounds: usize,
    pub memory_rounds: usize,
    /// Rounds of the same with glibc's mmap threshold fixed (a diagnosis, not a goal).
    pub memory_fixed_rounds: usize,
    pub live_timers: usize,
    pub startup_rounds: usize,
    pub decode_rounds: usize,
    pub decode_seconds: f64,
    /// Total time the run may spend waiting for others' BPF tracers to detach.
    pub quiet_budget: Duration,
    /// Add a floor of programs returning 0 next to bpftrace's (which return 1).
    pub floor_cross_check: bool,
    /// Rounds of per-program profiling (bpf_stats) per cost suite.
    pub profile_rounds: usize,
}

impl Plan {
    fn new(args: &Args) -> Self {
        let rounds = args.rounds.map(|r| r as usize);
        if args.quick {
            let r = rounds.unwrap_or(3);
            Self {
                rounds: r,
                loop_seconds: 0.7,
                e2e_copies: vec![1, 2, 4],
                e2e_small_ring_copies: vec![1],
                e2e_rounds: r.min(2),
                memory_rounds: r.min(2),
                memory_fixed_rounds: 1,
                live_timers: 100_000,
                startup_rounds: r,
                decode_rounds: r,
                decode_seconds: 0.3,
                quiet_budget: Duration::from_secs(5),
                floor_cross_check: false,
                profile_rounds: 1,
            }
        } else {
            let r = rounds.unwrap_or(7);
            Self {
                rounds: r,
                loop_seconds: 2.0,
                e2e_copies: vec![1, 2, 4, 8],
                e2e_small_ring_copies: vec![1, 2],
                e2e_rounds: r.min(3),
                memory_rounds: r.min(3),
                memory_fixed_rounds: r.min(3),
                live_timers: 100_000,
                startup_rounds: r,
                decode_rounds: r,
                decode_seconds: 1.0,
                quiet_budget: Duration::from_secs(90),
                floor_cross_check: true,
                profile_rounds: r.min(3),
            }
        }
    }
}

/// What else was happening: the bench shares a 2-core VM with other people's builds and tests.
#[derive(Default)]
pub struct Conditions {
    /// CPU time / wall time of every measured workload run.
    pub cpu_shares: Vec<f64>,
    /// Times (around each measured run) we looked for BPF tracing programs that were not ours.
    pub checks: usize,
    pub foreign_at: usize,
    /// Program names seen (type:name) and how many checks saw them.
    pub foreign: BTreeMap<String, usize>,
    pub load_start: String,
    pub load_end: String,
    /// Seconds spent waiting for others' tracers to go away before rounds.
    pub waited: f64,
}

pub struct Env {
    pub plan: Plan,
    pub cpus: usize,
    pub timerwatch: PathBuf,
    pub decode_bench: PathBuf,
    /// Compiled C and Go targets.
    pub targets: PathBuf,
    /// bench/: C sources and bpftrace scripts.
    pub scripts: PathBuf,
    /// The Go toolchain version the Go workload is built with.
    pub go_version: &'static str,
    /// Where timerwatch puts its uprobes in the Go workload (file offsets), once measured.
    pub go_uprobe_offsets: Vec<u64>,
    pub conditions: Conditions,
    started: Instant,
}

/// A loaded BPF program: (id, type, name).
type Program = (u32, String, String);

fn loaded_programs() -> Result<Vec<Program>> {
    let out = util::output(Command::new("bpftool").args(["-j", "prog", "show"]))?;
    let list = json::parse(out.trim()).context("parsing `bpftool -j prog show`")?;
    Ok(list
        .items()
        .iter()
        .filter_map(|p| {
            Some((
                p.num("id")? as u32,
                p.str("type").unwrap_or("?").to_string(),
                p.str("name").unwrap_or("").to_string(),
            ))
        })
        .collect())
}

/// Program types that run on tracing hooks and so would slow the workloads down.
fn is_tracing(kind: &str) -> bool {
    matches!(
        kind,
        "tracepoint"
            | "raw_tracepoint"
            | "raw_tracepoint_writable"
            | "kprobe"
            | "perf_event"
            | "tracing"
    )
}

impl Env {
    pub fn target(&self, name: &str) -> PathBuf {
        self.targets.join(name)
    }

    pub fn progress(&self, msg: &str) {
        eprintln!(
            "bench [{:>4.0}s] {msg}",
            self.started.elapsed().as_secs_f64()
        );
    }

    /// Called before each tool starts and after it is gone, when none of ours is loaded: any
    /// tracing program then belongs to someone else and taxes the workload. True if any.
    pub fn note_foreign_bpf(&mut self) -> Result<bool> {
        let foreign: Vec<String> = loaded_programs()?
            .into_iter()
            .filter(|(_, kind, _)| is_tracing(kind))
            .map(|(_, kind, name)| format!("{kind}:{name}"))
            .collect();
        self.conditions.checks += 1;
        if foreign.is_empty() {
            return Ok(false);
        }
        self.conditions.foreign_at += 1;
        for name in foreign {
            *self.conditions.foreign.entry(name).or_default() += 1;
        }
        Ok(true)
    }

    /// Before a round: if someone else's BPF tracers are attached (a test run, a daemon), waits
    /// for them to go, within what is left of the run's budget. Their probes fire on the same
    /// tracepoints as the workloads and skew every column.
    pub fn wait_quiet(&mut self) -> Result<()> {
        let spent = Duration::from_secs_f64(self.conditions.waited);
        let Some(left) = self.plan.quiet_budget.checked_sub(spent) else {
            return Ok(());
        };
        let start = Instant::now();
        let mut told = false;
        while loaded_programs()?
            .iter()
            .any(|(_, kind, _)| is_tracing(kind))
        {
            if start.elapsed() >= left {
                break;
            }
            if !told {
                self.progress("waiting for someone else's BPF tracing programs to detach");
                told = true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.conditions.waited += start.elapsed().as_secs_f64();
        Ok(())
    }

    /// Waits until none of `ids` is loaded: our tracers exited, so the kernel must drop their
    /// programs; one still there means something leaked.
    pub fn wait_unloaded(&self, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let loaded: Vec<u32> = loaded_programs()?
                .into_iter()
                .map(|(id, _, _)| id)
                .filter(|id| ids.contains(id))
                .collect();
            if loaded.is_empty() {
                return Ok(());
            }
            if Instant::now() >= end {
                bail!("BPF programs {loaded:?} are still loaded 5 s after their tracer exited");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[derive(Clone, Debug)]
pub struct DecodeRun {
    /// Steady state: a StackEvent per new timer, the rest small records.
    pub steady: f64,
    /// Every Start carries a stack (timerfd re-arms on 6.15+ kernels).
    pub stacks: f64,
}

fn decode_rate(env: &Env, extra: &[&str]) -> Result<f64> {
    let out = util::output(
        Command::new(&env.decode_bench)
            .arg("--seconds")
            .arg(env.plan.decode_seconds.to_string())
            .args(extra),
    )?;
    let words: Vec<&str> = out.split_whitespace().collect();
    words
        .iter()
        .position(|w| *w == "rate")
        .and_then(|i| words.get(i + 1)?.parse().ok())
        .with_context(|| format!("decode_bench printed no rate: {out:?}"))
}

fn decode(env: &Env) -> Result<Vec<DecodeRun>> {
    (0..env.plan.decode_rounds)
        .map(|round| {
            env.progress(&format!(
                "decode + aggregate: round {}/{}",
                round + 1,
                env.plan.decode_rounds
            ));
            Ok(DecodeRun {
                steady: decode_rate(env, &[])?,
                stacks: decode_rate(env, &["--stack-every-start"])?,
            })
        })
        .collect()
}

pub struct Machine {
    pub command: String,
    pub date: String,
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".to_string(), |(_, m)| m.trim().to_string());
    let date = util::output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
        .map(|d| d.trim().to_string())
        .unwrap_or_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    Machine {
        command: format!("cargo xtask {}", args.join(" ")),
        date,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| k.trim().to_string())
            .unwrap_or_default(),
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

/// Builds the C targets with frame pointers, so bpftrace's `ustack` and timerwatch's stack
/// see the same callsite frames, and the re-arm loop once more without them.
fn build_targets(src: &Path, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for name in [
        "rearm",
        "pingpong",
        "many_timers",
        "empty_probes",
        "node_load",
        "node_client",
    ] {
        util::run(
            Command::new("gcc")
                .args([
                    "-O2",
                    "-g",
                    "-Wall",
                    "-fno-omit-frame-pointer",
                    "-fno-optimize-sibling-calls",
                    "-o",
                ])
                .arg(out.join(name))
                .arg(src.join(format!("{name}.c"))),
        )?;
    }
    // The same re-arm loop as distributions build: frame pointers omitted, so the user stack
    // and the re-arm fingerprint cannot follow rbp.
    util::run(
        Command::new("gcc")
            .args(["-O2", "-g", "-Wall", "-o"])
            .arg(out.join(cost::PLAIN_REARM))
            .arg(src.join("rearm.c")),
    )?;
    Ok(())
}

/// Builds bench/afterfunc/ with the newest Go toolchain `cargo xtask setup` installed (1.23+:
/// the runtime timer functions the Go suite counts), with a go.mod of that version.
fn build_go_target(src: &Path, out: &Path) -> Result<&'static str> {
    let Some((goroot, version)) = xtask::go_toolchains::newest() else {
        bail!("no Go toolchain for the Go workload; `cargo xtask setup` installs them");
    };
    let minor = version.split('.').nth(1).unwrap_or("0");
    let dir = out.join("afterfunc-src");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::copy(src.join("afterfunc/main.go"), dir.join("main.go"))
        .context("copying bench/afterfunc/main.go")?;
    std::fs::write(
        dir.join("go.mod"),
        format!("module timerwatch.bench/afterfunc\n\ngo 1.{minor}\n"),
    )
    .context("writing the Go workload's go.mod")?;
    util::run(
        Command::new(goroot.join("bin/go"))
            .current_dir(&dir)
            .args(["build", "-o"])
            .arg(out.join(cost::GO_TARGET))
            .arg(".")
            .env("GOROOT", &goroot)
            // Exactly this toolchain, never a download for the go line.
            .env("GOTOOLCHAIN", "local")
            .env("CGO_ENABLED", "0")
            .env("GOFLAGS", "")
            .env("GOCACHE", out.join("go-cache"))
            .env("GOPATH", out.join("go-path")),
    )?;
    Ok(version)
}

pub struct Results {
    pub machine: Machine,
    pub suites: Vec<(cost::Suite, cost::SuiteResult)>,
    pub e2e: Vec<e2e::E2eRun>,
    pub memory: Vec<memory::MemoryRun>,
    pub startup: Vec<memory::StartupRun>,
    pub decode: Vec<DecodeRun>,
    pub took: Duration,
}

#[derive(clap::Parser)]
#[command(
    name = "timerwatch-bench",
    bin_name = "cargo xtask bench",
    about = "Measure timerwatch's costs against no tracing, empty BPF programs and bpftrace (root only)"
)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

fn main() -> std::process::ExitCode {
    let cli = <Cli as clap::Parser>::parse();
    match run(&cli.args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

pub fn run(args: &Args) -> Result<()> {
    if !is_root() {
        bail!("cargo xtask bench needs root (it loads BPF programs and raises RLIMIT_NOFILE); run it as root");
    }
    for tool in ["bpftrace", "bpftool", "gcc"] {
        if util::which(tool).is_none() {
            bail!("`{tool}` is not installed; `cargo xtask setup` installs it");
        }
    }
    let plan = Plan::new(args);
    let started = Instant::now();
    util::run(cargo().args([
        "build",
        "--release",
        "-p",
        "timerwatch",
        "--bin",
        "timerwatch",
        "--example",
        "decode_bench",
    ]))?;
    let root = workspace_root();
    let release = target_dir().join("release");
    let targets = target_dir().join("bench");
    build_targets(&root.join("bench"), &targets)?;
    let go_version = build_go_target(&root.join("bench"), &targets)?;

    let mut env = Env {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        plan,
        timerwatch: release.join("timerwatch"),
        decode_bench: release.join("examples").join("decode_bench"),
        targets,
        scripts: root.join("bench"),
        go_version,
        go_uprobe_offsets: Vec::new(),
        conditions: Conditions {
            load_start: load_average(),
            ..Conditions::default()
        },
        started,
    };

    let want = |s: Section| args.only.is_empty() || args.only.contains(&s);
    let mut suites = Vec::new();
    if want(Section::Cost) {
        for suite in cost::suites(&env) {
            let result = cost::run_suite(&mut env, &suite)?;
            suites.push((suite, result));
        }
    }
    let mut e2e = Vec::new();
    if want(Section::E2e) {
        let events_per_iteration = match suites.first() {
            Some((_, r)) => r.events_per_unit,
            None => cost::events_per_unit(&env, &cost::suites(&env)[0].workload)?.0,
        };
        e2e = e2e::run(&mut env, events_per_iteration)?;
    }
    let memory = if want(Section::Memory) {
        memory::memory(&mut env)?
    } else {
        Vec::new()
    };
    let startup = if want(Section::Startup) {
        memory::startup(&mut env)?
    } else {
        Vec::new()
    };
    let decode = if want(Section::Decode) {
        decode(&env)?
    } else {
        Vec::new()
    };
    let go_census = if want(Section::GoCensus) {
        Some(go_census::run(&mut env, args.quick)?)
    } else {
        None
    };
    let node_agent = if want(Section::NodeAgent) {
        Some(node_agent::run(&mut env, args.quick)?)
    } else {
        None
    };
    env.conditions.load_end = load_average();

    let results = Results {
        machine: machine(),
        suites,
        e2e,
        memory,
        startup,
        decode,
        took: started.elapsed(),
    };
    let mut markdown = report::render(&results, &env);
    if let Some(g) = &go_census {
        go_census::render(&mut markdown, g);
    }
    if let Some(n) = &node_agent {
        node_agent::render(&mut markdown, n);
    }
    println!("{markdown}");
    if !args.no_write && args.only.is_empty() {
        let path = root.join("BENCHMARKS.md");
        report::write(&path, &markdown)?;
        env.progress(&format!("wrote {}", path.display()));
    }
    Ok(())
}
