//! Added cost per traced event: one workload, several tracers ("columns"), interleaved within
//! every round (A B C D, A B C D, …) so that a build starting on this shared machine slows all
//! columns alike instead of whichever happened to run then.
//!
//! A suite is data: a workload (a C or Go target under bench/ that reports its own rate) and
//! columns.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::json::{self, Fields, Json};
use super::proc::{expect_line, expect_stderr, Proc, SIGINT};
use super::stats::Summary;
use super::{Env, ATTACH_TIMEOUT};

pub struct Workload {
    pub name: &'static str,
    /// Executable built into the bench's target directory (also its command name); called as
    /// `TARGET SECONDS ARGS…`.
    pub target: &'static str,
    /// Where it is built from, relative to the workspace.
    pub source: &'static str,
    pub args: Vec<String>,
    /// What one reported iteration is.
    pub unit: &'static str,
    /// The probes whose events the measured tracers handle, counted per iteration in the same
    /// run (never assumed).
    pub events: &'static [Probe],
}

impl Workload {
    /// Starts the workload for `seconds` of its loop and waits for its "ready".
    fn spawn(&self, env: &Env, seconds: f64) -> Result<Proc> {
        Proc::spawn_workload(
            self.target,
            Command::new(env.target(self.target))
                .arg(seconds.to_string())
                .args(&self.args),
        )
    }
}

/// One probe point of a workload.
pub struct Probe {
    /// As bpftrace writes it; `{{target}}` stands for the workload's executable.
    pub bpftrace: &'static str,
    /// Tracepoint (`timer:hrtimer_start`) or function name.
    pub name: &'static str,
}

const fn tracepoint(bpftrace: &'static str) -> Probe {
    Probe {
        bpftrace,
        // Past "tracepoint:".
        name: bpftrace.split_at(11).1,
    }
}

pub enum Tool {
    Nothing,
    /// A script under bench/, given the workload's PID as `$1` if it takes one; ready once it
    /// prints "up" (from BEGIN, which bpftrace runs after attaching every probe). `{{target}}`
    /// in it stands for the workload's executable (uprobes need its path).
    Bpftrace {
        script: &'static str,
        pid_arg: bool,
    },
    /// `timerwatch snapshot -p PID --json` plus these arguments.
    Timerwatch {
        args: &'static [&'static str],
    },
    /// `bench/empty_probes.c`: `r0 = 0; exit` programs.
    EmptyProbes(Empty),
}

pub enum Empty {
    /// On these tracepoints.
    Tracepoints(&'static [&'static str]),
    /// On the uprobes timerwatch attaches to the workload's Go runtime, at the same file
    /// offsets (from `timerwatch go-probes --json`), for the workload's process only, as timerwatch's.
    TimerwatchGoUprobes,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    Baseline,
    Floor,
    /// A cross-check of the floor with programs that return 0, as timerwatch's do.
    FloorReturn0,
    /// Empty programs attached as raw tracepoints: the floor of timerwatch's default (tp_btf)
    /// attach path, where no perf trace record is filled per event.
    FloorRaw,
    Timerwatch,
    TimerwatchNoWakeups,
    /// timerwatch with other options, shown for comparison.
    TimerwatchVariant,
    Bpftrace,
}

pub struct Column {
    pub role: Role,
    pub label: &'static str,
    pub tool: Tool,
}

pub struct Suite {
    pub kind: Kind,
    pub title: &'static str,
    pub workload: Workload,
    pub columns: Vec<Column>,
}

/// Which part of BENCHMARKS.md a suite is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    KernelTimers,
    /// The same workload built with plain `-O2` (no frame pointers), as distributions build.
    KernelTimersPlain,
    Sched,
    GoTimers,
}

const TIMER_TRACEPOINTS: &[&str] = &[
    "timer:hrtimer_setup",
    "timer:hrtimer_cancel",
    "timer:hrtimer_start",
    "timer:hrtimer_expire_entry",
];

/// The same, attached as raw tracepoints (`empty_probes raw:NAME`).
const RAW_TIMER_TRACEPOINTS: &[&str] = &[
    "raw:hrtimer_setup",
    "raw:hrtimer_cancel",
    "raw:hrtimer_start",
    "raw:hrtimer_expire_entry",
];

