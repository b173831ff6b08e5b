//! The catalogue of audit record kinds: every kind Switchyard writes is a
//! variant here, with its name and when it is written. The README's table
//! is checked against [`Kind::ALL`] by a test.

macro_rules! kinds {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal, )*) => {
        /// What an audit record is about.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Kind {
            $( $(#[$doc])* $variant, )*
        }

        impl Kind {
            /// Every kind, in catalogue order.
            pub const ALL: &[Kind] = &[$(Kind::$variant),*];

            /// The name stored in records (`user.created`).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Kind::$variant => $name,)*
                }
            }
        }
    };
}

kinds! {
    /// A sync run started.
    RunStarted => "run.started",
    /// A sync run finished, with its counts.
    RunFinished => "run.finished",
    /// A sync run failed (storage, a bug, anything not below).
    RunFailed => "run.failed",
    /// A sync run was refused before it started (quarantined or paused connector).
    RunRefused => "run.refused",
    /// A run halted at the mass-deactivation guard.
    LinkHalted => "link.halted",
    /// A run stopped on an error that needs an operator (credentials, config, fault).
    LinkStopped => "link.stopped",
    /// An LMS account was created.
    UserCreated => "user.created",
    /// An LMS account was updated.
    UserUpdated => "user.updated",
    /// An LMS account that already existed for the employee (made by hand,
    /// by an import, or by a create whose answer a crash lost) was bound to
    /// them instead of a new one being created.
    UserAdopted => "user.adopted",
    /// An LMS account was suspended.
    UserSuspended => "user.suspended",
    /// An LMS account was reactivated.
    UserReactivated => "user.reactivated",
    /// An enrollment was made.
    CourseEnrolled => "course.enrolled",
    /// An enrollment was withdrawn.
    CourseUnenrolled => "course.unenrolled",
    /// A completion was written to the HRIS.
    CompletionWritten => "completion.written",
    /// An operation was given up on.
    OperationDeadLettered => "operation.dead-lettered",
    /// An optional operation (`push-completion`, `unenroll`) the plugin
    /// does not support was skipped, with the plugin's reason.
    OperationSkipped => "operation.skipped",
    /// A plugin call failed (an error or a fault).
    PluginCallFailed => "plugin.call-failed",
    /// A plugin made (or tried) an HTTP request.
    HttpRequest => "http.request",
    /// A plugin file was loaded for the first time.
    PluginLoaded => "plugin.loaded",
    /// A plugin file was replaced by another version.
    PluginReplaced => "plugin.replaced",
    /// A plugin file was refused.
    PluginRefused => "plugin.refused",
    /// A plugin file was removed.
    PluginRemoved => "plugin.removed",
    /// A new plugin file needs more than the approved version and waits
    /// for an operator.
    PluginHeld => "plugin.held",
    /// An operator approved a held plugin file.
    PluginApproved => "plugin.approved",
    /// Requests refused before any work (bad signatures, wrong tokens,
    /// throttled clients), summed per client address and reason.
    RequestsRejected => "requests.rejected",
    /// A connector was paused (no usable plugin or credential).
    ConnectorPaused => "connector.paused",
    /// A connector was quarantined after faults in a row.
    ConnectorQuarantined => "connector.quarantined",
    /// A configuration was loaded with a new sha256.
    ConfigLoaded => "config.loaded",
    /// The daemon began shutting down.
    DaemonStopping => "daemon.stopping",
    /// An operator lifted a quarantine (command line).
    AdminConnectorResumed => "admin.connector-resumed",
    /// An operator replayed dead letters (command line).
    AdminDlqReplayed => "admin.dlq-replayed",
    /// An operator dropped a dead letter (command line).
    AdminDlqDropped => "admin.dlq-dropped",
    /// An operator stored a secret.
    AdminSecretSet => "admin.secret-set",
    /// An operator removed a secret.
    AdminSecretRemoved => "admin.secret-removed",
    /// An operator exported the audit log.
    AdminAuditExported => "admin.audit-exported",
    /// A run was triggered through the admin API.
    AdminTriggerSync => "admin.trigger-sync",
    /// A dead letter was replayed through the admin API.
    AdminReplayDeadLetter => "admin.replay-dead-letter",
    /// A quarantine was lifted through the admin API.
    AdminResumeConnector => "admin.resume-connector",
    /// A subject's personal data was erased.
    SubjectErased => "subject.erased",
    /// Audit records were pruned by retention.
    AuditPruned => "audit.pruned",
    /// Snapshots of departed employees were deleted by retention.
    RetentionSnapshotsDeleted => "retention.snapshots-deleted",
    /// Old dead letters were deleted by retention.
    RetentionDeadLettersDeleted => "retention.dead-letters-deleted",
    /// A webhook delivery was verified and its work committed.
    WebhookAccepted => "webhook.accepted",
    /// A webhook delivery id seen before.
    WebhookReplay => "webhook.replay",
    /// A webhook body the plugin rejected.
    WebhookMalformedBody => "webhook.malformed-body",
    /// A webhook refused by the mass-deactivation guard.
    WebhookHalted => "webhook.halted",
    /// A webhook that could not be processed now (fault, storage).
    WebhookUnavailable => "webhook.unavailable",
}

impl serde::Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Kind;

    #[test]
    fn names_are_unique_and_dotted() {
        let mut names: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        assert!(names.iter().all(|n| {
            n.split_once('.')
                .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
        }));
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }

    /// The README's table of audit kinds names exactly the catalogue.
    #[test]
    fn the_readme_table_is_the_catalogue() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"));
        let table = readme
            .split("| kind | when | names |")
            .nth(1)
            .expect("README has the audit kinds table");
        let mut documented = std::collections::BTreeSet::new();
        for row in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
            let first_cell = row.split('|').nth(1).unwrap_or_default();
            for name in first_cell.split('`').skip(1).step_by(2) {
                documented.insert(name.to_owned());
            }
        }
        let catalogue: std::collections::BTreeSet<String> =
            Kind::ALL.iter().map(|k| k.as_str().to_owned()).collect();
        let missing: Vec<_> = catalogue.difference(&documented).collect();
        let unknown: Vec<_> = documented.difference(&catalogue).collect();
        assert!(
            missing.is_empty() && unknown.is_empty(),
            "README lacks {missing:?}; README names unknown kinds {unknown:?}"
        );
    }
}
