//! The LMS side's batch calls (`batch-provisioning`, contract 0.5.0): many
//! accounts or enrolments per call, answered item by item, and the paged
//! listing of the LMS's accounts. A plugin built against an older contract
//! gets `unsupported` without a call, which the engine answers by sending
//! the single operations.

use std::sync::atomic::{AtomicBool, Ordering};

use switchyard_model::{self as model, ConnectorError};

use super::{Connector, Output, opt_len};
use crate::bindings::lms::exports::switchyard::connector::batch_provisioning as wit;
use crate::{Pre, Versioned};

/// The most items the host puts in one batch call (the contract's promise).
pub const MAX_BATCH: usize = 100;

/// A batch answer whose length is not the batch's: the plugin broke the
/// contract, and no item's outcome can be trusted.
#[derive(Debug, thiserror::Error)]
#[error(
    "{operation} answered {answered} results for {sent} items (the contract says one per item, in order)"
)]
struct WrongLength {
    operation: &'static str,
    sent: usize,
    answered: usize,
}

fn check_length<T>(operation: &'static str, sent: usize, answer: &[T]) -> wasmtime::Result<()> {
    if answer.len() == sent {
        return Ok(());
    }
    Err(WrongLength {
        operation,
        sent,
        answered: answer.len(),
    }
    .into())
}

/// Which batch functions the plugin answered `unsupported`, remembered
/// for as long as the connector (a reloaded plugin is asked again).
#[derive(Debug, Default)]
pub(super) struct BatchSupport {
    no_upserts: AtomicBool,
    no_enrollments: AtomicBool,
}

/// Note an `unsupported` answer in `flag`.
fn remember<T>(flag: &AtomicBool, answer: &Result<T, ConnectorError>) {
    if let Err(ConnectorError::Unsupported(_)) = answer {
        flag.store(true, Ordering::Relaxed);
    }
}

/// Outcomes of one batch: one per item, in the order sent.
pub type ItemResults<T> = Vec<Result<T, ConnectorError>>;

impl Output for ItemResults<model::AccountWritten> {
    fn records(&self) -> usize {
        self.len()
    }
    fn approx_bytes(&self) -> usize {
        self.iter()
            .map(|r| match r {
                Ok(w) => w.id.len() + 2,
                Err(e) => e.to_string().len(),
            })
            .sum()
    }
}

impl Output for ItemResults<()> {
    fn records(&self) -> usize {
        self.len()
    }
    fn approx_bytes(&self) -> usize {
        self.iter()
            .map(|r| r.as_ref().err().map_or(1, |e| e.to_string().len()))
            .sum()
    }
}

impl Output for model::AccountPage {
    fn records(&self) -> usize {
        self.accounts.len()
    }
    fn approx_bytes(&self) -> usize {
        let accounts: usize = self
            .accounts
            .iter()
            .map(|a| {
                a.id.len()
                    + opt_len(&a.employee_id)
                    + opt_len(&a.username)
                    + opt_len(&a.email)
                    + opt_len(&a.given_name)
                    + opt_len(&a.family_name)
                    + 1
            })
            .sum();
        accounts + opt_len(&self.next_cursor)
    }
}

impl Connector {
    /// Whether `upsert-users` is worth calling: the plugin has it (contract
    /// 0.5.0), has not answered `unsupported`, and the connector's
    /// `max_batch` is over 1.
    pub fn batches_accounts(&self) -> bool {
        self.limits.max_batch > 1
            && matches!(self.plugin.pre, Pre::Lms(Versioned::Current(_)))
            && !self.batch.no_upserts.load(Ordering::Relaxed)
    }

    /// Whether `enroll-all` is worth calling (as [`Self::batches_accounts`]).
    pub fn batches_enrollments(&self) -> bool {
        self.limits.max_batch > 1
            && matches!(self.plugin.pre, Pre::Lms(Versioned::Current(_)))
            && !self.batch.no_enrollments.load(Ordering::Relaxed)
    }

