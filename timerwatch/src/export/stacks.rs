//! Live timers per stack, in the shape every profile format wants: root frame first.

use crate::report::{CallsiteReport, Kind, ProcessReport, Report};

/// One frame of a report stack, split back into the parts the report joined
/// (`"func (file:line)"`, see `symbolize::Frame::display`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frame {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u64>,
}

impl Frame {
    pub fn parse(shown: &str) -> Frame {
        let plain = || Frame {
            function: shown.to_owned(),
            file: None,
            line: None,
        };
        let Some(body) = shown.strip_suffix(')') else {
            return plain();
        };
        let Some((function, place)) = body.rsplit_once(" (") else {
            return plain();
        };
        match place.rsplit_once(':') {
            Some((file, line)) if !file.is_empty() => match line.parse() {
                Ok(line) => Frame {
                    function: function.to_owned(),
                    file: Some(file.to_owned()),
                    line: Some(line),
                },
                Err(_) => plain(),
            },
            _ => plain(),
        }
    }

    fn named(function: String) -> Frame {
        Frame {
            function,
            file: None,
            line: None,
        }
    }
}

/// A callsite's stack and what it weighs.
#[derive(Clone, Debug)]
pub struct Stack {
    /// Root first: the process (`comm`), the user frames outermost first, then the leaf: the
    /// kernel callback that fires the timer (`[kind]` when there is none, as for Go timers).
    pub frames: Vec<Frame>,
    pub pid: u32,
    pub comm: String,
    pub kind: Kind,
    pub live: u64,
    pub armed: u64,
    pub wakeups: u64,
}

pub fn of_callsite(p: &ProcessReport, c: &CallsiteReport) -> Stack {
    let mut frames = Vec::with_capacity(c.frames.len() + 2);
    frames.push(Frame::named(p.comm.clone()));
    if c.frames.is_empty() {
        frames.push(Frame::named(
            c.caller.clone().unwrap_or_else(|| "[unknown]".into()),
        ));
    }
    frames.extend(c.frames.iter().rev().map(|f| Frame::parse(f)));
    frames.push(Frame::named(match &c.timer_function {
        Some(f) => f.clone(),
        None => format!("[{}]", c.kind),
    }));
    Stack {
        frames,
        pid: p.pid,
        comm: p.comm.clone(),
        kind: c.kind,
        live: c.live,
        armed: c.armed_total,
        wakeups: c.wakeups.as_ref().map_or(0, |w| w.count),
    }
}

/// Every callsite of the report as a stack.
pub fn of_report(report: &Report) -> Vec<Stack> {
    report
        .processes
        .iter()
        .flat_map(|p| p.callsites.iter().map(move |c| of_callsite(p, c)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{callsite, process, report};

    #[test]
    fn frames_split_back_into_function_file_and_line() {
        let f = Frame::parse("main.leak (main.go:23)");
        assert_eq!(f.function, "main.leak");
        assert_eq!(f.file.as_deref(), Some("main.go"));
        assert_eq!(f.line, Some(23));
        let f = Frame::parse("0x7f00 (/usr/lib/libc.so.6)");
        assert_eq!(f.function, "0x7f00 (/usr/lib/libc.so.6)");
        assert_eq!(Frame::parse("plain").file, None);
        assert_eq!(Frame::parse("f (a:b:x)").function, "f (a:b:x)");
    }

    #[test]
    fn stack_is_root_first_with_the_callback_as_leaf() {
        let c = CallsiteReport {
            frames: vec![
                "timerfd_settime".into(),
                "leak_timerfd (leak.c:9)".into(),
                "main (leak.c:20)".into(),
            ],
            ..callsite("leak_timerfd", 7)
        };
        let r = report(vec![process(3, "leaky", vec![c])]);
        let s = &of_report(&r)[0];
        let names: Vec<&str> = s.frames.iter().map(|f| f.function.as_str()).collect();
        assert_eq!(
            names,
            [
                "leaky",
                "main",
                "leak_timerfd",
                "timerfd_settime",
                "timerfd_tmrproc"
            ]
        );
        assert_eq!(s.live, 7);
    }
}
