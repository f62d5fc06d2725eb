//! `.gopclntab`: the runtime's own function table. It survives stripping, so it is how
//! timerwatch names functions and finds their entry points in `-s -w` binaries.
//!
//! Formats of Go 1.18+ (header magic 0xfffffff0 for 1.18–1.19, 0xfffffff1 for 1.20+), laid out in
//! `runtime/symtab.go` and `cmd/link/internal/ld/pcln.go`; summary in docs/go-runtime-timers.md §7.

use std::fmt;

use super::Error;

pub const MAGIC_GO118: u32 = 0xffff_fff0;
pub const MAGIC_GO120: u32 = 0xffff_fff1;

/// pcdata table that maps a PC to its index in the inline tree.
pub const PCDATA_INL_TREE_INDEX: usize = 2;
/// funcdata slot holding the inline tree (an offset from `moduledata.gofunc`).
pub const FUNCDATA_INL_TREE: usize = 3;

pub struct Pclntab {
    data: Vec<u8>,
    /// Link-time address of the table (pcHeader).
    pub vaddr: u64,
    pub magic: u32,
    min_lc: u64,
    nfunc: usize,
    /// Base that functab entry offsets are relative to. From the header up to Go 1.25; from
    /// `moduledata.text` in 1.26+, where the header field is always 0.
    text_base: u64,
    funcname: usize,
    cutab: usize,
    filetab: usize,
    pctab: usize,
    functab: usize,
}

impl fmt::Debug for Pclntab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pclntab")
            .field("vaddr", &format_args!("{:#x}", self.vaddr))
            .field("magic", &format_args!("{:#x}", self.magic))
            .field("nfunc", &self.nfunc)
            .field("text_base", &format_args!("{:#x}", self.text_base))
            .finish()
    }
}

/// One function, as found in the table.
#[derive(Clone, Copy, Debug)]
pub struct Func<'a> {
    tab: &'a Pclntab,
    /// Link-time entry address.
    pub entry: u64,
    /// Link-time address just past the function's code.
    pub end: u64,
    /// Offset of the `_func` record inside `data`.
    record: usize,
}

impl Pclntab {
    /// `data` starts at the pcHeader; `vaddr` is where it is linked.
    pub fn parse(data: Vec<u8>, vaddr: u64) -> Result<Pclntab, Error> {
        let bad = |what: &str| Error::Malformed(format!(".gopclntab: {what}"));
        if data.len() < 72 {
            return Err(bad("too short"));
        }
        let magic = u32::from_le_bytes(data[..4].try_into().unwrap());
        if magic != MAGIC_GO118 && magic != MAGIC_GO120 {
            return Err(bad(&format!("unknown magic {magic:#x}")));
        }
        if data[4] != 0 || data[5] != 0 || data[7] != 8 {
            return Err(bad("unexpected header padding or pointer size"));
        }
        let word = |i: usize| u64::from_le_bytes(data[8 * i..8 * i + 8].try_into().unwrap());
        let tab = Pclntab {
            vaddr,
            magic,
            min_lc: u64::from(data[6].max(1)),
            nfunc: word(1) as usize,
            text_base: word(3),
            funcname: word(4) as usize,
            cutab: word(5) as usize,
            filetab: word(6) as usize,
            pctab: word(7) as usize,
            functab: word(8) as usize,
            data,
        };
        let functab_end = tab
            .nfunc
            .checked_add(1)
            .and_then(|n| n.checked_mul(8))
            .and_then(|len| tab.functab.checked_add(len))
            .ok_or_else(|| bad("functab size"))?;
        if functab_end > tab.data.len()
            || [tab.funcname, tab.cutab, tab.filetab, tab.pctab]
                .iter()
                .any(|&o| o > tab.data.len())
        {
            return Err(bad("offsets outside the table"));
        }
        Ok(tab)
    }

    /// Recognises a pcHeader at the start of `b`, for finding the table without section headers.
    pub fn looks_like_header(b: &[u8]) -> bool {
        b.len() >= 8
            && matches!(
                u32::from_le_bytes(b[..4].try_into().unwrap()),
                MAGIC_GO118 | MAGIC_GO120
            )
            && b[4..8] == [0, 0, 1, 8]
    }

    /// The header's textStart; 0 in Go 1.26+.
    pub fn header_text_start(&self) -> u64 {
        self.text_base
    }

    pub fn set_text_base(&mut self, text: u64) {
        self.text_base = text;
    }

    pub fn text_base(&self) -> u64 {
        self.text_base
    }

    /// Link-time address of the function-name table (`moduledata.funcnametab` points here).
    pub fn funcname_vaddr(&self) -> u64 {
        self.vaddr + self.funcname as u64
    }

    pub fn len(&self) -> usize {
        self.nfunc
    }

    pub fn is_empty(&self) -> bool {
        self.nfunc == 0
    }

    fn u32_at(&self, off: usize) -> Option<u32> {
        Some(u32::from_le_bytes(
            self.data.get(off..off.checked_add(4)?)?.try_into().ok()?,
        ))
    }

