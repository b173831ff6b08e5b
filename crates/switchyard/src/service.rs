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

use crate::audit::{Event, Kind, cli_actor};
use crate::config::Config;
use crate::engine::{LinkRun, RunError, RunOptions, RunReport};
use crate::model::{ConnectorName, Date, EmployeeId, LinkName, Remedy, Timestamp};
use crate::runtime::{Connector, Plugin, PluginError, Runtime, World};
use crate::secrets::{SecretStore, resolve_credential};
use crate::store::{ConnectorHealth, Forgotten, Quarantine, Store};
use crate::telemetry::Telemetry;

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

/// Why a link run did not finish, as the service sees it: the engine's
/// [`RunError`], or a refusal before the run began. [`RunOutcome::of_error`]
/// classifies it by matching, never by its text.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The run itself stopped, halted, was interrupted or lost its store.
    #[error(transparent)]
    Run(#[from] RunError),
    /// A connector of the link is quarantined.
    #[error(transparent)]
    Quarantined(Box<Quarantined>),
    /// A connector of the link has no usable plugin.
    #[error(transparent)]
    Paused(#[from] Paused),
    /// The run could not be set up or recorded (an unknown link, storage).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// The state a link is in between runs, rendered one way everywhere
/// ([`Service::link_state`]).
#[derive(Debug, Clone, PartialEq)]
pub enum LinkState {
    /// Nothing stops the next run.
    Ok,
    /// The mass-deactivation guard halted it; an operator must approve.
    Halted {
        /// The halt's message, with the command that approves.
        reason: String,
    },
    /// A connector has no usable plugin or credential.
    Paused {
        /// The connector.
        connector: ConnectorName,
        /// Why.
        reason: String,
    },
    /// A connector is quarantined after plugin faults in a row.
    Quarantined {
        /// The connector.
        connector: ConnectorName,
        /// Why and since when.
        quarantine: Quarantine,
    },
}

impl LinkState {
    /// One word: `ok`, `halted`, `paused` or `quarantined`.
    pub fn label(&self) -> &'static str {
        match self {
            LinkState::Ok => "ok",
            LinkState::Halted { .. } => "halted",
            LinkState::Paused { .. } => "paused",
            LinkState::Quarantined { .. } => "quarantined",
        }
    }
}

impl std::fmt::Display for LinkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkState::Ok => f.write_str("ok"),
            LinkState::Halted { reason } => write!(f, "halted: {reason}"),
            // The reason names the connector.
            LinkState::Paused { reason, .. } => write!(f, "paused: {reason}"),
            LinkState::Quarantined {
                connector,
                quarantine,
            } => write!(
                f,
                "quarantined: connector `{connector}` since {} after {} plugin faults in a row; resume it with `switchyard plugin resume {connector}`",
                quarantine.at, quarantine.faults
            ),
        }
    }
}

/// How a link run ended. The one classification of a run's result: the
/// CLI's exit code, the daemon's metrics and status, and the audit record
/// of a failed run all come from matching on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// Finished.
    Ok,
    /// Failed for a reason not below (storage, a bug).
    Failed,
    /// Stopped on an error that needs an operator (credentials,
    /// connector config, a plugin fault): a `LinkStopped`.
    Stopped,
    /// Stopped because a vendor stayed unavailable or rate-limited through
    /// every retry: nothing is lost and the next run resumes; no operator
    /// is needed unless it lasts.
    Unavailable,
    /// Halted at the mass-deactivation guard: a `LinkHalted`.
    Halted,
    /// Refused: a connector is quarantined ([`Quarantined`]).
    Quarantined,
    /// Refused: a connector has no usable plugin or credential ([`Paused`]).
    Paused,
    /// Stopped at a checkpoint for shutdown (an `Interrupted`).
    Interrupted,
}

impl RunOutcome {
    /// The outcome of a run's result.
    pub fn of<T>(result: &Result<T, SyncError>) -> RunOutcome {
        match result {
            Ok(_) => RunOutcome::Ok,
            Err(e) => RunOutcome::of_error(e),
        }
    }

