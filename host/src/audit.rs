//! The audit trail: an append-only, hash-chained log of everything
//! Switchyard did and why, in the state database.
//!
//! Each [`Record`] has a sequence number (1, 2, 3, ... with no gaps), a time
//! that never goes backwards, a kind (`user.created`, `http.request`, ...),
//! what it is about (link, employee, connector, course, idempotency key),
//! the cause, the actor for operator actions, non-personal details, and
//! `prev`: the hash of the record before it. A record's hash is the sha256
//! of its stored JSON bytes, so editing any byte of a record breaks the
//! chain at that record, and removing one breaks it at the next.
//!
//! **Personal data is kept apart from the chain.** Names, emails, scores,
//! vendor error texts and request paths go into a separate *personal
//! payload*. The chained record holds only a
//! salted digest of it (`personal`), so erasing a subject
//! ([`Audit::forget`]) deletes the payloads (salt included, so the digest
//! reveals nothing) while every record's hash, and with it the chain, stays
//! as it was. `verify` checks the digest of every payload still present.
//!
//! **Retention** ([`Audit::prune`]) deletes records older than a cutoff and
//! keeps an *anchor*: the sequence number and hash of the
//! last record removed. Verification starts from the anchor; the pruning
//! itself is recorded (`audit.pruned`, with the anchor) in the chain.
//!
//! One sled tree, `audit`, with four key spaces: `L seq` -> hash ++ record
//! JSON; `P seq` -> salt ++ personal payload JSON; `S employee \0 seq` (the
//! payloads of an employee, for erasure); `M name` (the anchor, last seen
//! configuration and plugin hashes). One tree means every write is one
//! atomic sled batch (or one tree in a state transaction).
//!
//! Records written with a state change (an operation's outcome) are written
//! in the same sled transaction as the change: see [`Audit::writer`].

use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context, anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use time::format_description::well_known::Rfc3339;

tokio::task_local! {
    static CONTEXT: CallContext;
}

/// What a plugin call is for, so the records it causes (its HTTP requests,
/// its failure) name the link, employee and operation. Set by the sync
/// engine around each call with [`CallContext::scope`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallContext {
    /// The link being synced.
    pub link: Option<String>,
    /// The employee the operation is about.
    pub employee: Option<String>,
    /// The operation's idempotency key.
    pub key: Option<String>,
}

impl CallContext {
    /// A call for a link (a listing).
    pub fn link(link: &str) -> CallContext {
        CallContext {
            link: Some(link.to_owned()),
            ..CallContext::default()
        }
    }

    /// A call for one operation.
    pub fn operation(link: &str, employee: &str, key: &str) -> CallContext {
        CallContext {
            link: Some(link.to_owned()),
            employee: Some(employee.to_owned()),
            key: Some(key.to_owned()),
        }
    }

    /// Run `f` with this context.
    pub async fn scope<F: std::future::Future>(self, f: F) -> F::Output {
        CONTEXT.scope(self, f).await
    }

    /// The context of the running task, if any.
    pub fn current() -> CallContext {
        CONTEXT.try_with(Clone::clone).unwrap_or_default()
    }

    /// An event of `kind` about this context.
    pub fn event(&self, kind: &str) -> Event {
        Event {
            kind: kind.to_owned(),
            link: self.link.clone(),
            employee: self.employee.clone(),
            key: self.key.clone(),
            ..Event::default()
        }
    }
}

/// `prev` of the first record ever written.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit record, as chained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Sequence number, from 1, without gaps.
    pub seq: u64,
    /// RFC 3339 UTC time with milliseconds; never before the previous record's.
    pub at: String,
    /// What happened, e.g. `user.created`, `http.request`, `admin.dlq-replay`.
    pub kind: String,
    /// Link it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// HRIS employee id it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employee: Option<String>,
    /// Connector it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector: Option<String>,
    /// Course it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub course: Option<String>,
    /// Idempotency key of the operation (ties it to the outbox and `done`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Why: the rule, policy or event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// Who, for operator actions: `user@host via cli`, `token NAME from ADDR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Non-personal details.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub detail: Value,
    /// sha256 of the salted personal payload, if the record has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal: Option<String>,
    /// Hash of the previous record.
    pub prev: String,
}

