//! The encrypted secret store: `{ secret = "store:NAME" }` in a
//! configuration, `switchyard secret set|list|rm` on the command line.
//!
//! One JSON file, `secrets.json` in the data directory. Each value is sealed
//! with ChaCha20-Poly1305 under a random 96-bit nonce, with the entry's name
//! as associated data (so an entry cannot be moved to another name). A check
//! entry, sealed the same way, makes a wrong key a clear error before any
//! value is touched, and keeps one store under one key. Names are stored in
//! clear so `list` needs no key.
//!
//! The key is 32 bytes, base64, from `SWITCHYARD_SECRET_KEY` or from the file
//! named by `SWITCHYARD_SECRET_KEY_FILE`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use serde::{Deserialize, Serialize};

use super::Secret;

/// Environment variable holding the store key (base64 of 32 bytes).
pub const KEY_ENV: &str = "SWITCHYARD_SECRET_KEY";
/// Environment variable naming a file that holds the store key.
pub const KEY_FILE_ENV: &str = "SWITCHYARD_SECRET_KEY_FILE";
/// The store's file name in the data directory.
pub const FILE_NAME: &str = "secrets.json";

const CHECK_PLAINTEXT: &[u8] = b"switchyard secret store v1";
const CHECK_AAD: &[u8] = b"switchyard:check";

/// Why the secret store refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Neither key variable is set.
    #[error(
        "no secret store key: set {KEY_ENV} (base64 of 32 random bytes, e.g. `openssl rand -base64 32`) or {KEY_FILE_ENV}"
    )]
    NoKey,
    /// The key is not base64 of 32 bytes, or its file cannot be read.
    #[error("bad secret store key: {0}")]
    BadKey(String),
    /// The key does not open this store.
    #[error("the secret store key does not match the store {}: wrong {KEY_ENV} / {KEY_FILE_ENV}, or the file was altered", .0.display())]
    WrongKey(PathBuf),
    /// An entry does not decrypt although the key is right.
    #[error("secret `{0}` in the store cannot be decrypted: the file was altered")]
    Tampered(String),
    /// No entry with that name.
    #[error("no secret named `{0}` in the store")]
    NotFound(String),
    /// A name the store does not accept.
    #[error("bad secret name `{0}`: use letters, digits, '-', '_' and '.'")]
    BadName(String),
    /// The file cannot be read, parsed or written.
    #[error("secret store {}: {reason}", path.display())]
    File {
        /// The store file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// The key a store is sealed with. Prints as `[redacted]`.
#[derive(Clone)]
pub struct StoreKey([u8; 32]);

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl StoreKey {
    /// The key from `SWITCHYARD_SECRET_KEY`, or from the file named by
    /// `SWITCHYARD_SECRET_KEY_FILE`.
    pub fn from_env() -> Result<StoreKey, StoreError> {
        if let Ok(text) = std::env::var(KEY_ENV) {
            return StoreKey::from_base64(&text)
                .map_err(|e| StoreError::BadKey(format!("{KEY_ENV}: {e}")));
        }
        if let Ok(path) = std::env::var(KEY_FILE_ENV) {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                StoreError::BadKey(format!("{KEY_FILE_ENV}: cannot read {path}: {e}"))
            })?;
            return StoreKey::from_base64(&text)
                .map_err(|e| StoreError::BadKey(format!("{KEY_FILE_ENV} ({path}): {e}")));
        }
        Err(StoreError::NoKey)
    }

    /// A key from base64 text (surrounding white space ignored).
    pub fn from_base64(text: &str) -> Result<StoreKey, String> {
        let bytes = BASE64
            .decode(text.trim())
            .map_err(|_| "not base64".to_owned())?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("{} bytes, need 32", b.len()))?;
        Ok(StoreKey(key))
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new((&self.0).into())
    }
}

/// One sealed value.
#[derive(Clone, Serialize, Deserialize)]
struct Sealed {
    nonce: String,
    ciphertext: String,
}

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    version: u32,
    check: Option<Sealed>,
    entries: BTreeMap<String, Sealed>,
}

/// The encrypted store of one data directory.
#[derive(Debug, Clone)]
pub struct SecretStore {
    path: PathBuf,
}

impl SecretStore {
    /// The store in `data_dir` (the file is created by the first `set`).
    pub fn in_dir(data_dir: &Path) -> SecretStore {
        SecretStore {
            path: data_dir.join(FILE_NAME),
        }
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Names of the stored secrets, sorted. Needs no key.
    pub fn names(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.read()?.entries.into_keys().collect())
    }

    /// Decrypt one secret.
    pub fn get(&self, name: &str, key: &StoreKey) -> Result<Secret, StoreError> {
        let file = self.read()?;
        self.check_key(&file, key)?;
        let sealed = file
            .entries
            .get(name)
            .ok_or_else(|| StoreError::NotFound(name.to_owned()))?;
        let plain = open(key, sealed, &entry_aad(name))
            .ok_or_else(|| StoreError::Tampered(name.to_owned()))?;
        let value = String::from_utf8(plain).map_err(|_| StoreError::Tampered(name.to_owned()))?;
        Ok(Secret::sealed(value))
    }

    /// Add or replace a secret. The store's key must be `key`.
    pub fn set(&self, name: &str, value: &str, key: &StoreKey) -> Result<(), StoreError> {
        check_name(name)?;
        let mut file = self.read()?;
        match &file.check {
            Some(_) => self.check_key(&file, key)?,
            None => file.check = Some(seal(key, CHECK_PLAINTEXT, CHECK_AAD)?),
        }
        file.version = 1;
        file.entries.insert(
            name.to_owned(),
            seal(key, value.as_bytes(), &entry_aad(name))?,
        );
        self.write(&file)
    }

