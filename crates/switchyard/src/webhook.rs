//! Webhook ingress: `POST /webhooks/{connector}`.
//!
//! A delivery goes through one pipeline, [`Ingress::handle`]:
//!
//! 1. the connector must exist (404) and have a `[connectors.NAME.webhook]`
//!    table (404);
//! 2. the body must fit `max_body_kib` (413; read with a cap, never whole);
//! 3. the host verifies the signature with the connector's sealed secret
//!    (`verify`): missing or malformed headers 400, a bad signature or a
//!    timestamp outside the tolerance 401;
//! 4. a delivery id processed before is acknowledged (200, `replay`) and
//!    not processed again;
//! 5. the plugin translates the verified body (`parse-webhook`, contained like
//!    every plugin call; a quarantined connector is not called, 503): a
//!    plugin without `webhook-source` (contract 0.1.x)
//!    or one that returns `unsupported` gets 422, a `rejected` body 400, a
//!    fault or transient error 503 (the sender retries; nothing was recorded);
//! 6. events become outbox work through the same code as a poll
//!    (the engine's `Ingest` and `decide_completions`), and the work and the
//!    replay marker are committed in one sled transaction
//!    (`Store::commit_webhook`) and flushed to disk before the 200 is sent.
//!
//! Every answer is a [`Outcome`], and every outcome goes through
//! [`verdict`] (log + metric) and, for a configured connector, into the
//! audit log (`webhook.<verdict>`).
//!
//! **Invariant:** no plugin sees a body whose signature the host has not
//! verified, nor the webhook secret; a 4xx enqueues nothing.
//!
//! # Layout
//!
//! - this file: [`Ingress`], the pipeline, [`router`], [`verdict`];
//! - [`verify`]: the signature schemes, pure functions with their tests.

pub mod verify;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::anyhow;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::BodyExt;

use crate::config::{Config, WebhookConfig, WebhookScheme};
use crate::engine::Ingest;
use crate::engine::LinkConfig;
use crate::model::now_ms;
use crate::model::{ConnectorError, ConnectorName, Date, LinkName, WebhookEvent};
use crate::runtime::Connector;
use crate::secrets::SecretStore;
use crate::store::{DeliveryCommit, Store, WebhookBatch};
use verify::{Refusal, SigningKey};

/// The metric every verdict increments, labelled `connector` and `verdict`.
pub const METRIC: &str = "switchyard_webhook_requests_total";

/// Delivery ids are kept at least this long (longer when a tolerance is).
const MIN_REPLAY_RETENTION_SECS: u64 = 7 * 24 * 3600;
/// How often old delivery ids are pruned.
const PRUNE_EVERY_SECS: u64 = 3600;

/// Finds the connector a delivery is for. The daemon may swap plugins while
/// it runs, so the ingress asks on every request instead of holding a map;
/// any `Fn(&str) -> Option<Connector>` will do.
pub trait ConnectorSource: Send + Sync + 'static {
    /// The connector named `name`, if it is loaded now.
    fn connector(&self, name: &str) -> Option<Connector>;
}

impl<F> ConnectorSource for F
where
    F: Fn(&str) -> Option<Connector> + Send + Sync + 'static,
{
    fn connector(&self, name: &str) -> Option<Connector> {
        self(name)
    }
}

/// A connector's webhook settings with its key resolved.
struct Endpoint {
    config: WebhookConfig,
    key: SigningKey,
}

/// What serves `POST /webhooks/{connector}`: the verification settings and
/// keys of each connector, the links (for policy), the state, and a way to
/// find connectors.
pub struct Ingress {
    endpoints: BTreeMap<String, Endpoint>,
    links: BTreeMap<LinkName, LinkConfig>,
    connectors: Box<dyn ConnectorSource>,
    state: Arc<dyn Store>,
    clock: Box<dyn Fn() -> i64 + Send + Sync>,
    retention_secs: u64,
    last_prune: AtomicU64,
    on_accepted: LinksHook,
    rejections: Arc<crate::rejections::Rejections>,
}

/// Called with the links a delivery queued work for.
type LinksHook = Box<dyn Fn(&[String]) + Send + Sync>;

