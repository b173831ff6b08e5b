//! Switchyard's records: the values every other crate passes around.
//!
//! The canonical records mirror the WIT contract's `types` interface
//! (`switchyard-runtime` converts between them and the generated bindings,
//! so nothing here depends on wasmtime); [`ledger`] holds what the host
//! knows and plans. They derive serde because the store keeps them and the
//! `--json` outputs print them as they are.
//!
//! **Invariant:** this crate does no I/O and depends on no other crate of
//! the workspace.
//!
//! # Layout
//!
//! - this file: employees, completions, pages, webhook events, connector
//!   errors and their remedies, personal-data erasure of a record;
//! - [`ledger`]: snapshots, accounts, enrollments, winners, operations,
//!   effects, dead letters.

mod date;
mod id;
pub mod ledger;

pub use date::{Date, DateError, Timestamp};
pub use id::{ConnectorName, CourseId, EmployeeId, LinkName, LmsUserId};
pub use ledger::*;

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
    pub id: EmployeeId,
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
    pub manager_id: Option<EmployeeId>,
    /// First day of work.
    pub hire_date: Option<Date>,
    /// Last day of work.
    pub termination_date: Option<Date>,
    /// When the HRIS last changed the record.
    pub updated_at: Option<Timestamp>,
    /// Further vendor fields.
    pub custom: Vec<(String, String)>,
}

/// One optional field of an employee record, whatever its type: how the
/// field allowlist and erasure walk a record without listing its fields.
#[derive(Debug)]
pub enum FieldMut<'a> {
    /// Free text.
    Text(&'a mut Option<String>),
    /// Another employee's id.
    Id(&'a mut Option<EmployeeId>),
    /// A calendar date.
    Date(&'a mut Option<Date>),
    /// An instant.
    Instant(&'a mut Option<Timestamp>),
}

impl FieldMut<'_> {
    /// Clear the field; returns the value it held, as text.
    pub fn take(&mut self) -> Option<String> {
        match self {
            FieldMut::Text(v) => v.take(),
            FieldMut::Id(v) => v.take().map(String::from),
            FieldMut::Date(v) => v.take().map(|d| d.to_string()),
            FieldMut::Instant(v) => v.take().map(|t| t.to_string()),
        }
    }
}

impl Employee {
    /// The optional standard fields, by their names in configuration
    /// (`fields = [...]`). `id` and `status` are not optional; custom fields
    /// are named `custom.NAME`.
    pub const FIELDS: [&'static str; 12] = [
        "employee_number",
        "email",
        "given_name",
        "family_name",
        "raw_status",
        "department",
        "job_title",
        "location",
        "manager_id",
        "hire_date",
        "termination_date",
        "updated_at",
    ];

    /// The fields that identify a person, removed by erasure. Status and
    /// org context (department, job title, location) stay: the engine plans
    /// with them and they name no one.
    pub const PERSONAL: [&'static str; 7] = [
        "employee_number",
        "email",
        "given_name",
        "family_name",
        "manager_id",
        "hire_date",
        "termination_date",
    ];

    /// Each optional standard field with its name, in [`Employee::FIELDS`]
    /// order.
    pub fn fields_mut(&mut self) -> [(&'static str, FieldMut<'_>); 12] {
        [
            ("employee_number", FieldMut::Text(&mut self.employee_number)),
            ("email", FieldMut::Text(&mut self.email)),
            ("given_name", FieldMut::Text(&mut self.given_name)),
            ("family_name", FieldMut::Text(&mut self.family_name)),
            ("raw_status", FieldMut::Text(&mut self.raw_status)),
            ("department", FieldMut::Text(&mut self.department)),
            ("job_title", FieldMut::Text(&mut self.job_title)),
            ("location", FieldMut::Text(&mut self.location)),
            ("manager_id", FieldMut::Id(&mut self.manager_id)),
            ("hire_date", FieldMut::Date(&mut self.hire_date)),
            (
                "termination_date",
                FieldMut::Date(&mut self.termination_date),
            ),
            ("updated_at", FieldMut::Instant(&mut self.updated_at)),
        ]
    }

    /// The fields the LMS account is made of: a change in them means the
    /// account must be updated.
    pub fn profile(&self) -> [&Option<String>; 5] {
        [
            &self.email,
            &self.given_name,
            &self.family_name,
            &self.department,
            &self.location,
        ]
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
    pub employee_id: EmployeeId,
    /// Course key.
    pub course_id: CourseId,
    /// Attempt id.
    pub attempt_id: String,
    /// Outcome.
    pub status: CompletionStatus,
    /// When the attempt ended.
    pub completed_at: Timestamp,
    /// Percent.
    pub score: Option<f64>,
    /// When the completion stops counting.
    pub expires_at: Option<Timestamp>,
}

/// A training record as the HRIS holds it (contract 0.3.0), read by
/// `reconcile` to compare with the LMS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingRecord {
    /// The HRIS's id of the record.
    pub id: String,
    /// Course key.
    pub course_id: CourseId,
    /// Day of completion.
    pub completed_on: Date,
}

/// An LMS account as the LMS reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LmsUser {
    /// LMS user id.
    pub id: LmsUserId,
    /// False when suspended.
    pub active: bool,
    /// Email on the account.
    pub email: Option<String>,
}

/// One account to create or update in a batch
/// (`batch-provisioning.upsert-users`), as `upsert-user` takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountWrite {
    /// The employee the account stands for.
    pub employee: Employee,
    /// The account the host binds them to, when it knows one.
    pub lms_user_id: Option<LmsUserId>,
    /// The write's idempotency key.
    pub key: String,
}

