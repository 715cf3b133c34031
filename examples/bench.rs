//! Benchmarks against the in-process simulator (see README).
fn main() {}
