//! What the runtime tells the rest of the host about each plugin call,
//! without knowing who listens: the [`CallContext`] a caller sets around a
//! call (which link, employee and operation it is for) and the
//! [`CallObserver`] that receives a [`FinishedCall`] (its HTTP exchanges,
//! its duration and how it ended). The `switchyard` crate turns these into
//! audit records and metrics.

use std::time::Duration;

use switchyard_model::{ConnectorError, PluginFault};

pub use crate::capability::http::Exchange;

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
}

/// How a call ended.
#[derive(Debug, Clone, Copy)]
pub enum CallOutcome<'a> {
    /// The plugin returned a value.
    Ok,
    /// The plugin returned one of the contract's errors.
    Error(&'a ConnectorError),
    /// The host cut the call short or refused its result.
    Fault(&'a PluginFault),
}

/// One finished plugin call.
#[derive(Debug)]
pub struct FinishedCall<'a> {
    /// Connector name.
    pub connector: &'a str,
    /// Plugin name.
    pub plugin: &'a str,
    /// Plugin version (the first 12 hex digits of its sha256).
    pub version: &'a str,
    /// The plugin file's sha256.
    pub sha256: &'a str,
    /// The contract function called.
    pub operation: &'static str,
    /// What the call was for.
    pub context: &'a CallContext,
    /// How long it took.
    pub elapsed: Duration,
    /// The HTTP requests it made, in the order they finished.
    pub exchanges: &'a [Exchange],
    /// Requests beyond what the exchange log keeps.
    pub dropped_exchanges: u32,
    /// How it ended.
    pub outcome: CallOutcome<'a>,
}

/// Receives every finished call of the connectors it is attached to.
pub trait CallObserver: Send + Sync {
    /// Called once per call, after it finished, on the caller's task.
    fn call_finished(&self, call: &FinishedCall<'_>);
}
