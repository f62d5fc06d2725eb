//! Finding tracefs, and mounting it where a fresh boot left it unmounted (as bpftrace does).

use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

use anyhow::{bail, Result};

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

fn has_events(dir: &Path) -> bool {
    dir.join("events").is_dir()
}

/// The tracefs mount point, mounting it at `/sys/kernel/tracing` if no mount exists yet.
/// aya looks the mount up itself on attach, so this must run before the first attach.
pub fn ensure_mounted() -> Result<PathBuf> {
    if let Some(dir) = CANDIDATES.iter().map(Path::new).find(|d| has_events(d)) {
        return Ok(dir.to_path_buf());
    }
    let target = Path::new(CANDIDATES[0]);
    if !target.is_dir() {
        bail!(
            "tracefs is not available: {} does not exist (kernel built without CONFIG_TRACING?)",
            target.display()
        );
    }
    let c = |s: &str| CString::new(s).expect("no NUL in literal");
    let (src, dst, fstype) = (c("nodev"), c(CANDIDATES[0]), c("tracefs"));
    // SAFETY: plain mount(2) with valid NUL-terminated strings and no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 || !has_events(target) {
        let err = std::io::Error::last_os_error();
        bail!(
            "tracefs is not mounted and mounting it failed ({err}); run: mount -t tracefs nodev /sys/kernel/tracing"
        );
    }
    Ok(target.to_path_buf())
}

/// `events/<category>/<name>/format`, if the kernel has that tracepoint.
pub fn read_format(tracefs: &Path, category: &str, name: &str) -> Option<String> {
    std::fs::read_to_string(
        tracefs
            .join("events")
            .join(category)
            .join(name)
            .join("format"),
    )
    .ok()
}
