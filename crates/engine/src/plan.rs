//! Planning: from one employee's HRIS record and what the host knows, the
//! operations that bring the LMS in line. Planning makes no call to a plugin
//! and writes nothing; `state::commit_plan` makes a plan durable.
//!
//! What the host knows is *projected*: the ledgers (accounts, enrollments)
//! with the operations still waiting in the outbox folded in, so a plan made
//! while earlier work is pending neither repeats nor contradicts it.

use std::collections::BTreeMap;

use serde::Serialize;

use switchyard_model::{Employee, EmploymentStatus, OpKind, Operation, PlannedEmployee, Snapshot};
use switchyard_store::State;

use crate::policy::{LeavePolicy, LinkConfig, ReassignmentPolicy, TerminationPolicy};
use crate::{idempotency_key, rules};

/// What the host knows about one employee's LMS side, pending work included.
#[derive(Debug, Default)]
struct Projection {
    account: bool,
    active: bool,
    /// Course -> (assignment cycle, date assigned).
    enrolled: BTreeMap<String, (u32, String)>,
}

fn project(state: &State, link: &str, employee: &str) -> anyhow::Result<Projection> {
    let mut p = Projection::default();
    if let Some(account) = state.account(link, employee)? {
        p.account = true;
        p.active = account.active;
    }
    for (course, enrollment) in state.enrollments_of(link, employee)? {
        p.enrolled
            .insert(course, (enrollment.cycle, enrollment.assigned_on));
    }
    for op in state.pending_for(link, employee)? {
        match op.kind {
            OpKind::UpsertUser { .. } => {
                if !p.account {
                    p.account = true;
                    p.active = true;
                }
            }
            OpKind::SetActive { active } => p.active = active,
            OpKind::Enroll {
                course,
                cycle,
                assigned_on,
                ..
            } => {
                p.enrolled.insert(course, (cycle, assigned_on));
            }
            OpKind::Unenroll { course } => {
                p.enrolled.remove(&course);
            }
            OpKind::PushCompletion { .. } => {}
        }
    }
    Ok(p)
}

/// One line of a plan, for `--dry-run` output.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedOperation {
    /// Contract function.
    pub operation: &'static str,
    /// HRIS employee id.
    pub employee_id: String,
    /// Course, for enrollments and completions.
    pub course: Option<String>,
    /// Why.
    pub cause: String,
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
        }
    }
}

/// Plans for one link.
pub struct Planner<'a> {
    /// Link name.
    pub link_name: &'a str,
    /// Link configuration.
    pub link: &'a LinkConfig,
    /// State.
    pub state: &'a State,
    /// Today, for due dates and recertification.
    pub today: time::Date,
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
        let mut parts = vec![kind.name(), self.link_name, e.id.as_str()];
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

    /// The plan for one employee record from the HRIS.
    pub fn plan_employee(&self, e: &Employee) -> anyhow::Result<PlannedEmployee> {
        let stored = self.state.snapshot(self.link_name, &e.id)?;
        let (rev, changed) = match &stored {
            Some(s) if s.employee == *e => (s.rev, false),
            Some(s) => (s.rev + 1, true),
            // A snapshot deleted by retention continues its numbering.
            None => (
                self.state
                    .retired_rev(self.link_name, &e.id)?
                    .map_or(1, |r| r + 1),
                true,
            ),
        };
        let rev_text = rev.to_string();
        let p = project(self.state, self.link_name, &e.id)?;
        let status = status_name(e);
        let mut ops = Vec::new();

        let want_access = match e.status {
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
            let profile_changed = stored
                .as_ref()
                .is_none_or(|s| s.employee.profile() != e.profile());
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
                ops.push(self.op(
                    e,
                    &["true", &rev_text],
                    OpKind::SetActive { active: true },
                    format!("employee is {status} again (rehire or return)"),
                ));
            }
        }
        if want_access == Some(false) && p.active {
            let policy = if e.status == EmploymentStatus::OnLeave {
                "on_leave = suspend"
            } else {
                "on_termination = suspend"
            };
            ops.push(self.op(
                e,
                &["false", &rev_text],
                OpKind::SetActive { active: false },
                format!("employee is {status}; policy {policy}"),
            ));
        }

        // New assignments only for people at work with access.
        if e.status == EmploymentStatus::Active && want_access == Some(true) {
            let assignments = rules::assignments(&self.link.rules, e);
            for a in &assignments {
                let cycle = match p.enrolled.get(&a.course) {
                    None => 0,
                    Some((cycle, assigned_on)) => {
                        if !self.recertification_due(e, &a.course, assigned_on)? {
                            continue;
                        }
                        cycle + 1
                    }
                };
                let due = a
                    .due_in_days
                    .map(|days| (self.today + time::Duration::days(days.into())).to_string());
                let rule = a.rule.clone().unwrap_or_else(|| "unnamed rule".into());
                let cause = if cycle == 0 {
                    format!("rule {rule} matched ({})", context(e))
                } else {
                    format!(
                        "rule {rule}: recertification (cycle {cycle}) before the completion expires"
                    )
                };
                ops.push(self.op(
                    e,
                    &[&a.course, &cycle.to_string(), &rev_text],
                    OpKind::Enroll {
                        course: a.course.clone(),
                        due,
                        cycle,
                        rule: a.rule.clone(),
                        assigned_on: self.today.to_string(),
                    },
                    cause,
                ));
            }
            if self.link.on_reassignment == ReassignmentPolicy::Withdraw {
                for course in p.enrolled.keys() {
                    if assignments.iter().all(|a| &a.course != course) {
                        ops.push(self.op(
                            e,
                            &[course, &rev_text],
                            OpKind::Unenroll { course: course.clone() },
                            format!("no rule requires {course} any more ({}); policy on_reassignment = withdraw", context(e)),
                        ));
                    }
                }
            }
        }

        let mut operations = Vec::new();
        for op in ops {
            if self.state.is_done(self.link_name, &op.key)?
                || self.state.is_pending(self.link_name, &op.key)?
                || self.state.is_dead(self.link_name, &op.key)?
            {
                continue;
            }
            operations.push(op);
        }
        Ok(PlannedEmployee {
            snapshot: changed.then(|| Snapshot {
                employee: e.clone(),
                rev,
            }),
            operations,
        })
    }

    /// A course is due again when the winning completion expires within the
    /// lead time and was completed after the current assignment (so one
    /// expiring completion leads to one reassignment, not one per run).
    fn recertification_due(
        &self,
        e: &Employee,
        course: &str,
        assigned_on: &str,
    ) -> anyhow::Result<bool> {
        let Some(winner) = self.state.winner(self.link_name, &e.id, course)? else {
            return Ok(false);
        };
        let Some(expires) = winner.completion.expires_at.as_deref() else {
            return Ok(false);
        };
        let Ok(expires) =
            time::OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc3339)
        else {
            return Ok(false);
        };
        let completed_on = winner.completion.completed_at.get(..10).unwrap_or("");
        if completed_on < assigned_on {
            return Ok(false);
        }
        let lead = time::Duration::days(self.link.recertify_lead_days.into());
        Ok(self.today >= (expires - lead).date())
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
