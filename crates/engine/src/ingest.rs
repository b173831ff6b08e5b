//! One ingest path: employee records and completions become planned work
//! here, whether a poll listed them ([`crate::LinkRun`]) or a webhook
//! delivered them (the `switchyard` crate's webhook ingress). A second copy
//! of this logic would be a second engine that could drift from the first.
//!
//! [`Ingest`] reads what the planner needs from the store ([`load_known`]),
//! runs the pure [`Planner`], and drops what is already done or given up on;
//! [`Ingest::deactivations`] is the mass-deactivation guard;
//! [`decide_completions`] applies the retake policy.

use std::collections::BTreeMap;

use switchyard_model::{
    Completion, CourseId, Date, Employee, EmployeeId, LinkName, OpKind, Operation, PlannedEmployee,
    Snapshot, Winner,
};
use switchyard_store::{Ledger, Store};

use crate::plan::{Known, Planner};
use crate::policy::{DeactivationLimit, LinkConfig};
use crate::{idempotency_key, retake, rules};

/// What the store knows about one employee of a link, pending work included.
pub fn load_known(
    state: &dyn Store,
    link: &LinkName,
    employee: &EmployeeId,
) -> anyhow::Result<Known> {
    let snapshot = state.snapshot(link, employee)?;
    // Only a record without a snapshot continues a retired numbering.
    let retired_rev = match snapshot {
        Some(_) => None,
        None => state.retired_rev(link, employee)?,
    };
    Ok(Known {
        snapshot,
        retired_rev,
        account: state.account(link, employee)?,
        enrollments: state.enrollments_of(link, employee)?.into_iter().collect(),
        withdrawals: state.withdrawals_of(link, employee)?.into_iter().collect(),
        pending: state.pending_for(link, employee)?,
        winners: state.winners_of(link, employee)?.into_iter().collect(),
    })
}

/// Plans the employee records of one link against its store.
pub struct Ingest<'a> {
    /// Link name.
    pub link_name: &'a LinkName,
    /// Its configuration.
    pub link: &'a LinkConfig,
    /// The store.
    pub state: &'a dyn Store,
    /// Today, for due dates and recertification.
    pub today: Date,
    /// Suspend accounts outside the link's scope ([`crate::RunOptions`]).
    pub retire_out_of_scope: bool,
}

/// What a plan would deactivate, against what the link allows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deactivations {
    /// Accounts the plan suspends.
    pub planned: usize,
    /// Accounts the link may suspend in one go.
    pub allowed: usize,
    /// The configured limit.
    pub limit: DeactivationLimit,
}

impl Deactivations {
    /// Whether the plan must halt for an operator.
    pub fn exceeded(&self) -> bool {
        self.planned > self.allowed
    }
}

