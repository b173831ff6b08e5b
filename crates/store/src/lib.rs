//! Switchyard's state: what the host knows about each link, the outbox of
//! planned writes, dead letters, connector health, webhook deliveries, and
//! the audit log, behind one trait, [`Store`]. [`SledStore`] is the
//! embedded default (one directory, one process); other implementations
//! (PostgreSQL, for replicas) implement the same trait.
//!
//! **Invariant:** only this crate writes sync state or the audit log to
//! disk. Nothing here holds a secret.
//!
//! **Invariant:** writes that belong together are one transaction: a plan's
//! snapshots, operations and cursor; an operation's removal from the outbox,
//! its `done` record, its effect and its audit record; a dead letter and its
//! audit record; a webhook delivery's replay marker and its work.
//!
//! # Layout
//!
//! - this file: [`Store`] and [`AuditStore`], and the records they return;
//! - `sled_store.rs`: [`SledStore`], the sled implementation;
//! - `audit_log.rs`: [`AuditLog`], the audit log in sled.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use switchyard_audit::{Entry, Event, Filter, Head, Pruned, Verification};
use switchyard_model::{
    Account, Completion, ConnectorName, CourseId, DeadLetter, Effect, EmployeeId, Enrollment,
    LinkName, Operation, PlannedEmployee, Snapshot, Timestamp, Winner,
};

pub use audit_log::{AuditLog, Writer};
pub use sled_store::{CACHE_BYTES, SledStore, storage_full};
pub use switchyard_model::now_ms;

mod audit_log;
mod sled_store;

/// Per-link status kept across runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkStatus {
    /// Set when a run halted and an operator must act; the reason.
    pub halted: Option<String>,
}

/// How a connector's plugin has been doing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectorHealth {
    /// Plugin name.
    pub plugin: String,
    /// sha256 of the plugin file the counts are about.
    pub sha256: String,
    /// Calls that failed with a plugin fault, in a row.
    pub faults_in_a_row: u32,
    /// Set when the connector is quarantined.
    pub quarantine: Option<Quarantine>,
}

/// What the approved version of a plugin needs: a new file that needs more
/// is held until an operator approves it (see `switchyard::review`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginApproval {
    /// sha256 of the file approved.
    pub sha256: String,
    /// Its world (`hris-connector`, `lms-connector`).
    pub world: String,
    /// The contract version it was built against.
    pub contract_version: String,
    /// What it imports (interface names).
    pub imports: Vec<String>,
    /// The key that signed it, if it was signed (`ed25519:<base64>`).
    pub signer: Option<String>,
    /// When.
    pub at: Timestamp,
    /// Who: `first use`, or the operator who approved it.
    pub by: String,
}

/// Why and since when a connector is quarantined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quarantine {
    /// The last fault's message.
    pub reason: String,
    /// Faults in a row that triggered it.
    pub faults: u32,
    /// RFC 3339 time.
    pub at: Timestamp,
}

/// What the store holds of one employee of a link beside their snapshot
/// (see [`Store::ledgers`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ledger {
    /// Their LMS account.
    pub account: Option<Account>,
    /// The host's enrollments, by course.
    pub enrollments: Vec<(CourseId, Enrollment)>,
    /// Withdrawals, by course.
    pub withdrawals: Vec<(CourseId, u32)>,
    /// Operations waiting in the outbox, in order.
    pub pending: Vec<Operation>,
    /// Winning completions, by course.
    pub winners: Vec<(CourseId, Winner)>,
}

/// Counts of what a link's state holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LinkCounts {
    /// Employees in the snapshot.
    pub employees: usize,
    /// LMS accounts, active or not.
    pub accounts: usize,
    /// Enrollments made.
    pub enrollments: usize,
    /// Completions written (winners).
    pub completions: usize,
    /// Operations waiting in the outbox.
    pub outbox: usize,
    /// Dead letters.
    pub dead_letters: usize,
}

/// What `forget` removed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Forgotten {
    /// Snapshots whose personal fields were erased.
    pub snapshots: usize,
    /// Dead letters scrubbed.
    pub dead_letters: usize,
    /// Outbox operations scrubbed.
    pub outbox: usize,
    /// Audit payloads erased.
    pub audit_payloads: u64,
}

