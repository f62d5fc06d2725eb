//! Reading back the report's `&'static str` values: the schema, and the words of
//! [`crate::vocab`] that this build does not list.
//!
//! A recording normally holds only the current schema, which maps to the program's own
//! constant. A word this build does not know (a newer timerwatch's kind) is kept once per
//! distinct string for the life of the process: a recording is read once, and its distinct
//! labels are few.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Deserializer};

static OTHERS: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);

/// The `&'static str` equal to `s`.
pub fn intern(s: &str) -> &'static str {
    if s == crate::report::SCHEMA {
        return crate::report::SCHEMA;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_is_the_constant_and_others_are_kept_once() {
        assert_eq!(
            intern(&String::from(crate::report::SCHEMA)),
            crate::report::SCHEMA
        );
        let a = intern("some_future_kind");
        let b = intern(&String::from("some_future_kind"));
        assert!(std::ptr::eq(a, b));
        assert_eq!(a, "some_future_kind");
    }
}
