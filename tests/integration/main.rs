//! Integration tests: the real `stembatch` binary against the built-in simulator on
//! 127.0.0.1:0. One test binary, one module per area.

mod helpers;
mod redis_server;

mod base_url;
mod checkpoint;
mod cli;
mod disk;
mod docs;
mod end_to_end;
mod live_view;
mod local_stems;
mod manifest_errors;
mod money;
mod paid_work;
mod qc;
mod rate_limits;
mod report;
mod rerun;
mod resilience;
mod resume;
mod s3;
mod s3_server;
mod shards;
mod shared_limit;
mod terminal;
