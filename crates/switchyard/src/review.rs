//! Capability review on upgrade: a new version of a plugin that needs more
//! than the approved one is held until an operator approves it.
//!
//! What a plugin needs is what the host can see in the file: the world it
//! implements, the contract version it was built against, the interfaces it
//! imports and the key that signed it. (Origins and credentials are granted
//! by the configuration, not declared by plugins; a change there is a
//! configuration change, recorded as `config.loaded`.) The first version of
//! a plugin name seen is approved on first use; later versions that need
//! no more than the approved one are approved as they come. A version that
//! needs more, or is signed by another key (or no longer signed), is held:
//! the daemon keeps serving the old one, and a command refuses to use it.
//!
//! Approvals are kept in the state database ([`PluginApproval`]) so a
//! restart does not approve what was held.

use crate::model::Timestamp;
use crate::runtime::Plugin;
use crate::store::{PluginApproval, Store};

/// What the review of a loaded plugin decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Review {
    /// Approved now (first use) or before; serve it.
    Approved,
    /// Needs more than the approved version: each difference, for people.
    Held(Vec<String>),
}

/// What a plugin needs, as an approval record would keep it.
pub fn approval_of(plugin: &Plugin, by: &str) -> PluginApproval {
    PluginApproval {
        sha256: plugin.sha256.clone(),
        world: plugin.world.to_string(),
        contract_version: plugin.contract_version.clone(),
        imports: plugin.imports.clone(),
        signer: plugin.signer.map(|s| s.key.to_string()),
        at: Timestamp::now(),
        by: by.to_owned(),
    }
}

/// An import's interface without its version (`wasi:io/streams@0.2.0` is
/// `wasi:io/streams`): a newer version of one interface is the contract or
/// WASI version moving, reported once as such, not as a new capability.
fn interface(import: &str) -> &str {
    import.split_once('@').map_or(import, |(name, _)| name)
}

/// How `plugin` needs more than `approved`; empty if it does not.
pub fn differences(approved: &PluginApproval, plugin: &Plugin) -> Vec<String> {
    let mut more = Vec::new();
    let world = plugin.world.to_string();
    if world != approved.world {
        more.push(format!("world {} (approved: {})", world, approved.world));
    }
    let newer = match (
        semver::Version::parse(&plugin.contract_version),
        semver::Version::parse(&approved.contract_version),
    ) {
        (Ok(new), Ok(old)) => new > old,
        _ => plugin.contract_version != approved.contract_version,
    };
    if newer {
        more.push(format!(
            "contract {} (approved: {})",
            plugin.contract_version, approved.contract_version
        ));
    }
    for import in &plugin.imports {
        if !approved
            .imports
            .iter()
            .any(|old| interface(old) == interface(import))
        {
            more.push(format!("imports {import}"));
        }
    }
    let signer = plugin.signer.map(|s| s.key.to_string());
    if let Some(old) = &approved.signer
        && signer.as_ref() != Some(old)
    {
        more.push(match signer {
            Some(new) => format!("signed by {new} (approved: signed by {old})"),
            None => format!("not signed (approved: signed by {old})"),
        });
    }
    more
}

/// Review a loaded plugin against its approved version, recording the
/// approval when there is none yet (first use) or when this version needs
/// no more.
pub fn review(state: &dyn Store, plugin: &Plugin) -> anyhow::Result<Review> {
    match state.plugin_approval(&plugin.name)? {
        Some(approved) if approved.sha256 == plugin.sha256 => Ok(Review::Approved),
        Some(approved) => {
            let more = differences(&approved, plugin);
            if more.is_empty() {
                state.put_plugin_approval(&plugin.name, &approval_of(plugin, "no more needs"))?;
                Ok(Review::Approved)
            } else {
                Ok(Review::Held(more))
            }
        }
        None => {
            state.put_plugin_approval(&plugin.name, &approval_of(plugin, "first use"))?;
            Ok(Review::Approved)
        }
    }
}

/// The reason a held plugin is not used, for messages.
pub fn held_reason(plugin: &Plugin, more: &[String]) -> String {
    format!(
        "{}: version {} needs more than the approved version ({}); approve it with `switchyard plugin approve {}` or `POST /v1/plugins/{}/approve`",
        plugin.path.display(),
        plugin.version(),
        more.join("; "),
        plugin.name,
        plugin.name
    )
}