    /// The outcome of a run that returned `e`.
    pub fn of_error(e: &SyncError) -> RunOutcome {
        match e {
            SyncError::Run(RunError::Interrupted(_)) => RunOutcome::Interrupted,
            SyncError::Run(RunError::Halted(_)) => RunOutcome::Halted,
            SyncError::Run(RunError::Stopped(stopped)) => match stopped.error.remedy() {
                Remedy::Retry(_) => RunOutcome::Unavailable,
                Remedy::DeadLetter | Remedy::Stop => RunOutcome::Stopped,
            },
            SyncError::Quarantined(_) => RunOutcome::Quarantined,
            SyncError::Paused(_) => RunOutcome::Paused,
            SyncError::Run(RunError::State(_)) | SyncError::Other(_) => RunOutcome::Failed,
        }
    }

    /// The `outcome` label of `switchyard_link_runs_total` and the daemon's
    /// status (a quarantined connector pauses its links: `paused`).
    pub fn label(self) -> &'static str {
        match self {
            RunOutcome::Ok => "ok",
            RunOutcome::Failed => "failed",
            RunOutcome::Stopped => "stopped",
            RunOutcome::Unavailable => "unavailable",
            RunOutcome::Halted => "halted",
            RunOutcome::Quarantined | RunOutcome::Paused => "paused",
            RunOutcome::Interrupted => "interrupted",
        }
    }

    /// The CLI's exit code: 0 success, 3 a link needs an operator, 5 a
    /// vendor stayed unavailable (the next run resumes), 1 else. (2 is an
    /// invalid configuration, 4 a run that dead-lettered: the CLI's.)
    pub fn exit_code(self) -> u8 {
        match self {
            RunOutcome::Ok => 0,
            RunOutcome::Unavailable => 5,
            RunOutcome::Stopped | RunOutcome::Halted | RunOutcome::Quarantined => 3,
            RunOutcome::Failed | RunOutcome::Paused | RunOutcome::Interrupted => 1,
        }
    }

    /// The audit record of a run that did not finish.
    fn audit_kind(self) -> Kind {
        match self {
            RunOutcome::Halted => Kind::LinkHalted,
            RunOutcome::Stopped | RunOutcome::Unavailable => Kind::LinkStopped,
            RunOutcome::Quarantined => Kind::RunRefused,
            RunOutcome::Ok | RunOutcome::Failed | RunOutcome::Paused | RunOutcome::Interrupted => {
                Kind::RunFailed
            }
        }
    }
}

impl std::fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Everything a configuration describes, loaded and checked.
pub struct Service {
    /// The configuration.
    pub config: Config,
    /// The plugin runtime.
    pub runtime: Runtime,
    /// Sync state.
    pub state: Arc<dyn Store>,
    /// Loaded plugins by name.
    pub plugins: BTreeMap<String, Arc<Plugin>>,
    /// Plugin files that were refused.
    pub refused: Vec<PluginError>,
    /// Connectors by name.
    pub connectors: BTreeMap<ConnectorName, Connector>,
    /// Connectors without a usable plugin, and why. [`Service::open`]
    /// refuses to start with any; the daemon ([`Service::assemble`]) pauses
    /// them and the links that use them.
    pub paused: BTreeMap<ConnectorName, String>,
    /// Set to make runs in progress stop at their next checkpoint (the
    /// daemon's shutdown); shared by every service a daemon assembles.
    pub stop: Arc<AtomicBool>,
    /// Who the audit log names for runs and actions started through this
    /// service (default: the OS user and host, `via cli`).
    pub actor: String,
}

/// What retention removed in one pass.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RetentionReport {
    /// Audit records pruned.
    pub audit_records: u64,
    /// Dead letters deleted.
    pub dead_letters: usize,
    /// Snapshots of departed employees deleted.
    pub snapshots: usize,
}

impl Service {
    /// Load plugins, bind connectors and open the state database.
    ///
    /// A refused plugin file is reported in `refused`; it is an error only if
    /// a connector needs it. A connector whose plugin implements the wrong
    /// world for a link is an error naming both.
    pub fn open(config: Config) -> anyhow::Result<Service> {
        Service::open_with(config, true)
    }

    /// Like [`Service::open`], but a connector whose plugin is missing or
    /// unfit is `paused` (with the reason) instead of an error: for
    /// commands that report on state (`status`) and must work while a
    /// plugin is broken.
    pub fn open_tolerant(config: Config) -> anyhow::Result<Service> {
        Service::open_with(config, false)
    }

