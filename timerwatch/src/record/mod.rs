//! Capture on one machine, analyse on another: `record` writes the periodic reports to a file,
//! `report` renders one, `diff` compares two.

pub mod diff;
pub mod file;
