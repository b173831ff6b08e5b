//! One sync run of a link: employees from the HRIS to LMS accounts and
//! enrollments, then completions from the LMS back to the HRIS.
//!
//! **Invariant:** every write goes out with an idempotency key derived from
//! what it does (never random), and is recorded in `state` once it succeeded;
//! a run with no changes in either system makes no write call at all.
//!
//! **Invariant:** a cursor advances only after everything its page caused is
//! recorded, so a run that stops half-way is finished by the next one.

pub mod rules;

use std::time::Duration;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;

use crate::config::{LinkConfig, TerminationPolicy};
use crate::model::{Completion, ConnectorError, Employee, EmploymentStatus, Remedy};
use crate::runtime::Connector;
use crate::state::{Account, DeadLetter, Enrollment, State, WrittenCompletion};

/// Attempts of one operation before it is given up on.
const MAX_ATTEMPTS: u32 = 5;
/// First backoff step; doubles per attempt, with full jitter.
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Longest wait between two attempts, whatever Retry-After says.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunReport {
    /// Link name.
    pub link: String,
    /// Whether the employee listing was full (not changes only).
    pub full_listing: bool,
    /// Employee records fetched from the HRIS.
    pub employees_fetched: usize,
    /// LMS accounts created.
    pub users_created: usize,
    /// LMS accounts updated (name or email changed).
    pub users_updated: usize,
    /// LMS accounts suspended.
    pub users_suspended: usize,
    /// LMS accounts reactivated.
    pub users_reactivated: usize,
    /// Enrollments made.
    pub enrollments: usize,
    /// Completions fetched from the LMS.
    pub completions_fetched: usize,
    /// Completions written to the HRIS.
    pub completions_written: usize,
    /// Completions of people this link does not know.
    pub completions_skipped: usize,
    /// Operations given up on (see dead letters).
    pub dead_lettered: usize,
    /// Retries made.
    pub retries: usize,
}

impl RunReport {
    fn add(&mut self, other: &RunReport) {
        self.users_created += other.users_created;
        self.users_updated += other.users_updated;
        self.users_suspended += other.users_suspended;
        self.users_reactivated += other.users_reactivated;
        self.enrollments += other.enrollments;
        self.dead_lettered += other.dead_lettered;
        self.retries += other.retries;
    }

    /// Write calls made.
    pub fn writes(&self) -> usize {
        self.users_created
            + self.users_updated
            + self.users_suspended
            + self.users_reactivated
            + self.enrollments
            + self.completions_written
    }
}

/// A link run failed and the link should stop until an operator acts.
#[derive(Debug, thiserror::Error)]
#[error("link `{link}` stopped: {operation} failed: {error}")]
pub struct LinkStopped {
    /// Link.
    pub link: String,
    /// Operation.
    pub operation: String,
    /// The error.
    pub error: ConnectorError,
}

/// Everything one link needs to run.
pub struct LinkRun<'a> {
    /// Link name.
    pub name: &'a str,
    /// Its configuration.
    pub link: &'a LinkConfig,
    /// The HRIS connector.
    pub hris: &'a Connector,
    /// The LMS connector.
    pub lms: &'a Connector,
    /// State.
    pub state: &'a State,
    /// Today's date, for due dates.
    pub today: time::Date,
}

/// A deterministic idempotency key for an effect.
pub fn idempotency_key(parts: &[&str]) -> String {
    let digest = Sha256::digest(parts.join("\0").as_bytes());
    hex::encode(&digest[..16])
}

/// An operation failed in a way that ends this employee's (or completion's)
/// processing for this run.
enum Failed {
    /// Recorded as a dead letter; go on with the others.
    DeadLettered,
    /// Stop the link.
    Stop(LinkStopped),
}

