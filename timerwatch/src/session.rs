//! One tracing session: validate input, load the probes, drain the ring buffer into the table,
//! produce reports on a schedule, and stop cleanly on a deadline or a signal.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use aya::maps::{MapData, RingBuf};
use timerwatch_common::EventKind;
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
    time::{interval, sleep_until, Instant, MissedTickBehavior},
};

use crate::{
    event::{decode, Callstack},
    failure::Failure,
    gotrace::{self, discovery::Discovery, GoTracer},
    heap,
    probe::{privileges, startup_checks, Filter, Probes},
    procfs,
    report::{self, PreExisting, ProcessReport, Report},
    sample,
    symbolize::{Symbolizer, UserStack},
    table::{Resolver, Table},
    trace_args::{GoMode, TraceArgs},
    trend::Params,
    verdict::Verdicts,
};

/// Names from the live system for the table.
struct Env {
    sym: Symbolizer,
}

impl Resolver for Env {
    fn kernel(&mut self, addr: u64) -> Option<String> {
        self.sym.kernel(addr)
    }
    fn user(&mut self, tgid: u32, stack: &Callstack) -> UserStack {
        self.sym
            .user_stack_copied(tgid, &stack.frames, &stack.scan, stack.copy.as_ref())
    }
    fn process(&mut self, tgid: u32) -> (Option<String>, Option<String>) {
        (procfs::comm(tgid), procfs::exe(tgid))
    }
    fn forget(&mut self, tgid: u32) {
        self.sym.forget(tgid);
    }
    fn rename(&mut self, stack: &UserStack) -> Option<UserStack> {
        self.sym.rename(stack)
    }
}

/// How often the ring buffer is drained when no wake-up came, while Go probes follow execs or a
/// creation-stack window is open (`GoTracer::needs_prompt_drain`). Otherwise records wait for
/// the once-a-second sample, a report or the kernel's wake-up (a quarter of the ring queued):
/// each drain first brings the table's working set (every busy timer, callsite and histogram)
/// back into the cache, so on a node agent twenty drains a second cost twice what the records
/// themselves do (BENCHMARKS.md, "The node agent's own share").
const PROMPT_DRAIN: Duration = Duration::from_millis(50);

/// Records applied between two chances for other tasks to run (a few ms of work).
const DRAIN_BATCH: usize = 16_384;
/// The longest one drain runs before the loop turns to its other work (reports, samples,
/// stop): under a sustained overload the ring never empties.
const DRAIN_SLICE: Duration = Duration::from_millis(200);

/// How often live counts are sampled for growth verdicts.
const SAMPLE_PERIOD: Duration = Duration::from_secs(1);

pub struct Tracer {
    probes: Probes,
    ring: AsyncFd<RingBuf<MapData>>,
    table: Table,
    env: Env,
    start_ns: u64,
    pre_existing: HashMap<u32, PreExisting>,
    verdicts: Verdicts,
    go: GoTracer,
    /// `run`: each traced process's row as it exits (see [`Tracer::take_exits`]).
    exits: Option<Vec<ProcessReport>>,
    pub decode_errors: u64,
}

/// A command held between fork and exec (`timerwatch run`): traced with its descendants from
/// its first instruction.
pub struct Launch<'a> {
    pub pid: u32,
    /// The binary it is about to exec.
    pub exe: &'a Path,
}

/// Go tracing for the processes the filters admit, those that exist now attached before the
/// trace window starts so that every creation inside it is attributed, later ones as they exec.
/// Probes for a named target list by default; census (no probes) for unfiltered runs, where
/// every Go process of the host is traced.
fn go_tracer(args: &TraceArgs, filter: &Filter, probes: &mut Probes) -> GoTracer {
    let unfiltered = filter.tgids.is_empty() && filter.comms.is_empty();
    let mode = match (args.go_mode, args.no_go) {
        (GoMode::Off, _) | (_, true) => return GoTracer::default(),
        (GoMode::Census, _) => gotrace::Mode::Census,
        (GoMode::Probes, _) => gotrace::Mode::Probes,
        (GoMode::Auto, _) if unfiltered => gotrace::Mode::Census,
        (GoMode::Auto, _) => gotrace::Mode::Probes,
    };
    let discovery = Discovery {
        all: unfiltered,
        pids: filter.tgids.clone(),
        comms: filter.comms.clone(),
    };
    let mut tracer = GoTracer::discover(probes.ebpf_mut(), mode, discovery, args.verbose);
    tracer.set_sample_window(args.go_sample_window);
    tracer
}

