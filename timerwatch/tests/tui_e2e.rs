//! End-to-end test of the interactive `top`: timerwatch runs on a real pseudo-terminal (its
//! controlling terminal, so resizes arrive as SIGWINCH), the test types keys and reads the
//! screen back through a VT100 emulator. Root only, like every BPF test.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::num::NonZeroU16;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use common::Target;

/// How long the view may take to show what a key asked for (it redraws at once, but the
/// machine may be busy) or a refresh to bring a callsite in.
const SCREEN_TIMEOUT: Duration = Duration::from_secs(30);

fn winsize(rows: u16, cols: u16) -> libc::winsize {
    libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

fn lflag(fd: &OwnedFd) -> libc::tcflag_t {
    // SAFETY: tcgetattr fills a termios for a valid terminal fd.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) }, 0);
    t.c_lflag
}

/// timerwatch on a pseudo-terminal, its screen emulated.
struct Pty {
    master: File,
    slave: OwnedFd,
    screen: Arc<Mutex<vt100::Parser>>,
    raw: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    fn open(rows: u16, cols: u16) -> Pty {
        let (mut master, mut slave) = (0, 0);
        let ws = winsize(rows, cols);
        // SAFETY: openpty writes two fds; the termios and name pointers may be null.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &ws,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both fds were just opened and are owned here alone.
        let (master, slave) = unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let screen = Arc::new(Mutex::new(vt100::Parser::new(
            NonZeroU16::new(rows).unwrap(),
            NonZeroU16::new(cols).unwrap(),
            0,
        )));
        let raw = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let (to_screen, to_raw) = (Arc::clone(&screen), Arc::clone(&raw));
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            // EIO once every slave fd is closed ends the loop.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                to_screen
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .process(&buf[..n]);
                to_raw
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            master,
            slave,
            screen,
            raw,
        }
    }

    fn contents(&self) -> String {
        self.screen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .screen()
            .contents()
    }

    fn send(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
        self.master.flush().unwrap();
    }

    fn resize(&mut self, rows: u16, cols: u16) {
        let ws = winsize(rows, cols);
        // SAFETY: TIOCSWINSZ reads a winsize; the kernel then signals the foreground group.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        assert_eq!(rc, 0);
        self.screen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set_size(
                NonZeroU16::new(rows).unwrap(),
                NonZeroU16::new(cols).unwrap(),
            );
    }

    /// Waits for the screen to satisfy `ok`; fails with the screen otherwise.
    fn wait_for(&self, what: &str, mut ok: impl FnMut(&str) -> bool) -> String {
        let mut last = String::new();
        let found = common::wait_until(SCREEN_TIMEOUT, || {
            last = self.contents();
            ok(&last)
        });
        assert!(found, "timed out waiting for {what}; screen:\n{last}");
        last
    }
}

/// The table's rows: the lines after the column heading.
fn table_rows(screen: &str) -> Vec<&str> {
    screen
        .lines()
        .skip_while(|l| !(l.contains("PID") && l.contains("CALLER")))
        .skip(1)
        .take_while(|l| !l.trim().is_empty() && !l.contains("q quit"))
        .collect()
}

