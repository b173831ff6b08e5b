//! Switchyard: a host for sandboxed WebAssembly connector plugins that keeps
//! an HRIS and an LMS in sync.
//!
//! Plugins translate; the host decides. A plugin (a WebAssembly component
//! implementing the `switchyard:connector` WIT contract) only maps one
//! vendor's API to canonical records. This crate loads plugins, contains
//! them, injects their credentials, runs the sync and keeps its state.
//!
//! # Layout
//!
//! - [`config`]: the TOML configuration, checked with file:line errors;
//! - [`runtime`]: the wasmtime engine, plugin loading and world detection,
//!   per-call stores and limits, and calls into plugins;
//! - [`capability`]: the host imports (`http`, `log`, `config`) and captured
//!   stdio, one module each;
//! - [`secrets`]: credential sources, the encrypted secret store and the
//!   redacting [`secrets::Secret`] type;
//! - [`model`]: the canonical records the host works with;
//! - [`state`]: sync state in sled behind typed accessors;
//! - [`audit`]: the hash-chained audit log, with personal data kept apart;
//! - [`privacy`]: the per-link field allowlist, erasure and retention ages;
//! - [`sync`]: one run of a link (provisioning, rules, completion write-back);
//! - [`service`]: all of the above assembled from a configuration, and
//!   connector quarantine;
//! - [`daemon`]: `switchyard run`, the long-running service: scheduler,
//!   plugin-directory watcher, admin API, metrics.
//! - [`webhook`]: `POST /webhooks/{connector}`: signature verification,
//!   replay detection, translation by the plugin, events into the outbox.

pub mod audit;
pub mod capability;
pub mod config;
pub mod daemon;
pub mod model;
pub mod privacy;
pub mod runtime;
pub mod secrets;
pub mod service;
pub mod state;
pub mod sync;
pub mod webhook;

pub use config::Config;
pub use service::Service;