    fn cstr_at(&self, off: usize) -> Option<&str> {
        let rest = self.data.get(off..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&rest[..end]).ok()
    }

    fn functab_entry(&self, i: usize) -> (u32, u32) {
        let at = self.functab + 8 * i;
        (
            self.u32_at(at).unwrap_or(0),
            self.u32_at(at + 4).unwrap_or(0),
        )
    }

    fn func(&self, i: usize) -> Func<'_> {
        let (entryoff, funcoff) = self.functab_entry(i);
        let (end, _) = self.functab_entry(i + 1);
        Func {
            tab: self,
            // text_base is the file's word: garbage must give garbage addresses, not a panic.
            entry: self.text_base.wrapping_add(u64::from(entryoff)),
            end: self.text_base.wrapping_add(u64::from(end)),
            record: self.functab + funcoff as usize,
        }
    }

    pub fn funcs(&self) -> impl Iterator<Item = Func<'_>> {
        (0..self.nfunc).map(|i| self.func(i))
    }

    /// Linear scan: analyze needs a dozen names, and an index over 100k functions would cost
    /// more than it saves.
    pub fn func_by_name(&self, name: &str) -> Option<Func<'_>> {
        let wanted = name.as_bytes();
        self.funcs().find(|f| {
            let Some(off) = f.name_offset() else {
                return false;
            };
            let start = self.funcname + off;
            self.data.get(start..start + wanted.len()) == Some(wanted)
                && self.data.get(start + wanted.len()) == Some(&0)
        })
    }

    /// The function whose code contains link-time address `pc`.
    pub fn func_at(&self, pc: u64) -> Option<Func<'_>> {
        let rel = u32::try_from(pc.checked_sub(self.text_base)?).ok()?;
        let (end, _) = self.functab_entry(self.nfunc);
        if self.nfunc == 0 || rel >= end {
            return None;
        }
        // First entry whose start is beyond pc; the one before it holds pc.
        let idx = partition_point(self.nfunc, |i| self.functab_entry(i).0 <= rel);
        (idx > 0).then(|| self.func(idx - 1))
    }

    /// Name at an offset into the function-name table (for inline-tree records).
    pub fn name_at(&self, name_off: u32) -> Option<&str> {
        self.cstr_at(self.funcname + name_off as usize)
    }

    /// Value of the pc-value table at `table_off` (relative to pctab) for `pc` in the function
    /// starting at `entry`. The encoding is pairs of (zig-zag value delta, pc delta) varints,
    /// starting from value -1 (`runtime.step`).
    fn pcvalue(&self, table_off: u32, entry: u64, pc: u64) -> Option<i32> {
        if table_off == 0 {
            return None;
        }
        let mut p = self
            .data
            .get(self.pctab.checked_add(table_off as usize)?..)?;
        let mut value: i32 = -1;
        let mut cur = entry;
        let mut first = true;
        loop {
            let uv = read_uvarint(&mut p)? as u32;
            if uv == 0 && !first {
                return None;
            }
            first = false;
            let delta = if uv & 1 != 0 { !(uv >> 1) } else { uv >> 1 };
            value = value.wrapping_add(delta as i32);
            // The deltas are the file's: a huge one must end the walk, not wrap or panic.
            cur = cur.checked_add(read_uvarint(&mut p)?.checked_mul(self.min_lc)?)?;
            if pc < cur {
                return Some(value);
            }
        }
    }
}

/// `_func` record fields (all u32 up to the small ones): entryOff, nameOff, args, deferreturn,
/// pcsp, pcfile, pcln, npcdata, cuOffset, [startLine in 1.20+], funcID/flag/pad/nfuncdata.
impl<'a> Func<'a> {
    fn field(&self, index: usize) -> Option<u32> {
        self.tab.u32_at(self.record + 4 * index)
    }

    fn name_offset(&self) -> Option<usize> {
        Some(self.field(1)? as usize)
    }

