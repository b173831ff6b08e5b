//! A configured Switchyard: configuration, runtime, plugins, connectors and
//! state, assembled once and used by the CLI (and by embedders and tests).
//!
//! Quarantine lives here: after each link run the consecutive plugin faults
//! of its connectors are persisted, a connector reaching its
//! `quarantine_after` limit is quarantined, and a link using a quarantined
//! connector is refused with [`Quarantined`] until an operator resumes the
//! connector or a plugin file with a different sha256 is loaded.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};

use crate::config::Config;
use crate::runtime::{Connector, Plugin, PluginError, Runtime, World};
use crate::secrets::{Credential, SecretStore};
use crate::state::{ConnectorHealth, Quarantine, State};
use crate::sync::{LinkRun, RunOptions, RunReport};

/// A link was not run because a connector it uses is quarantined.
#[derive(Debug, thiserror::Error)]
#[error(
    "link `{link}` paused: connector `{connector}` (plugin {plugin} {version}) is quarantined since {} after {} plugin faults in a row; last: {}; resume it with `switchyard plugin resume {connector}` or install a new version of the plugin",
    quarantine.at, quarantine.faults, quarantine.reason
)]
pub struct Quarantined {
    /// The link.
    pub link: String,
    /// The quarantined connector.
    pub connector: String,
    /// Its plugin.
    pub plugin: String,
    /// The plugin's version.
    pub version: String,
    /// Why and since when.
    pub quarantine: Quarantine,
}

/// Everything a configuration describes, loaded and checked.
pub struct Service {
    /// The configuration.
    pub config: Config,
    /// The plugin runtime.
    pub runtime: Runtime,
    /// Sync state.
    pub state: State,
    /// Loaded plugins by name.
    pub plugins: BTreeMap<String, Arc<Plugin>>,
    /// Plugin files that were refused.
    pub refused: Vec<PluginError>,
    /// Connectors by name.
    pub connectors: BTreeMap<String, Connector>,
}

