//! The `flotilla` command-line tool.
fn main() {}
