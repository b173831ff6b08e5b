//! `switchyard run`: the long-running service.
//!
//! One [`Daemon`] owns the configuration, the plugin runtime, the state
//! database and the current [`Service`], held in an `ArcSwap`: the plugin
//! watcher assembles a new `Service` when the plugin directory changes and
//! swaps it in; a link run loads the current one when it starts and keeps it
//! (its plugin versions) to the end.
//!
//! # Layout
//!
//! - [`scheduler`]: when each link runs (schedules, jitter, no overlap,
//!   missed runs, manual triggers);
//! - [`plugins`]: the watched plugin directory (settling, validation,
//!   compiled-code cache, swap, refusal, removal);
//! - [`admin`]: the admin API and its OpenAPI document, on its own listener
//!   behind a bearer token; `/metrics` is served there too;
//! - `events.rs`: [`DaemonEvent`] and [`note`], the one place a daemon event
//!   is logged and recorded in the audit log;
//! - [`listener`]: both listeners' accept loop (request timeouts, connection
//!   cap, closing connections at shutdown);
//!
//! The public listener ([`public_router`]) is where inbound traffic from
//! other systems (webhooks) is served.
//!
//! Every event the audit trail wants goes through [`note`].
//!
//! **Shutdown** (SIGTERM/SIGINT): runs in progress are asked to stop at
//! their next checkpoint (`Service::stop`: before the next page or the next
//! operation; an operation in flight finishes and is recorded), the
//! listeners stop accepting, the plugin watcher and the schedulers stop.
//! A run that reaches no checkpoint within `shutdown_grace` is dropped at
//! its next await point (safe too: the outbox was written before anything
//! was applied and every effect carries its idempotency key). An
//! interrupted run is not recorded as finished, and a link with work in its
//! outbox runs at start, so the next start finishes the outbox. Open
//! connections are told to close after the request in progress and are
//! dropped when the grace period ends. Then sled is flushed.

pub mod admin;
mod events;
pub mod listener;
pub mod plugins;
pub mod scheduler;

pub use events::{DaemonEvent, note};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use arc_swap::ArcSwap;
use axum::Router;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::config::{Config, ConfigError};
use crate::engine::RunReport;
use crate::model::LinkName;
use crate::runtime::Runtime;
use crate::secrets::{SecretStore, resolve_secret};
use crate::service::{RunOutcome, Service, SyncError};
use crate::store::Store;
use plugins::{Change, PluginDir, PluginInfo};
use scheduler::{LinkRunner, LinkSlot, RunCause, RunEnd, WallClock};

/// What the daemon remembers of a link's runs (the last run time is also
/// in sled, for the scheduler).
#[derive(Debug, Clone, Default, Serialize)]
pub struct LinkActivity {
    /// Runs since the daemon started.
    pub runs: u64,
    /// Start of the last run (RFC 3339).
    pub last_started: Option<String>,
    /// End of the last run (RFC 3339).
    pub last_finished: Option<String>,
    /// `ok`, `failed`, `stopped`, `halted`, `paused` or `interrupted`.
    pub last_outcome: Option<String>,
    /// What the last run reported, if it got that far.
    pub last_report: Option<RunReport>,
    /// The last run's error, if it failed.
    pub last_error: Option<String>,
    /// End of the last run that succeeded (RFC 3339).
    pub last_success: Option<String>,
}

/// What serves now, published in one step: the service runs use and the
/// plugin statuses the admin API shows. A status seen in the admin API is
/// therefore what every run started after it uses (a plugin reported
/// `removed` is not run again, a new version reported `serving` is).
pub struct Serving {
    /// The service runs start with.
    pub service: Arc<Service>,
    /// The plugin directory as that service sees it.
    pub plugins: Vec<PluginInfo>,
}

