//! Read-only access to another process's memory: code bytes for symbolization, runtime
//! structures for the Go heap walks.
//!
//! `process_vm_readv` first (one syscall, no file descriptor); `/proc/PID/mem` when it is
//! unavailable (seccomp, old kernels). Both need ptrace-read permission on the target. Neither
//! stops the target, so what is read can be torn; callers validate. A reader given a
//! [`Budget`] stops reading (every read fails) once its time or bytes are spent.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, OnceLock};

use crate::budget::{Budget, Cut};

/// Opens nothing until the first read that needs `/proc/PID/mem`: most readers never do.
pub struct ProcMem {
    pid: u32,
    mem: OnceLock<io::Result<File>>,
    budget: Option<Arc<Budget>>,
}

fn spent(cut: Cut) -> io::Error {
    io::Error::other(format!("walk cut short: {} budget spent", cut.as_str()))
}

impl ProcMem {
    pub fn new(pid: u32) -> Self {
        Self {
            pid,
            mem: OnceLock::new(),
            budget: None,
        }
    }

    /// A reader of `pid` whose reads all charge `budget`.
    pub fn with_budget(pid: u32, budget: Arc<Budget>) -> Self {
        Self {
            budget: Some(budget),
            ..Self::new(pid)
        }
    }

    /// The budget this reader charges, if any: [`Budget::cut`] says why reads stopped.
    pub fn budget(&self) -> Option<&Budget> {
        self.budget.as_deref()
    }

    /// Whether `len` more bytes may be read: check before allocating for a batch.
    pub fn afford(&self, len: usize) -> io::Result<()> {
        match &self.budget {
            Some(b) => b.afford(len).map_err(spent),
            None => Ok(()),
        }
    }

    fn spend(&self, len: usize) -> io::Result<()> {
        match &self.budget {
            Some(b) => b.spend(len).map_err(spent),
            None => Ok(()),
        }
    }

