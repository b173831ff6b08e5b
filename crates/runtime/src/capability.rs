//! The host imports a plugin may call: one module per capability, each owning
//! its per-call state, its linker-facing trait implementation and its denials.
//!
//! **API boundary:** these are the only ways out of the sandbox. WASI is
//! linked with nothing granted (see `runtime`), so a plugin reaches the
//! network only through `http`, and never sees a credential.

pub mod config;
pub mod http;
pub mod log;
pub mod stdio;

/// The `types` interface has no functions; its `Host` trait is empty.
impl crate::bindings::types::Host for crate::HostState {}