/// The daemon's shared parts.
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// The plugin runtime (one engine for every version of every plugin).
    pub runtime: Runtime,
    /// Sync state.
    pub state: Arc<dyn Store>,
    /// The service runs use and the plugin statuses, swapped together when
    /// plugins change.
    pub serving: ArcSwap<Serving>,
    /// The plugin directory.
    pub plugins: PluginDir,
    /// One scheduler slot per link.
    pub links: BTreeMap<LinkName, Arc<LinkSlot>>,
    activity: Mutex<BTreeMap<String, LinkActivity>>,
    admin_token_sha256: [u8; 32],
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    ready: AtomicBool,
    shutdown: watch::Sender<bool>,
    /// Held by each run thread (see `sync_on_own_thread`).
    in_flight: Arc<()>,
    /// Shared with every assembled service: set at shutdown so runs stop at
    /// their next checkpoint.
    stop: Arc<AtomicBool>,
    /// Refused requests of both listeners, summed per client.
    pub rejections: Arc<crate::rejections::Rejections>,
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Shared {
    /// The service serving now.
    pub fn service(&self) -> Arc<Service> {
        self.serving.load().service.clone()
    }

    /// What the daemon remembers of a link's runs.
    pub fn activity(&self, link: &str) -> LinkActivity {
        self.activity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(link)
            .cloned()
            .unwrap_or_default()
    }

    /// Plugins scanned, service assembled, not shutting down.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !*self.shutdown.borrow()
    }

    /// Ask a link's scheduler for a run now (after the one in progress, if
    /// any). False if there is no such link.
    pub fn trigger(&self, link: &str) -> bool {
        match self.links.get(link) {
            Some(slot) => {
                slot.trigger.notify_one();
                true
            }
            None => false,
        }
    }

    /// Re-read the plugin directory and, if what serves changed, assemble
    /// and swap in a new service.
    async fn rescan(&self, initial: bool) {
        let changes = self.plugins.scan(&self.runtime, initial).await;
        self.apply(changes, initial);
    }

    /// Approve the held version of `plugin` (with `sha256`, only if that
    /// version is held) and serve it.
    pub fn approve(
        &self,
        plugin: &str,
        sha256: Option<&str>,
        by: &str,
    ) -> anyhow::Result<plugins::Approval> {
        let approval = self.plugins.approve(plugin, sha256, by)?;
        if let plugins::Approval::Approved(change) = &approval {
            self.apply(vec![change.clone()], false);
        }
        Ok(approval)
    }

    /// Record what changed in the plugin directory and, if what serves
    /// changed, assemble and swap in a new service.
    fn apply(&self, changes: Vec<Change>, initial: bool) {
        for change in &changes {
            note(
                self.state.audit(),
                match change.clone() {
                    Change::Loaded {
                        plugin,
                        sha256,
                        world,
                    } => {
                        crate::telemetry::plugin_reload(&plugin, "loaded");
                        DaemonEvent::PluginLoaded {
                            plugin,
                            sha256,
                            world,
                        }
                    }
                    Change::Replaced {
                        plugin,
                        old_sha256,
                        new_sha256,
                    } => {
                        crate::telemetry::plugin_reload(&plugin, "loaded");
                        DaemonEvent::PluginReplaced {
                            plugin,
                            old_sha256,
                            new_sha256,
                        }
                    }
                    Change::Refused {
                        plugin,
                        sha256,
                        reason,
                        still_serving,
                    } => {
                        crate::telemetry::plugin_reload(&plugin, "refused");
                        DaemonEvent::PluginRefused {
                            plugin,
                            sha256,
                            reason,
                            still_serving,
                        }
                    }
                    Change::Removed { plugin, sha256 } => {
                        crate::telemetry::plugin_reload(&plugin, "removed");
                        DaemonEvent::PluginRemoved { plugin, sha256 }
                    }
                    Change::Held {
                        plugin,
                        sha256,
                        needs,
                        still_serving,
                    } => {
                        crate::telemetry::plugin_reload(&plugin, "held");
                        DaemonEvent::PluginHeld {
                            plugin,
                            sha256,
                            needs,
                            still_serving,
                        }
                    }
                },
            );
        }
        if initial || changes.is_empty() {
            return;
        }
        let previous = self.service();
        let service = if changes.iter().any(Change::changes_serving) {
            match self.assemble(Some(&previous)) {
                Ok(service) => Arc::new(service),
                Err(e) => {
                    tracing::error!(
                        "plugins changed but the service could not be assembled; the previous one keeps running: {e:#}"
                    );
                    previous
                }
            }
        } else {
            previous
        };
        self.publish(service);
    }

    /// Swap in `service` with the plugin statuses as they are now, in one
    /// step.
    fn publish(&self, service: Arc<Service>) {
        self.serving.store(Arc::new(Serving {
            service,
            plugins: self.plugins.status(),
        }));
    }

    fn assemble(&self, previous: Option<&Service>) -> anyhow::Result<Service> {
        let missing = |plugin: &str| self.plugins.why_missing(plugin);
        let service = Service::assemble(
            self.config.clone(),
            self.runtime.clone(),
            self.state.clone(),
            self.plugins.serving(),
            &missing,
            previous,
            self.stop.clone(),
        )?;
        for (connector, reason) in &service.paused {
            let was = previous.and_then(|p| p.paused.get(connector));
            if was != Some(reason) {
                note(
                    self.state.audit(),
                    DaemonEvent::ConnectorPaused {
                        connector: connector.to_string(),
                        reason: reason.clone(),
                    },
                );
            }
        }
        Ok(service)
    }

    /// Whether `token` is the admin token (constant time).
    pub fn admin_token_matches(&self, token: &str) -> bool {
        use subtle::ConstantTimeEq;
        // Comparing digests keeps the comparison constant-time whatever the
        // lengths.
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        digest.ct_eq(&self.admin_token_sha256).into()
    }

    /// The admin token's fingerprint, for the audit trail.
    pub fn admin_token_fingerprint(&self) -> String {
        hex::encode(&Sha256::digest(self.admin_token_sha256)[..6])
    }

    /// The Prometheus exposition, if this process installed the recorder.
    pub fn render_metrics(&self) -> Option<String> {
        self.metrics.as_ref().map(crate::telemetry::render)
    }
}