/// Something to record. Build with [`Event::new`] and the setters.
#[derive(Debug, Clone, Default)]
pub struct Event {
    kind: String,
    link: Option<String>,
    employee: Option<String>,
    connector: Option<String>,
    course: Option<String>,
    key: Option<String>,
    cause: Option<String>,
    actor: Option<String>,
    detail: Value,
    personal: Option<Value>,
}

impl Event {
    /// An event of `kind`.
    pub fn new(kind: impl Into<String>) -> Event {
        Event {
            kind: kind.into(),
            ..Event::default()
        }
    }
    /// The link.
    pub fn link(mut self, link: impl Into<String>) -> Event {
        self.link = Some(link.into());
        self
    }
    /// The employee.
    pub fn employee(mut self, id: impl Into<String>) -> Event {
        self.employee = Some(id.into());
        self
    }
    /// The connector.
    pub fn connector(mut self, name: impl Into<String>) -> Event {
        self.connector = Some(name.into());
        self
    }
    /// The course.
    pub fn course(mut self, course: impl Into<String>) -> Event {
        self.course = Some(course.into());
        self
    }
    /// The idempotency key.
    pub fn key(mut self, key: impl Into<String>) -> Event {
        self.key = Some(key.into());
        self
    }
    /// The cause.
    pub fn cause(mut self, cause: impl Into<String>) -> Event {
        self.cause = Some(cause.into());
        self
    }
    /// The actor of an operator action.
    pub fn actor(mut self, actor: impl Into<String>) -> Event {
        self.actor = Some(actor.into());
        self
    }
    /// Non-personal details (a JSON object).
    pub fn detail(mut self, detail: Value) -> Event {
        self.detail = detail;
        self
    }
    /// Personal details and free text from outside (paths, vendor error
    /// messages): kept outside the chain, under a salted digest. When the
    /// event names an employee, `forget` erases them; otherwise retention
    /// does.
    pub fn personal(mut self, personal: Value) -> Event {
        self.personal = Some(personal);
        self
    }
    /// Add one non-personal detail to the details object.
    pub fn with_detail(mut self, name: &str, value: Value) -> Event {
        if !self.detail.is_object() {
            self.detail = Value::Object(Default::default());
        }
        if let Value::Object(map) = &mut self.detail {
            map.insert(name.to_owned(), value);
        }
        self
    }

}

/// A record read back, with its hash and its personal payload if present.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    /// The chained record.
    #[serde(flatten)]
    pub record: Record,
    /// Its hash (hex).
    pub hash: String,
    /// The personal payload; `null` with `erased: true` after `audit forget`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub personal_data: Option<Value>,
    /// The record had a personal payload and it was erased.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub erased: bool,
}

/// Which records to read.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Filter {
    /// Only this link.
    pub link: Option<String>,
    /// Only this employee.
    pub employee: Option<String>,
    /// Only this course.
    pub course: Option<String>,
    /// Only kinds equal to this or starting with `this.` (`user` matches
    /// `user.created`).
    pub kind: Option<String>,
    /// Only records at or after this RFC 3339 time.
    pub since: Option<String>,
    /// Only records before this RFC 3339 time.
    pub until: Option<String>,
}

impl Filter {
    fn matches(&self, r: &Record) -> bool {
        let eq = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|w| have.as_deref() == Some(w.as_str()))
        };
        let kind = self.kind.as_ref().is_none_or(|k| {
            r.kind == *k || (r.kind.starts_with(k.as_str()) && r.kind[k.len()..].starts_with('.'))
        });
        eq(&self.link, &r.link)
            && eq(&self.employee, &r.employee)
            && eq(&self.course, &r.course)
            && kind
            && self.since.as_ref().is_none_or(|s| time_key(&r.at) >= time_key(s))
            && self.until.as_ref().is_none_or(|u| time_key(&r.at) < time_key(u))
    }
}

/// Comparable form of an RFC 3339 time (or a yyyy-mm-dd date).
fn time_key(text: &str) -> i128 {
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return t.unix_timestamp_nanos();
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, &format)
        .map(|d| d.midnight().assume_utc().unix_timestamp_nanos())
        .unwrap_or(0)
}

