//! The JSON form of the report: one document per line, so a stream of `top --json` frames is
//! JSON Lines.

use crate::report::Report;

pub fn render(report: &Report) -> String {
    // Serialising plain data with string keys cannot fail.
    serde_json::to_string(report).expect("report serialises")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::report::fixtures::{callsite, process, report as report_of};
    use crate::report::{assemble, kernel_rows, CallsiteReport, Context, SCHEMA};
    use crate::table::Table;

    #[test]
    fn empty_report_has_the_documented_top_level_fields() {
        let pre = HashMap::new();
        let missing = vec!["syscalls:sys_enter_timer_create".to_string()];
        let ctx = Context {
            start_ns: 1_000_000_000,
            now_ns: 3_500_000_000,
            lost_events: 4,
            pre_existing: &pre,
            missing_tracepoints: &missing,
        };
        let v: serde_json::Value = serde_json::from_str(&render(&assemble(
            &ctx,
            kernel_rows(&Table::new(), &ctx),
            vec![],
            None,
        )))
        .unwrap();
        assert_eq!(v["schema"], SCHEMA);
        assert_eq!(v["duration_s"], 2.5);
        assert_eq!(v["lost_events"], 4);
        assert_eq!(v["processes"], serde_json::json!([]));
        assert_eq!(v["exited"], serde_json::json!([]));
        assert_eq!(
            v["missing_tracepoints"][0],
            "syscalls:sys_enter_timer_create"
        );
    }

    #[test]
    fn callsite_fields_and_nulls() {
        let site = CallsiteReport {
            kind: crate::report::Kind::PosixTimer,
            timer_function: None,
            frames: vec![
                "timer_settime".into(),
                "arm_idle_timeout (leak.c:12)".into(),
            ],
            ..callsite("arm_idle_timeout", 3)
        };
        let mut p = process(7, "leaky", vec![site]);
        p.pre_existing.posix_timers = 2;
        let report = report_of(vec![p]);
        let v: serde_json::Value = serde_json::from_str(&render(&report)).unwrap();
        let c = &v["processes"][0]["callsites"][0];
        assert_eq!(v["processes"][0]["pre_existing"]["posix_timers"], 2);
        assert_eq!(c["source"], "kernel");
        assert_eq!(c["kind"], "posix_timer");
        assert!(c["timer_function"].is_null());
        assert!(c["oldest_age_s"].is_null());
        assert_eq!(c["caller"], "arm_idle_timeout");
        assert_eq!(c["frames"][1], "arm_idle_timeout (leak.c:12)");
        assert_eq!(c["verdict"], "unknown");
        for key in ["live", "armed_total", "cancelled_total", "expired_total"] {
            assert!(c[key].is_u64(), "{key}");
        }
    }
}