impl Shared {
    /// Run a link's sync on a thread of its own ([`Shared::on_own_thread`]).
    async fn sync_on_own_thread(
        &self,
        service: Arc<Service>,
        link: &str,
    ) -> Result<RunReport, SyncError> {
        let link = link.to_owned();
        let name = format!("switchyard-run-{link}");
        self.on_own_thread(name, async move || service.sync_link(&link).await)
            .await?
    }

    /// Drive `work` (a run, a matching report: anything that calls plugins)
    /// on a thread of its own by the runtime's handle. (rustc cannot yet
    /// prove the engine's futures `Send` across their async closures, so
    /// they cannot be spawned as tasks.) Dropping the returned future stops
    /// the work at its next await point; shutdown waits for such threads to
    /// let go of the state before flushing.
    pub async fn on_own_thread<T, F>(&self, name: String, work: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: AsyncFnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let handle = tokio::runtime::Handle::current();
        let in_flight = self.in_flight.clone();
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let mut tx = tx;
                let result = handle.block_on(async {
                    tokio::select! {
                        result = work() => Some(result),
                        () = tx.closed() => None,
                    }
                });
                if let Some(result) = result {
                    let _ = tx.send(result);
                }
                drop(in_flight);
            })
            .context("failed to start a thread for the work")?;
        rx.await
            .map_err(|_| anyhow!("the work's thread ended without a result"))
    }

    /// Wait (up to `limit`) until no run thread holds the state.
    async fn runs_released(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Arc::strong_count(&self.in_flight) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl LinkRunner for Shared {
    fn last_run(&self, link: &str) -> Option<u64> {
        self.state
            .last_run(&LinkName::from(link))
            .unwrap_or_else(|e| {
                tracing::warn!(link, "cannot read the last run time: {e:#}");
                None
            })
    }

    fn record_run(&self, link: &str, at_ms: u64) {
        if let Err(e) = self.state.put_last_run(&LinkName::from(link), at_ms) {
            tracing::error!(link, "cannot record the run time: {e:#}");
        }
    }

    fn has_pending(&self, link: &str) -> bool {
        match self.state.depths(&LinkName::from(link)) {
            Ok((outbox, _)) => outbox > 0,
            Err(e) => {
                tracing::error!(link, "cannot read the state database: {e:#}");
                false
            }
        }
    }

    async fn run(&self, link: &str, cause: RunCause) -> RunEnd {
        // The service as it is now: this run keeps these plugin versions to
        // its end, whatever the watcher swaps in meanwhile.
        let service = self.service();
        let started = Instant::now();
        let started_at = now_rfc3339();
        tracing::info!(link, ?cause, "link run started");
        {
            let mut activity = self.activity.lock().unwrap_or_else(|e| e.into_inner());
            let a = activity.entry(link.to_owned()).or_default();
            a.last_started = Some(started_at);
        }
        let result = self.sync_on_own_thread(service.clone(), link).await;
        let outcome = RunOutcome::of(&result);
        let now_s = crate::store::now_ms() as f64 / 1000.0;
        crate::telemetry::link_run(
            link,
            outcome.label(),
            started.elapsed(),
            result.as_ref().ok(),
            now_s,
        );
        match self.state.depths(&LinkName::from(link)) {
            Ok((outbox, dead)) => crate::telemetry::depths(link, outbox, dead),
            Err(e) => tracing::error!(link, "cannot read the state database: {e:#}"),
        }
        match &result {
            Ok(report) => tracing::info!(
                link,
                writes = report.writes(),
                pending = report.pending,
                "link run finished"
            ),
            Err(e) => {
                let state = service
                    .link_state(&LinkName::from(link))
                    .map_or_else(|e| format!("unknown ({e:#})"), |s| s.to_string());
                tracing::warn!(link, outcome = outcome.label(), status = %state, "link run failed: {e:#}");
            }
        }
        let finished = now_rfc3339();
        let mut activity = self.activity.lock().unwrap_or_else(|e| e.into_inner());
        let a = activity.entry(link.to_owned()).or_default();
        a.runs += 1;
        a.last_finished = Some(finished.clone());
        a.last_outcome = Some(outcome.label().to_owned());
        match result {
            Ok(report) => {
                a.last_report = Some(report);
                a.last_error = None;
                a.last_success = Some(finished);
            }
            Err(e) => {
                a.last_report = None;
                a.last_error = Some(format!("{e:#}"));
            }
        }
        if outcome == RunOutcome::Interrupted {
            RunEnd::Interrupted
        } else {
            RunEnd::Finished
        }
    }
}

/// A started daemon.
pub struct Daemon {
    /// The shared parts (admin API, tests).
    pub shared: Arc<Shared>,
    /// Where the admin API listens.
    pub admin_addr: SocketAddr,
    /// Where the public listener listens, if configured.
    pub public_addr: Option<SocketAddr>,
    tasks: tokio::task::JoinSet<()>,
}

/// The public listener's routes: what other systems call: `/healthz` and
/// the webhook ingress (`POST /webhooks/{connector}`). The ingress finds
/// connectors in the service serving now (plugins may be swapped), and a
/// delivery that queued work triggers the runs of the links it touched.
pub fn public_router(shared: Arc<Shared>) -> anyhow::Result<Router> {
    let store = SecretStore::in_dir(&shared.config.data_dir);
    let source = shared.clone();
    let trigger = shared.clone();
    let ingress = crate::webhook::Ingress::new(
        &shared.config,
        shared.state.clone(),
        move |name: &str| source.serving.load().service.connectors.get(name).cloned(),
        Some(&store),
    )?
    .on_accepted(move |links: &[String]| {
        for link in links {
            trigger.trigger(link);
        }
    })
    .with_rejections(shared.rejections.clone());
    Ok(Router::new()
        .route(
            "/healthz",
            axum::routing::get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }),
        )
        .merge(crate::webhook::router(Arc::new(ingress))))
}