const RAW_SCHED_TRACEPOINTS: &[&str] = &["raw:sched_waking", "raw:sched_switch"];

fn raw_floor(tps: &'static [&'static str]) -> Column {
    Column {
        role: Role::FloorRaw,
        label: "floor: empty raw tracepoints (`r0 = 0; exit`, bench/empty_probes.c raw:)",
        tool: Tool::EmptyProbes(Empty::Tracepoints(tps)),
    }
}

const TIMER_EVENTS: &[Probe] = &[
    tracepoint("tracepoint:timer:hrtimer_setup"),
    tracepoint("tracepoint:timer:hrtimer_cancel"),
    tracepoint("tracepoint:timer:hrtimer_start"),
    tracepoint("tracepoint:timer:hrtimer_expire_entry"),
];

const SCHED_EVENTS: &[Probe] = &[
    tracepoint("tracepoint:sched:sched_switch"),
    tracepoint("tracepoint:sched:sched_waking"),
];

/// The Go 1.23+ runtime functions timerwatch probes (docs/go-runtime-timers.md §2); the Go
/// workload is built with such a toolchain.
const GO_EVENTS: &[Probe] = &[
    Probe {
        bpftrace: "uprobe:{{target}}:\"runtime.(*timer).modify\"",
        name: "runtime.(*timer).modify",
    },
    Probe {
        bpftrace: "uprobe:{{target}}:\"runtime.(*timer).stop\"",
        name: "runtime.(*timer).stop",
    },
    Probe {
        bpftrace: "uprobe:{{target}}:\"runtime.(*timer).unlockAndRun\"",
        name: "runtime.(*timer).unlockAndRun",
    },
];

/// Empty bpftrace programs on the classic timer tracepoints: what any tool pays first.
fn timer_floor() -> Column {
    bpftrace(
        Role::Floor,
        "floor: empty bpftrace programs (bench/floor_timer.bt)",
        "floor_timer.bt",
        false,
    )
}

/// bpftrace doing timerwatch's job on the kernel timer suites.
fn live_per_stack() -> Column {
    bpftrace(
        Role::Bpftrace,
        "bpftrace: live timers per ustack (bench/live_per_stack.bt)",
        "live_per_stack.bt",
        true,
    )
}

fn nothing() -> Column {
    Column {
        role: Role::Baseline,
        label: "nothing attached",
        tool: Tool::Nothing,
    }
}

fn bpftrace(role: Role, label: &'static str, script: &'static str, pid_arg: bool) -> Column {
    Column {
        role,
        label,
        tool: Tool::Bpftrace { script, pid_arg },
    }
}

