//! The `config` import: the connector's non-secret settings, read-only.
//!
//! Credentials never appear here: they live in the connector's `auth` table
//! and are injected by `http` at the network boundary.

use crate::HostState;
use crate::bindings::hris::switchyard::connector::config::Host;

impl Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        self.host_call()?;
        Ok(self.settings.get(&key).cloned())
    }
}