/// The result of `verify`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verification {
    /// Records checked.
    pub records: u64,
    /// Where the chain starts (after pruning: the last pruned record).
    pub anchor: Head,
    /// The last record.
    pub head: Head,
    /// Personal payloads checked against their digests.
    pub personal_checked: u64,
    /// Records whose personal payload was erased.
    pub erased: u64,
    /// The first break, if any.
    pub broken: Option<Break>,
}

/// Where and why the chain is broken.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Break {
    /// Sequence number of the first bad record.
    pub seq: u64,
    /// What is wrong.
    pub reason: String,
}

/// A position in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Sequence number (0: nothing yet).
    pub seq: u64,
    /// Hash of that record (hex); [`GENESIS`] for seq 0.
    pub hash: String,
    /// Its time, Unix milliseconds (to keep time monotonic).
    #[serde(default)]
    pub at_ms: u64,
}

impl std::fmt::Display for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

/// What retention removed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Pruned {
    /// Audit records removed.
    pub records: u64,
    /// Last sequence number removed.
    pub through: u64,
}

/// A record ready to be written in a transaction: see [`Audit::prepare`].
pub struct Prepared {
    seq: u64,
    value: Vec<u8>,
    personal: Option<(Option<Vec<u8>>, Vec<u8>)>,
    head: Head,
}

impl Prepared {
    fn add_to(&self, batch: &mut sled::Batch) {
        batch.insert(&log_key(self.seq)[..], self.value.as_slice());
        if let Some((subject, payload)) = &self.personal {
            batch.insert(&payload_key(self.seq)[..], payload.as_slice());
            if let Some(subject) = subject {
                batch.insert(subject.as_slice(), &[][..]);
            }
        }
    }
}

/// The audit log. Cheap to clone; clones share the chain head.
#[derive(Clone)]
pub struct Audit {
    tree: sled::Tree,
    head: Arc<Mutex<Head>>,
}

const LOG: u8 = b'L';
const PAYLOAD: u8 = b'P';
const SUBJECT: u8 = b'S';
const META: u8 = b'M';

