//! The `shared` import (contract 0.4.0): a lock per key and small
//! remembered values, shared by one connector's concurrent calls.
//!
//! Each call runs in a fresh instance, so a find-then-create of a resource
//! two calls share (an LMS group standing for a course) races; `lock`
//! makes those calls take turns and `remember` keeps the id for the calls
//! after. Everything is per connector and in memory: a restart or a reload
//! of the connector starts empty, which is why the guide tells plugins to
//! look before they create even under a lock.
//!
//! Bounded like every other import: keys up to 256 bytes, values up to
//! 4 KiB, 10 000 remembered keys (the longest unused forgotten first), 16
//! keys held by one call, and a wait that ends before the call's deadline
//! so that contention is a `transient` error, not a plugin fault.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::OwnedMutexGuard;

use crate::HostState;
use crate::bindings::hris::switchyard::connector::shared::Host;
use crate::bindings::types::ConnectorError;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Longest value kept, in bytes.
pub const MAX_VALUE_BYTES: usize = 4096;
/// Remembered keys per connector.
pub const MAX_REMEMBERED: usize = 10_000;
/// Keys one call may hold at once.
pub const MAX_HELD: usize = 16;

/// What a connector's calls share; one per connector, in memory.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    memo: Mutex<Memo>,
}

#[derive(Debug, Default)]
struct Memo {
    /// key -> (value, last use)
    values: HashMap<String, (String, u64)>,
    clock: u64,
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn recall(&self, key: &str) -> Option<String> {
        let mut memo = guard(&self.memo);
        memo.clock += 1;
        let now = memo.clock;
        memo.values.get_mut(key).map(|(value, used)| {
            *used = now;
            value.clone()
        })
    }

    fn remember(&self, key: String, value: String) {
        let mut memo = guard(&self.memo);
        memo.clock += 1;
        let now = memo.clock;
        if !memo.values.contains_key(&key)
            && memo.values.len() >= MAX_REMEMBERED
            && let Some(oldest) = memo
                .values
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
        {
            memo.values.remove(&oldest);
        }
        memo.values.insert(key, (value, now));
    }

    /// The lock for `key`, made on first use.
    fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        guard(&self.locks)
            .entry(key.to_owned())
            .or_default()
            .clone()
    }

    /// Drops the lock of `key` if no call holds or waits for it.
    fn tidy(&self, key: &str) {
        let mut locks = guard(&self.locks);
        if locks.get(key).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(key);
        }
    }

    #[cfg(test)]
    fn lock_count(&self) -> usize {
        guard(&self.locks).len()
    }
}

/// One call's view: the connector's [`Shared`] and the keys it holds,
/// let go when the call ends however it ends (the store is dropped).
pub(crate) struct SharedState {
    shared: Arc<Shared>,
    held: HashMap<String, OwnedMutexGuard<()>>,
    /// A wait for a lock ends here, before the call's own deadline.
    wait_until: Instant,
}

impl SharedState {
    pub(crate) fn new(shared: Arc<Shared>, call_timeout: Duration) -> Self {
        // Leave the call a tenth of its time (at least 100 ms) to report
        // the contention before its deadline interrupts it.
        let margin = (call_timeout / 10).max(Duration::from_millis(100));
        SharedState {
            shared,
            held: HashMap::new(),
            wait_until: Instant::now() + call_timeout.saturating_sub(margin),
        }
    }

    fn release(&mut self, key: &str) {
        if self.held.remove(key).is_some() {
            self.shared.tidy(key);
        }
    }
}

impl Drop for SharedState {
    fn drop(&mut self) {
        let keys: Vec<String> = self.held.keys().cloned().collect();
        for key in keys {
            self.release(&key);
        }
    }
}

fn check_key(key: &str) -> Result<(), ConnectorError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(ConnectorError::Rejected(format!(
            "a shared key is 1 to {MAX_KEY_BYTES} bytes, got {}",
            key.len()
        )));
    }
    Ok(())
}

impl Host for HostState {
    async fn lock(&mut self, key: String) -> wasmtime::Result<Result<(), ConnectorError>> {
        self.host_call()?;
        if let Err(e) = check_key(&key) {
            return Ok(Err(e));
        }
        let state = &mut self.shared;
        if state.held.contains_key(&key) {
            return Ok(Ok(()));
        }
        if state.held.len() >= MAX_HELD {
            return Ok(Err(ConnectorError::Transient(format!(
                "this call holds {MAX_HELD} shared keys already; unlock one before locking `{key}`"
            ))));
        }
        let lock = state.shared.lock_for(&key);
        let wait = state.wait_until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(wait, lock.lock_owned()).await {
            Ok(held) => {
                state.held.insert(key, held);
                Ok(Ok(()))
            }
            Err(_) => {
                state.shared.tidy(&key);
                Ok(Err(ConnectorError::Transient(format!(
                    "waited {wait:?} for shared key `{key}`, held by another call of this connector"
                ))))
            }
        }
    }

    async fn unlock(&mut self, key: String) -> wasmtime::Result<()> {
        self.host_call()?;
        self.shared.release(&key);
        Ok(())
    }

    async fn recall(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        self.host_call()?;
        Ok(self.shared.shared.recall(&key))
    }

    async fn remember(&mut self, key: String, value: String) -> wasmtime::Result<()> {
        self.host_call()?;
        if check_key(&key).is_ok() && value.len() <= MAX_VALUE_BYTES {
            self.shared.shared.remember(key, value);
        } else {
            tracing::debug!(
                key_bytes = key.len(),
                value_bytes = value.len(),
                "shared value not kept: over the size limits"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_unused_key_is_forgotten_first() {
        let shared = Shared::default();
        for i in 0..MAX_REMEMBERED {
            shared.remember(format!("k{i}"), i.to_string());
        }
        assert_eq!(shared.recall("k0").as_deref(), Some("0"), "k0 used again");
        shared.remember("new".into(), "x".into());
        assert_eq!(shared.recall("k0").as_deref(), Some("0"));
        assert_eq!(shared.recall("k1"), None, "k1 was the longest unused");
        assert_eq!(shared.recall("new").as_deref(), Some("x"));
    }

    #[tokio::test]
    async fn calls_take_turns_and_a_lock_is_let_go_when_its_call_ends() {
        let shared = Arc::new(Shared::default());
        let mut first = SharedState::new(shared.clone(), Duration::from_secs(5));
        let lock = shared.lock_for("group:SAFETY");
        first
            .held
            .insert("group:SAFETY".into(), lock.lock_owned().await);
        drop(first.shared.lock_for("group:SAFETY"));

        // A second call waits; when the first ends, it gets the key.
        let waiter = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let lock = shared.lock_for("group:SAFETY");
                let _held = lock.lock_owned().await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the key is held");
        drop(first);
        waiter.await.unwrap();
        shared.tidy("group:SAFETY");
        assert_eq!(shared.lock_count(), 0, "no lock left behind");
    }
}
