//! The audit log on disk: sealed records (`switchyard-audit`) in one sled
//! tree of the state database, so a record that belongs to a state change
//! commits in that change's transaction.
//!
//! Four key spaces: `L seq` -> hash ++ record JSON; `P seq` -> salt ++
//! personal payload JSON; `S employee \0 seq` (the payloads of an employee,
//! for erasure); `M name` (the anchor, last seen configuration and plugin
//! hashes). One tree means every write is one atomic sled batch (or one
//! tree in a state transaction).

use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context, anyhow};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use switchyard_audit::{
    Entry, Event, Filter, GENESIS, Head, Kind, Pruned, Sealed, Verification, Verifier,
    open_payload, open_record, rfc3339_ms, seal, time_key,
};
use switchyard_model::now_ms;

use crate::AuditStore;

/// The audit log. Cheap to clone; clones share the chain head.
#[derive(Clone)]
pub struct AuditLog {
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

/// The sequence number at the end of a key (`L seq`, `P seq`, `S .. seq`).
fn seq_of(key: &[u8]) -> u64 {
    key.len()
        .checked_sub(8)
        .and_then(|at| key[at..].try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

fn add_to(sealed: &Sealed, batch: &mut sled::Batch) {
    batch.insert(&log_key(sealed.seq)[..], sealed.value.as_slice());
    if let Some(personal) = &sealed.personal {
        batch.insert(&payload_key(sealed.seq)[..], personal.payload.as_slice());
        if let Some(subject) = &personal.subject {
            batch.insert(subject_key(subject, sealed.seq), &[][..]);
        }
    }
}

/// Holds the chain head while a record is written with a state change; see
/// [`AuditLog::writer`].
pub struct Writer<'a> {
    head: MutexGuard<'a, Head>,
}

impl Writer<'_> {
    /// Seal `event` as the next record. Nothing is written yet.
    pub fn prepare(&self, event: Event) -> anyhow::Result<Sealed> {
        seal(&self.head, event, now_ms())
    }

    /// Write a sealed record inside a transaction that includes
    /// [`AuditLog::tree`] (and the caller's own trees).
    pub fn write(
        tree: &TransactionalTree,
        sealed: &Sealed,
    ) -> Result<(), ConflictableTransactionError<anyhow::Error>> {
        let mut batch = sled::Batch::default();
        add_to(sealed, &mut batch);
        tree.apply_batch(&batch)?;
        Ok(())
    }

    /// The transaction committed: move the head.
    pub fn committed(mut self, sealed: Sealed) {
        *self.head = sealed.head;
    }
}

impl AuditLog {
    /// Open the audit trees of `db` and read the chain head.
    pub fn open(db: &sled::Db) -> anyhow::Result<AuditLog> {
        let tree = |name: &str| {
            db.open_tree(name)
                .with_context(|| format!("failed to open state tree `{name}`"))
        };
        let audit = AuditLog {
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
                let (hash, record) = open_record(&v)?;
                Head {
                    seq: seq_of(&k),
                    ..switchyard_audit::head_of(hash, &record)
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
    /// `prepare` the event, include [`AuditLog::tree`] in the transaction and
    /// call [`Writer::write`] inside it, then [`Writer::committed`]. The
    /// head stays locked until the writer is dropped, so records are
    /// chained in the order they are committed.
    pub fn writer(&self) -> Writer<'_> {
        Writer { head: self.lock() }
    }

    fn entry(&self, key: &[u8], value: &[u8]) -> anyhow::Result<Entry> {
        let (hash, record) =
            open_record(value).with_context(|| format!("audit record {}", seq_of(key)))?;
        let mut personal_data = None;
        let mut erased = false;
        if record.personal.is_some() {
            match self
                .tree
                .get(payload_key(seq_of(key)))
                .context("failed to read the audit log")?
            {
                Some(p) if p.len() >= 16 => personal_data = open_payload(&p),
                _ => erased = true,
            }
        }
        Ok(Entry {
            record,
            hash,
            personal_data,
            erased,
        })
    }
}

impl AuditStore for AuditLog {
    /// Test support: overwrite the stored bytes of record `seq` (to show
    /// that verification catches it). Not used by the product.
    fn tamper(&self, seq: u64, edit: &mut dyn FnMut(&mut Vec<u8>)) -> anyhow::Result<()> {
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

    /// Append records on their own (not tied to a state change), in one
    /// transaction.
    fn append_all(&self, events: Vec<Event>) -> anyhow::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut head = self.lock();
        let mut prepared = Vec::with_capacity(events.len());
        let mut next = head.clone();
        for event in events {
            let p = seal(&next, event, now_ms())?;
            next = p.head.clone();
            prepared.push(p);
        }
        let mut batch = sled::Batch::default();
        for record in &prepared {
            add_to(record, &mut batch);
        }
        self.tree
            .apply_batch(batch)
            .context("failed to write the audit log")?;
        *head = next;
        Ok(())
    }

    /// Append one record on its own.
    fn append(&self, event: Event) -> anyhow::Result<()> {
        self.append_all(vec![event])
    }

    /// The last record's position.
    fn head(&self) -> Head {
        self.lock().clone()
    }

    /// Where verification starts: the last pruned record, or genesis.
    fn anchor(&self) -> anyhow::Result<Head> {
        Ok(
            match self
                .tree
                .get(meta_key("anchor"))
                .context("failed to read the audit log")?
            {
                Some(v) => serde_json::from_slice(&v).context("corrupt audit anchor")?,
                None => Head {
                    seq: 0,
                    hash: GENESIS.into(),
                    at_ms: 0,
                },
            },
        )
    }

    /// A value remembered by the audit log (e.g. the last configuration
    /// hash seen), to record changes only once.
    fn remembered(&self, name: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .tree
            .get(meta_key(&format!("seen/{name}")))
            .context("failed to read the audit log")?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Remember a value (see [`Audit::remembered`]).
    fn remember(&self, name: &str, value: &str) -> anyhow::Result<()> {
        self.tree
            .insert(meta_key(&format!("seen/{name}")), value.as_bytes())
            .context("failed to write the audit log")?;
        Ok(())
    }

    /// Call `f` with each record matching `filter`, oldest first, without
    /// holding them all in memory (exports). Returns how many matched.
    fn scan(
        &self,
        filter: &Filter,
        f: &mut dyn FnMut(Entry) -> anyhow::Result<()>,
    ) -> anyhow::Result<usize> {
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
    fn verify_with(&self, checked: &mut dyn FnMut(u64)) -> anyhow::Result<Verification> {
        let mut verifier = Verifier::new(self.anchor()?);
        for (n, item) in (1u64..).zip(self.tree.scan_prefix([LOG])) {
            if n % 1_000 == 0 {
                checked(n);
            }
            let (k, value) = item.context("failed to read the audit log")?;
            let seq = seq_of(&k);
            let payload = self
                .tree
                .get(payload_key(seq))
                .context("failed to read the audit log")?;
            if !verifier.check(seq, &value, payload.as_deref()) {
                break;
            }
        }
        Ok(verifier.finish())
    }

    /// The hash of record `seq`, if it is still kept.
    fn hash_of(&self, seq: u64) -> anyhow::Result<Option<String>> {
        Ok(self
            .tree
            .get(log_key(seq))
            .context("failed to read the audit log")?
            .and_then(|v| {
                switchyard_audit::split_record(&v)
                    .ok()
                    .map(|(h, _)| hex::encode(h))
            }))
    }

    /// Delete records before `cutoff_ms`, move the anchor to the last one
    /// deleted, and record the pruning in the chain (`cause` says why).
    fn prune(&self, cutoff_ms: u64, cause: &str) -> anyhow::Result<Pruned> {
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
                let (hash, record) = open_record(&v)?;
                // Never remove the newest record: the chain head must stay.
                if doomed.len() == CHUNK
                    || time_key(&record.at) >= time_key(&cutoff)
                    || seq_of(&k) == head.seq
                {
                    break;
                }
                last = Some(Head {
                    seq: seq_of(&k),
                    hash,
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
            self.tree
                .apply_batch(batch)
                .context("failed to write the audit log")?;
            drop(head);
            removed += doomed.len() as u64;
            anchor = Some(last);
        }
        let Some(anchor) = anchor else {
            return Ok(Pruned::default());
        };
        self.append(
            Event::new(Kind::AuditPruned)
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
    fn forget(&self, employee: &str) -> anyhow::Result<u64> {
        let mut batch = sled::Batch::default();
        let mut erased = 0;
        for item in self.tree.scan_prefix(subject_prefix(employee)) {
            let (k, _) = item.context("failed to read the audit log")?;
            batch.remove(&payload_key(seq_of(&k))[..]);
            batch.remove(k);
            erased += 1;
        }
        self.tree
            .apply_batch(batch)
            .context("failed to write the audit log")?;
        Ok(erased)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn audit() -> (tempfile::TempDir, AuditLog) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        (dir, AuditLog::open(&db).unwrap())
    }

    #[test]
    fn chain_verifies_and_an_edit_breaks_it_at_that_record() {
        let (_dir, audit) = audit();
        for i in 0..5 {
            audit
                .append(
                    Event::new(Kind::UserCreated)
                        .link("acme")
                        .employee(format!("{i}"))
                        .personal(json!({"email": format!("{i}@x")})),
                )
                .unwrap();
        }
        let v = audit.verify().unwrap();
        assert_eq!(
            (v.records, v.head.seq, v.personal_checked, v.broken.clone()),
            (5, 5, 5, None)
        );
        audit
            .tamper(3, &mut |json: &mut Vec<u8>| {
                let text = String::from_utf8(json.clone())
                    .unwrap()
                    .replace("user.created", "user.updated");
                *json = text.into_bytes();
            })
            .unwrap();
        let v = audit.verify().unwrap();
        assert_eq!(v.broken.unwrap().seq, 3);
    }

    #[test]
    fn forgetting_keeps_the_chain_and_removes_the_payload() {
        let (_dir, audit) = audit();
        audit
            .append(
                Event::new(Kind::UserCreated)
                    .employee("7")
                    .personal(json!({"email": "ann@x"})),
            )
            .unwrap();
        audit
            .append(
                Event::new(Kind::UserCreated)
                    .employee("8")
                    .personal(json!({"email": "bob@x"})),
            )
            .unwrap();
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
        audit
            .append(Event::new(Kind::UserCreated).link("a").employee("1"))
            .unwrap();
        audit
            .append(Event::new(Kind::UserSuspended).link("b").employee("1"))
            .unwrap();
        audit
            .append(Event::new(Kind::RunStarted).link("a"))
            .unwrap();
        let f = Filter {
            kind: Some("user".into()),
            ..Filter::default()
        };
        assert_eq!(audit.read(&f, None).unwrap().len(), 2);
        let f = Filter {
            link: Some("a".into()),
            ..Filter::default()
        };
        assert_eq!(audit.read(&f, None).unwrap().len(), 2);
        assert_eq!(
            audit.read(&Filter::default(), Some(1)).unwrap()[0]
                .record
                .seq,
            3
        );
    }

    #[test]
    fn a_new_handle_continues_the_chain() {
        // A fresh handle reads the head from the tree. (Reopening the
        // directory in the same process can race sled's flusher thread for
        // the file lock; the crash and CLI tests reopen across processes.)
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        {
            let audit = AuditLog::open(&db).unwrap();
            audit.append(Event::new(Kind::RunStarted)).unwrap();
            audit.append(Event::new(Kind::RunFinished)).unwrap();
        }
        let audit = AuditLog::open(&db).unwrap();
        assert_eq!(audit.head().seq, 2);
        audit.append(Event::new(Kind::RunStarted)).unwrap();
        assert_eq!(audit.verify().unwrap().broken, None);
    }
}