    pub fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        self.spend(buf.len())?;
        self.read_spent(addr, buf)
    }

    /// [`ProcMem::read`] of bytes already charged.
    fn read_spent(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        match self.vm_readv(addr, buf) {
            Ok(n) if n == buf.len() => Ok(()),
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("short read at {addr:#x}"),
            )),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                self.pread(addr, buf)
            }
            Err(e) => Err(e),
        }
    }

    pub fn read_vec(&self, addr: u64, len: usize) -> io::Result<Vec<u8>> {
        // Charged before the allocation: a length the target wrote must not size our heap.
        self.spend(len)?;
        let mut buf = vec![0u8; len];
        self.read_spent(addr, &mut buf)?;
        Ok(buf)
    }

    pub fn read_u64(&self, addr: u64) -> io::Result<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads every `(addr, buf)`, up to `IOV_MAX` of them per system call, and says which
    /// succeeded. Many small reads (the timers of a heap) then cost a few calls, not one each.
    /// Beyond the budget, none is read.
    pub fn read_many(&self, reqs: &mut [(u64, &mut [u8])]) -> Vec<bool> {
        const IOV_MAX: usize = 1024;
        let mut ok = vec![false; reqs.len()];
        let total_len = reqs.iter().map(|(_, b)| b.len()).sum();
        if self.spend(total_len).is_err() {
            return ok;
        }
        let (mut i, total) = (0, reqs.len());
        while i < total {
            let chunk = &mut reqs[i..(i + IOV_MAX).min(total)];
            let (local, remote): (Vec<libc::iovec>, Vec<libc::iovec>) = chunk
                .iter_mut()
                .map(|(addr, buf)| {
                    (
                        libc::iovec {
                            iov_base: buf.as_mut_ptr().cast(),
                            iov_len: buf.len(),
                        },
                        libc::iovec {
                            iov_base: *addr as *mut libc::c_void,
                            iov_len: buf.len(),
                        },
                    )
                })
                .unzip();
            // SAFETY: each local iovec describes one buffer of `chunk`, valid for writes of its
            // length for the whole call; remote iovecs are only interpreted in the target.
            let n = unsafe {
                libc::process_vm_readv(
                    self.pid as libc::pid_t,
                    local.as_ptr(),
                    local.len() as libc::c_ulong,
                    remote.as_ptr(),
                    remote.len() as libc::c_ulong,
                    0,
                )
            };
            // The kernel stops at the first remote range it cannot read: the buffers before it
            // are complete; that one is read alone (or found unreadable), then the rest again.
            let mut done = 0;
            if n > 0 {
                let mut left = n as usize;
                for (_, buf) in chunk.iter() {
                    if buf.len() > left {
                        break;
                    }
                    left -= buf.len();
                    done += 1;
                }
            }
            ok[i..i + done].iter_mut().for_each(|o| *o = true);
            if done < chunk.len() {
                let (addr, buf) = &mut chunk[done];
                ok[i + done] = self.read_spent(*addr, buf).is_ok();
                done += 1;
            }
            i += done;
        }
        ok
    }

    fn vm_readv(&self, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: `local` describes `buf`, which is valid for writes of its length for the whole
        // call; `remote` is only interpreted in the target's address space by the kernel.
        let n =
            unsafe { libc::process_vm_readv(self.pid as libc::pid_t, &local, 1, &remote, 1, 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn pread(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        let file = self
            .mem
            .get_or_init(|| File::open(format!("/proc/{}/mem", self.pid)));
        match file {
            Ok(f) => f.read_exact_at(buf, addr),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory_both_ways() {
        let value: u64 = 0x1122_3344_5566_7788;
        let mem = ProcMem::new(std::process::id());
        let addr = &value as *const u64 as u64;
        assert_eq!(mem.read_u64(addr).unwrap(), value);
        let mut b = [0u8; 8];
        mem.pread(addr, &mut b).unwrap();
        assert_eq!(u64::from_le_bytes(b), value);
        assert!(mem.read_u64(8).is_err());
    }

    #[test]
    fn batched_reads_say_which_failed_and_read_the_rest() {
        let values: Vec<u64> = (0..3000).map(|i| i * 7 + 1).collect();
        let mem = ProcMem::new(std::process::id());
        let mut bufs = vec![[0u8; 8]; values.len()];
        // Every 1000th address unreadable: the kernel stops a batch there.
        let mut reqs: Vec<(u64, &mut [u8])> = values
            .iter()
            .zip(bufs.iter_mut())
            .enumerate()
            .map(|(i, (v, b))| {
                let addr = if i % 1000 == 500 {
                    8
                } else {
                    v as *const u64 as u64
                };
                (addr, &mut b[..])
            })
            .collect();
        let ok = mem.read_many(&mut reqs);
        drop(reqs);
        for (i, (v, b)) in values.iter().zip(&bufs).enumerate() {
            assert_eq!(ok[i], i % 1000 != 500, "{i}");
            if ok[i] {
                assert_eq!(u64::from_le_bytes(*b), *v, "{i}");
            }
        }
        assert!(mem.read_many(&mut []).is_empty());
    }

    #[test]
    fn a_budgeted_reader_stops_at_its_bytes_and_allocates_nothing_beyond() {
        let values = [7u64; 4];
        let addr = values.as_ptr() as u64;
        let budget = Arc::new(Budget::new(std::time::Duration::from_secs(60), 24));
        let mem = ProcMem::with_budget(std::process::id(), budget.clone());
        assert_eq!(mem.read_u64(addr).unwrap(), 7);
        assert_eq!(mem.read_vec(addr, 16).unwrap().len(), 16);
        assert_eq!(budget.spent(), 24);
        // A target-written length far past the budget fails before any buffer exists.
        let e = mem.read_vec(addr, usize::MAX / 2).unwrap_err();
        assert!(e.to_string().contains("bytes budget"), "{e}");
        assert_eq!(budget.cut(), Some(Cut::Bytes));
        // Every later read fails too, batched ones included.
        assert!(mem.read_u64(addr).is_err());
        let mut b = [0u8; 8];
        assert_eq!(mem.read_many(&mut [(addr, &mut b[..])]), [false]);
        assert_eq!(mem.budget().and_then(Budget::cut), Some(Cut::Bytes));
    }
}
