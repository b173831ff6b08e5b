//! The LMS side's batch checks (contract 0.5.0's `batch-provisioning`):
//! account writes and enrolments answered item by item, in order, a
//! repeated batch adopting what the first made, and the account listing
//! paged to the end with the accounts it made in it. A plugin that
//! answers `unsupported` gets each check skipped, as the host then sends
//! single operations.

use std::collections::BTreeMap;

use switchyard_model::{AccountWrite, ConnectorError, EnrollmentWrite};

use super::{Outcome, Run};

/// Pages `list-accounts` may take before the check gives up.
const MAX_PAGES: usize = 10_000;

impl Run {
    /// The batch checks; `bound` is an account the runner made earlier.
    pub(super) async fn batches(&mut self, bound: &str) {
        let people: Vec<_> = (20..23).map(|n| self.employee(n)).collect();
        let prefix = self.key("batch");
        let write = |lms_user_id: Option<&str>, e: &switchyard_model::Employee| AccountWrite {
            employee: e.clone(),
            lms_user_id: lms_user_id.map(Into::into),
            key: format!("{prefix}-{}", e.id.as_str()),
        };
        let mut items: Vec<AccountWrite> = people.iter().map(|e| write(None, e)).collect();
        items.push(write(Some(bound), &self.employee(1)));

        let made = match self.connector.upsert_users(&items).await {
            Err(ConnectorError::Unsupported(m)) => {
                let skipped = format!(
                    "upsert-users is not implemented ({m}): the host sends one operation per call"
                );
                self.record("batch accounts", Outcome::Skipped(skipped));
                None
            }
            Err(e) => {
                self.record(
                    "batch accounts",
                    Outcome::Failed(format!("upsert-users: {e}")),
                );
                None
            }
            Ok(results) => {
                let mut ids = Vec::new();
                let mut failed = None;
                for (n, result) in results.iter().enumerate() {
                    match (n, result) {
                        (3, Ok(w)) if w.id.as_str() == bound && !w.created => {}
                        (3, other) => {
                            failed = Some(format!("the item bound to {bound} answered {other:?}"))
                        }
                        (_, Ok(w)) if w.created => ids.push(w.id.to_string()),
                        (_, other) => {
                            failed = Some(format!("item {n}, a new employee, answered {other:?}"))
                        }
                    }
                }
                let outcome = match failed {
                    Some(m) => Outcome::Failed(m),
                    None => Outcome::Passed(format!(
                        "{} results in order: {} accounts made, the bound one updated",
                        results.len(),
                        ids.len()
                    )),
                };
                let passed = matches!(outcome, Outcome::Passed(_));
                self.record("batch accounts", outcome);
                passed.then_some(ids)
            }
        };
        let Some(made) = made else {
            self.record(
                "batch enrolments",
                Outcome::Skipped("no batch accounts".into()),
            );
            self.listing(&BTreeMap::new()).await;
            return;
        };

        // The same batch again, as after a lost answer: the accounts made
        // the first time are adopted, not made twice.
        let again: Vec<AccountWrite> = people.iter().map(|e| write(None, e)).collect();
        let outcome = match self.connector.upsert_users(&again).await {
            Ok(results) => {
                let same = results
                    .iter()
                    .zip(&made)
                    .all(|(r, id)| matches!(r, Ok(w) if w.id.as_str() == id && !w.created));
                if same && results.len() == made.len() {
                    Outcome::Passed("the same accounts, adopted".into())
                } else {
                    Outcome::Failed(format!("answered {results:?}, not the accounts {made:?}"))
                }
            }
            Err(e) => Outcome::Failed(format!("upsert-users: {e}")),
        };
        self.record("batch twice", outcome);

        match self.options.course.clone() {
            None => self.record(
                "batch enrolments",
                Outcome::Skipped("no --course given (a course that exists in the LMS)".into()),
            ),
            Some(course) => {
                let writes: Vec<EnrollmentWrite> = made
                    .iter()
                    .map(|id| EnrollmentWrite {
                        lms_user_id: id.as_str().into(),
                        course: course.as_str().into(),
                        due: None,
                        key: self.key(&format!("batch-enrol-{id}")),
                    })
                    .collect();
                let outcome = match self.connector.enroll_all(&writes).await {
                    Err(ConnectorError::Unsupported(m)) => {
                        Outcome::Skipped(format!("enroll-all is not implemented ({m})"))
                    }
                    Err(e) => Outcome::Failed(format!("enroll-all: {e}")),
                    Ok(results) if results.iter().all(Result::is_ok) => {
                        Outcome::Passed(format!("{} in {course}", results.len()))
                    }
                    Ok(results) => Outcome::Failed(format!("answered {results:?}")),
                };
                self.record("batch enrolments", outcome);
            }
        }

        let expected: BTreeMap<String, String> = made
            .iter()
            .cloned()
            .zip(people.iter().map(|e| e.id.to_string()))
            .collect();
        self.listing(&expected).await;
        for id in &made {
            let _ = self
                .connector
                .set_active(id, false, &self.key(&format!("cleanup-{id}")))
                .await;
        }
    }

    /// `list-accounts` to the end: every cursor new, and each account in
    /// `expected` (LMS id -> HRIS id) listed with its HRIS id.
    async fn listing(&mut self, expected: &BTreeMap<String, String>) {
        let mut cursor: Option<String> = None;
        let mut seen_cursors = std::collections::BTreeSet::new();
        let mut found: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut pages = 0;
        let outcome = loop {
            pages += 1;
            if pages > MAX_PAGES {
                break Outcome::Failed(format!("more than {MAX_PAGES} pages"));
            }
            match self.connector.list_accounts(cursor.as_deref()).await {
                Err(ConnectorError::Unsupported(m)) => {
                    break Outcome::Skipped(format!("list-accounts is not implemented ({m})"));
                }
                Err(e) => break Outcome::Failed(format!("list-accounts: {e}")),
                Ok(page) => {
                    for a in page.accounts {
                        found.insert(a.id.to_string(), a.employee_id);
                    }
                    match page.next_cursor {
                        None => {
                            let missing: Vec<_> = expected
                                .iter()
                                .filter(|(id, hris)| {
                                    found.get(*id).cloned().flatten().as_ref() != Some(*hris)
                                })
                                .collect();
                            break match missing.is_empty() {
                                true => Outcome::Passed(format!(
                                    "{} accounts in {pages} pages, the ones made here with their HRIS id",
                                    found.len()
                                )),
                                false => Outcome::Failed(format!(
                                    "accounts made here are missing or lack their HRIS id: {missing:?}"
                                )),
                            };
                        }
                        Some(next) if !seen_cursors.insert(next.clone()) => {
                            break Outcome::Failed(format!("cursor `{next}` came twice"));
                        }
                        Some(next) => cursor = Some(next),
                    }
                }
            }
        };
        self.record("account listing", outcome);
    }
}
