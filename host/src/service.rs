//! A configured Switchyard: configuration, runtime, plugins, connectors and
//! state, assembled once and used by the CLI (and by embedders and tests).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};

use crate::config::Config;
use crate::runtime::{Connector, Plugin, PluginError, Runtime, World};
use crate::secrets::Credential;
use crate::state::State;
use crate::sync::{LinkRun, RunOptions, RunReport};

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
                .map(Credential::resolve)
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
        let link = self
            .config
            .links
            .get(name)
            .ok_or_else(|| anyhow!("no link named `{name}` in {}", self.config.file.display()))?;
        let run = LinkRun {
            name,
            link,
            hris: &self.connectors[&link.hris],
            lms: &self.connectors[&link.lms],
            state: &self.state,
            today,
        };
        tracing::info!(link = name, dry_run = options.dry_run, "sync started");
        let report = run.run(options).await?;
        tracing::info!(link = name, writes = report.writes(), "sync finished");
        Ok(report)
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
        let link = self.link(name)?;
        let run = LinkRun {
            name,
            link,
            hris: &self.connectors[&link.hris],
            lms: &self.connectors[&link.lms],
            state: &self.state,
            today: time::OffsetDateTime::now_utc().date(),
        };
        run.drain().await
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
