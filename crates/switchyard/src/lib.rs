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
//! The host is six crates; this one is the binary and what wires the others
//! together (see ARCHITECTURE.md):
//!
//! - [`config`]: the TOML configuration, checked with file:line errors;
//! - [`secrets`]: where credentials come from, and the encrypted secret store;
//! - [`service`]: the configuration assembled into runtime, connectors,
//!   store and engine; connector quarantine; retention;
//! - [`rejections`]: refused requests summed per client, rate-limited logs,
//!   and a per-client budget answered with 429;
//! - [`review`]: capability review on upgrade: a plugin version that needs
//!   more than the approved one is held until an operator approves it;
//! - [`scaffold`]: `plugin new`, a plugin crate with the SDK and the contract
//!   in its `vendor/`;
//! - [`telemetry`]: metrics, and the audit records of plugin calls;
//! - [`daemon`]: `switchyard run`, the long-running service: scheduler,
//!   plugin-directory watcher, admin API;
//! - [`webhook`]: `POST /webhooks/{connector}`: signature verification,
//!   replay detection, translation by the plugin, events into the outbox.
//!
//! The other crates are re-exported under short names: [`model`],
//! [`audit`], [`store`], [`runtime`], [`engine`].

pub mod config;
pub mod conformance;
pub mod daemon;
pub mod rejections;
pub mod review;
pub mod scaffold;
pub mod secrets;
pub mod service;
pub mod telemetry;
pub mod webhook;

pub use config::Config;
pub use service::Service;
pub use switchyard_audit as audit;
pub use switchyard_engine as engine;
pub use switchyard_model as model;
pub use switchyard_runtime as runtime;
pub use switchyard_store as store;