impl LinkRun<'_> {
    /// Run the link once.
    pub async fn run(&self) -> anyhow::Result<RunReport> {
        let mut report = RunReport {
            link: self.name.to_owned(),
            ..RunReport::default()
        };
        self.provision(&mut report).await?;
        self.write_back_completions(&mut report).await?;
        self.state.flush()?;
        Ok(report)
    }

    /// Call `f` until it succeeds, its error says not to retry, or attempts
    /// run out.
    async fn retry<T>(
        &self,
        report_retries: &mut usize,
        mut f: impl AsyncFnMut() -> Result<T, ConnectorError>,
    ) -> Result<T, ConnectorError> {
        let mut attempt = 0;
        loop {
            let error = match f().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            attempt += 1;
            let Remedy::Retry(after) = error.remedy() else {
                return Err(error);
            };
            if attempt >= MAX_ATTEMPTS {
                return Err(error);
            }
            let wait = match after {
                Some(seconds) => Duration::from_secs(seconds.into()),
                None => {
                    let ceiling = BACKOFF_BASE * 2u32.pow(attempt - 1);
                    ceiling.mul_f64(fastrand::f64())
                }
            }
            .min(MAX_WAIT);
            tracing::info!(link = self.name, attempt, ?wait, "retrying after: {error}");
            *report_retries += 1;
            tokio::time::sleep(wait).await;
        }
    }

    fn failed(&self, operation: &str, employee: &str, key: &str, error: ConnectorError) -> anyhow::Result<Failed> {
        if error.remedy() == Remedy::DeadLetter || matches!(error.remedy(), Remedy::Retry(_)) {
            tracing::warn!(link = self.name, operation, employee, "dead-lettered: {error}");
            self.state.put_dead_letter(
                self.name,
                &DeadLetter {
                    operation: operation.to_owned(),
                    employee_id: employee.to_owned(),
                    idempotency_key: key.to_owned(),
                    reason: error.to_string(),
                    at: now_rfc3339(),
                },
            )?;
            Ok(Failed::DeadLettered)
        } else {
            Ok(Failed::Stop(LinkStopped {
                link: self.name.to_owned(),
                operation: operation.to_owned(),
                error,
            }))
        }
    }

    async fn provision(&self, report: &mut RunReport) -> anyhow::Result<()> {
        let resume = self.state.cursor(self.name, "employees")?;
        report.full_listing = resume.is_none();
        let mut cursor = resume;
        let mut retries = 0;
        loop {
            let page = self
                .retry(&mut retries, async || self.hris.fetch_employees(cursor.as_deref()).await)
                .await
                .map_err(|error| LinkStopped {
                    link: self.name.to_owned(),
                    operation: "fetch-employees".into(),
                    error,
                })?;
            report.employees_fetched += page.employees.len();
            let outcomes: Vec<RunReport> = futures::stream::iter(page.employees)
                .map(|e| self.provision_one(e))
                .buffer_unordered(self.link.concurrency)
                .try_collect()
                .await?;
            for outcome in &outcomes {
                report.add(outcome);
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => {
                    match page.changes_cursor {
                        Some(resume) => self.state.put_cursor(self.name, "employees", &resume)?,
                        None => self.state.delete_cursor(self.name, "employees")?,
                    }
                    break;
                }
            }
        }
        report.retries += retries;
        Ok(())
    }

    /// Bring one employee's LMS account and enrollments in line with their
    /// HRIS record. Operations for one employee run in order.
    async fn provision_one(&self, employee: Employee) -> anyhow::Result<RunReport> {
        let mut report = RunReport::default();
        match self.apply(&employee, &mut report).await? {
            Ok(()) => {
                self.state.put_snapshot(self.name, &employee)?;
            }
            Err(Failed::DeadLettered) => report.dead_lettered += 1,
            Err(Failed::Stop(stopped)) => return Err(stopped.into()),
        }
        Ok(report)
    }

    async fn apply(&self, e: &Employee, report: &mut RunReport) -> anyhow::Result<Result<(), Failed>> {
        let previous = self.state.snapshot(self.name, &e.id)?;
        let mut account = self.state.account(self.name, &e.id)?;
        let policy = self.link.on_termination;
        let keeps_access = match e.status {
            EmploymentStatus::Active | EmploymentStatus::OnLeave => true,
            EmploymentStatus::Pending => false,
            EmploymentStatus::Inactive | EmploymentStatus::Terminated => {
                policy == TerminationPolicy::StopAssignments && account.is_some()
            }
        };
        let gains_access = matches!(e.status, EmploymentStatus::Active | EmploymentStatus::OnLeave);

        if gains_access {
            let profile_changed = previous.as_ref().is_none_or(|p| p.profile() != e.profile());
            if account.is_none() || profile_changed {
                let profile = serde_json::to_string(&e.profile()).context("failed to encode profile")?;
                let key = idempotency_key(&["upsert-user", self.name, &e.id, &profile]);
                let known = account.as_ref().map(|a| a.lms_user_id.clone());
                let result = self
                    .retry(&mut report.retries, async || {
                        self.lms.upsert_user(e, known.as_deref(), &key).await
                    })
                    .await;
                let lms_user_id = match result {
                    Ok(id) => id,
                    Err(error) => return Ok(Err(self.failed("upsert-user", &e.id, &key, error)?)),
                };
                match &account {
                    None => report.users_created += 1,
                    Some(_) => report.users_updated += 1,
                }
                let updated = Account {
                    lms_user_id,
                    active: account.as_ref().is_none_or(|a| a.active),
                };
                self.state.put_account(self.name, &e.id, &updated)?;
                account = Some(updated);
            }
        }

        let Some(mut current) = account else {
            return Ok(Ok(()));
        };

        if gains_access && !current.active {
            let key = idempotency_key(&["set-active", self.name, &e.id, "true", e.updated_at.as_deref().unwrap_or("")]);
            let result = self
                .retry(&mut report.retries, async || {
                    self.lms.set_active(&current.lms_user_id, true, &key).await
                })
                .await;
            if let Err(error) = result {
                return Ok(Err(self.failed("set-active", &e.id, &key, error)?));
            }
            current.active = true;
            self.state.put_account(self.name, &e.id, &current)?;
            report.users_reactivated += 1;
        }

        if !keeps_access && current.active && policy == TerminationPolicy::Suspend {
            let key = idempotency_key(&["set-active", self.name, &e.id, "false", e.updated_at.as_deref().unwrap_or("")]);
            let result = self
                .retry(&mut report.retries, async || {
                    self.lms.set_active(&current.lms_user_id, false, &key).await
                })
                .await;
            if let Err(error) = result {
                return Ok(Err(self.failed("set-active", &e.id, &key, error)?));
            }
            current.active = false;
            self.state.put_account(self.name, &e.id, &current)?;
            report.users_suspended += 1;
        }

        // New assignments only for people at work.
        if e.status == EmploymentStatus::Active && current.active {
            for assignment in rules::assignments(&self.link.rules, e) {
                if self.state.enrollment(self.name, &e.id, &assignment.course)?.is_some() {
                    continue;
                }
                let due = assignment
                    .due_in_days
                    .map(|days| (self.today + time::Duration::days(days.into())).to_string());
                let key = idempotency_key(&["enroll", self.name, &e.id, &assignment.course]);
                let result = self
                    .retry(&mut report.retries, async || {
                        self.lms
                            .enroll(&current.lms_user_id, &assignment.course, due.as_deref(), &key)
                            .await
                    })
                    .await;
                if let Err(error) = result {
                    return Ok(Err(self.failed("enroll", &e.id, &key, error)?));
                }
                tracing::debug!(link = self.name, employee = %e.id, course = %assignment.course, rule = ?assignment.rule, "enrolled");
                self.state.put_enrollment(
                    self.name,
                    &e.id,
                    &assignment.course,
                    &Enrollment {
                        due,
                        rule: assignment.rule.clone(),
                    },
                )?;
                report.enrollments += 1;
            }
        }
        Ok(Ok(()))
    }

    async fn write_back_completions(&self, report: &mut RunReport) -> anyhow::Result<()> {
        let mut cursor = self.state.cursor(self.name, "completions")?;
        loop {
            let page = self
                .retry(&mut report.retries, async || {
                    self.lms.fetch_completions(cursor.as_deref()).await
                })
                .await
                .map_err(|error| LinkStopped {
                    link: self.name.to_owned(),
                    operation: "fetch-completions".into(),
                    error,
                })?;
            report.completions_fetched += page.completions.len();
            for completion in page.completions {
                self.write_back(completion, report).await?;
            }
            // Everything on the page is written or dead-lettered: advance.
            if let Some(next) = &page.next_cursor {
                self.state.put_cursor(self.name, "completions", next)?;
                cursor = Some(next.clone());
            }
            if !page.more {
                return Ok(());
            }
        }
    }

    async fn write_back(&self, mut c: Completion, report: &mut RunReport) -> anyhow::Result<()> {
        if self.state.completion_written(self.name, &c)? {
            return Ok(());
        }
        let Some(employee) = self.state.snapshot(self.name, &c.employee_id)? else {
            tracing::debug!(link = self.name, employee = %c.employee_id, "completion of an unknown employee skipped");
            report.completions_skipped += 1;
            return Ok(());
        };
        if c.expires_at.is_none()
            && let Some(days) = rules::recertify_every_days(&self.link.rules, &employee, &c.course_id)
        {
            c.expires_at = add_days(&c.completed_at, days);
        }
        let key = idempotency_key(&["push-completion", self.name, &c.employee_id, &c.course_id, &c.attempt_id]);
        let result = self
            .retry(&mut report.retries, async || self.hris.push_completion(&c, &key).await)
            .await;
        match result {
            Ok(()) => {
                self.state.put_completion(
                    self.name,
                    &WrittenCompletion {
                        idempotency_key: key,
                        completion: c,
                    },
                )?;
                report.completions_written += 1;
            }
            Err(error) => match self.failed("push-completion", &c.employee_id, &key, error)? {
                Failed::DeadLettered => report.dead_lettered += 1,
                Failed::Stop(stopped) => return Err(stopped.into()),
            },
        }
        Ok(())
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// `days` after an RFC 3339 timestamp (None if it does not parse).
fn add_days(timestamp: &str, days: u32) -> Option<String> {
    let t = time::OffsetDateTime::parse(timestamp, &Rfc3339).ok()?;
    (t + time::Duration::days(days.into())).format(&Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_deterministic_and_distinct() {
        let a = idempotency_key(&["enroll", "acme", "101", "SAFETY"]);
        assert_eq!(a, idempotency_key(&["enroll", "acme", "101", "SAFETY"]));
        assert_ne!(a, idempotency_key(&["enroll", "acme", "1010", "SAFETY"]));
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(idempotency_key(&["ab", "c"]), idempotency_key(&["a", "bc"]));
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn expiry_from_completion() {
        assert_eq!(
            add_days("2026-03-01T10:00:00Z", 365).as_deref(),
            Some("2027-03-01T10:00:00Z")
        );
        assert_eq!(add_days("not a date", 1), None);
    }
}
