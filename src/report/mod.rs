//! Presenting the run: `results.csv`, and the live view and closing summary on stderr.

pub mod csv;
pub mod progress;
