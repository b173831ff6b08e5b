//! Nothing to build. The test kit has a build script only so that its
//! `[build-dependencies]` take part in feature resolution on the host side
//! (see Cargo.toml): then `cargo test` after the demo recompiles nothing.

fn main() {}