fn timerwatch(role: Role, label: &'static str, args: &'static [&'static str]) -> Column {
    Column {
        role,
        label,
        tool: Tool::Timerwatch { args },
    }
}

pub fn suites(env: &Env) -> Vec<Suite> {
    // Every column on the same CPU: the two CPUs of a VM differ (interrupts), and CPU 0 is where
    // tracers open their tracepoint perf events, so bpftrace's programs, which return 1, also pay
    // perf's event processing there (about 100 ns per event more, see BENCHMARKS.md).
    let pin_cpu = (env.cpus.saturating_sub(1)).to_string();
    let mut suites = vec![
        Suite {
            kind: Kind::KernelTimers,
            title: "Kernel-timer worst case: one timerfd re-armed in a tight loop",
            workload: Workload {
                name: "rearm",
                target: "rearm",
                source: "bench/rearm.c",
                args: vec!["1".into(), pin_cpu.clone()],
                unit: "iteration",
                events: TIMER_EVENTS,
            },
            columns: vec![
                nothing(),
                timer_floor(),
                raw_floor(RAW_TIMER_TRACEPOINTS),
                timerwatch(Role::Timerwatch, "timerwatch snapshot -p PID", &[]),
                timerwatch(
                    Role::TimerwatchNoWakeups,
                    "timerwatch snapshot -p PID --no-wakeups",
                    &["--no-wakeups"],
                ),
                timerwatch(
                    Role::TimerwatchVariant,
                    "timerwatch snapshot -p PID --no-rearm-counting (every cancel and start a record)",
                    &["--no-rearm-counting"],
                ),
                live_per_stack(),
            ],
        },
        Suite {
            kind: Kind::KernelTimersPlain,
            title: "Kernel-timer worst case, target built with plain -O2 (no frame pointers)",
            workload: Workload {
                name: "rearm (plain -O2)",
                target: PLAIN_REARM,
                source: "bench/rearm.c",
                args: vec!["1".into(), pin_cpu.clone()],
                unit: "iteration",
                events: TIMER_EVENTS,
            },
            columns: vec![
                nothing(),
                timer_floor(),
                raw_floor(RAW_TIMER_TRACEPOINTS),
                timerwatch(Role::Timerwatch, "timerwatch snapshot -p PID", &[]),
                live_per_stack(),
            ],
        },
        Suite {
            kind: Kind::Sched,
            title: "Scheduler probes: two processes ping-ponging a byte over pipes on one CPU",
            workload: Workload {
                name: "pingpong",
                target: "pingpong",
                source: "bench/pingpong.c",
                args: vec![pin_cpu.clone()],
                unit: "round trip",
                events: SCHED_EVENTS,
            },
            columns: vec![
                nothing(),
                bpftrace(
                    Role::Floor,
                    "floor: empty bpftrace programs (bench/floor_sched.bt)",
                    "floor_sched.bt",
                    false,
                ),
                raw_floor(RAW_SCHED_TRACEPOINTS),
                timerwatch(Role::Timerwatch, "timerwatch snapshot -p PID", &[]),
                timerwatch(
                    Role::TimerwatchNoWakeups,
                    "timerwatch snapshot -p PID --no-wakeups",
                    &["--no-wakeups"],
                ),
            ],
        },
        Suite {
            kind: Kind::GoTimers,
            title: "Go worst case: time.AfterFunc + Stop in a tight loop",
            workload: Workload {
                name: "afterfunc",
                target: GO_TARGET,
                source: "bench/afterfunc/main.go",
                args: vec![pin_cpu],
                unit: "iteration",
                events: GO_EVENTS,
            },
            columns: vec![
                nothing(),
                Column {
                    role: Role::Floor,
                    label: "floor: `r0 = 0; exit` uprobes at timerwatch's probe points (bench/empty_probes.c)",
                    tool: Tool::EmptyProbes(Empty::TimerwatchGoUprobes),
                },
                timerwatch(Role::Timerwatch, "timerwatch snapshot -p PID", &[]),
                bpftrace(
                    Role::Bpftrace,
                    "bpftrace: live Go timers per ustack (bench/go_live_per_stack.bt)",
                    "go_live_per_stack.bt",
                    true,
                ),
            ],
        },
    ];
    if env.plan.floor_cross_check {
        suites[0].columns.insert(
            2,
            Column {
                role: Role::FloorReturn0,
                label: "floor cross-check: `r0 = 0; exit` programs (bench/empty_probes.c)",
                tool: Tool::EmptyProbes(Empty::Tracepoints(TIMER_TRACEPOINTS)),
            },
        );
    }
    suites
}

/// bench/rearm.c built with plain `-O2`: no frame pointers, as distributions build servers.
pub const PLAIN_REARM: &str = "rearm_plain";

/// The Go workload's executable (bench/afterfunc/), built with the newest Go toolchain.
pub const GO_TARGET: &str = "afterfunc";

/// What a target prints at the end: "iterations N seconds S rate R cpu_share C".
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoopResult {
    pub iterations: f64,
    pub seconds: f64,
    pub rate: f64,
    pub cpu_share: f64,
}

impl LoopResult {
    pub fn parse(line: &str) -> Result<Self> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let field = |name: &str| -> Result<f64> {
            let i = words
                .iter()
                .position(|w| *w == name)
                .with_context(|| format!("no {name} in {line:?}"))?;
            words
                .get(i + 1)
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("bad {name} in {line:?}"))
        };
        Ok(Self {
            iterations: field("iterations")?,
            seconds: field("seconds")?,
            rate: field("rate")?,
            cpu_share: field("cpu_share")?,
        })
    }

    /// Iterations per second of the workload's own CPU time. The probes run on the traced
    /// thread, in its time; normalising by it keeps a build that steals the CPU for part of a
    /// run from counting as tracing overhead.
    pub fn cpu_rate(&self) -> f64 {
        self.rate / self.cpu_share.max(1e-3)
    }
}

