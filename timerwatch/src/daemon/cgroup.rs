//! Container ID and pod UID from a process's `/proc/PID/cgroup`.
//!
//! Container runtimes name a container's cgroup after its ID and kubelets name the pod's parent
//! cgroup after the pod UID, in one of a few spellings depending on the runtime (containerd,
//! CRI-O, Docker), the cgroup driver (systemd slices and scopes, or cgroupfs directories) and the
//! cgroup version (v2's single `0::` line, or one line per v1 hierarchy):
//!
//! ```text
//! 0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope
//! 0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice/crio-<id>.scope
//! 0::/system.slice/docker-<id>.scope
//! 4:pids:/kubepods/burstable/pod<uid>/<id>
//! 1:name=systemd:/docker/<id>
//! 0::/system.slice/containerd.service/kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>
//! ```
//!
//! Paths seen from another cgroup namespace start with `/..`; only the components matter here.

/// What a process's cgroup path says about its container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerRef {
    /// 64 lowercase hex digits, as `crictl ps` and `docker ps --no-trunc` print it.
    pub container_id: Option<String>,
    /// With dashes, as the API server prints it.
    pub pod_uid: Option<String>,
    /// `containerd`, `cri-o`, `docker`, or `unknown` for a bare ID directory (cgroupfs driver).
    pub runtime: Option<&'static str>,
}

/// Reads and parses `/proc/PID/cgroup` under `proc_root`; a process that is gone has no container.
pub fn of_process(proc_root: &std::path::Path, pid: u32) -> ContainerRef {
    timerwatch_proc::cgroup_under(proc_root, pid)
        .map(|text| parse(&text))
        .unwrap_or_default()
}

/// The container of the first line that names one, v2's line first: on a hybrid host v1's
/// `name=systemd` hierarchy may still show where systemd put the process before the runtime
/// moved it.
pub fn parse(text: &str) -> ContainerRef {
    let paths: Vec<(bool, &str)> = text
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (id, _controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            Some((id == "0", path))
        })
        .collect();
    let ordered = paths
        .iter()
        .filter(|(v2, _)| *v2)
        .chain(paths.iter().filter(|(v2, _)| !*v2));
    let mut best = ContainerRef::default();
    for (_, path) in ordered {
        let found = parse_path(path);
        if found.container_id.is_some() {
            return found;
        }
        if best.pod_uid.is_none() {
            best = found;
        }
    }
    best
}

/// The innermost container ID and pod UID named along one cgroup path.
pub fn parse_path(path: &str) -> ContainerRef {
    let mut out = ContainerRef::default();
    // systemd's "slice:prefix:id" form puts both in one component.
    for component in path.split(['/', ':']).rev() {
        if out.container_id.is_none() {
            if let Some((id, runtime)) = container_id(component) {
                out.container_id = Some(id);
                out.runtime = Some(runtime);
                continue;
            }
        }
        if out.pod_uid.is_none() {
            out.pod_uid = pod_uid(component);
        }
    }
    out
}

const RUNTIME_PREFIXES: [(&str, &str); 5] = [
    ("cri-containerd-", "containerd"),
    ("crio-", "cri-o"),
    ("docker-", "docker"),
    // Podman, for completeness; Kubernetes never runs it.
    ("libpod-", "podman"),
    ("containerd-", "containerd"),
];

fn container_id(component: &str) -> Option<(String, &'static str)> {
    let bare = component.strip_suffix(".scope").unwrap_or(component);
    if is_id(bare) {
        // A cgroupfs-driver directory or the ID part of "…:cri-containerd:<id>".
        return Some((bare.to_string(), "unknown"));
    }
    // "crio-conmon-<id>.scope" is CRI-O's monitor process, not the container: no prefix matches.
    RUNTIME_PREFIXES.iter().find_map(|(prefix, runtime)| {
        let id = bare.strip_prefix(prefix)?;
        is_id(id).then(|| (id.to_string(), *runtime))
    })
}

fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn pod_uid(component: &str) -> Option<String> {
    // "kubepods-burstable-pod<uid>.slice", "kubepods-pod<uid>.slice" (guaranteed), "pod<uid>".
    let bare = component.strip_suffix(".slice").unwrap_or(component);
    let at = bare.rfind("pod")?;
    if at > 0 && !bare[..at].ends_with('-') {
        return None;
    }
    let uid = bare[at + 3..].replace('_', "-");
    is_uid(&uid).then_some(uid)
}

