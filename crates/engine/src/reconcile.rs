//! `reconcile`: compare the HRIS as it is (a full listing, not the host's
//! snapshot, so that a change the host missed shows), the LMS as it is, and
//! the training records the HRIS holds (or, for a plugin before contract
//! 0.3.0, the ledger of completions written), and report every drift.
//! Reads only.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::paging::{CompletionPages, ListingBounds};
use crate::policy::{LeavePolicy, LinkConfig, TerminationPolicy};
use crate::retake;
use switchyard_model::{
    Completion, ConnectorError, CourseId, Employee, EmployeeId, EmploymentStatus, LinkName,
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
    /// The HRIS holds more than one training record of one course for one
    /// person.
    DuplicateInHris,
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

/// What `reconcile` found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reconciliation {
    /// Every drift, ordered by kind, employee and course.
    pub drifts: Vec<Drift>,
    /// Whether training records were read from the HRIS; `false` when its
    /// plugin predates contract 0.3.0 (or says `unsupported`), and the
    /// completions were compared with what the host remembers writing.
    pub hris_records_read: bool,
}

/// Compare and report. Reads the HRIS through its plugin (a full
/// `fetch-employees` listing, `list-training-records` per person with a
/// completion) and the LMS (`find-user`, `fetch-completions` from the
/// start); writes nothing.
pub async fn reconcile(
    link_name: &LinkName,
    link: &LinkConfig,
    hris: &Connector,
    lms: &Connector,
    state: &dyn Store,
    listed: crate::paging::Listed<'_>,
) -> anyhow::Result<Reconciliation> {
    let mut drifts = Vec::new();
    let employees = list_employees(hris, listed).await?;
    let snapshots: BTreeMap<EmployeeId, EmploymentStatus> = state
        .snapshots(link_name)?
        .into_iter()
        .map(|s| (s.employee.id, s.employee.status))
        .collect();
    for e in &employees {
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
        // A change the host never saw (a change feed that skipped it) is
        // the usual cause; say so.
        let seen = match snapshots.get(&e.id) {
            None => "; the host has not seen this employee".to_owned(),
            Some(s) if *s != e.status => {
                format!(
                    "; the host last saw them {}",
                    format!("{s:?}").to_lowercase()
                )
            }
            Some(_) => String::new(),
        };
        match (expected, user) {
            (true, None) => drifts.push(Drift {
                kind: DriftKind::MissingInLms,
                employee_id: e.id.clone(),
                course: None,
                detail: format!("{status} in the HRIS, no LMS account{seen}"),
            }),
            (true, Some(u)) if !u.active => drifts.push(Drift {
                kind: DriftKind::SuspendedInLms,
                employee_id: e.id.clone(),
                course: None,
                detail: format!("{status} in the HRIS, LMS account {} suspended{seen}", u.id),
            }),
            (false, Some(u)) if u.active => drifts.push(Drift {
                kind: DriftKind::ActiveInLms,
                employee_id: e.id.clone(),
                course: None,
                detail: format!("{status} in the HRIS, LMS account {} active{seen}", u.id),
            }),
            _ => {}
        }
    }

    // Every completion the LMS holds, and the one the policy picks per
    // (employee, course).
    let known: BTreeMap<&str, ()> = employees.iter().map(|e| (e.id.as_str(), ())).collect();
    let mut picked: BTreeMap<(EmployeeId, CourseId), Completion> = BTreeMap::new();
    let mut pages = CompletionPages::from(None);
    let mut bounds = ListingBounds::new("fetch-completions", &lms.name, lms.limits());
    while pages.more() {
        let page = match lms.fetch_completions(pages.cursor()).await {
            Ok(page) => page,
            // Optional: no completions to compare.
            Err(ConnectorError::Unsupported(_)) => break,
            Err(e) => return Err(read_error("fetch-completions", e)),
        };
        bounds
            .take(page.completions.len(), page.next_cursor.as_deref())
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

    // What the HRIS holds for each person with a completion: read from it
    // when the plugin can list training records, else the ledger.
    let mut hris_records_read = true;
    let mut held: BTreeMap<EmployeeId, BTreeMap<CourseId, Vec<String>>> = BTreeMap::new();
    for employee in picked
        .keys()
        .map(|(e, _)| e)
        .collect::<std::collections::BTreeSet<_>>()
    {
        if !hris_records_read {
            break;
        }
        match hris.list_training_records(employee).await {
            Ok(records) => {
                let by_course = held.entry(employee.clone()).or_default();
                for r in records {
                    by_course
                        .entry(r.course_id)
                        .or_default()
                        .push(r.completed_on.to_string());
                }
            }
            Err(ConnectorError::Unsupported(_)) => hris_records_read = false,
            Err(e) => return Err(read_error("list-training-records", e)),
        }
    }
    for ((employee, course), c) in picked {
        let lms_date = c.completed_at.date().to_string();
        let written: Vec<String> = if hris_records_read {
            held.get(&employee)
                .and_then(|courses| courses.get(&course))
                .cloned()
                .unwrap_or_default()
        } else {
            state
                .winner(link_name, &employee, &course)?
                .map(|w| w.completion.completed_at.date().to_string())
                .into_iter()
                .collect()
        };
        let drift = |kind, detail| Drift {
            kind,
            employee_id: employee.clone(),
            course: Some(course.clone()),
            detail,
        };
        match written.as_slice() {
            [] => drifts.push(drift(
                DriftKind::CompletionNotInHris,
                format!(
                    "attempt {} completed {} not written",
                    c.attempt_id, c.completed_at
                ),
            )),
            [date] if *date != lms_date => drifts.push(drift(
                DriftKind::MismatchedDate,
                format!(
                    "HRIS has {date}, LMS has {} (attempt {})",
                    c.completed_at, c.attempt_id
                ),
            )),
            [_] => {}
            dates => drifts.push(drift(
                DriftKind::DuplicateInHris,
                format!(
                    "{} training records ({}) for one completion (attempt {} on {lms_date})",
                    dates.len(),
                    dates.join(", "),
                    c.attempt_id
                ),
            )),
        }
    }
    drifts.sort_by(|a, b| {
        (a.kind, &a.employee_id, &a.course).cmp(&(b.kind, &b.employee_id, &b.course))
    });
    Ok(Reconciliation {
        drifts,
        hris_records_read,
    })
}

/// Every employee, by a full listing (bounded like a run's).
async fn list_employees(
    hris: &Connector,
    listed: crate::paging::Listed<'_>,
) -> anyhow::Result<Vec<Employee>> {
    let mut employees = Vec::new();
    crate::paging::employee_pages(hris, |page| employees.extend(page), listed)
        .await
        .map_err(|e| read_error("fetch-employees", e))?;
    Ok(employees)
}

fn read_error(operation: &str, error: ConnectorError) -> anyhow::Error {
    anyhow::anyhow!("reconcile: {operation} failed: {error}")
}
