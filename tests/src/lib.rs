//! Switchyard's test kit: simulated systems, the plugin builder and a
//! harness that wires them to a real `switchyard` service.
//!
//! # Layout
//!
//! - [`hris`]: an HRIS simulator shaped like BambooHR's API;
//! - [`lms`]: an LMS simulator shaped like Moodle web services;
//! - [`plugins`]: builds the real plugins from `plugins/` for wasm32-wasip2;
//! - [`harness`]: both simulators, the plugins and a configuration in a
//!   temporary directory, ready for a sync;
//! - [`measure`]: a child process's wall time and peak RSS;
//! - [`proxy`]: a fault-injecting proxy to put in front of a simulator;
//! - [`chaos`]: the kill -9 campaign (churn, faults, kills, then a check of
//!   both systems against what should be there);
//! - `src/bin/`: the end-to-end demo, the benchmark and standalone simulators;
//! - `tests/`: black-box tests.
//!
//! The simulators are test fixtures: the product never depends on them.

pub mod chaos;
pub mod control;
pub mod harness;
pub mod hris;
pub mod lms;
pub mod measure;
pub mod plugins;
pub mod proxy;
pub mod python;
pub mod scim;
