//! The command `run` starts: forked, held before its exec until the probes are attached (so no
//! timer of it pre-exists), then released, signalled and reaped.
//!
//! Not `std::process::Command`: its `spawn` returns only after the exec, and the kernel filter
//! needs the pid before it.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::io::{unix::AsyncFd, Interest};

/// Why the command could not be started, with the exit code a shell would use.
#[derive(Debug)]
pub struct StartError {
    /// 127: not found; 126: found but not executable.
    pub code: u8,
    pub message: String,
}

/// `program` as execve needs it: a path as given when it has a slash, else the first
/// executable file of that name in `$PATH` (as a shell looks it up).
pub fn resolve(program: &OsString, path_var: Option<OsString>) -> Result<PathBuf, StartError> {
    let name = Path::new(program);
    let not_found = || StartError {
        code: 127,
        message: format!("{}: command not found", name.display()),
    };
    if program.is_empty() {
        return Err(not_found());
    }
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.as_bytes().contains(&b'/') {
        if !name.exists() {
            return Err(not_found());
        }
        if !executable(name) {
            return Err(StartError {
                code: 126,
                message: format!("{}: not an executable file", name.display()),
            });
        }
        return Ok(name.to_owned());
    }
    let path_var = path_var.unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path_var)
        .map(|dir| dir.join(name))
        .find(|p| executable(p))
        .ok_or_else(not_found)
}

fn cstring(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in argument"))
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A forked command waiting before its exec.
pub struct Held {
    pub pid: u32,
    release: OwnedFd,
    exec_error: OwnedFd,
    pidfd: OwnedFd,
}

/// A running command.
pub struct Child {
    pub pid: u32,
    pidfd: AsyncFd<OwnedFd>,
    reaped: Option<i32>,
}

/// Fork; the child waits for [`Held::release`], then execs `exe` with `argv` and this
/// process's environment.
pub fn spawn_held(exe: &Path, argv: &[OsString]) -> io::Result<Held> {
    // Everything the child touches is allocated before the fork: between fork and exec only
    // async-signal-safe calls are allowed.
    let path = cstring(exe.as_os_str().as_bytes())?;
    let args: Vec<CString> = argv
        .iter()
        .map(|a| cstring(a.as_bytes()))
        .collect::<io::Result<_>>()?;
    let mut ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let (hold_r, hold_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    // SAFETY: the child only calls async-signal-safe functions (read, signal, execv, write,
    // _exit) on memory prepared above.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        unsafe {
            // Our copy of the write end would keep the pipe open if the tracer died.
            libc::close(hold_w.as_raw_fd());
            libc::close(err_r.as_raw_fd());
            let mut byte = 0u8;
            let n = loop {
                let n = libc::read(hold_r.as_raw_fd(), (&mut byte as *mut u8).cast(), 1);
                if n >= 0 || *libc::__errno_location() != libc::EINTR {
                    break n;
                }
            };
            if n != 1 {
                // The tracer gave up (or died) before releasing us: never run untraced.
                libc::_exit(125);
            }
            // Its own process group, so that stopping it stops what it started too.
            libc::setpgid(0, 0);
            // Rust ignores SIGPIPE; the command gets the default, as from a shell.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::execv(path.as_ptr(), ptrs.as_ptr());
            let errno = *libc::__errno_location();
            libc::write(
                err_w.as_raw_fd(),
                (&errno as *const i32).cast(),
                std::mem::size_of::<i32>(),
            );
            libc::_exit(127);
        }
    }
    drop(hold_r);
    drop(err_w);
    let pid = pid as u32;
    // SAFETY: pidfd_open takes a pid and flags; the child cannot be reaped before we wait.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        drop(hold_w); // the child exits at EOF
        reap(pid);
        return Err(e);
    }
    Ok(Held {
        pid,
        release: hold_w,
        exec_error: err_r,
        // SAFETY: a fresh descriptor from pidfd_open.
        pidfd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
    })
}

fn reap(pid: u32) -> Option<i32> {
    let mut status = 0;
    // SAFETY: waitpid on our own child.
    let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
    (r == pid as libc::pid_t).then_some(status)
}