impl Ingest<'_> {
    /// Plan employee records as the HRIS sent them: each passes the link's
    /// field allowlist first (a dropped field is never planned with, stored
    /// or sent), the last record of an id wins, and operations already done
    /// or given up on are dropped. Plans come back ordered by employee id.
    pub fn plan_employees(
        &self,
        employees: impl IntoIterator<Item = Employee>,
    ) -> anyhow::Result<Vec<PlannedEmployee>> {
        let mut latest = BTreeMap::new();
        for e in employees {
            latest.insert(e.id.clone(), self.link.fields.apply(e));
        }
        latest.values().map(|e| self.plan_one(e)).collect()
    }

    /// Plan one record (already through the allowlist).
    pub fn plan_one(&self, e: &Employee) -> anyhow::Result<PlannedEmployee> {
        let known = load_known(self.state, self.link_name, &e.id)?;
        self.plan_against(e, known)
    }

    /// Plan stored employees again, `snapshots` as read from the store (a
    /// run of consecutive ones, in key order), their records through the
    /// allowlist (a field dropped from `fields` since they were stored
    /// leaves the snapshot now). What else the store knows of them is read
    /// in one pass ([`Store::ledgers`]).
    pub fn plan_stored(
        &self,
        snapshots: Vec<Snapshot>,
    ) -> anyhow::Result<Vec<(EmployeeId, PlannedEmployee)>> {
        let (Some(first), Some(last)) = (snapshots.first(), snapshots.last()) else {
            return Ok(Vec::new());
        };
        let mut ledgers =
            self.state
                .ledgers(self.link_name, &first.employee.id, &last.employee.id)?;
        let items: Vec<(Snapshot, Ledger)> = snapshots
            .into_iter()
            .map(|s| {
                let ledger = ledgers.remove(&s.employee.id).unwrap_or_default();
                (s, ledger)
            })
            .collect();
        self.plan_many(items, |ingest, (snapshot, ledger)| {
            let employee = ingest.link.fields.apply(snapshot.employee.clone());
            let known = Known {
                snapshot: Some(snapshot),
                retired_rev: None,
                account: ledger.account,
                enrollments: ledger.enrollments.into_iter().collect(),
                withdrawals: ledger.withdrawals.into_iter().collect(),
                pending: ledger.pending,
                winners: ledger.winners.into_iter().collect(),
            };
            let planned = ingest.plan_against(&employee, known)?;
            Ok((employee.id, planned))
        })
    }

    /// Plan `f` of every item, on every core when there are enough of them
    /// (planning is reads of the store and CPU), in the order given.
    pub fn plan_many<T: Send, R: Send>(
        &self,
        items: Vec<T>,
        f: impl Fn(&Self, T) -> anyhow::Result<R> + Sync,
    ) -> anyhow::Result<Vec<R>> {
        /// Fewer items than this per thread are not worth a thread.
        const PER_THREAD: usize = 64;
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(items.len() / PER_THREAD)
            .max(1);
        if threads == 1 {
            return items.into_iter().map(|item| f(self, item)).collect();
        }
        let per = items.len().div_ceil(threads);
        let mut chunks: Vec<Vec<T>> = Vec::with_capacity(threads);
        let mut items = items.into_iter();
        loop {
            let chunk: Vec<T> = items.by_ref().take(per).collect();
            if chunk.is_empty() {
                break;
            }
            chunks.push(chunk);
        }
        let f = &f;
        let planned: Vec<anyhow::Result<Vec<R>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|chunk| {
                    scope.spawn(move || chunk.into_iter().map(|item| f(self, item)).collect())
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a planning thread panicked")))
                })
                .collect()
        });
        let mut out = Vec::new();
        for chunk in planned {
            out.extend(chunk?);
        }
        Ok(out)
    }

    fn plan_against(&self, e: &Employee, known: Known) -> anyhow::Result<PlannedEmployee> {
        let planner = Planner {
            link_name: self.link_name,
            link: self.link,
            today: self.today,
            retire_out_of_scope: self.retire_out_of_scope,
        };
        let mut planned = planner.plan(e, &known);
        let mut operations = Vec::with_capacity(planned.operations.len());
        for op in planned.operations {
            if !self.state.is_done(self.link_name, &op.key)?
                && !self.state.is_dead(self.link_name, &op.key)?
            {
                operations.push(op);
            }
        }
        planned.operations = operations;
        Ok(planned)
    }

    /// The mass-deactivation guard over a plan that suspends `suspends`
    /// accounts ([`suspends`]): `Some` with the figures when that is more
    /// than the link allows for the accounts now active. The active
    /// accounts are counted only when the plan suspends any.
    pub fn deactivations_exceeded(&self, suspends: usize) -> anyhow::Result<Option<Deactivations>> {
        if suspends == 0 {
            return Ok(None);
        }
        let active = self.state.active_accounts(self.link_name)?;
        let deactivations = Deactivations {
            planned: suspends,
            allowed: self.link.max_deactivations.allowed(active),
            limit: self.link.max_deactivations,
        };
        Ok(deactivations.exceeded().then_some(deactivations))
    }
}

/// How many accounts a plan suspends.
pub fn suspends<'a>(planned: impl IntoIterator<Item = &'a PlannedEmployee>) -> usize {
    planned
        .into_iter()
        .flat_map(|p| &p.operations)
        .filter(|op| matches!(op.kind, OpKind::SetActive { active: false }))
        .count()
}

