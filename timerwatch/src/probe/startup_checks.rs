//! What a container can take away from timerwatch besides capabilities, checked before loading
//! so the user gets one line naming the cause and what to change, instead of
//! `failed to create map …: Operation not permitted` or an OOM kill minutes later:
//!
//! - a seccomp filter that refuses `bpf()` or `perf_event_open()` (the default profiles of podman
//!   and CRI-O before containers/common 0.60 allow them only with CAP_SYS_ADMIN);
//! - a memory cgroup limit too small for the ring buffer and maps, which are charged to it.
//!
//! Runs after the capability check: without CAP_BPF the kernel refuses `bpf()` with the same
//! EPERM a seccomp filter returns, and the capability is then the thing to name.

use std::path::{Path, PathBuf};

/// The seccomp profile shipped for the agent, as the error names it.
pub const PROFILE: &str = "deploy/seccomp-timerwatch.json";

/// Kernel memory of every BPF map except the ring buffer, measured with `bpftool map show`
/// (`memlock`: about 57 MiB on a 2-CPU machine) and rounded up: the two LRU hashes of 2^18
/// entries (OWNERS, GO_SEEN) are most of it. Per-CPU maps add a little per CPU.
pub const MAPS_BYTES: u64 = 60 << 20;
pub const PER_CPU_BYTES: u64 = 64 << 10;
/// The process itself: code, symbolizer caches, the live table and report of a busy node.
pub const PROCESS_BYTES: u64 = 64 << 20;

/// `Seccomp:` of `/proc/self/status`: 0 none, 1 strict, 2 filter.
pub fn seccomp_mode(status: &str) -> Option<u8> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))?
        .trim()
        .parse()
        .ok()
}

/// The one line for a syscall that failed with `errno` although the capabilities are there;
/// `None` when the errno does not point at a filter.
pub fn seccomp_refusal(syscall: &str, errno: i32, mode: Option<u8>) -> Option<String> {
    // A filter returns what its profile says: EPERM for a named syscall, ENOSYS (the default
    // action of the runtimes' profiles) for one it does not list.
    if errno != libc::EPERM && errno != libc::ENOSYS {
        return None;
    }
    let what = std::io::Error::from_raw_os_error(errno);
    Some(match mode {
        Some(2) => format!(
            "a seccomp filter blocks {syscall}() ({what}; Seccomp: 2 in /proc/self/status): run \
             with the profile {PROFILE} (Kubernetes: seccompProfile type Localhost; podman/docker: \
             --security-opt seccomp={PROFILE}), not the runtime's default"
        ),
        _ => format!(
            "the kernel refused {syscall}() ({what}) although no seccomp filter is set: a Linux \
             security module (SELinux, AppArmor, lockdown) forbids BPF here"
        ),
    })
}

/// The error number of a syscall's -1 return.
fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Creates (and closes) the smallest map there is: what loading does first.
fn probe_bpf() -> Result<(), i32> {
    #[repr(C)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
    }
    let attr = MapCreate {
        map_type: 2, // BPF_MAP_TYPE_ARRAY
        key_size: 4,
        value_size: 4,
        max_entries: 1,
    };
    // SAFETY: attr is a valid prefix of union bpf_attr for BPF_MAP_CREATE; the kernel treats the
    // bytes past `size` as zero.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            0, // BPF_MAP_CREATE
            &attr as *const MapCreate,
            std::mem::size_of::<MapCreate>() as u32,
        )
    };
    if fd < 0 {
        return Err(last_errno());
    }
    // SAFETY: a descriptor we own.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

/// `perf_event_open` with no attribute: the kernel answers EFAULT without opening anything, so
/// any EPERM/ENOSYS comes from a filter in front of it.
fn probe_perf_event_open() -> Result<(), i32> {
    // SAFETY: a null attribute pointer is rejected by the kernel before anything happens.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            std::ptr::null::<u8>(),
            0,
            -1,
            -1,
            0,
        )
    };
    if rc >= 0 {
        // SAFETY: unexpected, but then it is a descriptor we own.
        unsafe { libc::close(rc as i32) };
        return Ok(());
    }
    match last_errno() {
        libc::EFAULT | libc::EINVAL | libc::E2BIG => Ok(()),
        errno => Err(errno),
    }
}

fn seccomp_check(status: &str) -> Result<(), String> {
    let mode = seccomp_mode(status);
    for (syscall, result) in [
        ("bpf", probe_bpf()),
        ("perf_event_open", probe_perf_event_open()),
    ] {
        if let Err(errno) = result {
            if let Some(line) = seccomp_refusal(syscall, errno, mode) {
                return Err(line);
            }
        }
    }
    Ok(())
}

/// A cgroup membership line of `/proc/self/cgroup`: the memory controller's path (v1), or the
/// unified path (v2, which holds the memory controller when it is enabled there).
#[derive(Debug, PartialEq, Eq)]
pub struct Membership {
    pub v1_memory: Option<String>,
    pub v2: Option<String>,
}

