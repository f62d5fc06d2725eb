//! `.go.buildinfo`: the Go version and the module/build settings the toolchain embedded.
//!
//! It survives `-ldflags="-s -w"`, which makes it the one reliable version source. Format:
//! `cmd/go/internal/modload/build.go` and `debug/buildinfo` (see docs/go-runtime-timers.md §6).

use super::elf::Elf;
use super::Error;

const MAGIC: &[u8; 14] = b"\xff Go buildinf:";
const HEADER_LEN: usize = 32;
/// Go ≥ 1.18 stores the strings right after the header instead of pointing at them.
const FLAG_INLINE: u8 = 0x02;
const FLAG_BIG_ENDIAN: u8 = 0x01;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildInfo {
    /// As recorded, e.g. "go1.22.10" or "go1.22.10 X:boringcrypto".
    pub version: String,
    /// `path` line: the main package's import path.
    pub path: Option<String>,
    /// `mod` line: the main module path.
    pub main_module: Option<String>,
    /// `build KEY=VALUE` lines, in order, values unquoted.
    pub settings: Vec<(String, String)>,
}

impl BuildInfo {
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A value from `DefaultGODEBUG` (the non-default GODEBUGs implied by go.mod's `go` line,
    /// `godebug` blocks and `//go:debug`). The environment of the running process can still
    /// override it.
    pub fn default_godebug(&self, key: &str) -> Option<&str> {
        self.setting("DefaultGODEBUG")?
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim())
    }

    /// Whether `GOEXPERIMENT` names `name` (e.g. "greenteagc", "nogreenteagc").
    pub fn has_experiment(&self, name: &str) -> bool {
        self.setting("GOEXPERIMENT")
            .is_some_and(|v| v.split(',').any(|e| e.trim() == name))
    }

    /// Parses the blob that starts at the magic. `read_vaddr` resolves pointers for the pre-1.18
    /// layout, which is only needed to name an unsupported version.
    pub fn parse(
        blob: &[u8],
        read_vaddr: impl Fn(u64, usize) -> Option<Vec<u8>>,
    ) -> Result<BuildInfo, Error> {
        let bad = |what: &str| Error::Malformed(format!(".go.buildinfo: {what}"));
        if blob.len() < HEADER_LEN || &blob[..14] != MAGIC {
            return Err(bad("no magic"));
        }
        let ptr_size = blob[14] as usize;
        let flags = blob[15];
        if flags & FLAG_BIG_ENDIAN != 0 {
            return Err(bad("big-endian binaries are not supported"));
        }
        let (version, modinfo) = if flags & FLAG_INLINE != 0 {
            let mut rest = &blob[HEADER_LEN..];
            let version = read_varint_string(&mut rest).ok_or_else(|| bad("version"))?;
            let modinfo = read_varint_string(&mut rest).unwrap_or_default();
            (version, modinfo)
        } else {
            if ptr_size != 8 {
                return Err(bad("pointer size is not 8"));
            }
            let word = |off: usize| u64::from_le_bytes(blob[off..off + 8].try_into().unwrap());
            let read_string = |header_vaddr: u64| -> Option<Vec<u8>> {
                let header = read_vaddr(header_vaddr, 16)?;
                let data = u64::from_le_bytes(header[..8].try_into().ok()?);
                let len = u64::from_le_bytes(header[8..16].try_into().ok()?) as usize;
                (len < 1 << 20).then(|| read_vaddr(data, len)).flatten()
            };
            let version = read_string(word(16)).ok_or_else(|| bad("version pointer"))?;
            let modinfo = read_string(word(24)).unwrap_or_default();
            (version, modinfo)
        };
        let mut info = BuildInfo {
            version: String::from_utf8_lossy(&version).into_owned(),
            ..Default::default()
        };
        info.parse_modinfo(&String::from_utf8_lossy(&strip_sentinels(&modinfo)));
        Ok(info)
    }

    fn parse_modinfo(&mut self, text: &str) {
        for line in text.lines() {
            if let Some(p) = line.strip_prefix("path\t") {
                self.path = Some(p.to_string());
            } else if let Some(m) = line.strip_prefix("mod\t") {
                self.main_module = m.split('\t').next().map(str::to_string);
            } else if let Some(setting) = line.strip_prefix("build\t") {
                let (key, value) = split_setting(setting);
                self.settings.push((key, value));
            }
        }
    }
}

/// Finds and parses the buildinfo of `elf`. `None` means there is none: not a Go binary (or one
/// older than Go 1.13).
pub fn read(elf: &Elf) -> Result<Option<BuildInfo>, Error> {
    let reader = |vaddr: u64, len: usize| elf.read_vaddr(vaddr, len).ok();
    if let Some(sec) = elf.section(".go.buildinfo") {
        let blob = elf.read(sec.offset, (sec.size as usize).max(HEADER_LEN))?;
        return BuildInfo::parse(&blob, reader).map(Some);
    }
    // Without section headers (or with a renamed section), the linker still puts the blob at a
    // 16-byte aligned spot in a writable data segment.
    for seg in elf.segments.iter().filter(|s| s.flags & 2 != 0) {
        let data = elf.read(seg.offset, seg.filesz as usize)?;
        let mut at = 0;
        while at + HEADER_LEN <= data.len() {
            if data[at..].starts_with(MAGIC) {
                return BuildInfo::parse(&data[at..], reader).map(Some);
            }
            at += 16;
        }
    }
    Ok(None)
}

