//! Tracepoint `format` files → the field offsets the probes read.
//!
//! Layouts change across kernels (`hrtimer_start` gained `was_armed`, the init event was renamed,
//! `sched_process_exit` gained `group_dead`), so nothing here hard-codes an offset.

use std::collections::HashMap;

use anyhow::{anyhow, Result};
use timerwatch_common::Offsets;

/// Field name → (offset, size) of one tracepoint, from its `format` text.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Format {
    fields: HashMap<String, (u32, u32)>,
}

impl Format {
    pub fn parse(text: &str) -> Self {
        let mut fields = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("field:") else {
                continue;
            };
            let mut decl = None;
            let mut offset = None;
            let mut size = None;
            for part in rest.split(';') {
                let part = part.trim();
                if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.trim().parse().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.trim().parse().ok();
                } else if decl.is_none() && !part.is_empty() && !part.starts_with("signed:") {
                    decl = Some(part);
                }
            }
            let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
                continue;
            };
            if let Some(name) = field_name(decl) {
                fields.insert(name.to_string(), (offset, size));
            }
        }
        Self { fields }
    }

    pub fn offset(&self, name: &str) -> Option<u32> {
        self.fields.get(name).map(|&(o, _)| o)
    }

    pub fn has(&self, name: &str) -> bool {
        self.fields.contains_key(name)
    }
}

/// `unsigned long long expires` → `expires`; `char comm[16]` → `comm`; `__data_loc char[] f` → `f`.
fn field_name(decl: &str) -> Option<&str> {
    let last = decl.split_whitespace().last()?;
    let name = last.split('[').next()?;
    let name = name.trim_start_matches('*');
    (!name.is_empty()).then_some(name)
}

/// Where each tracepoint's text comes from; `None` when this kernel lacks the tracepoint.
pub struct Formats {
    pub hrtimer_init: Format,
    pub hrtimer_start: Format,
    pub hrtimer_cancel: Format,
    pub hrtimer_expire_entry: Format,
    pub timer_init: Format,
    pub timer_start: Format,
    pub timer_cancel: Format,
    pub timer_expire_entry: Format,
    pub itimer_state: Option<Format>,
    pub itimer_expire: Option<Format>,
    pub sched_process_exit: Format,
    pub sched_process_fork: Option<Format>,
    pub sys_enter_timer_create: Option<Format>,
    pub sys_exit_timer_create: Option<Format>,
    pub sys_enter_timer_delete: Option<Format>,
    pub sched_waking: Option<Format>,
    pub sched_switch: Option<Format>,
}

fn need(f: &Format, tp: &str, field: &str) -> Result<u32> {
    f.offset(field)
        .ok_or_else(|| anyhow!("tracepoint {tp} has no field `{field}` on this kernel"))
}

fn opt(f: Option<&Format>, field: &str) -> u32 {
    f.and_then(|f| f.offset(field)).unwrap_or(0)
}

