//! Userspace half of timerwatch without the kernel: decode + aggregate throughput on one core.
//!
//! Builds a synthetic ring-buffer stream in memory (outside the timed region), then feeds every
//! record through `event::decode` and `Table::apply`, as `session::Tracer::drain` does, for a
//! fixed wall time. Run by `cargo xtask bench`; prints one line:
//! `events N seconds S rate R stack_records K`.
//!
//! usage: decode_bench [--seconds S] [--timers N] [--stack-every-start]
//!
//! The default stream is the steady state of a service with a few thousand known timers: mostly
//! small Start/Cancel/Expire records, and one StackEvent per new timer. `--stack-every-start`
//! makes every Start a first arm with a stack: the worst case, a process that keeps creating
//! new timers (short-lived timerfds or POSIX timers) instead of re-arming known ones.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use timerwatch::event::{decode, Callstack};
use timerwatch::symbolize::UserStack;
use timerwatch::table::{Resolver, Table};
use timerwatch_common::{flags, Event, EventKind, StackEvent};

const TIMERFD_FN: u64 = 0xffff_ffff_8140_0010;
const WAKEUP_FN: u64 = 0xffff_ffff_8140_0020;
const TCP_FN: u64 = 0xffff_ffff_8140_0030;
/// Distinct user stacks (callsites) the timers are spread over, per process.
const CALLSITES: u64 = 16;
const PROCESSES: u32 = 4;
/// Records per pass over the table (one fresh table per pass, so first arms recur).
const RECORDS: usize = 1 << 20;

/// Names from fixed tables, cached the way `symbolize::Symbolizer` caches kallsyms lookups: a
/// map lookup and a cloned `String` per kernel lookup, which is what the table pays per Start.
struct FixedNames {
    kernel: HashMap<u64, Option<String>>,
}

impl Resolver for FixedNames {
    fn kernel(&mut self, addr: u64) -> Option<String> {
        self.kernel
            .entry(addr)
            .or_insert_with(|| {
                Some(
                    match addr {
                        TIMERFD_FN => "timerfd_tmrproc",
                        WAKEUP_FN => "hrtimer_wakeup",
                        TCP_FN => "tcp_delack_timer",
                        _ => return None,
                    }
                    .to_string(),
                )
            })
            .clone()
    }
    fn user(&mut self, _tgid: u32, stack: &Callstack) -> UserStack {
        UserStack::named(&stack.frames, |addr| format!("f_{addr:x}"))
    }
    fn process(&mut self, tgid: u32) -> (Option<String>, Option<String>) {
        (
            Some(format!("svc{tgid}")),
            Some(format!("/usr/bin/svc{tgid}")),
        )
    }
    fn forget(&mut self, _tgid: u32) {}
}