fn validate(args: &TraceArgs) -> Result<Filter> {
    if !args.ring_buffer_size.is_power_of_two() || args.ring_buffer_size < 4096 {
        return Err(Failure::bad_input(format!(
            "--ring-buffer-size {} is not a power of two of at least 4096 bytes",
            args.ring_buffer_size
        ))
        .into());
    }
    let mut tgids = Vec::new();
    for &pid in &args.pids {
        if pid == 0 || !procfs::exists(pid) {
            return Err(Failure::bad_input(format!("no such process: pid {pid}")).into());
        }
        let tgid = procfs::tgid_of(pid).unwrap_or(pid);
        if !tgids.contains(&tgid) {
            tgids.push(tgid);
        }
    }
    for comm in &args.comms {
        if comm.is_empty() || comm.len() > 15 {
            return Err(Failure::bad_input(format!(
                "--comm {comm:?}: a command name is 1 to 15 bytes (the kernel truncates longer ones)"
            ))
            .into());
        }
    }
    Ok(Filter {
        tgids,
        comms: args.comms.clone(),
        wakeups: !args.no_wakeups,
        count_rearms: !args.no_rearm_counting,
        follow_children: false,
        copy_user_stack: !args.no_stack_copy,
    })
}

impl Tracer {
    /// Check input and privileges, then attach. Errors carry the exit code (see `failure`).
    pub fn start(args: &TraceArgs) -> Result<Self> {
        Self::start_with(args, None)
    }

    /// [`Tracer::start`] for a held command and everything it starts (`run`): children
    /// followed in the kernel, Go binaries they exec traced, exits kept.
    pub fn start_launch(args: &TraceArgs, launch: Launch<'_>) -> Result<Self> {
        Self::start_with(args, Some(launch))
    }