    fn open_with(config: Config, strict: bool) -> anyhow::Result<Service> {
        let runtime = plugin_runtime(&config)?;
        // Only the plugins the connectors use are read and compiled; the
        // compiled-code cache is the daemon's too, so a one-shot run does
        // not recompile unchanged plugins either.
        let set = runtime.load_named(
            &config.plugin_dir,
            config.connectors.values().map(|c| c.plugin.as_str()),
            Some(&config.data_dir.join("cache")),
        )?;
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("failed to create {}", config.data_dir.display()))?;
        let state: Arc<dyn Store> = Arc::new(config.open_store()?);
        let mut set = set;
        let held = hold_unapproved(&*state, &mut set.plugins)?;
        audit_startup(&*state, &config, &set, &held)?;
        Service::limit_origins(&config, &runtime);
        let missing = |plugin: &str| {
            if let Some(reason) = held.get(plugin) {
                return format!(": held: {reason}");
            }
            set.refused
                .iter()
                .find(|e| refused_name(e) == plugin)
                .map(|e| format!(": {e}"))
                .unwrap_or_else(|| format!(": no {plugin}.wasm in {}", config.plugin_dir.display()))
        };
        let (connectors, paused) = bind(&config, &runtime, &state, &set.plugins, &missing, None);
        // An optional connector may be paused; its links are refused when
        // they run.
        if strict
            && let Some((_, reason)) = paused
                .iter()
                .find(|(c, _)| config.connectors.get(c).is_none_or(|c| !c.optional))
        {
            bail!("{reason}");
        }
        restore_health(&*state, &connectors)?;
        Ok(Service {
            config,
            runtime,
            state,
            plugins: set.plugins,
            refused: set.refused,
            connectors,
            actor: cli_actor(),
            paused: paused.into_iter().collect(),
            stop: Arc::default(),
        })
    }

    /// Apply the configuration's origin budgets to a runtime (once per
    /// runtime).
    pub fn limit_origins(config: &Config, runtime: &Runtime) {
        for (origin, budget) in &config.origins {
            runtime.limit_origin(
                origin,
                budget.requests_per_second,
                budget.burst.unwrap_or(budget.requests_per_second),
            );
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
        state: Arc<dyn Store>,
        plugins: BTreeMap<String, Arc<Plugin>>,
        missing: &dyn Fn(&str) -> String,
        previous: Option<&Service>,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<Service> {
        let (connectors, paused) = bind(&config, &runtime, &state, &plugins, missing, previous);
        restore_health(&*state, &connectors)?;
        Ok(Service {
            config,
            runtime,
            state,
            plugins,
            refused: Vec::new(),
            connectors,
            paused: paused.into_iter().collect(),
            stop,
            actor: "daemon".to_owned(),
        })
    }

    /// Run one link once.
    pub async fn sync_link(&self, name: &str) -> Result<RunReport, SyncError> {
        self.sync_link_with(name, RunOptions::default(), Date::today())
            .await
    }

    /// Run one link once with options, as of `today`.
    pub async fn sync_link_with(
        &self,
        name: &str,
        options: RunOptions,
        today: Date,
    ) -> Result<RunReport, SyncError> {
        let audit = self.state.audit();
        let started = Event::new(Kind::RunStarted)
            .link(name)
            .actor(&self.actor)
            .detail(serde_json::json!({
                "dry_run": options.dry_run,
                "approve_deactivations": options.approve_deactivations,
                "full_listing": options.full_listing,
            }));
        let run = match self.link_run(name, today) {
            Ok(run) => run,
            Err(e) => {
                audit.append_all(vec![started, run_failed(name, &e)])?;
                return Err(e);
            }
        };
        audit.append(started)?;
        tracing::info!(link = name, dry_run = options.dry_run, "sync started");
        let result = run.run(options).await;
        for connector in [&run.link.hris, &run.link.lms] {
            self.record_health(connector)?;
        }
        let report = match result {
            Ok(report) => report,
            Err(e) => {
                let e = SyncError::Run(e);
                audit.append(run_failed(name, &e))?;
                return Err(e);
            }
        };
        let mut counts = serde_json::to_value(&report).context("failed to encode a run report")?;
        if let Some(map) = counts.as_object_mut() {
            map.remove("plan");
            map.remove("link");
        }
        audit.append(Event::new(Kind::RunFinished).link(name).detail(counts))?;
        if !options.dry_run {
            self.apply_retention()?;
        }
        tracing::info!(link = name, writes = report.writes(), "sync finished");
        Ok(report)
    }

    /// Apply the configured retention now (see [`apply_retention`]).
    pub fn apply_retention(&self) -> anyhow::Result<RetentionReport> {
        apply_retention(&self.config, &*self.state)
    }

    /// Subject erasure (see [`Store::forget`]), recorded with this
    /// service's actor.
    pub fn forget(&self, employee: &EmployeeId) -> anyhow::Result<Forgotten> {
        self.state.forget(employee, &self.actor)
    }

    /// Record an operator action (`admin.*`) in the audit log, durably
    /// before the action goes on (a `dlq replay` killed while it applies
    /// the outbox still has its record).
    pub fn record_action(&self, event: Event) -> anyhow::Result<()> {
        self.state.audit().append(event.actor(&self.actor))?;
        self.state.flush()
    }

    /// Lift a connector's quarantine and reset its fault count; returns the
    /// quarantine that was lifted.
    pub fn resume(&self, connector: &ConnectorName) -> anyhow::Result<Option<Quarantine>> {
        // The caller records the action with its actor (the CLI as
        // `user@host`, the admin API with the token and address).
        let lifted = self.state.resume_connector(connector)?;
        if let Some(c) = self.connectors.get(connector) {
            c.restore_consecutive_faults(0);
        }
        Ok(lifted)
    }

    fn refuse_if_quarantined(
        &self,
        link: &LinkName,
        name: &ConnectorName,
    ) -> Result<(), SyncError> {
        let connector = &self.connectors[name];
        let Some(health) = self.state.connector_health(name)? else {
            return Ok(());
        };
        match health.quarantine {
            Some(quarantine) if health.sha256 == connector.plugin.sha256 => {
                Err(SyncError::Quarantined(Box::new(Quarantined {
                    link: link.to_string(),
                    connector: name.to_string(),
                    plugin: connector.plugin.name.clone(),
                    version: connector.plugin.version().to_owned(),
                    quarantine,
                })))
            }
            _ => Ok(()),
        }
    }

    /// Persist a connector's faults in a row, and quarantine it when they
    /// reach its limit.
    fn record_health(&self, name: &ConnectorName) -> anyhow::Result<()> {
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
            let reason = connector
                .last_fault()
                .unwrap_or_else(|| "plugin faults".to_owned());
            tracing::error!(connector = %name, plugin = %connector.plugin.name, version = connector.plugin.version(), faults, "connector quarantined: {reason}");
            self.state.audit().append(
                Event::new(Kind::ConnectorQuarantined)
                    .connector(name)
                    .cause(format!(
                        "{faults} plugin faults in a row (quarantine_after = {limit})"
                    ))
                    .detail(serde_json::json!({
                        "plugin": connector.plugin.name,
                        "version": connector.plugin.version(),
                        "sha256": connector.plugin.sha256,
                    }))
                    .personal(serde_json::json!({ "last_fault": reason })),
            )?;
            health.quarantine = Some(Quarantine {
                reason,
                faults,
                at: Timestamp::now(),
            });
        }
        self.state.put_connector_health(name, &health)
    }

    /// Run every link once, in name order. Stops at the first link that fails.
    pub async fn sync_all(&self, options: RunOptions) -> Result<Vec<RunReport>, SyncError> {
        let today = Date::today();
        let mut reports = Vec::new();
        for name in self.config.links.keys() {
            reports.push(self.sync_link_with(name, options, today).await?);
        }
        Ok(reports)
    }

    /// Apply what waits in a link's outbox (after `dlq replay`).
    pub async fn drain_outbox(&self, name: &str) -> Result<RunReport, SyncError> {
        let run = self.link_run(name, Date::today())?;
        let result = run.drain().await;
        for connector in [&run.link.hris, &run.link.lms] {
            self.record_health(connector)?;
        }
        Ok(result?)
    }

    /// A run of a link, refused while one of its connectors is quarantined.
    fn link_run<'a>(&'a self, name: &str, today: Date) -> Result<LinkRun<'a>, SyncError> {
        let (name, link) = self.link(name)?;
        for connector in [&link.hris, &link.lms] {
            if let Some(reason) = self.paused.get(connector) {
                return Err(Paused {
                    link: name.to_string(),
                    connector: connector.to_string(),
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
            state: &*self.state,
            today,
            stop: &self.stop,
            observer: &Telemetry::METRICS,
            started: std::time::Instant::now(),
            bindings: Default::default(),
        })
    }

    /// Compare the HRIS, the LMS and the HRIS's training records of a link.
    /// `listed` is told each listing's progress.
    pub async fn reconcile(
        &self,
        name: &str,
        listed: crate::engine::paging::Listed<'_>,
    ) -> anyhow::Result<crate::engine::reconcile::Reconciliation> {
        let (name, link) = self.link(name)?;
        let (hris, lms) = self.connectors_of(name, link)?;
        crate::engine::reconcile::reconcile(name, link, hris, lms, &*self.state, listed).await
    }

    /// `switchyard match`: which LMS account each employee of a link would
    /// be bound to, and what a person must decide. Writes nothing.
    /// `listed` is told each listing's progress.
    pub async fn match_link(
        &self,
        name: &str,
        listed: crate::engine::paging::Listed<'_>,
    ) -> anyhow::Result<crate::engine::matching::MatchReport> {
        let (name, link) = self.link(name)?;
        let (hris, lms) = self.connectors_of(name, link)?;
        Ok(crate::engine::matching::report(name, link, hris, lms, &*self.state, listed).await?)
    }

    /// A link's two connectors, or why one is paused.
    fn connectors_of(
        &self,
        name: &LinkName,
        link: &crate::config::LinkConfig,
    ) -> Result<(&Connector, &Connector), Paused> {
        let connector = |which: &ConnectorName| {
            self.connectors.get(which).ok_or_else(|| Paused {
                link: name.to_string(),
                connector: which.to_string(),
                reason: self.paused.get(which).cloned().unwrap_or_default(),
            })
        };
        Ok((connector(&link.hris)?, connector(&link.lms)?))
    }

    /// What state a link is in: halted for an operator, paused or
    /// quarantined through one of its connectors, or ok. The CLI's
    /// `status`, the admin API and the daemon's logs all show this value.
    pub fn link_state(&self, name: &LinkName) -> anyhow::Result<LinkState> {
        let (name, link) = self.link(name)?;
        if let Some(reason) = self.state.link_status(name)?.halted {
            return Ok(LinkState::Halted { reason });
        }
        for connector in [&link.hris, &link.lms] {
            if let Some(reason) = self.paused.get(connector) {
                return Ok(LinkState::Paused {
                    connector: connector.clone(),
                    reason: reason.clone(),
                });
            }
            let loaded = self.connectors.get(connector);
            if let Some(health) = self.state.connector_health(connector)?
                && let Some(quarantine) = health.quarantine
                && loaded.is_some_and(|c| c.plugin.sha256 == health.sha256)
            {
                return Ok(LinkState::Quarantined {
                    connector: connector.clone(),
                    quarantine,
                });
            }
        }
        Ok(LinkState::Ok)
    }

    /// The link's configuration, or an error naming the file.
    pub fn link(&self, name: &str) -> anyhow::Result<(&LinkName, &crate::config::LinkConfig)> {
        self.config
            .links
            .get_key_value(name)
            .ok_or_else(|| anyhow!("no link named `{name}` in {}", self.config.file.display()))
    }
}

