//! Go release numbers, as recorded in `.go.buildinfo`.

use std::fmt;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Hash)]
pub struct GoVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

/// Oldest and newest releases whose timer internals are documented in
/// docs/go-runtime-timers.md. Anything outside may have moved fields, so it is refused rather
/// than misread.
pub const OLDEST_SUPPORTED: GoVersion = GoVersion::new(1, 19, 0);
pub const NEWEST_SUPPORTED_MINOR: u32 = 27;

impl GoVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Accepts what toolchains write: "go1.22.10", "go1.21.0", "go1.23rc1" (patch 0),
    /// "go1.22.10 X:boringcrypto", "devel go1.24-abcdef Tue …".
    pub fn parse(s: &str) -> Option<Self> {
        let at = s.find("go1")?;
        let rest = &s[at + 2..];
        let mut parts = [0u32; 3];
        let mut idx = 0;
        let mut digits = 0;
        for c in rest.chars() {
            match c {
                '0'..='9' => {
                    parts[idx] = parts[idx]
                        .checked_mul(10)?
                        .checked_add(c as u32 - '0' as u32)?;
                    digits += 1;
                }
                '.' if digits > 0 && idx < 2 => {
                    idx += 1;
                    digits = 0;
                }
                _ => break,
            }
        }
        if idx == 0 {
            return None;
        }
        Some(Self::new(parts[0], parts[1], parts[2]))
    }

    pub fn is_supported(self) -> bool {
        self >= OLDEST_SUPPORTED && self.major == 1 && self.minor <= NEWEST_SUPPORTED_MINOR
    }

    /// 1.23 rewrote runtime timers (`timers` heap of `timerWhen`, `(*timer).modify`, lazy
    /// channel timers); everything before is the "legacy" family.
    pub fn new_timers(self) -> bool {
        self >= Self::new(1, 23, 0)
    }

    pub fn at_least(self, minor: u32) -> bool {
        self >= Self::new(1, minor, 0)
    }
}

impl fmt::Display for GoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "go{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_release_strings() {
        assert_eq!(
            GoVersion::parse("go1.22.10"),
            Some(GoVersion::new(1, 22, 10))
        );
        assert_eq!(GoVersion::parse("go1.21.0"), Some(GoVersion::new(1, 21, 0)));
        assert_eq!(
            GoVersion::parse("go1.23rc1"),
            Some(GoVersion::new(1, 23, 0))
        );
        assert_eq!(GoVersion::parse("go1.20"), Some(GoVersion::new(1, 20, 0)));
        assert_eq!(
            GoVersion::parse("go1.22.10 X:boringcrypto"),
            Some(GoVersion::new(1, 22, 10))
        );
        assert_eq!(
            GoVersion::parse("devel go1.24-7c0c8e7 Tue Jan 1"),
            Some(GoVersion::new(1, 24, 0))
        );
        assert_eq!(GoVersion::parse("go"), None);
        assert_eq!(GoVersion::parse("gopher"), None);
    }

    #[test]
    fn support_window_and_families() {
        assert!(!GoVersion::new(1, 18, 9).is_supported());
        assert!(GoVersion::new(1, 19, 0).is_supported());
        assert!(GoVersion::new(1, 27, 3).is_supported());
        assert!(!GoVersion::new(1, 28, 0).is_supported());
        assert!(!GoVersion::new(1, 22, 10).new_timers());
        assert!(GoVersion::new(1, 23, 0).new_timers());
        assert_eq!(GoVersion::new(1, 25, 5).to_string(), "go1.25.5");
        assert!(GoVersion::new(1, 22, 10) < GoVersion::new(1, 23, 0));
    }
}
