//! Reading back the report's `&'static str` fields (schema, kinds, verdicts, sources).
//!
//! Live reports name these from fixed sets, so a recording normally holds only known values,
//! which map to the program's own constants. A value this build does not know (a newer
//! timerwatch's kind) is kept once per distinct string for the life of the process: a
//! recording is read once, and its distinct labels are few.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Deserializer};

static KNOWN: &[&str] = &[
    crate::report::SCHEMA,
    "go",
    "growing",
    "stable",
    "draining",
    "unknown",
    "posix_timer",
    "timerfd",
    "itimer",
    "sleep",
    "kernel",
    "other",
    "filling",
    "at_plateau",
    "plateau_above_threshold",
];

static OTHERS: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);

/// The `&'static str` equal to `s`.
pub fn intern(s: &str) -> &'static str {
    if let Some(k) = KNOWN.iter().find(|k| **k == s) {
        return k;
    }
    let mut others = OTHERS.lock().unwrap_or_else(PoisonError::into_inner);
    let set = others.get_or_insert_with(HashSet::new);
    if let Some(k) = set.get(s) {
        return k;
    }
    let k: &'static str = Box::leak(s.to_owned().into_boxed_str());
    set.insert(k);
    k
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    let s = String::deserialize(d)?;
    Ok(intern(&s))
}

/// The same for an optional field; absent in recordings made before the field existed.
pub fn deserialize_option<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<&'static str>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(|s| intern(&s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_are_the_constants_and_others_are_kept_once() {
        assert!(KNOWN.iter().any(|k| std::ptr::eq(*k, intern("growing"))));
        let a = intern("some_future_kind");
        let b = intern(&String::from("some_future_kind"));
        assert!(std::ptr::eq(a, b));
        assert_eq!(a, "some_future_kind");
    }
}