/// How a delivery was answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Verified, translated, and its work committed.
    Accepted {
        /// Events the plugin returned.
        events: usize,
        /// Operations put into the outbox.
        operations: usize,
    },
    /// A delivery id processed before: acknowledged, not processed again.
    Replay,
    /// No connector of that name.
    UnknownConnector,
    /// The connector has no `webhook` table.
    NotConfigured,
    /// The body is larger than `max_body_kib`.
    TooLarge {
        /// The limit.
        limit_kib: u64,
    },
    /// The signature check refused it.
    Refused(Refusal),
    /// The body could not be read from the connection.
    Unreadable(String),
    /// The connector's plugin does not take webhooks.
    Unsupported(String),
    /// The plugin found the (verified) body malformed.
    MalformedBody(String),
    /// The events would deactivate more accounts than a link allows.
    Halted(String),
    /// The connector is not loaded, the plugin failed, or the state could
    /// not be written: nothing was recorded, the sender should retry.
    Unavailable(String),
}

impl Outcome {
    /// Refused before the signature verified (or with no signature to
    /// verify): anyone can send these, so they are summed, not recorded
    /// one by one.
    pub fn is_junk(&self) -> bool {
        matches!(
            self,
            Outcome::UnknownConnector
                | Outcome::NotConfigured
                | Outcome::TooLarge { .. }
                | Outcome::Refused(_)
                | Outcome::Unreadable(_)
                | Outcome::Unsupported(_)
        )
    }

    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            Outcome::Accepted { .. } | Outcome::Replay => StatusCode::OK,
            Outcome::UnknownConnector | Outcome::NotConfigured => StatusCode::NOT_FOUND,
            Outcome::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Outcome::Refused(Refusal::MissingHeader(_) | Refusal::MalformedHeader { .. }) => {
                StatusCode::BAD_REQUEST
            }
            Outcome::Refused(Refusal::BadSignature | Refusal::Stale { .. }) => {
                StatusCode::UNAUTHORIZED
            }
            Outcome::Unreadable(_) | Outcome::MalformedBody(_) => StatusCode::BAD_REQUEST,
            Outcome::Unsupported(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Outcome::Halted(_) => StatusCode::CONFLICT,
            Outcome::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `verdict` label of the metric and the answer.
    pub fn verdict(&self) -> &'static str {
        match self {
            Outcome::Accepted { .. } => "accepted",
            Outcome::Replay => "replay",
            Outcome::UnknownConnector => "unknown-connector",
            Outcome::NotConfigured => "not-configured",
            Outcome::TooLarge { .. } => "too-large",
            Outcome::Refused(Refusal::MissingHeader(_)) => "missing-header",
            Outcome::Refused(Refusal::MalformedHeader { .. }) => "malformed-header",
            Outcome::Refused(Refusal::BadSignature) => "bad-signature",
            Outcome::Refused(Refusal::Stale { .. }) => "stale",
            Outcome::Unreadable(_) => "unreadable",
            Outcome::Unsupported(_) => "unsupported",
            Outcome::MalformedBody(_) => "malformed-body",
            Outcome::Halted(_) => "halted",
            Outcome::Unavailable(_) => "unavailable",
        }
    }

    /// The audit record kind of this verdict; `None` for a delivery refused
    /// before its signature verified (summed per source instead).
    pub fn audit_kind(&self) -> Option<crate::audit::Kind> {
        use crate::audit::Kind;
        Some(match self {
            Outcome::Accepted { .. } => Kind::WebhookAccepted,
            Outcome::Replay => Kind::WebhookReplay,
            Outcome::MalformedBody(_) => Kind::WebhookMalformedBody,
            Outcome::Halted(_) => Kind::WebhookHalted,
            Outcome::Unavailable(_) => Kind::WebhookUnavailable,
            // Summed per source instead (`requests.rejected`).
            Outcome::UnknownConnector
            | Outcome::NotConfigured
            | Outcome::TooLarge { .. }
            | Outcome::Refused(_)
            | Outcome::Unreadable(_)
            | Outcome::Unsupported(_) => return None,
        })
    }

