//! Planning: from one employee's HRIS record and what the host knows
//! ([`Known`]), the operations that bring the LMS in line. The planner is a
//! pure function: it reads no store, calls no plugin and has no clock of its
//! own; the store's `commit_plan` makes a plan durable.
//!
//! What the host knows is *projected*: the ledgers (accounts, enrollments)
//! with the operations still waiting in the outbox folded in, so a plan made
//! while earlier work is pending neither repeats nor contradicts it.

use std::collections::BTreeMap;

use serde::Serialize;

use switchyard_model::{
    Account, CourseId, Date, Employee, EmployeeId, EmploymentStatus, Enrollment, LinkName, OpKind,
    Operation, PlannedEmployee, Snapshot, Winner,
};

use crate::policy::{LeavePolicy, LinkConfig, ReassignmentPolicy, TerminationPolicy};
use crate::{idempotency_key, rules};

/// What the host knows about one employee: the planner's input besides the
/// record itself. The shell reads it from the store ([`crate::ingest`]);
/// tests write it by hand.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Known {
    /// The last snapshot of the employee's record, if any.
    pub snapshot: Option<Snapshot>,
    /// The last revision of a snapshot that retention deleted (a returning
    /// employee continues the numbering).
    pub retired_rev: Option<u64>,
    /// The LMS account the host made or adopted.
    pub account: Option<Account>,
    /// Enrollments the host made, by course.
    pub enrollments: BTreeMap<CourseId, Enrollment>,
    /// How many times the host withdrew the employee from a course, by
    /// course: part of later enrollment and withdrawal keys, so that a course
    /// withdrawn and assigned again (a rule removed and restored) is a new
    /// operation and not one already done.
    pub withdrawals: BTreeMap<CourseId, u32>,
    /// Operations waiting in the outbox, in order.
    pub pending: Vec<Operation>,
    /// The winning completion of each course, by course (recertification).
    pub winners: BTreeMap<CourseId, Winner>,
}

/// What the host knows about one employee's LMS side, pending work included.
#[derive(Debug, Default)]
struct Projection {
    account: bool,
    active: bool,
    /// Course -> (assignment cycle, date assigned).
    enrolled: BTreeMap<CourseId, (u32, Date)>,
    /// Course -> withdrawals, those waiting in the outbox included.
    withdrawn: BTreeMap<CourseId, u32>,
}

/// The ledgers with the operations still waiting in the outbox folded in.
fn project(known: &Known) -> Projection {
    let mut p = Projection::default();
    if let Some(account) = &known.account {
        p.account = true;
        p.active = account.active;
    }
    for (course, enrollment) in &known.enrollments {
        p.enrolled
            .insert(course.clone(), (enrollment.cycle, enrollment.assigned_on));
    }
    p.withdrawn = known.withdrawals.clone();
    for op in &known.pending {
        match &op.kind {
            OpKind::UpsertUser { .. } => {
                if !p.account {
                    p.account = true;
                    p.active = true;
                }
            }
            OpKind::SetActive { active } => p.active = *active,
            OpKind::Enroll {
                course,
                cycle,
                assigned_on,
                ..
            } => {
                p.enrolled.insert(course.clone(), (*cycle, *assigned_on));
            }
            OpKind::Unenroll { course } => {
                p.enrolled.remove(course);
                *p.withdrawn.entry(course.clone()).or_default() += 1;
            }
            OpKind::PushCompletion { .. } => {}
        }
    }
    p
}

impl Projection {
    /// The key part that tells apart the assignments of a course separated
    /// by withdrawals: none before the first withdrawal (keys made before
    /// withdrawals were counted stay the same), `w<n>` after the n-th.
    fn generation(&self, course: &CourseId) -> Option<String> {
        self.withdrawn
            .get(course)
            .filter(|n| **n > 0)
            .map(|n| format!("w{n}"))
    }
}

/// One line of a plan, for `--dry-run` output.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedOperation {
    /// Contract function.
    pub operation: &'static str,
    /// HRIS employee id.
    pub employee_id: EmployeeId,
    /// Course, for enrollments and completions.
    pub course: Option<CourseId>,
    /// Why.
    pub cause: String,
    /// Its idempotency key (the audit record of the write will carry it).
    pub key: String,
}

