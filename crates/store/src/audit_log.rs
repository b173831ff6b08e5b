//! The audit log on disk: sealed records (`switchyard-audit`) in one sled
//! tree of the state database, so a record that belongs to a state change
//! commits in that change's transaction.
//!
//! Records are stored in blocks (`block.rs`): the records written together
//! (a wave's completions, a call's requests, one state change's record)
//! are one sled value, so a record costs its share of one write (group
//! commit) with the same chain and the same durability point as the state
//! change it belongs to.
//!
//! Three key spaces: `B first_seq` -> a block of consecutive records, each
//! hash ++ record JSON and its personal payload (salt ++ JSON) if it has
//! one; `X first_seq` -> the block's subject index (whose payloads it
//! holds, for erasure; absent when it holds none); `M name` (the anchor,
//! last seen configuration and plugin hashes). One tree means every write
//! is one atomic sled batch (or one tree in a state transaction). Logs
//! written before blocks (`L seq`, `P seq`, `S employee \0 seq`) are moved
//! into blocks when the log is opened (`legacy.rs`).

use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context, anyhow};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use switchyard_audit::{
    Entry, Event, Filter, GENESIS, Head, Kind, Pruned, Sealed, Verification, Verifier,
    open_payload, open_record, rfc3339_ms, seal, time_key,
};
use switchyard_model::now_ms;

use crate::AuditStore;
use block::Item;

mod block;
mod legacy;

/// The audit log. Cheap to clone; clones share the chain head.
#[derive(Clone)]
pub struct AuditLog {
    tree: sled::Tree,
    head: Arc<Mutex<Head>>,
}

const BLOCK: u8 = b'B';
const SUBJECTS: u8 = b'X';
const META: u8 = b'M';

fn block_key(first: u64) -> [u8; 9] {
    let mut k = [BLOCK; 9];
    k[1..].copy_from_slice(&first.to_be_bytes());
    k
}

fn subjects_key(first: u64) -> [u8; 9] {
    let mut k = [SUBJECTS; 9];
    k[1..].copy_from_slice(&first.to_be_bytes());
    k
}

fn meta_key(name: &str) -> Vec<u8> {
    let mut k = vec![META];
    k.extend_from_slice(name.as_bytes());
    k
}

/// The sequence number at the end of a key (`B seq`, `X seq`).
fn seq_of(key: &[u8]) -> u64 {
    key.len()
        .checked_sub(8)
        .and_then(|at| key[at..].try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

/// The block of `sealed` (consecutive records) and its subject index.
/// Records per block at most. A block is one sled value, and sled
/// rewrites a whole node to change one key in it: a wave of 100,000
/// records as one value took a sync's memory past 24 GiB.
const BLOCK_RECORDS: usize = 128;

fn add_to(sealed: &[Sealed], batch: &mut sled::Batch) {
    for block in sealed.chunks(BLOCK_RECORDS) {
        add_block(block, batch);
    }
}

fn add_block(sealed: &[Sealed], batch: &mut sled::Batch) {
    let Some(first) = sealed.first() else {
        return;
    };
    batch.insert(&block_key(first.seq)[..], block::encode_sealed(sealed));
    let subjects = (0u32..).zip(sealed).filter_map(|(at, s)| {
        let subject = s.personal.as_ref()?.subject.as_deref()?;
        Some((at, subject))
    });
    put_subjects(batch, first.seq, subjects);
}

/// Write (or, when empty, remove) the subject index of a block.
fn put_subjects<'a>(
    batch: &mut sled::Batch,
    first: u64,
    subjects: impl IntoIterator<Item = (u32, &'a str)>,
) {
    let mut subjects = subjects.into_iter().peekable();
    if subjects.peek().is_some() {
        batch.insert(&subjects_key(first)[..], block::encode_subjects(subjects));
    } else {
        batch.remove(&subjects_key(first)[..]);
    }
}

fn damaged(first: u64) -> impl FnOnce(block::Damaged) -> anyhow::Error {
    move |e| anyhow!("{e} (the block starting at record {first})")
}

/// Holds the chain head while records are written with a state change; see
/// [`AuditLog::writer`].
pub struct Writer<'a> {
    head: MutexGuard<'a, Head>,
}

impl Writer<'_> {
    /// Seal `event` as the next record. Nothing is written yet.
    pub fn prepare(&self, event: Event) -> anyhow::Result<Sealed> {
        seal(&self.head, event, now_ms())
    }

    /// Seal `events` as the next records, chained in memory. Nothing is
    /// written yet.
    pub fn prepare_all(&self, events: Vec<Event>) -> anyhow::Result<Vec<Sealed>> {
        chain(&self.head, events)
    }

    /// Write sealed records, as one block, inside a transaction that
    /// includes [`AuditLog::tree`] (and the caller's own trees).
    pub fn write(
        tree: &TransactionalTree,
        sealed: &[Sealed],
    ) -> Result<(), ConflictableTransactionError<anyhow::Error>> {
        let mut batch = sled::Batch::default();
        add_to(sealed, &mut batch);
        tree.apply_batch(&batch)?;
        Ok(())
    }

    /// The transaction committed: move the head past `sealed`.
    pub fn committed(mut self, sealed: &[Sealed]) {
        if let Some(last) = sealed.last() {
            *self.head = last.head.clone();
        }
    }
}

