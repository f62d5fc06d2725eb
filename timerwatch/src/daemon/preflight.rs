//! Proof at start-up that the daemon can do its job, or one line saying everything that is
//! missing, so a DaemonSet that lacks a capability or a host mount fails visibly and at once
//! instead of exporting empty or nameless series.

use std::path::Path;

use crate::{failure::Failure, probe::privileges};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_CHECKPOINT_RESTORE: u32 = 40;

/// Capabilities the daemon needs beyond tracing's: binaries of processes in other mount
/// namespaces (every container) are read through `/proc/PID/map_files`, which the kernel opens
/// only for CAP_CHECKPOINT_RESTORE (or CAP_SYS_ADMIN).
pub fn missing_caps(cap_eff: u64) -> Vec<&'static str> {
    let has = |c: u32| cap_eff & (1u64 << c) != 0;
    let mut out = privileges::missing(cap_eff);
    if !has(CAP_CHECKPOINT_RESTORE) && !has(CAP_SYS_ADMIN) {
        out.push("CAP_CHECKPOINT_RESTORE");
    }
    out
}

/// Whether `/proc/self/status` says we are in a child PID namespace: BPF reports host PIDs, which
/// mean nothing there.
pub fn in_child_pid_ns(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .is_some_and(|ids| ids.split_whitespace().count() > 1)
}

/// `/proc/PID/map_files/<range>` of the first file-backed mapping of `pid`.
fn first_map_file(pid: &str) -> Option<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let range = maps
        .lines()
        .find(|l| {
            l.split_whitespace()
                .nth(5)
                .is_some_and(|p| p.starts_with('/'))
        })?
        .split_whitespace()
        .next()?;
    // maps pads addresses to 8 digits, map_files names do not (a non-PIE binary at 0x400000).
    let (start, end) = range.split_once('-')?;
    let hex = |h: &str| u64::from_str_radix(h, 16).ok();
    let range = format!("{:x}-{:x}", hex(start)?, hex(end)?);
    Some(format!("/proc/{pid}/map_files/{range}"))
}

/// Names come from other processes' maps: some user process other than us must be readable.
/// One refusal proves nothing (a sandbox's init may be off limits even to root), so this fails
/// only when every process tried refuses.
fn other_processes_readable() -> Result<(), String> {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Err("cannot list /proc: the host's /proc is needed".to_string());
    };
    let mut refused = None;
    let pids = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()) && *n != me);
    for pid in pids.take(200) {
        match std::fs::read_to_string(format!("/proc/{pid}/maps")) {
            // Kernel threads have no maps and prove nothing either way.
            Ok(maps) if maps.is_empty() => {}
            Ok(_) => return Ok(()),
            Err(e) => refused = Some(format!("cannot read /proc/{pid}/maps ({e})")),
        }
    }
    match refused {
        Some(e) => Err(format!("{e}: /proc must be the host's, without hidepid")),
        None => Ok(()),
    }
}

fn readable(path: &Path) -> Result<(), String> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| format!("cannot read {} ({e})", path.display()))
}

/// Host access problems, checked by doing what the daemon will do.
fn host_problems(status: &str, cap_eff: u64) -> Vec<String> {
    let mut out = Vec::new();
    if in_child_pid_ns(status) {
        out.push("not in the host PID namespace (set hostPID: true)".to_string());
    }
    let tracefs = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .map(Path::new)
        .find(|d| d.join("events").is_dir());
    match tracefs {
        Some(dir) => {
            if let Err(e) = readable(&dir.join("events/timer/hrtimer_start/id")) {
                out.push(format!("{e}: tracefs must be readable"));
            }
        }
        None if cap_eff & (1 << CAP_SYS_ADMIN) == 0 => out.push(
            "tracefs is not mounted at /sys/kernel/tracing (mount the host's, read-only is enough)"
                .to_string(),
        ),
        // Tracer::start mounts it, as the CLI does.
        None => {}
    }
    if let Err(e) = readable(Path::new("/sys/kernel/btf/vmlinux")) {
        out.push(format!("{e}: mount the host's /sys/kernel/btf"));
    }
    if let Err(e) = other_processes_readable() {
        out.push(e);
    }
    // The kernel checks the capability on every map_files open, ours included.
    if let Some(entry) = first_map_file("self") {
        if let Err(e) = std::fs::metadata(&entry) {
            out.push(format!("cannot open {entry} ({e})"));
        }
    }
    out
}

pub fn check() -> Result<(), Failure> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(caps) = privileges::effective_caps(&status) else {
        return Err(Failure::privilege(
            "cannot read capabilities from /proc/self/status",
        ));
    };
    let missing = missing_caps(caps);
    if !missing.is_empty() {
        // Host probes would only fail for the same reason: name the capabilities alone.
        return Err(Failure::privilege(format!(
            "missing privileges: needs {} (deploy/daemonset.yaml grants exactly what the daemon needs)",
            missing.join(", ")
        )));
    }
    let problems = host_problems(&status, caps);
    if problems.is_empty() {
        return Ok(());
    }
    Err(Failure::privilege(format!(
        "cannot run the daemon: {}",
        problems.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST_CAPS: u64 =
        (1 << 39) | (1 << 38) | (1 << 19) | (1 << 2) | (1 << CAP_CHECKPOINT_RESTORE);

    #[test]
    fn the_manifest_capabilities_suffice_and_each_is_needed() {
        assert!(missing_caps(MANIFEST_CAPS).is_empty());
        for (bit, name) in [
            (39, "CAP_BPF"),
            (38, "CAP_PERFMON"),
            (19, "CAP_SYS_PTRACE"),
            (2, "CAP_DAC_READ_SEARCH"),
            (CAP_CHECKPOINT_RESTORE, "CAP_CHECKPOINT_RESTORE"),
        ] {
            assert_eq!(missing_caps(MANIFEST_CAPS & !(1 << bit)), vec![name]);
        }
        // Root's full set, as on a host.
        assert!(missing_caps(0x000001ff_ffffffff).is_empty());
    }

    #[test]
    fn pid_namespace_from_status() {
        assert!(!in_child_pid_ns("Name:\tx\nNSpid:\t4242\n"));
        assert!(in_child_pid_ns("Name:\tx\nNSpid:\t4242\t1\n"));
        assert!(!in_child_pid_ns("Name:\tx\n"));
    }
}
