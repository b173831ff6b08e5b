//! Applying the outbox in waves, for an LMS plugin that takes batches
//! (`batch-provisioning`, contract 0.5.0).
//!
//! A wave takes the first pending operation of every employee: account
//! writes go out together in `upsert-users` calls and enrolments in
//! `enroll-all` calls (at most [`MAX_BATCH`] items each), everything else
//! one by one as before. Each item is then settled as a single operation
//! is (its effect recorded, retried, or dead-lettered with the employee's
//! later operations blocked); the effects and audit records of the wave's
//! successes are committed in one transaction (group commit), and the
//! wave's records are flushed before the next wave sends what depends on
//! them. So an employee's
//! operations still go out in order, one at a time, and a bad item costs
//! only itself.
//!
//! When the plugin answers a batch call `unsupported`, its items are sent
//! one by one, and once neither batch function is worth calling the rest
//! of the outbox goes back to the per-employee path. A batch refused as a
//! whole (`rejected` for the call, perhaps for one bad item the plugin did
//! not single out) is sent one by one too, so that only a bad item is
//! dead-lettered.

use std::collections::VecDeque;
use std::time::Duration;

use futures::StreamExt;
use switchyard_audit::Kind;
use switchyard_model::{
    Account, AccountWrite, AccountWritten, ConnectorError, Effect, EnrollmentWrite, OpKind,
    Operation,
};
use switchyard_runtime::{CallContext, ItemResults, MAX_BATCH};
use switchyard_store::Completed;

use super::{LinkRun, Settled};
use crate::matching::Resolution;
use crate::report::{OperationResult, RunError, RunReport};

/// The outcome of one attempt of one operation: its effect and audit kind.
type Attempt = Result<(Effect, Kind), ConnectorError>;

/// What a job of a wave did: each item's attempt by queue, and its counts.
type JobOutcome = Result<(Vec<(usize, Attempt)>, RunReport), RunError>;

/// Work of one wave, run concurrently with the rest of the wave.
enum Job {
    /// One operation on its own: (queue, operation).
    Single(usize, Box<Operation>),
    /// Account writes: (queue, operation, its write, the account the
    /// host knows).
    Accounts(Vec<(usize, Operation, AccountWrite, Option<Account>)>),
    /// Enrolments: (queue, operation, its write, its effect).
    Enrollments(Vec<(usize, Operation, EnrollmentWrite, Effect)>),
}

