//! Where to put entry uprobes in a Go binary, and what the registers hold there.
//!
//! Only runtime-level functions that every binary links are required (arm/stop/fire); user-side
//! hooks exist only when the program uses them. Tables: docs/go-runtime-timers.md §2.

use timerwatch_common::pt_regs;

use super::elf::Elf;
use super::pclntab::Pclntab;
use super::version::GoVersion;
use super::x86;
use super::Error;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum ProbeRole {
    /// A new timer with its pointer: `time.startTimer` (1.19–1.22). 1.23+ has no such hook
    /// (`time.newTimer` gets no pointer); creations arrive as `Modify` with f = sendTime/goFunc.
    Create,
    /// Arm / re-arm, all kinds: `runtime.modtimer` (≤1.22) or `runtime.(*timer).modify` (1.23+).
    /// In 1.23+ this is also the creation point when `f` is sendTime or goFunc; `f == 0` there
    /// means "keep f/arg/seq" (Reset, Sleep, scavenger).
    Modify,
    /// Stop, all kinds: `runtime.deltimer` / `runtime.(*timer).stop`.
    Stop,
    /// A timer runs: `runtime.runOneTimer` / `runtime.(*timer).unlockAndRun` (system stack: the
    /// stack there has no user callsite).
    Fire,
    /// `time.Sleep`, only for its callsite: from 1.25 `mcall` clears RBP, so the stack at the
    /// Modify that arms the sleep timer ends at `mcall`.
    Sleep,
}

impl ProbeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Modify => "modify",
            Self::Stop => "stop",
            Self::Fire => "fire",
            Self::Sleep => "sleep",
        }
    }
}

/// An ABIInternal integer argument register. The discriminant is the register's index in the
/// x86_64 `struct pt_regs`, as `timerwatch_common::pt_regs` defines it for both sides.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u8)]
pub enum Reg {
    Rax = pt_regs::RAX,
    Rbx = pt_regs::RBX,
    Rcx = pt_regs::RCX,
    Rdi = pt_regs::RDI,
    Rsi = pt_regs::RSI,
    R8 = pt_regs::R8,
    R9 = pt_regs::R9,
    R10 = pt_regs::R10,
    R11 = pt_regs::R11,
}

impl Reg {
    pub fn pt_regs_index(self) -> usize {
        self as usize
    }

    pub fn pt_regs_offset(self) -> usize {
        self.pt_regs_index() * 8
    }
}

/// What the registers hold at one role's probe point (after the prologue, where the argument
/// registers are still intact). `None` for `when`/`period`/`f` means "read it from the timer at
/// `TimerLayout::timer_*`".
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct RoleRegs {
    /// Register holding the timer pointer; add `timer_adjust` to get the `runtime.timer`
    /// address. Every role timerwatch probes receives the runtime pointer itself (adjust 0);
    /// `time.stopTimer`/`resetTimer` would need +8 (≤1.22) or +16 (1.23+).
    pub timer: Option<Reg>,
    pub timer_adjust: i64,
    /// New absolute `when` (CLOCK_MONOTONIC ns).
    pub when: Option<Reg>,
    pub period: Option<Reg>,
    /// A `*funcval`: its first word is the callback's code address (see `KindSymbols`).
    pub f: Option<Reg>,
}

/// At the `Sleep` probe (`time.Sleep(d)`), the relative duration in ns.
pub const SLEEP_DURATION_REG: Reg = Reg::Rax;

/// One uprobe.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ProbePoint {
    pub role: ProbeRole,
    /// Symbol name as `go tool nm` prints it, e.g. "runtime.(*timer).modify".
    pub symbol: String,
    /// File offset to attach at (aya: `UProbe::attach(offset, exe_path, scope)`, which becomes
    /// `UProbeAttachLocation::AbsoluteOffset`). Already past the prologue.
    pub offset: u64,
    /// Link-time virtual address of the same instruction.
    pub vaddr: u64,
}

struct Hook {
    role: ProbeRole,
    symbol: &'static str,
    required: bool,
}

const fn hook(role: ProbeRole, symbol: &'static str, required: bool) -> Hook {
    Hook {
        role,
        symbol,
        required,
    }
}

const LEGACY: &[Hook] = &[
    hook(ProbeRole::Create, "time.startTimer", false),
    hook(ProbeRole::Modify, "runtime.modtimer", true),
    hook(ProbeRole::Stop, "runtime.deltimer", true),
    hook(ProbeRole::Fire, "runtime.runOneTimer", true),
    hook(ProbeRole::Sleep, "time.Sleep", false),
];

