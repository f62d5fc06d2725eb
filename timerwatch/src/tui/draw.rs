//! Drawing the interactive view: heading, filter box, table, and the detail or help panel.

use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{
        Block, Borders, Cell, Clear, Paragraph, Row as TableRow, Sparkline, Table, TableState,
    },
    Frame,
};

use super::app::{App, Column, Mode, Row, View};
use crate::output::text::{age, micros};
use crate::report::Verdict;

fn verdict_style(v: Verdict) -> Style {
    match v {
        Verdict::Growing => Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        Verdict::Draining => Style::default().fg(Color::Cyan),
        Verdict::Stable => Style::default().fg(Color::Green),
        Verdict::Unknown | Verdict::Unlisted(_) => Style::default().fg(Color::DarkGray),
    }
}

/// Rows the table shows at once for `height` lines of screen: what PageUp/PageDown move.
pub fn page(height: u16) -> usize {
    usize::from(height.saturating_sub(6)).max(1)
}

pub fn draw(f: &mut Frame, app: &App) {
    let area = f.area();
    let detail = app.mode == Mode::Detail && app.selected_row().is_some();
    let [head, filter, table, panel, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(if app.mode == Mode::Filter || !app.filter.is_empty() {
            1
        } else {
            0
        }),
        Constraint::Min(3),
        Constraint::Length(if detail { area.height / 2 } else { 0 }),
        Constraint::Length(1),
    ])
    .areas(area);
    f.render_widget(Paragraph::new(app.heading.as_str()), head);
    if filter.height > 0 {
        let cursor = if app.mode == Mode::Filter { "█" } else { "" };
        f.render_widget(
            Paragraph::new(Line::from(vec![
                Span::styled("Filter: ", Style::default().add_modifier(Modifier::BOLD)),
                Span::raw(format!("{}{cursor}", app.filter)),
            ])),
            filter,
        );
    }
    draw_table(f, app, table);
    if detail {
        if let Some(row) = app.selected_row() {
            draw_detail(f, app, row, panel);
        }
    }
    let hint = match app.mode {
        Mode::Filter => "Enter apply  Esc clear  (pid:N comm:X caller:X kind:X pod:X, or any word)",
        _ => "q quit  ? help  / filter  Enter stack  sort: l live g growth a armed w wake-ups o oldest",
    };
    f.render_widget(
        Paragraph::new(hint).style(Style::default().add_modifier(Modifier::REVERSED)),
        keys,
    );
    if app.mode == Mode::Help {
        draw_help(f, area);
    }
}

fn header_cell(app: &App, name: &str, col: Option<Column>) -> Cell<'static> {
    let sorted = col == Some(app.sort);
    let text = if sorted {
        format!("{name}▼")
    } else {
        name.to_string()
    };
    let style = if sorted {
        Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
    } else {
        Style::default().add_modifier(Modifier::BOLD)
    };
    Cell::from(text).style(style)
}

fn draw_table(f: &mut Frame, app: &App, area: Rect) {
    let rows = app.visible();
    let mut header = vec![
        header_cell(app, "PID", None),
        header_cell(app, "COMM", None),
        header_cell(app, "LIVE", Some(Column::Live)),
        header_cell(app, "GROWTH/s", Some(Column::Growth)),
        header_cell(app, "VERDICT", None),
        header_cell(app, "KIND", None),
        header_cell(app, "ARMED", Some(Column::Armed)),
        header_cell(app, "WAKE/s", Some(Column::Wakeups)),
        header_cell(app, "OLDEST", Some(Column::Oldest)),
    ];
    let mut widths = vec![
        Constraint::Length(8),
        Constraint::Length(15),
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Length(11),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Length(8),
    ];
    if app.view == View::Wakeups {
        header.push(header_cell(app, "SLACK p50", None));
        header.push(header_cell(app, "LAT p99", None));
        widths.extend([Constraint::Length(9), Constraint::Length(9)]);
    }
    header.push(header_cell(app, "CALLER", None));
    widths.push(Constraint::Min(10));
    let body: Vec<TableRow> = rows
        .iter()
        .map(|r| {
            let mut cells = vec![
                Cell::from(r.pid.to_string()),
                Cell::from(r.comm.clone()),
                Cell::from(r.live.to_string()),
                Cell::from(r.growth_per_s.map_or("-".into(), |g| format!("{g:+.1}"))),
                Cell::from(r.verdict.as_str()).style(verdict_style(r.verdict)),
                Cell::from(r.kind.as_str()),
                Cell::from(r.armed.to_string()),
                Cell::from(r.wakeups_per_s.map_or("-".into(), |w| format!("{w:.1}"))),
                Cell::from(age(r.oldest_s)),
            ];
            if app.view == View::Wakeups {
                cells.push(Cell::from(micros(r.slack_p50_s)));
                cells.push(Cell::from(micros(r.latency_p99_s)));
            }
            cells.push(Cell::from(r.caller.clone()));
            TableRow::new(cells)
        })
        .collect();
    let title = format!(" {} of {} callsites ", rows.len(), app.rows.len());
    let table = Table::new(body, widths)
        .header(TableRow::new(header))
        .block(Block::default().borders(Borders::TOP).title(title))
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default().with_selected((!rows.is_empty()).then_some(app.selected));
    f.render_stateful_widget(table, area, &mut state);
}