/// Apply the configured retention: prune old audit records and dead
/// letters, delete the snapshots of long-departed employees. Each deletion
/// is recorded in the audit log.
pub fn apply_retention(config: &Config, state: &dyn Store) -> anyhow::Result<RetentionReport> {
    let retention = &config.retention;
    let now = time::OffsetDateTime::now_utc();
    let days = |d: u32| now - time::Duration::days(d.into());
    let ms =
        |t: time::OffsetDateTime| u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let audit = state.audit();
    let mut report = RetentionReport::default();
    let cause = |what: &str, d: u32| format!("retention: {what} older than {d} days");
    for link in config.links.keys() {
        let letters =
            state.prune_dead_letters(link, Timestamp::new(days(retention.dead_letter_days)))?;
        let departed = state.prune_departed(link, ms(days(retention.departed_days)))?;
        if letters > 0 {
            audit.append(
                Event::new(Kind::RetentionDeadLettersDeleted)
                    .link(link)
                    .cause(cause("dead letters", retention.dead_letter_days))
                    .detail(serde_json::json!({ "count": letters })),
            )?;
        }
        if !departed.is_empty() {
            audit.append(
                Event::new(Kind::RetentionSnapshotsDeleted)
                    .link(link)
                    .cause(cause(
                        "snapshots of employees absent from the HRIS",
                        retention.departed_days,
                    ))
                    .detail(serde_json::json!({ "count": departed.len(), "employees": departed })),
            )?;
        }
        report.dead_letters += letters;
        report.snapshots += departed.len();
    }
    report.audit_records = audit
        .prune(
            ms(days(retention.audit_days)),
            &cause("audit records", retention.audit_days),
        )?
        .records;
    Ok(report)
}

