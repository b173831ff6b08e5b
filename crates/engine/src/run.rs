//! One sync run of a link: the shell around the planner that fetches,
//! stores and sends.
//!
//! A run is plan -> outbox -> apply:
//!
//! 1. finish what an earlier run left in the outbox (a crash, a stop);
//! 2. list employees through the HRIS plugin and plan, per employee, the
//!    operations that bring the LMS in line (`plan`), page by page, staging
//!    what would change in the store; check the whole plan against the
//!    mass-deactivation guard; commit the staged snapshots, operations and
//!    the employee cursor in sled transactions (the cursor with the last
//!    chunk);
//! 3. apply the outbox, a page of employees at a time: each employee's
//!    operations in order, employees in parallel, each success recorded
//!    with its effect in one transaction;
//! 4. list completions through the LMS plugin, let the retake policy pick
//!    winners, commit them with their `push-completion` operations and the
//!    completion cursor per page, and apply again.
//!
//! **Invariant:** every write goes out with a deterministic idempotency key
//! and is recorded as done when it succeeds; a done key is never sent again.
//!
//! **Invariant:** a cursor advances only in the transaction that puts the
//! operations its pages produced into the outbox.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use switchyard_audit::{Event, Kind};
use switchyard_model::{
    Account, ConnectorError, CourseId, Date, Effect, EmployeeId, LinkName, OpKind, Operation,
    Remedy, Snapshot, Timestamp, Winner, now_ms,
};
use switchyard_runtime::{CallContext, Connector};
use switchyard_store::{LinkStatus, Store};

use crate::ingest::{self, Ingest, decide_completions};
use crate::matching::Resolution;
use crate::paging::{CompletionPages, ListingBounds};
use crate::plan::PlannedOperation;
use crate::policy::LinkConfig;
use crate::report::{
    Interrupted, LinkHalted, LinkStopped, OperationResult, RunError, RunObserver, RunOptions,
    RunReport,
};

/// Attempts of one operation before it is given up on.
pub const MAX_ATTEMPTS: u32 = 5;
/// First backoff step; doubles per attempt, with full jitter.
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Longest wait between two attempts, whatever Retry-After says.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Employees committed per transaction, and read from the store per page.
const COMMIT_CHUNK: usize = 500;
/// Employees whose outbox is applied together (read from the store per
/// page, so that a run's memory does not grow with its outbox).
const OUTBOX_PAGE: usize = 2_000;

mod listed;
mod waves;

use listed::Listed;

/// A run's plan, staged in the store ([`LinkRun::stage_plan`]).
struct StagedPlan {
    /// The employee cursor to store with the plan's last chunk.
    final_cursor: Option<String>,
    /// Who the listing returned.
    listed: Listed,
    /// Accounts the plan suspends.
    suspends: usize,
}

/// What became of one attempt of an operation (see `LinkRun::settle`).
enum Settled {
    /// Its effect is recorded (or it was skipped as unsupported).
    Done,
    /// Try again after this wait; the store has the later attempt.
    Retry(Duration),
    /// Given up on; the reason blocks the employee's later operations.
    DeadLettered(String),
}

/// Everything one link needs to run.
pub struct LinkRun<'a> {
    /// Link name.
    pub name: &'a LinkName,
    /// Its configuration.
    pub link: &'a LinkConfig,
    /// The HRIS connector.
    pub hris: &'a Connector,
    /// The LMS connector.
    pub lms: &'a Connector,
    /// The store.
    pub state: &'a dyn Store,
    /// Today's date, for due dates and recertification.
    pub today: Date,
    /// Set when the run must stop at its next checkpoint: before the next
    /// page is fetched or the next operation is sent (one in flight
    /// finishes and is recorded).
    pub stop: &'a AtomicBool,
    /// Told the outcome of every operation attempt (metrics).
    pub observer: &'a dyn RunObserver,
    /// When the run started, for the connectors' `max_run_minutes`.
    pub started: std::time::Instant,
    /// The accounts employees without one are bound to, when the link
    /// matches (`[links.NAME.matching]`): filled before the outbox is
    /// applied, when something in it needs them.
    pub bindings: std::sync::OnceLock<crate::matching::Bindings>,
}

/// A deterministic idempotency key for an effect.
pub fn idempotency_key(parts: &[&str]) -> String {
    let digest = Sha256::digest(parts.join("\0").as_bytes());
    hex::encode(&digest[..16])
}