pub fn memberships(proc_cgroup: &str) -> Membership {
    let mut m = Membership {
        v1_memory: None,
        v2: None,
    };
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            m.v2 = Some(path.to_string());
        } else if controllers.split(',').any(|c| c == "memory") {
            m.v1_memory = Some(path.to_string());
        }
    }
    m
}

/// A cgroup filesystem mount: the hierarchy's directory it shows (`root`) and where.
#[derive(Debug, PartialEq, Eq)]
pub struct CgroupMount {
    pub root: String,
    pub mount_point: PathBuf,
}

/// The v1 memory hierarchy's and the v2 hierarchy's mounts from `/proc/self/mountinfo`.
pub fn cgroup_mounts(mountinfo: &str) -> (Option<CgroupMount>, Option<CgroupMount>) {
    let mut v1 = None;
    let mut v2 = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut fields = left.split_whitespace().skip(3);
        let (Some(root), Some(mount_point)) = (fields.next(), fields.next()) else {
            continue;
        };
        let mount = CgroupMount {
            root: unescape(root),
            mount_point: PathBuf::from(unescape(mount_point)),
        };
        let mut right = right.split_whitespace();
        match (right.next(), right.nth(1)) {
            (Some("cgroup2"), _) if v2.is_none() => v2 = Some(mount),
            (Some("cgroup"), Some(opts))
                if v1.is_none() && opts.split(',').any(|o| o == "memory") =>
            {
                v1 = Some(mount)
            }
            _ => {}
        }
    }
    (v1, v2)
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directories to read a limit from, innermost first: our cgroup under the mount when the
/// mount shows an ancestor of it (the host's hierarchy), else the mount's own directory (a
/// container's private cgroup namespace or runc's bind mount of the container's cgroup).
pub fn limit_dirs(mount: &CgroupMount, path: &str) -> Vec<PathBuf> {
    let root = mount.root.trim_end_matches('/');
    let relative = match path.strip_prefix(root) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest.trim_start_matches('/'),
        _ => "",
    };
    let mut dirs = Vec::new();
    let mut dir = mount.mount_point.join(relative);
    loop {
        dirs.push(dir.clone());
        if dir == mount.mount_point || !dir.pop() {
            break;
        }
    }
    dirs
}

/// A limit file's value in bytes; `None` for "max" or v1's page-rounded "unlimited".
pub fn parse_limit(text: &str) -> Option<u64> {
    let v: u64 = text.trim().parse().ok()?;
    // v1 reports no limit as PAGE_COUNTER_MAX pages, about 2^63.
    (v < 1 << 62).then_some(v)
}

/// The smallest memory limit over our cgroup and its visible ancestors, with the file it came
/// from; `None` when no limit applies or none is visible.
pub fn memory_limit() -> Option<(u64, PathBuf)> {
    let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let member = memberships(&proc_cgroup);
    let (v1, v2) = cgroup_mounts(&mountinfo);
    let mut candidates = Vec::new();
    if let (Some(mount), Some(path)) = (&v1, &member.v1_memory) {
        candidates.extend(
            limit_dirs(mount, path)
                .into_iter()
                .map(|d| d.join("memory.limit_in_bytes")),
        );
    }
    if let (Some(mount), Some(path)) = (&v2, &member.v2) {
        candidates.extend(
            limit_dirs(mount, path)
                .into_iter()
                .map(|d| d.join("memory.max")),
        );
    }
    candidates
        .into_iter()
        .filter_map(|f| {
            let limit = parse_limit(&std::fs::read_to_string(&f).ok()?)?;
            Some((limit, f))
        })
        .min_by_key(|(limit, _)| *limit)
}

/// Bytes the tracer needs in its memory cgroup with a ring buffer of `ring_bytes`.
pub fn memory_needed(ring_bytes: u64, cpus: u64) -> u64 {
    ring_bytes + MAPS_BYTES + PER_CPU_BYTES * cpus + PROCESS_BYTES
}

fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

/// The one line for a limit below what is needed, or `None` when it suffices.
pub fn memory_shortfall(limit: u64, file: &Path, ring_bytes: u64, cpus: u64) -> Option<String> {
    let needed = memory_needed(ring_bytes, cpus);
    (limit < needed).then(|| {
        format!(
            "the memory limit is {} MiB ({}) but timerwatch needs at least {} MiB: {} MiB ring \
             buffer (--ring-buffer-size) + {} MiB of BPF maps + {} MiB for the process; raise the \
             container's memory limit (Kubernetes resources.limits.memory, podman --memory) or \
             lower --ring-buffer-size",
            limit >> 20,
            file.display(),
            mib(needed),
            mib(ring_bytes),
            mib(MAPS_BYTES + PER_CPU_BYTES * cpus),
            mib(PROCESS_BYTES),
        )
    })
}

fn possible_cpus() -> u64 {
    // BPF per-CPU maps are sized by possible CPUs, e.g. "0-3".
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| {
            s.trim()
                .split(',')
                .map(|r| match r.split_once('-') {
                    Some((a, b)) => Some(b.parse::<u64>().ok()? - a.parse::<u64>().ok()? + 1),
                    None => r.parse::<u64>().ok().map(|_| 1),
                })
                .sum::<Option<u64>>()
        })
        .unwrap_or(1)
}

