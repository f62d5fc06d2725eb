//! The report's closed word lists: where a callsite's timers were seen (`Source`), what they
//! are for (`Kind`), the growth verdict (`Verdict`), why it differs from the live count's
//! (`VerdictReason`) and how a Go callsite got its name (`Attribution`).
//!
//! Each word serializes to exactly the string the JSON schema `timerwatch.report/v1`, the
//! metrics labels and the text renderings have always used (the golden files under
//! `tests/golden` hold them). A value this build does not list, read from a newer timerwatch's
//! recording, is kept as read (`Unlisted`) and written back unchanged.
//!
//! Equality, order and hashing are those of the strings, so sorting by a word keeps the
//! alphabetical order every rendering had while these were `&'static str`s, and an `Unlisted`
//! never differs from a listed word of the same spelling.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

static UNLISTED: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);

/// The `&'static str` equal to `s`, for words this build does not list (and the schema of a
/// report read back). Each distinct string is kept once for the life of the process: a
/// recording is read once, and its distinct labels are few.
pub fn intern(s: &str) -> &'static str {
    let mut unlisted = UNLISTED.lock().unwrap_or_else(PoisonError::into_inner);
    let set = unlisted.get_or_insert_with(HashSet::new);
    if let Some(k) = set.get(s) {
        return k;
    }
    let k: &'static str = Box::leak(s.to_owned().into_boxed_str());
    set.insert(k);
    k
}

macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $word:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A word this build does not list (a newer timerwatch's), kept as read. Made
            /// only by [`Self::parse`], which maps listed words to their variants.
            Unlisted(&'static str),
        }

        impl $name {
            /// Every listed word, in declaration order.
            #[allow(dead_code)]
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $word, )*
                    Self::Unlisted(s) => s,
                }
            }

            /// The word spelled `s`; an unlisted spelling is interned for the process's life.
            pub fn parse(s: &str) -> Self {
                match s {
                    $( $word => Self::$variant, )*
                    _ => Self::Unlisted(intern(s)),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // `pad`, not `write_str`: the text tables align these with `{:<11}`.
                f.pad(self.as_str())
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.as_str() == other.as_str()
            }
        }

        impl Eq for $name {}

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for $name {
            fn cmp(&self, other: &Self) -> Ordering {
                self.as_str().cmp(other.as_str())
            }
        }

        impl Hash for $name {
            fn hash<H: Hasher>(&self, state: &mut H) {
                self.as_str().hash(state)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok(Self::parse(&String::deserialize(d)?))
            }
        }
    };
}

vocabulary! {
    /// Where a callsite's timers were seen.
    pub enum Source {
        /// Kernel timers, from the timer tracepoints.
        Kernel = "kernel",
        /// Go runtime timers, from uprobes or the runtime's heaps.
        Go = "go",
    }
}

vocabulary! {
    /// What a callsite's timers are for: the kernel side's kinds ([`crate::kind::Kind`], by
    /// kernel callback) and the Go runtime's ([`timerwatch_go::kinds::GoKind`], by Go callback).
    pub enum Kind {
        PosixTimer = "posix_timer",
        Timerfd = "timerfd",
        Itimer = "itimer",
        Sleep = "sleep",
        Kernel = "kernel",
        Other = "other",
        GoTimer = "go_timer",
        GoTicker = "go_ticker",
        GoAfterFunc = "go_afterfunc",
        GoSleep = "go_sleep",
        GoNetpoll = "go_netpoll",
        GoOther = "go_other",
    }
}

vocabulary! {
    /// A growth verdict (see [`crate::verdict`]).
    pub enum Verdict {
        Growing = "growing",
        Stable = "stable",
        Draining = "draining",
        /// Too few samples to judge.
        Unknown = "unknown",
    }
}

vocabulary! {
    /// Why a verdict is what it is where the live count alone would say otherwise (see
    /// `CallsiteReport::verdict_reason`).
    pub enum VerdictReason {
        Filling = "filling",
        AtPlateau = "at_plateau",
        PlateauAboveThreshold = "plateau_above_threshold",
    }
}