/// Delay before retry `attempt` (1-based): Retry-After when given, else
/// exponential backoff with full jitter.
fn backoff(attempt: u32, after: Option<u32>) -> Duration {
    match after {
        Some(seconds) => Duration::from_secs(seconds.into()),
        None => (BACKOFF_BASE * 2u32.saturating_pow(attempt.saturating_sub(1).min(16)))
            .mul_f64(fastrand::f64()),
    }
    .min(MAX_WAIT)
}

impl LinkRun<'_> {
    fn ingest(&self, retire_out_of_scope: bool) -> Ingest<'_> {
        Ingest {
            link_name: self.name,
            link: self.link,
            state: self.state,
            today: self.today,
            retire_out_of_scope,
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// A checkpoint: everything so far is durable; stop here if asked to.
    fn checkpoint(&self) -> Result<(), RunError> {
        let minutes = self
            .hris
            .limits()
            .max_run_minutes
            .min(self.lms.limits().max_run_minutes);
        if self.started.elapsed() > Duration::from_secs(minutes.saturating_mul(60)) {
            let error = ConnectorError::PluginFault(switchyard_model::PluginFault {
                kind: switchyard_model::FaultKind::RunBound,
                message: format!(
                    "the run lasted more than the limit `max_run_minutes` of {minutes}; what it committed stays, the next run goes on"
                ),
            });
            return Err(self.stopped("run", error).into());
        }
        if self.stopping() {
            return Err(Interrupted {
                link: self.name.to_owned(),
            }
            .into());
        }
        Ok(())
    }

    /// Wait before a retry, cut short by a stop request.
    async fn pause(&self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        while !self.stopping() {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            tokio::time::sleep((deadline - now).min(Duration::from_millis(100))).await;
        }
    }

    fn stopped(&self, operation: &str, error: ConnectorError) -> LinkStopped {
        LinkStopped {
            link: self.name.to_owned(),
            operation: operation.to_owned(),
            error,
        }
    }

    /// Run the link once.
    pub async fn run(&self, options: RunOptions) -> Result<RunReport, RunError> {
        let mut report = RunReport {
            link: self.name.to_owned(),
            dry_run: options.dry_run,
            ..RunReport::default()
        };
        if !options.dry_run {
            let mut resumed = RunReport::default();
            self.apply_outbox(&mut resumed).await?;
            resumed.resumed = resumed.writes() + resumed.dead_lettered;
            report.add(&resumed);
        }
        self.checkpoint()?;
        self.provision(options, &mut report).await?;
        self.checkpoint()?;
        self.completions(options, &mut report).await?;
        self.checkpoint()?;
        if !options.dry_run {
            self.state.flush()?;
            report.pending = self.state.depths(self.name)?.0;
        }
        Ok(report)
    }

    /// Apply the outbox only (after a dead-letter replay).
    pub async fn drain(&self) -> Result<RunReport, RunError> {
        let mut report = RunReport {
            link: self.name.to_owned(),
            ..RunReport::default()
        };
        self.apply_outbox(&mut report).await?;
        self.state.flush()?;
        self.checkpoint()?;
        report.pending = self.state.depths(self.name)?.0;
        Ok(report)
    }

    /// Call a read function until it succeeds or its error says not to retry.
    /// A wait between attempts (Retry-After, backoff) is cut short by a stop
    /// request, and the run is then interrupted.
    async fn read<T>(
        &self,
        operation: &str,
        retries: &mut usize,
        mut f: impl AsyncFnMut() -> Result<T, ConnectorError>,
    ) -> Result<T, RunError> {
        let mut attempt = 0;
        loop {
            let error = match CallContext::link(self.name).scope(f()).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            attempt += 1;
            match error.remedy() {
                Remedy::Retry(after) if attempt < MAX_ATTEMPTS => {
                    let wait = backoff(attempt, after);
                    tracing::info!(
                        link = %self.name,
                        operation,
                        attempt,
                        ?wait,
                        "retrying: {error}"
                    );
                    *retries += 1;
                    self.pause(wait).await;
                    self.checkpoint()?;
                }
                _ => return Err(self.stopped(operation, error).into()),
            }
        }
    }

    async fn provision(&self, options: RunOptions, report: &mut RunReport) -> Result<(), RunError> {
        let last_full = self.state.cursor(self.name, "full-listing-at")?;
        let full_due = last_full
            .and_then(|ms| ms.parse::<u64>().ok())
            .is_none_or(|ms| {
                now_ms().saturating_sub(ms) >= self.link.full_listing_every.as_millis() as u64
            });
        let resume = match options.full_listing || full_due {
            true => None,
            false => self.state.cursor(self.name, "employees")?,
        };
        report.full_listing = resume.is_none();
        // The plan is staged in the store, not held, until the guard has
        // seen all of it; whatever becomes of the run, nothing of it stays
        // staged.
        let run = fastrand::u64(..);
        let planned = match self.stage_plan(run, resume, options, report).await {
            Ok(staged) => self.commit_staged_plan(run, staged, options, report),
            Err(e) => Err(e),
        };
        let dropped = self.state.drop_staged(self.name, run);
        planned?;
        dropped?;
        if options.dry_run {
            return Ok(());
        }
        self.apply_outbox(report).await
    }

    /// List employees page by page, plan each page against the store and
    /// stage what would change, then plan the stored employees a
    /// changes-only listing did not return (for recertification and rule
    /// changes). Memory holds a page and a 17-byte entry per listed
    /// employee.
    async fn stage_plan(
        &self,
        run: u64,
        resume: Option<String>,
        options: RunOptions,
        report: &mut RunReport,
    ) -> Result<StagedPlan, RunError> {
        let ingest = self.ingest(options.retire_out_of_scope);
        // The allowlist always keeps the fields a scope matches on, so the
        // records as listed give the same answer.
        let scope = self.link.scope.as_ref();
        let mut listed = Listed::default();
        let mut suspends: usize = 0;
        let mut cursor = resume;
        let mut bounds = ListingBounds::new("fetch-employees", &self.hris.name, self.hris.limits());
        let final_cursor = loop {
            self.checkpoint()?;
            let page = self
                .read("fetch-employees", &mut report.retries, async || {
                    self.hris.fetch_employees(cursor.as_deref()).await
                })
                .await?;
            bounds
                .take(page.employees.len(), page.next_cursor.as_deref())
                .map_err(|e| self.stopped("fetch-employees", e))?;
            report.employees_fetched += page.employees.len();
            // The last record of an id wins, within a page and across
            // pages (a listing that moved while it was paged).
            let mut latest = BTreeMap::new();
            for e in page.employees {
                latest.insert(e.id.clone(), self.link.fields.apply(e));
            }
            let mut again = Vec::with_capacity(latest.len());
            for (id, employee) in &latest {
                again.push(listed.note(id, scope.is_some_and(|s| s.covers(employee))));
            }
            let planned = ingest.plan_many(latest.into_iter().collect(), |ingest, (id, e)| {
                Ok((id, ingest.plan_one(&e)?))
            })?;
            let mut staged = Vec::with_capacity(planned.len());
            for ((id, planned), again) in planned.into_iter().zip(again) {
                if again {
                    if let Some(earlier) = self.state.staged_of(self.name, run, &id)? {
                        suspends = suspends.saturating_sub(ingest::suspends([&earlier]));
                    }
                } else if planned.snapshot.is_none() && planned.operations.is_empty() {
                    continue;
                }
                suspends += ingest::suspends([&planned]);
                staged.push((id, planned));
            }
            self.state.stage(self.name, run, &staged)?;
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break page.changes_cursor,
            }
        };

        let mut unlisted_in_scope = 0;
        if !report.full_listing {
            // A changes-only listing leaves out whoever did not change; their
            // stored record still counts for what time or a new rule brings
            // (recertification, assignments added to the configuration).
            // The allowlist applies to stored records too: a field dropped
            // from `fields` since they were stored leaves the snapshot now.
            let mut after: Option<EmployeeId> = None;
            loop {
                self.checkpoint()?;
                let page = self
                    .state
                    .snapshots_after(self.name, after.as_ref(), COMMIT_CHUNK)?;
                let Some(last) = page.last() else { break };
                after = Some(last.employee.id.clone());
                let unlisted: Vec<Snapshot> = page
                    .into_iter()
                    .filter(|s| !listed.contains(&s.employee.id))
                    .collect();
                // The scope sees the record through the allowlist, as the
                // planner does; the allowlist keeps the fields it matches on.
                unlisted_in_scope += unlisted
                    .iter()
                    .filter(|s| scope.is_some_and(|scope| scope.covers(&s.employee)))
                    .count();
                let planned = ingest.plan_stored(unlisted)?;
                let mut staged = Vec::new();
                for (id, planned) in planned {
                    if planned.snapshot.is_some() || !planned.operations.is_empty() {
                        suspends += ingest::suspends([&planned]);
                        staged.push((id, planned));
                    }
                }
                self.state.stage(self.name, run, &staged)?;
            }
        }
        report.in_scope = scope.map(|_| listed.in_scope() + unlisted_in_scope);
        Ok(StagedPlan {
            final_cursor,
            listed,
            suspends,
        })
    }

    /// Check a staged plan against the mass-deactivation guard, then commit
    /// it with the employee cursor (or, in a dry run, report it), and note
    /// departures after a full listing.
    fn commit_staged_plan(
        &self,
        run: u64,
        staged: StagedPlan,
        options: RunOptions,
        report: &mut RunReport,
    ) -> Result<(), RunError> {
        let ingest = self.ingest(options.retire_out_of_scope);
        let mut status = self.state.link_status(self.name)?;
        if let Some(deactivations) = ingest.deactivations_exceeded(staged.suspends)?
            && !options.approve_deactivations
        {
            let halted = LinkHalted {
                link: self.name.to_owned(),
                planned: deactivations.planned,
                allowed: deactivations.allowed,
                limit: deactivations.limit.to_string(),
            };
            if !options.dry_run {
                status.halted = Some(halted.to_string());
                self.state.put_link_status(self.name, &status)?;
            }
            tracing::error!("{halted}");
            return Err(halted.into());
        }

        if options.dry_run {
            let mut after: Option<EmployeeId> = None;
            loop {
                let page = self
                    .state
                    .staged(self.name, run, after.as_ref(), COMMIT_CHUNK)?;
                let Some((last, _)) = page.last() else { break };
                after = Some(last.clone());
                report.plan.extend(
                    page.iter()
                        .flat_map(|(_, p)| &p.operations)
                        .map(PlannedOperation::from),
                );
            }
            return Ok(());
        }
        if status != LinkStatus::default() {
            self.state
                .put_link_status(self.name, &LinkStatus::default())?;
        }
        // The cursor goes with the last chunk: a crash before it relists
        // from the old cursor, and what was committed plans as pending.
        let cursor_update = ("employees", staged.final_cursor.as_deref());
        loop {
            let mut chunk = self.state.staged(self.name, run, None, COMMIT_CHUNK + 1)?;
            let last = chunk.len() <= COMMIT_CHUNK;
            chunk.truncate(COMMIT_CHUNK);
            self.state
                .commit_staged(self.name, run, &chunk, last.then_some(cursor_update))?;
            if last {
                break;
            }
        }
        if report.full_listing {
            let listed = &staged.listed;
            self.state
                .note_departures(self.name, &|id| listed.contains(id))?;
            self.state
                .put_cursor(self.name, "full-listing-at", &now_ms().to_string())?;
        }
        Ok(())
    }

    async fn completions(
        &self,
        options: RunOptions,
        report: &mut RunReport,
    ) -> Result<(), RunError> {
        let mut pages = CompletionPages::from(self.state.cursor(self.name, "completions")?);
        // Winners decided earlier in this run (a dry run commits nothing, so
        // later pages must see them here).
        let mut decided: BTreeMap<(EmployeeId, CourseId), Winner> = BTreeMap::new();
        let mut bounds = ListingBounds::new("fetch-completions", &self.lms.name, self.lms.limits());
        while pages.more() {
            self.checkpoint()?;
            // `fetch-completions` is optional: a learning system whose
            // plugin does not report completions provisions only.
            let fetched = self
                .read(
                    "fetch-completions",
                    &mut report.retries,
                    async || match self.lms.fetch_completions(pages.cursor()).await {
                        Err(ConnectorError::Unsupported(reason)) => Ok(Err(reason)),
                        other => other.map(Ok),
                    },
                )
                .await?;
            let page = match fetched {
                Ok(page) => page,
                Err(reason) => {
                    let note = format!(
                        "connector `{}` does not fetch completions ({reason}): nothing is written back to the HRIS",
                        self.lms.name
                    );
                    report.note(note);
                    break;
                }
            };
            // Where the next fetch would start: a page without a cursor
            // keeps the position, so `more` with none repeats it too.
            let next = page
                .more
                .then(|| page.next_cursor.as_deref().or(pages.cursor()))
                .flatten();
            bounds
                .take(page.completions.len(), next)
                .map_err(|e| self.stopped("fetch-completions", e))?;
            report.completions_fetched += page.completions.len();
            let decisions = decide_completions(
                self.name,
                self.link,
                self.state,
                page.completions,
                &mut decided,
            )?;
            report.completions_not_winning += decisions.not_winning;
            report.completions_skipped += decisions.skipped;
            let (seen, winners) = (decisions.seen, decisions.winners);
            if options.dry_run {
                report
                    .plan
                    .extend(winners.iter().map(|(_, op)| PlannedOperation::from(op)));
            } else {
                self.state.commit_completions(
                    self.name,
                    &seen,
                    &winners,
                    page.next_cursor.as_deref(),
                )?;
                // Committed: later pages read these winners from the store.
                decided.clear();
            }
            pages.advance(page.next_cursor, page.more);
        }
        if !options.dry_run {
            self.apply_outbox(report).await?;
        }
        Ok(())
    }

    /// Apply everything in the outbox: employees in parallel, each
    /// employee's operations in order, [`OUTBOX_PAGE`] employees at a time.
    async fn apply_outbox(&self, report: &mut RunReport) -> Result<(), RunError> {
        let mut after: Option<EmployeeId> = None;
        loop {
            let mut groups = self
                .state
                .outbox_after(self.name, after.as_ref(), OUTBOX_PAGE)?;
            let Some(last) = groups.last().and_then(|g| g.first()) else {
                return Ok(());
            };
            after = Some(last.employee_id.clone());
            self.bind_existing_accounts(&groups).await?;
            if self.batching() {
                groups = self.apply_in_waves(groups, report).await?;
            }
            let outcomes: Vec<RunReport> = futures::stream::iter(groups)
                .map(|group| self.apply_group(group))
                .buffer_unordered(self.link.concurrency)
                .try_collect()
                .await?;
            for outcome in &outcomes {
                report.add(outcome);
            }
            if self.stopping() {
                // What was not sent stays in the outbox for the next run.
                return Ok(());
            }
        }
    }

    /// For a link that matches: when the outbox writes an account for an
    /// employee the host has none for, list the LMS's accounts once and
    /// bind as `switchyard match` reports.
    async fn bind_existing_accounts(&self, groups: &[Vec<Operation>]) -> Result<(), RunError> {
        let Some(matching) = &self.link.matching else {
            return Ok(());
        };
        if self.bindings.get().is_some() {
            return Ok(());
        }
        let mut needed = false;
        for op in groups.iter().flatten() {
            if matches!(op.kind, OpKind::UpsertUser { .. })
                && self.state.account(self.name, &op.employee_id)?.is_none()
            {
                needed = true;
                break;
            }
        }
        if !needed {
            return Ok(());
        }
        let bindings =
            crate::matching::bindings(self.name, self.link, matching, self.lms, self.state)
                .await
                .map_err(|e| match e {
                    crate::matching::MatchError::Listing {
                        operation,
                        error: ConnectorError::Unsupported(why),
                        ..
                    } => RunError::from(self.stopped(
                        operation,
                        ConnectorError::InvalidConfig(format!(
                            "the link matches accounts ([links.{}.matching]) but connector `{}` cannot list them: {why}",
                            self.name, self.lms.name
                        )),
                    )),
                    crate::matching::MatchError::Listing {
                        operation, error, ..
                    } => self.stopped(operation, error).into(),
                    crate::matching::MatchError::Store(e) => e.into(),
                })?;
        let _ = self.bindings.set(bindings);
        Ok(())
    }

    /// What the link's matching decided for an employee without an
    /// account (`None`: the link does not match, or did not cover them).
    fn resolution(&self, employee: &EmployeeId) -> Option<&crate::matching::Resolution> {
        self.bindings.get().and_then(|b| b.of(employee))
    }

    async fn apply_group(&self, group: Vec<Operation>) -> Result<RunReport, RunError> {
        let mut report = RunReport::default();
        let mut blocked: Option<String> = None;
        // Whether an effect of this employee was recorded and not yet
        // flushed. The next operation depends on it (an enrollment on the
        // account, a completion on the one it supersedes): its record is
        // made durable before that operation is sent, so a crash can never
        // replay an earlier effect after a later one was applied. The last
        // effect of a group needs no flush of its own: replaying it is
        // replaying the same idempotent write, and the run flushes at its end.
        let mut unflushed = false;
        for mut op in group {
            if std::mem::take(&mut unflushed) {
                self.state.flush()?;
            }
            if let Some(reason) = &blocked {
                self.dead_letter_blocked(&op, reason, &mut report)?;
                continue;
            }
            if self.stopping() {
                // A checkpoint: this operation and the rest of the
                // employee's stay in the outbox, in order.
                return Ok(report);
            }
            loop {
                let context = CallContext::operation(self.name, &op.employee_id, &op.key);
                let result = context.scope(self.execute(&op, &mut report)).await?;
                match self.settle(&mut op, result, &mut report)? {
                    Settled::Done => {
                        unflushed = true;
                        break;
                    }
                    Settled::Retry(wait) => {
                        self.pause(wait).await;
                        if self.stopping() {
                            // Rescheduled by `settle`; the next run retries it.
                            return Ok(report);
                        }
                    }
                    Settled::DeadLettered(reason) => {
                        blocked = Some(reason);
                        break;
                    }
                }
            }
        }
        Ok(report)
    }

    /// Dead-letter an operation whose employee's earlier operation was given
    /// up on: it depends on it, and keeps its order in the DLQ.
    fn dead_letter_blocked(
        &self,
        op: &Operation,
        reason: &str,
        report: &mut RunReport,
    ) -> Result<(), RunError> {
        let reason = format!("blocked: {reason}");
        let event = self
            .op_event(op, Kind::OperationDeadLettered)
            .personal(serde_json::json!({ "reason": reason }));
        self.state
            .dead_letter(self.name, op, &reason, Timestamp::now(), event)?;
        self.observer
            .operation(self.name, op.kind.name(), OperationResult::DeadLetter);
        report.dead_lettered += 1;
        Ok(())
    }

    /// Record the outcome of one attempt of `op`: its effect when it
    /// succeeded, a later attempt when it may be retried (rescheduled in
    /// the store), a dead letter when it is given up on; a stopped link
    /// when the error says to stop (the operation stays in the outbox).
    fn settle(
        &self,
        op: &mut Operation,
        result: Result<(Effect, Kind), ConnectorError>,
        report: &mut RunReport,
    ) -> Result<Settled, RunError> {
        let error = match result {
            Ok((effect, outcome)) => {
                self.state
                    .complete(self.name, op, &effect, self.op_event(op, outcome))?;
                self.observer
                    .operation(self.name, op.kind.name(), OperationResult::Ok);
                return Ok(Settled::Done);
            }
            // An optional operation the plugin does not support is
            // skipped, not a stopped link: recorded as done (it is not
            // planned again) with its reason.
            Err(ConnectorError::Unsupported(reason)) if op.kind.is_optional() => {
                let event = self
                    .op_event(op, Kind::OperationSkipped)
                    .personal(serde_json::json!({ "reason": reason }));
                self.state.complete(self.name, op, &Effect::None, event)?;
                self.observer
                    .operation(self.name, op.kind.name(), OperationResult::Ok);
                let connector = match op.kind {
                    OpKind::PushCompletion { .. } => &self.hris.name,
                    _ => &self.lms.name,
                };
                report.note(format!(
                    "{} skipped: connector `{connector}` does not support it ({reason})",
                    op.kind.name()
                ));
                return Ok(Settled::Done);
            }
            Err(error) => error,
        };
        op.attempts += 1;
        op.last_error = Some(error.to_string());
        match error.remedy() {
            Remedy::Retry(after) if op.attempts < MAX_ATTEMPTS => {
                let wait = backoff(op.attempts, after);
                op.next_attempt_at = now_ms() + wait.as_millis() as u64;
                self.state.reschedule(self.name, op)?;
                self.observer
                    .operation(self.name, op.kind.name(), OperationResult::Retry);
                tracing::info!(link = %self.name, operation = op.kind.name(), employee = %op.employee_id, attempt = op.attempts, ?wait, "retrying: {error}");
                report.retries += 1;
                Ok(Settled::Retry(wait))
            }
            Remedy::Retry(_) | Remedy::DeadLetter => {
                let reason = if error.remedy() == Remedy::DeadLetter {
                    error.to_string()
                } else {
                    format!("gave up after {} attempts: {error}", op.attempts)
                };
                let event = self
                    .op_event(op, Kind::OperationDeadLettered)
                    .personal(serde_json::json!({ "reason": reason }));
                let id = self
                    .state
                    .dead_letter(self.name, op, &reason, Timestamp::now(), event)?;
                self.observer
                    .operation(self.name, op.kind.name(), OperationResult::DeadLetter);
                tracing::warn!(link = %self.name, operation = op.kind.name(), employee = %op.employee_id, dead_letter = id, "dead-lettered: {reason}");
                report.dead_lettered += 1;
                Ok(Settled::DeadLettered(format!(
                    "{} (dead letter {id}) failed",
                    op.kind.name()
                )))
            }
            Remedy::Stop => {
                self.state.reschedule(self.name, op)?;
                self.observer
                    .operation(self.name, op.kind.name(), OperationResult::Stopped);
                Err(self.stopped(op.kind.name(), error).into())
            }
        }
    }

    /// The audit record of an operation's outcome: what, about whom, why,
    /// and the key that ties it to the outbox. Names, emails and completion
    /// details are personal (erasable); course, rule and key are not.
    fn op_event(&self, op: &Operation, kind: Kind) -> Event {
        let event = Event::new(kind)
            .link(self.name)
            .employee(&op.employee_id)
            .key(&op.key)
            .cause(&op.cause);
        let event = match &op.kind {
            OpKind::PushCompletion { .. } => event.connector(&self.link.hris),
            _ => event.connector(&self.link.lms),
        };
        let detail = |mut d: serde_json::Value| {
            d["operation"] = op.kind.name().into();
            d["attempts"] = (op.attempts + 1).into();
            d
        };
        match &op.kind {
            OpKind::UpsertUser { employee } => event
                .detail(detail(match self.resolution(&op.employee_id) {
                    Some(Resolution::Bind { by, .. }) if kind == Kind::UserAdopted => {
                        serde_json::json!({ "bound_by": by.name() })
                    }
                    _ => serde_json::json!({}),
                }))
                .personal(serde_json::json!({
                    "email": employee.email,
                    "given_name": employee.given_name,
                    "family_name": employee.family_name,
                })),
            OpKind::SetActive { active } => {
                event.detail(detail(serde_json::json!({ "active": active })))
            }
            OpKind::Enroll {
                course,
                due,
                cycle,
                rule,
                ..
            } => event.course(course).detail(detail(
                serde_json::json!({ "due": due, "cycle": cycle, "rule": rule }),
            )),
            OpKind::Unenroll { course } => {
                event.course(course).detail(detail(serde_json::json!({})))
            }
            OpKind::PushCompletion {
                completion: c,
                supersedes,
            } => event
                .course(&c.course_id)
                .detail(detail(
                    serde_json::json!({ "attempt": c.attempt_id, "supersedes": supersedes }),
                ))
                .personal(serde_json::json!({
                    "status": c.status,
                    "completed_at": c.completed_at,
                    "score": c.score,
                    "expires_at": c.expires_at,
                })),
        }
    }

    /// Call the plugin for one operation; `Ok(Err)` is the plugin's error.
    /// On success: the effect and the audit kind of the outcome.
    /// The first `upsert-user` of an employee the host has no account for.
    /// An account the LMS already holds for them (made by hand, by an
    /// import, or by a create sent just before a crash whose answer was
    /// lost) is adopted and brought in line, never created twice: looked
    /// up before the create, and again when the create is refused (it may
    /// have been made meanwhile).
    async fn create_or_adopt(
        &self,
        employee: &switchyard_model::Employee,
        key: &str,
        report: &mut RunReport,
    ) -> Result<(Effect, Kind), ConnectorError> {
        let find = async || match self.lms.find_user(&employee.id).await {
            // A plugin without `find-user` cannot adopt; it creates.
            Err(ConnectorError::Unsupported(_)) => Ok(None),
            other => other,
        };
        let existing = match find().await? {
            Some(user) => user,
            None => match self.lms.upsert_user(employee, None, key).await {
                Ok(lms_user_id) => {
                    report.users_created += 1;
                    let effect = Effect::Account(Account {
                        lms_user_id: lms_user_id.into(),
                        active: true,
                    });
                    return Ok((effect, Kind::UserCreated));
                }
                Err(ConnectorError::Rejected(reason)) => match find().await? {
                    Some(user) => user,
                    None => return Err(ConnectorError::Rejected(reason)),
                },
                Err(e) => return Err(e),
            },
        };
        let lms_user_id = self
            .lms
            .upsert_user(employee, Some(&existing.id), key)
            .await?;
        report.users_adopted += 1;
        tracing::info!(link = %self.name, employee = %employee.id, lms_user = %existing.id, "adopted an existing LMS account");
        let effect = Effect::Account(Account {
            lms_user_id: lms_user_id.into(),
            active: existing.active,
        });
        Ok((effect, Kind::UserAdopted))
    }

    async fn execute(
        &self,
        op: &Operation,
        report: &mut RunReport,
    ) -> anyhow::Result<Result<(Effect, Kind), ConnectorError>> {
        let account = self.state.account(self.name, &op.employee_id)?;
        let needs_account = || {
            ConnectorError::Rejected(format!(
                "employee {} has no LMS account (upsert-user has not succeeded)",
                op.employee_id
            ))
        };
        let key = op.key.as_str();
        Ok(match &op.kind {
            OpKind::UpsertUser { employee } => match account {
                Some(account) => self
                    .lms
                    .upsert_user(employee, Some(&account.lms_user_id), key)
                    .await
                    .map(|lms_user_id| {
                        report.users_updated += 1;
                        let effect = Effect::Account(Account {
                            lms_user_id: lms_user_id.into(),
                            active: account.active,
                        });
                        (effect, Kind::UserUpdated)
                    }),
                None => match self.resolution(&op.employee_id) {
                    Some(Resolution::Bind {
                        account, active, ..
                    }) => self
                        .lms
                        .upsert_user(employee, Some(account), key)
                        .await
                        .map(|lms_user_id| {
                            report.users_adopted += 1;
                            let effect = Effect::Account(Account {
                                lms_user_id: lms_user_id.into(),
                                active: *active,
                            });
                            (effect, Kind::UserAdopted)
                        }),
                    Some(Resolution::Decide(problems)) => Err(ConnectorError::Rejected(format!(
                        "the account match needs a decision: {problems} (see `switchyard match {}`)",
                        self.name
                    ))),
                    Some(Resolution::New) | None => {
                        self.create_or_adopt(employee, key, report).await
                    }
                },
            },
            OpKind::SetActive { active } => match account {
                None => Err(needs_account()),
                Some(account) => self
                    .lms
                    .set_active(&account.lms_user_id, *active, key)
                    .await
                    .map(|()| {
                        let outcome = if *active {
                            report.users_reactivated += 1;
                            Kind::UserReactivated
                        } else {
                            report.users_suspended += 1;
                            Kind::UserSuspended
                        };
                        let effect = Effect::Account(Account {
                            active: *active,
                            ..account
                        });
                        (effect, outcome)
                    }),
            },
            OpKind::Enroll { course, due, .. } => match (account, op.kind.enrolled()) {
                (Some(account), Some(effect)) => self
                    .lms
                    .enroll(
                        &account.lms_user_id,
                        course,
                        due.map(|d| d.to_string()).as_deref(),
                        key,
                    )
                    .await
                    .map(|()| {
                        report.enrollments += 1;
                        (effect, Kind::CourseEnrolled)
                    }),
                _ => Err(needs_account()),
            },
            OpKind::Unenroll { course } => match account {
                None => Err(needs_account()),
                Some(account) => self
                    .lms
                    .unenroll(&account.lms_user_id, course, key)
                    .await
                    .map(|()| {
                        report.unenrollments += 1;
                        (
                            Effect::Unenrolled {
                                course: course.clone(),
                            },
                            Kind::CourseUnenrolled,
                        )
                    }),
            },
            OpKind::PushCompletion {
                completion,
                supersedes,
            } => self
                .hris
                .push_completion(completion, key, supersedes.as_deref())
                .await
                .map(|()| {
                    report.completions_written += 1;
                    (Effect::None, Kind::CompletionWritten)
                }),
        })
    }
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
    fn backoff_honours_retry_after_and_caps() {
        assert_eq!(backoff(1, Some(3)), Duration::from_secs(3));
        assert_eq!(backoff(1, Some(3600)), MAX_WAIT);
        for attempt in 1..10 {
            assert!(backoff(attempt, None) <= BACKOFF_BASE * 2u32.pow(attempt - 1));
        }
    }
}