impl From<&Operation> for PlannedOperation {
    fn from(op: &Operation) -> Self {
        let course = match &op.kind {
            OpKind::Enroll { course, .. } | OpKind::Unenroll { course } => Some(course.clone()),
            OpKind::PushCompletion { completion, .. } => Some(completion.course_id.clone()),
            _ => None,
        };
        PlannedOperation {
            operation: op.kind.name(),
            employee_id: op.employee_id.clone(),
            course,
            cause: op.cause.clone(),
            key: op.key.clone(),
        }
    }
}

/// Plans for one link. Pure: every input is an argument, nothing is read
/// or written, no clock is consulted.
pub struct Planner<'a> {
    /// Link name (part of every key).
    pub link_name: &'a LinkName,
    /// Link configuration: rules and policies.
    pub link: &'a LinkConfig,
    /// Today, for due dates and recertification.
    pub today: Date,
    /// Suspend the accounts of active employees outside the link's scope
    /// (`sync --retire-out-of-scope`); otherwise they are left alone.
    pub retire_out_of_scope: bool,
}

fn status_name(e: &Employee) -> String {
    let status = serde_json::to_value(e.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    match &e.raw_status {
        Some(raw) => format!("{status} ({raw})"),
        None => status,
    }
}

impl Planner<'_> {
    fn op(&self, e: &Employee, key_parts: &[&str], kind: OpKind, cause: String) -> Operation {
        let mut parts = vec![kind.name(), self.link_name.as_str(), e.id.as_str()];
        parts.extend_from_slice(key_parts);
        Operation {
            key: idempotency_key(&parts),
            employee_id: e.id.clone(),
            kind,
            cause,
            attempts: 0,
            next_attempt_at: 0,
            last_error: None,
        }
    }

    /// The plan for one employee record from the HRIS, given what the host
    /// knows about them: the new snapshot (if the record changed) and the
    /// operations, in order, that bring the LMS in line. Operations already
    /// waiting in the outbox are not planned again; the caller also drops
    /// those already done or given up on ([`crate::ingest`]).
    pub fn plan(&self, e: &Employee, known: &Known) -> PlannedEmployee {
        let stored = known.snapshot.as_ref();
        let (rev, changed) = match stored {
            Some(s) if s.employee == *e => (s.rev, false),
            Some(s) => (s.rev + 1, true),
            // A snapshot deleted by retention continues its numbering.
            None => (known.retired_rev.map_or(1, |r| r + 1), true),
        };
        let rev_text = rev.to_string();
        // With a scope, activation keys name it too: a narrowing, a
        // retirement and a widening at the same record revision are
        // different operations, not one already done.
        let scope_text = self
            .link
            .scope
            .as_ref()
            .map(|s| crate::idempotency_key(&["scope", &s.describe()])[..8].to_owned());
        let p = project(known);
        let status = status_name(e);
        let mut ops = Vec::new();

        let in_scope = self.link.scope.as_ref().is_none_or(|s| s.covers(e));
        let want_access = match e.status {
            // Out of scope: nothing made, nothing changed, unless the
            // operator retires the accounts left from a wider scope.
            EmploymentStatus::Active | EmploymentStatus::OnLeave | EmploymentStatus::Pending
                if !in_scope =>
            {
                (self.retire_out_of_scope && p.account).then_some(false)
            }
            EmploymentStatus::Active => Some(true),
            EmploymentStatus::OnLeave => match self.link.on_leave {
                LeavePolicy::Keep => Some(true),
                LeavePolicy::Suspend => p.account.then_some(false),
            },
            EmploymentStatus::Pending => None,
            EmploymentStatus::Inactive | EmploymentStatus::Terminated => {
                match self.link.on_termination {
                    TerminationPolicy::Suspend => p.account.then_some(false),
                    TerminationPolicy::StopAssignments | TerminationPolicy::Record => None,
                }
            }
        };

        if want_access == Some(true) {
            let profile_changed = stored.is_none_or(|s| s.employee.profile() != e.profile());
            if !p.account || profile_changed {
                let cause = if p.account {
                    "name, email, department or location changed in the HRIS".to_owned()
                } else {
                    format!("employee is {status} in the HRIS and has no LMS account")
                };
                ops.push(self.op(
                    e,
                    &[&rev_text],
                    OpKind::UpsertUser {
                        employee: e.clone(),
                    },
                    cause,
                ));
            }
            if p.account && !p.active {
                let mut parts = vec!["true", rev_text.as_str()];
                parts.extend(scope_text.as_deref());
                ops.push(self.op(
                    e,
                    &parts,
                    OpKind::SetActive { active: true },
                    format!("employee is {status} again (rehire or return)"),
                ));
            }
        }
        if want_access == Some(false) && p.active {
            let cause = if !in_scope
                && matches!(
                    e.status,
                    EmploymentStatus::Active
                        | EmploymentStatus::OnLeave
                        | EmploymentStatus::Pending
                ) {
                format!(
                    "employee is {status} but outside the link's scope; sync --retire-out-of-scope"
                )
            } else if e.status == EmploymentStatus::OnLeave {
                format!("employee is {status}; policy on_leave = suspend")
            } else {
                format!("employee is {status}; policy on_termination = suspend")
            };
            let mut parts = vec!["false", rev_text.as_str()];
            parts.extend(scope_text.as_deref());
            ops.push(self.op(e, &parts, OpKind::SetActive { active: false }, cause));
        }

        // New assignments only for people at work with access.
        if e.status == EmploymentStatus::Active && want_access == Some(true) {
            let assignments = rules::assignments(&self.link.rules, e);
            for a in &assignments {
                let cycle = match p.enrolled.get(&a.course) {
                    None => 0,
                    Some((cycle, assigned_on)) => {
                        if !self.recertification_due(known.winners.get(&a.course), *assigned_on) {
                            continue;
                        }
                        cycle + 1
                    }
                };
                let due = a.due_in_days.map(|days| self.today.plus_days(days.into()));
                let rule = a.rule.clone().unwrap_or_else(|| "unnamed rule".into());
                let cause = if cycle == 0 {
                    format!("rule {rule} matched ({})", context(e))
                } else {
                    format!(
                        "rule {rule}: recertification (cycle {cycle}) before the completion expires"
                    )
                };
                let cycle_text = cycle.to_string();
                let generation = p.generation(&a.course);
                let mut parts = vec![a.course.as_str(), &cycle_text, &rev_text];
                parts.extend(generation.as_deref());
                ops.push(self.op(
                    e,
                    &parts,
                    OpKind::Enroll {
                        course: a.course.clone(),
                        due,
                        cycle,
                        rule: a.rule.clone(),
                        assigned_on: self.today,
                    },
                    cause,
                ));
            }
            if self.link.on_reassignment == ReassignmentPolicy::Withdraw {
                for course in p.enrolled.keys() {
                    if assignments.iter().all(|a| &a.course != course) {
                        let generation = p.generation(course);
                        let mut parts = vec![course.as_str(), &rev_text];
                        parts.extend(generation.as_deref());
                        ops.push(self.op(
                            e,
                            &parts,
                            OpKind::Unenroll { course: course.clone() },
                            format!("no rule requires {course} any more ({}); policy on_reassignment = withdraw", context(e)),
                        ));
                    }
                }
            }
        }

        ops.retain(|op| known.pending.iter().all(|pending| pending.key != op.key));
        PlannedEmployee {
            snapshot: changed.then(|| Snapshot {
                employee: e.clone(),
                rev,
            }),
            operations: ops,
        }
    }

    /// A course is due again when the winning completion expires within the
    /// lead time and was completed after the current assignment (so one
    /// expiring completion leads to one reassignment, not one per run).
    fn recertification_due(&self, winner: Option<&Winner>, assigned_on: Date) -> bool {
        let Some(winner) = winner else {
            return false;
        };
        let Some(expires) = winner.completion.expires_at else {
            return false;
        };
        if winner.completion.completed_at.date() < assigned_on {
            return false;
        }
        let lead = -i64::from(self.link.recertify_lead_days);
        self.today >= expires.plus_days(lead).date()
    }
}

fn context(e: &Employee) -> String {
    let mut parts = Vec::new();
    for (name, value) in [
        ("department", &e.department),
        ("location", &e.location),
        ("job_title", &e.job_title),
    ] {
        if let Some(v) = value {
            parts.push(format!("{name}={v}"));
        }
    }
    parts.join(", ")
}