    /// Remove a secret; false if there was none. Needs no key.
    pub fn remove(&self, name: &str) -> Result<bool, StoreError> {
        let mut file = self.read()?;
        let removed = file.entries.remove(name).is_some();
        if removed {
            self.write(&file)?;
        }
        Ok(removed)
    }

    fn check_key(&self, file: &StoreFile, key: &StoreKey) -> Result<(), StoreError> {
        let Some(check) = &file.check else {
            return Ok(());
        };
        match open(key, check, CHECK_AAD) {
            Some(plain) if plain == CHECK_PLAINTEXT => Ok(()),
            _ => Err(StoreError::WrongKey(self.path.clone())),
        }
    }

    fn read(&self) -> Result<StoreFile, StoreError> {
        let text = match std::fs::read(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(StoreFile::default()),
            Err(e) => return Err(self.file_error(format!("cannot read: {e}"))),
        };
        serde_json::from_slice(&text)
            .map_err(|e| self.file_error(format!("not a secret store: {e}")))
    }

    fn write(&self, file: &StoreFile) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(file).map_err(|e| self.file_error(e.to_string()))?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| self.file_error(format!("cannot create {}: {e}", dir.display())))?;
        }
        // Write beside and rename: a crash never leaves half a store.
        let temp = self.path.with_extension("json.tmp");
        write_private(&temp, &bytes).map_err(|e| self.file_error(format!("cannot write: {e}")))?;
        std::fs::rename(&temp, &self.path)
            .map_err(|e| self.file_error(format!("cannot replace: {e}")))
    }

    fn file_error(&self, reason: String) -> StoreError {
        StoreError::File {
            path: self.path.clone(),
            reason,
        }
    }
}

/// Write a file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn check_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadName(name.to_owned()))
    }
}

fn entry_aad(name: &str) -> Vec<u8> {
    format!("switchyard:entry:{name}").into_bytes()
}

fn seal(key: &StoreKey, plain: &[u8], aad: &[u8]) -> Result<Sealed, StoreError> {
    let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
    let ciphertext = key
        .cipher()
        .encrypt(&nonce, Payload { msg: plain, aad })
        .map_err(|_| StoreError::BadKey("encryption failed".into()))?;
    Ok(Sealed {
        nonce: BASE64.encode(nonce),
        ciphertext: BASE64.encode(ciphertext),
    })
}

fn open(key: &StoreKey, sealed: &Sealed, aad: &[u8]) -> Option<Vec<u8>> {
    let nonce = BASE64.decode(&sealed.nonce).ok()?;
    if nonce.len() != 12 {
        return None;
    }
    let ciphertext = BASE64.decode(&sealed.ciphertext).ok()?;
    key.cipher()
        .decrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &ciphertext,
                aad,
            },
        )
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> StoreKey {
        StoreKey([byte; 32])
    }

    #[test]
    fn round_trip_names_only_and_removal() {
        let dir = tempfile::tempdir().unwrap();
        let store = SecretStore::in_dir(dir.path());
        assert!(store.names().unwrap().is_empty());
        store.set("moodle-token", "t0p-s3cret", &key(1)).unwrap();
        store.set("bamboo.key", "another-s3cret", &key(1)).unwrap();
        assert_eq!(store.names().unwrap(), vec!["bamboo.key", "moodle-token"]);
        assert_eq!(
            store.get("moodle-token", &key(1)).unwrap().expose(),
            "t0p-s3cret"
        );
        let on_disk = std::fs::read_to_string(store.path()).unwrap();
        assert!(
            !on_disk.contains("t0p-s3cret") && !on_disk.contains("another-s3cret"),
            "{on_disk}"
        );
        assert!(store.remove("moodle-token").unwrap());
        assert!(!store.remove("moodle-token").unwrap());
        assert!(matches!(
            store.get("moodle-token", &key(1)),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn a_wrong_key_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = SecretStore::in_dir(dir.path());
        store.set("a", "value", &key(1)).unwrap();
        let err = store.get("a", &key(2)).unwrap_err();
        assert!(matches!(err, StoreError::WrongKey(_)), "{err}");
        assert!(err.to_string().contains("does not match"), "{err}");
        // A second key cannot add to a store sealed with the first.
        assert!(matches!(
            store.set("b", "v", &key(2)),
            Err(StoreError::WrongKey(_))
        ));
    }

    #[test]
    fn a_moved_or_altered_entry_does_not_decrypt() {
        let dir = tempfile::tempdir().unwrap();
        let store = SecretStore::in_dir(dir.path());
        store.set("a", "value-a", &key(1)).unwrap();
        store.set("b", "value-b", &key(1)).unwrap();
        let mut file: StoreFile =
            serde_json::from_slice(&std::fs::read(store.path()).unwrap()).unwrap();
        let a = file.entries["a"].clone();
        file.entries.insert("b".into(), a);
        std::fs::write(store.path(), serde_json::to_vec(&file).unwrap()).unwrap();
        assert!(matches!(
            store.get("b", &key(1)),
            Err(StoreError::Tampered(_))
        ));
    }

    #[test]
    fn nonces_are_fresh_per_entry() {
        let a = seal(&key(1), b"same", b"x").unwrap();
        let b = seal(&key(1), b"same", b"x").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64() {
        assert!(StoreKey::from_base64(&BASE64.encode([7u8; 32])).is_ok());
        assert!(
            StoreKey::from_base64(&BASE64.encode([7u8; 16]))
                .unwrap_err()
                .contains("16 bytes")
        );
        assert!(StoreKey::from_base64("not base64!").is_err());
        assert_eq!(format!("{:?}", key(1)), "[redacted]");
    }
}