    /// What the sender is told. Internal failures are not described to it.
    fn detail(&self) -> String {
        match self {
            Outcome::Accepted { events, operations } => {
                format!("{events} event(s), {operations} operation(s) queued")
            }
            Outcome::Replay => "delivery already processed".into(),
            Outcome::UnknownConnector => "no such connector".into(),
            Outcome::NotConfigured => "this connector takes no webhooks".into(),
            Outcome::TooLarge { limit_kib } => format!("body larger than {limit_kib} KiB"),
            Outcome::Refused(refusal) => refusal.to_string(),
            Outcome::Unreadable(_) => "the body could not be read".into(),
            Outcome::Unsupported(m) | Outcome::MalformedBody(m) => m.clone(),
            Outcome::Halted(_) => {
                "refused by the link's max_deactivations guard; an operator must approve".into()
            }
            Outcome::Unavailable(_) => "temporarily unavailable; retry later".into(),
        }
    }
}

/// Record how a delivery to `connector` was answered: a log line and
/// `switchyard_webhook_requests_total{connector, verdict}`. Every answer
/// passes here, and nowhere else: this is where an audit trail hooks in.
pub fn verdict(connector: &str, outcome: &Outcome) {
    // An unknown name comes from the request: never a metric label, or
    // anyone could create series at will.
    let label = match outcome {
        Outcome::UnknownConnector => "unknown".to_owned(),
        _ => connector.to_owned(),
    };
    let verdict = outcome.verdict();
    match outcome {
        Outcome::Accepted { events, operations } => {
            tracing::info!(connector, verdict, events, operations, "webhook accepted")
        }
        Outcome::Replay => tracing::info!(connector, verdict, "webhook replay acknowledged"),
        Outcome::Unavailable(reason) | Outcome::Halted(reason) => {
            tracing::error!(connector, verdict, "webhook not processed: {reason}")
        }
        // Logged, at most once in a while per source, by `Rejections`.
        other if other.is_junk() => {
            tracing::debug!(connector, verdict, "webhook refused: {}", other.detail())
        }
        other => tracing::warn!(connector, verdict, "webhook refused: {}", other.detail()),
    }
    metrics::counter!(METRIC, "connector" => label, "verdict" => verdict).increment(1);
}

/// The delivery id a verified delivery carries (at most 128 characters),
/// for its audit record. Only called once the signature verified: nothing
/// the sender chose enters the hashed record before that.
fn delivery_id(endpoint: &Endpoint, headers: &HeaderMap) -> Option<String> {
    let value = match &endpoint.config.scheme {
        WebhookScheme::Hmac(h) => h.id_header.as_ref().and_then(|h| headers.get(h.as_str())),
        WebhookScheme::Standard => headers
            .get(verify::ID_HEADER)
            .or_else(|| headers.get(verify::SVIX_ID_HEADER)),
    };
    value.map(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .chars()
            .take(128)
            .collect::<String>()
    })
}

/// The audit record of a delivery's answer.
fn audit_event(
    kind: crate::audit::Kind,
    connector: &str,
    status: StatusCode,
    delivery: Option<String>,
    reason: String,
) -> crate::audit::Event {
    crate::audit::Event::new(kind)
        .connector(connector)
        .detail(serde_json::json!({ "status": status.as_u16(), "delivery": delivery }))
        .personal(serde_json::json!({ "reason": reason }))
}

/// Unix seconds now.
fn unix_now() -> i64 {
    (now_ms() / 1000) as i64
}

