//! Attaching the one Go uprobe program at every probe point of a traced Go process.
//!
//! Each attachment carries a cookie: the index of its [`GoRecipe`] in the `GO_RECIPES` array, so
//! one program serves every Go version and role. Attachments are scoped to the process
//! (`UProbeScope::OneProcess`): the kernel plants the breakpoint only in that address space, so
//! other processes running the same binary pay nothing.

use std::collections::HashMap;
use std::num::NonZeroU32;

use anyhow::{anyhow, Context, Result};
use aya::{
    maps::Array,
    programs::{
        uprobe::UProbeLinkId,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
        UProbe,
    },
    Ebpf,
};
use timerwatch_common::{names, GoRecipe, GO_RECIPES_MAX};

/// One place to probe in a binary.
#[derive(Clone, Debug)]
pub struct Point {
    /// Function name, for error messages.
    pub name: String,
    /// File offset of the first instruction after the function's frame-pointer set-up.
    pub file_offset: u64,
    pub recipe: GoRecipe,
}

/// Which recipes a set of slots holds: the same binary (device, inode) at the same load bias
/// needs the same recipes, so the children of one binary share one set of slots.
pub type RecipeKey = (u64, u64, u64);

/// Hands out `GO_RECIPES` slots and loads the program on first use.
#[derive(Default)]
pub struct Attacher {
    loaded: bool,
    next_slot: u32,
    shared: HashMap<RecipeKey, u32>,
}

impl Attacher {
    /// Attach every point of `exe` (a path, or `/proc/PID/exe`) for `pid` only. All or
    /// nothing: a half-traced process would report plausible but wrong counts. `key`, when
    /// known, lets processes of the same binary share recipe slots. Returns the links, for a
    /// [`Attacher::detach`] (otherwise they last as long as the program).
    pub fn attach(
        &mut self,
        ebpf: &mut Ebpf,
        pid: u32,
        exe: &str,
        points: &[Point],
        key: Option<RecipeKey>,
    ) -> Result<Vec<UProbeLinkId>> {
        let n = points.len() as u32;
        let shared = key.and_then(|k| self.shared.get(&k).copied());
        let base = shared.unwrap_or(self.next_slot);
        if shared.is_none() && self.next_slot + n > GO_RECIPES_MAX {
            return Err(anyhow!(
                "too many Go probe points ({} slots in use)",
                self.next_slot
            ));
        }
        if shared.is_none() {
            let mut recipes: Array<_, GoRecipe> = Array::try_from(
                ebpf.map_mut(names::GO_RECIPES)
                    .ok_or_else(|| anyhow!("map GO_RECIPES missing"))?,
            )?;
            for (i, p) in points.iter().enumerate() {
                recipes.set(base + i as u32, p.recipe, 0)?;
            }
        }
        let prog: &mut UProbe = ebpf
            .program_mut(names::GO_TIMER)
            .ok_or_else(|| anyhow!("program go_timer missing from the eBPF object"))?
            .try_into()?;
        if !self.loaded {
            prog.load().context("loading the Go uprobe program")?;
            self.loaded = true;
        }
        // `/proc/PID/exe` resolves to the inode the process runs, even in another mount
        // namespace or after the file was replaced on disk. Before an exec, the path of the
        // binary about to run: the kernel plants the breakpoints when the exec maps it.
        let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).ok_or_else(|| anyhow!("pid 0"))?);
        let mut links = Vec::new();
        for (i, p) in points.iter().enumerate() {
            let point = UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(p.file_offset),
                cookie: Some(u64::from(base + i as u32)),
            };
            match prog.attach(point, exe, scope) {
                Ok(link) => links.push(link),
                Err(e) => {
                    for link in links {
                        let _ = prog.detach(link);
                    }
                    return Err(anyhow::Error::from(e)
                        .context(format!("attaching a uprobe to {} in {exe}", p.name)));
                }
            }
        }
        if shared.is_none() {
            self.next_slot += n;
            if let Some(k) = key {
                self.shared.insert(k, base);
            }
        }
        Ok(links)
    }

    /// Take off the probes of one [`Attacher::attach`]; the recipe slots stay, for the next.
    pub fn detach(&mut self, ebpf: &mut Ebpf, links: Vec<UProbeLinkId>) {
        let Some(prog) = ebpf.program_mut(names::GO_TIMER) else {
            return;
        };
        let Ok(prog): Result<&mut UProbe, _> = prog.try_into() else {
            return;
        };
        for link in links {
            // A link of a process that exited is gone with it: nothing left to take off.
            let _ = prog.detach(link);
        }
    }
}