impl Daemon {
    /// Start everything: load plugins, bind the listeners, start the plugin
    /// watcher and one scheduler per link.
    pub async fn start(config: Config) -> anyhow::Result<Daemon> {
        let token_source = config.daemon.admin_token.clone().ok_or_else(|| ConfigError {
            file: config.file.clone(),
            line: 1,
            message: "`switchyard run` needs [daemon] admin_token = { secret = \"env:NAME\" } (the admin API's bearer token)".into(),
        })?;
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("failed to create {}", config.data_dir.display()))?;
        let token = resolve_secret(&token_source, Some(&SecretStore::in_dir(&config.data_dir)))
            .map_err(|e| anyhow!("daemon admin_token: {e}"))?;
        crate::service::check_credentials(&config)?;
        let runtime = crate::service::plugin_runtime(&config)?;
        Service::limit_origins(&config, &runtime);
        let state: Arc<dyn Store> = Arc::new(config.open_store()?);
        note(
            state.audit(),
            DaemonEvent::ConfigLoaded {
                file: config.file.display().to_string(),
            },
        );
        let plugins = PluginDir::new(&config, config.data_dir.join("cache"), state.clone());
        if !config.plugin_dir.is_dir() {
            return Err(anyhow!(
                "plugin directory {} does not exist",
                config.plugin_dir.display()
            ));
        }
        let links = config
            .schedules
            .iter()
            .map(|(name, when)| {
                (
                    name.clone(),
                    Arc::new(LinkSlot::new(name, when.schedule.clone(), when.jitter)),
                )
            })
            .collect();
        let (shutdown, _) = watch::channel(false);
        let stop = Arc::new(AtomicBool::new(false));
        let placeholder = Service::assemble(
            config.clone(),
            runtime.clone(),
            state.clone(),
            BTreeMap::new(),
            &|_| String::new(),
            None,
            stop.clone(),
        )?;
        let shared = Arc::new(Shared {
            admin_token_sha256: Sha256::digest(token.expose().as_bytes()).into(),
            serving: ArcSwap::from_pointee(Serving {
                service: Arc::new(placeholder),
                plugins: Vec::new(),
            }),
            plugins,
            links,
            activity: Mutex::default(),
            metrics: crate::telemetry::install(),
            ready: AtomicBool::new(false),
            in_flight: Arc::new(()),
            stop,
            rejections: Arc::new(crate::rejections::Rejections::new(
                config.daemon.max_rejections_per_second,
            )),
            shutdown,
            config,
            runtime,
            state,
        });
        // The outbox and dead-letter gauges tell the truth from the start,
        // not only after each link's first run.
        for link in shared.config.links.keys() {
            let (outbox, dead) = shared.state.depths(link)?;
            crate::telemetry::depths(link, outbox, dead);
        }
        let mut tasks = tokio::task::JoinSet::new();
        let admin = tokio::net::TcpListener::bind(shared.config.daemon.admin_listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} (daemon admin_listen)",
                    shared.config.daemon.admin_listen
                )
            })?;
        let admin_addr = admin.local_addr()?;
        let public = match shared.config.daemon.public_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (daemon public_listen)"))?,
            ),
            None => None,
        };
        let public_addr = public.as_ref().map(|l| l.local_addr()).transpose()?;
        tracing::info!(%admin_addr, public = ?public_addr, "listening");

        let open_files = listener::raise_open_file_limit();
        let daemon_config = &shared.config.daemon;
        let limits = listener::Limits {
            header_read_timeout: daemon_config.header_read_timeout,
            body_read_timeout: daemon_config.body_read_timeout,
            max_connections: listener::connection_cap(
                daemon_config.max_connections,
                1 + usize::from(public.is_some()),
                open_files,
            ),
            grace: daemon_config.shutdown_grace,
        };
        if limits.max_connections < daemon_config.max_connections {
            tracing::warn!(
                configured = daemon_config.max_connections,
                cap = limits.max_connections,
                ?open_files,
                "max_connections lowered to stay below the open-file limit"
            );
        }
        tasks.spawn(listener::serve(
            "admin",
            admin,
            admin::router(shared.clone()),
            limits,
            shared.shutdown.subscribe(),
        ));
        if let Some(public) = public {
            tasks.spawn(listener::serve(
                "public",
                public,
                public_router(shared.clone())?,
                limits,
                shared.shutdown.subscribe(),
            ));
        }
        // Listening already: `/v1/ready` answers 503 while the plugins
        // compile (in parallel, through the cache).
        shared.rescan(true).await;
        let service = shared.assemble(None)?;
        shared.publish(Arc::new(service));
        tasks.spawn(watch_plugins(shared.clone()));
        tasks.spawn(summarise_rejections(shared.clone()));
        let grace = shared.config.daemon.shutdown_grace;
        for slot in shared.links.values() {
            tasks.spawn(scheduler::run_link(
                slot.clone(),
                shared.clone(),
                Arc::new(WallClock),
                shared.shutdown.subscribe(),
                grace,
            ));
        }
        shared.ready.store(true, Ordering::SeqCst);
        Ok(Daemon {
            shared,
            admin_addr,
            public_addr,
            tasks,
        })
    }

    /// Stop: listeners, watcher, schedulers (a run in progress gets the
    /// grace period), then flush the state.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        note(self.shared.state.audit(), DaemonEvent::ShuttingDown);
        // Runs stop at their next checkpoint; then everything else stops.
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.shutdown.send_replace(true);
        while let Some(joined) = self.tasks.join_next().await {
            if let Err(e) = joined {
                tracing::error!("a daemon task failed: {e}");
            }
        }
        self.shared.runs_released(Duration::from_secs(10)).await;
        if let Err(e) = self.shared.rejections.flush(self.shared.state.audit()) {
            tracing::error!("failed to write the audit log: {e:#}");
        }
        self.shared.state.flush()?;
        tracing::info!("stopped; state flushed");
        Ok(())
    }
}

