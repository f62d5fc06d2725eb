//! Brendan Gregg's folded stacks: `root;…;leaf weight`, one line per stack, weight = live
//! timers. flamegraph.pl, inferno and speedscope read it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::stacks::{self, Frame};
use crate::report::Report;

/// `;` separates frames and a line ends the record, so neither may appear inside a frame.
fn clean(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            ';' => ':',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

fn frame(f: &Frame) -> String {
    match (&f.file, f.line) {
        (Some(file), Some(line)) => clean(&format!("{} ({file}:{line})", f.function)),
        _ => clean(&f.function),
    }
}

/// Stacks without live timers are left out (a zero weight draws nothing); equal stacks from
/// several processes of the same name add up. Lines are sorted, as the format's tools expect.
pub fn render(report: &Report) -> String {
    let mut weights: BTreeMap<String, u64> = BTreeMap::new();
    for s in stacks::of_report(report).into_iter().filter(|s| s.live > 0) {
        let line: Vec<String> = s.frames.iter().map(frame).collect();
        *weights.entry(line.join(";")).or_default() += s.live;
    }
    let mut out = String::new();
    for (stack, weight) in weights {
        let _ = writeln!(out, "{stack} {weight}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{callsite, process, report};
    use crate::report::CallsiteReport;

    #[test]
    fn one_line_per_stack_weighted_by_live_timers() {
        let leak = CallsiteReport {
            frames: vec!["timer_settime".into(), "leak;it (a.c:3)".into()],
            naming: Vec::new(),
            ..callsite("leak", 5)
        };
        let idle = callsite("idle", 0);
        let r = report(vec![
            process(1, "app", vec![leak.clone(), idle]),
            process(2, "app", vec![leak]),
        ]);
        let text = render(&r);
        assert_eq!(
            text,
            "app;leak:it (a.c:3);timer_settime;timerfd_tmrproc 10\n"
        );
        let total: u64 = text
            .lines()
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
            .sum();
        assert_eq!(total, r.processes.iter().map(|p| p.live).sum::<u64>());
    }
}
