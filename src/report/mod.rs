//! Presenting the run: `results.csv`, the listening page `report.html`, and the progress
//! lines on stderr.

pub mod csv;
pub mod html;
