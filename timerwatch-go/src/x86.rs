//! The few amd64 instruction shapes timerwatch recognises in Go runtime code: the frame-pointer
//! prologue (to place uprobes after it) and MOV loads (to recover addresses and struct offsets
//! that stripped binaries no longer name). docs/go-runtime-timers.md §3 and §5.3.

/// How far into a function the frame setup may end: stack check, morestack branch, frame setup.
const PROLOGUE_SCAN: usize = 40;

/// Offset of the first instruction after the frame pointer is established, or `None` for a
/// frameless function.
///
/// Go 1.21+: `PUSHQ BP; MOVQ SP, BP` = `55 48 89 e5`.
/// Go 1.19 (and possibly 1.20): `SUBQ $n, SP; MOVQ BP, k(SP); LEAQ k(SP), BP`, the last being
/// `48 8d 6c 24 kk` or, for big frames, `48 8d ac 24 kk kk kk kk`.
pub fn post_prologue(code: &[u8]) -> Option<usize> {
    let window = &code[..code.len().min(PROLOGUE_SCAN)];
    (0..window.len()).find_map(|i| {
        let rest = &window[i..];
        if rest.starts_with(&[0x55, 0x48, 0x89, 0xe5]) {
            Some(i + 4)
        } else if rest.len() >= 5 && rest.starts_with(&[0x48, 0x8d, 0x6c, 0x24]) {
            Some(i + 5)
        } else if rest.len() >= 8 && rest.starts_with(&[0x48, 0x8d, 0xac, 0x24]) {
            Some(i + 8)
        } else {
            None
        }
    })
}

/// A 64-bit load `MOVQ mem, reg` (REX.W 8B /r) and where it reads from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    /// RIP-relative: the absolute link-time address read.
    Global(u64),
    /// `disp32(base)` with a 32-bit displacement (struct fields far into the object).
    Field(u32),
}

/// Every 64-bit MOV load in `code`, in order, with the offset of its first byte. `base` is the
/// link-time address of `code[0]`. The scan is byte-wise, not a disassembly: a false match
/// inside another instruction is possible, so callers look for corroborating patterns
/// (consecutive addresses, field triples) rather than trusting a single hit.
pub fn loads(code: &[u8], base: u64) -> Vec<(usize, Load)> {
    let mut out = Vec::new();
    for i in 0..code.len().saturating_sub(6) {
        let rex = code[i];
        if rex & 0xf8 != 0x48 || code[i + 1] != 0x8b {
            continue;
        }
        let modrm = code[i + 2];
        let disp = i32::from_le_bytes(code[i + 3..i + 7].try_into().unwrap());
        if modrm & 0xc7 == 0x05 {
            // REX.B must be clear: with it, rm=101 means R13-relative, not RIP-relative.
            if rex & 1 == 0 {
                let next = base + i as u64 + 7;
                out.push((i, Load::Global(next.wrapping_add_signed(i64::from(disp)))));
            }
        } else if modrm & 0xc0 == 0x80 && modrm & 7 != 4 {
            out.push((i, Load::Field(disp as u32)));
        }
    }
    out
}

/// The first RIP-relative 32-bit load into ECX (`8B 0D rel32`), as in
/// `MOVL runtime.debug+N(SB), CX`.
pub fn first_movl_global_ecx(code: &[u8], base: u64) -> Option<u64> {
    (0..code.len().saturating_sub(5)).find_map(|i| {
        // A preceding REX would make this a different instruction (or a 64-bit one).
        let prefixed = i > 0 && code[i - 1] & 0xf0 == 0x40;
        (code[i] == 0x8b && code[i + 1] == 0x0d && !prefixed).then(|| {
            let disp = i32::from_le_bytes(code[i + 2..i + 6].try_into().unwrap());
            (base + i as u64 + 6).wrapping_add_signed(i64::from(disp))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_push_rbp_prologue() {
        // CMPQ SP,16(R14); JBE short; PUSHQ BP; MOVQ SP,BP; SUBQ $0x28,SP
        let code = [
            0x49, 0x3b, 0x66, 0x10, 0x76, 0x30, 0x55, 0x48, 0x89, 0xe5, 0x48, 0x83, 0xec, 0x28,
        ];
        assert_eq!(post_prologue(&code), Some(10));
    }

    #[test]
    fn finds_go119_prologue() {
        // CMPQ; JBE; SUBQ $0x18,SP; MOVQ BP,0x10(SP); LEAQ 0x10(SP),BP
        let code = [
            0x49, 0x3b, 0x66, 0x10, 0x76, 0x2a, 0x48, 0x83, 0xec, 0x18, 0x48, 0x89, 0x6c, 0x24,
            0x10, 0x48, 0x8d, 0x6c, 0x24, 0x10, 0x90,
        ];
        assert_eq!(post_prologue(&code), Some(20));
        let big = [
            0x48, 0x81, 0xec, 0x00, 0x01, 0, 0, 0x48, 0x89, 0xac, 0x24, 0xf8, 0, 0, 0, 0x48, 0x8d,
            0xac, 0x24, 0xf8, 0, 0, 0, 0x90,
        ];
        assert_eq!(post_prologue(&big), Some(23));
        assert_eq!(post_prologue(&[0xc3]), None);
    }

    #[test]
    fn decodes_loads() {
        // MOVQ 0x10(IP), AX at base 0x1000 -> 0x1000+7+0x10; MOVQ 0x22a8(AX), CX
        let code = [
            0x48, 0x8b, 0x05, 0x10, 0, 0, 0, 0x48, 0x8b, 0x88, 0xa8, 0x22, 0, 0, 0x90,
        ];
        assert_eq!(
            loads(&code, 0x1000),
            vec![(0, Load::Global(0x1017)), (7, Load::Field(0x22a8))]
        );
        // MOVL 0x20(IP), CX
        let movl = [0x90, 0x8b, 0x0d, 0x20, 0, 0, 0, 0x90];
        assert_eq!(
            first_movl_global_ecx(&movl, 0x2000),
            Some(0x2000 + 7 + 0x20)
        );
    }
}
