//! Names of code in mapped files, kept per file (device and inode) and file offset, so they
//! hold across processes, restarts and address-space layouts, and each file is analysed once.
//!
//! A file's code is named by the best source it has, in this order: a Go binary's pclntab
//! (inlined calls expanded, as Go runtime callsites are; it survives `-ldflags=-s -w`), a
//! separate debug file found on disk (`debug_file`) or fetched by `debuginfod`, the file's own
//! symbols and DWARF. What none of them names stays unnamed and is shown as `binary+0xOFFSET`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use timerwatch_go::GoBinary;
use timerwatch_proc::maps::MapEntry;

use super::debuginfod::{Debuginfod, Fetch};
use super::elf_facts::ElfFacts;
use super::user::{Paths, UserSymbolizer};
use super::{debug_file, Naming};

/// A named code location: one per frame, several for a Go address inside inlined calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Named {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub naming: Naming,
}

/// Identity of a mapped file, as `/proc/PID/maps` prints it.
pub(crate) type FileKey = (String, u64);

struct Object {
    facts: ElfFacts,
    /// Shared with the census of the same binary (`gotrace::analyze_binary`).
    go: Option<Arc<GoBinary>>,
    /// Separate debug file and where it came from.
    debug: Option<(PathBuf, Naming)>,
    /// Build ID whose debug file a debuginfod server is being asked for.
    awaiting: Option<Vec<u8>>,
    /// By file offset and whether it is a return address.
    names: HashMap<(u64, bool), Vec<Named>>,
}

pub(crate) struct Objects {
    objects: HashMap<FileKey, Object>,
    /// Processes using each Go binary: a Go object holds its pclntab (megabytes), so it goes
    /// with the last of them. Other objects are small and stay, names and all.
    go_users: HashMap<FileKey, HashSet<u32>>,
    debuginfod: Option<Debuginfod>,
}

/// How the symbolizer reaches the file of `entry` in `pid`.
pub(crate) fn file_path(pid: u32, paths: Paths, entry: &MapEntry) -> PathBuf {
    match paths {
        Paths::MapFiles => {
            PathBuf::from(format!("/proc/{pid}/map_files/{}", entry.map_files_name()))
        }
        Paths::Symbolic => PathBuf::from(entry.path.as_deref().unwrap_or_default()),
    }
}

impl Objects {
    pub fn new() -> Self {
        Self {
            objects: HashMap::new(),
            go_users: HashMap::new(),
            debuginfod: Debuginfod::from_env(),
        }
    }

    /// `pid` is gone (or exec'd): Go binaries no process uses any more are dropped.
    pub fn forget(&mut self, pid: u32) {
        self.go_users.retain(|key, users| {
            users.remove(&pid);
            if users.is_empty() {
                self.objects.remove(key);
            }
            !users.is_empty()
        });
    }

    /// Changes whenever a debuginfod fetch finishes, so names waiting for one may be looked up
    /// again.
    pub fn generation(&self) -> u64 {
        self.debuginfod.as_ref().map_or(0, Debuginfod::generation)
    }

    /// Names of file offset `offset` of `entry`'s file (mapped in `pid`); empty when nothing
    /// names it. A file that cannot be read now (the process just exited) is retried next time.
    /// The flag says the file's debug file is on its way from debuginfod: see [`Self::rename`].
    pub fn name(
        &mut self,
        user: &mut UserSymbolizer,
        pid: u32,
        paths: Paths,
        entry: &MapEntry,
        offset: u64,
        ret: bool,
    ) -> (Vec<Named>, bool) {
        let path = file_path(pid, paths, entry);
        let key = file_key(entry);
        if !self.objects.contains_key(&key) {
            let Some(mut object) = Object::open(&path, entry, pid) else {
                return (Vec::new(), false);
            };
            object.ask_debuginfod(self.debuginfod.as_mut());
            self.objects.insert(key.clone(), object);
        }
        let object = self.objects.get_mut(&key).expect("inserted above");
        if object.go.is_some() {
            self.go_users.entry(key.clone()).or_default().insert(pid);
        }
        object.ask_debuginfod(self.debuginfod.as_mut());
        if let Some(names) = object.names.get(&(offset, ret)) {
            return (names.clone(), false);
        }
        let (names, stable) = object.lookup(user, &path, offset, ret);
        let awaiting = object.awaiting.is_some();
        if stable && !awaiting {
            object.names.insert((offset, ret), names.clone());
        }
        (names, awaiting)
    }