impl Ingress {
    /// An ingress for `config`'s webhook tables. Resolves each secret now
    /// (`store` for `store:` references), so a missing or malformed secret
    /// is an error at start, naming the connector.
    pub fn new(
        config: &Config,
        state: Arc<dyn Store>,
        connectors: impl ConnectorSource,
        store: Option<&SecretStore>,
    ) -> anyhow::Result<Ingress> {
        let mut endpoints = BTreeMap::new();
        let mut max_tolerance = 0;
        for (name, webhook) in &config.webhooks {
            let secret = crate::secrets::resolve_secret(&webhook.secret, store)
                .map_err(|e| anyhow!("connector `{name}`: webhook secret: {e}"))?;
            let key = match webhook.scheme {
                WebhookScheme::Standard => SigningKey::standard(secret.expose())
                    .map_err(|e| anyhow!("connector `{name}`: webhook secret: {e}"))?,
                WebhookScheme::Hmac(_) => SigningKey::raw(secret.expose()),
            };
            max_tolerance = max_tolerance.max(webhook.tolerance_secs);
            endpoints.insert(
                name.clone(),
                Endpoint {
                    config: webhook.clone(),
                    key,
                },
            );
        }
        Ok(Ingress {
            endpoints,
            links: config.links.clone(),
            connectors: Box::new(connectors),
            state,
            clock: Box::new(unix_now),
            retention_secs: MIN_REPLAY_RETENTION_SECS.max(max_tolerance.saturating_mul(2)),
            last_prune: AtomicU64::new(0),
            on_accepted: Box::new(|_| {}),
            rejections: Arc::new(crate::rejections::Rejections::new(
                config.daemon.max_rejections_per_second,
            )),
        })
    }

    /// An ingress for a service's configuration, connectors and state.
    pub fn for_service(service: &crate::Service) -> anyhow::Result<Ingress> {
        let connectors = service.connectors.clone();
        let store = SecretStore::in_dir(&service.config.data_dir);
        Ingress::new(
            &service.config,
            service.state.clone(),
            move |name: &str| connectors.get(name).cloned(),
            Some(&store),
        )
    }

    /// Call `f` with the links a delivery queued work for, once it is
    /// committed (the daemon triggers their runs).
    pub fn on_accepted(mut self, f: impl Fn(&[String]) + Send + Sync + 'static) -> Ingress {
        self.on_accepted = Box::new(f);
        self
    }

    /// Sum refused deliveries in `rejections` (the daemon's, shared with
    /// the admin API) instead of a tally of its own.
    pub fn with_rejections(mut self, rejections: Arc<crate::rejections::Rejections>) -> Ingress {
        self.rejections = rejections;
        self
    }

    /// Use `clock` (Unix seconds) instead of the system clock.
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Ingress {
        self.clock = Box::new(clock);
        self
    }

    /// Answer one delivery to `connector` from an unknown address.
    pub async fn handle(&self, connector: &str, headers: &HeaderMap, body: Body) -> Outcome {
        self.handle_from(None, connector, headers, body).await
    }

    /// Answer one delivery to `connector` from `source`. Records the
    /// verdict: a delivery refused before its signature verified is summed
    /// per source ([`crate::rejections`]), any other gets an audit record.
    pub async fn handle_from(
        &self,
        source: Option<std::net::IpAddr>,
        connector: &str,
        headers: &HeaderMap,
        body: Body,
    ) -> Outcome {
        let outcome = self.process(connector, headers, body).await;
        verdict(connector, &outcome);
        if outcome.is_junk() {
            let configured = self.endpoints.contains_key(connector)
                || matches!(outcome, Outcome::NotConfigured | Outcome::Unsupported(_));
            self.rejections.note(
                "public",
                source,
                outcome.verdict(),
                configured.then_some(connector),
            );
        } else {
            self.audit(connector, headers, &outcome);
        }
        outcome
    }

    /// Whether `source` is over its budget of refused requests.
    pub fn throttled(&self, source: std::net::IpAddr) -> Option<std::time::Duration> {
        self.rejections.throttled("public", source)
    }

