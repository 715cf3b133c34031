//! Presenting the run: `results.csv` and the progress lines on stderr.

pub mod csv;