/// Every `rejection_summary_every`, write the refused requests summed since
/// the last time to the audit log (and once more at shutdown).
async fn summarise_rejections(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let every = shared.config.daemon.rejection_summary_every;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        if let Err(e) = shared.rejections.flush(shared.state.audit()) {
            tracing::error!("failed to write the audit log: {e:#}");
        }
    }
}

/// Run until `stop` resolves, then shut down.
pub async fn run(config: Config, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let daemon = Daemon::start(config).await?;
    stop.await;
    daemon.shutdown().await
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = int.recv() => tracing::info!("SIGINT received"),
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// How long the watcher waits for file events to stop before it rescans:
/// a copy or an editor's save is many events, and one scan is enough.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Whether a file event means a plugin file changed: created, written,
/// renamed or removed, and named `*.wasm`. Opening, reading or closing
/// without writing (which the daemon's own scans cause) does not count, or
/// every scan would ask for the next one.
fn is_plugin_change(event: &notify::Event) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    let changes = matches!(
        event.kind,
        EventKind::Create(_)
            | EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    );
    changes
        && event.paths.iter().any(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".wasm"))
        })
}

/// The plugin watcher: file events that change a `*.wasm` file (notify),
/// debounced, plus a periodic rescan; while a file settles, look again
/// after `plugin_settle`.
async fn watch_plugins(shared: Arc<Shared>) {
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel::<()>();
    let watcher = {
        use notify::Watcher as _;
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|e| is_plugin_change(&e)) {
                    let _ = tx.send(());
                }
            });
        if let Ok(w) = &mut watcher
            && let Err(e) = w.watch(shared.plugins.dir(), notify::RecursiveMode::NonRecursive)
        {
            tracing::warn!(
                "cannot watch {} ({e}); rescanning every {:?}",
                shared.plugins.dir().display(),
                shared.config.daemon.plugin_rescan
            );
        }
        watcher
    };
    if let Err(e) = &watcher {
        tracing::warn!(
            "no file watcher ({e}); rescanning every {:?}",
            shared.config.daemon.plugin_rescan
        );
    }
    let mut stop = shared.shutdown.subscribe();
    let rescan = shared.config.daemon.plugin_rescan;
    let settle = shared
        .config
        .daemon
        .plugin_settle
        .max(Duration::from_millis(20));
    loop {
        let wait = if shared.plugins.has_pending() {
            settle.min(rescan)
        } else {
            rescan
        };
        let event = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            Some(()) = events.recv() => true,
            () = tokio::time::sleep(wait) => false,
        };
        if event {
            // Debounce: wait until no event came for DEBOUNCE (at most five
            // times that, so a file written without pause is still looked
            // at, and shutdown is not held up).
            let until = tokio::time::Instant::now() + DEBOUNCE * 5;
            while tokio::time::Instant::now() < until
                && matches!(
                    tokio::time::timeout(DEBOUNCE, events.recv()).await,
                    Ok(Some(()))
                )
            {}
        }
        shared.rescan(false).await;
    }
    drop(watcher);
}