/// The audit record of a run that failed: halted, stopped, refused or failed.
fn run_failed(link: &str, e: &SyncError) -> Event {
    let kind = RunOutcome::of_error(e).audit_kind();
    // The error chain may quote a vendor's text: outside the hashed record.
    Event::new(kind)
        .link(link)
        .personal(serde_json::json!({ "error": format!("{e:#}") }))
}

/// Resolve every credential of the connectors not marked `optional`: the
/// daemon refuses to start with one missing (an unset `env:` variable, a
/// missing file or store entry) instead of reporting ready with the
/// connector paused.
pub fn check_credentials(config: &Config) -> anyhow::Result<()> {
    let store = SecretStore::in_dir(&config.data_dir);
    for (name, connector) in &config.connectors {
        if connector.optional {
            continue;
        }
        if let Some(auth) = &connector.auth
            && let Err(e) = resolve_credential(auth, Some(&store))
        {
            bail!(
                "{}:{}: connector `{name}`: {e} (set `optional = true` on the connector to start without it)",
                config.file.display(),
                connector.line
            );
        }
    }
    Ok(())
}

/// The plugin runtime a configuration asks for: its plugin size limit and
/// signing policy (every command and the daemon load plugins through one).
pub fn plugin_runtime(config: &Config) -> anyhow::Result<Runtime> {
    Ok(Runtime::new()
        .context("failed to start the plugin runtime")?
        .with_max_plugin_mib(config.max_plugin_mib)
        .with_signing(config.signing.clone()))
}

