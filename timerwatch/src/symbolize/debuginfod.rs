//! Debug files from the debuginfod servers named in `DEBUGINFOD_URLS` (opt-in: unset, nothing
//! is fetched), downloaded on a background thread so naming never waits for the network: a
//! frame is named `binary+0x…` until its file arrives, then renamed (see `Table::rename`).
//!
//! Files are cached on disk as `<cache>/<build-id>/debuginfo` (elfutils' layout), under
//! `TIMERWATCH_DEBUGINFOD_CACHE` or `~/.cache/timerwatch/debuginfod`, and the oldest are removed
//! once the cache exceeds `TIMERWATCH_DEBUGINFOD_CACHE_MB` (default 2048). A download is kept
//! only if it is an ELF file with the build ID asked for: a server is not trusted further.
//!
//! Only `http://` servers are spoken to (a plain HTTP/1.1 GET: no TLS stack is linked in);
//! `https://` URLs are skipped with a warning. A local debuginfod (or a caching proxy of a
//! public one) serves plain HTTP.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::elf_facts::{hex, ElfFacts};

pub(crate) const URLS_ENV: &str = "DEBUGINFOD_URLS";
const CACHE_ENV: &str = "TIMERWATCH_DEBUGINFOD_CACHE";
const CACHE_MB_ENV: &str = "TIMERWATCH_DEBUGINFOD_CACHE_MB";
const DEFAULT_CACHE_MB: u64 = 2048;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Without progress for this long a download is given up.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest status or header line accepted from a server.
const MAX_LINE: usize = 8192;

/// A server, as `http://host[:port][/prefix]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Server {
    host: String,
    port: u16,
    prefix: String,
}

impl Server {
    pub fn parse(url: &str) -> Option<Self> {
        let rest = url.strip_prefix("http://")?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.contains(']') || h.ends_with(']') => (h, p.parse().ok()?),
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        (!host.is_empty()).then(|| Self {
            host: host.to_string(),
            port,
            prefix: prefix.to_string(),
        })
    }
}

/// What is known about one build ID's debug file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fetch {
    Ready(PathBuf),
    /// Asked for; the answer is not in yet.
    Pending,
    /// No server has it (or debuginfod is off).
    Unavailable,
}

pub(crate) struct Debuginfod {
    servers: Vec<Server>,
    cache: PathBuf,
    max_bytes: u64,
    /// Build IDs sent to the fetcher.
    requested: HashSet<String>,
    /// Build IDs the fetcher has finished with, found or not.
    finished: Arc<Mutex<HashSet<String>>>,
    /// Bumped each time the fetcher finishes one: callers compare it to know when to look again.
    generation: Arc<AtomicU64>,
    /// Started on the first request.
    worker: Option<Sender<String>>,
}

impl Debuginfod {
    /// From `DEBUGINFOD_URLS`; `None` when it names no usable server.
    pub fn from_env() -> Option<Self> {
        let urls = std::env::var(URLS_ENV).ok()?;
        let mut servers = Vec::new();
        for url in urls.split_whitespace() {
            match Server::parse(url) {
                Some(s) => servers.push(s),
                None => eprintln!(
                    "timerwatch: {URLS_ENV}: skipping {url}: only http:// servers are supported"
                ),
            }
        }
        if servers.is_empty() {
            return None;
        }
        let cache = std::env::var_os(CACHE_ENV)
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|h| PathBuf::from(h).join(".cache/timerwatch/debuginfod"))
            })
            .unwrap_or_else(|| PathBuf::from("/var/cache/timerwatch/debuginfod"));
        let mb = std::env::var(CACHE_MB_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(DEFAULT_CACHE_MB);
        Some(Self {
            servers,
            cache,
            max_bytes: mb.saturating_mul(1 << 20),
            requested: HashSet::new(),
            finished: Arc::default(),
            generation: Arc::default(),
            worker: None,
        })
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The cached debug file of `build_id`, asking the servers for it in the background when
    /// it is not cached yet.
    pub fn get(&mut self, build_id: &[u8]) -> Fetch {
        let id = hex(build_id);
        let path = cached_path(&self.cache, &id);
        if path.is_file() {
            return Fetch::Ready(path);
        }
        if self
            .finished
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&id)
        {
            return Fetch::Unavailable;
        }
        if self.requested.insert(id.clone()) {
            let worker = self.worker.get_or_insert_with(|| {
                spawn_worker(
                    self.servers.clone(),
                    self.cache.clone(),
                    self.max_bytes,
                    Arc::clone(&self.finished),
                    Arc::clone(&self.generation),
                )
            });
            if worker.send(id).is_err() {
                return Fetch::Unavailable;
            }
        }
        Fetch::Pending
    }
}

