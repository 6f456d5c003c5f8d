//! Codebook throughput (SPEC 5); filled in by the bench commit.
fn main() {}