/// Take out of `plugins` each one that needs more than its approved
/// version ([`crate::review`]); returns why, by plugin name.
fn hold_unapproved(
    state: &dyn Store,
    plugins: &mut BTreeMap<String, Arc<Plugin>>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut held = BTreeMap::new();
    for (name, plugin) in plugins.iter() {
        if let crate::review::Review::Held(more) = crate::review::review(state, plugin)? {
            held.insert(name.clone(), crate::review::held_reason(plugin, &more));
        }
    }
    plugins.retain(|name, _| !held.contains_key(name));
    Ok(held)
}

/// Record what changed since the last start: the configuration file and
/// each plugin file (loaded, replaced or refused, with its sha256). A
/// plugin or configuration seen before with the same hash is not recorded
/// again.
fn audit_startup(
    state: &dyn Store,
    config: &Config,
    set: &crate::runtime::PluginSet,
    held: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    use sha2::Digest;
    let audit = state.audit();
    let mut events = Vec::new();
    let mut seen = Vec::new();
    if let Ok(text) = std::fs::read(&config.file) {
        let sha = hex::encode(sha2::Sha256::digest(&text));
        let previous = audit.remembered("config")?;
        if previous.as_deref() != Some(sha.as_str()) {
            events.push(Event::new(Kind::ConfigLoaded).detail(serde_json::json!({
                "file": config.file.display().to_string(),
                "sha256": sha,
                "previous_sha256": previous,
            })));
            seen.push(("config".to_owned(), sha));
        }
    }
    for plugin in set.plugins.values() {
        let name = format!("plugin/{}", plugin.name);
        let previous = audit.remembered(&name)?;
        if previous.as_deref() != Some(plugin.sha256.as_str()) {
            let kind = if previous.is_some() {
                Kind::PluginReplaced
            } else {
                Kind::PluginLoaded
            };
            events.push(Event::new(kind).detail(serde_json::json!({
                "plugin": plugin.name,
                "world": plugin.world.to_string(),
                "contract": plugin.contract_version,
                "version": plugin.version(),
                "sha256": plugin.sha256,
                "previous_sha256": previous,
            })));
            seen.push((name, plugin.sha256.clone()));
        }
    }
    for refused in &set.refused {
        let path = refused.path();
        let sha = std::fs::read(path)
            .map(|b| hex::encode(sha2::Sha256::digest(&b)))
            .unwrap_or_default();
        let name = format!("refused/{}", path.display());
        if audit.remembered(&name)?.as_deref() != Some(sha.as_str()) {
            events.push(Event::new(Kind::PluginRefused).detail(serde_json::json!({
                "file": path.display().to_string(),
                "sha256": sha,
                "reason": refused.to_string(),
            })));
            seen.push((name, sha));
        }
    }
    for (plugin, reason) in held {
        let name = format!("held/{plugin}");
        if audit.remembered(&name)?.as_deref() != Some(reason.as_str()) {
            events.push(Event::new(Kind::PluginHeld).detail(serde_json::json!({
                "plugin": plugin,
                "reason": reason,
            })));
            seen.push((name, reason.clone()));
        }
    }
    audit.append_all(events)?;
    for (name, value) in seen {
        audit.remember(&name, &value)?;
    }
    Ok(())
}