/// What one webhook delivery adds to one link.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WebhookBatch {
    /// The link.
    pub link: LinkName,
    /// Completion attempts considered (see the engine's `decide_completions`).
    pub seen: Vec<Completion>,
    /// Winning completions and their `push-completion` operations.
    pub winners: Vec<(Winner, Operation)>,
    /// Employees planned from `employee-changed` events.
    pub planned: Vec<PlannedEmployee>,
}

/// An operation that succeeded, its effect and its audit record: one item
/// of [`Store::complete_all`].
#[derive(Debug, Clone)]
pub struct Completed {
    /// The operation, as it waits in the outbox.
    pub op: Operation,
    /// What it changed.
    pub effect: Effect,
    /// Its audit record.
    pub audit: Event,
}

/// The outcome of committing a webhook delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryCommit {
    /// First time: the marker and the events' effects were written.
    Recorded {
        /// Operations put into the outbox (not counting ones already
        /// pending or done).
        queued: usize,
    },
    /// The delivery id was recorded before: nothing was written.
    Replay,
}

/// Everything the host keeps, behind one interface. Methods may block (sled
/// and database I/O); they are called from async code on the multi-threaded
/// runtime, as sled always was.
pub trait Store: Send + Sync {
    /// The audit log.
    fn audit(&self) -> &dyn AuditStore;

    // ---- reads ----

    /// The last snapshot of an employee.
    fn snapshot(&self, link: &LinkName, employee: &EmployeeId) -> anyhow::Result<Option<Snapshot>>;

    /// Every snapshot of a link.
    fn snapshots(&self, link: &LinkName) -> anyhow::Result<Vec<Snapshot>>;

    /// At most `limit` snapshots of a link in employee order, starting
    /// after employee `after` (from the first when `None`): a run pages
    /// through the workforce without holding it.
    fn snapshots_after(
        &self,
        link: &LinkName,
        after: Option<&EmployeeId>,
        limit: usize,
    ) -> anyhow::Result<Vec<Snapshot>>;

    /// The ledgers of every employee of a link from `first` to `last`
    /// (inclusive, in key order) that has any: what planning a page of
    /// stored employees reads, in one pass over each tree instead of one
    /// lookup per employee and tree.
    fn ledgers(
        &self,
        link: &LinkName,
        first: &EmployeeId,
        last: &EmployeeId,
    ) -> anyhow::Result<BTreeMap<EmployeeId, Ledger>>;

    /// The LMS account of an employee.
    fn account(&self, link: &LinkName, employee: &EmployeeId) -> anyhow::Result<Option<Account>>;

    /// The accounts of a link, by HRIS id.
    fn accounts(&self, link: &LinkName) -> anyhow::Result<Vec<(EmployeeId, Account)>>;

    /// How many of a link's accounts are active (the mass-deactivation
    /// guard's base).
    fn active_accounts(&self, link: &LinkName) -> anyhow::Result<usize>;

    /// The host's enrollment of an employee in a course.
    fn enrollment(
        &self,
        link: &LinkName,
        employee: &EmployeeId,
        course: &CourseId,
    ) -> anyhow::Result<Option<Enrollment>>;

    /// The courses the host enrolled an employee in.
    fn enrollments_of(
        &self,
        link: &LinkName,
        employee: &EmployeeId,
    ) -> anyhow::Result<Vec<(CourseId, Enrollment)>>;

    /// How many times the host withdrew an employee from each course
    /// (courses never withdrawn are absent). Enrollment and withdrawal keys
    /// include it, so that a course withdrawn and assigned again is a new
    /// operation, not one already done.
    fn withdrawals_of(
        &self,
        link: &LinkName,
        employee: &EmployeeId,
    ) -> anyhow::Result<Vec<(CourseId, u32)>>;

    /// Whether an operation with this key succeeded before.
    fn is_done(&self, link: &LinkName, idempotency_key: &str) -> anyhow::Result<bool>;

    /// Whether an operation with this key waits in the outbox.
    fn is_pending(&self, link: &LinkName, idempotency_key: &str) -> anyhow::Result<bool>;

    /// Whether an operation with this key was given up on (and not replayed).
    fn is_dead(&self, link: &LinkName, idempotency_key: &str) -> anyhow::Result<bool>;

    /// The operations waiting for one employee, in order.
    fn pending_for(&self, link: &LinkName, employee: &EmployeeId)
    -> anyhow::Result<Vec<Operation>>;

    /// Every operation waiting in a link's outbox, grouped by employee, each
    /// group in order.
    fn outbox(&self, link: &LinkName) -> anyhow::Result<Vec<Vec<Operation>>> {
        self.outbox_after(link, None, usize::MAX)
    }