vocabulary! {
    /// How a Go callsite got its name (see `CallsiteReport::attribution`).
    pub enum Attribution {
        /// Uprobes saw the stack that created the timer (probes mode).
        CreationStack = "creation_stack",
        /// An `AfterFunc`'s own function.
        Callback = "callback",
        /// The goroutine blocked on the timer's channel or sleeping on it.
        Waiter = "waiter",
        /// Only the timer's kind and period.
        Signature = "signature",
    }
}

impl Verdict {
    /// How alarming the verdict is, for "the worst of" a group of callsites: growing, then
    /// draining, then stable; unknown (and unlisted) least.
    pub fn alarm(self) -> u8 {
        match self {
            Self::Growing => 3,
            Self::Draining => 2,
            Self::Stable => 1,
            Self::Unknown | Self::Unlisted(_) => 0,
        }
    }

    /// Growing or draining: a trend with a slope worth printing.
    pub fn trending(self) -> bool {
        matches!(self, Self::Growing | Self::Draining)
    }
}

impl Default for Verdict {
    /// Nothing judged yet.
    fn default() -> Self {
        Self::Unknown
    }
}

impl From<crate::kind::Kind> for Kind {
    fn from(k: crate::kind::Kind) -> Self {
        use crate::kind::Kind as K;
        match k {
            K::PosixTimer => Self::PosixTimer,
            K::Timerfd => Self::Timerfd,
            K::Itimer => Self::Itimer,
            K::Sleep => Self::Sleep,
            K::Kernel => Self::Kernel,
            K::Other => Self::Other,
        }
    }
}

impl From<timerwatch_go::kinds::GoKind> for Kind {
    fn from(k: timerwatch_go::kinds::GoKind) -> Self {
        use timerwatch_go::kinds::GoKind as G;
        match k {
            G::Timer => Self::GoTimer,
            G::Ticker => Self::GoTicker,
            G::AfterFunc => Self::GoAfterFunc,
            G::Sleep => Self::GoSleep,
            G::Netpoll => Self::GoNetpoll,
            G::Other => Self::GoOther,
        }
    }
}

impl From<crate::trend::Verdict> for Verdict {
    fn from(v: crate::trend::Verdict) -> Self {
        use crate::trend::Verdict as V;
        match v {
            V::Growing => Self::Growing,
            V::Stable => Self::Stable,
            V::Draining => Self::Draining,
            V::Unknown => Self::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_keep_the_words_their_sources_use() {
        use crate::kind::Kind as K;
        use timerwatch_go::kinds::GoKind as G;
        for k in [
            K::PosixTimer,
            K::Timerfd,
            K::Itimer,
            K::Sleep,
            K::Kernel,
            K::Other,
        ] {
            assert_eq!(Kind::from(k).as_str(), k.as_str());
        }
        for g in [
            G::Timer,
            G::Ticker,
            G::AfterFunc,
            G::Sleep,
            G::Netpoll,
            G::Other,
        ] {
            assert_eq!(Kind::from(g).as_str(), g.as_str());
        }
        use crate::trend::Verdict as V;
        for v in [V::Growing, V::Stable, V::Draining, V::Unknown] {
            assert_eq!(Verdict::from(v).as_str(), v.as_str());
        }
    }

    #[test]
    fn unlisted_words_are_kept_once() {
        let a = intern("some_future_kind");
        let b = intern(&String::from("some_future_kind"));
        assert!(std::ptr::eq(a, b));
        assert_eq!(a, "some_future_kind");
    }

    #[test]
    fn words_read_back_to_their_variants_and_others_stay_as_read() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), *k);
            assert!(!matches!(Kind::parse(k.as_str()), Kind::Unlisted(_)));
        }
        let newer = Verdict::parse("oscillating");
        assert!(matches!(newer, Verdict::Unlisted("oscillating")));
        assert_eq!(serde_json::to_string(&newer).unwrap(), "\"oscillating\"");
        assert_eq!(format!("[{:<9}]", Verdict::Growing), "[growing  ]");
        // Ordered as the words are, as when they were strings.
        let mut kinds = vec![Kind::Timerfd, Kind::GoTimer, Kind::Itimer];
        kinds.sort();
        assert_eq!(kinds, [Kind::GoTimer, Kind::Itimer, Kind::Timerfd]);
    }
}
