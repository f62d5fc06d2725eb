//! Checking up front that we may load BPF, so the user gets one line naming what is missing
//! instead of a verifier or EPERM dump.

const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capability mask from a `/proc/PID/status` text.
pub fn effective_caps(status: &str) -> Option<u64> {
    u64::from_str_radix(timerwatch_proc::status_field(status, "CapEff")?, 16).ok()
}

/// The capabilities that are missing for tracing, by name; empty when tracing may proceed.
pub fn missing(cap_eff: u64) -> Vec<&'static str> {
    let has = |c: u32| cap_eff & (1u64 << c) != 0;
    let mut out = Vec::new();
    // CAP_SYS_ADMIN stands in for BPF+PERFMON on kernels before 5.8 and still covers both.
    if !has(CAP_SYS_ADMIN) {
        if !has(CAP_BPF) {
            out.push("CAP_BPF");
        }
        if !has(CAP_PERFMON) {
            out.push("CAP_PERFMON");
        }
    }
    // Reading other processes' maps and memory for symbolization.
    if !has(CAP_SYS_PTRACE) {
        out.push("CAP_SYS_PTRACE");
    }
    if !has(CAP_DAC_READ_SEARCH) && !has(CAP_SYS_ADMIN) {
        out.push("CAP_DAC_READ_SEARCH");
    }
    out
}

/// `Err(line)` naming what is missing for this process.
pub fn check() -> Result<(), String> {
    let Some(caps) = effective_caps(&timerwatch_proc::own_status()) else {
        return Err("cannot read capabilities from /proc/self/status".into());
    };
    let missing = missing(caps);
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "missing privileges: needs {} (run as root, e.g. with sudo)",
        missing.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_has_everything() {
        assert!(missing(0x000001ffffffffff).is_empty());
    }

    #[test]
    fn unprivileged_user_is_told_each_capability() {
        let status = "Name:\tcat\nCapInh:\t0000000000000000\nCapEff:\t0000000000000000\n";
        let caps = effective_caps(status).unwrap();
        assert_eq!(
            missing(caps),
            vec![
                "CAP_BPF",
                "CAP_PERFMON",
                "CAP_SYS_PTRACE",
                "CAP_DAC_READ_SEARCH"
            ]
        );
    }

    #[test]
    fn least_privilege_set_suffices() {
        let caps = (1u64 << CAP_BPF)
            | (1 << CAP_PERFMON)
            | (1 << CAP_SYS_PTRACE)
            | (1 << CAP_DAC_READ_SEARCH);
        assert!(missing(caps).is_empty());
        assert_eq!(missing(caps & !(1 << CAP_BPF)), vec!["CAP_BPF"]);
    }
}
