//! Reading a traced process's code bytes, read-only, through `/proc/PID/mem`.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// Opened on first use: most stacks never need their code bytes looked at.
pub(crate) struct ProcessMemory {
    pid: u32,
    file: Option<Option<File>>,
}

impl ProcessMemory {
    pub fn new(pid: u32) -> Self {
        Self { pid, file: None }
    }

    /// Fill `buf` from `addr`; false if the process is gone, unreadable, or `addr` is unmapped.
    pub fn read(&mut self, addr: u64, buf: &mut [u8]) -> bool {
        let pid = self.pid;
        let file = self
            .file
            .get_or_insert_with(|| File::open(format!("/proc/{pid}/mem")).ok());
        file.as_ref()
            .is_some_and(|f| f.read_exact_at(buf, addr).is_ok())
    }
}