fn draw_detail(f: &mut Frame, app: &App, row: &Row, area: Rect) {
    let block = Block::default().borders(Borders::ALL).title(format!(
        " pid {} {} · {} {} · {} live · Enter/Esc close ",
        row.pid, row.comm, row.source, row.kind, row.live
    ));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let [spark_label, spark, stack] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(3),
        Constraint::Min(1),
    ])
    .areas(inner);
    let history: Vec<u64> = app
        .history
        .get(&row.key)
        .map(|h| h.iter().copied().collect())
        .unwrap_or_default();
    let (lo, hi) = (
        history.iter().min().copied().unwrap_or(0),
        history.iter().max().copied().unwrap_or(0),
    );
    f.render_widget(
        Paragraph::new(Line::from(vec![
            Span::raw(format!(
                "live timers, last {} refreshes (min {lo}, max {hi}) · verdict ",
                history.len()
            )),
            Span::styled(row.verdict.as_str(), verdict_style(row.verdict)),
        ])),
        spark_label,
    );
    // Draw only the newest samples that fit, so the line ends at "now".
    let fit = usize::from(spark.width);
    let shown = &history[history.len().saturating_sub(fit)..];
    f.render_widget(
        Sparkline::default()
            .data(shown)
            .style(verdict_style(row.verdict)),
        spark,
    );
    let mut lines = Vec::new();
    if let Some(cb) = &row.timer_function {
        lines.push(Line::from(vec![
            Span::styled(cb.clone(), Style::default().fg(Color::Yellow)),
            Span::raw("  (kernel callback)"),
        ]));
    }
    for (i, frame) in row.frames.iter().enumerate() {
        lines.push(Line::from(format!("#{i:<2} {frame}")));
    }
    if row.frames.is_empty() {
        lines.push(Line::from(
            "no user stack (armed before tracing, or a kernel-only timer)",
        ));
    }
    f.render_widget(Paragraph::new(lines), stack);
}

fn draw_help(f: &mut Frame, area: Rect) {
    let text = [
        "q, Ctrl-C      quit",
        "↑ ↓ PgUp PgDn  select a callsite (also j k Home End)",
        "Enter          show/hide its stack and live-count sparkline",
        "/ or f         filter: words match pid, comm, caller, kind, pod;",
        "               pid:N comm:X caller:X kind:X pod:X match one field",
        "Esc            close the stack, clear the filter",
        "l g a w o      sort by live, growth/s, armed, wake-ups/s, oldest",
        "s or Tab       next sort column",
        "?              this help (any key closes it)",
        "",
        "verdicts: growing (red) · draining (cyan) · stable (green) · unknown (grey)",
    ];
    let w = 76.min(area.width);
    let h = (text.len() as u16 + 2).min(area.height);
    let rect = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    f.render_widget(Clear, rect);
    f.render_widget(
        Paragraph::new(text.map(Line::from).to_vec())
            .block(Block::default().borders(Borders::ALL).title(" keys ")),
        rect,
    );
}

#[cfg(test)]
mod tests {
    use ratatui::{backend::TestBackend, Terminal};

    use super::*;
    use crate::report::fixtures::{callsite, process, report};
    use crate::report::CallsiteReport;

    fn screen(app: &App, w: u16, h: u16) -> String {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| draw(f, app)).unwrap();
        let buf = t.backend().buffer().clone();
        (0..h)
            .map(|y| {
                (0..w)
                    .map(|x| buf[(x, y)].symbol().to_string())
                    .collect::<String>()
                    + "\n"
            })
            .collect()
    }

    #[test]
    fn table_detail_and_help_draw_at_any_size() {
        let leak = CallsiteReport {
            verdict: Verdict::Growing,
            frames: vec!["timerfd_settime".into(), "leak_timerfd (t.c:9)".into()],
            naming: Vec::new(),
            ..callsite("leak_timerfd", 5)
        };
        let mut app = App::new(View::Timers);
        app.update(
            &report(vec![process(7, "leaker", vec![leak])]),
            &mut |_, _| "-".into(),
        );
        let s = screen(&app, 120, 30);
        assert!(
            s.contains("leak_timerfd") && s.contains("growing") && s.contains("LIVE▼"),
            "{s}"
        );
        app.mode = Mode::Detail;
        let s = screen(&app, 120, 30);
        assert!(
            s.contains("#1  leak_timerfd (t.c:9)") && s.contains("timerfd_tmrproc"),
            "{s}"
        );
        app.mode = Mode::Help;
        assert!(screen(&app, 120, 30).contains("sort by live"));
        for (w, h) in [(1, 1), (10, 4), (40, 8)] {
            screen(&app, w, h);
        }
    }
}
