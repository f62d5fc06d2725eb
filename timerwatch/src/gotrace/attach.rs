//! Attaching the one Go uprobe program at every probe point of a traced Go process.
//!
//! Each attachment carries a cookie: the index of its [`GoRecipe`] in the `GO_RECIPES` array, so
//! one program serves every Go version and role. Attachments are scoped to the process
//! (`UProbeScope::OneProcess`): the kernel plants the breakpoint only in that address space, so
//! other processes running the same binary pay nothing.

use std::num::NonZeroU32;

use anyhow::{anyhow, Context, Result};
use aya::{
    maps::Array,
    programs::{
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

/// Hands out `GO_RECIPES` slots and loads the program on first use.
#[derive(Default)]
pub struct Attacher {
    loaded: bool,
    next_slot: u32,
}

impl Attacher {
    /// Attach every point to `pid`'s executable. All or nothing: a half-traced process would
    /// report plausible but wrong counts.
    pub fn attach(&mut self, ebpf: &mut Ebpf, pid: u32, points: &[Point]) -> Result<()> {
        let n = points.len() as u32;
        if self.next_slot + n > GO_RECIPES_MAX {
            return Err(anyhow!(
                "too many Go probe points ({} slots in use)",
                self.next_slot
            ));
        }
        {
            let mut recipes: Array<_, GoRecipe> = Array::try_from(
                ebpf.map_mut(names::GO_RECIPES)
                    .ok_or_else(|| anyhow!("map GO_RECIPES missing"))?,
            )?;
            for (i, p) in points.iter().enumerate() {
                recipes.set(self.next_slot + i as u32, p.recipe, 0)?;
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
        // The magic link resolves to the inode the process runs, even in another mount
        // namespace or after the file was replaced on disk.
        let exe = format!("/proc/{pid}/exe");
        let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).ok_or_else(|| anyhow!("pid 0"))?);
        let mut links = Vec::new();
        for (i, p) in points.iter().enumerate() {
            let point = UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(p.file_offset),
                cookie: Some(u64::from(self.next_slot + i as u32)),
            };
            match prog.attach(point, &exe, scope) {
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
        self.next_slot += n;
        Ok(())
    }
}