    /// The audit record of a delivery to a configured connector
    /// (`webhook.accepted`, `webhook.bad-signature`, ...): refused
    /// deliveries are on record too. Nothing the sender chose is copied
    /// into the hashed record unless the signature verified (the delivery
    /// id of an accepted or replayed delivery); reasons, which may quote a
    /// plugin, are kept outside the chain. A name that is not a configured
    /// connector is only counted in the metric: anyone can send those.
    fn audit(&self, name: &str, headers: &HeaderMap, outcome: &Outcome) {
        // An accepted delivery's record was committed with its work.
        if matches!(outcome, Outcome::Accepted { .. }) {
            return;
        }
        let (Some(endpoint), Some(kind)) = (self.endpoints.get(name), outcome.audit_kind()) else {
            return;
        };
        let delivery = matches!(outcome, Outcome::Replay)
            .then(|| delivery_id(endpoint, headers))
            .flatten();
        let reason = match outcome {
            Outcome::Unavailable(r) | Outcome::Halted(r) | Outcome::Unreadable(r) => r.clone(),
            other => other.detail(),
        };
        let event = audit_event(kind, name, outcome.status(), delivery, reason);
        if let Err(e) = self.state.audit().append(event) {
            tracing::error!(connector = name, "failed to write the audit log: {e:#}");
        }
    }

    async fn process(&self, name: &str, headers: &HeaderMap, body: Body) -> Outcome {
        let name = &ConnectorName::from(name);
        let Some(endpoint) = self.endpoints.get(name.as_str()) else {
            return match self.connectors.connector(name) {
                Some(_) => Outcome::NotConfigured,
                None => Outcome::UnknownConnector,
            };
        };
        let config = &endpoint.config;
        let limit = usize::try_from(config.max_body_kib.saturating_mul(1024)).unwrap_or(usize::MAX);
        let body = match read_capped(headers, body, limit).await {
            Ok(body) => body,
            Err(Some(reason)) => return Outcome::Unreadable(reason),
            Err(None) => {
                return Outcome::TooLarge {
                    limit_kib: config.max_body_kib,
                };
            }
        };
        let now = (self.clock)();
        let verified = match &config.scheme {
            WebhookScheme::Standard => {
                verify::verify_standard(&endpoint.key, headers, &body, now, config.tolerance_secs)
            }
            WebhookScheme::Hmac(scheme) => verify::verify_hmac(
                scheme,
                &endpoint.key,
                headers,
                &body,
                now,
                config.tolerance_secs,
            ),
        };
        let verified = match verified {
            Ok(v) => v,
            Err(refusal) => return Outcome::Refused(refusal),
        };
        match self.state.is_webhook_delivered(name, &verified.id) {
            Ok(true) => return Outcome::Replay,
            Ok(false) => {}
            Err(e) => return Outcome::Unavailable(format!("{e:#}")),
        }
        let Some(connector) = self.connectors.connector(name) else {
            return Outcome::Unavailable(format!("connector `{name}` is not loaded"));
        };
        match self.state.connector_health(name) {
            Ok(Some(health))
                if health.quarantine.is_some() && health.sha256 == connector.plugin.sha256 =>
            {
                return Outcome::Unavailable(format!(
                    "connector `{name}` is quarantined; resume it with `switchyard plugin resume {name}`"
                ));
            }
            Ok(_) => {}
            Err(e) => return Outcome::Unavailable(format!("{e:#}")),
        }
        if !connector.plugin.takes_webhooks() {
            return Outcome::Unsupported(format!(
                "connector `{name}` runs plugin {} {} (contract {}), which does not take webhooks; it needs contract 0.2.0 or later",
                connector.plugin.name,
                connector.plugin.version(),
                connector.plugin.contract_version
            ));
        }
        let plain_headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let events = match connector.parse_webhook(&plain_headers, &body).await {
            Ok(events) => events,
            Err(ConnectorError::Rejected(m)) => return Outcome::MalformedBody(m),
            Err(ConnectorError::Unsupported(m)) => return Outcome::Unsupported(m),
            Err(e) => return Outcome::Unavailable(e.to_string()),
        };
        // The delivery's audit record is written in the transaction that
        // commits its work and replay marker: all durable before the 200.
        let delivery = delivery_id(endpoint, headers);
        let event_count = events.len();
        let accepted = |operations: usize| {
            let outcome = Outcome::Accepted {
                events: event_count,
                operations,
            };
            audit_event(
                crate::audit::Kind::WebhookAccepted,
                name,
                outcome.status(),
                delivery.clone(),
                outcome.detail(),
            )
        };
        let outcome = match self.batches(name, &events) {
            Ok(Ok(batches)) => {
                match self
                    .state
                    .commit_webhook(name, &verified.id, &batches, &accepted)
                {
                    // The sender will not send it again after a 2xx: the work
                    // must be on disk, not only in sled's log buffer.
                    Ok(DeliveryCommit::Recorded { queued }) => match self.state.flush() {
                        Ok(()) => {
                            if queued > 0 {
                                let links: Vec<String> =
                                    batches.iter().map(|b| b.link.to_string()).collect();
                                (self.on_accepted)(&links);
                            }
                            Outcome::Accepted {
                                events: events.len(),
                                operations: queued,
                            }
                        }
                        Err(e) => Outcome::Unavailable(format!("{e:#}")),
                    },
                    Ok(DeliveryCommit::Replay) => Outcome::Replay,
                    Err(e) => Outcome::Unavailable(format!("{e:#}")),
                }
            }
            Ok(Err(halted)) => halted,
            Err(e) => Outcome::Unavailable(format!("{e:#}")),
        };
        self.prune_now_and_then(now);
        outcome
    }

