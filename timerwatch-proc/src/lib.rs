//! Everything timerwatch reads about other processes from `/proc`, in one place: names,
//! existence, thread groups and timers that predate our probes here; address-space layout in
//! [`maps`]; memory in [`mem`], within a [`budget`] of time and bytes per walk. Symbolization,
//! the Go analysis and the daemon all read through this crate, so each file has one parser. Everything a target controls is hostile input:
//! parsers return `None` for what they cannot read rather than guessing.

pub mod budget;
pub mod maps;
pub mod mem;

use std::path::PathBuf;

/// CLOCK_MONOTONIC in ns: the clock `bpf_ktime_get_ns` uses, so event times compare directly.
/// It lives beside the /proc readers because session start times taken with it are what
/// pre-existing timers (read from /proc) are measured against.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn proc_path(pid: u32, leaf: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{leaf}"))
}

/// Whether a process (thread group) with this id exists now.
pub fn exists(pid: u32) -> bool {
    proc_path(pid, "stat").exists()
}

/// The value of one `Key:` line of a `/proc/PID/status` text, trimmed.
pub fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
}

/// Our own `/proc/self/status`, empty if unreadable.
pub fn own_status() -> String {
    std::fs::read_to_string("/proc/self/status").unwrap_or_default()
}

/// The thread group of a task id (a `-p` may name a thread).
pub fn tgid_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(proc_path(pid, "status")).ok()?;
    status_field(&status, "Tgid")?.parse().ok()
}

/// `/proc/PID/cgroup` under `proc_root` (the host's /proc, or a test's stand-in).
pub fn cgroup_under(proc_root: &std::path::Path, pid: u32) -> Option<String> {
    std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()
}

pub fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(proc_path(pid, "comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

pub fn exe(pid: u32) -> Option<String> {
    std::fs::read_link(proc_path(pid, "exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// POSIX timers listed in `/proc/PID/timers`: the ones created before we attached are invisible
/// to the probes, but this file still shows them.
pub fn posix_timer_count(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(proc_path(pid, "timers")).ok()?;
    Some(count_posix_timers(&text))
}

pub fn count_posix_timers(text: &str) -> u64 {
    text.lines().filter(|l| l.starts_with("ID:")).count() as u64
}

/// Task ids whose comm equals `name` (for `--comm` pre-existing counts).
pub fn pids_with_comm(name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| comm(pid).as_deref() == Some(name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_timers_file_entries() {
        let text = "ID: 0\nsignal: 34/0000000000000000\nnotify: signal/pid.100\nClockID: 1\n\
                    ID: 1\nsignal: 34/0000000000000000\nnotify: signal/pid.100\nClockID: 1\n";
        assert_eq!(count_posix_timers(text), 2);
        assert_eq!(count_posix_timers(""), 0);
    }

    #[test]
    fn status_fields_by_exact_key() {
        let status = "Name:\tx\nTgid:\t42\nTgidX:\t7\nCapEff:\t000001ffffffffff\n";
        assert_eq!(status_field(status, "Tgid"), Some("42"));
        assert_eq!(status_field(status, "CapEff"), Some("000001ffffffffff"));
        assert_eq!(status_field(status, "Cap"), None);
        assert_eq!(status_field("", "Tgid"), None);
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(exists(me));
        assert_eq!(tgid_of(me), Some(me));
        assert!(comm(me).is_some());
        assert!(!exists(u32::MAX - 1));
    }
}