    /// The operations waiting for at most `employees` employees of a link,
    /// in employee order after `after`, grouped by employee, each group
    /// whole and in order.
    fn outbox_after(
        &self,
        link: &LinkName,
        after: Option<&EmployeeId>,
        employees: usize,
    ) -> anyhow::Result<Vec<Vec<Operation>>>;

    /// The plan a run `run` staged for an employee ([`Store::stage`]).
    fn staged_of(
        &self,
        link: &LinkName,
        run: u64,
        employee: &EmployeeId,
    ) -> anyhow::Result<Option<PlannedEmployee>>;

    /// At most `limit` plans a run staged, in employee order after `after`.
    fn staged(
        &self,
        link: &LinkName,
        run: u64,
        after: Option<&EmployeeId>,
        limit: usize,
    ) -> anyhow::Result<Vec<(EmployeeId, PlannedEmployee)>>;

    /// Whether this attempt was considered before.
    fn is_seen(&self, link: &LinkName, c: &Completion) -> anyhow::Result<bool>;

    /// The winning completion of (employee, course).
    fn winner(
        &self,
        link: &LinkName,
        employee: &EmployeeId,
        course: &CourseId,
    ) -> anyhow::Result<Option<Winner>>;

    /// The winning completions of one employee, by course.
    fn winners_of(
        &self,
        link: &LinkName,
        employee: &EmployeeId,
    ) -> anyhow::Result<Vec<(CourseId, Winner)>>;

    /// A cursor (`employees` or `completions`) of a link.
    fn cursor(&self, link: &LinkName, name: &str) -> anyhow::Result<Option<String>>;

    /// Set a cursor outside a plan (bookkeeping such as the time of the last
    /// full listing).
    fn put_cursor(&self, link: &LinkName, name: &str, value: &str) -> anyhow::Result<()>;

    /// One dead letter.
    fn dead_letter_by_id(&self, link: &LinkName, id: u64) -> anyhow::Result<Option<DeadLetter>>;

    /// Dead letters of a link, oldest first.
    fn dead_letters(&self, link: &LinkName) -> anyhow::Result<Vec<DeadLetter>>;

    /// Status of a link.
    fn link_status(&self, link: &LinkName) -> anyhow::Result<LinkStatus>;

    /// A connector's health record.
    fn connector_health(
        &self,
        connector: &ConnectorName,
    ) -> anyhow::Result<Option<ConnectorHealth>>;

    /// Record a connector's health.
    fn put_connector_health(
        &self,
        connector: &ConnectorName,
        health: &ConnectorHealth,
    ) -> anyhow::Result<()>;

    /// Lift a connector's quarantine and reset its fault count. Returns the
    /// quarantine that was lifted, if there was one.
    fn resume_connector(&self, connector: &ConnectorName) -> anyhow::Result<Option<Quarantine>>;

    /// Quarantined connectors, by name.
    fn quarantined(&self) -> anyhow::Result<Vec<(ConnectorName, ConnectorHealth)>>;

    /// What the approved version of a plugin needs, if one was approved.
    fn plugin_approval(&self, plugin: &str) -> anyhow::Result<Option<PluginApproval>>;

    /// Record the approved version of a plugin (flushed before it returns).
    fn put_plugin_approval(&self, plugin: &str, approval: &PluginApproval) -> anyhow::Result<()>;

    /// What the state holds for a link (a scan of everything it holds:
    /// for `status`, not for every run).
    fn counts(&self, link: &LinkName) -> anyhow::Result<LinkCounts>;

    /// The work waiting for a link: (operations in the outbox, dead
    /// letters). Reads those two queues only.
    fn depths(&self, link: &LinkName) -> anyhow::Result<(usize, usize)>;

    // ---- writes ----

    /// Set a link's status.
    fn put_link_status(&self, link: &LinkName, status: &LinkStatus) -> anyhow::Result<()>;

    /// Commit a plan: new snapshots, operations into the outbox (skipping
    /// keys already pending) and, if given, a cursor, all in one transaction.
    /// `cursor`: `Some((name, Some(value)))` sets it, `Some((name, None))` removes it.
    fn commit_plan(
        &self,
        link: &LinkName,
        planned: &[PlannedEmployee],
        cursor: Option<(&str, Option<&str>)>,
    ) -> anyhow::Result<()>;