const NEW: &[Hook] = &[
    hook(ProbeRole::Modify, "runtime.(*timer).modify", true),
    hook(ProbeRole::Stop, "runtime.(*timer).stop", true),
    hook(ProbeRole::Fire, "runtime.(*timer).unlockAndRun", true),
    hook(ProbeRole::Sleep, "time.Sleep", false),
];

fn hooks(version: GoVersion) -> &'static [Hook] {
    if version.new_timers() {
        NEW
    } else {
        LEGACY
    }
}

/// Register recipe per role. Arguments follow ABIInternal (RAX, RBX, RCX, RDI, RSI, R8, …);
/// verified at the call sites and with perf in the doc.
pub fn role_regs(version: GoVersion) -> Vec<(ProbeRole, RoleRegs)> {
    use Reg::*;
    let t = |timer: Reg| RoleRegs {
        timer: Some(timer),
        ..Default::default()
    };
    let arm = RoleRegs {
        timer: Some(Rax),
        when: Some(Rbx),
        period: Some(Rcx),
        f: Some(Rdi),
        ..Default::default()
    };
    // Only the callsite matters; the duration is in SLEEP_DURATION_REG.
    let sleep = RoleRegs::default();
    if version.new_timers() {
        vec![
            // (*timer).modify(t, when, period, f, arg any, seq)
            (ProbeRole::Modify, arm),
            // (*timer).stop(t)
            (ProbeRole::Stop, t(Rax)),
            // (*timer).unlockAndRun(t, now[, bubble])
            (ProbeRole::Fire, t(Rax)),
            (ProbeRole::Sleep, sleep),
        ]
    } else {
        vec![
            // startTimer(t): every field already filled in.
            (ProbeRole::Create, t(Rax)),
            // modtimer(t, when, period, f, arg any, seq)
            (ProbeRole::Modify, arm),
            // deltimer(t)
            (ProbeRole::Stop, t(Rax)),
            // runOneTimer(pp, t, now)
            (ProbeRole::Fire, t(Rbx)),
            (ProbeRole::Sleep, sleep),
        ]
    }
}

/// Resolves the probe points for `version` through pclntab (works stripped).
pub fn resolve(elf: &Elf, pcln: &Pclntab, version: GoVersion) -> Result<Vec<ProbePoint>, Error> {
    let mut out = Vec::new();
    for h in hooks(version) {
        let Some(func) = pcln.func_by_name(h.symbol) else {
            if h.required {
                return Err(Error::Malformed(format!(
                    "{} not found in pclntab",
                    h.symbol
                )));
            }
            continue;
        };
        let code = elf.read_vaddr(func.entry, (func.end - func.entry).min(64) as usize)?;
        // A frameless function has no prologue to skip; the entry is then the only choice.
        let skip = x86::post_prologue(&code).unwrap_or(0) as u64;
        let vaddr = func.entry + skip;
        let offset = elf.file_offset(vaddr).ok_or_else(|| {
            Error::Malformed(format!("{} at {vaddr:#x} is outside the file", h.symbol))
        })?;
        out.push(ProbePoint {
            role: h.role,
            symbol: h.symbol.to_string(),
            offset,
            vaddr,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pt_regs_indices() {
        assert_eq!(Reg::Rax.pt_regs_offset(), 80);
        assert_eq!(Reg::Rbx.pt_regs_offset(), 40);
        assert_eq!(Reg::Rdi.pt_regs_offset(), 112);
        assert_eq!(Reg::R8.pt_regs_index(), 9);
    }

    #[test]
    fn recipes_per_family() {
        let legacy = role_regs(GoVersion::new(1, 22, 10));
        let fire = legacy
            .iter()
            .find(|(r, _)| *r == ProbeRole::Fire)
            .unwrap()
            .1;
        assert_eq!(fire.timer, Some(Reg::Rbx));
        assert!(legacy.iter().any(|(r, _)| *r == ProbeRole::Create));
        let new = role_regs(GoVersion::new(1, 25, 5));
        assert!(!new.iter().any(|(r, _)| *r == ProbeRole::Create));
        let modify = new.iter().find(|(r, _)| *r == ProbeRole::Modify).unwrap().1;
        assert_eq!(
            (modify.timer, modify.when, modify.period, modify.f),
            (
                Some(Reg::Rax),
                Some(Reg::Rbx),
                Some(Reg::Rcx),
                Some(Reg::Rdi)
            )
        );
    }
}
