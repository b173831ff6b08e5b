//! What the host knows and plans: employee snapshots, LMS accounts and
//! enrollments it made, winning completions, and the operations of the
//! outbox with their effects and dead letters.
//!
//! These are values. The planner (`switchyard-engine`) produces them; the
//! store (`switchyard-store`) keeps them.

use serde::{Deserialize, Serialize};

use crate::{Completion, CourseId, Date, Employee, EmployeeId, LmsUserId, Timestamp};

/// An employee snapshot and its revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The record as last seen.
    pub employee: Employee,
    /// Incremented each time the record changes.
    pub rev: u64,
}

/// The LMS account of one employee.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    /// LMS user id returned by `upsert-user`.
    pub lms_user_id: LmsUserId,
    /// False once suspended.
    pub active: bool,
}

/// An enrollment the host made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrollment {
    /// Due date sent with it.
    pub due: Option<Date>,
    /// Rule that assigned it.
    pub rule: Option<String>,
    /// 0 for the first assignment, +1 per recertification.
    pub cycle: u32,
    /// The day the assignment was planned.
    pub assigned_on: Date,
}

/// A completion the retake policy chose for its (employee, course).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Winner {
    /// Key of the `push-completion` that carries it.
    pub idempotency_key: String,
    /// The completion, with the expiry the host computed.
    pub completion: Completion,
}

/// What an operation does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum OpKind {
    /// Create or update the LMS account.
    UpsertUser {
        /// The record to provision.
        employee: Employee,
    },
    /// Suspend or reactivate the LMS account.
    SetActive {
        /// Target state.
        active: bool,
    },
    /// Enroll in a course.
    Enroll {
        /// Course key.
        course: CourseId,
        /// Due date.
        due: Option<Date>,
        /// Assignment cycle (recertification).
        cycle: u32,
        /// Rule that assigned it.
        rule: Option<String>,
        /// The day the assignment was planned.
        assigned_on: Date,
    },
    /// Withdraw from a course.
    Unenroll {
        /// Course key.
        course: CourseId,
    },
    /// Write a completion to the HRIS.
    PushCompletion {
        /// The completion.
        completion: Completion,
        /// Key of the completion it replaces.
        supersedes: Option<String>,
    },
}

impl OpKind {
    /// What an `enroll` records when it succeeds; `None` for the others.
    pub fn enrolled(&self) -> Option<Effect> {
        match self {
            OpKind::Enroll {
                course,
                due,
                cycle,
                rule,
                assigned_on,
            } => Some(Effect::Enrolled {
                course: course.clone(),
                enrollment: Enrollment {
                    due: *due,
                    rule: rule.clone(),
                    cycle: *cycle,
                    assigned_on: *assigned_on,
                },
            }),
            _ => None,
        }
    }

    /// The contract function this operation calls.
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::UpsertUser { .. } => "upsert-user",
            OpKind::SetActive { .. } => "set-active",
            OpKind::Enroll { .. } => "enroll",
            OpKind::Unenroll { .. } => "unenroll",
            OpKind::PushCompletion { .. } => "push-completion",
        }
    }

    /// Whether a plugin may leave this operation out: an HRIS that takes no
    /// training records, an LMS that cannot withdraw an enrollment. Its
    /// `unsupported` skips the operation instead of stopping the link.
    pub fn is_optional(&self) -> bool {
        matches!(
            self,
            OpKind::PushCompletion { .. } | OpKind::Unenroll { .. }
        )
    }
}

/// A durable, planned write to a plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    /// Deterministic idempotency key.
    pub key: String,
    /// HRIS employee id the operation is about.
    pub employee_id: EmployeeId,
    /// What it does.
    pub kind: OpKind,
    /// Why it was planned (rule, policy or event).
    pub cause: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// Unix milliseconds before which it is not retried.
    pub next_attempt_at: u64,
    /// Last error, if an attempt failed.
    pub last_error: Option<String>,
}

/// An operation given up on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Id for `dlq show|replay|drop`.
    pub id: u64,
    /// The operation as it was.
    pub operation: Operation,
    /// Why it was given up on.
    pub reason: String,
    /// When it was given up on.
    pub at: Timestamp,
}

/// The effect to record when an operation succeeds.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// The employee's LMS account.
    Account(Account),
    /// An enrollment made.
    Enrolled {
        /// Course.
        course: CourseId,
        /// What was made.
        enrollment: Enrollment,
    },
    /// An enrollment withdrawn.
    Unenrolled {
        /// Course.
        course: CourseId,
    },
    /// Nothing beyond the `done` record.
    None,
}

/// One employee's part of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedEmployee {
    /// The new snapshot (None: unchanged, keep the stored one).
    pub snapshot: Option<Snapshot>,
    /// Operations to enqueue, in order.
    pub operations: Vec<Operation>,
}
