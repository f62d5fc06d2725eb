//! The interactive `top` and `wakeups` (ratatui on crossterm), used when stdout is a terminal.

pub mod app;
pub mod draw;

use std::cell::RefCell;
use std::io::Stdout;
use std::time::Duration;

use anyhow::{Context, Result};
use ratatui::{
    backend::CrosstermBackend,
    crossterm::{
        event::{self, Event},
        execute,
        terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
    },
    Terminal,
};

pub use app::View;

use crate::{report::Report, session::Tracer};

/// Raw mode and the alternate screen for as long as it lives; dropping it (also on an error
/// or a panic unwinding) gives the terminal back as it was.
struct Screen {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Screen {
    fn enter() -> Result<Screen> {
        terminal::enable_raw_mode().context("cannot put the terminal in raw mode")?;
        let mut out = std::io::stdout();
        if let Err(e) = execute!(out, EnterAlternateScreen) {
            let _ = terminal::disable_raw_mode();
            return Err(e).context("cannot switch to the alternate screen");
        }
        let mut terminal = Terminal::new(CrosstermBackend::new(out))?;
        let _ = terminal.hide_cursor();
        Ok(Screen { terminal })
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = self.terminal.show_cursor();
        let _ = execute!(self.terminal.backend_mut(), LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
    }
}

/// Terminal events, read on their own thread (crossterm's read blocks) and passed to the
/// tracing loop, which stays on its single thread.
fn input() -> tokio::sync::mpsc::UnboundedReceiver<Event> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while let Ok(ev) = event::read() {
            if tx.send(ev).is_err() {
                break;
            }
        }
    });
    rx
}

/// Runs the interactive view until `q`, Ctrl-C, SIGTERM or `count` refreshes; returns the
/// last report.
pub async fn run(
    tracer: &mut Tracer,
    view: View,
    interval: Duration,
    count: Option<u64>,
) -> Result<Report> {
    let mut events = input();
    let screen = RefCell::new(Screen::enter()?);
    let app = RefCell::new(App::new(view));
    let mut pods = crate::export::group::live_pods();
    let redraw = || -> bool {
        let app = app.borrow();
        screen
            .borrow_mut()
            .terminal
            .draw(|f| draw::draw(f, &app))
            .is_ok()
    };
    redraw();
    let mut frames = 0u64;
    let report = tracer
        .run_with_events(
            None,
            Some(interval),
            &mut events,
            |report| {
                app.borrow_mut().update(report, &mut pods);
                frames += 1;
                redraw() && count.is_none_or(|c| frames < c)
            },
            |ev| {
                let keep = match ev {
                    Event::Key(key) => {
                        let height = screen.borrow().terminal.size().map_or(24, |s| s.height);
                        app.borrow_mut().on_key(key, draw::page(height))
                    }
                    // draw() fits the new size itself.
                    _ => true,
                };
                keep && redraw()
            },
        )
        .await;
    drop(screen);
    report
}

use app::App;