    /// Stage plans of run `run` (an id the run chose): scratch space for a
    /// plan too large to hold in memory until the mass-deactivation guard
    /// has seen all of it. A plan staged again for an employee replaces
    /// the earlier one. Nothing staged is work: [`Store::commit_staged`]
    /// makes it so. Staged plans do not outlive the process (they are
    /// dropped when the store is opened).
    fn stage(
        &self,
        link: &LinkName,
        run: u64,
        planned: &[(EmployeeId, PlannedEmployee)],
    ) -> anyhow::Result<()>;

    /// Commit staged plans as [`Store::commit_plan`] does, and unstage
    /// them, in one transaction.
    fn commit_staged(
        &self,
        link: &LinkName,
        run: u64,
        planned: &[(EmployeeId, PlannedEmployee)],
        cursor: Option<(&str, Option<&str>)>,
    ) -> anyhow::Result<()>;

    /// Drop whatever run `run` staged (a halted run, a dry run, a failure).
    fn drop_staged(&self, link: &LinkName, run: u64) -> anyhow::Result<()>;

    /// Commit a page of completions: attempts seen, new winners, their
    /// push operations, and the cursor, in one transaction.
    fn commit_completions(
        &self,
        link: &LinkName,
        seen: &[Completion],
        winners: &[(Winner, Operation)],
        cursor: Option<&str>,
    ) -> anyhow::Result<()>;

    /// An operation succeeded: remove it from the outbox, record it done,
    /// record its effect and append its audit record, in one transaction.
    fn complete(
        &self,
        link: &LinkName,
        op: &Operation,
        effect: &Effect,
        audit: Event,
    ) -> anyhow::Result<()> {
        self.complete_all(
            link,
            vec![Completed {
                op: op.clone(),
                effect: effect.clone(),
                audit,
            }],
        )
    }

    /// Operations succeeded (a wave's, each of a different employee):
    /// [`Store::complete`] for each, all in one transaction, their audit
    /// records chained in order and written together (group commit).
    fn complete_all(&self, link: &LinkName, done: Vec<Completed>) -> anyhow::Result<()>;

    /// An attempt failed and will be retried: record the attempt.
    fn reschedule(&self, link: &LinkName, op: &Operation) -> anyhow::Result<()>;

    /// Give up on an operation: move it from the outbox to the dead letters
    /// and append the audit record (`audit` gets the dead letter's id as
    /// `dead_letter` in its details), in one transaction.
    fn dead_letter(
        &self,
        link: &LinkName,
        op: &Operation,
        reason: &str,
        at: Timestamp,
        audit: Event,
    ) -> anyhow::Result<u64>;

    /// Move a dead letter back into the outbox, attempts reset.
    fn replay_dead_letter(&self, link: &LinkName, id: u64) -> anyhow::Result<Operation>;

    /// Delete a dead letter.
    fn drop_dead_letter(&self, link: &LinkName, id: u64) -> anyhow::Result<DeadLetter>;

    /// After a full employee listing: note who has a snapshot but was not
    /// listed (and since when), and clear the note of whoever was.
    fn note_departures(
        &self,
        link: &LinkName,
        listed: &dyn Fn(&EmployeeId) -> bool,
    ) -> anyhow::Result<()>;

    /// Delete the snapshots of employees absent from full listings since
    /// before `cutoff_ms`. Accounts and enrollments stay (a rehire
    /// reactivates the same account). Returns the employee ids.
    fn prune_departed(&self, link: &LinkName, cutoff_ms: u64) -> anyhow::Result<Vec<EmployeeId>>;

    /// The last revision of an employee's snapshot that retention deleted.
    fn retired_rev(&self, link: &LinkName, employee: &EmployeeId) -> anyhow::Result<Option<u64>>;

    /// Delete dead letters given up on before `cutoff` (RFC 3339). Returns
    /// how many.
    fn prune_dead_letters(&self, link: &LinkName, cutoff: Timestamp) -> anyhow::Result<usize>;

    /// Whether a webhook delivery of `connector` with this id was processed.
    fn is_webhook_delivered(&self, connector: &ConnectorName, id: &str) -> anyhow::Result<bool>;