impl Service {
    /// Load plugins, bind connectors and open the state database.
    ///
    /// A refused plugin file is reported in `refused`; it is an error only if
    /// a connector needs it. A connector whose plugin implements the wrong
    /// world for a link is an error naming both.
    pub fn open(config: Config) -> anyhow::Result<Service> {
        let runtime = Runtime::new().context("failed to start the plugin runtime")?;
        let set = runtime.load_dir(&config.plugin_dir)?;
        let store = SecretStore::in_dir(&config.data_dir);
        for (origin, budget) in &config.origins {
            runtime.limit_origin(origin, budget.requests_per_second, budget.burst.unwrap_or(budget.requests_per_second));
        }
        let mut connectors = BTreeMap::new();
        for (name, connector) in &config.connectors {
            let Some(plugin) = set.plugins.get(&connector.plugin) else {
                let refused = set
                    .refused
                    .iter()
                    .find(|e| refused_name(e) == connector.plugin)
                    .map(|e| format!(": {e}"))
                    .unwrap_or_else(|| {
                        format!(": no {}.wasm in {}", connector.plugin, config.plugin_dir.display())
                    });
                bail!("connector `{name}`: plugin `{}` is not available{refused}", connector.plugin);
            };
            let credential = connector
                .auth
                .as_ref()
                .map(|auth| Credential::resolve_with(auth, Some(&store)))
                .transpose()
                .map_err(|e| anyhow!("connector `{name}`: {e}"))?;
            connectors.insert(
                name.clone(),
                runtime.connector(name, connector, plugin.clone(), credential),
            );
        }
        for (name, link) in &config.links {
            for (role, connector, world) in [
                ("hris", &link.hris, World::Hris),
                ("lms", &link.lms, World::Lms),
            ] {
                let plugin = &connectors[connector].plugin;
                if plugin.world != world {
                    bail!(
                        "link `{name}`: {role} connector `{connector}` runs plugin `{}`, which implements {}, not {world}",
                        plugin.name,
                        plugin.world
                    );
                }
            }
        }
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("failed to create {}", config.data_dir.display()))?;
        let state = State::open(&config.data_dir)?;
        for (name, connector) in &connectors {
            let Some(health) = state.connector_health(name)? else {
                continue;
            };
            if health.sha256 == connector.plugin.sha256 {
                connector.restore_consecutive_faults(health.faults_in_a_row);
            } else {
                // A new plugin file: the count and any quarantine were about
                // the old one.
                if health.quarantine.is_some() {
                    tracing::info!(connector = %name, plugin = %connector.plugin.name, version = connector.plugin.version(), "quarantine lifted: a different plugin file is loaded");
                }
                state.put_connector_health(
                    name,
                    &ConnectorHealth {
                        plugin: connector.plugin.name.clone(),
                        sha256: connector.plugin.sha256.clone(),
                        ..ConnectorHealth::default()
                    },
                )?;
            }
        }
        Ok(Service {
            config,
            runtime,
            state,
            plugins: set.plugins,
            refused: set.refused,
            connectors,
        })
    }

    /// Run one link once.
    pub async fn sync_link(&self, name: &str) -> anyhow::Result<RunReport> {
        self.sync_link_with(name, RunOptions::default(), time::OffsetDateTime::now_utc().date())
            .await
    }

    /// Run one link once with options, as of `today`.
    pub async fn sync_link_with(
        &self,
        name: &str,
        options: RunOptions,
        today: time::Date,
    ) -> anyhow::Result<RunReport> {
        let run = self.link_run(name, today)?;
        tracing::info!(link = name, dry_run = options.dry_run, "sync started");
        let result = run.run(options).await;
        for connector in [&run.link.hris, &run.link.lms] {
            self.record_health(connector)?;
        }
        let report = result?;
        tracing::info!(link = name, writes = report.writes(), "sync finished");
        Ok(report)
    }

    /// Lift a connector's quarantine and reset its fault count; returns the
    /// quarantine that was lifted.
    pub fn resume(&self, connector: &str) -> anyhow::Result<Option<Quarantine>> {
        let lifted = self.state.resume_connector(connector)?;
        if let Some(c) = self.connectors.get(connector) {
            c.restore_consecutive_faults(0);
        }
        Ok(lifted)
    }

    fn refuse_if_quarantined(&self, link: &str, name: &str) -> anyhow::Result<()> {
        let connector = &self.connectors[name];
        let Some(health) = self.state.connector_health(name)? else {
            return Ok(());
        };
        match health.quarantine {
            Some(quarantine) if health.sha256 == connector.plugin.sha256 => Err(Quarantined {
                link: link.to_owned(),
                connector: name.to_owned(),
                plugin: connector.plugin.name.clone(),
                version: connector.plugin.version().to_owned(),
                quarantine,
            }
            .into()),
            _ => Ok(()),
        }
    }

    /// Persist a connector's faults in a row, and quarantine it when they
    /// reach its limit.
    fn record_health(&self, name: &str) -> anyhow::Result<()> {
        let connector = &self.connectors[name];
        let mut health = self
            .state
            .connector_health(name)?
            .filter(|h| h.sha256 == connector.plugin.sha256)
            .unwrap_or_else(|| ConnectorHealth {
                plugin: connector.plugin.name.clone(),
                sha256: connector.plugin.sha256.clone(),
                ..ConnectorHealth::default()
            });
        let faults = connector.consecutive_faults();
        let limit = connector.limits().quarantine_after;
        if health.faults_in_a_row == faults && (faults < limit || health.quarantine.is_some()) {
            return Ok(());
        }
        health.faults_in_a_row = faults;
        if faults >= limit && health.quarantine.is_none() {
            let reason = connector.last_fault().unwrap_or_else(|| "plugin faults".to_owned());
            tracing::error!(connector = %name, plugin = %connector.plugin.name, version = connector.plugin.version(), faults, "connector quarantined: {reason}");
            health.quarantine = Some(Quarantine {
                reason,
                faults,
                at: time::OffsetDateTime::now_utc()
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
            });
        }
        self.state.put_connector_health(name, &health)
    }

    /// Run every link once, in name order. Stops at the first link that fails.
    pub async fn sync_all(&self, options: RunOptions) -> anyhow::Result<Vec<RunReport>> {
        let today = time::OffsetDateTime::now_utc().date();
        let mut reports = Vec::new();
        for name in self.config.links.keys() {
            reports.push(self.sync_link_with(name, options, today).await?);
        }
        Ok(reports)
    }

    /// Apply what waits in a link's outbox (after `dlq replay`).
    pub async fn drain_outbox(&self, name: &str) -> anyhow::Result<RunReport> {
        let run = self.link_run(name, time::OffsetDateTime::now_utc().date())?;
        let result = run.drain().await;
        for connector in [&run.link.hris, &run.link.lms] {
            self.record_health(connector)?;
        }
        result
    }

    /// A run of a link, refused while one of its connectors is quarantined.
    fn link_run<'a>(&'a self, name: &'a str, today: time::Date) -> anyhow::Result<LinkRun<'a>> {
        let link = self.link(name)?;
        for connector in [&link.hris, &link.lms] {
            self.refuse_if_quarantined(name, connector)?;
        }
        Ok(LinkRun {
            name,
            link,
            hris: &self.connectors[&link.hris],
            lms: &self.connectors[&link.lms],
            state: &self.state,
            today,
        })
    }

    /// Compare the HRIS snapshot, the LMS and the completion ledger of a link.
    pub async fn reconcile(&self, name: &str) -> anyhow::Result<Vec<crate::sync::reconcile::Drift>> {
        let link = self.link(name)?;
        crate::sync::reconcile::reconcile(name, link, &self.connectors[&link.lms], &self.state).await
    }

    /// The link's configuration, or an error naming the file.
    pub fn link(&self, name: &str) -> anyhow::Result<&crate::config::LinkConfig> {
        self.config
            .links
            .get(name)
            .ok_or_else(|| anyhow!("no link named `{name}` in {}", self.config.file.display()))
    }
}

fn refused_name(e: &PluginError) -> String {
    let path = match e {
        PluginError::Unreadable { path, .. }
        | PluginError::NotAComponent { path, .. }
        | PluginError::NoWorld { path, .. }
        | PluginError::UnsupportedVersion { path, .. }
        | PluginError::Link { path, .. } => path,
    };
    path.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_owned()
}
