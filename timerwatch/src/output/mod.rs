//! Rendering a [`crate::report::Report`] for people (`text`) and programs (`json`).

pub mod json;
pub mod text;

#[cfg(test)]
mod golden;
