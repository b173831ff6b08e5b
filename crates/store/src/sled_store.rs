//! The embedded store: sled, one directory, one process.
//!
//! Trees:
//! - `snapshots`: the last employee record seen from the HRIS, with a revision
//!   counter that moves when the record changes (to diff, and to key effects);
//! - `accounts`: HRIS id -> LMS user id and whether the account is active;
//! - `enrollments`: enrollments the host made (employee, course) and their cycle;
//! - `withdrawals`: how many times the host withdrew an employee from a
//!   course (part of the keys of later enrollments and withdrawals);
//! - `outbox`: operations planned but not yet done, `link\0employee\0seq`,
//!   applied in seq order per employee; `outbox_keys` indexes them by
//!   idempotency key so a plan never enqueues the same effect twice;
//! - `done`: idempotency keys of operations that succeeded (never repeated);
//! - `seen`: completions already considered (employee, course, attempt);
//! - `winners`: the completion of each (employee, course) that the retake
//!   policy chose and that was sent to the HRIS;
//! - `cursors`: where each link's listings resume;
//! - `dead_letters`: operations given up on, with the reason, replayable
//!   (`dead_keys` indexes their idempotency keys);
//! - `links`: per-link status (why a run halted);
//! - `webhook_deliveries`: per connector, the ids of webhook deliveries
//!   processed (`connector\0id` -> Unix ms), so a replay is acknowledged
//!   without being processed twice; pruned by age;
//! - `connector_health`: per connector (key: connector name), the plugin
//!   faults in a row and the quarantine, if any, with the plugin's sha256 it
//!   applies to;
//! - `plugin_approvals`: per plugin name, what the approved version needs
//!   ([`PluginApproval`]);
//! - `departed`: employees with a snapshot that the last full listing did
//!   not include, and since when (Unix ms), for retention;
//! - `retired`: the last revision of each snapshot retention deleted, so a
//!   returning employee's record continues the numbering (effect keys
//!   include it: a rehire's update must not reuse the first hire's key);
//! - the audit tree, owned by [`AuditLog`] (`audit_log.rs`).
//!
//! Writes that belong together happen in one sled transaction: a plan's
//! snapshots, operations and cursor; an operation's removal from the outbox,
//! its `done` record, its effect and its audit record; a webhook
//! delivery's replay marker with everything its events put into the outbox.
//!
//! Long because it is the whole sled implementation of [`Store`] (one
//! method per operation of the trait) with its tests; the transactions are
//! easier to check side by side.

use std::path::Path;

use anyhow::{Context, anyhow};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use switchyard_audit::{Event, Kind};
use switchyard_model::{
    Account, Completion, ConnectorName, CourseId, DeadLetter, Effect, EmployeeId, Enrollment,
    LinkName, OpKind, Operation, PlannedEmployee, Snapshot, Timestamp, Winner, now_ms,
};

use crate::audit_log::{AuditLog, Writer};
use crate::{
    AuditStore, Completed, ConnectorHealth, DeliveryCommit, Forgotten, Ledger, LinkCounts,
    LinkStatus, PluginApproval, Quarantine, Store, WebhookBatch,
};

/// The sled database: every tree above, and the audit log.
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    /// The data directory (for the durable-head marker).
    dir: std::path::PathBuf,
    /// The audit sequence last written to the marker (writes are
    /// serialised, and the marker only moves forward).
    durable_head: std::sync::Arc<std::sync::Mutex<u64>>,
    snapshots: sled::Tree,
    accounts: sled::Tree,
    enrollments: sled::Tree,
    withdrawals: sled::Tree,
    outbox: sled::Tree,
    outbox_keys: sled::Tree,
    done: sled::Tree,
    seen: sled::Tree,
    winners: sled::Tree,
    cursors: sled::Tree,
    dead_letters: sled::Tree,
    dead_keys: sled::Tree,
    links: sled::Tree,
    connector_health: sled::Tree,
    plugin_approvals: sled::Tree,
    departed: sled::Tree,
    retired: sled::Tree,
    audit: AuditLog,
    webhook_deliveries: sled::Tree,
    /// Plans of runs in progress (`link \0 run id, employee`), dropped at open.
    staged: sled::Tree,
}

/// `link \0 part \0 part ...`
pub fn key(parts: &[&str]) -> Vec<u8> {
    parts.join("\0").into_bytes()
}

fn prefix(parts: &[&str]) -> Vec<u8> {
    let mut p = key(parts);
    p.push(0);
    p
}

/// `link \0 id` (big-endian, so dead letters list oldest first).
fn dead_letter_key(link: &str, id: u64) -> Vec<u8> {
    let mut k = prefix(&[link]);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// `link \0 run id employee`: a run's staged plan of an employee.
fn staged_key(link: &str, run: u64, employee: &str) -> Vec<u8> {
    let mut k = prefix(&[link]);
    k.extend_from_slice(&run.to_be_bytes());
    k.extend_from_slice(employee.as_bytes());
    k
}

/// The entries under `prefix` whose key goes on past `prefix + after`,
/// in key order, at most `limit`. An id ends where `\0` or the key ends,
/// so the first key past every `prefix + after + \0 ...` is
/// `prefix + after + \x01`.
fn page_after<'a>(
    tree: &sled::Tree,
    prefix: &'a [u8],
    after: Option<&EmployeeId>,
    limit: usize,
) -> impl Iterator<Item = anyhow::Result<(sled::IVec, sled::IVec)>> + 'a {
    let mut start = prefix.to_vec();
    if let Some(after) = after {
        start.extend_from_slice(after.as_bytes());
        start.push(1);
    }
    tree.range(start..)
        .take_while(move |item| item.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)))
        .take(limit)
        .map(|item| item.context("failed to read state"))
}

/// The entries under `prefix` of the ids from `first` to `last`
/// (inclusive), sub-keys included: `prefix + first` up to, not including,
/// `prefix + last + \x01` (see [`page_after`]).
fn range_of<'a>(
    tree: &sled::Tree,
    prefix: &'a [u8],
    first: &EmployeeId,
    last: &EmployeeId,
) -> impl Iterator<Item = anyhow::Result<(sled::IVec, sled::IVec)>> + 'a {
    let mut start = prefix.to_vec();
    start.extend_from_slice(first.as_bytes());
    let mut end = prefix.to_vec();
    end.extend_from_slice(last.as_bytes());
    end.push(1);
    tree.range(start..end)
        .map(|item| item.context("failed to read state"))
}

