//! JUnit XML for CI servers: one test case per gated callsite, a failure's message naming the
//! breach and its body the stack and counts, as Jenkins, GitLab and GitHub display them.

use std::fmt::Write;

use super::judge::{leak_context, Key, Seen, Verdict};

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 has no way to carry other control characters, even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// The whole document for `cases` judged in a run of `duration_s` seconds.
pub fn render(cases: &[(&Key, &Seen, Verdict)], duration_s: f64) -> String {
    let failures = cases
        .iter()
        .filter(|c| matches!(c.2, Verdict::Fail(_)))
        .count();
    let skipped = cases
        .iter()
        .filter(|c| matches!(c.2, Verdict::Allowed(_)))
        .count();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let head = format!(
        "tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{duration_s:.3}\"",
        cases.len()
    );
    let _ = writeln!(x, "<testsuites name=\"timerwatch\" {head}>");
    let _ = writeln!(x, "  <testsuite name=\"timerwatch run\" {head}>");
    for (key, seen, verdict) in cases {
        let _ = write!(
            x,
            "    <testcase classname=\"timerwatch.{}\" name=\"{} {}\" time=\"0\"",
            escape(&key.comm),
            escape(key.kind.as_str()),
            escape(&key.caller)
        );
        match verdict {
            Verdict::Pass => x.push_str("/>\n"),
            Verdict::Allowed(why) => {
                let _ = writeln!(x, ">\n      <skipped message=\"{}\"/>", escape(why));
                x.push_str("    </testcase>\n");
            }
            Verdict::Fail(breaches) => {
                let context = leak_context(key, seen, breaches);
                let message = context.lines().next().unwrap_or_default();
                let _ = writeln!(
                    x,
                    ">\n      <failure type=\"timer-leak\" message=\"{}\">{}</failure>",
                    escape(message),
                    escape(&context)
                );
                x.push_str("    </testcase>\n");
            }
        }
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::judge::Breach;

    #[test]
    fn failures_carry_the_stack_and_names_are_escaped() {
        let key = Key {
            comm: "a<b".into(),
            kind: crate::report::Kind::PosixTimer,
            caller: "leak_posix_timer".into(),
        };
        let seen = Seen {
            frames: vec!["leak_posix_timer (posix_leak.c:30)".into()],
            live_at_end: 7,
            ..Seen::default()
        };
        let ok = Key {
            caller: "fine".into(),
            ..key.clone()
        };
        let cases = [
            (
                &key,
                &seen,
                Verdict::Fail(vec![Breach::LiveAtExit { live: 7, limit: 0 }]),
            ),
            (&ok, &seen, Verdict::Pass),
        ];
        let xml = render(&cases, 1.5);
        assert!(xml.contains("tests=\"2\" failures=\"1\""), "{xml}");
        assert!(xml.contains("classname=\"timerwatch.a&lt;b\""), "{xml}");
        assert!(
            xml.contains("at leak_posix_timer (posix_leak.c:30)</failure>"),
            "{xml}"
        );
        assert!(xml.contains("7 live at exit (limit 0)"), "{xml}");
        assert!(
            xml.contains("name=\"posix_timer fine\" time=\"0\"/>"),
            "{xml}"
        );
    }
}