/// What timerwatch's report said about the traced processes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counts {
    pub lost: f64,
    pub unattributed: f64,
    /// Records the daemon applied to the traced processes' callsites.
    pub armed: f64,
    pub cancelled: f64,
    pub expired: f64,
    /// First arms, each of which came with a user stack.
    pub created: f64,
    pub live: f64,
}

impl Counts {
    pub fn from_report(report: &Json, pids: &[u32]) -> Self {
        let mut c = Counts {
            lost: report.num("lost_events").unwrap_or(0.0),
            unattributed: report.num("unattributed_events").unwrap_or(0.0),
            ..Counts::default()
        };
        for p in report.arr("processes") {
            if !p.num("pid").is_some_and(|pid| pids.contains(&(pid as u32))) {
                continue;
            }
            c.live += p.num("live").unwrap_or(0.0);
            for cs in p.arr("callsites") {
                c.armed += cs.num("armed_total").unwrap_or(0.0);
                c.cancelled += cs.num("cancelled_total").unwrap_or(0.0);
                c.expired += cs.num("expired_total").unwrap_or(0.0);
                c.created += cs.num("created_total").unwrap_or(0.0);
            }
        }
        c
    }

    pub fn records(&self) -> f64 {
        self.armed + self.cancelled + self.expired
    }
}

#[derive(Clone, Debug)]
pub struct Run {
    pub result: LoopResult,
    /// Someone else's BPF tracers were attached before or after this run.
    pub disturbed: bool,
    /// CPU seconds the tracer's own process used during the loop.
    pub tool_cpu: Option<f64>,
    pub counts: Option<Counts>,
    /// With run-time statistics on (`BpfStats`): the tracer's programs' run counts and times.
    pub programs: Vec<ProgramStat>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ProgramStat {
    pub name: String,
    pub runs: f64,
    pub ns_per_run: f64,
}

/// The kernel's per-program run time accounting (`run_time_ns`/`run_cnt` in `bpftool prog
/// show`), on while this lives. It adds two clock reads to every program run on the machine, so
/// only the profiling rounds have it. Taken with `BPF_ENABLE_STATS` (aya's `enable_stats`)
/// rather than the `kernel.bpf_stats_enabled` sysctl: the kernel turns it off when the
/// descriptor closes, even if the bench is killed.
struct BpfStats {
    _fd: OwnedFd,
}

impl BpfStats {
    fn enable() -> Result<Self> {
        let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .map_err(|e| anyhow::anyhow!("BPF_ENABLE_STATS failed: {e}"))?;
        Ok(Self { _fd: fd })
    }
}

fn program_stats(ids: &[u32]) -> Result<Vec<ProgramStat>> {
    let out = xtask::util::output(Command::new("bpftool").args(["-j", "prog", "show"]))?;
    let list = json::parse(out.trim()).context("parsing `bpftool -j prog show`")?;
    Ok(list
        .items()
        .iter()
        .filter(|p| p.num("id").is_some_and(|id| ids.contains(&(id as u32))))
        .filter_map(|p| {
            let runs = p.num("run_cnt")?;
            Some(ProgramStat {
                name: p.str("name")?.to_string(),
                runs,
                ns_per_run: p.num("run_time_ns")? / runs.max(1.0),
            })
        })
        .collect())
}

/// One more run of every traced column with per-program accounting on: where the added cost
/// goes, program by program.
pub fn profile_programs(env: &mut Env, suite: &Suite) -> Result<Vec<Vec<Option<Run>>>> {
    let mut rounds = Vec::new();
    for round in 0..env.plan.profile_rounds {
        env.wait_quiet()?;
        let _stats = BpfStats::enable()?;
        let mut runs = Vec::new();
        for col in &suite.columns {
            if matches!(col.tool, Tool::Nothing) {
                runs.push(None);
                continue;
            }
            env.progress(&format!(
                "{}: per-program profile {}/{}: {}",
                suite.workload.name,
                round + 1,
                env.plan.profile_rounds,
                col.label
            ));
            let run = run_column(env, &suite.workload, &col.tool, true)
                .with_context(|| format!("{}: {} (profile)", suite.workload.name, col.label))?;
            runs.push(Some(run));
        }
        rounds.push(runs);
    }
    Ok(rounds)
}

/// `num.median / den.median`, with both sides for the reader to judge the spread.
#[derive(Clone, Copy, Debug)]
pub struct Ratio {
    pub ratio: f64,
    pub num: Summary,
    pub den: Summary,
}

impl Ratio {
    /// The denominator's spread reaches zero: the ratio says little beyond "much larger".
    pub fn den_in_noise(&self) -> bool {
        self.den.min <= 0.0 || self.den.median <= 0.0
    }