/// Add what `tree` holds of the ids in `range` (a prefix, the first and
/// the last id) to `ledgers` with `f`, given each key's part after the id
/// (`link \0 employee [\0 rest]`) and its value.
fn fill(
    tree: &sled::Tree,
    (prefix, first, last): (&[u8], &EmployeeId, &EmployeeId),
    ledgers: &mut std::collections::BTreeMap<EmployeeId, Ledger>,
    mut f: impl FnMut(&mut Ledger, &[u8], &[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    for item in range_of(tree, prefix, first, last) {
        let (k, v) = item?;
        let rest = &k[prefix.len()..];
        let (id, sub) = match rest.iter().position(|&b| b == 0) {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => (rest, &[][..]),
        };
        let id = EmployeeId::from(String::from_utf8_lossy(id).into_owned());
        f(ledgers.entry(id).or_default(), sub, &v)?;
    }
    Ok(())
}

/// How many entries `tree` holds for `link`. Stops at the first error: a
/// damaged tree yields errors forever.
fn count_of(tree: &sled::Tree, link: &LinkName) -> anyhow::Result<usize> {
    let mut n = 0;
    for item in tree.scan_prefix(prefix(&[link.as_str()])) {
        item.context("failed to read state")?;
        n += 1;
    }
    Ok(n)
}

fn encode<T: Serialize>(value: &T) -> anyhow::Result<Vec<u8>> {
    serde_json::to_vec(value).context("failed to encode state record")
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> anyhow::Result<T> {
    serde_json::from_slice(bytes).context("corrupt state record")
}

type TxResult<T> = Result<T, ConflictableTransactionError<anyhow::Error>>;

fn tx_put<T: Serialize>(tree: &TransactionalTree, key: Vec<u8>, value: &T) -> TxResult<()> {
    let bytes = encode(value).map_err(ConflictableTransactionError::Abort)?;
    tree.insert(key, bytes)?;
    Ok(())
}

pub(crate) fn tx_result<T>(
    r: Result<T, sled::transaction::TransactionError<anyhow::Error>>,
) -> anyhow::Result<T> {
    r.map_err(|e| match e {
        sled::transaction::TransactionError::Abort(e) => e,
        sled::transaction::TransactionError::Storage(e) => {
            anyhow::Error::new(e).context("state storage error")
        }
    })
}

/// Whether `e` comes from a full disk (no space left, or a quota reached)
/// anywhere in its chain: the state is intact, and the command can run
/// again once there is room.
pub fn storage_full(e: &anyhow::Error) -> bool {
    use std::io::ErrorKind::{QuotaExceeded, StorageFull};
    e.chain().any(|cause| {
        let io = cause.downcast_ref::<std::io::Error>().or_else(|| {
            match cause.downcast_ref::<sled::Error>() {
                Some(sled::Error::Io(io)) => Some(io),
                _ => None,
            }
        });
        io.is_some_and(|io| matches!(io.kind(), StorageFull | QuotaExceeded))
    })
}

/// sled writes a snapshot as `snap.<lsn>.generating` and renames it when
/// complete; a disk that filled up (or a kill) mid-write leaves the
/// unfinished file behind, which sled then reads as corruption. It holds
/// nothing the log does not: remove it.
fn remove_unfinished_snapshots(dir: &Path) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            let path = entry.path();
            std::fs::remove_file(&path).with_context(|| {
                format!("cannot remove the unfinished snapshot {}", path.display())
            })?;
            tracing::warn!(file = %path.display(), "removed an unfinished state snapshot (a full disk or a crash while it was written)");
        }
    }
    Ok(())
}

/// sled's page cache unless configured (`[store] cache_mib`). sled's own
/// default (1 GiB) let a daemon's memory grow with every record written
/// until it reached it (about 1 KiB per webhook delivery, measured in
/// BENCHMARKS.md). sled's nodes take about 1.6 times the capacity in
/// memory, and a sync of 100,000 or 1,000,000 employees ran as fast with
/// 16 MiB as with 64 (BENCHMARKS.md, "Memory by workforce size").
pub const CACHE_BYTES: u64 = 16 << 20;

/// `sled::open` (with a bounded page cache), with sled's panics on damaged files turned into an error
/// (sled 0.34 panics while recovering some corrupt logs). The panic is kept
/// off stderr for this thread only; other threads' panics print as usual.
fn open_sled(dir: &Path, cache_bytes: u64) -> anyhow::Result<sled::Db> {
    type Hook = Box<dyn Fn(&std::panic::PanicHookInfo<'_>) + Sync + Send + 'static>;
    // One swap at a time: two opens interleaving would restore each
    // other's filter and silence a thread's later panics.
    static SWAP: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _swap = SWAP.lock().unwrap_or_else(|e| e.into_inner());
    let me = std::thread::current().id();
    let previous: std::sync::Arc<Hook> = std::sync::Arc::new(std::panic::take_hook());
    let forward = previous.clone();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() != me {
            forward(info);
        }
    }));
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()
    }));
    std::panic::set_hook(Box::new(move |info| previous(info)));
    match opened {
        Ok(db) => db.context("sled could not open it"),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".to_owned());
            Err(anyhow!(
                "it is damaged: sled failed while recovering it ({what})"
            ))
        }
    }
}

/// The file beside sled's that records the last audit record known to be
/// durable (written after each flush, replaced atomically, never fsynced:
/// a lost or stale marker is only older, so it never raises a false alarm).
const DURABLE_HEAD: &str = "durable-head";