    /// The name from a debug file that arrived since `key`'s offset was named; `Err(())` while
    /// still waiting, `Ok(None)` when nothing more will come.
    pub fn rename(
        &mut self,
        user: &mut UserSymbolizer,
        key: &FileKey,
        offset: u64,
        ret: bool,
    ) -> Result<Option<Named>, ()> {
        let Some(object) = self.objects.get_mut(key) else {
            return Ok(None);
        };
        object.ask_debuginfod(self.debuginfod.as_mut());
        if object.awaiting.is_some() {
            return Err(());
        }
        let Some((debug, naming)) = object.debug.clone() else {
            return Ok(None);
        };
        let at = if ret {
            offset.saturating_sub(1)
        } else {
            offset
        };
        let Some(vaddr) = object.facts.vaddr(at) else {
            return Ok(None);
        };
        let r = user
            .symbolize_elf(&debug, &[vaddr])
            .pop()
            .unwrap_or_default();
        Ok(r.function.is_some().then(|| named(r, naming)))
    }
}

pub(crate) fn file_key(entry: &MapEntry) -> FileKey {
    (entry.dev.clone(), entry.inode)
}

impl Object {
    fn open(path: &Path, entry: &MapEntry, pid: u32) -> Option<Self> {
        let facts = ElfFacts::read(path)?;
        // Only files Go's linker marked are analysed: the full analysis of any other file
        // (libc, every library) would be wasted work.
        let go = facts
            .go
            .then(|| crate::gotrace::analyze_binary(path).ok())
            .flatten();
        // The path the target knows the binary by: where its debug link is relative to.
        let target_path = Path::new(entry.path.as_deref().unwrap_or_default());
        let debug = (go.is_none() && !facts.own_debug_info)
            .then(|| debug_file::find(target_path, &facts, pid))
            .flatten()
            .map(|p| (p, Naming::Debuginfo));
        Some(Self {
            facts,
            go,
            debug,
            awaiting: None,
            names: HashMap::new(),
        })
    }

    /// For a file with nothing but its own symbols: ask debuginfod for its debug file once, and
    /// take it when it has arrived. Names remembered before it came are dropped.
    fn ask_debuginfod(&mut self, debuginfod: Option<&mut Debuginfod>) {
        let Some(d) = debuginfod else {
            return;
        };
        let wanted = self.go.is_none() && self.debug.is_none() && !self.facts.own_debug_info;
        let Some(id) = self.facts.build_id.as_deref().filter(|_| wanted) else {
            return;
        };
        if self.awaiting.is_none() && !self.names.is_empty() {
            return; // asked before, and no server had it
        }
        match d.get(id) {
            Fetch::Ready(path) => {
                self.debug = Some((path, Naming::Debuginfod));
                self.awaiting = None;
                self.names.clear();
            }
            Fetch::Pending => self.awaiting = Some(id.to_vec()),
            Fetch::Unavailable => self.awaiting = None,
        }
    }

    /// Names at `offset` and whether the answer may be remembered.
    fn lookup(
        &self,
        user: &mut UserSymbolizer,
        path: &Path,
        offset: u64,
        ret: bool,
    ) -> (Vec<Named>, bool) {
        let at = if ret {
            offset.saturating_sub(1)
        } else {
            offset
        };
        let Some(vaddr) = self.facts.vaddr(at) else {
            return (Vec::new(), true);
        };
        if let Some(go) = &self.go {
            let frames = go.symbolize_inline(vaddr);
            if !frames.is_empty() {
                let named = frames
                    .into_iter()
                    .map(|f| Named {
                        function: Some(f.function),
                        file: f.file,
                        line: f.line,
                        naming: Naming::Pclntab,
                    })
                    .collect();
                return (named, true);
            }
        }
        if let Some((debug, naming)) = &self.debug {
            let r = user
                .symbolize_elf(debug, &[vaddr])
                .pop()
                .unwrap_or_default();
            if r.function.is_some() {
                return (vec![named(r, *naming)], true);
            }
        }
        let r = user.symbolize_elf(path, &[vaddr]).pop().unwrap_or_default();
        let stable = r.stable;
        if r.function.is_none() {
            return (Vec::new(), stable);
        }
        (vec![named(r, Naming::Symtab)], stable)
    }
}

fn named(r: super::user::Resolved, naming: Naming) -> Named {
    Named {
        function: r.function,
        file: r.file,
        line: r.line,
        naming,
    }
}