fn log_key(seq: u64) -> [u8; 9] {
    let mut k = [LOG; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn payload_key(seq: u64) -> [u8; 9] {
    let mut k = [PAYLOAD; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn meta_key(name: &str) -> Vec<u8> {
    let mut k = vec![META];
    k.extend_from_slice(name.as_bytes());
    k
}

/// Holds the chain head while a record is written; see [`Audit::prepare`].
pub struct Writer<'a> {
    audit: &'a Audit,
    head: MutexGuard<'a, Head>,
}

impl Writer<'_> {
    /// Serialise `event` as the next record. Nothing is written yet.
    pub fn prepare(&self, event: Event) -> anyhow::Result<Prepared> {
        self.audit.build(&self.head, event)
    }

    /// Write a prepared record inside a transaction that includes
    /// [`Audit::tree`] (and the caller's own trees).
    pub fn write(
        tree: &TransactionalTree,
        prepared: &Prepared,
    ) -> Result<(), ConflictableTransactionError<anyhow::Error>> {
        let mut batch = sled::Batch::default();
        prepared.add_to(&mut batch);
        tree.apply_batch(&batch)?;
        Ok(())
    }

    /// The transaction committed: move the head.
    pub fn committed(mut self, prepared: Prepared) {
        *self.head = prepared.head;
    }
}

fn now_ms() -> u64 {
    crate::state::now_ms()
}

fn rfc3339_ms(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&format).unwrap_or_default()
}

fn digest_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn subject_prefix(employee: &str) -> Vec<u8> {
    let mut k = vec![SUBJECT];
    k.extend_from_slice(employee.as_bytes());
    k.push(0);
    k
}

fn subject_key(employee: &str, seq: u64) -> Vec<u8> {
    let mut k = subject_prefix(employee);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn split_record(value: &[u8]) -> anyhow::Result<(&[u8], &[u8])> {
    if value.len() < 32 {
        bail!("audit record too short");
    }
    Ok(value.split_at(32))
}

/// The sequence number at the end of a key (`L seq`, `P seq`, `S .. seq`).
fn seq_of(key: &[u8]) -> u64 {
    key.len()
        .checked_sub(8)
        .and_then(|at| key[at..].try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

/// The actor of a command-line action: the OS user and host.
pub fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown user".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{user}@{host} via cli")
}

impl Audit {
    /// Open the audit trees of `db` and read the chain head.
    pub fn open(db: &sled::Db) -> anyhow::Result<Audit> {
        let tree = |name: &str| {
            db.open_tree(name)
                .with_context(|| format!("failed to open state tree `{name}`"))
        };
        let audit = Audit {
            tree: tree("audit")?,
            head: Arc::new(Mutex::new(Head {
                seq: 0,
                hash: GENESIS.into(),
                at_ms: 0,
            })),
        };
        let last = audit.tree.scan_prefix([LOG]).next_back().transpose();
        let head = match last.context("failed to read the audit log")? {
            Some((k, v)) => {
                let (hash, json) = split_record(&v)?;
                let record: Record = serde_json::from_slice(json).context("corrupt audit record")?;
                Head {
                    seq: seq_of(&k),
                    hash: hex::encode(hash),
                    at_ms: u64::try_from(time_key(&record.at) / 1_000_000).unwrap_or(0),
                }
            }
            None => audit.anchor()?,
        };
        *audit.lock() = head;
        Ok(audit)
    }

    fn lock(&self) -> MutexGuard<'_, Head> {
        self.head.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tree to include in a transaction that writes a record.
    pub fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// Take the chain head to write a record together with a state change:
    /// `prepare` the event, include [`Audit::trees`] in the transaction and
    /// call [`Writer::write`] inside it, then [`Writer::committed`]. The
    /// head stays locked until the writer is dropped, so records are
    /// chained in the order they are committed.
    pub fn writer(&self) -> Writer<'_> {
        Writer {
            audit: self,
            head: self.lock(),
        }
    }

    fn build(&self, head: &Head, event: Event) -> anyhow::Result<Prepared> {
        let seq = head.seq + 1;
        let at_ms = now_ms().max(head.at_ms);
        let detail = event.detail;
        let mut personal = None;
        if let Some(p) = event.personal.filter(|p| !p.is_null()) {
            let mut payload = random_salt().to_vec();
            payload.extend(serde_json::to_vec(&p).context("failed to encode an audit payload")?);
            let subject = event.employee.as_deref().map(|e| subject_key(e, seq));
            personal = Some((digest_hex(&payload), subject, payload));
        }
        let record = Record {
            seq,
            at: rfc3339_ms(at_ms),
            kind: event.kind,
            link: event.link,
            employee: event.employee,
            connector: event.connector,
            course: event.course,
            key: event.key,
            cause: event.cause,
            actor: event.actor,
            detail,
            personal: personal.as_ref().map(|(d, _, _)| d.clone()),
            prev: head.hash.clone(),
        };
        let json = serde_json::to_vec(&record).context("failed to encode an audit record")?;
        let hash = Sha256::digest(&json);
        let mut value = hash.to_vec();
        value.extend_from_slice(&json);
        Ok(Prepared {
            seq,
            value,
            personal: personal.map(|(_, k, p)| (k, p)),
            head: Head {
                seq,
                hash: hex::encode(hash),
                at_ms,
            },
        })
    }

    /// Append records on their own (not tied to a state change), in one
    /// transaction.
    pub fn append_all(&self, events: Vec<Event>) -> anyhow::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut head = self.lock();
        let mut prepared = Vec::with_capacity(events.len());
        let mut next = head.clone();
        for event in events {
            let p = self.build(&next, event)?;
            next = p.head.clone();
            prepared.push(p);
        }
        let mut batch = sled::Batch::default();
        for record in &prepared {
            record.add_to(&mut batch);
        }
        self.tree.apply_batch(batch).context("failed to write the audit log")?;
        *head = next;
        Ok(())
    }

    /// Append one record on its own.
    pub fn append(&self, event: Event) -> anyhow::Result<()> {
        self.append_all(vec![event])
    }

    /// The last record's position.
    pub fn head(&self) -> Head {
        self.lock().clone()
    }

    /// Where verification starts: the last pruned record, or genesis.
    pub fn anchor(&self) -> anyhow::Result<Head> {
        Ok(match self.tree.get(meta_key("anchor")).context("failed to read the audit log")? {
            Some(v) => serde_json::from_slice(&v).context("corrupt audit anchor")?,
            None => Head {
                seq: 0,
                hash: GENESIS.into(),
                at_ms: 0,
            },
        })
    }

    /// A value remembered by the audit log (e.g. the last configuration
    /// hash seen), to record changes only once.
    pub fn remembered(&self, name: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .tree
            .get(meta_key(&format!("seen/{name}")))
            .context("failed to read the audit log")?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Remember a value (see [`Audit::remembered`]).
    pub fn remember(&self, name: &str, value: &str) -> anyhow::Result<()> {
        self.tree
            .insert(meta_key(&format!("seen/{name}")), value.as_bytes())
            .context("failed to write the audit log")?;
        Ok(())
    }

    fn entry(&self, key: &[u8], value: &[u8]) -> anyhow::Result<Entry> {
        let (hash, json) = split_record(value)?;
        let record: Record = serde_json::from_slice(json)
            .with_context(|| format!("corrupt audit record {}", seq_of(key)))?;
        let mut personal_data = None;
        let mut erased = false;
        if record.personal.is_some() {
            match self.tree.get(payload_key(seq_of(key))).context("failed to read the audit log")? {
                Some(p) if p.len() >= 16 => personal_data = serde_json::from_slice(&p[16..]).ok(),
                _ => erased = true,
            }
        }
        Ok(Entry {
            record,
            hash: hex::encode(hash),
            personal_data,
            erased,
        })
    }

    /// Records matching `filter`, oldest first; with `last`, only the last
    /// that many.
    pub fn read(&self, filter: &Filter, last: Option<usize>) -> anyhow::Result<Vec<Entry>> {
        let mut out = std::collections::VecDeque::new();
        self.scan(filter, |entry| {
            out.push_back(entry);
            if last.is_some_and(|n| out.len() > n) {
                out.pop_front();
            }
            Ok(())
        })?;
        Ok(out.into())
    }

    /// Call `f` with each record matching `filter`, oldest first, without
    /// holding them all in memory (exports). Returns how many matched.
    pub fn scan(&self, filter: &Filter, mut f: impl FnMut(Entry) -> anyhow::Result<()>) -> anyhow::Result<usize> {
        let mut matched = 0;
        for item in self.tree.scan_prefix([LOG]) {
            let (k, v) = item.context("failed to read the audit log")?;
            let entry = self.entry(&k, &v)?;
            if filter.matches(&entry.record) {
                matched += 1;
                f(entry)?;
            }
        }
        Ok(matched)
    }

    /// Check the whole chain from the anchor; stop at the first break.
    pub fn verify(&self) -> anyhow::Result<Verification> {
        let anchor = self.anchor()?;
        let mut v = Verification {
            records: 0,
            anchor: anchor.clone(),
            head: anchor.clone(),
            personal_checked: 0,
            erased: 0,
            broken: None,
        };
        let mut prev = anchor.hash.clone();
        for (expected_seq, item) in (anchor.seq + 1..).zip(self.tree.scan_prefix([LOG])) {
            let (k, value) = item.context("failed to read the audit log")?;
            let seq = seq_of(&k);
            let mut fail = |reason: String| {
                v.broken = Some(Break { seq, reason });
            };
            if seq != expected_seq {
                let missing = if seq > expected_seq {
                    format!("records {expected_seq}..{} are missing", seq - 1)
                } else {
                    format!("record {seq} is out of order (expected {expected_seq})")
                };
                fail(missing);
                break;
            }
            let Ok((stored_hash, json)) = split_record(&value) else {
                fail("record is truncated".into());
                break;
            };
            if Sha256::digest(json).as_slice() != stored_hash {
                fail("record content does not match its hash (edited)".into());
                break;
            }
            let record: Record = match serde_json::from_slice(json) {
                Ok(r) => r,
                Err(e) => {
                    fail(format!("record does not parse: {e}"));
                    break;
                }
            };
            if record.seq != seq {
                fail(format!("record claims seq {} but is stored as {seq}", record.seq));
                break;
            }
            if record.prev != prev {
                fail(format!(
                    "prev {} does not match the hash {} of record {}",
                    record.prev,
                    prev,
                    seq - 1
                ));
                break;
            }
            if let Some(digest) = &record.personal {
                match self.tree.get(payload_key(seq)).context("failed to read the audit log")? {
                    Some(payload) => {
                        if digest_hex(&payload) != *digest {
                            fail("personal payload does not match its digest (edited)".into());
                            break;
                        }
                        v.personal_checked += 1;
                    }
                    None => v.erased += 1,
                }
            }
            prev = hex::encode(stored_hash);
            v.records += 1;
            v.head = Head {
                seq,
                hash: prev.clone(),
                at_ms: u64::try_from(time_key(&record.at) / 1_000_000).unwrap_or(0),
            };
        }
        Ok(v)
    }

    /// The hash of record `seq`, if it is still kept.
    pub fn hash_of(&self, seq: u64) -> anyhow::Result<Option<String>> {
        Ok(self
            .tree
            .get(log_key(seq))
            .context("failed to read the audit log")?
            .and_then(|v| split_record(&v).ok().map(|(h, _)| hex::encode(h))))
    }

    /// Delete records before `cutoff_ms`, move the anchor to the last one
    /// deleted, and record the pruning in the chain (`cause` says why).
    pub fn prune(&self, cutoff_ms: u64, cause: &str) -> anyhow::Result<Pruned> {
        /// Records deleted per transaction (each moves the anchor).
        const CHUNK: usize = 10_000;
        let cutoff = rfc3339_ms(cutoff_ms);
        let mut removed = 0u64;
        let mut anchor: Option<Head> = None;
        loop {
            // Holding the head keeps appends out while the front is cut.
            let head = self.lock();
            let mut doomed: Vec<(sled::IVec, Option<String>)> = Vec::new();
            let mut last: Option<Head> = None;
            for item in self.tree.scan_prefix([LOG]) {
                let (k, v) = item.context("failed to read the audit log")?;
                let (hash, json) = split_record(&v)?;
                let record: Record = serde_json::from_slice(json).context("corrupt audit record")?;
                // Never remove the newest record: the chain head must stay.
                if doomed.len() == CHUNK || time_key(&record.at) >= time_key(&cutoff) || seq_of(&k) == head.seq {
                    break;
                }
                last = Some(Head {
                    seq: seq_of(&k),
                    hash: hex::encode(hash),
                    at_ms: 0,
                });
                doomed.push((k, record.employee));
            }
            let Some(last) = last else {
                break;
            };
            let mut batch = sled::Batch::default();
            for (k, employee) in &doomed {
                let seq = seq_of(k);
                batch.remove(&log_key(seq)[..]);
                batch.remove(&payload_key(seq)[..]);
                if let Some(employee) = employee {
                    batch.remove(subject_key(employee, seq));
                }
            }
            let encoded = serde_json::to_vec(&last).context("failed to encode the audit anchor")?;
            batch.insert(meta_key("anchor"), encoded);
            self.tree.apply_batch(batch).context("failed to write the audit log")?;
            drop(head);
            removed += doomed.len() as u64;
            anchor = Some(last);
        }
        let Some(anchor) = anchor else {
            return Ok(Pruned::default());
        };
        self.append(
            Event::new("audit.pruned")
                .cause(cause.to_owned())
                .detail(serde_json::json!({
                    "records": removed,
                    "through_seq": anchor.seq,
                    "anchor_hash": anchor.hash,
                    "older_than": cutoff,
                })),
        )?;
        Ok(Pruned {
            records: removed,
            through: anchor.seq,
        })
    }

    /// Erase the personal payloads of an employee. Returns how many.
    pub fn forget(&self, employee: &str) -> anyhow::Result<u64> {
        let mut batch = sled::Batch::default();
        let mut erased = 0;
        for item in self.tree.scan_prefix(subject_prefix(employee)) {
            let (k, _) = item.context("failed to read the audit log")?;
            batch.remove(&payload_key(seq_of(&k))[..]);
            batch.remove(k);
            erased += 1;
        }
        self.tree.apply_batch(batch).context("failed to write the audit log")?;
        Ok(erased)
    }

    /// Test support: overwrite the stored bytes of record `seq` (to show
    /// that verification catches it). Not used by the product.
    #[doc(hidden)]
    pub fn tamper(&self, seq: u64, edit: impl FnOnce(&mut Vec<u8>)) -> anyhow::Result<()> {
        let key = log_key(seq);
        let mut value = self
            .tree
            .get(key)?
            .ok_or_else(|| anyhow!("no audit record {seq}"))?
            .to_vec();
        let mut json = value.split_off(32);
        edit(&mut json);
        value.extend(json);
        self.tree.insert(key, value)?;
        Ok(())
    }
}

/// 16 random bytes from the operating system's generator.
fn random_salt() -> [u8; 16] {
    use chacha20poly1305::aead::rand_core::RngCore;
    let mut salt = [0u8; 16];
    chacha20poly1305::aead::OsRng.fill_bytes(&mut salt);
    salt
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn audit() -> (tempfile::TempDir, Audit) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        (dir, Audit::open(&db).unwrap())
    }

    #[test]
    fn chain_verifies_and_an_edit_breaks_it_at_that_record() {
        let (_dir, audit) = audit();
        for i in 0..5 {
            audit
                .append(Event::new("user.created").link("acme").employee(format!("{i}")).personal(json!({"email": format!("{i}@x")})))
                .unwrap();
        }
        let v = audit.verify().unwrap();
        assert_eq!((v.records, v.head.seq, v.personal_checked, v.broken.clone()), (5, 5, 5, None));
        audit
            .tamper(3, |json| {
                let text = String::from_utf8(json.clone()).unwrap().replace("user.created", "user.updated");
                *json = text.into_bytes();
            })
            .unwrap();
        let v = audit.verify().unwrap();
        assert_eq!(v.broken.unwrap().seq, 3);
    }

    #[test]
    fn forgetting_keeps_the_chain_and_removes_the_payload() {
        let (_dir, audit) = audit();
        audit.append(Event::new("user.created").employee("7").personal(json!({"email": "ann@x"}))).unwrap();
        audit.append(Event::new("user.created").employee("8").personal(json!({"email": "bob@x"}))).unwrap();
        assert_eq!(audit.forget("7").unwrap(), 1);
        let v = audit.verify().unwrap();
        assert_eq!((v.broken, v.erased, v.personal_checked), (None, 1, 1));
        let entries = audit.read(&Filter::default(), None).unwrap();
        assert!(entries[0].erased && entries[0].personal_data.is_none());
        assert_eq!(entries[1].personal_data, Some(json!({"email": "bob@x"})));
    }

    #[test]
    fn filters_match_kind_prefixes_and_fields() {
        let (_dir, audit) = audit();
        audit.append(Event::new("user.created").link("a").employee("1")).unwrap();
        audit.append(Event::new("user.suspended").link("b").employee("1")).unwrap();
        audit.append(Event::new("users.other").link("a")).unwrap();
        let f = Filter { kind: Some("user".into()), ..Filter::default() };
        assert_eq!(audit.read(&f, None).unwrap().len(), 2);
        let f = Filter { link: Some("a".into()), ..Filter::default() };
        assert_eq!(audit.read(&f, None).unwrap().len(), 2);
        assert_eq!(audit.read(&Filter::default(), Some(1)).unwrap()[0].record.seq, 3);
    }

    #[test]
    fn a_new_handle_continues_the_chain() {
        // A fresh handle reads the head from the tree. (Reopening the
        // directory in the same process can race sled's flusher thread for
        // the file lock; the crash and CLI tests reopen across processes.)
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        {
            let audit = Audit::open(&db).unwrap();
            audit.append(Event::new("a")).unwrap();
            audit.append(Event::new("b")).unwrap();
        }
        let audit = Audit::open(&db).unwrap();
        assert_eq!(audit.head().seq, 2);
        audit.append(Event::new("c")).unwrap();
        assert_eq!(audit.verify().unwrap().broken, None);
    }
}
