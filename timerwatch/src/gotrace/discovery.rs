//! Which processes a run looks at for Go timers: the ones its filters admit now, and every one
//! that execs later (the kernel sends an exec record for each process the run traces), so that
//! pods started after the daemon are found like those before it.

use std::path::Path;

use timerwatch_go::elf::Elf;

use crate::procfs;

/// A run's Go filter: every process, or those named by pid or command name.
#[derive(Clone, Debug, Default)]
pub struct Discovery {
    pub all: bool,
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
}

impl Discovery {
    /// Whether `pid`, as it runs now, is one of the run's processes.
    pub fn admits(&self, pid: u32) -> bool {
        if pid == std::process::id() {
            return false;
        }
        self.all
            || self.pids.contains(&pid)
            || (!self.comms.is_empty()
                && procfs::comm(pid).is_some_and(|c| self.comms.contains(&c)))
    }

    /// The admitted processes that exist now.
    pub fn current(&self) -> Vec<u32> {
        let mut pids = if self.all {
            let Ok(dir) = std::fs::read_dir("/proc") else {
                return Vec::new();
            };
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .collect()
        } else {
            let mut pids = self.pids.clone();
            for comm in &self.comms {
                pids.extend(procfs::pids_with_comm(comm));
            }
            pids
        };
        pids.retain(|&p| p != std::process::id());
        pids.sort_unstable();
        pids.dedup();
        pids
    }
}

/// Whether the executable at `path` may be a Go binary, from its section headers alone: the
/// one check a non-Go binary costs (once per binary, since analyses are cached). Go's linker
/// always emits `.go.buildinfo`; a file without section headers gets the full analysis.
pub fn may_be_go(path: &Path) -> bool {
    match Elf::open(path) {
        Ok(elf) => {
            elf.sections.is_empty()
                || [".go.buildinfo", ".gopclntab", ".note.go.buildid"]
                    .iter()
                    .any(|n| elf.section(n).is_some())
        }
        // Unreadable now: let the analysis say why (or that it is gone).
        Err(timerwatch_go::Error::NotGo) => false,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_binary_is_not_go_and_we_never_admit_ourselves() {
        let exe = std::env::current_exe().unwrap();
        assert!(!may_be_go(&exe));
        assert!(!may_be_go(Path::new("/proc/self/status")));
        let all = Discovery {
            all: true,
            ..Discovery::default()
        };
        assert!(!all.admits(std::process::id()));
        assert!(!all.current().contains(&std::process::id()));
        assert!(all.admits(1));
        let named = Discovery {
            comms: vec!["no-such-comm-x".into()],
            ..Discovery::default()
        };
        assert!(!named.admits(1));
    }
}