fn read_uvarint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn read_varint_string(buf: &mut &[u8]) -> Option<Vec<u8>> {
    let len = read_uvarint(buf)? as usize;
    let s = buf.get(..len)?.to_vec();
    *buf = &buf[len..];
    Some(s)
}

/// modinfo is wrapped in two 16-byte sentinels so the runtime can find it; debug/buildinfo
/// recognises them by the newline 17 bytes from the end.
fn strip_sentinels(modinfo: &[u8]) -> Vec<u8> {
    let n = modinfo.len();
    if n >= 33 && modinfo[n - 17] == b'\n' {
        modinfo[16..n - 16].to_vec()
    } else {
        Vec::new()
    }
}

/// `KEY=VALUE` where either side may be a Go-quoted string (values with spaces, e.g.
/// `-ldflags="-s -w"`).
fn split_setting(s: &str) -> (String, String) {
    let (key, rest) = if s.starts_with('"') {
        match quoted_prefix(s) {
            Some((k, rest)) => (k, rest.strip_prefix('=').unwrap_or(rest)),
            None => (s.to_string(), ""),
        }
    } else {
        match s.split_once('=') {
            Some((k, v)) => (k.to_string(), v),
            None => (s.to_string(), ""),
        }
    };
    let value = if rest.starts_with('"') {
        quoted_prefix(rest).map_or_else(|| rest.to_string(), |(v, _)| v)
    } else {
        rest.to_string()
    };
    (key, value)
}

/// Unquotes the Go string literal at the start of `s`; returns it and what follows. Covers the
/// escapes `strconv.Quote` emits for printable ASCII and common controls.
fn quoted_prefix(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => {
                let (_, e) = chars.next()?;
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'x' => {
                        let hex: String =
                            (0..2).filter_map(|_| chars.next().map(|c| c.1)).collect();
                        out.push(char::from(u8::from_str_radix(&hex, 16).ok()?));
                    }
                    'u' | 'U' => {
                        let n = if e == 'u' { 4 } else { 8 };
                        let hex: String =
                            (0..n).filter_map(|_| chars.next().map(|c| c.1)).collect();
                        out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                    }
                    other => out.push(other),
                }
            }
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint_string(s: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut n = s.len();
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
        out.extend_from_slice(s);
        out
    }

    fn blob(version: &str, modinfo: &str) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[8, FLAG_INLINE]);
        b.resize(HEADER_LEN, 0);
        b.extend(varint_string(version.as_bytes()));
        let mut wrapped = vec![0x30u8; 16];
        wrapped.extend_from_slice(modinfo.as_bytes());
        wrapped.extend_from_slice(&[0xf9u8; 16]);
        b.extend(varint_string(&wrapped));
        b
    }

    #[test]
    fn parses_inline_buildinfo() {
        let modinfo = "path\texample.com/app/cmd/app\n\
                       mod\texample.com/app\t(devel)\t\n\
                       build\t-ldflags=\"-s -w\"\n\
                       build\tDefaultGODEBUG=asynctimerchan=1,gotypesalias=0\n\
                       build\tGOEXPERIMENT=nogreenteagc\n\
                       build\tGOARCH=amd64\n";
        let info = BuildInfo::parse(&blob("go1.25.5", modinfo), |_, _| None).unwrap();
        assert_eq!(info.version, "go1.25.5");
        assert_eq!(info.path.as_deref(), Some("example.com/app/cmd/app"));
        assert_eq!(info.main_module.as_deref(), Some("example.com/app"));
        assert_eq!(info.setting("-ldflags"), Some("-s -w"));
        assert_eq!(info.setting("GOARCH"), Some("amd64"));
        assert_eq!(info.default_godebug("asynctimerchan"), Some("1"));
        assert_eq!(info.default_godebug("gotypesalias"), Some("0"));
        assert_eq!(info.default_godebug("nope"), None);
        assert!(info.has_experiment("nogreenteagc"));
        assert!(!info.has_experiment("greenteagc"));
    }

    #[test]
    fn tolerates_missing_modinfo_and_rejects_garbage() {
        let info = BuildInfo::parse(&blob("go1.19.8", ""), |_, _| None).unwrap();
        assert_eq!(info.version, "go1.19.8");
        assert!(info.settings.is_empty());
        assert!(BuildInfo::parse(b"not a buildinfo blob at all, no", |_, _| None).is_err());
    }

    #[test]
    fn unquotes_go_strings() {
        assert_eq!(
            split_setting(r#"-ldflags="-X \"main.v=1\" -s""#),
            ("-ldflags".into(), r#"-X "main.v=1" -s"#.into())
        );
        assert_eq!(
            split_setting(r#""odd key"=v"#),
            ("odd key".into(), "v".into())
        );
        assert_eq!(
            split_setting("CGO_ENABLED=0"),
            ("CGO_ENABLED".into(), "0".into())
        );
    }
}