    fn start_with(args: &TraceArgs, launch: Option<Launch<'_>>) -> Result<Self> {
        let mut filter = validate(args)?;
        if let Some(l) = &launch {
            filter.tgids.push(l.pid);
            filter.follow_children = true;
        }
        privileges::check().map_err(Failure::privilege)?;
        startup_checks::check(args.ring_buffer_size).map_err(Failure::privilege)?;
        let mut probes = Probes::load(&filter, args.ring_buffer_size).map_err(|e| {
            let line = format!("{e:#}");
            if line.contains("Operation not permitted") || line.contains("permission denied") {
                anyhow::Error::from(Failure::privilege(format!(
                    "the kernel refused to load BPF: {line}"
                )))
            } else {
                e
            }
        })?;
        if args.verbose {
            eprintln!("timerwatch: kernel probes: {}", probes.attach);
        }
        let ring = probes.take_ring()?;
        let go = match &launch {
            Some(l) if !args.no_go && args.go_mode != GoMode::Off => {
                let others: Vec<u32> = filter
                    .tgids
                    .iter()
                    .copied()
                    .filter(|&p| p != l.pid)
                    .collect();
                GoTracer::launch(probes.ebpf_mut(), &others, l.pid, l.exe, args.verbose)
            }
            Some(_) => GoTracer::default(),
            None => go_tracer(args, &filter, &mut probes),
        };
        // The window starts once every probe, Go uprobes included, is attached, so that counts
        // compare with rate x duration; records from the attach itself may be a little older
        // (report ages are clamped to the window).
        let start_ns = procfs::monotonic_ns();
        // SAFETY: the ring buffer's fd is owned by `ring`, which the AsyncFd owns for its whole
        // registration; nothing else closes or replaces it.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        let mut env = Env {
            sym: Symbolizer::new(),
        };
        let mut table = Table::new();
        let mut pre_existing = HashMap::new();
        let mut known: Vec<u32> = filter.tgids.clone();
        for comm in &filter.comms {
            known.extend(procfs::pids_with_comm(comm));
        }
        // The held command is a copy of timerwatch until its exec: nothing of it pre-exists.
        known.retain(|&t| launch.as_ref().is_none_or(|l| l.pid != t));
        for &tgid in &known {
            if !procfs::exists(tgid) {
                // Gone between the check and the attach: say so, as for any exit mid-trace.
                let addrs = table.mark_exited(tgid, start_ns, &mut env);
                probes.forget_timers(&addrs);
                continue;
            }
            if filter.tgids.contains(&tgid) {
                table.ensure_process(tgid, &mut env);
            }
            let posix_timers = procfs::posix_timer_count(tgid).unwrap_or(0);
            pre_existing.insert(
                tgid,
                PreExisting {
                    posix_timers,
                    ..PreExisting::default()
                },
            );
        }
        Ok(Self {
            probes,
            ring,
            table,
            env,
            start_ns,
            pre_existing,
            verdicts: Verdicts::new(Params::default(), args.plateau_threshold),
            go,
            exits: launch.is_some().then(Vec::new),
            decode_errors: 0,
        })
    }

    /// Rows of the processes that exited since the last call, each as it was when its exit
    /// record arrived: kernel timers still held then, Go timers still pending (only for
    /// tracers started with [`Tracer::start_launch`]).
    pub fn take_exits(&mut self) -> Vec<ProcessReport> {
        self.exits.as_mut().map(std::mem::take).unwrap_or_default()
    }

    pub fn missing_tracepoints(&self) -> &[String] {
        &self.probes.missing
    }

    /// Apply every queued record.
    pub fn drain(&mut self) {
        while !self.drain_batch() {}
    }

    /// Apply the queued records, letting other tasks on this thread run between batches, for
    /// at most `DRAIN_SLICE`: records that arrive faster than they are applied must not keep
    /// the loop here for ever, with no report, no sample and no stop. What is left waits for
    /// the next drain; the kernel counts what no longer fits (`lost_events`).
    async fn drain_yielding(&mut self) {
        let start = Instant::now();
        while !self.drain_batch() && start.elapsed() < DRAIN_SLICE {
            tokio::task::yield_now().await;
        }
    }

    /// Apply at most `DRAIN_BATCH` queued records; true when the ring is empty. Bounded so
    /// that a backlog (a fork storm, a burst) cannot keep other work on this thread (the
    /// daemon's HTTP server) waiting until it is gone.
    fn drain_batch(&mut self) -> bool {
        let ring = self.ring.get_mut();
        let mut forget = Vec::new();
        let mut emptied = true;
        for n in 0.. {
            if n == DRAIN_BATCH {
                emptied = false;
                break;
            }
            let Some(item) = ring.next() else { break };
            match decode(&item) {
                Ok(rec) => {
                    if let (EventKind::ProcessExit, Some(exits)) = (rec.kind, &mut self.exits) {
                        exits.push(exit_row(
                            &self.table,
                            &self.go,
                            &self.verdicts,
                            self.start_ns,
                            rec.tgid,
                        ));
                    }
                    self.go.apply(&rec);
                    forget.extend(self.table.apply(&rec, &mut self.env));
                }
                Err(_) => self.decode_errors += 1,
            }
        }
        if !forget.is_empty() {
            self.probes.forget_timers(&forget);
        }
        self.go.attach_execs(self.probes.ebpf_mut());
        self.go.close_windows(self.probes.ebpf_mut());
        emptied
    }

    /// The report with growth verdicts from the samples taken so far; reads the Go processes'
    /// memory first.
    pub fn report(&mut self) -> Report {
        let now_ns = procfs::monotonic_ns();
        self.go.walk(now_ns);
        let ctx = report::Context {
            start_ns: self.start_ns,
            now_ns,
            lost_events: self.probes.lost_events().unwrap_or(0),
            pre_existing: &self.pre_existing,
            missing_tracepoints: &self.probes.missing,
        };
        let kernel = report::kernel_rows(&self.table, &ctx);
        let go = self.go.rows(now_ns);
        report::assemble(&ctx, kernel, go, Some(&self.verdicts))
    }

    /// Feed the trend test one sample of every callsite's live count, taken from the sources
    /// (`sample`): a report would copy every callsite's names once a second for it.
    fn sample(&mut self) {
        self.table.rename(&mut self.env);
        // At most once a second, and only after new stacks were named: a burst of new
        // callsites in one binary reads its file once.
        if self.env.sym.release_files() {
            // What the files' parsing freed stays resident unless handed back.
            heap::trim();
        }
        let now_ns = procfs::monotonic_ns();
        self.go.walk(now_ns);
        let samples = sample::combine(sample::kernel(&self.table), self.go.samples());
        let t = procfs::monotonic_ns().saturating_sub(self.start_ns) as f64 / 1e9;
        self.verdicts.observe_samples(&samples, t);
        // Growing census callsites that only a signature names may earn a creation-stack window.
        if self.go.samples_windows() {
            let wanting: Vec<u32> = samples
                .iter()
                .filter(|p| gotrace::wants_stacks(p, |id| self.verdicts.is_growing(id)))
                .map(|p| p.pid)
                .collect();
            self.go.open_windows(self.probes.ebpf_mut(), &wanting);
        }
    }

    /// Drain until `deadline` or SIGINT/SIGTERM, calling `on_tick` with a fresh report every
    /// `tick` (if given). `on_tick` returns false to stop. Returns the final report.
    pub async fn run(
        &mut self,
        deadline: Option<Instant>,
        tick: Option<Duration>,
        on_tick: impl FnMut(&Report) -> bool,
    ) -> Result<Report> {
        let (_keep, mut never) = tokio::sync::mpsc::unbounded_channel::<()>();
        self.run_with_events(deadline, tick, &mut never, on_tick, |_: ()| true)
            .await
    }

    /// [`Tracer::run`] that also hands each item from `events` (keys of an interactive view)
    /// to `on_event` as it arrives, between ticks; `on_event` returns false to stop.
    pub async fn run_with_events<E>(
        &mut self,
        deadline: Option<Instant>,
        tick: Option<Duration>,
        events: &mut tokio::sync::mpsc::UnboundedReceiver<E>,
        on_tick: impl FnMut(&Report) -> bool,
        on_event: impl FnMut(E) -> bool,
    ) -> Result<Report> {
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let far = Instant::now() + Duration::from_secs(86400 * 365);
        let stop = async move {
            tokio::select! {
                _ = sleep_until(deadline.unwrap_or(far)) => {}
                _ = sigint.recv() => {}
                _ = sigterm.recv() => {}
            }
        };
        Ok(self
            .run_until_with_events(stop, tick, events, on_tick, on_event)
            .await?
            .0)
    }

    /// Drain until `stop` completes (its output is returned with the final report) or
    /// `on_tick`, called with a fresh report every `tick`, returns false (then `None`).
    pub async fn run_until<T>(
        &mut self,
        stop: impl Future<Output = T>,
        tick: Option<Duration>,
        on_tick: impl FnMut(&Report) -> bool,
    ) -> Result<(Report, Option<T>)> {
        let (_keep, mut never) = tokio::sync::mpsc::unbounded_channel::<()>();
        self.run_until_with_events(stop, tick, &mut never, on_tick, |_: ()| true)
            .await
    }

    /// [`Tracer::run_until`] that also hands each item from `events` to `on_event` between
    /// ticks; `on_event` returns false to stop (then `None`).
    async fn run_until_with_events<T, E>(
        &mut self,
        stop: impl Future<Output = T>,
        tick: Option<Duration>,
        events: &mut tokio::sync::mpsc::UnboundedReceiver<E>,
        mut on_tick: impl FnMut(&Report) -> bool,
        mut on_event: impl FnMut(E) -> bool,
    ) -> Result<(Report, Option<T>)> {
        let mut drain_timer = interval(PROMPT_DRAIN);
        drain_timer.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut tick_timer = interval(tick.unwrap_or(Duration::from_secs(3600)));
        tick_timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tick_timer.tick().await; // the first tick is immediate; reports start one interval in
                                 // The trend test assumes about one sample a second, whatever the display interval.
        let mut sample_timer = interval(SAMPLE_PERIOD);
        sample_timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tokio::pin!(stop);
        let mut stopped = None;
        loop {
            tokio::select! {
                out = &mut stop => {
                    stopped = Some(out);
                    break;
                }
                guard = self.ring.readable_mut() => {
                    let mut guard = guard?;
                    guard.clear_ready();
                    drop(guard);
                    self.drain_yielding().await;
                }
                _ = drain_timer.tick(), if self.go.needs_prompt_drain() => self.drain_yielding().await,
                _ = sample_timer.tick() => {
                    self.drain_yielding().await;
                    self.sample();
                }
                Some(event) = events.recv() => {
                    if !on_event(event) {
                        break;
                    }
                }
                _ = tick_timer.tick(), if tick.is_some() => {
                    self.drain_yielding().await;
                    let report = self.report();
                    if !on_tick(&report) {
                        break;
                    }
                }
            }
        }
        self.drain();
        self.table.rename(&mut self.env);
        Ok((self.report(), stopped))
    }
}

/// `tgid`'s row as its exit record arrives (before the table drops it), with verdicts so far
/// and its Go timers still pending.
fn exit_row(
    table: &Table,
    go: &GoTracer,
    verdicts: &Verdicts,
    start_ns: u64,
    tgid: u32,
) -> ProcessReport {
    let now_ns = procfs::monotonic_ns();
    let kernel = report::kernel_rows(
        table,
        &report::Context {
            start_ns,
            now_ns,
            lost_events: 0,
            pre_existing: &HashMap::new(),
            missing_tracepoints: &[],
        },
    );
    let row = kernel.processes.into_iter().find(|p| p.pid == tgid);
    report::assemble_exit(tgid, row, go.exit_row(tgid, now_ns), verdicts)
}