/// Bind each configured connector to its plugin, credential and the audit
/// log, and check each link's connectors implement the right world. Returns the bound
/// connectors and, for the others, why not (in the order `open` reports
/// them: connectors by name, then links by name).
fn bind(
    config: &Config,
    runtime: &Runtime,
    state: &Arc<dyn Store>,
    plugins: &BTreeMap<String, Arc<Plugin>>,
    missing: &dyn Fn(&str) -> String,
    previous: Option<&Service>,
) -> (
    BTreeMap<ConnectorName, Connector>,
    Vec<(ConnectorName, String)>,
) {
    let store = SecretStore::in_dir(&config.data_dir);
    let mut connectors = BTreeMap::new();
    let mut paused = BTreeMap::new();
    for (name, connector) in &config.connectors {
        let Some(plugin) = plugins.get(&connector.plugin) else {
            paused.insert(
                name.clone(),
                format!(
                    "connector `{name}`: plugin `{}` is not available{}",
                    connector.plugin,
                    missing(&connector.plugin)
                ),
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
        let credential = match connector
            .auth
            .as_ref()
            .map(|auth| resolve_credential(auth, Some(&store)))
            .transpose()
        {
            Ok(c) => c,
            Err(e) => {
                paused.insert(name.clone(), format!("connector `{name}`: {e}"));
                continue;
            }
        };
        let mut bound = runtime.connector(name, &connector.grants(), plugin.clone(), credential);
        bound.set_observer(Arc::new(Telemetry::with_audit(state.clone())));
        connectors.insert(name.clone(), bound);
    }
    let mut unfit = Vec::new();
    for (name, link) in &config.links {
        for (role, connector, world) in [
            ("hris", &link.hris, World::Hris),
            ("lms", &link.lms, World::Lms),
        ] {
            let Some(bound) = connectors.get(connector) else {
                continue;
            };
            if bound.plugin.world != world {
                let line = config.connectors.get(connector).map_or(0, |c| c.line);
                unfit.push((
                    connector.clone(),
                    format!(
                        "{}:{line}: link `{name}`: {role} connector `{connector}` names plugin `{}`, which implements {}, not {world}",
                        config.file.display(),
                        bound.plugin.name,
                        bound.plugin.world
                    ),
                ));
            }
        }
    }
    // Reported after every missing plugin, as `open` always did.
    let mut paused: Vec<(ConnectorName, String)> = paused.into_iter().collect();
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
fn restore_health(
    state: &dyn Store,
    connectors: &BTreeMap<ConnectorName, Connector>,
) -> anyhow::Result<()> {
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
    e.path()
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_owned()
}