impl LinkRun<'_> {
    /// Whether the LMS plugin takes batches worth sending.
    pub(super) fn batching(&self) -> bool {
        self.lms.batches_accounts() || self.lms.batches_enrollments()
    }

    /// Apply `groups` (each employee's operations, in order) in waves.
    /// Returns what is left for the per-employee path when the plugin
    /// turned batches down; nothing when all was applied or the run is
    /// stopping (what was not sent stays in the outbox).
    pub(super) async fn apply_in_waves(
        &self,
        groups: Vec<Vec<Operation>>,
        report: &mut RunReport,
    ) -> Result<Vec<Vec<Operation>>, RunError> {
        let mut queues: Vec<VecDeque<Operation>> = groups.into_iter().map(Into::into).collect();
        loop {
            // The effects of the last wave are durable before the
            // operations that depend on them are sent.
            self.state.flush()?;
            queues.retain(|q| !q.is_empty());
            if queues.is_empty() || self.stopping() {
                return Ok(Vec::new());
            }
            if !self.batching() {
                return Ok(queues.into_iter().map(Vec::from).collect());
            }
            let jobs = self.wave(&queues)?;
            let outcomes: Vec<JobOutcome> = futures::stream::iter(jobs)
                .map(|job| self.run_job(job))
                .buffer_unordered(self.link.concurrency)
                .collect()
                .await;
            let mut stopped = None;
            let mut wait = Duration::ZERO;
            // The wave's successes, committed together (group commit).
            let mut done: Vec<(usize, Completed)> = Vec::new();
            for outcome in outcomes {
                // A job that failed (the store, say) does not cost the
                // others' recorded effects: they are committed first.
                let (attempts, job_report) = match outcome {
                    Ok(outcome) => outcome,
                    Err(e) => {
                        stopped.get_or_insert(e);
                        continue;
                    }
                };
                report.add(&job_report);
                for (i, attempt) in attempts {
                    let queue = &mut queues[i];
                    let Some(op) = queue.front_mut() else {
                        continue;
                    };
                    if let Ok((effect, kind)) = attempt {
                        let audit = self.op_event(op, kind);
                        let op = op.clone();
                        done.push((i, Completed { op, effect, audit }));
                        continue;
                    }
                    // Every item is settled, so that a stop keeps the
                    // others' recorded effects.
                    match self.settle(op, attempt, report) {
                        Ok(Settled::Done) => {
                            queue.pop_front();
                        }
                        Ok(Settled::Retry(after)) => wait = wait.max(after),
                        Ok(Settled::DeadLettered(reason)) => {
                            queue.pop_front();
                            for op in queue.drain(..) {
                                if let Err(e) = self.dead_letter_blocked(&op, &reason, report) {
                                    stopped.get_or_insert(e);
                                }
                            }
                        }
                        Err(e) => {
                            stopped.get_or_insert(e);
                        }
                    }
                }
            }
            let (queued, completed): (Vec<usize>, Vec<Completed>) = done.into_iter().unzip();
            self.state.complete_all(self.name, completed)?;
            for i in queued {
                if let Some(op) = queues[i].pop_front() {
                    self.observer
                        .operation(self.name, op.kind.name(), OperationResult::Ok);
                }
            }
            if let Some(e) = stopped {
                self.state.flush()?;
                return Err(e);
            }
            if !wait.is_zero() {
                self.pause(wait).await;
            }
        }
    }

    /// The jobs of one wave: the first operation of every queue.
    fn wave(&self, queues: &[VecDeque<Operation>]) -> Result<Vec<Job>, RunError> {
        let mut accounts = Vec::new();
        let mut enrollments = Vec::new();
        let mut jobs = Vec::new();
        for (i, queue) in queues.iter().enumerate() {
            let Some(op) = queue.front() else { continue };
            let account = self.state.account(self.name, &op.employee_id)?;
            match (&op.kind, account) {
                (OpKind::UpsertUser { employee }, account) if self.lms.batches_accounts() => {
                    // An account the link's matching bound them to; one
                    // waiting for a decision is dead-lettered on its own.
                    let lms_user_id = match (&account, self.resolution(&op.employee_id)) {
                        (Some(a), _) => Some(a.lms_user_id.clone()),
                        (None, Some(Resolution::Bind { account, .. })) => Some(account.clone()),
                        (None, Some(Resolution::Decide(_))) => {
                            jobs.push(Job::Single(i, Box::new(op.clone())));
                            continue;
                        }
                        (None, _) => None,
                    };
                    let write = AccountWrite {
                        employee: employee.clone(),
                        lms_user_id,
                        key: op.key.clone(),
                    };
                    accounts.push((i, op.clone(), write, account));
                }
                (OpKind::Enroll { course, due, .. }, Some(account))
                    if self.lms.batches_enrollments() =>
                {
                    let write = EnrollmentWrite {
                        lms_user_id: account.lms_user_id,
                        course: course.clone(),
                        due: *due,
                        key: op.key.clone(),
                    };
                    if let Some(effect) = op.kind.enrolled() {
                        enrollments.push((i, op.clone(), write, effect));
                    }
                }
                _ => jobs.push(Job::Single(i, Box::new(op.clone()))),
            }
        }
        let size = (self.lms.limits().max_batch as usize).clamp(1, MAX_BATCH);
        jobs.extend(chunks(accounts, size).into_iter().map(Job::Accounts));
        jobs.extend(chunks(enrollments, size).into_iter().map(Job::Enrollments));
        Ok(jobs)
    }

    async fn run_job(&self, job: Job) -> JobOutcome {
        let mut report = RunReport::default();
        if self.stopping() {
            // A checkpoint: the job's operations stay in the outbox.
            return Ok((Vec::new(), report));
        }
        let attempts = match job {
            Job::Single(i, op) => vec![(i, self.execute_one(&op, &mut report).await?)],
            Job::Accounts(items) => {
                let writes: Vec<AccountWrite> = items.iter().map(|item| item.2.clone()).collect();
                let answer = CallContext::link(self.name)
                    .scope(self.lms.upsert_users(&writes))
                    .await;
                match self.itemised(answer, items.len()) {
                    Some(results) => items
                        .into_iter()
                        .zip(results)
                        .map(|((i, _, _, known), result)| {
                            (i, result.map(|w| account_written(known, w, &mut report)))
                        })
                        .collect(),
                    None => {
                        let ops = items.into_iter().map(|(i, op, ..)| (i, op)).collect();
                        self.one_by_one(ops, &mut report).await?
                    }
                }
            }
            Job::Enrollments(items) => {
                let writes: Vec<EnrollmentWrite> =
                    items.iter().map(|item| item.2.clone()).collect();
                let answer = CallContext::link(self.name)
                    .scope(self.lms.enroll_all(&writes))
                    .await;
                match self.itemised(answer, items.len()) {
                    Some(results) => items
                        .into_iter()
                        .zip(results)
                        .map(|((i, _, _, effect), result)| {
                            let attempt = result.map(|()| {
                                report.enrollments += 1;
                                (effect, Kind::CourseEnrolled)
                            });
                            (i, attempt)
                        })
                        .collect(),
                    None => {
                        let ops = items.into_iter().map(|(i, op, ..)| (i, op)).collect();
                        self.one_by_one(ops, &mut report).await?
                    }
                }
            }
        };
        Ok((attempts, report))
    }

    /// A batch answer as one result per item: an error of the whole call
    /// is every item's. `None` when its items go one by one instead: the
    /// plugin does not take batches, or refused this one as a whole.
    fn itemised<T>(
        &self,
        answer: Result<ItemResults<T>, ConnectorError>,
        items: usize,
    ) -> Option<ItemResults<T>> {
        match answer {
            Ok(results) => Some(results),
            Err(ConnectorError::Unsupported(reason)) => {
                tracing::info!(link = %self.name, connector = %self.lms.name, "no batches, one operation per call: {reason}");
                None
            }
            // Refused as a whole: perhaps for one bad item the plugin did
            // not single out. Each is sent on its own, so that only a bad
            // one is dead-lettered.
            Err(ConnectorError::Rejected(reason)) if items > 1 => {
                tracing::info!(link = %self.name, connector = %self.lms.name, "a batch refused as a whole is sent one operation per call: {reason}");
                None
            }
            Err(error) => Some((0..items).map(|_| Err(error.clone())).collect()),
        }
    }

    /// Operations of a batch the plugin turned down or refused, sent one
    /// by one.
    async fn one_by_one(
        &self,
        ops: Vec<(usize, Operation)>,
        report: &mut RunReport,
    ) -> Result<Vec<(usize, Attempt)>, RunError> {
        let outcomes: Vec<Result<(usize, Attempt, RunReport), RunError>> =
            futures::stream::iter(ops)
                .map(async |(i, op)| {
                    let mut report = RunReport::default();
                    let attempt = self.execute_one(&op, &mut report).await?;
                    Ok((i, attempt, report))
                })
                .buffer_unordered(self.link.concurrency)
                .collect()
                .await;
        let mut attempts = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            let (i, attempt, one) = outcome?;
            report.add(&one);
            attempts.push((i, attempt));
        }
        Ok(attempts)
    }

    /// One attempt of one operation, in its own call context.
    async fn execute_one(
        &self,
        op: &Operation,
        report: &mut RunReport,
    ) -> Result<Attempt, RunError> {
        let context = CallContext::operation(self.name, &op.employee_id, &op.key);
        Ok(context.scope(self.execute(op, report)).await?)
    }
}

/// The effect of an account write, counted as `upsert-user`'s would be.
fn account_written(
    known: Option<Account>,
    written: AccountWritten,
    report: &mut RunReport,
) -> (Effect, Kind) {
    let (active, kind) = match known {
        Some(account) => {
            report.users_updated += 1;
            (account.active, Kind::UserUpdated)
        }
        None if written.created => {
            report.users_created += 1;
            (written.active, Kind::UserCreated)
        }
        None => {
            report.users_adopted += 1;
            (written.active, Kind::UserAdopted)
        }
    };
    let effect = Effect::Account(Account {
        lms_user_id: written.id,
        active,
    });
    (effect, kind)
}

/// `items` in batches of at most `size`.
fn chunks<T>(mut items: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    while !items.is_empty() {
        let rest = items.split_off(items.len().min(size));
        out.push(std::mem::replace(&mut items, rest));
    }
    out
}
