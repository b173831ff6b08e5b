//! Daemon events: everything the daemon does that the audit trail records
//! (plugins loaded, replaced, refused, removed; connectors paused; manual
//! triggers; admin actions; shutdown). [`note`] is the one place each is
//! logged and appended to the audit log.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::audit::Kind;
use crate::store::AuditStore;

/// Something the audit trail records. Every such event goes through
/// [`note`], which logs it and appends it to the audit log.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum DaemonEvent {
    /// The daemon started with a configuration.
    ConfigLoaded {
        /// The configuration file.
        file: String,
    },
    /// A plugin file was loaded (nothing of that name was serving).
    PluginLoaded {
        /// Plugin name.
        plugin: String,
        /// sha256 of the file.
        sha256: String,
        /// Its world.
        world: String,
    },
    /// A new plugin file replaced the serving version.
    PluginReplaced {
        /// Plugin name.
        plugin: String,
        /// The version replaced.
        old_sha256: String,
        /// The version now serving.
        new_sha256: String,
    },
    /// A plugin file was refused; `still_serving` keeps serving.
    PluginRefused {
        /// Plugin name.
        plugin: String,
        /// sha256 of the refused file.
        sha256: Option<String>,
        /// Why.
        reason: String,
        /// The version that keeps serving, if any.
        still_serving: Option<String>,
    },
    /// A plugin file was removed; its connectors are paused.
    PluginRemoved {
        /// Plugin name.
        plugin: String,
        /// sha256 of the version that stopped serving.
        sha256: String,
    },
    /// A plugin file needs more than the approved version and waits for
    /// an operator; `still_serving` keeps serving.
    PluginHeld {
        /// Plugin name.
        plugin: String,
        /// sha256 of the held file.
        sha256: String,
        /// What it needs beyond the approved version.
        needs: Vec<String>,
        /// The version that keeps serving, if any.
        still_serving: Option<String>,
    },
    /// A connector cannot run (no usable plugin).
    ConnectorPaused {
        /// Connector.
        connector: String,
        /// Why.
        reason: String,
    },
    /// A link run was triggered by hand.
    ManualTrigger {
        /// Link.
        link: String,
        /// Who: the admin token's fingerprint.
        token: String,
        /// From where.
        remote: String,
    },
    /// A call to the admin API that changes something.
    AdminAction {
        /// What (`admin.trigger-sync`, `admin.replay-dead-letter`, `admin.resume-connector`).
        action: Kind,
        /// On what (link, connector, dead letter).
        target: String,
        /// Fingerprint of the bearer token used (12 hex digits of the
        /// sha256 of its sha256; never the token).
        token: String,
        /// Remote address.
        remote: String,
        /// Outcome.
        outcome: String,
    },
    /// The daemon is shutting down.
    ShuttingDown,
}

/// Record an event: in the log, and in the audit trail (see
/// [`audit_event`]). An audit write that fails is logged, not fatal: the
/// daemon keeps serving.
pub fn note(audit: &dyn AuditStore, event: DaemonEvent) {
    let fields = serde_json::to_string(&event).unwrap_or_default();
    match &event {
        DaemonEvent::PluginRefused { .. }
        | DaemonEvent::PluginHeld { .. }
        | DaemonEvent::ConnectorPaused { .. } => {
            tracing::warn!(target: "switchyard::audit", event = %fields, "{}", describe(&event));
        }
        _ => tracing::info!(target: "switchyard::audit", event = %fields, "{}", describe(&event)),
    }
    let Some(record) = audit_event(&event) else {
        return;
    };
    if let Err(e) = audit.append(record) {
        tracing::error!("failed to write the audit log: {e:#}");
    }
    // Remember what serves, so a later `Service::open` does not record the
    // same plugin file again.
    let remembered = match &event {
        DaemonEvent::PluginLoaded { plugin, sha256, .. } => Some((plugin, sha256)),
        DaemonEvent::PluginReplaced {
            plugin, new_sha256, ..
        } => Some((plugin, new_sha256)),
        _ => None,
    };
    if let Some((plugin, sha256)) = remembered
        && let Err(e) = audit.remember(&format!("plugin/{plugin}"), sha256)
    {
        tracing::error!("failed to write the audit log: {e:#}");
    }
}