/// What became of one [`AccountWrite`].
#[derive(Debug, Clone, PartialEq)]
pub struct AccountWritten {
    /// The LMS user id.
    pub id: LmsUserId,
    /// Made by the call (false: an account was updated or adopted).
    pub created: bool,
    /// Whether the account is active now.
    pub active: bool,
}

/// One enrolment in a batch (`batch-provisioning.enroll-all`).
#[derive(Debug, Clone, PartialEq)]
pub struct EnrollmentWrite {
    /// The account.
    pub lms_user_id: LmsUserId,
    /// The course key.
    pub course: CourseId,
    /// Due date.
    pub due: Option<Date>,
    /// The write's idempotency key.
    pub key: String,
}

/// An LMS account with what identifies it (`batch-provisioning.list-accounts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LmsAccount {
    /// LMS user id.
    pub id: LmsUserId,
    /// The HRIS employee id the LMS holds on the account.
    pub employee_id: Option<String>,
    /// Login name.
    pub username: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// Given name.
    pub given_name: Option<String>,
    /// Family name.
    pub family_name: Option<String>,
    /// False when suspended.
    pub active: bool,
}

/// One page of [`LmsAccount`]s.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AccountPage {
    /// The accounts on this page.
    pub accounts: Vec<LmsAccount>,
    /// The next page's cursor; `None` on the last.
    pub next_cursor: Option<String>,
}

/// What a verified webhook delivery reported (contract `webhook-event`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum WebhookEvent {
    /// A course attempt reached an end state (from an LMS).
    Completion(Completion),
    /// An employee's current record (from an HRIS).
    EmployeeChanged(Employee),
}

/// A page of employees.
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
    PluginFault(PluginFault),
}

/// A plugin call the host cut short or refused: what kind of fault, and the
/// message naming connector, plugin, version and limit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct PluginFault {
    /// What went wrong.
    pub kind: FaultKind,
    /// For people: connector, plugin, version, operation and the limit.
    pub message: String,
}