impl Formats {
    pub fn offsets(&self) -> Result<Offsets> {
        let hs = &self.hrtimer_start;
        let he = &self.hrtimer_expire_entry;
        let ts = &self.timer_start;
        let te = &self.timer_expire_entry;
        let is = self.itimer_state.as_ref();
        let usec = is.is_some_and(|f| f.has("value_usec"));
        let sub = if usec { "value_usec" } else { "value_nsec" };
        let isub = if usec {
            "interval_usec"
        } else {
            "interval_nsec"
        };
        Ok(Offsets {
            hrtimer_init_hrtimer: need(
                &self.hrtimer_init,
                "hrtimer_setup/hrtimer_init",
                "hrtimer",
            )?,
            hrtimer_start_hrtimer: need(hs, "hrtimer_start", "hrtimer")?,
            hrtimer_start_function: need(hs, "hrtimer_start", "function")?,
            hrtimer_start_expires: need(hs, "hrtimer_start", "expires")?,
            hrtimer_start_softexpires: hs.offset("softexpires").unwrap_or(0),
            hrtimer_start_mode: need(hs, "hrtimer_start", "mode")?,
            hrtimer_cancel_hrtimer: need(&self.hrtimer_cancel, "hrtimer_cancel", "hrtimer")?,
            hrtimer_expire_hrtimer: need(he, "hrtimer_expire_entry", "hrtimer")?,
            hrtimer_expire_function: need(he, "hrtimer_expire_entry", "function")?,
            hrtimer_expire_now: need(he, "hrtimer_expire_entry", "now")?,
            timer_init_timer: need(&self.timer_init, "timer_init", "timer")?,
            timer_start_timer: need(ts, "timer_start", "timer")?,
            timer_start_function: need(ts, "timer_start", "function")?,
            timer_start_expires: need(ts, "timer_start", "expires")?,
            timer_start_flags: ts.offset("flags").unwrap_or(0),
            timer_cancel_timer: need(&self.timer_cancel, "timer_cancel", "timer")?,
            timer_expire_timer: need(te, "timer_expire_entry", "timer")?,
            timer_expire_function: need(te, "timer_expire_entry", "function")?,
            itimer_state_which: opt(is, "which"),
            itimer_state_value_sec: opt(is, "value_sec"),
            itimer_state_value_nsec: opt(is, sub),
            itimer_state_interval_sec: opt(is, "interval_sec"),
            itimer_state_interval_nsec: opt(is, isub),
            itimer_state_usec: usec as u32,
            itimer_expire_which: opt(self.itimer_expire.as_ref(), "which"),
            itimer_expire_pid: opt(self.itimer_expire.as_ref(), "pid"),
            process_exit_group_dead: self.sched_process_exit.offset("group_dead").unwrap_or(0),
            timer_create_created_id: opt(self.sys_enter_timer_create.as_ref(), "created_timer_id"),
            timer_create_ret: opt(self.sys_exit_timer_create.as_ref(), "ret"),
            timer_delete_id: opt(self.sys_enter_timer_delete.as_ref(), "timer_id"),
            sched_waking_pid: opt(self.sched_waking.as_ref(), "pid"),
            sched_switch_next_pid: opt(self.sched_switch.as_ref(), "next_pid"),
            process_fork_child_pid: opt(self.sched_process_fork.as_ref(), "child_pid"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HRTIMER_START_6_18: &str = "name: hrtimer_start
ID: 123
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:void * hrtimer;\toffset:8;\tsize:8;\tsigned:0;
\tfield:void * function;\toffset:16;\tsize:8;\tsigned:0;
\tfield:s64 expires;\toffset:24;\tsize:8;\tsigned:1;
\tfield:s64 softexpires;\toffset:32;\tsize:8;\tsigned:1;
\tfield:enum hrtimer_mode mode;\toffset:40;\tsize:4;\tsigned:0;
\tfield:bool was_armed;\toffset:44;\tsize:1;\tsigned:0;

print fmt: \"hrtimer=%p\"
";

    #[test]
    fn parses_pointer_enum_and_bool_fields() {
        let f = Format::parse(HRTIMER_START_6_18);
        assert_eq!(f.offset("hrtimer"), Some(8));
        assert_eq!(f.offset("function"), Some(16));
        assert_eq!(f.offset("expires"), Some(24));
        assert_eq!(f.offset("mode"), Some(40));
        assert_eq!(f.offset("was_armed"), Some(44));
        assert_eq!(f.offset("common_pid"), Some(4));
        assert_eq!(f.offset("nope"), None);
    }

    #[test]
    fn parses_arrays_and_data_loc() {
        let text = "\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
                    \tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n\
                    \tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;\n";
        let f = Format::parse(text);
        assert_eq!(f.offset("comm"), Some(8));
        assert_eq!(f.offset("filename"), Some(8));
        assert_eq!(f.offset("pid"), Some(24));
    }

    #[test]
    fn expire_entry_order_differs_from_start() {
        // hrtimer_expire_entry puts `now` before `function`; offsets must come from the file.
        let text = "\tfield:void * hrtimer;\toffset:8;\tsize:8;\tsigned:0;\n\
                    \tfield:s64 now;\toffset:16;\tsize:8;\tsigned:1;\n\
                    \tfield:void * function;\toffset:24;\tsize:8;\tsigned:0;\n";
        let f = Format::parse(text);
        assert_eq!(f.offset("function"), Some(24));
        assert_eq!(f.offset("now"), Some(16));
    }
}