#[test]
fn interactive_top_sorts_filters_shows_stacks_and_restores_the_terminal() {
    let Some(_serial) = common::start() else {
        return;
    };
    let leak = Target::spawn("timerfd_leak", &[]);
    let pool = Target::spawn("timerfd_pool", &[]);
    let (leak_pid, pool_pid) = (leak.pid().to_string(), pool.pid().to_string());
    let mut pty = Pty::open(40, 160);
    let before = lflag(&pty.slave);
    let slave = || Stdio::from(pty.slave.try_clone().unwrap());
    let mut cmd = Command::new(common::BIN);
    // stdin is /dev/null, so keys come from the controlling terminal (/dev/tty), as for a
    // program whose input is redirected; stderr is captured for the "attached" line.
    cmd.args(["top", "-p", &leak_pid, "-p", &pool_pid, "-i", "1"])
        .stdin(Stdio::null())
        .stdout(slave())
        .stderr(Stdio::piped());
    let tty = pty.slave.as_raw_fd();
    // SAFETY: only async-signal-safe calls between fork and exec: a new session whose
    // controlling terminal is the pty, as a shell gives a job.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 || libc::ioctl(tty, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("start timerwatch top");
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut from = child.stderr.take().expect("piped stderr");
    let to = Arc::clone(&stderr);
    let stderr_reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            to.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let errors = || {
        stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    };
    let attached = common::wait_until(common::ATTACH_TIMEOUT, || {
        errors().contains("attached") || child.try_wait().ok().flatten().is_some()
    });
    assert!(
        attached && errors().contains("interactive view"),
        "timerwatch did not start its interactive view; stderr:\n{}",
        errors()
    );

    // Sort by armed: the pool re-arms 2000/s and comes first; by live, the leak does.
    pty.wait_for("both targets", |s| {
        s.contains("leak_timerfd") && s.contains("rearm_pool_timer")
    });
    pty.send("a");
    // (Its pacing sleeps count as many arms as its re-arms: either may lead.)
    pty.wait_for("the pool first by armed", |s| {
        table_rows(s)
            .first()
            .is_some_and(|r| r.contains("timerfd_pool"))
    });
    pty.send("l");
    // The leak passes the pool's 64 timers after about 1.3 s of leaking at 50/s.
    let screen = pty.wait_for("the leak first by live", |s| {
        table_rows(s)
            .first()
            .is_some_and(|r| r.contains("leak_timerfd"))
    });
    assert!(screen.contains("LIVE▼"), "{screen}");

    // The filter box narrows the table to the leaking process.
    pty.send(&format!("/pid:{leak_pid}\r"));
    let screen = pty.wait_for("the filtered table", |s| {
        let rows = table_rows(s);
        s.contains(&format!("Filter: pid:{leak_pid}"))
            && !rows.is_empty()
            && rows.iter().all(|r| r.trim_start().starts_with(&leak_pid))
    });
    assert!(!screen.contains("rearm_pool_timer"), "{screen}");

    // Enter opens the stack of the selected (first) callsite: the leak's.
    pty.send("\r");
    let screen = pty.wait_for("the leak's stack", |s| {
        s.contains("leak_timerfd (") && s.contains("live timers, last")
    });
    assert!(
        screen.contains("timerfd_leak.c:"),
        "no file:line:\n{screen}"
    );
    assert!(
        screen.contains("timerfd_tmrproc"),
        "no kernel callback:\n{screen}"
    );

    // Help, then a resize: the view redraws at the new size and keeps running.
    pty.send("\x1b");
    pty.send("?");
    pty.wait_for("the key help", |s| s.contains("sort by live"));
    pty.send(" ");
    pty.resize(24, 90);
    pty.wait_for("a redraw at 90 columns", |s| {
        // The caller column gives way first on a narrow screen.
        s.lines().count() <= 24
            && s.lines().any(|l| l.contains("q quit"))
            && s.contains("leak_timer")
    });
    pty.resize(50, 200);
    pty.wait_for("a redraw at 200 columns", |s| s.contains("leak_timerfd"));

    pty.send("q");
    let mut status = None;
    common::wait_until(Duration::from_secs(20), || {
        status = child.try_wait().expect("wait for timerwatch");
        status.is_some()
    });
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("q did not end the view; stderr:\n{}", errors());
    };
    let _ = stderr_reader.join();
    assert!(!errors().contains("panicked"), "{}", errors());
    assert!(status.success(), "exit {status}; stderr:\n{}", errors());
    let raw = pty
        .raw
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let text = String::from_utf8_lossy(&raw);
    let entered = text
        .rfind("\x1b[?1049h")
        .expect("the view used the alternate screen");
    let left = text
        .rfind("\x1b[?1049l")
        .expect("the alternate screen was left");
    assert!(
        left > entered,
        "the alternate screen was entered again after leaving"
    );
    assert!(
        !pty.screen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .screen()
            .alternate_screen(),
        "the emulated terminal is still on the alternate screen"
    );
    assert_eq!(
        lflag(&pty.slave),
        before,
        "terminal modes were not restored"
    );
    drop(leak);
    drop(pool);
}

/// Without a terminal, `top` prints today's table.
#[test]
fn top_without_a_terminal_prints_the_table() {
    let Some(_serial) = common::start() else {
        return;
    };
    let leak = Target::spawn("timerfd_leak", &[]);
    let pid = leak.pid().to_string();
    let out = common::run(
        &["top", "-p", &pid, "-i", "1", "-n", "2"],
        common::ATTACH_TIMEOUT + Duration::from_secs(30),
    );
    out.assert_no_panic();
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(
        out.stdout.matches("timerwatch: ").count(),
        2,
        "not two frames:\n{}",
        out.stdout
    );
    assert!(out.stdout.contains("CALLER") && out.stdout.contains("leak_timerfd"));
    assert!(
        !out.stdout.contains('\x1b'),
        "escape sequences in piped output"
    );
}

/// With stderr on a terminal, `snapshot` counts the seconds left, then erases the line; the
/// report on stdout is unchanged.
#[test]
fn snapshot_counts_down_on_a_terminal() {
    let Some(_serial) = common::start() else {
        return;
    };
    let target = Target::spawn("timerfd_leak", &[]);
    let pid = target.pid().to_string();
    let pty = Pty::open(24, 80);
    let out = Command::new(common::BIN)
        .args(["snapshot", "-p", &pid, "-d", "4"])
        .stdin(Stdio::null())
        .stderr(Stdio::from(pty.slave.try_clone().unwrap()))
        .output()
        .expect("run timerwatch snapshot");
    assert!(out.status.success(), "exit {}", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("leak_timerfd"), "{stdout}");
    assert!(
        !stdout.contains("left"),
        "the countdown went to stdout:\n{stdout}"
    );
    let mut shown = String::new();
    common::wait_until(Duration::from_secs(5), || {
        shown = String::from_utf8_lossy(&pty.raw.lock().unwrap_or_else(PoisonError::into_inner))
            .into_owned();
        shown.contains("\r\x1b[K") && shown.contains("timerwatch: 1s left")
    });
    for left in ["4s left", "1s left"] {
        assert!(
            shown.contains(left),
            "no {left:?} on the terminal: {shown:?}"
        );
    }
    let erased = shown.rfind("\r\x1b[K").unwrap();
    assert!(
        !shown[erased..].contains("left"),
        "the countdown line was not erased: {shown:?}"
    );
}
