//! The canonical records as the host works with them.
//!
//! These mirror the WIT contract's `types` interface; `runtime` converts
//! between them and the generated bindings, so nothing outside `runtime`
//! depends on wasmtime. They derive serde because snapshots in `state` and
//! the `--json` outputs store them as they are.

use serde::{Deserialize, Serialize};

/// Normalised employment status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EmploymentStatus {
    /// Hired, not started.
    Pending,
    /// Working.
    Active,
    /// On leave.
    OnLeave,
    /// Inactive for another reason.
    Inactive,
    /// Terminated.
    Terminated,
}

/// One employee as the HRIS knows them; `id` is the identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Employee {
    /// Stable HRIS id.
    pub id: String,
    /// Employer's employee number.
    pub employee_number: Option<String>,
    /// Work email.
    pub email: Option<String>,
    /// First name.
    pub given_name: Option<String>,
    /// Last name.
    pub family_name: Option<String>,
    /// Normalised status.
    pub status: EmploymentStatus,
    /// Vendor wording of the status.
    pub raw_status: Option<String>,
    /// Department.
    pub department: Option<String>,
    /// Job title.
    pub job_title: Option<String>,
    /// Location.
    pub location: Option<String>,
    /// Manager's HRIS id.
    pub manager_id: Option<String>,
    /// yyyy-mm-dd.
    pub hire_date: Option<String>,
    /// yyyy-mm-dd.
    pub termination_date: Option<String>,
    /// RFC 3339.
    pub updated_at: Option<String>,
    /// Further vendor fields.
    pub custom: Vec<(String, String)>,
}

impl Employee {
    /// The fields the LMS account is made of: a change in them means the
    /// account must be updated.
    pub fn profile(&self) -> [&Option<String>; 5] {
        [&self.email, &self.given_name, &self.family_name, &self.department, &self.location]
    }

    /// The value of a custom field.
    pub fn custom_field(&self, name: &str) -> Option<&str> {
        self.custom
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Outcome of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CompletionStatus {
    /// Completed without verdict.
    Completed,
    /// Passed.
    Passed,
    /// Failed.
    Failed,
}

/// One course attempt that ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// HRIS employee id.
    pub employee_id: String,
    /// Course key.
    pub course_id: String,
    /// Attempt id.
    pub attempt_id: String,
    /// Outcome.
    pub status: CompletionStatus,
    /// RFC 3339.
    pub completed_at: String,
    /// Percent.
    pub score: Option<f64>,
    /// RFC 3339.
    pub expires_at: Option<String>,
}

/// An LMS account as the LMS reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LmsUser {
    /// LMS user id.
    pub id: String,
    /// False when suspended.
    pub active: bool,
    /// Email on the account.
    pub email: Option<String>,
}

/// A page of employees.
/// What a verified webhook delivery reported (contract `webhook-event`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum WebhookEvent {
    /// A course attempt reached an end state (from an LMS).
    Completion(Completion),
    /// An employee's current record (from an HRIS).
    EmployeeChanged(Employee),
}

#[derive(Debug, Clone)]
pub struct EmployeePage {
    /// Employees.
    pub employees: Vec<Employee>,
    /// Next page.
    pub next_cursor: Option<String>,
    /// Where the next run may resume with changes only.
    pub changes_cursor: Option<String>,
}

/// A page of completions.
#[derive(Debug, Clone)]
pub struct CompletionPage {
    /// Completions, oldest first.
    pub completions: Vec<Completion>,
    /// Where to resume.
    pub next_cursor: Option<String>,
    /// More pages are available now.
    pub more: bool,
}

/// Why a call into a connector failed, phrased as what to do about it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConnectorError {
    /// Retry with backoff.
    #[error("transient: {0}")]
    Transient(String),
    /// Retry after the given seconds, or back off.
    #[error("rate limited{}", .0.map(|s| format!(" (retry after {s}s)")).unwrap_or_default())]
    RateLimited(Option<u32>),
    /// Credentials wrong or expired: stop the link.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Configuration wrong: stop the link.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// This record was refused: dead-letter it.
    #[error("rejected: {0}")]
    Rejected(String),
    /// The plugin does not implement the operation.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The plugin itself failed (trap, deadline, memory or another limit):
    /// contained by the host, counted against the plugin.
    #[error("plugin fault: {0}")]
    PluginFault(String),
}

/// What the host does about a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remedy {
    /// Try again after a backoff (or the given delay).
    Retry(Option<u32>),
    /// Give up on this record; keep going with the others.
    DeadLetter,
    /// Stop the link until an operator acts.
    Stop,
}

impl ConnectorError {
    /// What to do about this error.
    pub fn remedy(&self) -> Remedy {
        match self {
            ConnectorError::Transient(_) => Remedy::Retry(None),
            ConnectorError::RateLimited(after) => Remedy::Retry(*after),
            ConnectorError::Rejected(_) => Remedy::DeadLetter,
            ConnectorError::Unauthorized(_)
            | ConnectorError::InvalidConfig(_)
            | ConnectorError::Unsupported(_)
            | ConnectorError::PluginFault(_) => Remedy::Stop,
        }
    }
}
