//! Scratch space on disk for work whose size grows with the workforce
//! (the identity-matching report): a temporary sled database with a small
//! cache, deleted when dropped, so that such work runs in bounded memory.

use std::path::Path;

use anyhow::Context;

/// Cache of a scratch database: what it may hold in memory.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// A temporary database in a directory of its own, removed on drop.
pub struct Scratch {
    db: sled::Db,
    _dir: tempfile::TempDir,
}

/// One keyspace of a [`Scratch`]: bytes to bytes, in key order.
#[derive(Clone)]
pub struct ScratchTree(sled::Tree);

impl Scratch {
    /// A new scratch database in a fresh directory under `parent` (the
    /// data directory: the system's temporary directory may be memory).
    pub fn open_in(parent: &Path) -> anyhow::Result<Scratch> {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("failed to create {}", parent.display()))?;
        let dir = tempfile::Builder::new()
            .prefix("scratch-")
            .tempdir_in(parent)
            .with_context(|| {
                format!("failed to make a scratch directory in {}", parent.display())
            })?;
        let db = sled::Config::new()
            .path(dir.path())
            .cache_capacity(CACHE_BYTES)
            .temporary(true)
            .open()
            .context("failed to open a scratch database")?;
        Ok(Scratch { db, _dir: dir })
    }

    /// The keyspace `name`.
    pub fn tree(&self, name: &str) -> anyhow::Result<ScratchTree> {
        Ok(ScratchTree(self.db.open_tree(name)?))
    }
}

impl ScratchTree {
    /// Set `key` to `value`.
    pub fn insert(&self, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
        self.0.insert(key, value)?;
        Ok(())
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self.0.get(key)?.map(|v| v.to_vec()))
    }

    /// Every entry whose key starts with `prefix`, in key order.
    pub fn scan_prefix(
        &self,
        prefix: &[u8],
    ) -> impl Iterator<Item = anyhow::Result<(Vec<u8>, Vec<u8>)>> + use<> {
        self.0
            .scan_prefix(prefix)
            .map(|r| Ok(r.map(|(k, v)| (k.to_vec(), v.to_vec()))?))
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> impl Iterator<Item = anyhow::Result<(Vec<u8>, Vec<u8>)>> + use<> {
        self.scan_prefix(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_space_holds_entries_in_order_and_is_gone_when_dropped() {
        let parent = tempfile::tempdir().unwrap();
        let scratch = Scratch::open_in(parent.path()).unwrap();
        let t = scratch.tree("t").unwrap();
        t.insert(b"b1", b"x").unwrap();
        t.insert(b"a2", b"y").unwrap();
        t.insert(b"a1", b"z").unwrap();
        let keys: Vec<Vec<u8>> = t.scan_prefix(b"a").map(|r| r.unwrap().0).collect();
        assert_eq!(keys, [b"a1".to_vec(), b"a2".to_vec()]);
        assert_eq!(t.get(b"b1").unwrap(), Some(b"x".to_vec()));
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 1);
        drop(t);
        drop(scratch);
        assert_eq!(
            std::fs::read_dir(parent.path()).unwrap().count(),
            0,
            "removed"
        );
    }
}