/// `Err(line)` naming the first thing in the way, after the capability check has passed.
pub fn check(ring_bytes: u32) -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    seccomp_check(&status)?;
    if let Some((limit, file)) = memory_limit() {
        if let Some(line) = memory_shortfall(limit, &file, u64::from(ring_bytes), possible_cpus()) {
            return Err(line);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seccomp_field() {
        assert_eq!(
            seccomp_mode("Name:\tx\nSeccomp:\t2\nSeccomp_filters:\t1\n"),
            Some(2)
        );
        assert_eq!(seccomp_mode("Seccomp:\t0\n"), Some(0));
        assert_eq!(seccomp_mode("Name:\tx\n"), None);
    }

    #[test]
    fn a_filtered_eperm_names_seccomp_and_the_profile() {
        let line = seccomp_refusal("bpf", libc::EPERM, Some(2)).unwrap();
        assert!(line.contains("seccomp") && line.contains(PROFILE), "{line}");
        assert!(!line.contains('\n'));
        let line = seccomp_refusal("perf_event_open", libc::ENOSYS, Some(2)).unwrap();
        assert!(line.contains("perf_event_open()"), "{line}");
        // Without a filter the cause is elsewhere, and said so.
        let line = seccomp_refusal("bpf", libc::EPERM, Some(0)).unwrap();
        assert!(line.contains("no seccomp filter"), "{line}");
        // Other errors (ENOMEM, EINVAL) are not a filter's doing.
        assert_eq!(seccomp_refusal("bpf", libc::ENOMEM, Some(2)), None);
    }

    #[test]
    fn memberships_v1_v2_and_hybrid() {
        let hybrid = "9:name=systemd:/\n4:memory:/machine/libpod-abc\n1:cpu,cpuacct:/x\n0::/u\n";
        assert_eq!(
            memberships(hybrid),
            Membership {
                v1_memory: Some("/machine/libpod-abc".into()),
                v2: Some("/u".into())
            }
        );
        assert_eq!(
            memberships("0::/kubepods.slice/pod1/cri-containerd-1.scope\n"),
            Membership {
                v1_memory: None,
                v2: Some("/kubepods.slice/pod1/cri-containerd-1.scope".into())
            }
        );
    }

    const MOUNTINFO: &str = "\
29 23 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
33 29 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
34 29 0:31 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 29 0:36 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn mounts_of_the_memory_and_unified_hierarchies() {
        let (v1, v2) = cgroup_mounts(MOUNTINFO);
        assert_eq!(
            v1,
            Some(CgroupMount {
                root: "/".into(),
                mount_point: "/sys/fs/cgroup/memory".into()
            })
        );
        assert_eq!(
            v2.unwrap().mount_point,
            PathBuf::from("/sys/fs/cgroup/unified")
        );
        // runc's view: the container's own cgroup bind-mounted as the hierarchy's root.
        let (v1, _) = cgroup_mounts(
            "700 690 0:30 /machine/libpod-abc /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n",
        );
        assert_eq!(v1.unwrap().root, "/machine/libpod-abc");
        assert_eq!(unescape("/a\\040b"), "/a b");
    }

    #[test]
    fn limit_dirs_walk_up_to_the_mount() {
        let host = CgroupMount {
            root: "/".into(),
            mount_point: "/sys/fs/cgroup/memory".into(),
        };
        assert_eq!(
            limit_dirs(&host, "/a/b"),
            vec![
                PathBuf::from("/sys/fs/cgroup/memory/a/b"),
                PathBuf::from("/sys/fs/cgroup/memory/a"),
                PathBuf::from("/sys/fs/cgroup/memory"),
            ]
        );
        let bound = CgroupMount {
            root: "/machine/libpod-abc".into(),
            mount_point: "/sys/fs/cgroup/memory".into(),
        };
        assert_eq!(
            limit_dirs(&bound, "/machine/libpod-abc"),
            vec![PathBuf::from("/sys/fs/cgroup/memory")]
        );
        // A namespaced path that is not under the mount's root: only the mount itself.
        assert_eq!(
            limit_dirs(&bound, "/"),
            vec![PathBuf::from("/sys/fs/cgroup/memory")]
        );
    }

    #[test]
    fn limits_and_shortfall() {
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit("268435456\n"), Some(256 << 20));
        let file = Path::new("/sys/fs/cgroup/memory.max");
        // The DaemonSet's 256 MiB with the default 8 MiB ring buffer is enough.
        assert_eq!(memory_shortfall(256 << 20, file, 8 << 20, 64), None);
        let line = memory_shortfall(64 << 20, file, 8 << 20, 2).unwrap();
        assert!(line.contains("memory limit is 64 MiB"), "{line}");
        assert!(line.contains("--ring-buffer-size"), "{line}");
        assert!(line.contains("resources.limits.memory"), "{line}");
    }
}