    /// The outbox work `events` of connector `name` bring to each link, by
    /// the same rules as a poll: completions from the LMS of a link through
    /// its retake policy, employee records from its HRIS through the planner
    /// and the mass-deactivation guard. Events of the other side are ignored.
    fn batches(
        &self,
        name: &str,
        events: &[WebhookEvent],
    ) -> anyhow::Result<Result<Vec<WebhookBatch>, Outcome>> {
        let today = Date::today();
        let mut batches = Vec::new();
        for (link_name, link) in &self.links {
            let mut batch = WebhookBatch {
                link: link_name.clone(),
                ..WebhookBatch::default()
            };
            if link.lms == name {
                let completions = events
                    .iter()
                    .filter_map(|e| match e {
                        WebhookEvent::Completion(c) => Some(c.clone()),
                        WebhookEvent::EmployeeChanged(_) => None,
                    })
                    .collect();
                let decisions = crate::engine::decide_completions(
                    link_name,
                    link,
                    &*self.state,
                    completions,
                    &mut BTreeMap::new(),
                )?;
                batch.seen = decisions.seen;
                batch.winners = decisions.winners;
            }
            if link.hris == name {
                // The same path as a poll's listing: allowlist, the last
                // record of an id wins, plan, the mass-deactivation guard.
                let ingest = Ingest {
                    link_name,
                    link,
                    state: &*self.state,
                    today,
                    retire_out_of_scope: false,
                };
                let employees = events.iter().filter_map(|event| match event {
                    WebhookEvent::EmployeeChanged(e) => Some(e.clone()),
                    WebhookEvent::Completion(_) => None,
                });
                batch.planned = ingest.plan_employees(employees)?;
                let suspends = crate::engine::ingest::suspends(&batch.planned);
                if let Some(deactivations) = ingest.deactivations_exceeded(suspends)? {
                    return Ok(Err(Outcome::Halted(format!(
                        "link `{link_name}`: a webhook of `{name}` would suspend {} accounts, more than max_deactivations = {} allows ({}); nothing was queued",
                        deactivations.planned, deactivations.limit, deactivations.allowed
                    ))));
                }
            }
            if !(batch.seen.is_empty() && batch.winners.is_empty() && batch.planned.is_empty()) {
                batches.push(batch);
            }
        }
        Ok(Ok(batches))
    }

    /// Forget delivery ids older than the retention, at most once an hour.
    fn prune_now_and_then(&self, now: i64) {
        let now = u64::try_from(now).unwrap_or(0);
        let last = self.last_prune.load(Ordering::Relaxed);
        if now.saturating_sub(last) < PRUNE_EVERY_SECS
            || self
                .last_prune
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let before_ms = now.saturating_sub(self.retention_secs).saturating_mul(1000);
        match self.state.prune_webhook_deliveries(before_ms) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "old webhook delivery ids pruned"),
            Err(e) => tracing::warn!("failed to prune webhook delivery ids: {e:#}"),
        }
    }
}

