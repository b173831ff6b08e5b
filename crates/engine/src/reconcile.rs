//! `reconcile`: compare the HRIS snapshot, the LMS as it is, and the ledger
//! of completions written, and report every drift. Reads only.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::paging::CompletionPages;
use crate::policy::{LeavePolicy, LinkConfig, TerminationPolicy};
use crate::retake;
use switchyard_model::{
    Completion, ConnectorError, CourseId, EmployeeId, EmploymentStatus, LinkName,
};
use switchyard_runtime::Connector;
use switchyard_store::Store;

/// Kinds of drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DriftKind {
    /// Should have an LMS account; the LMS has none.
    MissingInLms,
    /// Active in the HRIS; suspended in the LMS.
    SuspendedInLms,
    /// Gone from work in the HRIS (policy: suspend); active in the LMS.
    ActiveInLms,
    /// A completion in the LMS that the retake policy picks was not written
    /// to the HRIS.
    CompletionNotInHris,
    /// The completion written to the HRIS has another date than the LMS's.
    MismatchedDate,
}

/// One difference between the systems.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drift {
    /// What kind.
    pub kind: DriftKind,
    /// HRIS employee id.
    pub employee_id: EmployeeId,
    /// Course, for completion drifts.
    pub course: Option<CourseId>,
    /// Details.
    pub detail: String,
}

/// Compare and report. Reads the LMS through the plugin (`find-user`,
/// `fetch-completions` from the start); writes nothing.
pub async fn reconcile(
    link_name: &LinkName,
    link: &LinkConfig,
    lms: &Connector,
    state: &dyn Store,
) -> anyhow::Result<Vec<Drift>> {
    let mut drifts = Vec::new();
    let snapshots = state.snapshots(link_name)?;
    for s in &snapshots {
        let e = &s.employee;
        let expected = match e.status {
            EmploymentStatus::Active => Some(true),
            EmploymentStatus::OnLeave => Some(link.on_leave == LeavePolicy::Keep),
            EmploymentStatus::Pending => None,
            EmploymentStatus::Inactive | EmploymentStatus::Terminated => {
                (link.on_termination == TerminationPolicy::Suspend).then_some(false)
            }
        };
        let Some(expected) = expected else { continue };
        let user = lms
            .find_user(&e.id)
            .await
            .map_err(|e| read_error("find-user", e))?;
        let status = format!("{:?}", e.status).to_lowercase();
        match (expected, user) {
            (true, None) => drifts.push(Drift {
                kind: DriftKind::MissingInLms,
                employee_id: e.id.clone(),
                course: None,
                detail: format!("{status} in the HRIS, no LMS account"),
            }),
            (true, Some(u)) if !u.active => drifts.push(Drift {
                kind: DriftKind::SuspendedInLms,
                employee_id: e.id.clone(),
                course: None,
                detail: format!("{status} in the HRIS, LMS account {} suspended", u.id),
            }),
            (false, Some(u)) if u.active => drifts.push(Drift {
                kind: DriftKind::ActiveInLms,
                employee_id: e.id.clone(),
                course: None,
                detail: format!("{status} in the HRIS, LMS account {} active", u.id),
            }),
            _ => {}
        }
    }

    // Every completion the LMS holds, and the one the policy picks per
    // (employee, course).
    let known: BTreeMap<&str, ()> = snapshots
        .iter()
        .map(|s| (s.employee.id.as_str(), ()))
        .collect();
    let mut picked: BTreeMap<(EmployeeId, CourseId), Completion> = BTreeMap::new();
    let mut pages = CompletionPages::from(None);
    while pages.more() {
        let page = lms
            .fetch_completions(pages.cursor())
            .await
            .map_err(|e| read_error("fetch-completions", e))?;
        for c in page.completions {
            if !known.contains_key(c.employee_id.as_str()) {
                continue;
            }
            let slot = (c.employee_id.clone(), c.course_id.clone());
            if retake::wins(link.completion_policy, &c, picked.get(&slot)) {
                picked.insert(slot, c);
            }
        }
        pages.advance(page.next_cursor, page.more);
    }
    for ((employee, course), c) in picked {
        match state.winner(link_name, &employee, &course)? {
            None => drifts.push(Drift {
                kind: DriftKind::CompletionNotInHris,
                employee_id: employee,
                course: Some(course),
                detail: format!(
                    "attempt {} completed {} not written",
                    c.attempt_id, c.completed_at
                ),
            }),
            Some(w) if w.completion.completed_at.date() != c.completed_at.date() => {
                drifts.push(Drift {
                    kind: DriftKind::MismatchedDate,
                    employee_id: employee,
                    course: Some(course),
                    detail: format!(
                        "HRIS has {} (attempt {}), LMS has {} (attempt {})",
                        w.completion.completed_at,
                        w.completion.attempt_id,
                        c.completed_at,
                        c.attempt_id
                    ),
                })
            }
            Some(_) => {}
        }
    }
    drifts.sort_by(|a, b| {
        (a.kind, &a.employee_id, &a.course).cmp(&(b.kind, &b.employee_id, &b.course))
    });
    Ok(drifts)
}

fn read_error(operation: &str, error: ConnectorError) -> anyhow::Error {
    anyhow::anyhow!("reconcile: {operation} failed: {error}")
}
