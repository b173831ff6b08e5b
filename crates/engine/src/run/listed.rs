//! Who a listing returned, in a 17-byte entry per employee (18 in a hash
//! table of 2^21 buckets at a million, 36 MiB): what a full listing
//! must remember to tell departures (stored employees it did not list)
//! and a changes-only listing to tell who it did not cover, without
//! holding the records.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use sha2::{Digest, Sha256};
use switchyard_model::EmployeeId;

/// 128 bits of an id's SHA-256: two of a million ids share one with a
/// chance of about 10^-27.
type IdDigest = [u8; 16];

fn digest(id: &EmployeeId) -> IdDigest {
    let full = Sha256::digest(id.as_bytes());
    let mut d = [0; 16];
    d.copy_from_slice(&full[..16]);
    d
}

/// The digest is already uniform: its first eight bytes are the hash.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }
}

/// The employees listed so far, each with whether the link's scope
/// covers their last record.
#[derive(Default)]
pub(crate) struct Listed {
    ids: HashMap<IdDigest, bool, BuildHasherDefault<DigestHasher>>,
}

impl Listed {
    /// Note a listed record. Returns whether its id was listed before (a
    /// listing that moved while it was paged); the last record counts.
    pub(crate) fn note(&mut self, id: &EmployeeId, in_scope: bool) -> bool {
        self.ids.insert(digest(id), in_scope).is_some()
    }

    /// Whether the listing returned this id.
    pub(crate) fn contains(&self, id: &EmployeeId) -> bool {
        self.ids.contains_key(&digest(id))
    }

    /// Distinct employees listed whose last record the scope covers.
    pub(crate) fn in_scope(&self) -> usize {
        self.ids.values().filter(|&&covered| covered).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_record_of_an_id_decides_its_scope() {
        let mut listed = Listed::default();
        assert!(!listed.note(&"7".into(), true));
        assert!(!listed.note(&"8".into(), false));
        assert!(listed.note(&"7".into(), false));
        assert!(listed.contains(&"7".into()));
        assert!(!listed.contains(&"9".into()));
        assert_eq!((listed.ids.len(), listed.in_scope()), (2, 0));
    }
}
