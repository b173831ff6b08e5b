//! What a run reports and how it ends: [`RunReport`] (counts, the plan of
//! a dry run), the errors that stop a run ([`LinkStopped`], [`LinkHalted`],
//! [`Interrupted`]), [`RunOptions`], and what it tells a [`RunObserver`] as
//! it goes.

use serde::Serialize;
use switchyard_model::{ConnectorError, LinkName};

use crate::plan::PlannedOperation;

/// What one run did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReport {
    /// Link name.
    pub link: LinkName,
    /// A dry run: nothing was written.
    pub dry_run: bool,
    /// Whether the employee listing was full (not changes only).
    pub full_listing: bool,
    /// Employee records fetched from the HRIS.
    pub employees_fetched: usize,
    /// With a `scope`, how many of the employees the link knows it covers
    /// (this run's listing and the stored records); `None` without one.
    pub in_scope: Option<usize>,
    /// Operations left by an earlier run and finished by this one.
    pub resumed: usize,
    /// LMS accounts created.
    pub users_created: usize,
    /// LMS accounts updated (name, email, department or location changed).
    pub users_updated: usize,
    /// LMS accounts that existed already and were bound to their employee.
    pub users_adopted: usize,
    /// LMS accounts suspended.
    pub users_suspended: usize,
    /// LMS accounts reactivated.
    pub users_reactivated: usize,
    /// Enrollments made.
    pub enrollments: usize,
    /// Enrollments withdrawn.
    pub unenrollments: usize,
    /// Completions fetched from the LMS.
    pub completions_fetched: usize,
    /// Completions written to the HRIS.
    pub completions_written: usize,
    /// Completions the retake policy did not pick.
    pub completions_not_winning: usize,
    /// Completions of people this link does not know.
    pub completions_skipped: usize,
    /// Operations given up on (see dead letters).
    pub dead_lettered: usize,
    /// Retries made.
    pub retries: usize,
    /// Operations still waiting in the outbox after the run.
    pub pending: usize,
    /// What the run skipped and why (an optional operation the plugin does
    /// not support), for the operator.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// In a dry run: what would be done.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<PlannedOperation>,
}

impl RunReport {
    pub(crate) fn add(&mut self, other: &RunReport) {
        self.users_created += other.users_created;
        self.users_updated += other.users_updated;
        self.users_adopted += other.users_adopted;
        self.users_suspended += other.users_suspended;
        self.users_reactivated += other.users_reactivated;
        self.enrollments += other.enrollments;
        self.unenrollments += other.unenrollments;
        self.completions_written += other.completions_written;
        self.dead_lettered += other.dead_lettered;
        self.retries += other.retries;
        self.resumed += other.resumed;
        for note in &other.notes {
            self.note(note.clone());
        }
    }

    /// Add a note for the operator (once: a note repeated by many
    /// operations is kept once).
    pub fn note(&mut self, note: String) {
        if !self.notes.contains(&note) {
            tracing::info!(link = %self.link, "{note}");
            self.notes.push(note);
        }
    }

    /// Write calls that succeeded.
    pub fn writes(&self) -> usize {
        self.users_created
            + self.users_updated
            + self.users_adopted
            + self.users_suspended
            + self.users_reactivated
            + self.enrollments
            + self.unenrollments
            + self.completions_written
    }
}

/// Why a run did not finish: the one error type of [`crate::LinkRun`].
/// Callers match on it (exit codes, metrics, audit kinds); nothing searches
/// its text.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// An operation failed in a way that needs an operator.
    #[error(transparent)]
    Stopped(#[from] LinkStopped),
    /// The mass-deactivation guard halted the run before it acted.
    #[error(transparent)]
    Halted(#[from] LinkHalted),
    /// Stopped at a checkpoint for shutdown.
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
    /// Reading or writing the store failed (a damaged or full disk).
    #[error("state storage: {0:#}")]
    State(#[from] anyhow::Error),
}

/// A link run stopped and the link needs an operator.
#[derive(Debug, thiserror::Error)]
#[error("link `{link}` stopped: {operation} failed: {error}")]
pub struct LinkStopped {
    /// Link.
    pub link: LinkName,
    /// Operation.
    pub operation: String,
    /// The error.
    pub error: ConnectorError,
}

/// A run halted before acting because it would deactivate too many accounts.
#[derive(Debug, thiserror::Error)]
#[error(
    "link `{link}` halted: the run would suspend {planned} accounts, more than max_deactivations = {limit} allows ({allowed}); nothing was changed. If this is right, run `switchyard sync --approve-deactivations {link}`"
)]
pub struct LinkHalted {
    /// Link.
    pub link: LinkName,
    /// Deactivations planned.
    pub planned: usize,
    /// Deactivations allowed.
    pub allowed: usize,
    /// The configured limit.
    pub limit: String,
}

/// A run stopped at a checkpoint because the daemon is shutting down: no
/// operation was abandoned half-way; what is left waits in the outbox for
/// the next run.
#[derive(Debug, thiserror::Error)]
#[error("link `{link}`: run stopped at a checkpoint for shutdown; the outbox holds what is left")]
pub struct Interrupted {
    /// Link.
    pub link: LinkName,
}

/// How to run.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Plan and print; write nothing, call no write function.
    pub dry_run: bool,
    /// The operator approves deactivations past the guard for this run.
    pub approve_deactivations: bool,
    /// List every employee, not only the changes since the last run (also
    /// notes who is gone from the HRIS, for retention).
    pub full_listing: bool,
    /// Suspend the accounts of active employees outside the link's scope
    /// (left alone otherwise when a scope narrows).
    pub retire_out_of_scope: bool,
}

/// How one attempt at an outbox operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationResult {
    /// Done and recorded.
    Ok,
    /// Failed; it will be retried.
    Retry,
    /// Given up on (dead letter).
    DeadLetter,
    /// Failed in a way that stops the link; it stays in the outbox.
    Stopped,
}

impl OperationResult {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            OperationResult::Ok => "ok",
            OperationResult::Retry => "retry",
            OperationResult::DeadLetter => "dead-letter",
            OperationResult::Stopped => "stopped",
        }
    }
}

/// Receives what a run does as it goes, besides its [`RunReport`]: the
/// service turns it into metrics. The engine itself records nothing.
pub trait RunObserver: Send + Sync {
    /// One attempt at an outbox operation of `kind` (a contract function) ended.
    fn operation(&self, link: &str, kind: &'static str, result: OperationResult);
}