/// What a link's retake policy makes of a batch of completions.
#[derive(Debug, Default)]
pub struct CompletionDecisions {
    /// Attempts considered for the first time, to record as seen.
    pub seen: Vec<Completion>,
    /// New winners and the `push-completion` operations that write them.
    pub winners: Vec<(Winner, Operation)>,
    /// Attempts the policy did not pick.
    pub not_winning: usize,
    /// Attempts of employees the link does not know.
    pub skipped: usize,
}

/// Apply `link`'s retake policy to `completions`: skip attempts seen before
/// (by employee, course, attempt) and of unknown employees, compute the
/// expiry, pick winners and plan their writes with deterministic keys.
///
/// The one place completions are decided: a poll (`LinkRun`) and a webhook
/// (`webhook`) both come here, so an attempt that arrives both ways is
/// decided once and written with one idempotency key. `decided` holds
/// winners chosen earlier in the same batch of pages and not committed yet.
pub fn decide_completions(
    name: &LinkName,
    link: &LinkConfig,
    state: &dyn Store,
    completions: Vec<Completion>,
    decided: &mut BTreeMap<(EmployeeId, CourseId), Winner>,
) -> anyhow::Result<CompletionDecisions> {
    let mut decisions = CompletionDecisions::default();
    for c in completions {
        if state.is_seen(name, &c)?
            || decisions.seen.iter().any(|s: &Completion| {
                s.employee_id == c.employee_id
                    && s.course_id == c.course_id
                    && s.attempt_id == c.attempt_id
            })
        {
            continue;
        }
        decisions.seen.push(c.clone());
        let Some(snapshot) = state.snapshot(name, &c.employee_id)? else {
            tracing::debug!(link = %name, employee = %c.employee_id, "completion of an unknown employee skipped");
            decisions.skipped += 1;
            continue;
        };
        if link
            .scope
            .as_ref()
            .is_some_and(|scope| !scope.covers(&snapshot.employee))
        {
            tracing::debug!(link = %name, employee = %c.employee_id, "completion of an employee outside the link's scope skipped");
            decisions.skipped += 1;
            continue;
        }
        let mut c = c;
        if c.expires_at.is_none()
            && let Some(days) =
                rules::recertify_every_days(&link.rules, &snapshot.employee, &c.course_id)
        {
            c.expires_at = Some(c.completed_at.plus_days(days.into()));
        }
        let slot = (c.employee_id.clone(), c.course_id.clone());
        let current = match decided.get(&slot) {
            Some(w) => Some(w.clone()),
            None => state.winner(name, &c.employee_id, &c.course_id)?,
        };
        if !retake::wins(
            link.completion_policy,
            &c,
            current.as_ref().map(|w| &w.completion),
        ) {
            decisions.not_winning += 1;
            continue;
        }
        let key = idempotency_key(&[
            "push-completion",
            name,
            &c.employee_id,
            &c.course_id,
            &c.attempt_id,
        ]);
        let cause = match &current {
            None => format!("completion of {} (attempt {})", c.course_id, c.attempt_id),
            Some(w) => format!(
                "attempt {} wins over attempt {} under completion_policy = {:?}",
                c.attempt_id, w.completion.attempt_id, link.completion_policy
            ),
        };
        let op = Operation {
            key: key.clone(),
            employee_id: c.employee_id.clone(),
            kind: OpKind::PushCompletion {
                completion: c.clone(),
                supersedes: current.map(|w| w.idempotency_key),
            },
            cause,
            attempts: 0,
            next_attempt_at: 0,
            last_error: None,
        };
        let winner = Winner {
            idempotency_key: key,
            completion: c,
        };
        decided.insert(slot, winner.clone());
        decisions.winners.push((winner, op));
    }
    Ok(decisions)
}

#[cfg(test)]
mod tests {
    #[test]
    fn expiry_from_completion() {
        let completed: switchyard_model::Timestamp = "2026-03-01T10:00:00Z".parse().unwrap();
        assert_eq!(completed.plus_days(365).to_string(), "2027-03-01T10:00:00Z");
    }
}