    /// `upsert-users`: one outcome per item, in order.
    pub async fn upsert_users(
        &self,
        items: &[model::AccountWrite],
    ) -> Result<ItemResults<model::AccountWritten>, ConnectorError> {
        let Versioned::Current(pre) = self.lms()? else {
            return Err(self.predates("batch-provisioning", "0.5.0"));
        };
        let writes: Vec<wit::AccountWrite> = items
            .iter()
            .map(|item| wit::AccountWrite {
                employee: item.employee.clone().into(),
                lms_user_id: item.lms_user_id.as_ref().map(|id| id.to_string()),
                idempotency_key: item.key.clone(),
            })
            .collect();
        let answer = self
            .call("upsert-users", async |store| {
                let instance = pre.instantiate_async(&mut *store).await?;
                let answer = instance
                    .switchyard_connector_batch_provisioning()
                    .call_upsert_users(&mut *store, &writes)
                    .await?;
                Ok(match answer {
                    Ok(results) => {
                        check_length("upsert-users", writes.len(), &results)?;
                        Ok(results
                            .into_iter()
                            .map(|r| {
                                r.map(|w| model::AccountWritten {
                                    id: w.id.into(),
                                    created: w.created,
                                    active: w.active,
                                })
                                .map_err(ConnectorError::from)
                            })
                            .collect())
                    }
                    Err(e) => Err(e),
                })
            })
            .await;
        remember(&self.batch.no_upserts, &answer);
        answer
    }

    /// `enroll-all`: one outcome per item, in order.
    pub async fn enroll_all(
        &self,
        items: &[model::EnrollmentWrite],
    ) -> Result<ItemResults<()>, ConnectorError> {
        let Versioned::Current(pre) = self.lms()? else {
            return Err(self.predates("batch-provisioning", "0.5.0"));
        };
        let writes: Vec<wit::EnrollmentWrite> = items
            .iter()
            .map(|item| wit::EnrollmentWrite {
                lms_user_id: item.lms_user_id.to_string(),
                course_id: item.course.to_string(),
                due: item.due.map(|d| d.to_string()),
                idempotency_key: item.key.clone(),
            })
            .collect();
        let answer = self
            .call("enroll-all", async |store| {
                let instance = pre.instantiate_async(&mut *store).await?;
                let answer = instance
                    .switchyard_connector_batch_provisioning()
                    .call_enroll_all(&mut *store, &writes)
                    .await?;
                Ok(match answer {
                    Ok(results) => {
                        check_length("enroll-all", writes.len(), &results)?;
                        Ok(results
                            .into_iter()
                            .map(|r| r.map_err(ConnectorError::from))
                            .collect())
                    }
                    Err(e) => Err(e),
                })
            })
            .await;
        remember(&self.batch.no_enrollments, &answer);
        answer
    }

    /// `list-accounts`: one page of the accounts the LMS holds.
    pub async fn list_accounts(
        &self,
        cursor: Option<&str>,
    ) -> Result<model::AccountPage, ConnectorError> {
        let Versioned::Current(pre) = self.lms()? else {
            return Err(self.predates("list-accounts", "0.5.0"));
        };
        self.call("list-accounts", async |store| {
            let instance = pre.instantiate_async(&mut *store).await?;
            let answer = instance
                .switchyard_connector_batch_provisioning()
                .call_list_accounts(&mut *store, cursor)
                .await?;
            Ok(answer.map(|page| model::AccountPage {
                accounts: page
                    .accounts
                    .into_iter()
                    .map(|a| model::LmsAccount {
                        id: a.id.into(),
                        employee_id: a.employee_id,
                        username: a.username,
                        email: a.email,
                        given_name: a.given_name,
                        family_name: a.family_name,
                        active: a.active,
                    })
                    .collect(),
                next_cursor: page.next_cursor,
            }))
        })
        .await
    }
}