fn bytes_of<T>(v: &T) -> &[u8] {
    // SAFETY: only used on #[repr(C)] plain-integer wire types, exactly as the kernel sends them.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

/// Deterministic, so every run and round decodes the same stream.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

struct TimerSpec {
    addr: u64,
    tgid: u32,
    function: u64,
    callsite: u64,
}

struct Stream {
    bytes: Vec<u8>,
    /// (offset, len) of each record in `bytes`, as the ring buffer hands them out.
    records: Vec<(usize, usize)>,
    stack_records: usize,
}

impl Stream {
    fn push(&mut self, record: &[u8]) {
        self.records.push((self.bytes.len(), record.len()));
        self.bytes.extend_from_slice(record);
    }

    fn small(&mut self, t: &TimerSpec, kind: EventKind, ts: u64) {
        let ev = Event {
            ts_ns: ts,
            timer: t.addr,
            function: if kind == EventKind::Cancel {
                0
            } else {
                t.function
            },
            expires: ts + 1_000_000_000,
            arg: 0,
            tgid: t.tgid,
            tid: t.tgid,
            cur_tgid: t.tgid,
            kind: kind as u8,
            flags: 0,
            stack_len: 0,
        };
        self.push(bytes_of(&ev));
    }

    fn first_arm(&mut self, t: &TimerSpec, ts: u64) {
        let mut se = StackEvent {
            event: Event {
                ts_ns: ts,
                timer: t.addr,
                function: t.function,
                expires: ts + 1_000_000_000,
                tgid: t.tgid,
                tid: t.tgid,
                cur_tgid: t.tgid,
                kind: EventKind::Start as u8,
                flags: flags::HAS_STACK | flags::NEW_OWNER,
                ..Event::default()
            },
            ..StackEvent::default()
        };
        let depth = 6 + (t.callsite % 4) as usize;
        for (i, slot) in se.stack.iter_mut().take(depth).enumerate() {
            *slot = 0x40_0000 + t.callsite * 0x1000 + i as u64 * 0x40;
        }
        se.event.stack_len = depth as u16;
        se.comm[..3].copy_from_slice(b"svc");
        se.user_sp = 0x7ffd_0000_0000;
        for (i, w) in se.scan.iter_mut().enumerate() {
            *w = 0x7ffd_0000_0000 + i as u64 * 8;
        }
        self.push(bytes_of(&se));
        self.stack_records += 1;
    }
}

/// A few thousand known timers in a handful of processes, each first armed with a stack, then
/// re-armed (cancel + start), expired and re-armed (expire + start) in random order.
fn build_stream(timers: usize, stack_every_start: bool) -> Stream {
    let mut rng = Lcg(0x7157_a7c4);
    let specs: Vec<TimerSpec> = (0..timers as u64)
        .map(|i| TimerSpec {
            addr: 0xffff_8880_1000_0000 + i * 0x100,
            tgid: 1000 + (i % PROCESSES as u64) as u32,
            function: [TIMERFD_FN, WAKEUP_FN, TCP_FN][(i % 3) as usize],
            callsite: i % CALLSITES,
        })
        .collect();
    let mut s = Stream {
        bytes: Vec::with_capacity(RECORDS * 64),
        records: Vec::with_capacity(RECORDS),
        stack_records: 0,
    };
    let mut ts = 1_000_000u64;
    for t in &specs {
        ts += 100;
        s.first_arm(t, ts);
    }
    while s.records.len() < RECORDS {
        let t = &specs[rng.next() as usize % specs.len()];
        ts += 100;
        let stop = if rng.next().is_multiple_of(4) {
            EventKind::Expire
        } else {
            EventKind::Cancel
        };
        s.small(t, stop, ts);
        if stack_every_start {
            s.first_arm(t, ts + 10);
        } else {
            s.small(t, EventKind::Start, ts + 10);
        }
    }
    s
}

struct Args {
    seconds: f64,
    timers: usize,
    stack_every_start: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seconds: 1.0,
        timers: 4096,
        stack_every_start: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--seconds" => {
                args.seconds = value("--seconds")?
                    .parse()
                    .map_err(|e| format!("--seconds: {e}"))?;
            }
            "--timers" => {
                args.timers = value("--timers")?
                    .parse()
                    .map_err(|e| format!("--timers: {e}"))?;
            }
            "--stack-every-start" => args.stack_every_start = true,
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    if args.seconds.is_nan() || args.seconds <= 0.0 || args.timers == 0 {
        return Err("--seconds and --timers must be positive".into());
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("decode_bench: {e}");
            std::process::exit(2);
        }
    };
    let stream = build_stream(args.timers, args.stack_every_start);
    let budget = Duration::from_secs_f64(args.seconds);
    let mut names = FixedNames {
        kernel: HashMap::new(),
    };
    let mut events = 0u64;
    let mut stack_records = 0u64;
    let mut errors = 0u64;
    let start = Instant::now();
    // Whole passes only, so every pass has the same mix; the last one may overrun the budget by
    // one pass (about 0.1-0.5 s), which the rate accounts for.
    while start.elapsed() < budget {
        let mut table = Table::new();
        for &(off, len) in &stream.records {
            match decode(&stream.bytes[off..off + len]) {
                Ok(rec) => {
                    black_box(table.apply(&rec, &mut names));
                }
                Err(_) => errors += 1,
            }
        }
        black_box(table.tracked_timers());
        events += stream.records.len() as u64;
        stack_records += stream.stack_records as u64;
    }
    let seconds = start.elapsed().as_secs_f64();
    if errors != 0 {
        eprintln!("decode_bench: {errors} records failed to decode");
        std::process::exit(1);
    }
    println!(
        "events {events} seconds {seconds:.6} rate {:.1} stack_records {stack_records}",
        events as f64 / seconds
    );
}
