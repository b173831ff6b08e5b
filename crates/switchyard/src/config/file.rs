//! The configuration file's format: the raw TOML tables, parsed strictly
//! (`deny_unknown_fields`), and [`Config::parse`], which checks them as a
//! whole and names the file and line of every error.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::*;
use crate::daemon::scheduler::parse_duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    plugin_dir: Option<String>,
    max_plugin_mib: Option<u64>,
    #[serde(default)]
    require_signed: bool,
    #[serde(default)]
    trusted_keys: Vec<Spanned<String>>,
    data_dir: Option<String>,
    #[serde(default)]
    connectors: BTreeMap<String, Spanned<RawConnector>>,
    #[serde(default)]
    links: BTreeMap<String, Spanned<RawLink>>,
    #[serde(default)]
    origins: BTreeMap<Spanned<String>, OriginBudget>,
    #[serde(default)]
    retention: Retention,
    store: Option<RawStore>,
    daemon: Option<Spanned<RawDaemon>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    cache_mib: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    admin_listen: Option<Spanned<String>>,
    admin_token: Option<Spanned<SecretSource>>,
    public_listen: Option<Spanned<String>>,
    plugin_rescan: Option<Spanned<String>>,
    plugin_settle: Option<Spanned<String>>,
    shutdown_grace: Option<Spanned<String>>,
    header_read_timeout: Option<Spanned<String>>,
    body_read_timeout: Option<Spanned<String>>,
    max_connections: Option<Spanned<i64>>,
    max_rejections_per_second: Option<Spanned<i64>>,
    rejection_summary_every: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnector {
    plugin: Spanned<String>,
    #[serde(default)]
    optional: bool,
    #[serde(default)]
    config: BTreeMap<String, toml::Value>,
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    auth: Option<AuthConfig>,
    credential_origins: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    limits: Limits,
    webhook: Option<Spanned<RawWebhook>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    scheme: RawWebhookScheme,
    secret: SecretSource,
    #[serde(default = "default_max_body_kib")]
    max_body_kib: u64,
    #[serde(default = "default_tolerance_secs")]
    tolerance_secs: u64,
    signature_header: Option<String>,
    signature_prefix: Option<String>,
    signature_encoding: Option<SignatureEncoding>,
    timestamp_header: Option<String>,
    id_header: Option<String>,
    signed_payload: Option<SignedPayload>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum RawWebhookScheme {
    Standard,
    Hmac,
}

fn default_max_body_kib() -> u64 {
    256
}
fn default_tolerance_secs() -> u64 {
    300
}

impl RawWebhook {
    /// Check the table as a whole; the message is prefixed by the caller.
    fn check(self) -> Result<WebhookConfig, String> {
        if matches!(self.secret, SecretSource::Literal(_)) {
            return Err("`secret` must be a sealed reference ({ secret = \"env:NAME\" }, file: or store:), not a literal".into());
        }
        if self.max_body_kib == 0 || self.tolerance_secs == 0 {
            return Err("`max_body_kib` and `tolerance_secs` must be at least 1".into());
        }
        let scheme = match self.scheme {
            RawWebhookScheme::Standard => {
                let hmac_only = [
                    ("signature_header", self.signature_header.is_some()),
                    ("signature_prefix", self.signature_prefix.is_some()),
                    ("signature_encoding", self.signature_encoding.is_some()),
                    ("timestamp_header", self.timestamp_header.is_some()),
                    ("id_header", self.id_header.is_some()),
                    ("signed_payload", self.signed_payload.is_some()),
                ];
                if let Some((key, _)) = hmac_only.iter().find(|(_, set)| *set) {
                    return Err(format!(
                        "`{key}` applies to scheme = \"hmac\" only (standard webhooks fix their headers)"
                    ));
                }
                WebhookScheme::Standard
            }
            RawWebhookScheme::Hmac => {
                let header = |name: Option<String>, key: &str| -> Result<Option<String>, String> {
                    match name {
                        Some(n)
                            if n.trim().is_empty()
                                || !n.bytes().all(|b| {
                                    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
                                }) =>
                        {
                            Err(format!("`{key}` `{n}` is not a header name"))
                        }
                        other => Ok(other.map(|n| n.to_ascii_lowercase())),
                    }
                };
                let signature_header = header(self.signature_header, "signature_header")?
                    .ok_or("scheme = \"hmac\" needs `signature_header`")?;
                let timestamp_header = header(self.timestamp_header, "timestamp_header")?;
                let id_header = header(self.id_header, "id_header")?;
                let signed_payload = self.signed_payload.unwrap_or(SignedPayload::Body);
                match (signed_payload, &timestamp_header) {
                    (SignedPayload::Body, Some(_)) => {
                        return Err("`timestamp_header` is set but `signed_payload = \"body\"` does not sign it, so a replay could carry any timestamp; use \"body-then-timestamp\" or \"timestamp-dot-body\"".into());
                    }
                    (SignedPayload::BodyThenTimestamp | SignedPayload::TimestampDotBody, None) => {
                        return Err(
                            "`signed_payload` includes the timestamp: set `timestamp_header`"
                                .into(),
                        );
                    }
                    _ => {}
                }
                WebhookScheme::Hmac(HmacScheme {
                    signature_header,
                    signature_prefix: self.signature_prefix.filter(|p| !p.is_empty()),
                    signature_encoding: self.signature_encoding.unwrap_or(SignatureEncoding::Hex),
                    timestamp_header,
                    id_header,
                    signed_payload,
                })
            }
        };
        Ok(WebhookConfig {
            scheme,
            secret: self.secret,
            max_body_kib: self.max_body_kib,
            tolerance_secs: self.tolerance_secs,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    hris: Spanned<String>,
    lms: Spanned<String>,
    #[serde(default = "default_termination")]
    on_termination: TerminationPolicy,
    #[serde(default = "default_completion_policy")]
    completion_policy: CompletionPolicy,
    #[serde(default = "default_leave")]
    on_leave: LeavePolicy,
    #[serde(default = "default_reassignment")]
    on_reassignment: ReassignmentPolicy,
    #[serde(default = "default_max_deactivations")]
    max_deactivations: DeactivationLimit,
    #[serde(default = "default_lead_days")]
    recertify_lead_days: u32,
    #[serde(default = "default_concurrency")]
    concurrency: usize,
    #[serde(default)]
    rules: Vec<Spanned<Rule>>,
    fields: Option<Spanned<Vec<String>>>,
    schedule: Option<Spanned<String>>,
    jitter: Option<Spanned<String>>,
    full_listing_every: Option<Spanned<String>>,
    #[serde(default)]
    scope: Option<Scope>,
    matching: Option<Spanned<super::decisions::RawMatching>>,
}

fn default_leave() -> LeavePolicy {
    LeavePolicy::Keep
}
fn default_reassignment() -> ReassignmentPolicy {
    ReassignmentPolicy::Keep
}
fn default_max_deactivations() -> DeactivationLimit {
    DeactivationLimit::Percent(10.0)
}
fn default_lead_days() -> u32 {
    30
}

fn default_termination() -> TerminationPolicy {
    TerminationPolicy::Suspend
}
fn default_completion_policy() -> CompletionPolicy {
    CompletionPolicy::Latest
}
fn default_concurrency() -> usize {
    4
}

impl Config {
    /// Read and check the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            line: 1,
            message: format!("cannot read configuration: {e}"),
        })?;
        Config::parse(path, &text)
    }

    /// Parse and check configuration text; `path` names it in errors and
    /// anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let at = |offset: usize, message: String| ConfigError {
            file: path.to_owned(),
            line: line_of(text, offset),
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            at(
                e.span().map_or(0, |s| s.start),
                e.message().trim().to_owned(),
            )
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut connectors = BTreeMap::new();
        let mut webhooks = BTreeMap::new();
        for (name, raw) in raw.connectors {
            let span = raw.span().start;
            let raw = raw.into_inner();
            check_name(name.as_str()).map_err(|m| at(span, format!("connector `{name}`: {m}")))?;
            let mut settings = BTreeMap::new();
            for (key, value) in raw.config {
                let value = match value {
                    toml::Value::String(s) => s,
                    toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
                        value.to_string()
                    }
                    _ => {
                        return Err(at(
                            span,
                            format!(
                                "connector `{name}`: config `{key}` must be a string, number or boolean"
                            ),
                        ));
                    }
                };
                settings.insert(key, value);
            }
            let mut allow = Vec::new();
            for origin in raw.allow {
                let parsed = Origin::parse(origin.get_ref())
                    .map_err(|m| at(origin.span().start, format!("connector `{name}`: {m}")))?;
                allow.push(parsed);
            }
            if let Some(AuthConfig::OAuth2 { token_url, .. }) = &raw.auth {
                let ok = url::Url::parse(token_url)
                    .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
                if !ok {
                    return Err(at(
                        span,
                        format!(
                            "connector `{name}`: oauth2 `token_url` `{token_url}` is not an http(s) URL"
                        ),
                    ));
                }
            }
            let max_batch = switchyard_runtime::MAX_BATCH as u32;
            if !(1..=max_batch).contains(&raw.limits.max_batch) {
                return Err(at(
                    span,
                    format!(
                        "connector `{name}`: limit `max_batch` must be 1 to {max_batch} (1 sends one operation per call)"
                    ),
                ));
            }
            if raw.limits.max_records == 0 || raw.limits.quarantine_after == 0 {
                return Err(at(
                    span,
                    format!(
                        "connector `{name}`: limits `max_records` and `quarantine_after` must be at least 1"
                    ),
                ));
            }
            if raw.auth.is_some() && allow.is_empty() {
                return Err(at(
                    span,
                    format!(
                        "connector `{name}`: `auth` is bound to the `allow`ed origins, but `allow` is empty"
                    ),
                ));
            }
            let credential_origins = match raw.credential_origins {
                None => None,
                Some(named) => {
                    if raw.auth.is_none() {
                        return Err(at(
                            span,
                            format!(
                                "connector `{name}`: `credential_origins` is set but there is no `auth` credential"
                            ),
                        ));
                    }
                    let mut origins = Vec::new();
                    for origin in named {
                        let line = origin.span().start;
                        let parsed = Origin::parse(origin.get_ref())
                            .map_err(|m| at(line, format!("connector `{name}`: {m}")))?;
                        if !allow.iter().any(|a| a.covers(&parsed)) {
                            return Err(at(
                                line,
                                format!(
                                    "connector `{name}`: credential origin {parsed} is not covered by `allow`"
                                ),
                            ));
                        }
                        origins.push(parsed);
                    }
                    Some(origins)
                }
            };
            if raw.auth.is_some()
                && !allow.is_empty()
                && credential_origins.is_none()
                && allow.iter().all(Origin::is_wildcard)
            {
                return Err(at(
                    span,
                    format!(
                        "connector `{name}`: `allow` has only wildcard origins, and a wildcard never receives the `auth` credential unless named for it; list the origins that receive it in `credential_origins`"
                    ),
                ));
            }
            if let Some(webhook) = raw.webhook {
                let line = webhook.span().start;
                let checked = webhook
                    .into_inner()
                    .check()
                    .map_err(|m| at(line, format!("connector `{name}`: webhook: {m}")))?;
                let mut checked = checked;
                checked.secret.anchor_file(base);
                webhooks.insert(name.clone(), checked);
            }
            connectors.insert(
                ConnectorName::from(name),
                ConnectorConfig {
                    line: line_of(text, raw.plugin.span().start),
                    plugin: raw.plugin.into_inner(),
                    optional: raw.optional,
                    settings,
                    allow,
                    auth: raw.auth.map(|mut auth| {
                        auth.anchor_files(base);
                        auth
                    }),
                    credential_origins,
                    limits: raw.limits,
                },
            );
        }
        let mut links = BTreeMap::new();
        let mut schedules = BTreeMap::new();
        let mut pairs: BTreeMap<(String, String), String> = BTreeMap::new();
        for (name, raw) in raw.links {
            let span = raw.span().start;
            let raw = raw.into_inner();
            check_name(name.as_str()).map_err(|m| at(span, format!("link `{name}`: {m}")))?;
            let pair = (raw.hris.get_ref().clone(), raw.lms.get_ref().clone());
            if let Some(other) = pairs.insert(pair, name.clone()) {
                return Err(at(
                    raw.lms.span().start,
                    format!(
                        "link `{name}`: link `{other}` already connects `{}` to `{}`; two links on one pair of connectors would sync the same people twice (use one link with several rules)",
                        raw.hris.get_ref(),
                        raw.lms.get_ref()
                    ),
                ));
            }
            for (role, connector) in [("hris", &raw.hris), ("lms", &raw.lms)] {
                if !connectors.contains_key(connector.get_ref().as_str()) {
                    return Err(at(
                        connector.span().start,
                        format!(
                            "link `{name}`: {role} connector `{}` is not defined under [connectors]",
                            connector.get_ref()
                        ),
                    ));
                }
            }
            if raw.concurrency == 0 {
                return Err(at(
                    span,
                    format!("link `{name}`: concurrency must be at least 1"),
                ));
            }
            let mut rules = Vec::new();
            for rule in raw.rules {
                if rule.get_ref().courses.is_empty() {
                    return Err(at(
                        rule.span().start,
                        format!("link `{name}`: a rule needs at least one course"),
                    ));
                }
                rules.push(rule.into_inner());
            }
            let fields = match &raw.fields {
                None => FieldAllowlist::default(),
                Some(names) => FieldAllowlist::parse(names.get_ref())
                    .map_err(|m| at(names.span().start, format!("link `{name}`: {m}")))?,
            }
            .with_rule_fields(&rules)
            .with_scope_fields(raw.scope.as_ref());
            let schedule = raw
                .schedule
                .map(|s| {
                    Schedule::parse(s.get_ref())
                        .map_err(|m| at(s.span().start, format!("link `{name}`: {m}")))
                })
                .transpose()?;
            let jitter = raw
                .jitter
                .map(|j| {
                    parse_duration(j.get_ref())
                        .map_err(|m| at(j.span().start, format!("link `{name}`: jitter: {m}")))
                })
                .transpose()?
                .unwrap_or_default();
            let full_listing_every = raw
                .full_listing_every
                .map(|d| {
                    parse_duration(d.get_ref()).map_err(|m| {
                        at(
                            d.span().start,
                            format!("link `{name}`: full_listing_every: {m}"),
                        )
                    })
                })
                .transpose()?
                .unwrap_or(Duration::from_secs(7 * 86_400));
            let matching = raw
                .matching
                .map(|m| {
                    let span = m.span().start;
                    m.into_inner().check(base, |_, message| {
                        at(span, format!("link `{name}`: {message}"))
                    })
                })
                .transpose()?;
            schedules.insert(LinkName::from(&*name), LinkSchedule { schedule, jitter });
            links.insert(
                LinkName::from(name),
                LinkConfig {
                    hris: raw.hris.into_inner().into(),
                    lms: raw.lms.into_inner().into(),
                    on_termination: raw.on_termination,
                    completion_policy: raw.completion_policy,
                    on_leave: raw.on_leave,
                    on_reassignment: raw.on_reassignment,
                    max_deactivations: raw.max_deactivations,
                    recertify_lead_days: raw.recertify_lead_days,
                    concurrency: raw.concurrency,
                    rules,
                    fields,
                    full_listing_every,
                    scope: raw.scope,
                    matching,
                },
            );
        }
        let mut origins = Vec::new();
        for (origin, budget) in raw.origins {
            let parsed = Origin::parse(origin.get_ref())
                .map_err(|m| at(origin.span().start, format!("origins: {m}")))?;
            if budget.requests_per_second == 0 {
                return Err(at(
                    origin.span().start,
                    format!(
                        "origins: `{}` needs requests_per_second of at least 1",
                        origin.get_ref()
                    ),
                ));
            }
            origins.push((parsed, budget));
        }
        let mut daemon = DaemonConfig::default();
        let mut store = StoreSettings::default();
        if let Some(cache_mib) = raw.store.and_then(|s| s.cache_mib) {
            let n = *cache_mib.get_ref();
            store.cache_mib = u32::try_from(n).ok().filter(|&n| n > 0).ok_or_else(|| {
                at(
                    cache_mib.span().start,
                    format!("store: cache_mib must be at least 1 (MiB), not {n}"),
                )
            })?;
        }
        if let Some(raw_daemon) = raw.daemon {
            let d = raw_daemon.into_inner();
            let address = |v: Spanned<String>, key: &str| {
                v.get_ref().parse::<SocketAddr>().map_err(|e| {
                    at(
                        v.span().start,
                        format!(
                            "daemon: {key} `{}` is not an address:port: {e}",
                            v.get_ref()
                        ),
                    )
                })
            };
            let duration = |v: Spanned<String>, key: &str| {
                parse_duration(v.get_ref())
                    .map_err(|m| at(v.span().start, format!("daemon: {key}: {m}")))
            };
            if let Some(v) = d.admin_listen {
                daemon.admin_listen = address(v, "admin_listen")?;
            }
            if let Some(v) = d.public_listen {
                daemon.public_listen = Some(address(v, "public_listen")?);
            }
            if let Some(v) = d.plugin_rescan {
                daemon.plugin_rescan = duration(v, "plugin_rescan")?.max(Duration::from_millis(50));
            }
            if let Some(v) = d.plugin_settle {
                daemon.plugin_settle = duration(v, "plugin_settle")?;
            }
            if let Some(v) = d.shutdown_grace {
                daemon.shutdown_grace = duration(v, "shutdown_grace")?;
            }
            let positive = |v: Spanned<String>, key: &str| {
                let start = v.span().start;
                let d = duration(v, key)?;
                if d.is_zero() {
                    return Err(at(start, format!("daemon: {key} must be longer than 0s")));
                }
                Ok(d)
            };
            if let Some(v) = d.header_read_timeout {
                daemon.header_read_timeout = positive(v, "header_read_timeout")?;
            }
            if let Some(v) = d.body_read_timeout {
                daemon.body_read_timeout = positive(v, "body_read_timeout")?;
            }
            if let Some(v) = d.max_connections {
                daemon.max_connections = positive_number(&v, "max_connections", &at)?;
            }
            if let Some(v) = d.max_rejections_per_second {
                daemon.max_rejections_per_second =
                    positive_number(&v, "max_rejections_per_second", &at)?;
            }
            if let Some(v) = d.rejection_summary_every {
                daemon.rejection_summary_every = positive(v, "rejection_summary_every")?;
            }
            if let Some(token) = d.admin_token {
                if matches!(token.get_ref(), SecretSource::Literal(_)) {
                    return Err(at(
                        token.span().start,
                        "daemon: admin_token must be a secret reference such as { secret = \"env:SWITCHYARD_ADMIN_TOKEN\" }, not a literal".into(),
                    ));
                }
                let mut token = token.into_inner();
                token.anchor_file(base);
                daemon.admin_token = Some(token);
            }
        }
        let mut trusted_keys = Vec::new();
        for key in raw.trusted_keys {
            let parsed = key
                .get_ref()
                .parse()
                .map_err(|e| at(key.span().start, format!("trusted_keys: {e}")))?;
            trusted_keys.push(parsed);
        }
        Ok(Config {
            daemon,
            origins,
            webhooks,
            signing: crate::runtime::signature::SigningPolicy {
                require_signed: raw.require_signed,
                trusted: trusted_keys,
            },
            file: path.to_owned(),
            plugin_dir: base.join(raw.plugin_dir.as_deref().unwrap_or("plugins.d")),
            max_plugin_mib: raw
                .max_plugin_mib
                .unwrap_or(crate::runtime::DEFAULT_MAX_PLUGIN_MIB),
            data_dir: base.join(raw.data_dir.as_deref().unwrap_or("switchyard-data")),
            connectors,
            links,
            schedules,
            retention: raw.retention,
            store,
        })
    }
}

/// A `[daemon]` count that must be positive and fit `T`.
fn positive_number<T: TryFrom<i64>>(
    v: &Spanned<i64>,
    key: &str,
    at: &impl Fn(usize, String) -> ConfigError,
) -> Result<T, ConfigError> {
    let n = *v.get_ref();
    T::try_from(n).ok().filter(|_| n > 0).ok_or_else(|| {
        at(
            v.span().start,
            format!("daemon: {key} must be a positive number, not {n}"),
        )
    })
}

/// Names are used in keys and paths: keep them plain.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err("names may use only letters, digits, '-' and '_'".into())
    }
}

/// 1-based line number of a byte offset.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}