impl Held {
    /// Let the child exec; returns once it has (or says why it could not).
    pub fn release(self) -> io::Result<Child> {
        let byte = [1u8];
        // SAFETY: writing one byte from a valid buffer to our pipe.
        let n = unsafe { libc::write(self.release.as_raw_fd(), byte.as_ptr().cast(), 1) };
        if n != 1 {
            return Err(io::Error::last_os_error());
        }
        drop(self.release);
        // EOF: the exec closed the child's end (close-on-exec); 4 bytes: its errno.
        let mut errno = [0u8; 4];
        let mut got = 0;
        while got < errno.len() {
            // SAFETY: reading into the rest of a valid buffer.
            let n = unsafe {
                libc::read(
                    self.exec_error.as_raw_fd(),
                    errno[got..].as_mut_ptr().cast(),
                    errno.len() - got,
                )
            };
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if n <= 0 {
                break;
            }
            got += n as usize;
        }
        if got == errno.len() {
            reap(self.pid);
            return Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)));
        }
        // SAFETY: the pidfd is owned by the AsyncFd for its whole registration; nothing else
        // closes it.
        let pidfd = unsafe { AsyncFd::register_with_interest(self.pidfd, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Child {
            pid: self.pid,
            pidfd,
            reaped: None,
        })
    }

    /// Give up before the exec: the child exits without running the command.
    pub fn abandon(self) {
        let pid = self.pid;
        drop(self);
        reap(pid);
    }
}

impl Child {
    /// Send `signal` to the command's process group: the command and whatever it started
    /// that kept the group. The group's id cannot be recycled while any member lives.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: plain kill(2) of our child's process group.
        unsafe { libc::kill(-(self.pid as libc::pid_t), signal) };
    }

    /// Wait for the command to exit and reap it; its wait status. Cancel-safe.
    pub async fn exited(&mut self) -> io::Result<i32> {
        if let Some(status) = self.reaped {
            return Ok(status);
        }
        loop {
            let mut guard = self.pidfd.readable().await?;
            let mut status = 0;
            // SAFETY: waitpid on our own child, without blocking.
            let r = unsafe { libc::waitpid(self.pid as libc::pid_t, &mut status, libc::WNOHANG) };
            if r == self.pid as libc::pid_t {
                self.reaped = Some(status);
                return Ok(status);
            }
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            guard.clear_ready();
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // timerwatch failing must not leave the command behind, nor a zombie.
        if self.reaped.is_none() {
            self.signal(libc::SIGKILL);
            reap(self.pid);
        }
    }
}

/// The exit code a shell reports for a wait status: the code, or 128 + the signal.
pub fn exit_code(status: i32) -> u8 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status) as u8
    } else if libc::WIFSIGNALED(status) {
        (128 + libc::WTERMSIG(status)).min(255) as u8
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_a_shell() {
        let path = Some(OsString::from("/nonexistent:/bin:/usr/bin"));
        let sh = resolve(&"sh".into(), path.clone()).map_err(|e| e.message);
        assert!(sh.unwrap().ends_with("sh"));
        let missing = resolve(&"no-such-command-xyz".into(), path.clone()).unwrap_err();
        assert_eq!(missing.code, 127);
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("data");
        std::fs::write(&plain, "x").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let not_exec = resolve(&plain.into_os_string(), path).unwrap_err();
        assert_eq!(not_exec.code, 126);
    }

    #[test]
    fn wait_status_to_exit_code() {
        assert_eq!(exit_code(7 << 8), 7);
        assert_eq!(exit_code(libc::SIGKILL), 137);
    }

    #[tokio::test]
    async fn held_child_runs_only_when_released() {
        let held = spawn_held(
            Path::new("/bin/sh"),
            &["sh".into(), "-c".into(), "exit 7".into()],
        )
        .expect("fork");
        let pid = held.pid;
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        let mut child = held.release().expect("exec");
        assert_eq!(exit_code(child.exited().await.unwrap()), 7);
        let failed = spawn_held(Path::new("/nonexistent/x"), &["x".into()])
            .unwrap()
            .release();
        assert!(failed.is_err());
    }
}