    pub fn show(&self) -> String {
        format!(
            "{} = {} / {}{}",
            super::stats::ratio(self.ratio),
            self.num.show(super::stats::ns),
            self.den.show(super::stats::ns),
            if self.den_in_noise() {
                "; the denominator is within this run's noise"
            } else {
                ""
            }
        )
    }
}

pub struct SuiteResult {
    pub events_per_unit: f64,
    /// Per counted tracepoint: events per iteration.
    pub breakdown: Vec<(String, f64)>,
    /// `runs[round][column]`.
    pub runs: Vec<Vec<Run>>,
    /// `profile[round][column]`: runs with per-program accounting (None for the baseline).
    pub profile: Vec<Vec<Option<Run>>>,
}

impl SuiteResult {
    /// Rounds in which no column saw someone else's tracer, if there are at least two of them;
    /// otherwise every round (and the report says the figures are unreliable).
    pub fn rounds_used(&self) -> Vec<&Vec<Run>> {
        let clean: Vec<&Vec<Run>> = self
            .runs
            .iter()
            .filter(|row| row.iter().all(|r| !r.disturbed))
            .collect();
        if clean.len() >= 2 {
            clean
        } else {
            self.runs.iter().collect()
        }
    }

    /// Whether the rounds used are free of others' tracers.
    pub fn clean(&self) -> bool {
        self.rounds_used()
            .iter()
            .all(|row| row.iter().all(|r| !r.disturbed))
    }

    pub fn column(&self, i: usize) -> impl Iterator<Item = &Run> {
        self.rounds_used().into_iter().map(move |r| &r[i])
    }

    /// Added ns per traced event of column `i` against the baseline, one value per round (the
    /// baseline of the same round).
    pub fn added_ns(&self, suite: &Suite, i: usize) -> Vec<f64> {
        let Some(base) = suite.columns.iter().position(|c| c.role == Role::Baseline) else {
            return Vec::new();
        };
        self.rounds_used()
            .iter()
            .map(|r| {
                (1.0 / r[i].result.cpu_rate() - 1.0 / r[base].result.cpu_rate()) * 1e9
                    / self.events_per_unit
            })
            .collect()
    }

    /// Ratio of two columns' added cost: of the medians, not a median of per-round ratios, which
    /// a denominator near zero (the floor is a few ns, within the noise) would blow up.
    pub fn cost_ratio(&self, suite: &Suite, a: Role, b: Role) -> Option<Ratio> {
        let ia = suite.columns.iter().position(|c| c.role == a)?;
        let ib = suite.columns.iter().position(|c| c.role == b)?;
        let num = Summary::of(&self.added_ns(suite, ia))?;
        let den = Summary::of(&self.added_ns(suite, ib))?;
        Some(Ratio {
            ratio: num.median / den.median,
            num,
            den,
        })
    }

