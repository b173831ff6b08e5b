//! The sync engine: everything that decides what to write to the LMS and
//! the HRIS, and the run that applies it.
//!
//! A run of a link lists employees through the HRIS plugin, plans per
//! employee the operations that bring the LMS in line, commits them to the
//! outbox, applies the outbox through the LMS plugin, then lists completions
//! through the LMS plugin, lets the retake policy pick winners and writes
//! them back through the HRIS plugin.
//!
//! **Invariant:** the deciding modules ([`plan`], [`rules`], [`retake`],
//! [`fields`], [`policy`]) perform no I/O and call no plugin; the run
//! (`run.rs`) is the shell that fetches through `switchyard-runtime`,
//! stores through `switchyard-store` and sends.
//!
//! # Layout
//!
//! - `run.rs`: [`LinkRun`] (one run): retries, dead letters, checkpoints;
//! - `report.rs`: [`RunReport`], [`RunOptions`], the errors that stop a run,
//!   and [`RunObserver`];
//! - [`ingest`]: the one path from records (polled or pushed) to planned
//!   work: store reads, the guard, the retake policy;
//! - [`plan`]: the planner (one employee + what the host knows -> operations);
//! - [`rules`]: assignment rules; [`retake`]: which completion wins;
//! - [`fields`]: the per-link field allowlist;
//! - [`policy`]: a link's configuration as the engine sees it;
//! - [`reconcile`]: drift between snapshot, LMS and ledger.

pub mod fields;
pub mod ingest;
pub mod matching;
pub mod paging;
pub mod plan;
pub mod policy;
pub mod reconcile;
mod report;
pub mod retake;
pub mod rules;
mod run;

pub use fields::FieldAllowlist;
pub use ingest::{Deactivations, Ingest, decide_completions};
pub use policy::LinkConfig;
pub use report::*;
pub use run::*;
