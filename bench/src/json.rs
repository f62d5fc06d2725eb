//! Reading timerwatch's reports and `bpftool -j` output through serde_json, with the few
//! lenient accessors the bench needs: a missing or mistyped field is `None` or empty, never an
//! error, because older reports and other tools' versions may lack it.

use anyhow::Result;

pub use serde_json::Value as Json;

pub fn parse(text: &str) -> Result<Json> {
    Ok(serde_json::from_str(text)?)
}

pub trait Fields {
    fn num(&self, key: &str) -> Option<f64>;
    fn str(&self, key: &str) -> Option<&str>;
    /// The elements of an array, or none.
    fn items(&self) -> &[Json];
    /// The elements of the array at `key`, or none.
    fn arr(&self, key: &str) -> &[Json];
}

impl Fields for Json {
    fn num(&self, key: &str) -> Option<f64> {
        self.get(key)?.as_f64()
    }

    fn str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    fn items(&self) -> &[Json] {
        self.as_array().map_or(&[], Vec::as_slice)
    }

    fn arr(&self, key: &str) -> &[Json] {
        self.get(key).map_or(&[], Fields::items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_report_shape() {
        let v = parse(
            r#"{"schema": "timerwatch.report/v1", "lost_events": 0, "x": [1, -2.5e3, true, null],
                "processes": [{"pid": 7, "comm": "a\"b\u00e9", "callsites": []}]}"#,
        )
        .unwrap();
        assert_eq!(v.num("lost_events"), Some(0.0));
        assert_eq!(v.arr("x")[1].as_f64(), Some(-2500.0));
        let p = &v.arr("processes")[0];
        assert_eq!(p.num("pid"), Some(7.0));
        assert_eq!(p.str("comm"), Some("a\"bé"));
        assert!(p.arr("callsites").is_empty());
        assert!(p.arr("comm").is_empty());
        assert!(parse("{\"a\": 1} x").is_err());
        assert!(parse("[1, 2").is_err());
    }
}
