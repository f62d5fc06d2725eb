//! The daemon's HTTP port against clients that are slow, many, large or unauthorised: the
//! node's scraper is still answered within a second, and what `/metrics` and `/report` show
//! stays behind the bearer token when one is set. Root only (the daemon loads BPF).

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::Tool;
use socket2::{Domain, Socket, Type};

/// A connection to the daemon from the loopback address `from`, as another host would make.
fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(from, 0).into())?;
    socket.connect_timeout(&to.into(), Duration::from_secs(5))?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    Ok(stream)
}

/// Status and body of one request with the given extra header lines.
fn request(
    from: IpAddr,
    to: SocketAddr,
    path: &str,
    headers: &str,
) -> std::io::Result<(u16, String)> {
    let mut s = connect_from(from, to)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n{headers}\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

fn scraper() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

/// Until it is closed by the other side: EOF or a reset.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
        if start.elapsed() > limit {
            return false;
        }
    }
}

#[test]
fn scrapes_are_answered_within_a_second_beside_hundreds_of_slow_clients() {
    let Some(_serial) = common::start() else {
        return;
    };
    let daemon = Daemon::start(&[]);
    // The first report makes /metrics real; before it, the exposition is nearly empty.
    std::thread::sleep(Duration::from_millis(1500));

    // 300 clients from two other addresses: some send nothing, some a request head a few bytes
    // at a time and never finish it (slowloris).
    let mut slow = Vec::new();
    for i in 0..300 {
        let from: IpAddr = if i % 2 == 0 { "127.0.0.2" } else { "127.0.0.3" }
            .parse()
            .unwrap();
        let Ok(mut s) = connect_from(from, daemon.addr) else {
            continue;
        };
        if i % 3 == 0 {
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ");
        }
        slow.push(s);
    }
    assert!(
        slow.len() >= 250,
        "only {} slow clients connected",
        slow.len()
    );
    for _ in 0..4 {
        for s in slow.iter_mut().step_by(3) {
            let _ = s.write_all(b"a");
        }
        let start = Instant::now();
        let (status, body) = request(scraper(), daemon.addr, "/metrics", "").unwrap_or_else(|e| {
            panic!("scrape beside slow clients: {e}\n{}", daemon.tool.stderr())
        });
        let took = start.elapsed();
        assert_eq!(status, 200, "scrape answered {status}: {body}");
        assert!(body.ends_with("# EOF\n"), "truncated exposition:\n{body}");
        assert!(
            took < Duration::from_secs(1),
            "a scrape took {took:?} beside {} slow clients",
            slow.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Each slow client is cut off: a head must arrive within the header timeout.
    let mut stalled = connect_from("127.0.0.4".parse().unwrap(), daemon.addr).unwrap();
    stalled.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    assert!(
        closed_within(&mut stalled, Duration::from_secs(15)),
        "a client that never finished its request head was not disconnected"
    );
    // A head larger than the cap is refused without the daemon buffering it.
    let mut huge = connect_from("127.0.0.5".parse().unwrap(), daemon.addr).unwrap();
    let _ = huge.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n");
    let filler = format!("X-Filler: {}\r\n", "f".repeat(1000));
    for _ in 0..1024 {
        if huge.write_all(filler.as_bytes()).is_err() {
            break;
        }
    }
    let mut answer = Vec::new();
    let _ = huge.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        !answer.starts_with("HTTP/1.1 200"),
        "a 1 MiB request head was served: {}",
        answer.lines().next().unwrap_or("")
    );
    let (status, _) = request(scraper(), daemon.addr, "/healthz", "").expect("healthz");
    assert_eq!(status, 200, "daemon unhealthy after the slow clients");
    drop(slow);
}

#[test]
fn metrics_and_report_need_the_bearer_token_when_one_is_set() {
    let Some(_serial) = common::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "t0ps3cret\n").unwrap();
    let arg = format!("--auth-token-file={}", token_file.display());
    let daemon = Daemon::start(&[&arg]);
    std::thread::sleep(Duration::from_millis(1500));
    let to = daemon.addr;
    for path in ["/metrics", "/report"] {
        let (status, body) = request(scraper(), to, path, "").unwrap();
        assert_eq!(
            status, 401,
            "{path} without a token answered {status}: {body}"
        );
        assert!(
            !body.contains("timerwatch_live_timers"),
            "{path} leaked data: {body}"
        );
        let (status, _) = request(scraper(), to, path, "Authorization: Bearer wrong\r\n").unwrap();
        assert_eq!(status, 401, "{path} with a wrong token answered {status}");
        let (status, body) =
            request(scraper(), to, path, "Authorization: Bearer t0ps3cret\r\n").unwrap();
        assert_eq!(
            status, 200,
            "{path} with the token answered {status}: {body}"
        );
    }
    let (status, _) = request(scraper(), to, "/healthz", "").unwrap();
    assert_eq!(
        status, 200,
        "/healthz must stay open for the kubelet's probes"
    );

    // An empty token file is refused at start, with one line.
    std::fs::write(&token_file, "\n").unwrap();
    let mut empty = Tool::spawn(&["daemon", "--listen=127.0.0.1:0", &arg]);
    let done = empty.finish(Duration::from_secs(30));
    assert_eq!(done.status.code(), Some(2), "stderr:\n{}", done.stderr);
    assert_eq!(
        done.stderr.trim().lines().count(),
        1,
        "stderr:\n{}",
        done.stderr
    );
    assert!(
        done.stderr.contains("--auth-token-file"),
        "stderr:\n{}",
        done.stderr
    );
}
