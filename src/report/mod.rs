//! Presenting the run: `results.csv`, the listening page `report.html`, and the live view
//! and closing summary on stderr.

pub mod choosing;
pub mod csv;
pub mod html;
pub mod merge;
pub mod page_data;
pub mod page_stamp;
pub mod previous;
pub mod progress;
pub mod results;
pub mod shards;
