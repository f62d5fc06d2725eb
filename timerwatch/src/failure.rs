//! Errors the user caused or can fix, with the exit code that tells scripts which.

use std::fmt;

/// Exit code for missing privileges or an unusable kernel.
pub const EXIT_PRIVILEGE: u8 = 1;
/// Exit code for bad input: unknown PID, invalid option values.
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code of `snapshot --fail-on-growth` and `run --fail-on-growth` when a callsite grows.
pub const EXIT_GROWTH: u8 = 3;
/// Exit code of `run --fail-on-live-at-exit` when a callsite keeps too many timers.
pub const EXIT_LIVE_AT_EXIT: u8 = 4;

#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    pub fn privilege(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_PRIVILEGE,
            message: message.into(),
        }
    }
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_BAD_INPUT,
            message: message.into(),
        }
    }
    pub fn growth(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_GROWTH,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// One line for any error: the failure's message, or an anyhow chain joined with ": ".
pub fn one_line(err: &anyhow::Error) -> (u8, String) {
    match err.downcast_ref::<Failure>() {
        Some(f) => (f.code, f.message.clone()),
        None => (1, format!("{err:#}").replace('\n', " ")),
    }
}