/// The kinds of plugin fault. Metrics and audit records are labelled from
/// the variant ([`FaultKind::label`]), never from the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// The call ran past its wall-clock deadline.
    Deadline,
    /// Linear memory grew past the budget.
    Memory,
    /// The instruction budget (`fuel`) ran out.
    Fuel,
    /// The wasm call stack overflowed.
    Stack,
    /// What the call returned broke `max_records` or `max_output_kib`.
    Output,
    /// The call made more HTTP requests than `max_requests` allows.
    HttpRequests,
    /// The call made more host calls (http, log, config) than the host
    /// allows one call.
    HostCalls,
    /// A listing broke a run's bounds: a cursor repeated (it would never
    /// end), more pages or records than `max_pages_per_run` or
    /// `max_records_per_run`, or the run outlived `max_run_minutes`.
    RunBound,
    /// A trap or another failure of the guest's code (malformed output
    /// included) that is not a limit.
    Trap,
}

impl FaultKind {
    /// The label in metrics (`limit`) and audit details.
    pub fn label(self) -> &'static str {
        match self {
            FaultKind::Deadline => "deadline",
            FaultKind::Memory => "memory",
            FaultKind::Fuel => "fuel",
            FaultKind::Stack => "stack",
            FaultKind::Output => "output",
            FaultKind::HttpRequests => "http-requests",
            FaultKind::HostCalls => "host-calls",
            FaultKind::RunBound => "run-bound",
            FaultKind::Trap => "trap",
        }
    }

    /// Whether this fault is a limit the host enforces (all but a trap).
    pub fn is_limit(self) -> bool {
        self != FaultKind::Trap
    }
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

// ---- erasure ----

/// Erase an employee record's personal fields in place: everything but the
/// id, the status and the org context the engine plans with (department,
/// job title, location). Returns the values removed (to scrub them from
/// free text such as error messages).
pub fn erase(e: &mut Employee) -> Vec<String> {
    let mut removed = Vec::new();
    for (name, mut field) in e.fields_mut() {
        if Employee::PERSONAL.contains(&name) {
            removed.extend(field.take());
        }
    }
    removed.extend(e.custom.drain(..).map(|(_, v)| v));
    removed.retain(|v| v.trim().len() >= 2);
    removed
}

/// Replace each of `values` in `text` with `[erased]`.
pub fn scrub(text: &mut String, values: &[String]) {
    for v in values {
        if text.contains(v.as_str()) {
            *text = text.replace(v.as_str(), "[erased]");
        }
    }
}

/// Unix milliseconds now (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn employee() -> Employee {
        Employee {
            id: "7".into(),
            employee_number: Some("E7".into()),
            email: Some("ann@example.com".into()),
            given_name: Some("Ann".into()),
            family_name: Some("Lee".into()),
            status: EmploymentStatus::Active,
            raw_status: Some("Active".into()),
            department: Some("Warehouse".into()),
            job_title: Some("Picker".into()),
            location: Some("Leeds".into()),
            manager_id: Some("3".into()),
            hire_date: "2020-01-01".parse().ok(),
            termination_date: None,
            updated_at: None,
            custom: vec![
                ("ssn".into(), "123-45-6789".into()),
                ("cost_center".into(), "CC1".into()),
            ],
        }
    }

    #[test]
    fn the_field_walk_names_every_field_in_order() {
        let mut e = employee();
        let names: Vec<_> = e.fields_mut().map(|(name, _)| name).into_iter().collect();
        assert_eq!(names, Employee::FIELDS);
        assert!(
            Employee::PERSONAL
                .iter()
                .all(|p| Employee::FIELDS.contains(p))
        );
    }

    #[test]
    fn erasure_removes_personal_fields_and_scrubs_text() {
        let mut e = employee();
        let removed = erase(&mut e);
        assert_eq!(
            (e.email.clone(), e.given_name.clone(), e.custom.len()),
            (None, None, 0)
        );
        assert_eq!(e.department.as_deref(), Some("Warehouse"));
        assert_eq!((e.manager_id.clone(), e.hire_date), (None, None));
        assert!(removed.contains(&"2020-01-01".to_owned()));
        let mut text = "rejected: email ann@example.com is taken".to_owned();
        scrub(&mut text, &removed);
        assert_eq!(text, "rejected: email [erased] is taken");
    }
}
