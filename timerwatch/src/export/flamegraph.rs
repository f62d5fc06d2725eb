//! The folded stacks drawn as an interactive SVG flame graph, in-process with inferno.

use anyhow::{Context, Result};
use inferno::flamegraph::{self, Options};

use crate::report::Report;

pub fn render(report: &Report) -> Result<Vec<u8>> {
    let folded = super::folded::render(report);
    let mut opts = Options::default();
    opts.title = "timerwatch: live timers by stack".into();
    opts.subtitle = Some(format!("{:.1}s traced", report.duration_s));
    opts.count_name = "timers".into();
    if folded.is_empty() {
        // inferno refuses an empty profile; the file still says why it is empty.
        return Ok(format!(
            "<?xml version=\"1.0\" standalone=\"no\"?>\n<svg version=\"1.1\" width=\"600\" height=\"60\" \
             xmlns=\"http://www.w3.org/2000/svg\"><text x=\"10\" y=\"30\">timerwatch: no live timers \
             in {:.1}s traced</text></svg>\n",
            report.duration_s
        )
        .into_bytes());
    }
    let mut svg = Vec::new();
    flamegraph::from_lines(&mut opts, folded.lines(), &mut svg)
        .context("drawing the flame graph")?;
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{callsite, process, report};

    #[test]
    fn svg_names_the_frames() {
        let r = report(vec![process(1, "app", vec![callsite("leak_here", 3)])]);
        let svg = String::from_utf8(render(&r).unwrap()).unwrap();
        assert!(svg.starts_with("<?xml"), "{svg}");
        assert!(svg.contains("leak_here"));
        let empty = String::from_utf8(render(&report(vec![])).unwrap()).unwrap();
        assert!(empty.contains("no live timers"), "{empty}");
    }
}