fn cached_path(cache: &Path, id: &str) -> PathBuf {
    cache.join(id).join("debuginfo")
}

fn spawn_worker(
    servers: Vec<Server>,
    cache: PathBuf,
    max_bytes: u64,
    finished: Arc<Mutex<HashSet<String>>>,
    generation: Arc<AtomicU64>,
) -> Sender<String> {
    let (tx, rx) = channel::<String>();
    let spawned = std::thread::Builder::new()
        .name("debuginfod".into())
        .spawn(move || {
            // Ends when the symbolizer (the only sender) goes away.
            for id in rx {
                for server in &servers {
                    if fetch(server, &cache, &id, max_bytes).is_ok_and(|got| got) {
                        evict(&cache, max_bytes, &id);
                        break;
                    }
                }
                finished
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(id);
                generation.fetch_add(1, Ordering::Release);
            }
        });
    if let Err(e) = spawned {
        eprintln!("timerwatch: cannot start the debuginfod fetcher: {e}");
    }
    tx
}

/// Downloads `id`'s debug file from `server` into the cache; `Ok(false)` when the server does
/// not have it (or sends something else).
fn fetch(server: &Server, cache: &Path, id: &str, max_bytes: u64) -> io::Result<bool> {
    let dir = cache.join(id);
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!(".debuginfo.{}", std::process::id()));
    let result = (|| {
        let mut out = File::create(&tmp)?;
        if !get(
            server,
            &format!("/buildid/{id}/debuginfo"),
            &mut out,
            max_bytes,
        )? {
            return Ok(false);
        }
        out.flush()?;
        drop(out);
        let facts = ElfFacts::read(&tmp);
        if facts.and_then(|f| f.build_id).map(|b| hex(&b)).as_deref() != Some(id) {
            return Ok(false);
        }
        std::fs::rename(&tmp, dir.join("debuginfo"))?;
        Ok(true)
    })();
    let _ = std::fs::remove_file(&tmp);
    if !matches!(result, Ok(true)) {
        let _ = std::fs::remove_dir(&dir);
    }
    result
}

/// HTTP/1.1 GET of `path` into `out`: `Ok(false)` on any status but 200 or a body over `limit`.
fn get(server: &Server, path: &str, out: &mut impl Write, limit: u64) -> io::Result<bool> {
    let addr = (server.host.as_str(), server.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "host has no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    write!(
        stream,
        "GET {}{path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: timerwatch\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n",
        server.prefix, server.host
    )?;
    read_response(BufReader::new(stream), out, limit)
}

fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    r.take(MAX_LINE as u64).read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\n") {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad HTTP line"));
    }
    Ok(String::from_utf8_lossy(&line).trim_end().to_string())
}