    /// Per-round difference of two columns' added cost (ns per event).
    pub fn cost_difference(&self, suite: &Suite, a: Role, b: Role) -> Option<Summary> {
        let ia = suite.columns.iter().position(|c| c.role == a)?;
        let ib = suite.columns.iter().position(|c| c.role == b)?;
        let (ca, cb) = (self.added_ns(suite, ia), self.added_ns(suite, ib));
        let v: Vec<f64> = ca.iter().zip(&cb).map(|(x, y)| x - y).collect();
        Summary::of(&v)
    }
}

/// Events per iteration of a workload, counted by bpftrace on a short run.
///
/// Not `perf stat`: a BPF program on a tracepoint that returns 0 (timerwatch's do) stops perf
/// from counting that tracepoint at all (`perf_trace_run_bpf_submit`), so on this shared machine
/// perf reads 0 whenever someone else runs timerwatch. Programs in one tracepoint's array all
/// run, so a counting bpftrace script is unaffected.
pub fn events_per_unit(env: &Env, w: &Workload) -> Result<(f64, Vec<(String, f64)>)> {
    let mut script = String::from("BEGIN { printf(\"up\\n\"); }\n");
    for (i, event) in w.events.iter().enumerate() {
        // comm, not pid: the ping-pong's child is another process with the same name.
        script += &format!(
            "{} /comm == \"{}\"/ {{ @[{i}] = count(); }}\n",
            event.bpftrace, w.target
        );
    }
    let path = env.targets.join(format!("count_{}.bt", w.name));
    std::fs::write(&path, with_target(env, &script, w))
        .with_context(|| format!("writing {}", path.display()))?;
    let mut target = w.spawn(env, COUNT_SECONDS)?;
    let mut counter = start_bpftrace(&path, None)?;
    let programs = counter.bpf_programs();
    target.send_line("go")?;
    let line = expect_line(
        &mut target,
        Duration::from_secs_f64(COUNT_SECONDS + 30.0),
        |l| l.starts_with("iterations "),
    )?;
    let iterations = LoopResult::parse(&line)?.iterations;
    let out = stop_tool(env, &mut counter, &programs)?;
    target.finish(Duration::from_secs(10));
    let mut breakdown = Vec::new();
    for (i, event) in w.events.iter().enumerate() {
        // bpftrace prints `@[2]: 978567` at exit.
        let key = format!("@[{i}]:");
        let count = out
            .iter()
            .find_map(|l| l.strip_prefix(&key)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        breakdown.push((event.name.to_string(), count / iterations));
    }
    let total = breakdown.iter().map(|(_, n)| n).sum();
    Ok((total, breakdown))
}

/// Long enough for per-iteration counts to settle to two decimals.
const COUNT_SECONDS: f64 = 0.5;

pub fn run_suite(env: &mut Env, suite: &Suite) -> Result<SuiteResult> {
    let (events_per_unit, breakdown) = events_per_unit(env, &suite.workload)?;
    if events_per_unit < 0.5 {
        bail!(
            "{}: only {events_per_unit:.2} traced events per {}; the workload does not exercise the probes",
            suite.workload.name,
            suite.workload.unit
        );
    }
    if suite
        .columns
        .iter()
        .any(|c| matches!(c.tool, Tool::EmptyProbes(Empty::TimerwatchGoUprobes)))
    {
        env.go_uprobe_offsets = timerwatch_go_uprobes(env, &suite.workload)?;
    }
    let mut runs = Vec::new();
    for round in 0..env.plan.rounds {
        env.wait_quiet()?;
        let mut row = Vec::new();
        for col in &suite.columns {
            env.progress(&format!(
                "{}: round {}/{}: {}",
                suite.workload.name,
                round + 1,
                env.plan.rounds,
                col.label
            ));
            let run = run_column(env, &suite.workload, &col.tool, false)
                .with_context(|| format!("{}: {}", suite.workload.name, col.label))?;
            env.conditions.cpu_shares.push(run.result.cpu_share);
            row.push(run);
        }
        runs.push(row);
    }
    let profile = profile_programs(env, suite)?;
    Ok(SuiteResult {
        events_per_unit,
        breakdown,
        runs,
        profile,
    })
}

/// File offsets of the uprobes timerwatch attaches to `w`'s Go runtime, from its
/// machine-readable `go-probes --json`.
fn timerwatch_go_uprobes(env: &Env, w: &Workload) -> Result<Vec<u64>> {
    let mut target = w.spawn(env, 0.01)?;
    let out = xtask::util::output(
        Command::new(&env.timerwatch)
            .args(["go-probes", "--json", "-p"])
            .arg(target.pid().to_string()),
    );
    target.finish(Duration::from_secs(10));
    let offsets = parse_go_uprobes(&out?)?;
    if offsets.is_empty() {
        bail!("timerwatch has no Go uprobe points for {}", w.target);
    }
    Ok(offsets)
}

/// The offsets in `timerwatch go-probes --json`'s array.
fn parse_go_uprobes(text: &str) -> Result<Vec<u64>> {
    let points = json::parse(text.trim()).context("parsing `timerwatch go-probes --json`")?;
    Ok(points
        .items()
        .iter()
        .filter_map(|p| p.get("file_offset")?.as_u64())
        .collect())
}

/// `script` with `{{target}}` replaced by the path of `w`'s executable.
fn with_target(env: &Env, script: &str, w: &Workload) -> String {
    script.replace("{{target}}", &env.target(w.target).to_string_lossy())
}

/// Starts a tracer on `pids` (processes of workload `w`) and waits until its probes are
/// attached.
pub fn start_tool(
    env: &Env,
    w: &Workload,
    tool: &Tool,
    pids: &[u32],
    extra: &[&str],
) -> Result<Option<Proc>> {
    let proc = match tool {
        Tool::Nothing => return Ok(None),
        Tool::Bpftrace { script, pid_arg } => {
            let path = env.scripts.join(script);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let run = env.targets.join(script);
            std::fs::write(&run, with_target(env, &text, w))
                .with_context(|| format!("writing {}", run.display()))?;
            start_bpftrace(&run, pid_arg.then_some(pids[0]))?
        }
        Tool::EmptyProbes(on) => {
            let specs: Vec<String> = match on {
                Empty::Tracepoints(tps) => tps.iter().map(|t| t.to_string()).collect(),
                Empty::TimerwatchGoUprobes => env
                    .go_uprobe_offsets
                    .iter()
                    .map(|off| {
                        format!(
                            "uprobe:{}:{off:#x}:{}",
                            pids[0],
                            env.target(w.target).display()
                        )
                    })
                    .collect(),
            };
            let mut p = Proc::spawn(
                "empty_probes",
                Command::new(env.target("empty_probes")).args(specs),
            )?;
            expect_line(&mut p, ATTACH_TIMEOUT, |l| l == "up")?;
            p
        }
        Tool::Timerwatch { args } => start_timerwatch(env, pids, args, extra)?.0,
    };
    Ok(Some(proc))
}

/// `timerwatch snapshot -p PID… --json` plus `args` and `extra`, once attached, with the
/// stderr lines it printed before "attached".
pub fn start_timerwatch(
    env: &Env,
    pids: &[u32],
    args: &[&str],
    extra: &[&str],
) -> Result<(Proc, Vec<String>)> {
    let mut cmd = Command::new(&env.timerwatch);
    cmd.arg("snapshot");
    for pid in pids {
        cmd.arg("-p").arg(pid.to_string());
    }
    // A bound on its life even if we never get to stop it.
    cmd.args(["--json", "--duration", "600"])
        .args(args)
        .args(extra);
    let mut p = Proc::spawn("timerwatch", &mut cmd)?;
    let lines = expect_stderr(&mut p, ATTACH_TIMEOUT, |l| {
        l.starts_with("timerwatch: attached")
    })?;
    Ok((p, lines))
}

/// Starts a bpftrace script and waits for its "up" (from BEGIN, which bpftrace runs after
/// attaching every probe).
fn start_bpftrace(script: &Path, pid: Option<u32>) -> Result<Proc> {
    let mut cmd = Command::new("bpftrace");
    cmd.arg(script);
    if let Some(pid) = pid {
        cmd.arg(pid.to_string());
    }
    let mut p = Proc::spawn("bpftrace", &mut cmd)?;
    expect_line(&mut p, ATTACH_TIMEOUT, |l| l == "up")?;
    Ok(p)
}

/// Stops a tracer with SIGINT (both detach and print their results on it) and returns its
/// stdout. Fails if any of its BPF programs is still loaded afterwards.
pub fn stop_tool(env: &Env, tool: &mut Proc, programs: &[u32]) -> Result<Vec<String>> {
    let status = tool.stop(SIGINT, Duration::from_secs(20));
    let out = tool
        .stdout
        .rest(std::time::Instant::now() + Duration::from_secs(5));
    env.wait_unloaded(programs)?;
    match status {
        Ok(s) if s.success() => Ok(out),
        Ok(s) => bail!("{} exited with {s}: {}", tool.name, tool.stderr_tail()),
        Err(threads) => bail!(
            "{} did not exit within 20 s of SIGINT (killed; threads: {threads}; stdout: {:?}; stderr: {})",
            tool.name,
            out.iter().rev().take(3).collect::<Vec<_>>(),
            tool.stderr_tail()
        ),
    }
}

pub fn last_report(lines: &[String]) -> Result<Json> {
    let line = lines
        .iter()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("timerwatch printed no JSON report")?;
    json::parse(line).context("parsing timerwatch's report")
}

fn run_column(env: &mut Env, w: &Workload, tool: &Tool, profile: bool) -> Result<Run> {
    let disturbed_before = env.note_foreign_bpf()?;
    let mut target = w.spawn(env, env.plan.loop_seconds)?;
    let mut tracer = start_tool(env, w, tool, &[target.pid()], &[])?;
    let programs = tracer.as_ref().map(Proc::bpf_programs).unwrap_or_default();
    let cpu_before = tracer.as_ref().and_then(Proc::cpu_seconds);
    target.send_line("go")?;
    let line = expect_line(
        &mut target,
        Duration::from_secs_f64(env.plan.loop_seconds + 30.0),
        |l| l.starts_with("iterations "),
    )?;
    let result = LoopResult::parse(&line)?;
    let cpu_after = tracer.as_ref().and_then(Proc::cpu_seconds);
    let stats = if profile {
        program_stats(&programs)?
    } else {
        Vec::new()
    };
    let mut counts = None;
    if let Some(t) = tracer.as_mut() {
        let out = stop_tool(env, t, &programs)?;
        if matches!(tool, Tool::Timerwatch { .. }) {
            counts = Some(Counts::from_report(&last_report(&out)?, &[target.pid()]));
        }
    }
    target.finish(Duration::from_secs(10));
    let disturbed_after = env.note_foreign_bpf()?;
    Ok(Run {
        result,
        disturbed: disturbed_before || disturbed_after,
        tool_cpu: cpu_before.zip(cpu_after).map(|(a, b)| b - a),
        counts,
        programs: stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loop_result() {
        let r = LoopResult::parse("iterations 100 seconds 2.0 rate 50.0 cpu_share 0.5").unwrap();
        assert_eq!(r.iterations, 100.0);
        assert_eq!(r.cpu_rate(), 100.0);
        assert!(LoopResult::parse("iterations x").is_err());
    }

    #[test]
    fn reads_timerwatch_go_uprobe_offsets() {
        let text = r#"[{"function":"runtime.(*timer).modify","file_offset":389796},
                       {"function":"time.Sleep","file_offset":16}]"#;
        assert_eq!(parse_go_uprobes(text).unwrap(), vec![0x5f2a4, 0x10]);
        assert!(parse_go_uprobes("timerwatch: not json").is_err());
    }

    #[test]
    fn counts_only_traced_pids() {
        let report = json::parse(
            r#"{"lost_events": 3, "unattributed_events": 1, "processes": [
                {"pid": 5, "live": 1, "callsites": [{"armed_total": 10, "cancelled_total": 9, "expired_total": 0}]},
                {"pid": 6, "live": 2, "callsites": [{"armed_total": 99, "cancelled_total": 0, "expired_total": 0}]}]}"#,
        )
        .unwrap();
        let c = Counts::from_report(&report, &[5]);
        assert_eq!(
            (c.lost, c.armed, c.cancelled, c.live),
            (3.0, 10.0, 9.0, 1.0)
        );
        assert_eq!(c.records(), 19.0);
    }
}