    pub fn name(&self) -> Option<&'a str> {
        self.tab.cstr_at(self.tab.funcname + self.name_offset()?)
    }

    /// Offset of the byte after the fixed part: 40 bytes in 1.18–1.19, 44 with startLine.
    fn fixed_len(&self) -> usize {
        if self.tab.magic == MAGIC_GO118 {
            40
        } else {
            44
        }
    }

    fn npcdata(&self) -> usize {
        self.field(7).unwrap_or(0) as usize
    }

    fn nfuncdata(&self) -> usize {
        self.tab
            .data
            .get(self.record + self.fixed_len() - 1)
            .copied()
            .unwrap_or(0) as usize
    }

    /// Source file and line of the instruction at `pc`. For inlined code this is the innermost
    /// (inlined) position; see symbolize for walking out to the physical function.
    pub fn file_line(&self, pc: u64) -> (Option<&'a str>, Option<u32>) {
        let file = self.field(5).and_then(|t| {
            let index = self.tab.pcvalue(t, self.entry, pc)?;
            let cu = self.field(8)? as usize;
            let slot = cu.checked_add(usize::try_from(index).ok()?)?;
            let off = self
                .tab
                .u32_at(self.tab.cutab.checked_add(slot.checked_mul(4)?)?)?;
            if off == u32::MAX {
                return None;
            }
            self.tab.cstr_at(self.tab.filetab + off as usize)
        });
        let line = self.field(6).and_then(|t| {
            let line = self.tab.pcvalue(t, self.entry, pc)?;
            u32::try_from(line).ok()
        });
        (file, line)
    }

    /// Value of pcdata table `index` at `pc` (e.g. the inline-tree index).
    pub fn pcdata(&self, index: usize, pc: u64) -> Option<i32> {
        if index >= self.npcdata() {
            return None;
        }
        let table = self
            .tab
            .u32_at(self.record + self.fixed_len() + 4 * index)?;
        self.tab.pcvalue(table, self.entry, pc)
    }

    /// funcdata slot `index`, as an offset from `moduledata.gofunc`.
    pub fn funcdata(&self, index: usize) -> Option<u32> {
        if index >= self.nfuncdata() {
            return None;
        }
        let at = self.record + self.fixed_len() + 4 * self.npcdata() + 4 * index;
        self.tab.u32_at(at).filter(|&off| off != u32::MAX)
    }
}

fn partition_point(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A two-function table built by hand: enough to pin the header, functab, name and
    /// pc-value decoding without a Go toolchain.
    fn synthetic() -> Pclntab {
        let mut d = vec![0u8; 72];
        d[..4].copy_from_slice(&MAGIC_GO120.to_le_bytes());
        d[6] = 1;
        d[7] = 8;
        let put = |d: &mut Vec<u8>, i: usize, v: u64| {
            d[8 * i..8 * i + 8].copy_from_slice(&v.to_le_bytes())
        };
        put(&mut d, 1, 2); // nfunc
        put(&mut d, 3, 0x401000); // textStart
        let funcname = d.len();
        d.extend_from_slice(b"main.a\0main.b\0");
        let cutab = d.len();
        d.extend_from_slice(&0u32.to_le_bytes());
        let filetab = d.len();
        d.extend_from_slice(b"/src/main.go\0");
        let pctab = d.len();
        d.push(0); // offset 0 means "no table"
                   // line table: value -1 + 11 = 10 for pc [0,4), then +2 = 12 for [4,16)
        let lines = d.len() - pctab;
        d.extend_from_slice(&[22, 4, 4, 12, 0]);
        // file table: index 0 for the whole function
        let files = d.len() - pctab;
        d.extend_from_slice(&[2, 16, 0]);
        let functab = d.len();
        let rec = |name: u32| {
            let mut r = Vec::new();
            for v in [0u32, name, 0, 0, 0, files as u32, lines as u32, 0, 0, 0] {
                r.extend_from_slice(&v.to_le_bytes());
            }
            r.extend_from_slice(&[0, 0, 0, 0]);
            r
        };
        let recs_at = 3 * 8;
        let mut ft = Vec::new();
        for (entry, funcoff) in [(0u32, recs_at), (16, recs_at + 44), (32, 0)] {
            ft.extend_from_slice(&entry.to_le_bytes());
            ft.extend_from_slice(&(funcoff as u32).to_le_bytes());
        }
        d.extend(ft);
        let mut a = rec(0);
        a[..4].copy_from_slice(&0u32.to_le_bytes());
        let mut b = rec(7);
        b[..4].copy_from_slice(&16u32.to_le_bytes());
        d.extend(a);
        d.extend(b);
        for (i, v) in [
            (4, funcname),
            (5, cutab),
            (6, filetab),
            (7, pctab),
            (8, functab),
        ] {
            put(&mut d, i, v as u64);
        }
        Pclntab::parse(d, 0x500000).unwrap()
    }

    #[test]
    fn finds_functions_by_name_and_address() {
        let t = synthetic();
        assert_eq!(t.len(), 2);
        let b = t.func_by_name("main.b").unwrap();
        assert_eq!((b.entry, b.end), (0x401010, 0x401020));
        assert_eq!(t.func_at(0x401000).unwrap().name(), Some("main.a"));
        assert_eq!(t.func_at(0x40100f).unwrap().name(), Some("main.a"));
        assert_eq!(t.func_at(0x401010).unwrap().name(), Some("main.b"));
        assert!(t.func_at(0x401020).is_none());
        assert!(t.func_at(0x400fff).is_none());
        assert!(t.func_by_name("main.").is_none());
    }

    #[test]
    fn decodes_file_and_line() {
        let t = synthetic();
        let a = t.func_by_name("main.a").unwrap();
        assert_eq!(a.file_line(0x401000), (Some("/src/main.go"), Some(10)));
        assert_eq!(a.file_line(0x401005), (Some("/src/main.go"), Some(12)));
    }

    #[test]
    fn rejects_unknown_magic() {
        let mut d = vec![0u8; 80];
        d[..4].copy_from_slice(&0xffff_fffbu32.to_le_bytes());
        assert!(Pclntab::parse(d, 0).is_err());
    }
}