/// Status, headers, then the body (plain, with a length or to the end, or chunked).
pub(crate) fn read_response(
    mut r: impl BufRead,
    out: &mut impl Write,
    limit: u64,
) -> io::Result<bool> {
    let status = read_line(&mut r)?;
    let code = status.split_whitespace().nth(1);
    let mut length = None;
    let mut chunked = false;
    loop {
        let line = read_line(&mut r)?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<u64>().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    if code != Some("200") || length.is_some_and(|n| n > limit) {
        return Ok(false);
    }
    let copied = if chunked {
        let mut total = 0u64;
        loop {
            let size = read_line(&mut r)?;
            let size = size.split(';').next().unwrap_or_default().trim();
            let size = u64::from_str_radix(size, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                break;
            }
            total = total.saturating_add(size);
            if total > limit {
                return Ok(false);
            }
            let n = io::copy(&mut (&mut r).take(size), out)?;
            if n != size {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            read_line(&mut r)?;
        }
        total
    } else {
        let want = length.unwrap_or(limit.saturating_add(1));
        let n = io::copy(&mut (&mut r).take(want), out)?;
        if n > limit || length.is_some_and(|l| l != n) {
            return Ok(false);
        }
        n
    };
    Ok(copied > 0)
}

/// Removes the least recently written cached files until the cache fits in `max_bytes`,
/// sparing `keep` (just fetched, about to be used).
fn evict(cache: &Path, max_bytes: u64, keep: &str) {
    let Ok(dirs) = std::fs::read_dir(cache) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = dirs
        .flatten()
        .filter(|d| d.file_name() != *keep)
        .filter_map(|d| {
            let path = d.path().join("debuginfo");
            let meta = std::fs::metadata(&path).ok()?;
            Some((meta.modified().ok()?, meta.len(), path))
        })
        .collect();
    let kept = std::fs::metadata(cached_path(cache, keep)).map_or(0, |m| m.len());
    let mut total: u64 = kept + files.iter().map(|f| f.1).sum::<u64>();
    files.sort();
    for (_, len, path) in files {
        if total <= max_bytes {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= len;
            if let Some(dir) = path.parent() {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        let s = Server::parse("http://127.0.0.1:8002/").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.prefix.as_str()),
            ("127.0.0.1", 8002, "")
        );
        let s = Server::parse("http://debuginfod.example/mirror/").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.prefix.as_str()),
            ("debuginfod.example", 80, "/mirror")
        );
        let s = Server::parse("http://[::1]:9000").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("::1", 9000));
        assert_eq!(Server::parse("https://debuginfod.debian.net"), None);
        assert_eq!(Server::parse("http://"), None);
        assert_eq!(Server::parse("http://host:notaport"), None);
    }

    fn response(raw: &[u8], limit: u64) -> (io::Result<bool>, Vec<u8>) {
        let mut out = Vec::new();
        let r = read_response(raw, &mut out, limit);
        (r, out)
    }

    #[test]
    fn bodies_with_length_to_the_end_and_chunked() {
        let (ok, body) = response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 100);
        assert!(ok.unwrap());
        assert_eq!(body, b"hello");
        let (ok, body) = response(b"HTTP/1.0 200 OK\r\n\r\nto the end", 100);
        assert!(ok.unwrap());
        assert_eq!(body, b"to the end");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        let (ok, body) = response(chunked, 100);
        assert!(ok.unwrap());
        assert_eq!(body, b"abcde");
    }

    #[test]
    fn missing_short_oversized_and_garbage_responses_fetch_nothing() {
        assert!(!response(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno!",
            100
        )
        .0
        .unwrap());
        // Shorter than announced: the connection broke.
        assert!(
            !response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhalf", 100)
                .0
                .unwrap()
        );
        assert!(
            !response(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n", 100)
                .0
                .unwrap()
        );
        assert!(!response(b"HTTP/1.1 200 OK\r\n\r\n0123456789", 5).0.unwrap());
        assert!(response(b"\x00\x01garbage without newline", 100).0.is_err());
        assert!(response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            100
        )
        .0
        .is_err());
    }

    #[test]
    fn eviction_keeps_the_newest_within_the_bound() {
        let cache = tempfile::tempdir().unwrap();
        for (i, id) in ["aa01", "aa02", "aa03"].iter().enumerate() {
            let path = cached_path(cache.path(), id);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, vec![0u8; 100]).unwrap();
            let t = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1000 + i as u64);
            File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        evict(cache.path(), 200, "aa01");
        let left = |id| cached_path(cache.path(), id).exists();
        assert!(left("aa01"), "the file just fetched is kept");
        assert!(!left("aa02"), "the oldest other goes");
        assert!(left("aa03"));
    }

    #[test]
    fn off_without_urls_and_pending_until_fetched() {
        // An unreachable server: the request is pending, then unavailable, never blocking.
        let cache = tempfile::tempdir().unwrap();
        let mut d = Debuginfod {
            servers: vec![Server::parse("http://127.0.0.1:1").unwrap()],
            cache: cache.path().to_path_buf(),
            max_bytes: 1 << 20,
            requested: HashSet::new(),
            finished: Arc::default(),
            generation: Arc::default(),
            worker: None,
        };
        assert_eq!(d.get(&[0xab, 0xcd]), Fetch::Pending);
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while d.generation() == 0 && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(d.get(&[0xab, 0xcd]), Fetch::Unavailable);
        // Already cached: ready without asking anyone.
        let path = cached_path(cache.path(), "ef01");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"x").unwrap();
        assert_eq!(d.get(&[0xef, 0x01]), Fetch::Ready(path));
    }
}
