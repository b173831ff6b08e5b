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
use std::sync::atomic::AtomicBool;

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

/// A link was not run because a connector it uses has no usable plugin (the
/// daemon pauses connectors whose plugin file is removed or unfit).
#[derive(Debug, thiserror::Error)]
#[error("link `{link}` paused: connector `{connector}`: {reason}")]
pub struct Paused {
    /// The link.
    pub link: String,
    /// The paused connector.
    pub connector: String,
    /// Why.
    pub reason: String,
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
    /// Connectors without a usable plugin, and why. [`Service::open`]
    /// refuses to start with any; the daemon ([`Service::assemble`]) pauses
    /// them and the links that use them.
    pub paused: BTreeMap<String, String>,
    /// Set to make runs in progress stop at their next checkpoint (the
    /// daemon's shutdown); shared by every service a daemon assembles.
    pub stop: Arc<AtomicBool>,
}

impl Service {
    /// Load plugins, bind connectors and open the state database.
    ///
    /// A refused plugin file is reported in `refused`; it is an error only if
    /// a connector needs it. A connector whose plugin implements the wrong
    /// world for a link is an error naming both.
    pub fn open(config: Config) -> anyhow::Result<Service> {
        let runtime = Runtime::new().context("failed to start the plugin runtime")?;
        // The compiled-code cache the daemon uses too: a one-shot run does
        // not recompile unchanged plugins either.
        let set = runtime.load_dir_cached(&config.plugin_dir, Some(&config.data_dir.join("cache")))?;
        Service::limit_origins(&config, &runtime);
        let missing = |plugin: &str| {
            set.refused
                .iter()
                .find(|e| refused_name(e) == plugin)
                .map(|e| format!(": {e}"))
                .unwrap_or_else(|| format!(": no {plugin}.wasm in {}", config.plugin_dir.display()))
        };
        let (connectors, paused) = bind(&config, &runtime, &set.plugins, &missing, None);
        if let Some((_, reason)) = paused.into_iter().next() {
            bail!("{reason}");
        }
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("failed to create {}", config.data_dir.display()))?;
        let state = State::open(&config.data_dir)?;
        restore_health(&state, &connectors)?;
        Ok(Service {
            config,
            runtime,
            state,
            plugins: set.plugins,
            refused: set.refused,
            connectors,
            paused: BTreeMap::new(),
            stop: Arc::default(),
        })
    }

    /// Apply the configuration's origin budgets to a runtime (once per
    /// runtime).
    pub fn limit_origins(config: &Config, runtime: &Runtime) {
        for (origin, budget) in &config.origins {
            runtime.limit_origin(origin, budget.requests_per_second, budget.burst.unwrap_or(budget.requests_per_second));
        }
    }

    /// Assemble a service from plugins loaded elsewhere (the daemon's plugin
    /// directory), sharing `runtime` and `state` with earlier assemblies.
    /// Never fails for a missing or unfit plugin: the connector is `paused`
    /// with the reason (`missing` says why a plugin is not loaded). A
    /// connector whose plugin file is unchanged since `previous` is carried
    /// over, with its fault count. Runs stop at a checkpoint once `stop` is
    /// set.
    pub fn assemble(
        config: Config,
        runtime: Runtime,
        state: State,
        plugins: BTreeMap<String, Arc<Plugin>>,
        missing: &dyn Fn(&str) -> String,
        previous: Option<&Service>,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<Service> {
        let (connectors, paused) = bind(&config, &runtime, &plugins, missing, previous);
        restore_health(&state, &connectors)?;
        Ok(Service {
            config,
            runtime,
            state,
            plugins,
            refused: Vec::new(),
            connectors,
            paused: paused.into_iter().collect(),
            stop,
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
            if let Some(reason) = self.paused.get(connector.as_str()) {
                return Err(Paused {
                    link: name.to_owned(),
                    connector: connector.clone(),
                    reason: reason.clone(),
                }
                .into());
            }
            self.refuse_if_quarantined(name, connector)?;
        }
        Ok(LinkRun {
            name,
            link,
            hris: &self.connectors[&link.hris],
            lms: &self.connectors[&link.lms],
            state: &self.state,
            today,
            stop: &self.stop,
        })
    }

    /// Compare the HRIS snapshot, the LMS and the completion ledger of a link.
    pub async fn reconcile(&self, name: &str) -> anyhow::Result<Vec<crate::sync::reconcile::Drift>> {
        let link = self.link(name)?;
        let lms = self.connectors.get(&link.lms).ok_or_else(|| Paused {
            link: name.to_owned(),
            connector: link.lms.clone(),
            reason: self.paused.get(&link.lms).cloned().unwrap_or_default(),
        })?;
        crate::sync::reconcile::reconcile(name, link, lms, &self.state).await
    }

    /// The link's configuration, or an error naming the file.
    pub fn link(&self, name: &str) -> anyhow::Result<&crate::config::LinkConfig> {
        self.config
            .links
            .get(name)
            .ok_or_else(|| anyhow!("no link named `{name}` in {}", self.config.file.display()))
    }
}

/// Bind each configured connector to its plugin and credential, and check
/// each link's connectors implement the right world. Returns the bound
/// connectors and, for the others, why not (in the order `open` reports
/// them: connectors by name, then links by name).
fn bind(
    config: &Config,
    runtime: &Runtime,
    plugins: &BTreeMap<String, Arc<Plugin>>,
    missing: &dyn Fn(&str) -> String,
    previous: Option<&Service>,
) -> (BTreeMap<String, Connector>, Vec<(String, String)>) {
    let store = SecretStore::in_dir(&config.data_dir);
    let mut connectors = BTreeMap::new();
    let mut paused = BTreeMap::new();
    for (name, connector) in &config.connectors {
        let Some(plugin) = plugins.get(&connector.plugin) else {
            paused.insert(
                name.clone(),
                format!("connector `{name}`: plugin `{}` is not available{}", connector.plugin, missing(&connector.plugin)),
            );
            continue;
        };
        if let Some(old) = previous
            .and_then(|p| p.connectors.get(name))
            .filter(|old| Arc::ptr_eq(&old.plugin, plugin) || old.plugin.sha256 == plugin.sha256)
        {
            connectors.insert(name.clone(), old.clone());
            continue;
        }
        let credential = match connector.auth.as_ref().map(|auth| Credential::resolve_with(auth, Some(&store))).transpose() {
            Ok(c) => c,
            Err(e) => {
                paused.insert(name.clone(), format!("connector `{name}`: {e}"));
                continue;
            }
        };
        connectors.insert(name.clone(), runtime.connector(name, connector, plugin.clone(), credential));
    }
    let mut unfit = Vec::new();
    for (name, link) in &config.links {
        for (role, connector, world) in [("hris", &link.hris, World::Hris), ("lms", &link.lms, World::Lms)] {
            let Some(bound) = connectors.get(connector) else {
                continue;
            };
            if bound.plugin.world != world {
                unfit.push((
                    connector.clone(),
                    format!(
                        "link `{name}`: {role} connector `{connector}` runs plugin `{}`, which implements {}, not {world}",
                        bound.plugin.name, bound.plugin.world
                    ),
                ));
            }
        }
    }
    // Reported after every missing plugin, as `open` always did.
    let mut paused: Vec<(String, String)> = paused.into_iter().collect();
    for (connector, reason) in unfit {
        connectors.remove(&connector);
        if !paused.iter().any(|(c, _)| *c == connector) {
            paused.push((connector, reason));
        }
    }
    (connectors, paused)
}

/// Restore each connector's faults in a row, or reset them when its plugin
/// file changed.
fn restore_health(state: &State, connectors: &BTreeMap<String, Connector>) -> anyhow::Result<()> {
    for (name, connector) in connectors {
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
    Ok(())
}

fn refused_name(e: &PluginError) -> String {
    let path = match e {
        PluginError::Unreadable { path, .. }
        | PluginError::NotAComponent { path, .. }
        | PluginError::NoWorld { path, .. }
        | PluginError::UnsupportedVersion { path, .. }
        | PluginError::WrongWorld { path, .. }
        | PluginError::Link { path, .. } => path,
    };
    path.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_owned()
}