/// Read at most `limit` bytes. `Err(None)`: larger than that (by its
/// `content-length` or by what arrived); `Err(Some)`: the connection failed.
async fn read_capped(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Vec<u8>, Option<String>> {
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(None);
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(None)
        }
        Err(e) => Err(Some(e.to_string())),
    }
}

/// `POST /webhooks/{connector}`, served by `ingress`. The body limit is per
/// connector (`max_body_kib`), so axum's default limit is off for this route.
/// Mount it on any listener (`Router::merge`).
pub fn router(ingress: Arc<Ingress>) -> Router {
    Router::new()
        .route("/webhooks/{connector}", post(receive))
        .layer(DefaultBodyLimit::disable())
        .with_state(ingress)
}

async fn receive(
    AxumState(ingress): AxumState<Arc<Ingress>>,
    Path(connector): Path<String>,
    source: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let source = source.map(|c| c.0.0.ip());
    // A source over its budget of refused deliveries is not looked at.
    if let Some(wait) = source.and_then(|ip| ingress.throttled(ip)) {
        return crate::rejections::too_many(wait);
    }
    let outcome = ingress
        .handle_from(source, &connector, &headers, body)
        .await;
    let answer = serde_json::json!({ "verdict": outcome.verdict(), "detail": outcome.detail() });
    (outcome.status(), axum::Json(answer)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use metrics::{
        Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };

    /// Counter increments as (name, labels, value).
    type Log = Arc<Mutex<Vec<(String, Vec<(String, String)>, u64)>>>;

    #[derive(Default)]
    struct Recording(Log);

    struct Increment(Key, Log);

    impl CounterFn for Increment {
        fn increment(&self, value: u64) {
            let labels = self
                .0
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            self.1
                .lock()
                .unwrap()
                .push((self.0.name().to_owned(), labels, value));
        }
        fn absolute(&self, _value: u64) {}
    }

    impl Recorder for Recording {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(Arc::new(Increment(key.clone(), self.0.clone())))
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    #[test]
    fn every_verdict_is_counted_and_unknown_names_are_not_labels() {
        let recording = Recording::default();
        let log = recording.0.clone();
        metrics::with_local_recorder(&recording, || {
            verdict(
                "acme-lms",
                &Outcome::Accepted {
                    events: 1,
                    operations: 1,
                },
            );
            verdict("acme-lms", &Outcome::Refused(Refusal::BadSignature));
            verdict("attacker-chosen-name", &Outcome::UnknownConnector);
        });
        let label = |c: &str, v: &str| {
            vec![
                ("connector".to_owned(), c.to_owned()),
                ("verdict".to_owned(), v.to_owned()),
            ]
        };
        let log = log.lock().unwrap().clone();
        assert_eq!(
            log,
            vec![
                (METRIC.to_owned(), label("acme-lms", "accepted"), 1),
                (METRIC.to_owned(), label("acme-lms", "bad-signature"), 1),
                (METRIC.to_owned(), label("unknown", "unknown-connector"), 1),
            ]
        );
    }

    #[test]
    fn statuses_follow_the_documented_table() {
        let cases = [
            (
                Outcome::Accepted {
                    events: 0,
                    operations: 0,
                },
                200,
            ),
            (Outcome::Replay, 200),
            (
                Outcome::Refused(Refusal::MissingHeader("webhook-id".into())),
                400,
            ),
            (Outcome::Refused(Refusal::BadSignature), 401),
            (
                Outcome::Refused(Refusal::Stale {
                    timestamp: 0,
                    skew: 301,
                    tolerance: 300,
                }),
                401,
            ),
            (Outcome::UnknownConnector, 404),
            (Outcome::NotConfigured, 404),
            (Outcome::TooLarge { limit_kib: 1 }, 413),
            (Outcome::Unsupported(String::new()), 422),
            (
                Outcome::Unavailable("plugin fault: secret detail".into()),
                503,
            ),
        ];
        for (outcome, status) in cases {
            assert_eq!(outcome.status().as_u16(), status, "{outcome:?}");
        }
        assert!(
            !Outcome::Unavailable("plugin fault: secret detail".into())
                .detail()
                .contains("secret")
        );
    }
}
