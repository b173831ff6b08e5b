//! Audit logs written before blocks: one key per record (`L seq` -> hash
//! ++ record JSON), one per personal payload (`P seq` -> salt ++ JSON) and
//! one per payload's subject (`S employee \0 seq`). Opening such a log
//! moves its records into blocks, a chunk at a time, each chunk in one
//! atomic batch (its old keys removed, its block and subject index
//! written), so an interrupted move resumes where it stopped. The records'
//! bytes are unchanged: the chain verifies as before.

use anyhow::Context;

use super::{Item, block, block_key, put_subjects, seq_of};

const LOG: u8 = b'L';
const PAYLOAD: u8 = b'P';
const SUBJECT: u8 = b'S';

fn subject_key(employee: &str, seq: u64) -> Vec<u8> {
    let mut k = vec![SUBJECT];
    k.extend_from_slice(employee.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Records per block written by the move.
const CHUNK: usize = 1_000;

fn payload_key(seq: u64) -> [u8; 9] {
    let mut k = [PAYLOAD; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Move every `L`/`P` record of `tree` into blocks. Returns how many.
pub(super) fn migrate(tree: &sled::Tree) -> anyhow::Result<u64> {
    let mut moved = 0u64;
    loop {
        // (seq, value, payload) of the next run of consecutive records.
        let mut chunk: Vec<(u64, sled::IVec, Option<sled::IVec>)> = Vec::new();
        for found in tree.scan_prefix([LOG]) {
            let (k, value) = found.context("failed to read the audit log")?;
            let seq = seq_of(&k);
            // A gap (a damaged log) starts a new block: a block's records
            // are consecutive.
            if chunk.len() == CHUNK || chunk.last().is_some_and(|(last, ..)| seq != last + 1) {
                break;
            }
            let payload = tree
                .get(payload_key(seq))
                .context("failed to read the audit log")?;
            chunk.push((seq, value, payload));
        }
        let Some((first, ..)) = chunk.first() else {
            break;
        };
        if moved == 0 {
            tracing::info!("moving the audit log into blocks (written by an older version)");
        }
        let mut batch = sled::Batch::default();
        let encoded = block::encode(chunk.iter().map(|(_, value, payload)| Item {
            value,
            payload: payload.as_deref(),
        }));
        batch.insert(&block_key(*first)[..], encoded);
        // Whose payloads the block holds: a payload's subject is its
        // record's employee.
        let mut subjects: Vec<(u32, String)> = Vec::new();
        for (at, (seq, value, payload)) in (0u32..).zip(&chunk) {
            let mut k = [LOG; 9];
            k[1..].copy_from_slice(&seq.to_be_bytes());
            batch.remove(&k[..]);
            batch.remove(&payload_key(*seq)[..]);
            // A record that does not parse moves as it is (verification
            // reports it); its payload, if any, is not indexed.
            let employee = switchyard_audit::open_record(value)
                .ok()
                .and_then(|(_, record)| record.employee);
            if let Some(employee) = employee {
                batch.remove(subject_key(&employee, *seq));
                if payload.is_some() {
                    subjects.push((at, employee));
                }
            }
        }
        put_subjects(
            &mut batch,
            *first,
            subjects.iter().map(|(at, e)| (*at, e.as_str())),
        );
        tree.apply_batch(batch)
            .context("failed to write the audit log")?;
        moved += chunk.len() as u64;
    }
    if moved > 0 {
        tree.flush().context("failed to flush the audit log")?;
        tracing::info!(records = moved, "audit log moved into blocks");
    }
    Ok(moved)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Write records as a version before blocks did.
    pub(crate) fn write_legacy(tree: &sled::Tree, sealed: &[switchyard_audit::Sealed]) {
        for s in sealed {
            let mut k = [LOG; 9];
            k[1..].copy_from_slice(&s.seq.to_be_bytes());
            tree.insert(k, s.value.as_slice()).unwrap();
            if let Some(p) = &s.personal {
                tree.insert(payload_key(s.seq), p.payload.as_slice())
                    .unwrap();
                if let Some(subject) = &p.subject {
                    tree.insert(super::subject_key(subject, s.seq), &[][..])
                        .unwrap();
                }
            }
        }
    }
}
