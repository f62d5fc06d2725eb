//! Pod and container names from the kubelet's log directories.
//!
//! The node knows which pod a container belongs to only through the kubelet. Its log layout is
//! the one source that needs no socket, no API credentials and no extra privilege, only two
//! read-only host directories:
//!
//! - `<root>/pods/<namespace>_<pod>_<uid>/<container>/<restart>.log`: pod UID → namespace, name
//!   and container names;
//! - `<root>/containers/<pod>_<namespace>_<container>-<container id>.log`: container ID → names.
//!
//! Pod names, namespaces and container names are DNS labels or subdomains, never containing `_`,
//! so the separators are unambiguous. Failure modes, all of which leave the names empty (the
//! container ID and pod UID from the cgroup path still appear): the directories are not mounted or
//! the kubelet writes elsewhere (`podLogsDir`); the kubelet has not created the directory yet
//! (first seconds of a container) or has removed it (after the pod is deleted); a runtime
//! outside Kubernetes (plain Docker) has no kubelet at all.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Names of a pod and one of its containers; empty when unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

#[derive(Debug)]
struct Pod {
    namespace: String,
    name: String,
    containers: Vec<String>,
}

/// A miss re-reads the directories at most this often: a node with a crash-looping container
/// must not turn every report into a directory walk.
const MISS_RESCAN: Duration = Duration::from_secs(5);
/// Even without misses, deleted pods are dropped this often.
const FULL_RESCAN: Duration = Duration::from_secs(60);

pub struct Kubelet {
    root: PathBuf,
    pods: HashMap<String, Pod>,
    containers: HashMap<String, Names>,
    scanned: Option<Instant>,
}

impl Kubelet {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            pods: HashMap::new(),
            containers: HashMap::new(),
            scanned: None,
        }
    }

    /// Whether the kubelet's pod log directory exists under the root (for a start-up note).
    pub fn available(&self) -> bool {
        self.root.join("pods").is_dir()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Names for a container ID and/or pod UID from the cgroup path.
    pub fn names(&mut self, container_id: Option<&str>, pod_uid: Option<&str>) -> Names {
        if container_id.is_none() && pod_uid.is_none() {
            return Names::default();
        }
        let stale = self.scanned.is_none_or(|t| t.elapsed() >= FULL_RESCAN);
        let mut found = self.lookup(container_id, pod_uid);
        let missed = found.pod.is_empty() || found.container.is_empty();
        if stale || (missed && self.scanned.is_none_or(|t| t.elapsed() >= MISS_RESCAN)) {
            self.scan();
            found = self.lookup(container_id, pod_uid);
        }
        found
    }

    fn lookup(&self, container_id: Option<&str>, pod_uid: Option<&str>) -> Names {
        if let Some(n) = container_id.and_then(|id| self.containers.get(id)) {
            return n.clone();
        }
        let Some(pod) = pod_uid.and_then(|uid| self.pods.get(uid)) else {
            return Names::default();
        };
        Names {
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            // Without the container's symlink only a single-container pod says which it is.
            container: match pod.containers.as_slice() {
                [only] => only.clone(),
                _ => String::new(),
            },
        }
    }

    fn scan(&mut self) {
        self.scanned = Some(Instant::now());
        self.pods = list(&self.root.join("pods"))
            .filter_map(|(name, path)| {
                let (namespace, pod, uid) = parse_pod_dir(&name)?;
                let containers = list(&path)
                    .filter(|(_, p)| p.is_dir())
                    .map(|(n, _)| n)
                    .collect();
                Some((
                    uid.to_string(),
                    Pod {
                        namespace: namespace.to_string(),
                        name: pod.to_string(),
                        containers,
                    },
                ))
            })
            .collect();
        self.containers = list(&self.root.join("containers"))
            .filter_map(|(name, _)| {
                let (names, id) = parse_container_log(&name)?;
                Some((id.to_string(), names))
            })
            .collect();
    }
}

fn list(dir: &Path) -> impl Iterator<Item = (String, PathBuf)> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            Some((e.file_name().into_string().ok()?, e.path()))
        })
}

/// `<namespace>_<pod>_<uid>` → (namespace, pod, uid).
pub fn parse_pod_dir(name: &str) -> Option<(&str, &str, &str)> {
    let mut parts = name.split('_');
    let (ns, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || ns.is_empty() || pod.is_empty() || uid.is_empty() {
        return None;
    }
    Some((ns, pod, uid))
}

/// `<pod>_<namespace>_<container>-<64 hex>.log` → (names, container ID).
pub fn parse_container_log(name: &str) -> Option<(Names, &str)> {
    let stem = name.strip_suffix(".log")?;
    let (rest, id) = stem.rsplit_once('-')?;
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let (pod, ns, container) = parse_pod_dir(rest)?;
    Some((
        Names {
            namespace: ns.to_string(),
            pod: pod.to_string(),
            container: container.to_string(),
        },
        id,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";
    const UID: &str = "8d2c1f3e-0b4a-4c5d-9e6f-7a8b9c0d1e2f";

    #[test]
    fn parses_directory_and_link_names() {
        assert_eq!(
            parse_pod_dir(&format!("kube-system_coredns-5d78c9869d-x2x7q_{UID}")),
            Some(("kube-system", "coredns-5d78c9869d-x2x7q", UID))
        );
        assert_eq!(parse_pod_dir("no-separators"), None);
        assert_eq!(parse_pod_dir("a_b_c_d"), None);
        let link = format!("web-0_shop_nginx-sidecar-{ID}.log");
        let (names, id) = parse_container_log(&link).unwrap();
        assert_eq!(id, ID);
        assert_eq!(
            names,
            Names {
                namespace: "shop".into(),
                pod: "web-0".into(),
                container: "nginx-sidecar".into()
            }
        );
        assert_eq!(parse_container_log("web-0_shop_nginx-abc.log"), None);
        assert_eq!(parse_container_log(&format!("web-0_shop_nginx-{ID}")), None);
    }

    #[test]
    fn resolves_from_a_log_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let pod_dir = root.join(format!("pods/shop_web-0_{UID}"));
        std::fs::create_dir_all(pod_dir.join("nginx")).unwrap();
        std::fs::create_dir_all(pod_dir.join("sidecar")).unwrap();
        std::fs::create_dir_all(root.join("containers")).unwrap();
        std::os::unix::fs::symlink(
            pod_dir.join("nginx/0.log"),
            root.join(format!("containers/web-0_shop_nginx-{ID}.log")),
        )
        .unwrap();
        let mut k = Kubelet::new(root);
        assert!(k.available());
        let by_id = k.names(Some(ID), Some(UID));
        assert_eq!(
            (
                by_id.namespace.as_str(),
                by_id.pod.as_str(),
                by_id.container.as_str()
            ),
            ("shop", "web-0", "nginx")
        );
        // Another container of the pod without a symlink: pod names, no container name (two
        // containers, so it cannot be guessed).
        let other = "a".repeat(64);
        let by_uid = k.names(Some(&other), Some(UID));
        assert_eq!(
            (by_uid.pod.as_str(), by_uid.container.as_str()),
            ("web-0", "")
        );
        assert_eq!(k.names(None, None), Names::default());
        assert_eq!(k.names(Some(&other), None), Names::default());
    }

    #[test]
    fn missing_root_is_not_an_error() {
        let mut k = Kubelet::new(Path::new("/nonexistent/timerwatch"));
        assert!(!k.available());
        assert_eq!(k.names(Some(ID), Some(UID)), Names::default());
    }
}