/// Seal `events` after `head`, in order.
fn chain(head: &Head, events: Vec<Event>) -> anyhow::Result<Vec<Sealed>> {
    let mut sealed: Vec<Sealed> = Vec::with_capacity(events.len());
    for event in events {
        let after = sealed.last().map_or(head, |s| &s.head);
        let next = seal(after, event, now_ms())?;
        sealed.push(next);
    }
    Ok(sealed)
}

impl AuditLog {
    /// Open the audit trees of `db` and read the chain head (moving a log
    /// written before blocks into blocks first).
    pub fn open(db: &sled::Db) -> anyhow::Result<AuditLog> {
        let tree = db
            .open_tree("audit")
            .context("failed to open state tree `audit`")?;
        legacy::migrate(&tree)?;
        let audit = AuditLog {
            tree,
            head: Arc::new(Mutex::new(Head {
                seq: 0,
                hash: GENESIS.into(),
                at_ms: 0,
            })),
        };
        let last = audit.tree.scan_prefix([BLOCK]).next_back().transpose();
        let head = match last.context("failed to read the audit log")? {
            Some((k, v)) => {
                let first = seq_of(&k);
                let items = block::decode(&v).map_err(damaged(first))?;
                let Some(item) = items.last() else {
                    return Err(anyhow!(
                        "damaged audit block: no records (the block starting at record {first})"
                    ));
                };
                let (hash, record) = open_record(item.value)?;
                Head {
                    seq: first + items.len() as u64 - 1,
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

    /// The tree to include in a transaction that writes records.
    pub fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// Take the chain head to write records together with a state change:
    /// `prepare` the events, include [`AuditLog::tree`] in the transaction
    /// and call [`Writer::write`] inside it, then [`Writer::committed`].
    /// The head stays locked until the writer is dropped, so records are
    /// chained in the order they are committed.
    pub fn writer(&self) -> Writer<'_> {
        Writer { head: self.lock() }
    }

    /// Call `f` with every stored record in order: its sequence number and
    /// its item.
    fn each(&self, f: &mut dyn FnMut(u64, Item<'_>) -> anyhow::Result<bool>) -> anyhow::Result<()> {
        for item in self.tree.scan_prefix([BLOCK]) {
            let (k, v) = item.context("failed to read the audit log")?;
            let first = seq_of(&k);
            for (seq, item) in (first..).zip(block::decode(&v).map_err(damaged(first))?) {
                if !f(seq, item)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The block holding record `seq`: its first sequence number and bytes.
    fn block_of(&self, seq: u64) -> anyhow::Result<Option<(u64, sled::IVec)>> {
        let found = self
            .tree
            .range(block_key(0)..=block_key(seq))
            .next_back()
            .transpose()
            .context("failed to read the audit log")?;
        Ok(found.map(|(k, v)| (seq_of(&k), v)))
    }

    /// Rewrite record `seq`'s stored value in its block with `edit`.
    /// Returns whether the record exists.
    fn edit_block(
        &self,
        seq: u64,
        batch: &mut sled::Batch,
        edit: &mut dyn FnMut(&mut Vec<u8>),
    ) -> anyhow::Result<bool> {
        let Some((first, bytes)) = self.block_of(seq)? else {
            return Ok(false);
        };
        let items = block::decode(&bytes).map_err(damaged(first))?;
        let Some(at) = usize::try_from(seq - first)
            .ok()
            .filter(|&i| i < items.len())
        else {
            return Ok(false);
        };
        let mut owned: Vec<(Vec<u8>, Option<Vec<u8>>)> = items
            .iter()
            .map(|i| (i.value.to_vec(), i.payload.map(<[u8]>::to_vec)))
            .collect();
        edit(&mut owned[at].0);
        let encoded = block::encode(owned.iter().map(|(value, payload)| Item {
            value,
            payload: payload.as_deref(),
        }));
        batch.insert(&block_key(first)[..], encoded);
        Ok(true)
    }
}

/// An entry as read back: the record, its hash and its payload.
fn entry(seq: u64, item: Item<'_>) -> anyhow::Result<Entry> {
    let (hash, record) = open_record(item.value).with_context(|| format!("audit record {seq}"))?;
    let mut personal_data = None;
    let mut erased = false;
    if record.personal.is_some() {
        match item.payload {
            Some(p) if p.len() >= 16 => personal_data = open_payload(p),
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

impl AuditStore for AuditLog {
    /// Test support: overwrite the stored JSON of record `seq` (to show
    /// that verification catches it). Not used by the product.
    fn tamper(&self, seq: u64, edit: &mut dyn FnMut(&mut Vec<u8>)) -> anyhow::Result<()> {
        let mut batch = sled::Batch::default();
        let found = self.edit_block(seq, &mut batch, &mut |value| {
            let mut json = value.split_off(32.min(value.len()));
            edit(&mut json);
            value.extend(json);
        })?;
        if !found {
            return Err(anyhow!("no audit record {seq}"));
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Append records on their own (not tied to a state change), as one
    /// block.
    fn append_all(&self, events: Vec<Event>) -> anyhow::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let writer = self.writer();
        let sealed = writer.prepare_all(events)?;
        let mut batch = sled::Batch::default();
        add_to(&sealed, &mut batch);
        self.tree
            .apply_batch(batch)
            .context("failed to write the audit log")?;
        writer.committed(&sealed);
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

    /// Remember a value (see [`AuditStore::remembered`]).
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
        self.each(&mut |seq, item| {
            let entry = entry(seq, item)?;
            if filter.matches(&entry.record) {
                matched += 1;
                f(entry)?;
            }
            Ok(true)
        })?;
        Ok(matched)
    }

    /// Check the whole chain from the anchor; stop at the first break.
    fn verify_with(&self, checked: &mut dyn FnMut(u64)) -> anyhow::Result<Verification> {
        let mut verifier = Verifier::new(self.anchor()?);
        let mut n = 0u64;
        self.each(&mut |seq, item| {
            n += 1;
            if n.is_multiple_of(1_000) {
                checked(n);
            }
            Ok(verifier.check(seq, item.value, item.payload))
        })?;
        Ok(verifier.finish())
    }

    /// The hash of record `seq`, if it is still kept.
    fn hash_of(&self, seq: u64) -> anyhow::Result<Option<String>> {
        let Some((first, bytes)) = self.block_of(seq)? else {
            return Ok(None);
        };
        let items = block::decode(&bytes).map_err(damaged(first))?;
        Ok(usize::try_from(seq - first)
            .ok()
            .and_then(|at| items.get(at))
            .and_then(|item| switchyard_audit::split_record(item.value).ok())
            .map(|(hash, _)| hex::encode(hash)))
    }

    /// Delete records before `cutoff_ms`, move the anchor to the last one
    /// deleted, and record the pruning in the chain (`cause` says why).
    fn prune(&self, cutoff_ms: u64, cause: &str) -> anyhow::Result<Pruned> {
        /// Records deleted per transaction (each moves the anchor); a
        /// block is never split across two.
        const CHUNK: usize = 10_000;
        let cutoff = time_key(&rfc3339_ms(cutoff_ms));
        let mut removed = 0u64;
        let mut anchor: Option<Head> = None;
        loop {
            // Holding the head keeps appends out while the front is cut.
            let head = self.lock();
            let mut batch = sled::Batch::default();
            let mut doomed = 0usize;
            let mut last: Option<Head> = None;
            for found in self.tree.scan_prefix([BLOCK]) {
                let (k, v) = found.context("failed to read the audit log")?;
                let first = seq_of(&k);
                let items = block::decode(&v).map_err(damaged(first))?;
                // Records of this block that go: older than the cutoff, and
                // never the newest record (the chain head must stay).
                let mut gone = 0;
                for (seq, item) in (first..).zip(&items) {
                    let (hash, record) = open_record(item.value)?;
                    if time_key(&record.at) >= cutoff || seq == head.seq {
                        break;
                    }
                    last = Some(Head {
                        seq,
                        hash,
                        at_ms: 0,
                    });
                    gone += 1;
                }
                if gone == 0 {
                    break;
                }
                batch.remove(&k[..]);
                batch.remove(&subjects_key(first)[..]);
                if gone < items.len() {
                    // Split: the block's newer records stay, under the
                    // first of them, with their subjects.
                    let rest = first + gone as u64;
                    let kept = block::encode(items[gone..].iter().copied());
                    batch.insert(&block_key(rest)[..], kept);
                    let index = self.tree.get(subjects_key(first))?;
                    let subjects = match &index {
                        Some(bytes) => block::decode_subjects(bytes).map_err(damaged(first))?,
                        None => Vec::new(),
                    };
                    let shift = gone as u32;
                    put_subjects(
                        &mut batch,
                        rest,
                        subjects
                            .into_iter()
                            .filter_map(|(at, e)| Some((at.checked_sub(shift)?, e))),
                    );
                }
                doomed += gone;
                if gone < items.len() || doomed >= CHUNK {
                    break;
                }
            }
            let Some(last) = last else {
                break;
            };
            let encoded = serde_json::to_vec(&last).context("failed to encode the audit anchor")?;
            batch.insert(meta_key("anchor"), encoded);
            self.tree
                .apply_batch(batch)
                .context("failed to write the audit log")?;
            drop(head);
            removed += doomed as u64;
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
                    "older_than": rfc3339_ms(cutoff_ms),
                })),
        )?;
        Ok(Pruned {
            records: removed,
            through: anchor.seq,
        })
    }

    /// Erase the personal payloads of an employee. Returns how many.
    fn forget(&self, employee: &str) -> anyhow::Result<u64> {
        // The head is held so that no block is rewritten under an append.
        let _head = self.lock();
        let mut batch = sled::Batch::default();
        let mut erased = 0u64;
        for found in self.tree.scan_prefix([SUBJECTS]) {
            let (k, index) = found.context("failed to read the audit log")?;
            let first = seq_of(&k);
            let subjects = block::decode_subjects(&index).map_err(damaged(first))?;
            let (theirs, others): (Vec<_>, Vec<_>) =
                subjects.into_iter().partition(|(_, e)| *e == employee);
            if theirs.is_empty() {
                continue;
            }
            let Some(bytes) = self.tree.get(block_key(first))? else {
                continue;
            };
            let items = block::decode(&bytes).map_err(damaged(first))?;
            let kept = (0u32..).zip(&items).map(|(at, item)| Item {
                payload: item
                    .payload
                    .filter(|_| !theirs.iter().any(|(t, _)| *t == at)),
                ..*item
            });
            batch.insert(&block_key(first)[..], block::encode(kept));
            put_subjects(&mut batch, first, others);
            erased += theirs.len() as u64;
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

    /// Replace `from` with `to` in the stored JSON of record `seq`.
    fn edit(audit: &AuditLog, seq: u64, from: &str, to: &str) {
        audit
            .tamper(seq, &mut |json: &mut Vec<u8>| {
                let text = String::from_utf8(json.clone()).unwrap().replace(from, to);
                *json = text.into_bytes();
            })
            .unwrap();
    }

    /// Records about employees `i`, sealed after `head` at the times `at`.
    fn sealed_at(head: &Head, records: &[(u64, u64)]) -> Vec<Sealed> {
        let mut sealed: Vec<Sealed> = Vec::new();
        for &(i, at) in records {
            let after = sealed.last().map_or(head, |s| &s.head);
            let next = seal(after, user(i), at).unwrap();
            sealed.push(next);
        }
        sealed
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
        edit(&audit, 3, "user.created", "user.updated");
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

    fn user(i: u64) -> Event {
        Event::new(Kind::UserCreated)
            .link("acme")
            .employee(format!("{i}"))
            .personal(json!({"email": format!("{i}@x")}))
    }

    fn blocks(audit: &AuditLog) -> Vec<(u64, usize)> {
        audit
            .tree
            .scan_prefix([BLOCK])
            .map(|found| {
                let (k, v) = found.unwrap();
                (seq_of(&k), block::decode(&v).unwrap().len())
            })
            .collect()
    }

    #[test]
    fn a_group_is_one_block_and_each_record_stays_addressable() {
        let (_dir, audit) = audit();
        audit.append(user(0)).unwrap();
        audit.append_all((1..=5).map(user).collect()).unwrap();
        audit.append(user(6)).unwrap();
        assert_eq!(blocks(&audit), [(1, 1), (2, 5), (7, 1)]);
        let v = audit.verify().unwrap();
        assert_eq!(
            (v.records, v.head.seq, v.personal_checked, v.broken),
            (7, 7, 7, None)
        );
        let entries = audit.read(&Filter::default(), None).unwrap();
        let seqs: Vec<u64> = entries.iter().map(|e| e.record.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(entries[3].personal_data, Some(json!({"email": "3@x"})));
        for e in &entries {
            assert_eq!(audit.hash_of(e.record.seq).unwrap(), Some(e.hash.clone()));
        }
        assert_eq!(audit.hash_of(8).unwrap(), None);

        // Erasure rewrites the block without that payload; the rest of it
        // still reads and the chain verifies.
        assert_eq!(audit.forget("3").unwrap(), 1);
        let entries = audit.read(&Filter::default(), None).unwrap();
        assert!(entries[3].erased && entries[3].personal_data.is_none());
        assert_eq!(entries[4].personal_data, Some(json!({"email": "4@x"})));
        let v = audit.verify().unwrap();
        assert_eq!((v.erased, v.personal_checked, v.broken), (1, 6, None));

        // An edit inside a block is found at its record.
        edit(&audit, 5, "acme", "acne");
        assert_eq!(audit.verify().unwrap().broken.unwrap().seq, 5);
    }

    #[test]
    fn pruning_removes_the_blocks_before_the_cutoff_and_the_chain_verifies_from_the_anchor() {
        let (_dir, audit) = audit();
        audit.append_all((1..=4).map(user).collect()).unwrap();
        let old = audit.read(&Filter::default(), None).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let cutoff = now_ms();
        std::thread::sleep(std::time::Duration::from_millis(5));
        audit.append_all((5..=7).map(user).collect()).unwrap();
        assert_eq!(blocks(&audit), [(1, 4), (5, 3)]);
        let pruned = audit.prune(cutoff, "retention").unwrap();
        assert_eq!((pruned.records, pruned.through), (4, 4));
        assert_eq!(audit.anchor().unwrap().hash, old[3].hash);
        assert_eq!(blocks(&audit), [(5, 3), (8, 1)]);
        let v = audit.verify().unwrap();
        assert_eq!((v.records, v.broken), (4, None));
        // The pruned blocks' subject indexes went with them.
        let indexes: Vec<u64> = audit
            .tree
            .scan_prefix([SUBJECTS])
            .map(|found| seq_of(&found.unwrap().0))
            .collect();
        assert_eq!(indexes, [5]);
    }

    #[test]
    fn pruning_inside_one_block_keeps_its_newer_records() {
        let (_dir, audit) = audit();
        // One block whose records straddle the cutoff: sealed at times
        // before and after it.
        let writer = audit.writer();
        let sealed = sealed_at(
            &writer.head,
            &[(1, 1_000), (2, 2_000), (3, 9_000), (4, 9_500)],
        );
        let mut batch = sled::Batch::default();
        add_to(&sealed, &mut batch);
        audit.tree.apply_batch(batch).unwrap();
        writer.committed(&sealed);
        assert_eq!(blocks(&audit), [(1, 4)]);
        let pruned = audit.prune(5_000, "retention").unwrap();
        assert_eq!((pruned.records, pruned.through), (2, 2));
        assert_eq!(blocks(&audit), [(3, 2), (5, 1)]);
        // The kept records' subjects moved with them: erasure finds them.
        assert_eq!(audit.forget("4").unwrap(), 1);
        assert_eq!(audit.forget("1").unwrap(), 0);
        let v = audit.verify().unwrap();
        assert_eq!((v.records, v.anchor.seq, v.broken), (3, 2, None));
        let kept: Vec<u64> = audit
            .read(&Filter::default(), None)
            .unwrap()
            .iter()
            .map(|e| e.record.seq)
            .collect();
        assert_eq!(kept, [3, 4, 5]);
    }

    #[test]
    fn a_log_written_before_blocks_is_moved_into_blocks_and_still_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("audit").unwrap();
        let genesis = Head {
            seq: 0,
            hash: GENESIS.into(),
            at_ms: 0,
        };
        let records: Vec<(u64, u64)> = (1..=2_500).map(|i| (i, 1_000 + i)).collect();
        let sealed = sealed_at(&genesis, &records);
        let head = sealed[sealed.len() - 1].head.clone();
        legacy::tests::write_legacy(&tree, &sealed);
        let audit = AuditLog::open(&db).unwrap();
        assert_eq!(blocks(&audit), [(1, 1_000), (1_001, 1_000), (2_001, 500)]);
        assert_eq!(audit.head(), head);
        let v = audit.verify().unwrap();
        assert_eq!(
            (v.records, v.personal_checked, v.broken),
            (2_500, 2_500, None)
        );
        assert!(audit.tree.scan_prefix([b'L']).next().is_none());
        assert!(audit.tree.scan_prefix([b'P']).next().is_none());
        assert!(audit.tree.scan_prefix([b'S']).next().is_none());
        // Erasure still finds their payloads through the subject index.
        assert_eq!(audit.forget("1234").unwrap(), 1);
        audit.append(user(9)).unwrap();
        let v = audit.verify().unwrap();
        assert_eq!((v.records, v.erased, v.broken), (2_501, 1, None));
    }

    #[test]
    fn a_damaged_block_is_an_error_not_a_panic() {
        let (_dir, audit) = audit();
        audit.append_all((1..=3).map(user).collect()).unwrap();
        audit.tree.insert(block_key(1), &[1, 200, 0][..]).unwrap();
        let err = audit.verify().unwrap_err().to_string();
        assert!(err.contains("damaged audit block"), "{err}");
        assert!(audit.hash_of(2).is_err());
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
