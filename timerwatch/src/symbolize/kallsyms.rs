//! Kernel function names from `/proc/kallsyms`, for timer callbacks (function pointers).

/// Symbols sorted by address; several may share one address (aliases). Held for the whole
/// session, compactly (~5 MiB for 120k symbols, where a `String` per name took ~9): loading it
/// again for each callback first seen later costs the kernel ~70 ms of formatting.
#[derive(Debug, Default)]
pub(crate) struct Kallsyms {
    /// (address, start and length of the name in `names`). Among aliases at one address, text
    /// symbols come first (callbacks point at functions), then kallsyms order.
    syms: Vec<(u64, u32, u32)>,
    names: String,
}

impl Kallsyms {
    /// Without access (or without root, when every address reads as 0) the table is empty and
    /// every lookup misses, which callers treat as "name unknown".
    pub fn load() -> Self {
        std::fs::read_to_string("/proc/kallsyms")
            .map(|text| Self::parse(&text))
            .unwrap_or_default()
    }

    /// Lines are `ADDR TYPE NAME` or `ADDR TYPE NAME\t[MODULE]`; the module tag is dropped.
    pub fn parse(text: &str) -> Self {
        let mut found: Vec<(u64, u8, &str)> = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let addr = u64::from_str_radix(fields.next()?, 16).ok()?;
                let kind = fields.next()?;
                let name = fields.next()?;
                let rank = match kind {
                    "t" | "T" => 0,
                    "w" | "W" => 1,
                    _ => 2,
                };
                // Hidden addresses (kptr_restrict) are all 0 and would match everything.
                (addr != 0).then_some((addr, rank, name))
            })
            .collect();
        // Stable, so equally ranked aliases keep kallsyms order.
        found.sort_by_key(|&(addr, rank, _)| (addr, rank));
        let mut names = String::with_capacity(found.iter().map(|f| f.2.len()).sum());
        let syms = found
            .into_iter()
            .filter_map(|(addr, _, name)| {
                let start = u32::try_from(names.len()).ok()?;
                names.push_str(name);
                Some((addr, start, u32::try_from(name.len()).ok()?))
            })
            .collect();
        Self { syms, names }
    }

    /// The symbol starting at or most closely below `addr`. kallsyms has no sizes, so an address
    /// past a function's end still names that function; callbacks are function starts anyway.
    pub fn lookup(&self, addr: u64) -> Option<&str> {
        let after = self.syms.partition_point(|s| s.0 <= addr);
        let start = self.syms.get(after.checked_sub(1)?)?.0;
        let first = self.syms.partition_point(|s| s.0 < start);
        let (_, at, len) = self.syms[first];
        self.names.get(at as usize..(at + len) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
ffffffff81200000 T hrtimer_wakeup
ffffffff81100000 T _stext
ffffffff81100000 t startup_64
ffffffff81300000 D jiffies
ffffffff81300000 T alias_after_data
ffffffffc0a01000 t nf_ct_timeout_fn\t[nf_conntrack]
ffffffffc0a02000 t bpf_prog_6deef7357e7b4530_sd_fw_egress\t[bpf]
0000000000000000 T hidden
";

    #[test]
    fn exact_and_inside_lookups() {
        let k = Kallsyms::parse(TEXT);
        assert_eq!(k.lookup(0xffffffff81200000), Some("hrtimer_wakeup"));
        assert_eq!(k.lookup(0xffffffff81200042), Some("hrtimer_wakeup"));
        assert_eq!(k.lookup(0xffffffff811fffff), Some("_stext"));
    }

    #[test]
    fn strips_module_suffix() {
        let k = Kallsyms::parse(TEXT);
        assert_eq!(k.lookup(0xffffffffc0a01000), Some("nf_ct_timeout_fn"));
        assert_eq!(k.lookup(0xffffffffc0a01010), Some("nf_ct_timeout_fn"));
        assert_eq!(
            k.lookup(0xffffffffc0a02000),
            Some("bpf_prog_6deef7357e7b4530_sd_fw_egress")
        );
    }

    #[test]
    fn aliases_prefer_text_then_file_order() {
        let k = Kallsyms::parse(TEXT);
        assert_eq!(k.lookup(0xffffffff81100000), Some("_stext"));
        assert_eq!(k.lookup(0xffffffff81300000), Some("alias_after_data"));
    }

    #[test]
    fn below_first_symbol_and_hidden_addresses_miss() {
        let k = Kallsyms::parse(TEXT);
        assert_eq!(k.lookup(0xffffffff80000000), None);
        assert_eq!(k.lookup(0), None);
        let hidden = Kallsyms::parse("0000000000000000 T a\n0000000000000000 T b\n");
        assert_eq!(hidden.lookup(0x1234), None);
        assert_eq!(Kallsyms::parse("").lookup(1), None);
    }
}