    /// Record a webhook delivery and what its events add to each link, in
    /// one transaction: the replay marker, attempts seen, winners, their
    /// operations, employee snapshots and theirs. A delivery id recorded
    /// before writes nothing (`Replay`), also when two copies race. An
    /// attempt that a poll recorded as seen in the meantime is left out, and
    /// so is an operation already done, so it is never written twice.
    /// `accepted` makes the delivery's audit record from the number of
    /// operations queued; it is written in the same transaction, so the
    /// work, the marker and the record become durable together.
    fn commit_webhook(
        &self,
        connector: &ConnectorName,
        delivery_id: &str,
        batches: &[WebhookBatch],
        accepted: &dyn Fn(usize) -> Event,
    ) -> anyhow::Result<DeliveryCommit>;

    /// Forget webhook delivery ids recorded before `before_ms` (Unix ms).
    /// Returns how many were removed.
    fn prune_webhook_deliveries(&self, before_ms: u64) -> anyhow::Result<usize>;

    /// Subject erasure: remove an employee's personal fields from every
    /// link's snapshot, dead letters and outbox (free text scrubbed of the
    /// values removed), and their audit payloads.
    /// The erasure itself is recorded (`subject.erased`, naming `actor`).
    fn forget(&self, employee: &EmployeeId, actor: &str) -> anyhow::Result<Forgotten>;

    /// When the last scheduled or triggered run of a link finished (Unix ms).
    fn last_run(&self, link: &LinkName) -> anyhow::Result<Option<u64>>;

    /// Record that a run of a link finished at `at_ms`.
    fn put_last_run(&self, link: &LinkName, at_ms: u64) -> anyhow::Result<()>;

    /// Make everything written so far durable.
    fn flush(&self) -> anyhow::Result<()>;
}

/// The audit log: sealed records, appended in order, read back, verified,
/// pruned by retention and erased by subject. Records that belong to a
/// state change are written by [`Store`]'s methods in the same transaction.
pub trait AuditStore: Send + Sync {
    /// Append one record on its own.
    fn append(&self, event: Event) -> anyhow::Result<()>;
    /// Append records on their own (not tied to a state change), in one
    /// transaction.
    fn append_all(&self, events: Vec<Event>) -> anyhow::Result<()>;
    /// The last record's position.
    fn head(&self) -> Head;
    /// Where verification starts: the last pruned record, or genesis.
    fn anchor(&self) -> anyhow::Result<Head>;
    /// A value remembered by the audit log (e.g. the last configuration
    /// hash seen), to record changes only once.
    fn remembered(&self, name: &str) -> anyhow::Result<Option<String>>;
    /// Remember a value (see [`AuditStore::remembered`]).
    fn remember(&self, name: &str, value: &str) -> anyhow::Result<()>;
    /// Call `f` with each record matching `filter`, oldest first, without
    /// holding them all in memory (exports). Returns how many matched.
    fn scan(
        &self,
        filter: &Filter,
        f: &mut dyn FnMut(Entry) -> anyhow::Result<()>,
    ) -> anyhow::Result<usize>;
    /// Records matching `filter`, oldest first; with `last`, only the last
    /// that many.
    fn read(&self, filter: &Filter, last: Option<usize>) -> anyhow::Result<Vec<Entry>> {
        let mut out = std::collections::VecDeque::new();
        self.scan(filter, &mut |entry| {
            out.push_back(entry);
            if last.is_some_and(|n| out.len() > n) {
                out.pop_front();
            }
            Ok(())
        })?;
        Ok(out.into())
    }
    /// Check the whole chain from the anchor; stop at the first break.
    fn verify(&self) -> anyhow::Result<Verification> {
        self.verify_with(&mut |_| {})
    }

    /// [`AuditStore::verify`], telling `checked` the count of records
    /// checked so far every 1,000 records (a progress bar).
    fn verify_with(&self, checked: &mut dyn FnMut(u64)) -> anyhow::Result<Verification>;
    /// The hash of record `seq`, if it is still kept.
    fn hash_of(&self, seq: u64) -> anyhow::Result<Option<String>>;
    /// Delete records before `cutoff_ms`, move the anchor to the last one
    /// deleted, and record the pruning in the chain (`cause` says why).
    fn prune(&self, cutoff_ms: u64, cause: &str) -> anyhow::Result<Pruned>;
    /// Erase the personal payloads of an employee. Returns how many.
    fn forget(&self, employee: &str) -> anyhow::Result<u64>;
    /// Test support: overwrite the stored JSON of record `seq` (to show
    /// that verification catches it). Not used by the product.
    #[doc(hidden)]
    fn tamper(&self, seq: u64, edit: &mut dyn FnMut(&mut Vec<u8>)) -> anyhow::Result<()>;
}