fn read_durable_head(dir: &Path) -> anyhow::Result<Option<u64>> {
    match std::fs::read_to_string(dir.join(DURABLE_HEAD)) {
        Ok(text) => Ok(text.trim().parse().ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {DURABLE_HEAD}")),
    }
}

fn write_durable_head(dir: &Path, seq: u64) -> anyhow::Result<()> {
    let tmp = dir.join(format!("{DURABLE_HEAD}.tmp"));
    std::fs::write(&tmp, seq.to_string())
        .and_then(|()| std::fs::rename(&tmp, dir.join(DURABLE_HEAD)))
        .with_context(|| format!("cannot write {} in {}", DURABLE_HEAD, dir.display()))
}

impl SledStore {
    /// Open (or create) the database in `dir`, with the default cache.
    pub fn open(dir: &Path) -> anyhow::Result<SledStore> {
        Self::open_with_cache(dir, CACHE_BYTES)
    }

    /// Open (or create) the database in `dir`, with a page cache of
    /// `cache_bytes`.
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> anyhow::Result<SledStore> {
        remove_unfinished_snapshots(dir)?;
        Self::open_db(dir, cache_bytes).map_err(|e| {
            if storage_full(&e) {
                return e.context(format!(
                    "the state database in {} cannot be opened: the disk is full; it is not damaged: free space on that device and run again",
                    dir.display()
                ));
            }
            e.context(format!(
                "the state database in {} cannot be opened; if it is damaged (a full or failing disk, a truncated copy), restore the directory from a backup, or move it aside to start with an empty state (the next sync finds existing LMS accounts again; pending operations, dead letters and the audit log stay in the old directory)",
                dir.display()
            ))
        })
    }

    fn open_db(dir: &Path, cache_bytes: u64) -> anyhow::Result<SledStore> {
        let db = open_sled(dir, cache_bytes)?;
        let audit = AuditLog::open(&db)?;
        // sled reads a damaged or truncated log as a shorter one; the
        // marker written after each flush says how far it reached.
        if let Some(durable) = read_durable_head(dir)? {
            let head = audit.head().seq;
            if head < durable {
                anyhow::bail!(
                    "it is damaged: its audit log ends at record {head}, but record {durable} was on disk before (see {DURABLE_HEAD}); data written after that point is lost"
                );
            }
        }
        let tree = |name: &str| {
            db.open_tree(name)
                .with_context(|| format!("failed to open state tree `{name}`"))
        };
        let staged = tree("staged")?;
        // No run is in progress while the database is being opened.
        staged.clear().context("failed to clear staged plans")?;
        Ok(SledStore {
            staged,
            snapshots: tree("snapshots")?,
            accounts: tree("accounts")?,
            enrollments: tree("enrollments")?,
            withdrawals: tree("withdrawals")?,
            outbox: tree("outbox")?,
            outbox_keys: tree("outbox_keys")?,
            done: tree("done")?,
            seen: tree("seen")?,
            winners: tree("winners")?,
            cursors: tree("cursors")?,
            dead_letters: tree("dead_letters")?,
            dead_keys: tree("dead_keys")?,
            links: tree("links")?,
            connector_health: tree("connector_health")?,
            plugin_approvals: tree("plugin_approvals")?,
            departed: tree("departed")?,
            retired: tree("retired")?,
            audit,
            webhook_deliveries: tree("webhook_deliveries")?,
            db,
            dir: dir.to_owned(),
            durable_head: std::sync::Arc::new(std::sync::Mutex::new(0)),
        })
    }

    fn get<T: DeserializeOwned>(tree: &sled::Tree, key: &[u8]) -> anyhow::Result<Option<T>> {
        match tree.get(key).context("failed to read state")? {
            None => Ok(None),
            Some(bytes) => decode(&bytes).map(Some),
        }
    }

    fn put<T: Serialize>(tree: &sled::Tree, key: &[u8], value: &T) -> anyhow::Result<()> {
        tree.insert(key, encode(value)?)
            .context("failed to write state")?;
        Ok(())
    }

    /// Records under `prefix`, each with the rest of its key (an employee
    /// id, a course).
    fn scan_named<K: From<String>, T: DeserializeOwned>(
        tree: &sled::Tree,
        prefix: Vec<u8>,
    ) -> anyhow::Result<Vec<(K, T)>> {
        tree.scan_prefix(&prefix)
            .map(|r| {
                let (k, v) = r.context("failed to read state")?;
                Ok((
                    String::from_utf8_lossy(&k[prefix.len()..])
                        .into_owned()
                        .into(),
                    decode(&v)?,
                ))
            })
            .collect()
    }

    fn scan<T: DeserializeOwned>(tree: &sled::Tree, prefix: Vec<u8>) -> anyhow::Result<Vec<T>> {
        tree.scan_prefix(prefix)
            .map(|r| decode(&r.context("failed to read state")?.1))
            .collect()
    }

    /// Sequence numbers for `n` operations. Allocated before a transaction
    /// starts: sled's id generator must not run inside one (it can wait on
    /// the lock the transaction holds).
    fn sequence(&self, n: usize) -> anyhow::Result<Vec<u64>> {
        (0..n)
            .map(|_| self.db.generate_id().context("failed to allocate an id"))
            .collect()
    }

    /// Commit plans (`Store::commit_plan`) and remove the `unstage` keys
    /// from the staged plans, in one transaction.
    fn commit_plans(
        &self,
        link: &LinkName,
        planned: &[&PlannedEmployee],
        cursor: Option<(&str, Option<&str>)>,
        unstage: &[Vec<u8>],
    ) -> anyhow::Result<()> {
        let seqs = self.sequence(planned.iter().map(|p| p.operations.len()).sum())?;
        let trees = (
            &self.snapshots,
            &self.outbox,
            &self.outbox_keys,
            &self.cursors,
            &self.staged,
        );
        tx_result(
            trees.transaction(|(snapshots, outbox, keys, cursors, staged)| {
                let mut seq = seqs.iter();
                for p in planned {
                    if let Some(s) = &p.snapshot {
                        tx_put(snapshots, key(&[link.as_str(), &s.employee.id]), s)?;
                    }
                    for (op, &n) in p.operations.iter().zip(&mut seq) {
                        Self::enqueue(outbox, keys, link, op, n)?;
                    }
                }
                for k in unstage {
                    staged.remove(k.as_slice())?;
                }
                if let Some((name, value)) = cursor {
                    match value {
                        Some(v) => tx_put(cursors, key(&[link.as_str(), name]), &v)?,
                        None => {
                            cursors.remove(key(&[link.as_str(), name]))?;
                        }
                    }
                }
                Ok(())
            }),
        )
    }

    fn enqueue(
        tx_outbox: &TransactionalTree,
        tx_keys: &TransactionalTree,
        link: &str,
        op: &Operation,
        seq: u64,
    ) -> TxResult<()> {
        let index_key = key(&[link, &op.key]);
        if tx_keys.get(&index_key)?.is_some() {
            return Ok(());
        }
        let mut k = prefix(&[link, &op.employee_id]);
        k.extend_from_slice(&seq.to_be_bytes());
        tx_keys.insert(index_key, k.clone())?;
        tx_put(tx_outbox, k, op)
    }

    fn outbox_key_of(&self, link: &str, op: &Operation) -> anyhow::Result<Vec<u8>> {
        self.outbox_keys
            .get(key(&[link, &op.key]))
            .context("failed to read state")?
            .map(|v| v.to_vec())
            .ok_or_else(|| anyhow!("operation {} is not in the outbox", op.key))
    }

    // ---- the daemon's scheduler ----

    fn schedule_tree(&self) -> anyhow::Result<sled::Tree> {
        self.db
            .open_tree("schedule")
            .context("failed to open state tree `schedule`")
    }
}

impl Store for SledStore {
    /// The audit log.
    fn audit(&self) -> &dyn AuditStore {
        &self.audit
    }

    // ---- reads ----

    /// The last snapshot of an employee.
    fn snapshot(&self, link: &LinkName, employee: &EmployeeId) -> anyhow::Result<Option<Snapshot>> {
        Self::get(&self.snapshots, &key(&[link.as_str(), employee.as_str()]))
    }

    /// Every snapshot of a link.
    fn snapshots(&self, link: &LinkName) -> anyhow::Result<Vec<Snapshot>> {
        Self::scan(&self.snapshots, prefix(&[link.as_str()]))
    }

    fn snapshots_after(
        &self,
        link: &LinkName,
        after: Option<&EmployeeId>,
        limit: usize,
    ) -> anyhow::Result<Vec<Snapshot>> {
        let p = prefix(&[link.as_str()]);
        page_after(&self.snapshots, &p, after, limit)
            .map(|r| r.and_then(|(_, v)| decode(&v)))
            .collect()
    }

    fn ledgers(
        &self,
        link: &LinkName,
        first: &EmployeeId,
        last: &EmployeeId,
    ) -> anyhow::Result<std::collections::BTreeMap<EmployeeId, Ledger>> {
        let mut ledgers = std::collections::BTreeMap::new();
        let p = prefix(&[link.as_str()]);
        let range = (p.as_slice(), first, last);
        let course = |sub: &[u8]| CourseId::from(String::from_utf8_lossy(sub).into_owned());
        fill(&self.accounts, range, &mut ledgers, |l, _, v| {
            l.account = Some(decode(v)?);
            Ok(())
        })?;
        fill(&self.enrollments, range, &mut ledgers, |l, sub, v| {
            l.enrollments.push((course(sub), decode(v)?));
            Ok(())
        })?;
        fill(&self.withdrawals, range, &mut ledgers, |l, sub, v| {
            l.withdrawals.push((course(sub), decode(v)?));
            Ok(())
        })?;
        fill(&self.outbox, range, &mut ledgers, |l, _, v| {
            l.pending.push(decode(v)?);
            Ok(())
        })?;
        fill(&self.winners, range, &mut ledgers, |l, sub, v| {
            l.winners.push((course(sub), decode(v)?));
            Ok(())
        })?;
        Ok(ledgers)
    }

    /// The LMS account of an employee.
    fn account(&self, link: &LinkName, employee: &EmployeeId) -> anyhow::Result<Option<Account>> {
        Self::get(&self.accounts, &key(&[link.as_str(), employee.as_str()]))
    }

    /// The accounts of a link, by HRIS id.
    fn accounts(&self, link: &LinkName) -> anyhow::Result<Vec<(EmployeeId, Account)>> {
        Self::scan_named(&self.accounts, prefix(&[link.as_str()]))
    }

    fn active_accounts(&self, link: &LinkName) -> anyhow::Result<usize> {
        let mut active = 0;
        for item in self.accounts.scan_prefix(prefix(&[link.as_str()])) {
            let account: Account = decode(&item.context("failed to read state")?.1)?;
            active += usize::from(account.active);
        }
        Ok(active)
    }

    /// The host's enrollment of an employee in a course.
    fn enrollment(
        &self,
        link: &LinkName,
        employee: &EmployeeId,
        course: &CourseId,
    ) -> anyhow::Result<Option<Enrollment>> {
        Self::get(
            &self.enrollments,
            &key(&[link.as_str(), employee.as_str(), course.as_str()]),
        )
    }

    /// The courses the host enrolled an employee in.
    fn enrollments_of(
        &self,
        link: &LinkName,
        employee: &EmployeeId,
    ) -> anyhow::Result<Vec<(CourseId, Enrollment)>> {
        Self::scan_named(
            &self.enrollments,
            prefix(&[link.as_str(), employee.as_str()]),
        )
    }

    /// How many times the host withdrew an employee from each course.
    fn withdrawals_of(
        &self,
        link: &LinkName,
        employee: &EmployeeId,
    ) -> anyhow::Result<Vec<(CourseId, u32)>> {
        Self::scan_named(
            &self.withdrawals,
            prefix(&[link.as_str(), employee.as_str()]),
        )
    }

    /// Whether an operation with this key succeeded before.
    fn is_done(&self, link: &LinkName, idempotency_key: &str) -> anyhow::Result<bool> {
        self.done
            .contains_key(key(&[link.as_str(), idempotency_key]))
            .context("failed to read state")
    }

    /// Whether an operation with this key waits in the outbox.
    fn is_pending(&self, link: &LinkName, idempotency_key: &str) -> anyhow::Result<bool> {
        self.outbox_keys
            .contains_key(key(&[link.as_str(), idempotency_key]))
            .context("failed to read state")
    }

    /// Whether an operation with this key was given up on (and not replayed).
    fn is_dead(&self, link: &LinkName, idempotency_key: &str) -> anyhow::Result<bool> {
        self.dead_keys
            .contains_key(key(&[link.as_str(), idempotency_key]))
            .context("failed to read state")
    }

    /// The operations waiting for one employee, in order.
    fn pending_for(
        &self,
        link: &LinkName,
        employee: &EmployeeId,
    ) -> anyhow::Result<Vec<Operation>> {
        Self::scan(&self.outbox, prefix(&[link.as_str(), employee.as_str()]))
    }

    fn outbox_after(
        &self,
        link: &LinkName,
        after: Option<&EmployeeId>,
        employees: usize,
    ) -> anyhow::Result<Vec<Vec<Operation>>> {
        let mut groups: Vec<Vec<Operation>> = Vec::new();
        let p = prefix(&[link.as_str()]);
        for item in page_after(&self.outbox, &p, after, usize::MAX) {
            let op: Operation = decode(&item?.1)?;
            let full = groups.len() == employees;
            match groups.last_mut() {
                Some(group) if group[0].employee_id == op.employee_id => group.push(op),
                _ if full => break,
                _ => groups.push(vec![op]),
            }
        }
        Ok(groups)
    }

    fn staged_of(
        &self,
        link: &LinkName,
        run: u64,
        employee: &EmployeeId,
    ) -> anyhow::Result<Option<PlannedEmployee>> {
        Self::get(&self.staged, &staged_key(link, run, employee))
    }

    fn staged(
        &self,
        link: &LinkName,
        run: u64,
        after: Option<&EmployeeId>,
        limit: usize,
    ) -> anyhow::Result<Vec<(EmployeeId, PlannedEmployee)>> {
        let p = staged_key(link, run, "");
        page_after(&self.staged, &p, after, limit)
            .map(|r| {
                let (k, v) = r?;
                let id = String::from_utf8_lossy(&k[p.len()..]).into_owned();
                Ok((id.into(), decode(&v)?))
            })
            .collect()
    }

    /// Whether this attempt was considered before.
    fn is_seen(&self, link: &LinkName, c: &Completion) -> anyhow::Result<bool> {
        self.seen
            .contains_key(key(&[
                link.as_str(),
                &c.employee_id,
                &c.course_id,
                &c.attempt_id,
            ]))
            .context("failed to read state")
    }

    /// The winning completion of (employee, course).
    fn winner(
        &self,
        link: &LinkName,
        employee: &EmployeeId,
        course: &CourseId,
    ) -> anyhow::Result<Option<Winner>> {
        Self::get(
            &self.winners,
            &key(&[link.as_str(), employee.as_str(), course.as_str()]),
        )
    }

    /// The winning completions of one employee, by course.
    fn winners_of(
        &self,
        link: &LinkName,
        employee: &EmployeeId,
    ) -> anyhow::Result<Vec<(CourseId, Winner)>> {
        Self::scan_named(&self.winners, prefix(&[link.as_str(), employee.as_str()]))
    }

    /// A cursor (`employees` or `completions`) of a link.
    fn cursor(&self, link: &LinkName, name: &str) -> anyhow::Result<Option<String>> {
        Self::get(&self.cursors, &key(&[link.as_str(), name]))
    }

    /// Set a cursor outside a plan (bookkeeping such as the time of the last
    /// full listing).
    fn put_cursor(&self, link: &LinkName, name: &str, value: &str) -> anyhow::Result<()> {
        Self::put(&self.cursors, &key(&[link.as_str(), name]), &value)
    }

    /// One dead letter.
    fn dead_letter_by_id(&self, link: &LinkName, id: u64) -> anyhow::Result<Option<DeadLetter>> {
        let dlq_key = dead_letter_key(link.as_str(), id);
        Self::get(&self.dead_letters, &dlq_key)
    }

    /// Dead letters of a link, oldest first.
    fn dead_letters(&self, link: &LinkName) -> anyhow::Result<Vec<DeadLetter>> {
        Self::scan(&self.dead_letters, prefix(&[link.as_str()]))
    }

    /// Status of a link.
    fn link_status(&self, link: &LinkName) -> anyhow::Result<LinkStatus> {
        Ok(Self::get(&self.links, &key(&[link.as_str()]))?.unwrap_or_default())
    }

    /// A connector's health record.
    fn connector_health(
        &self,
        connector: &ConnectorName,
    ) -> anyhow::Result<Option<ConnectorHealth>> {
        Self::get(&self.connector_health, connector.as_bytes())
    }

    /// Record a connector's health.
    fn put_connector_health(
        &self,
        connector: &ConnectorName,
        health: &ConnectorHealth,
    ) -> anyhow::Result<()> {
        Self::put(&self.connector_health, connector.as_bytes(), health)
    }

    /// Lift a connector's quarantine and reset its fault count. Returns the
    /// quarantine that was lifted, if there was one.
    fn resume_connector(&self, connector: &ConnectorName) -> anyhow::Result<Option<Quarantine>> {
        let Some(mut health) = self.connector_health(connector)? else {
            return Ok(None);
        };
        let lifted = health.quarantine.take();
        health.faults_in_a_row = 0;
        self.put_connector_health(connector, &health)?;
        Ok(lifted)
    }

    /// Quarantined connectors, by name.
    fn quarantined(&self) -> anyhow::Result<Vec<(ConnectorName, ConnectorHealth)>> {
        let mut out = Vec::new();
        for entry in self.connector_health.iter() {
            let (k, v) = entry.context("failed to read state")?;
            let health: ConnectorHealth =
                serde_json::from_slice(&v).context("corrupt state record")?;
            if health.quarantine.is_some() {
                out.push((String::from_utf8_lossy(&k).into_owned().into(), health));
            }
        }
        Ok(out)
    }

    fn plugin_approval(&self, plugin: &str) -> anyhow::Result<Option<PluginApproval>> {
        Self::get(&self.plugin_approvals, plugin.as_bytes())
    }

    fn put_plugin_approval(&self, plugin: &str, approval: &PluginApproval) -> anyhow::Result<()> {
        Self::put(&self.plugin_approvals, plugin.as_bytes(), approval)?;
        self.flush()
    }

    /// What the state holds for a link.
    fn counts(&self, link: &LinkName) -> anyhow::Result<LinkCounts> {
        let count = |tree: &sled::Tree| count_of(tree, link);
        Ok(LinkCounts {
            employees: count(&self.snapshots)?,
            accounts: count(&self.accounts)?,
            enrollments: count(&self.enrollments)?,
            completions: count(&self.winners)?,
            outbox: count(&self.outbox)?,
            dead_letters: count(&self.dead_letters)?,
        })
    }

    fn depths(&self, link: &LinkName) -> anyhow::Result<(usize, usize)> {
        Ok((
            count_of(&self.outbox, link)?,
            count_of(&self.dead_letters, link)?,
        ))
    }

    // ---- writes ----

    /// Set a link's status.
    fn put_link_status(&self, link: &LinkName, status: &LinkStatus) -> anyhow::Result<()> {
        Self::put(&self.links, &key(&[link.as_str()]), status)
    }

    /// Commit a plan: new snapshots, operations into the outbox (skipping
    /// keys already pending) and, if given, a cursor, all in one transaction.
    /// `cursor`: `Some((name, Some(value)))` sets it, `Some((name, None))` removes it.
    fn commit_plan(
        &self,
        link: &LinkName,
        planned: &[PlannedEmployee],
        cursor: Option<(&str, Option<&str>)>,
    ) -> anyhow::Result<()> {
        let plans: Vec<&PlannedEmployee> = planned.iter().collect();
        self.commit_plans(link, &plans, cursor, &[])
    }

    fn stage(
        &self,
        link: &LinkName,
        run: u64,
        planned: &[(EmployeeId, PlannedEmployee)],
    ) -> anyhow::Result<()> {
        if planned.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (employee, p) in planned {
            batch.insert(staged_key(link, run, employee), encode(p)?);
        }
        self.staged
            .apply_batch(batch)
            .context("failed to write state")
    }

    fn commit_staged(
        &self,
        link: &LinkName,
        run: u64,
        planned: &[(EmployeeId, PlannedEmployee)],
        cursor: Option<(&str, Option<&str>)>,
    ) -> anyhow::Result<()> {
        let unstage: Vec<Vec<u8>> = planned
            .iter()
            .map(|(employee, _)| staged_key(link, run, employee))
            .collect();
        let plans: Vec<&PlannedEmployee> = planned.iter().map(|(_, p)| p).collect();
        self.commit_plans(link, &plans, cursor, &unstage)
    }

    fn drop_staged(&self, link: &LinkName, run: u64) -> anyhow::Result<()> {
        let mut batch = sled::Batch::default();
        for item in self.staged.scan_prefix(staged_key(link, run, "")) {
            batch.remove(item.context("failed to read state")?.0);
        }
        self.staged
            .apply_batch(batch)
            .context("failed to write state")
    }

    /// Commit a page of completions: attempts seen, new winners, their
    /// push operations, and the cursor, in one transaction.
    fn commit_completions(
        &self,
        link: &LinkName,
        seen: &[Completion],
        winners: &[(Winner, Operation)],
        cursor: Option<&str>,
    ) -> anyhow::Result<()> {
        let seqs = self.sequence(winners.len())?;
        let trees = (
            &self.seen,
            &self.winners,
            &self.outbox,
            &self.outbox_keys,
            &self.cursors,
        );
        tx_result(
            trees.transaction(|(seen_tree, winners_tree, outbox, keys, cursors)| {
                for c in seen {
                    seen_tree.insert(
                        key(&[link.as_str(), &c.employee_id, &c.course_id, &c.attempt_id]),
                        &[][..],
                    )?;
                }
                for ((winner, op), &n) in winners.iter().zip(&seqs) {
                    let c = &winner.completion;
                    tx_put(
                        winners_tree,
                        key(&[link.as_str(), &c.employee_id, &c.course_id]),
                        winner,
                    )?;
                    Self::enqueue(outbox, keys, link, op, n)?;
                }
                if let Some(cursor) = cursor {
                    tx_put(cursors, key(&[link.as_str(), "completions"]), &cursor)?;
                }
                Ok(())
            }),
        )
    }

    /// Operations succeeded: remove them from the outbox, record them done,
    /// record their effects and append their audit records (one block), in
    /// one transaction.
    fn complete_all(&self, link: &LinkName, done: Vec<Completed>) -> anyhow::Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        let mut items = Vec::with_capacity(done.len());
        let mut events = Vec::with_capacity(done.len());
        for Completed { op, effect, audit } in done {
            items.push((self.outbox_key_of(link, &op)?, op, effect));
            events.push(audit);
        }
        let writer = self.audit.writer();
        let records = writer.prepare_all(events)?;
        let trees = (
            &self.outbox,
            &self.outbox_keys,
            &self.done,
            &self.accounts,
            &self.enrollments,
            &self.withdrawals,
            self.audit.tree(),
        );
        tx_result(trees.transaction(
            |(outbox, keys, done, accounts, enrollments, withdrawals, audit)| {
                let at = now_ms();
                for (outbox_key, op, effect) in &items {
                    outbox.remove(outbox_key.clone())?;
                    keys.remove(key(&[link.as_str(), &op.key]))?;
                    tx_put(done, key(&[link.as_str(), &op.key]), &(op.kind.name(), at))?;
                    match effect {
                        Effect::Account(a) => {
                            tx_put(accounts, key(&[link.as_str(), &op.employee_id]), a)?
                        }
                        Effect::Enrolled { course, enrollment } => tx_put(
                            enrollments,
                            key(&[link.as_str(), &op.employee_id, course.as_str()]),
                            enrollment,
                        )?,
                        Effect::Unenrolled { course } => {
                            let at = key(&[link.as_str(), &op.employee_id, course.as_str()]);
                            enrollments.remove(at.clone())?;
                            let before: u32 = match withdrawals.get(&at)? {
                                Some(v) => {
                                    decode(&v).map_err(ConflictableTransactionError::Abort)?
                                }
                                None => 0,
                            };
                            tx_put(withdrawals, at, &(before + 1))?;
                        }
                        Effect::None => {}
                    }
                }
                Writer::write(audit, &records)
            },
        ))?;
        writer.committed(&records);
        Ok(())
    }

    /// An attempt failed and will be retried: record the attempt.
    fn reschedule(&self, link: &LinkName, op: &Operation) -> anyhow::Result<()> {
        let outbox_key = self.outbox_key_of(link, op)?;
        Self::put(&self.outbox, &outbox_key, op)
    }

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
    ) -> anyhow::Result<u64> {
        let outbox_key = self.outbox_key_of(link, op)?;
        let id = self.db.generate_id().context("failed to allocate an id")?;
        let letter = DeadLetter {
            id,
            operation: op.clone(),
            reason: reason.to_owned(),
            at: at.to_owned(),
        };
        let dlq_key = dead_letter_key(link.as_str(), id);
        let writer = self.audit.writer();
        let record = writer.prepare(audit.with_detail("dead_letter", id.into()))?;
        let trees = (
            &self.outbox,
            &self.outbox_keys,
            &self.dead_letters,
            &self.dead_keys,
            self.audit.tree(),
        );
        tx_result(trees.transaction(|(outbox, keys, dlq, dead_keys, audit)| {
            outbox.remove(outbox_key.clone())?;
            keys.remove(key(&[link.as_str(), &op.key]))?;
            dead_keys.insert(key(&[link.as_str(), &op.key]), &id.to_be_bytes()[..])?;
            tx_put(dlq, dlq_key.clone(), &letter)?;
            Writer::write(audit, std::slice::from_ref(&record))
        }))?;
        writer.committed(std::slice::from_ref(&record));
        Ok(id)
    }

    /// Move a dead letter back into the outbox, attempts reset.
    fn replay_dead_letter(&self, link: &LinkName, id: u64) -> anyhow::Result<Operation> {
        let dlq_key = dead_letter_key(link.as_str(), id);
        let letter: DeadLetter = Self::get(&self.dead_letters, &dlq_key)?
            .ok_or_else(|| anyhow!("link `{link}` has no dead letter {id}"))?;
        let mut op = letter.operation;
        op.attempts = 0;
        op.next_attempt_at = 0;
        op.cause = format!("replayed dead letter {id}: {}", op.cause);
        let seq = self.db.generate_id().context("failed to allocate an id")?;
        let trees = (
            &self.dead_letters,
            &self.dead_keys,
            &self.outbox,
            &self.outbox_keys,
        );
        tx_result(trees.transaction(|(dlq, dead_keys, outbox, keys)| {
            dlq.remove(dlq_key.clone())?;
            dead_keys.remove(key(&[link.as_str(), &op.key]))?;
            Self::enqueue(outbox, keys, link, &op, seq)
        }))?;
        Ok(op)
    }

    /// Delete a dead letter.
    fn drop_dead_letter(&self, link: &LinkName, id: u64) -> anyhow::Result<DeadLetter> {
        let dlq_key = dead_letter_key(link.as_str(), id);
        let letter: DeadLetter = Self::get(&self.dead_letters, &dlq_key)?
            .ok_or_else(|| anyhow!("link `{link}` has no dead letter {id}"))?;
        let trees = (&self.dead_letters, &self.dead_keys);
        tx_result(trees.transaction(|(dlq, dead_keys)| {
            dlq.remove(dlq_key.clone())?;
            dead_keys.remove(key(&[link.as_str(), &letter.operation.key]))?;
            Ok(())
        }))?;
        Ok(letter)
    }

    /// After a full employee listing: note who has a snapshot but was not
    /// listed (and since when), and clear the note of whoever was.
    fn note_departures(
        &self,
        link: &LinkName,
        listed: &dyn Fn(&EmployeeId) -> bool,
    ) -> anyhow::Result<()> {
        let p = prefix(&[link.as_str()]);
        let now = now_ms().to_be_bytes();
        for item in self.snapshots.scan_prefix(&p) {
            let (k, _) = item.context("failed to read state")?;
            let id = EmployeeId::from(String::from_utf8_lossy(&k[p.len()..]).into_owned());
            if listed(&id) {
                if self
                    .departed
                    .contains_key(&k)
                    .context("failed to read state")?
                {
                    self.departed.remove(&k).context("failed to write state")?;
                }
            } else {
                self.departed
                    .compare_and_swap(&k, None as Option<&[u8]>, Some(&now[..]))
                    .context("failed to write state")?
                    .ok();
            }
        }
        Ok(())
    }

    /// Delete the snapshots of employees absent from full listings since
    /// before `cutoff_ms`. Accounts and enrollments stay (a rehire
    /// reactivates the same account). Returns the employee ids.
    fn prune_departed(&self, link: &LinkName, cutoff_ms: u64) -> anyhow::Result<Vec<EmployeeId>> {
        let p = prefix(&[link.as_str()]);
        let mut removed = Vec::new();
        for item in self.departed.scan_prefix(&p) {
            let (k, v) = item.context("failed to read state")?;
            let since = v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
            if since < cutoff_ms {
                let rev = Self::get::<Snapshot>(&self.snapshots, &k)?.map_or(0, |s| s.rev);
                let trees = (&self.snapshots, &self.departed, &self.retired);
                tx_result(trees.transaction(|(snapshots, departed, retired)| {
                    snapshots.remove(&k)?;
                    departed.remove(&k)?;
                    tx_put(retired, k.to_vec(), &rev)
                }))?;
                removed.push(String::from_utf8_lossy(&k[p.len()..]).into_owned().into());
            }
        }
        Ok(removed)
    }

    /// The last revision of an employee's snapshot that retention deleted.
    fn retired_rev(&self, link: &LinkName, employee: &EmployeeId) -> anyhow::Result<Option<u64>> {
        Self::get(&self.retired, &key(&[link.as_str(), employee.as_str()]))
    }

    /// Delete dead letters given up on before `cutoff` (RFC 3339). Returns
    /// how many.
    fn prune_dead_letters(&self, link: &LinkName, cutoff: Timestamp) -> anyhow::Result<usize> {
        let mut removed = 0;
        for letter in self.dead_letters(link)? {
            if letter.at < cutoff {
                self.drop_dead_letter(link, letter.id)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Whether a webhook delivery of `connector` with this id was processed.
    fn is_webhook_delivered(&self, connector: &ConnectorName, id: &str) -> anyhow::Result<bool> {
        self.webhook_deliveries
            .contains_key(key(&[connector.as_str(), id]))
            .context("failed to read state")
    }

    /// Record a webhook delivery and what its events add to each link, in
    /// one transaction: the replay marker, attempts seen, winners, their
    /// operations, employee snapshots and theirs. A delivery id recorded
    /// before writes nothing (`Replay`), also when two copies race. An
    /// attempt that a poll recorded as seen in the meantime is left out, and
    /// so is an operation already done, so it is never written twice.
    fn commit_webhook(
        &self,
        connector: &ConnectorName,
        delivery_id: &str,
        batches: &[WebhookBatch],
        accepted: &dyn Fn(usize) -> Event,
    ) -> anyhow::Result<DeliveryCommit> {
        let ops: usize = batches
            .iter()
            .map(|b| b.winners.len() + b.planned.iter().map(|p| p.operations.len()).sum::<usize>())
            .sum();
        let seqs = self.sequence(ops)?;
        let marker = key(&[connector.as_str(), delivery_id]);
        let at = now_ms();
        // The chain head is held from sealing to commit (as for every record
        // written in a state transaction).
        let writer = self.audit.writer();
        let trees = (
            &self.webhook_deliveries,
            &self.seen,
            &self.winners,
            &self.outbox,
            &self.outbox_keys,
            &self.snapshots,
            &self.done,
            self.audit.tree(),
        );
        let (commit, record) = tx_result(trees.transaction(
            |(deliveries, seen, winners, outbox, keys, snapshots, done, audit)| {
                if deliveries.get(&marker)?.is_some() {
                    return Ok((DeliveryCommit::Replay, None));
                }
                deliveries.insert(marker.clone(), &at.to_be_bytes()[..])?;
                let mut queued = 0;
                let mut seq = seqs.iter();
                for batch in batches {
                    let link = &batch.link;
                    let mut known = Vec::new();
                    for c in &batch.seen {
                        let k = key(&[link.as_str(), &c.employee_id, &c.course_id, &c.attempt_id]);
                        if seen.insert(k.clone(), &[][..])?.is_some() {
                            known.push(k);
                        }
                    }
                    for ((winner, op), &n) in batch.winners.iter().zip(&mut seq) {
                        let c = &winner.completion;
                        let attempt =
                            key(&[link.as_str(), &c.employee_id, &c.course_id, &c.attempt_id]);
                        if known.contains(&attempt)
                            || done.get(key(&[link.as_str(), &op.key]))?.is_some()
                        {
                            continue;
                        }
                        tx_put(
                            winners,
                            key(&[link.as_str(), &c.employee_id, &c.course_id]),
                            winner,
                        )?;
                        queued += usize::from(keys.get(key(&[link.as_str(), &op.key]))?.is_none());
                        Self::enqueue(outbox, keys, link, op, n)?;
                    }
                    for p in &batch.planned {
                        if let Some(snapshot) = &p.snapshot {
                            tx_put(
                                snapshots,
                                key(&[link.as_str(), &snapshot.employee.id]),
                                snapshot,
                            )?;
                        }
                        for (op, &n) in p.operations.iter().zip(&mut seq) {
                            if done.get(key(&[link.as_str(), &op.key]))?.is_none() {
                                queued += usize::from(
                                    keys.get(key(&[link.as_str(), &op.key]))?.is_none(),
                                );
                                Self::enqueue(outbox, keys, link, op, n)?;
                            }
                        }
                    }
                }
                let record = writer
                    .prepare(accepted(queued))
                    .map_err(ConflictableTransactionError::Abort)?;
                Writer::write(audit, std::slice::from_ref(&record))?;
                Ok((DeliveryCommit::Recorded { queued }, Some(record)))
            },
        ))?;
        if let Some(record) = record {
            writer.committed(std::slice::from_ref(&record));
        }
        Ok(commit)
    }

    /// Forget webhook delivery ids recorded before `before_ms` (Unix ms).
    /// Returns how many were removed.
    fn prune_webhook_deliveries(&self, before_ms: u64) -> anyhow::Result<usize> {
        let mut removed = 0;
        for entry in self.webhook_deliveries.iter() {
            let (k, v) = entry.context("failed to read state")?;
            let at = <[u8; 8]>::try_from(v.as_ref())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            if at < before_ms {
                self.webhook_deliveries
                    .remove(k)
                    .context("failed to write state")?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Subject erasure: remove an employee's personal fields from every
    /// link's snapshot, dead letters and outbox (free text scrubbed of the
    /// values removed), and their audit payloads.
    /// The erasure itself is recorded (`subject.erased`, naming `actor`).
    fn forget(&self, employee: &EmployeeId, actor: &str) -> anyhow::Result<Forgotten> {
        fn matching<T: DeserializeOwned>(
            tree: &sled::Tree,
            is: impl Fn(&T) -> bool,
        ) -> anyhow::Result<Vec<(sled::IVec, T)>> {
            let mut out = Vec::new();
            for item in tree.iter() {
                let (k, v) = item.context("failed to read state")?;
                let value: T = decode(&v)?;
                if is(&value) {
                    out.push((k, value));
                }
            }
            Ok(out)
        }
        let mut snapshots = matching(&self.snapshots, |s: &Snapshot| s.employee.id == *employee)?;
        let mut ops = matching(&self.outbox, |op: &Operation| op.employee_id == *employee)?;
        let mut letters = matching(&self.dead_letters, |l: &DeadLetter| {
            l.operation.employee_id == *employee
        })?;

        // Erase the fields, collecting the values to scrub from free text
        // (a vendor's error message may quote an email).
        let mut values = Vec::new();
        for (_, s) in &mut snapshots {
            values.extend(switchyard_model::erase(&mut s.employee));
        }
        let operations = ops
            .iter_mut()
            .map(|(_, op)| op)
            .chain(letters.iter_mut().map(|(_, l)| &mut l.operation));
        let operations: Vec<&mut Operation> = operations.collect();
        for op in operations {
            if let OpKind::UpsertUser { employee } = &mut op.kind {
                values.extend(switchyard_model::erase(employee));
            }
        }
        let scrub = |op: &mut Operation| {
            switchyard_model::scrub(&mut op.cause, &values);
            if let Some(e) = &mut op.last_error {
                switchyard_model::scrub(e, &values);
            }
        };
        for (_, op) in &mut ops {
            scrub(op);
        }
        for (_, letter) in &mut letters {
            scrub(&mut letter.operation);
            switchyard_model::scrub(&mut letter.reason, &values);
        }

        // A run in progress may hold a staged plan of theirs: it goes, and
        // the run commits nothing for them (the next one plans them again).
        let mut staged = Vec::new();
        for item in self.staged.iter() {
            let (k, _) = item.context("failed to read state")?;
            let employee_at = k.iter().position(|&b| b == 0).map(|at| at + 1 + 8);
            if employee_at.and_then(|at| k.get(at..)) == Some(employee.as_bytes()) {
                staged.push(k);
            }
        }

        let trees = (
            &self.snapshots,
            &self.outbox,
            &self.dead_letters,
            &self.staged,
        );
        tx_result(
            trees.transaction(|(snapshot_tree, outbox, dlq, staged_tree)| {
                for k in &staged {
                    staged_tree.remove(k)?;
                }
                for (k, s) in &snapshots {
                    tx_put(snapshot_tree, k.to_vec(), s)?;
                }
                for (k, op) in &ops {
                    tx_put(outbox, k.to_vec(), op)?;
                }
                for (k, letter) in &letters {
                    tx_put(dlq, k.to_vec(), letter)?;
                }
                Ok(())
            }),
        )?;
        let forgotten = Forgotten {
            snapshots: snapshots.len(),
            dead_letters: letters.len(),
            outbox: ops.len(),
            audit_payloads: self.audit.forget(employee)?,
        };
        self.audit.append(
            Event::new(Kind::SubjectErased)
                .employee(employee)
                .actor(actor)
                .detail(serde_json::to_value(&forgotten).context("failed to encode a report")?),
        )?;
        self.flush()?;
        Ok(forgotten)
    }

    /// When the last scheduled or triggered run of a link finished (Unix ms).
    fn last_run(&self, link: &LinkName) -> anyhow::Result<Option<u64>> {
        Self::get(&self.schedule_tree()?, link.as_bytes())
    }

    /// Record that a run of a link finished at `at_ms`.
    fn put_last_run(&self, link: &LinkName, at_ms: u64) -> anyhow::Result<()> {
        Self::put(&self.schedule_tree()?, link.as_bytes(), &at_ms)
    }

    /// Make everything written so far durable.
    fn flush(&self) -> anyhow::Result<()> {
        // Read before the flush: everything up to it is durable after.
        let head = self.audit.head().seq;
        self.db
            .flush()
            .context("failed to flush the state database")?;
        let mut written = self.durable_head.lock().unwrap_or_else(|e| e.into_inner());
        if head > *written {
            write_durable_head(&self.dir, head)?;
            *written = head;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_audit::Filter;
    use switchyard_model::{CompletionStatus, Employee, EmploymentStatus};

    fn op(employee: &str, key: &str) -> Operation {
        Operation {
            key: key.into(),
            employee_id: employee.into(),
            kind: OpKind::SetActive { active: false },
            cause: "test".into(),
            attempts: 0,
            next_attempt_at: 0,
            last_error: None,
        }
    }

    /// Open `dir` again in this process. sled's flusher thread may hold the
    /// dropped handle's file lock for a moment: retry for up to two
    /// seconds; a lasting failure is the test's failure.
    fn reopen(dir: &Path) -> SledStore {
        let mut tries = 0;
        loop {
            match SledStore::open(dir) {
                Ok(state) => return state,
                Err(e) if tries == 100 => panic!("{e:#}"),
                Err(_) => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
        }
    }

    fn employee(id: &str) -> Employee {
        Employee {
            id: id.into(),
            employee_number: None,
            email: Some(format!("{id}@example.com")),
            given_name: None,
            family_name: None,
            status: EmploymentStatus::Active,
            raw_status: None,
            department: None,
            job_title: None,
            location: None,
            manager_id: None,
            hire_date: None,
            termination_date: None,
            updated_at: None,
            custom: vec![],
        }
    }

    fn planned(id: &str, ops: &[&str]) -> (EmployeeId, PlannedEmployee) {
        let employee = employee(id);
        let plan = PlannedEmployee {
            snapshot: Some(Snapshot { employee, rev: 1 }),
            operations: ops.iter().map(|k| op(id, k)).collect(),
        };
        (id.into(), plan)
    }

    #[test]
    fn pages_of_snapshots_and_outbox_cover_everyone_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let state = SledStore::open(dir.path()).unwrap();
        let (l, other) = (LinkName::from("l"), LinkName::from("l2"));
        // Ids that are prefixes of each other: a page must not stop at or
        // skip "1" because "10" and "1\0..." sort around it.
        let ids = ["1", "10", "2", "20", "200", "3"];
        let plans: Vec<PlannedEmployee> = ids
            .iter()
            .map(|id| planned(id, &[&format!("{id}a"), &format!("{id}b")]).1)
            .collect();
        state.commit_plan(&l, &plans, None).unwrap();
        state.commit_plan(&other, &plans[..1], None).unwrap();

        let mut seen = Vec::new();
        let mut after: Option<EmployeeId> = None;
        loop {
            let page = state.snapshots_after(&l, after.as_ref(), 4).unwrap();
            let Some(last) = page.last() else { break };
            assert!(page.len() <= 4);
            after = Some(last.employee.id.clone());
            seen.extend(page.into_iter().map(|s| s.employee.id.to_string()));
        }
        assert_eq!(seen, ids);

        let mut groups = Vec::new();
        let mut after: Option<EmployeeId> = None;
        loop {
            let page = state.outbox_after(&l, after.as_ref(), 4).unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last[0].employee_id.clone());
            groups.extend(page);
        }
        let keys: Vec<String> = groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|o| o.key.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        assert_eq!(
            keys,
            ["1a,1b", "10a,10b", "2a,2b", "20a,20b", "200a,200b", "3a,3b"]
        );
        assert_eq!(state.outbox(&l).unwrap(), groups);

        // The ledgers of a run of ids: "10" to "20" holds "2" and not
        // "1" (before), "200" or "3" (after), nor the other link's.
        let account = Account {
            lms_user_id: "u2".into(),
            active: true,
        };
        SledStore::put(&state.accounts, &key(&["l", "2"]), &account).unwrap();
        SledStore::put(&state.accounts, &key(&["l2", "10"]), &account).unwrap();
        let ledgers = state.ledgers(&l, &"10".into(), &"20".into()).unwrap();
        let pending: Vec<(&str, Vec<&str>)> = ledgers
            .iter()
            .map(|(id, l)| {
                (
                    id.as_str(),
                    l.pending.iter().map(|o| o.key.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            pending,
            [
                ("10", vec!["10a", "10b"]),
                ("2", vec!["2a", "2b"]),
                ("20", vec!["20a", "20b"])
            ]
        );
        assert_eq!(ledgers[&EmployeeId::from("2")].account, Some(account));
        assert_eq!(ledgers[&EmployeeId::from("10")].account, None);
    }

    #[test]
    fn staged_plans_are_work_only_once_committed_and_do_not_outlive_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let l = LinkName::from("l");
        {
            let state = SledStore::open(dir.path()).unwrap();
            state
                .stage(&l, 7, &[planned("1", &["x"]), planned("2", &["y"])])
                .unwrap();
            // Staged again: the later plan replaces the earlier.
            state.stage(&l, 7, &[planned("1", &["z"])]).unwrap();
            state.stage(&l, 8, &[planned("3", &["w"])]).unwrap();
            assert!(state.outbox(&l).unwrap().is_empty());
            assert!(state.snapshot(&l, &"1".into()).unwrap().is_none());
            let staged = state.staged(&l, 7, None, 10).unwrap();
            let keys: Vec<(&str, &str)> = staged
                .iter()
                .map(|(id, p)| (id.as_str(), p.operations[0].key.as_str()))
                .collect();
            assert_eq!(keys, [("1", "z"), ("2", "y")]);
            assert_eq!(state.staged(&l, 7, Some(&"1".into()), 10).unwrap().len(), 1);

            state
                .commit_staged(&l, 7, &staged[..1], Some(("employees", Some("c"))))
                .unwrap();
            assert_eq!(state.outbox(&l).unwrap().len(), 1);
            assert!(state.snapshot(&l, &"1".into()).unwrap().is_some());
            assert_eq!(state.cursor(&l, "employees").unwrap().as_deref(), Some("c"));
            assert_eq!(state.staged(&l, 7, None, 10).unwrap().len(), 1);
            state.drop_staged(&l, 7).unwrap();
            assert!(state.staged(&l, 7, None, 10).unwrap().is_empty());
            // Another run's plan is its own.
            assert_eq!(state.staged(&l, 8, None, 10).unwrap().len(), 1);
            state.flush().unwrap();
        }
        let state = reopen(dir.path());
        assert!(state.staged(&l, 8, None, 10).unwrap().is_empty());
        assert_eq!(state.outbox(&l).unwrap().len(), 1);
    }

    #[test]
    fn forgetting_an_employee_drops_their_staged_plan() {
        let dir = tempfile::tempdir().unwrap();
        let state = SledStore::open(dir.path()).unwrap();
        let l = LinkName::from("l");
        state
            .stage(&l, 7, &[planned("1", &["x"]), planned("12", &["y"])])
            .unwrap();
        state.forget(&"1".into(), "test").unwrap();
        let left: Vec<String> = (state.staged(&l, 7, None, 10).unwrap().into_iter())
            .map(|(id, _)| id.to_string())
            .collect();
        assert_eq!(left, ["12"]);
    }

    #[test]
    fn active_accounts_counts_only_the_active() {
        let dir = tempfile::tempdir().unwrap();
        let state = SledStore::open(dir.path()).unwrap();
        let l = LinkName::from("l");
        for (id, active) in [("1", true), ("2", false), ("3", true)] {
            let account = Account {
                lms_user_id: format!("u{id}").into(),
                active,
            };
            SledStore::put(&state.accounts, &key(&["l", id]), &account).unwrap();
        }
        assert_eq!(state.active_accounts(&l).unwrap(), 2);
        assert_eq!(state.active_accounts(&"other".into()).unwrap(), 0);
    }

    #[test]
    fn outbox_keeps_order_per_employee_and_dedupes_keys() {
        let dir = tempfile::tempdir().unwrap();
        let state = SledStore::open(dir.path()).unwrap();
        let l = LinkName::from("l");
        let e = employee("7");
        let plan = vec![
            PlannedEmployee {
                snapshot: Some(Snapshot {
                    employee: e,
                    rev: 1,
                }),
                operations: vec![op("7", "a"), op("7", "b"), op("7", "a")],
            },
            PlannedEmployee {
                snapshot: None,
                operations: vec![op("8", "c")],
            },
        ];
        state
            .commit_plan(&l, &plan, Some(("employees", Some("cur"))))
            .unwrap();
        let groups = state.outbox(&l).unwrap();
        let keys: Vec<Vec<&str>> = groups
            .iter()
            .map(|g| g.iter().map(|o| o.key.as_str()).collect())
            .collect();
        assert_eq!(keys, vec![vec!["a", "b"], vec!["c"]]);
        assert_eq!(
            state.cursor(&l, "employees").unwrap().as_deref(),
            Some("cur")
        );

        state
            .complete(
                &l,
                &groups[0][0],
                &Effect::None,
                Event::new(Kind::CompletionWritten),
            )
            .unwrap();
        assert!(state.is_done(&l, "a").unwrap());
        assert!(!state.is_pending(&l, "a").unwrap());
        // A done key is never enqueued again by a later plan (the planner
        // checks `is_done`); a pending one is deduplicated by the index.
        let id = state
            .dead_letter(
                &l,
                &groups[0][1],
                "refused",
                Timestamp::now(),
                Event::new(Kind::OperationDeadLettered),
            )
            .unwrap();
        assert_eq!(state.dead_letters(&l).unwrap().len(), 1);
        state.replay_dead_letter(&l, id).unwrap();
        assert!(state.is_pending(&l, "b").unwrap());
        assert!(state.dead_letters(&l).unwrap().is_empty());
        // Each outcome was audited in the same transaction.
        let kinds: Vec<String> = state
            .audit()
            .read(&Default::default(), None)
            .unwrap()
            .into_iter()
            .map(|e| e.record.kind)
            .collect();
        assert_eq!(kinds, vec!["completion.written", "operation.dead-lettered"]);
    }

    #[test]
    fn an_unfinished_snapshot_left_by_a_full_disk_does_not_block_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let l = LinkName::from("l");
        {
            let state = SledStore::open(dir.path()).unwrap();
            state.put_cursor(&l, "employees", "c1").unwrap();
            state.flush().unwrap();
        }
        let leftover = dir.path().join("snap.0000000000000000.generating");
        std::fs::write(&leftover, b"").unwrap();
        let state = reopen(dir.path());
        assert_eq!(
            state.cursor(&l, "employees").unwrap().as_deref(),
            Some("c1")
        );
        assert!(!leftover.exists());
    }

    #[test]
    fn a_webhook_delivery_is_committed_once_with_its_operations() {
        let dir = tempfile::tempdir().unwrap();
        let state = SledStore::open(dir.path()).unwrap();
        let (l, lms) = (LinkName::from("l"), ConnectorName::from("lms"));
        let accepted = |queued: usize| {
            Event::new(Kind::WebhookAccepted).detail(serde_json::json!({ "queued": queued }))
        };
        let completion = Completion {
            employee_id: "7".into(),
            course_id: "C".into(),
            attempt_id: "1".into(),
            status: CompletionStatus::Passed,
            completed_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            score: None,
            expires_at: None,
        };
        let push = Operation {
            kind: OpKind::PushCompletion {
                completion: completion.clone(),
                supersedes: None,
            },
            ..op("7", "push-1")
        };
        let batch = WebhookBatch {
            link: "l".into(),
            seen: vec![completion.clone()],
            winners: vec![(
                Winner {
                    idempotency_key: "push-1".into(),
                    completion: completion.clone(),
                },
                push,
            )],
            planned: vec![],
        };
        assert_eq!(
            state
                .commit_webhook(&lms, "msg_1", std::slice::from_ref(&batch), &accepted)
                .unwrap(),
            DeliveryCommit::Recorded { queued: 1 }
        );
        assert!(state.is_webhook_delivered(&lms, "msg_1").unwrap());
        assert!(state.is_pending(&l, "push-1").unwrap());
        assert!(state.is_seen(&l, &completion).unwrap());
        assert_eq!(
            state
                .commit_webhook(&lms, "msg_1", std::slice::from_ref(&batch), &accepted)
                .unwrap(),
            DeliveryCommit::Replay
        );
        assert_eq!(state.counts(&l).unwrap().outbox, 1);

        // Another delivery of an attempt already seen adds nothing.
        let groups = state.outbox(&l).unwrap();
        state
            .complete(
                &l,
                &groups[0][0],
                &Effect::None,
                Event::new(Kind::CompletionWritten),
            )
            .unwrap();
        assert_eq!(
            state
                .commit_webhook(&lms, "msg_2", &[batch], &accepted)
                .unwrap(),
            DeliveryCommit::Recorded { queued: 0 }
        );
        assert_eq!(state.counts(&l).unwrap().outbox, 0);
        // Each delivery recorded has its audit record, written with it; the
        // replay wrote none.
        let records: Vec<serde_json::Value> = state
            .audit
            .read(
                &Filter {
                    kind: Some("webhook.accepted".into()),
                    ..Filter::default()
                },
                None,
            )
            .unwrap()
            .into_iter()
            .map(|e| e.record.detail)
            .collect();
        assert_eq!(
            records,
            [
                serde_json::json!({ "queued": 1 }),
                serde_json::json!({ "queued": 0 })
            ]
        );
        assert_eq!(state.audit.verify().unwrap().broken, None);

        assert_eq!(state.prune_webhook_deliveries(0).unwrap(), 0);
        assert_eq!(state.prune_webhook_deliveries(now_ms() + 1).unwrap(), 2);
        assert!(!state.is_webhook_delivered(&lms, "msg_1").unwrap());
    }
}
