//! Container and pod labels of each traced process, cached per PID.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{cgroup, kubelet::Kubelet};

/// Where a process runs; empty strings for what the node cannot tell (host processes have all
/// five empty).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub struct PodLabels {
    pub container_id: String,
    pub pod_uid: String,
    pub pod: String,
    pub namespace: String,
    pub container: String,
}

/// Labels are re-read this often: a process can be moved between cgroups, and the kubelet may
/// have created a pod's log directory after we first looked.
const REFRESH: Duration = Duration::from_secs(30);

struct Entry {
    comm: String,
    read: Instant,
    labels: PodLabels,
}

pub struct Metadata {
    proc_root: PathBuf,
    kubelet: Kubelet,
    cache: HashMap<u32, Entry>,
}

impl Metadata {
    pub fn new(proc_root: &Path, kubelet_logs: &Path) -> Self {
        Self {
            proc_root: proc_root.to_path_buf(),
            kubelet: Kubelet::new(kubelet_logs),
            cache: HashMap::new(),
        }
    }

    pub fn kubelet(&self) -> &Kubelet {
        &self.kubelet
    }

    /// The labels of `pid`; a changed `comm` means the PID was reused or the process exec'd.
    pub fn labels(&mut self, pid: u32, comm: &str) -> PodLabels {
        let fresh = self
            .cache
            .get(&pid)
            .is_some_and(|e| e.comm == comm && e.read.elapsed() < REFRESH);
        if !fresh {
            let labels = self.read(pid);
            self.cache.insert(
                pid,
                Entry {
                    comm: comm.to_string(),
                    read: Instant::now(),
                    labels,
                },
            );
        }
        self.cache[&pid].labels.clone()
    }

    fn read(&mut self, pid: u32) -> PodLabels {
        let c = cgroup::of_process(&self.proc_root, pid);
        let names = self
            .kubelet
            .names(c.container_id.as_deref(), c.pod_uid.as_deref());
        PodLabels {
            container_id: c.container_id.unwrap_or_default(),
            pod_uid: c.pod_uid.unwrap_or_default(),
            pod: names.pod,
            namespace: names.namespace,
            container: names.container,
        }
    }

    /// Forget processes that left the report, so the cache is bounded by the live ones.
    pub fn retain(&mut self, pids: &HashSet<u32>) {
        self.cache.retain(|pid, _| pids.contains(pid));
    }
}

/// `--namespace`/`--pod`: a process passes when each given list names its value.
pub struct PodFilter {
    pub namespaces: Vec<String>,
    pub pods: Vec<String>,
}

impl PodFilter {
    pub fn admits(&self, l: &PodLabels) -> bool {
        let ok = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
        ok(&self.namespaces, &l.namespace) && ok(&self.pods, &l.pod)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";
    const UID: &str = "8d2c1f3e-0b4a-4c5d-9e6f-7a8b9c0d1e2f";

    #[test]
    fn labels_from_a_fake_proc_and_kubelet_tree() {
        let dir = tempfile::tempdir().unwrap();
        let proc_root = dir.path().join("proc");
        let logs = dir.path().join("log");
        std::fs::create_dir_all(proc_root.join("42")).unwrap();
        std::fs::write(
            proc_root.join("42/cgroup"),
            format!(
                "0::/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{ID}.scope\n",
                UID.replace('-', "_")
            ),
        )
        .unwrap();
        std::fs::create_dir_all(logs.join(format!("pods/shop_web-0_{UID}/nginx"))).unwrap();
        let mut m = Metadata::new(&proc_root, &logs);
        let l = m.labels(42, "nginx");
        assert_eq!(
            l,
            PodLabels {
                container_id: ID.into(),
                pod_uid: UID.into(),
                pod: "web-0".into(),
                namespace: "shop".into(),
                container: "nginx".into(),
            }
        );
        // A host process (no cgroup file here: gone) has no labels, and filters reject it.
        assert_eq!(m.labels(7, "sshd"), PodLabels::default());
        let filter = PodFilter {
            namespaces: vec!["shop".into()],
            pods: vec![],
        };
        assert!(filter.admits(&l));
        assert!(!filter.admits(&PodLabels::default()));
        m.retain(&HashSet::from([42]));
        assert_eq!(m.cache.len(), 1);
    }
}