/// 8-4-4-4-12 hex digits: what Kubernetes generates for pod UIDs.
fn is_uid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";
    const UID: &str = "8d2c1f3e-0b4a-4c5d-9e6f-7a8b9c0d1e2f";

    fn underscored() -> String {
        UID.replace('-', "_")
    }

    fn expect(text: &str, runtime: &'static str, pod: bool) {
        let got = parse(text);
        assert_eq!(got.container_id.as_deref(), Some(ID), "{text}");
        assert_eq!(got.runtime, Some(runtime), "{text}");
        assert_eq!(got.pod_uid.as_deref(), pod.then_some(UID), "{text}");
    }

    #[test]
    fn containerd_systemd_driver_v2() {
        let u = underscored();
        expect(
            &format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{ID}.scope\n"
            ),
            "containerd",
            true,
        );
        // Guaranteed QoS pods sit directly under kubepods.slice.
        expect(
            &format!("0::/kubepods.slice/kubepods-pod{u}.slice/cri-containerd-{ID}.scope\n"),
            "containerd",
            true,
        );
    }

    #[test]
    fn containerd_cgroupfs_driver_v1_and_v2() {
        expect(
            &format!(
                "12:pids:/kubepods/burstable/pod{UID}/{ID}\n11:memory:/kubepods/burstable/pod{UID}/{ID}\n1:name=systemd:/kubepods/burstable/pod{UID}/{ID}\n"
            ),
            "unknown",
            true,
        );
        expect(
            &format!("0::/kubepods/besteffort/pod{UID}/{ID}\n"),
            "unknown",
            true,
        );
    }

    #[test]
    fn containerd_systemd_driver_v1_colon_form() {
        let u = underscored();
        expect(
            &format!(
                "5:cpu,cpuacct:/system.slice/containerd.service/kubepods-besteffort-pod{u}.slice:cri-containerd:{ID}\n"
            ),
            "unknown",
            true,
        );
    }

    #[test]
    fn crio_v2_and_v1() {
        let u = underscored();
        expect(
            &format!(
                "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/crio-{ID}.scope\n"
            ),
            "cri-o",
            true,
        );
        expect(
            &format!(
                "9:devices:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/crio-{ID}.scope\n"
            ),
            "cri-o",
            true,
        );
        // conmon monitors the container from its own scope: not the container.
        let conmon = parse(&format!(
            "0::/kubepods.slice/kubepods-pod{u}.slice/crio-conmon-{ID}.scope\n"
        ));
        assert_eq!(conmon.container_id, None);
        assert_eq!(conmon.pod_uid.as_deref(), Some(UID));
    }

    #[test]
    fn docker_v2_and_v1() {
        expect(
            &format!("0::/system.slice/docker-{ID}.scope\n"),
            "docker",
            false,
        );
        expect(
            &format!("13:cpuset:/docker/{ID}\n1:name=systemd:/docker/{ID}\n"),
            "unknown",
            false,
        );
        // Kubernetes on dockershim with the cgroupfs driver.
        expect(
            &format!("7:memory:/kubepods/pod{UID}/{ID}\n"),
            "unknown",
            true,
        );
    }

    #[test]
    fn hybrid_host_prefers_the_v2_line() {
        let u = underscored();
        let text = format!(
            "12:pids:/user.slice\n1:name=systemd:/user.slice/session-3.scope\n0::/kubepods.slice/kubepods-pod{u}.slice/cri-containerd-{ID}.scope\n"
        );
        expect(&text, "containerd", true);
        // And falls back to v1 when v2 names nothing.
        let text = format!("4:pids:/kubepods/burstable/pod{UID}/{ID}\n0::/\n");
        expect(&text, "unknown", true);
    }

    #[test]
    fn paths_relative_to_another_cgroup_namespace() {
        let u = underscored();
        expect(
            &format!("0::/../../kubepods-besteffort-pod{u}.slice/cri-containerd-{ID}.scope\n"),
            "containerd",
            true,
        );
    }

    #[test]
    fn host_processes_have_no_container() {
        for text in [
            "0::/init.scope\n",
            "0::/user.slice/user-0.slice/session-1.scope\n",
            "0::/system.slice/containerd.service\n",
            "12:pids:/\n0::/\n",
            "",
            "garbage",
        ] {
            assert_eq!(parse(text), ContainerRef::default(), "{text:?}");
        }
        // A pod's own slice (e.g. a pause process moved there) has the pod but no container.
        let only_pod = parse(&format!(
            "0::/kubepods.slice/kubepods-pod{}.slice\n",
            underscored()
        ));
        assert_eq!(only_pod.pod_uid.as_deref(), Some(UID));
        assert_eq!(only_pod.container_id, None);
        // Not a pod: "pod" inside a word, or a short hex string.
        assert_eq!(parse_path("/system.slice/ipod-abc.service").pod_uid, None);
        assert_eq!(parse_path("/docker/abc123").container_id, None);
    }
}