/// The audit record of a daemon event. A manual trigger is recorded as the
/// admin action that caused it (`admin.trigger-sync`), not twice.
fn audit_event(event: &DaemonEvent) -> Option<crate::audit::Event> {
    use crate::audit::Event;
    Some(match event {
        DaemonEvent::ConfigLoaded { file } => {
            let sha256 = std::fs::read(file).map(|b| hex::encode(Sha256::digest(&b))).unwrap_or_default();
            Event::new(Kind::ConfigLoaded).actor("daemon").detail(serde_json::json!({ "file": file, "sha256": sha256 }))
        }
        DaemonEvent::PluginLoaded { plugin, sha256, world } => Event::new(Kind::PluginLoaded)
            .detail(serde_json::json!({ "plugin": plugin, "sha256": sha256, "world": world })),
        DaemonEvent::PluginReplaced { plugin, old_sha256, new_sha256 } => Event::new(Kind::PluginReplaced)
            .detail(serde_json::json!({ "plugin": plugin, "sha256": new_sha256, "previous_sha256": old_sha256 })),
        DaemonEvent::PluginRefused { plugin, sha256, reason, still_serving } => Event::new(Kind::PluginRefused).detail(
            serde_json::json!({ "plugin": plugin, "sha256": sha256, "reason": reason, "still_serving": still_serving }),
        ),
        DaemonEvent::PluginRemoved { plugin, sha256 } => {
            Event::new(Kind::PluginRemoved).detail(serde_json::json!({ "plugin": plugin, "sha256": sha256 }))
        }
        DaemonEvent::PluginHeld { plugin, sha256, needs, still_serving } => Event::new(Kind::PluginHeld).detail(
            serde_json::json!({ "plugin": plugin, "sha256": sha256, "needs": needs, "still_serving": still_serving }),
        ),
        DaemonEvent::ConnectorPaused { connector, reason } => Event::new(Kind::ConnectorPaused)
            .connector(connector)
            .detail(serde_json::json!({ "reason": reason })),
        DaemonEvent::ManualTrigger { .. } => return None,
        DaemonEvent::AdminAction { action, target, token, remote, outcome } => Event::new(*action)
            .actor(format!("admin token {token} from {remote}"))
            .detail(serde_json::json!({ "target": target, "outcome": outcome })),
        DaemonEvent::ShuttingDown => Event::new(Kind::DaemonStopping).actor("daemon"),
    })
}

fn describe(event: &DaemonEvent) -> String {
    match event {
        DaemonEvent::ConfigLoaded { file } => format!("configuration {file} loaded"),
        DaemonEvent::PluginLoaded {
            plugin,
            sha256,
            world,
        } => format!("plugin `{plugin}` loaded ({world}, sha256 {sha256})"),
        DaemonEvent::PluginReplaced {
            plugin,
            old_sha256,
            new_sha256,
        } => {
            format!(
                "plugin `{plugin}` replaced: {} -> {}",
                short(old_sha256),
                short(new_sha256)
            )
        }
        DaemonEvent::PluginRefused {
            plugin,
            reason,
            still_serving,
            ..
        } => match still_serving {
            Some(old) => format!(
                "plugin `{plugin}` refused, version {} keeps serving: {reason}",
                short(old)
            ),
            None => format!("plugin `{plugin}` refused: {reason}"),
        },
        DaemonEvent::PluginRemoved { plugin, sha256 } => {
            format!(
                "plugin `{plugin}` ({}) removed; its connectors are paused",
                short(sha256)
            )
        }
        DaemonEvent::PluginHeld {
            plugin,
            needs,
            still_serving,
            ..
        } => format!(
            "plugin `{plugin}` held until an operator approves it ({}); {}",
            needs.join("; "),
            match still_serving {
                Some(old) => format!("version {} keeps serving", short(old)),
                None => "its connectors are paused".to_owned(),
            }
        ),
        DaemonEvent::ConnectorPaused { connector, reason } => {
            format!("connector `{connector}` paused: {reason}")
        }
        DaemonEvent::ManualTrigger { link, remote, .. } => {
            format!("sync of link `{link}` triggered from {remote}")
        }
        DaemonEvent::AdminAction {
            action,
            target,
            remote,
            outcome,
            ..
        } => {
            format!("{action} {target} from {remote}: {outcome}")
        }
        DaemonEvent::ShuttingDown => "shutting down".to_owned(),
    }
}

fn short(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}
