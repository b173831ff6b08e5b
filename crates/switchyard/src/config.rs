//! The configuration file: connectors, their plugins and grants, and links.
//!
//! A configuration is parsed strictly (unknown keys are errors) and then
//! checked as a whole (links name existing connectors, origins parse, ...).
//! Every error names the file and the line it is about.

//!
//! # Layout
//!
//! - this file: the checked configuration, as the rest of the host uses it;
//! - `config/file.rs`: the file format (the raw TOML tables) and the checks
//!   that turn it into a [`Config`].

pub mod decisions;
mod file;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use switchyard_model::{ConnectorName, LinkName};

use crate::daemon::scheduler::Schedule;

pub use crate::engine::fields::FieldAllowlist;
pub use crate::engine::policy::{
    CompletionPolicy, Conditions, DeactivationLimit, LeavePolicy, LinkConfig, ReassignmentPolicy,
    Rule, Scope, TerminationPolicy,
};
pub use crate::runtime::{Grants, Limits, Origin, OriginBudget};

/// A configuration that was refused: where, and why.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}: {message}", file.display())]
pub struct ConfigError {
    /// The configuration file.
    pub file: PathBuf,
    /// 1-based line the error is about (1 when the whole file is at fault).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration was read from; relative paths in it are
    /// relative to this file's directory.
    pub file: PathBuf,
    /// Directory of `*.wasm` connector plugins.
    pub plugin_dir: PathBuf,
    /// Largest plugin file read, in MiB (`max_plugin_mib`, default 64).
    pub max_plugin_mib: u64,
    /// Which plugin files are accepted: `require_signed` (default false)
    /// and `trusted_keys` (`ed25519:<base64>`).
    pub signing: crate::runtime::signature::SigningPolicy,
    /// Directory of the sled database.
    pub data_dir: PathBuf,
    /// Connectors by name.
    pub connectors: BTreeMap<ConnectorName, ConnectorConfig>,
    /// Links by name.
    pub links: BTreeMap<LinkName, LinkConfig>,
    /// When the daemon runs each link, by link name (every link has one).
    pub schedules: BTreeMap<LinkName, LinkSchedule>,
    /// Request budgets per origin, shared by all connectors reaching it.
    pub origins: Vec<(Origin, OriginBudget)>,
    /// How long audit records, dead letters and departed employees' snapshots are kept.
    pub retention: Retention,
    /// The embedded store's settings.
    pub store: StoreSettings,
    /// The long-running service (`[daemon]`).
    pub daemon: DaemonConfig,
    /// Webhook verification per connector (`[connectors.NAME.webhook]`), by
    /// connector name. A connector without one takes no webhooks.
    pub webhooks: BTreeMap<String, WebhookConfig>,
}

/// The daemon's listeners and timings (`[daemon]`).
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Admin API and `/metrics` (default `127.0.0.1:9180`).
    pub admin_listen: SocketAddr,
    /// Bearer token of the admin API; a secret reference. `switchyard run`
    /// refuses to start without one.
    pub admin_token: Option<SecretSource>,
    /// The public listener (webhooks); `None`: not started.
    pub public_listen: Option<SocketAddr>,
    /// How often the plugin directory is rescanned besides file events.
    pub plugin_rescan: Duration,
    /// How long a plugin file's size and mtime must stay unchanged before
    /// it is loaded (a copy in progress is never loaded half-way).
    pub plugin_settle: Duration,
    /// How long a run in progress at shutdown may take to finish before it
    /// is stopped between operations. When it ends, connections still open
    /// on the listeners are closed too.
    pub shutdown_grace: Duration,
    /// How long a client has to send a complete request head, counted from
    /// the connection's start or the end of the previous response (so it is
    /// also how long an idle keep-alive connection is kept).
    pub header_read_timeout: Duration,
    /// How long a client has to send a request's body, counted from the end
    /// of its head; a body still arriving then is cut off.
    pub body_read_timeout: Duration,
    /// Connections served at once on each listener; more wait in the
    /// kernel's accept queue. Lowered at start to what the open-file limit
    /// allows.
    pub max_connections: usize,
    /// Refused requests (a bad webhook signature, a wrong admin token, ...)
    /// one client address may cause per second (bursts of ten times that)
    /// before its requests are answered 429 without being looked at.
    pub max_rejections_per_second: u32,
    /// How often refused requests are written to the audit log, as one
    /// `requests.rejected` record per client address, listener and reason.
    pub rejection_summary_every: Duration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9180)),
            admin_token: None,
            public_listen: None,
            plugin_rescan: Duration::from_secs(2),
            plugin_settle: Duration::from_millis(500),
            shutdown_grace: Duration::from_secs(20),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 256,
            max_rejections_per_second: 10,
            rejection_summary_every: Duration::from_secs(60),
        }
    }
}

/// How the host verifies a connector's webhooks (`[connectors.NAME.webhook]`).
/// The secret stays in the host: plugins only see verified bodies.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The signature scheme.
    pub scheme: WebhookScheme,
    /// The signing secret; always a sealed reference (`env:`, `file:`,
    /// `store:`). For `standard`: `whsec_` followed by the base64 key.
    pub secret: SecretSource,
    /// Larger bodies are refused with 413 before anything else is done.
    pub max_body_kib: u64,
    /// Deliveries whose timestamp is further than this from now are refused.
    pub tolerance_secs: u64,
}

/// A webhook signature scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookScheme {
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`,
    /// `webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>`.
    Standard,
    /// HMAC-SHA256 in a vendor's header (BambooHR and the like).
    Hmac(HmacScheme),
}

/// A vendor's HMAC-SHA256 signature header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacScheme {
    /// Header carrying the signature (lower case).
    pub signature_header: String,
    /// Text before the signature in the header (`sha256=`), if any.
    pub signature_prefix: Option<String>,
    /// How the signature bytes are written.
    pub signature_encoding: SignatureEncoding,
    /// Header carrying the Unix timestamp, if the vendor signs one.
    pub timestamp_header: Option<String>,
    /// Header carrying a unique delivery id, if the vendor sends one;
    /// without it, the signature itself identifies a delivery for replays.
    pub id_header: Option<String>,
    /// What the HMAC is computed over.
    pub signed_payload: SignedPayload,
}

/// How a signature is written in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureEncoding {
    /// Lower- or upper-case hex.
    Hex,
    /// Standard base64.
    Base64,
}

/// The bytes a vendor's HMAC covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignedPayload {
    /// The body alone.
    Body,
    /// The body followed by the timestamp (BambooHR).
    BodyThenTimestamp,
    /// `timestamp.body`.
    TimestampDotBody,
}

/// One connector: a plugin, its settings and what it may reach.
#[derive(Debug, Clone)]
pub struct ConnectorConfig {
    /// Plugin file stem in the plugin directory (`bamboohr` for `bamboohr.wasm`).
    pub plugin: String,
    /// The line of `plugin = ...` in the configuration file, for errors
    /// about the connector found only once plugins are loaded.
    pub line: usize,
    /// `optional = true`: a connector whose credential cannot be resolved
    /// is paused instead of stopping the daemon's start.
    pub optional: bool,
    /// Non-secret settings the plugin reads through the `config` import.
    pub settings: BTreeMap<String, String>,
    /// Origins the plugin may send requests to.
    pub allow: Vec<Origin>,
    /// Credential the host injects into requests to the origins named for
    /// it ([`ConnectorConfig::credential_origins`]).
    pub auth: Option<AuthConfig>,
    /// `credential_origins` as written: the origins the credential goes to;
    /// `None` means the non-wildcard `allow`ed origins.
    pub credential_origins: Option<Vec<Origin>>,
    /// Per-call limits.
    pub limits: Limits,
}

impl ConnectorConfig {
    /// What the runtime grants this connector besides its credential.
    pub fn grants(&self) -> Grants {
        Grants {
            settings: self.settings.clone(),
            allow: self.allow.clone(),
            credential_origins: self.credential_origins(),
            limits: self.limits.clone(),
        }
    }

    /// The origins the credential is injected for: `credential_origins` as
    /// written, or else every `allow`ed origin that is not a wildcard. A
    /// wildcard receives the credential only when named here explicitly.
    pub fn credential_origins(&self) -> Vec<Origin> {
        match &self.credential_origins {
            Some(named) => named.clone(),
            None => self
                .allow
                .iter()
                .filter(|o| !o.is_wildcard())
                .cloned()
                .collect(),
        }
    }
}

/// A credential and how the host injects it.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum AuthConfig {
    /// HTTP Basic.
    Basic {
        /// User name (BambooHR: the API key).
        username: SecretSource,
        /// Password (BambooHR: any value, conventionally "x").
        password: SecretSource,
    },
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token.
        token: SecretSource,
    },
    /// A named header.
    Header {
        /// Header name.
        name: String,
        /// Header value.
        value: SecretSource,
    },
    /// A query parameter (Moodle's `wstoken`).
    Query {
        /// Parameter name.
        param: String,
        /// Parameter value.
        value: SecretSource,
    },
    /// OAuth2 client credentials: the host fetches an access token from
    /// `token_url`, caches it until it expires and sends it as a bearer token.
    #[serde(rename = "oauth2")]
    OAuth2 {
        /// The token endpoint (`https://...`). The host reaches it itself;
        /// it need not be in `allow`, and address checks apply to it as to
        /// any request.
        token_url: String,
        /// Client id.
        client_id: SecretSource,
        /// Client secret.
        client_secret: SecretSource,
        /// Requested scope, if the provider needs one.
        #[serde(default)]
        scope: Option<String>,
        /// How the client authenticates to the token endpoint.
        #[serde(default)]
        client_auth: ClientAuthConfig,
    },
}

impl AuthConfig {
    /// Every secret source of the credential.
    fn sources_mut(&mut self) -> Vec<&mut SecretSource> {
        match self {
            AuthConfig::Basic { username, password } => vec![username, password],
            AuthConfig::Bearer { token } => vec![token],
            AuthConfig::Header { value, .. } | AuthConfig::Query { value, .. } => vec![value],
            AuthConfig::OAuth2 {
                client_id,
                client_secret,
                ..
            } => vec![client_id, client_secret],
        }
    }

    /// Anchor relative `file:` paths at `base` (the configuration's folder).
    pub(crate) fn anchor_files(&mut self, base: &std::path::Path) {
        for source in self.sources_mut() {
            source.anchor_file(base);
        }
    }
}

/// How an OAuth2 client sends its id and secret to the token endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuthConfig {
    /// HTTP Basic (`client_secret_basic`), the default.
    #[default]
    Basic,
    /// Form fields in the request body (`client_secret_post`).
    Body,
}

/// Where a credential's value comes from: a literal (only for values that are
/// not secret, such as BambooHR's "x" password) or `{ secret = "env:NAME" }`,
/// `{ secret = "file:PATH" }` or `{ secret = "store:NAME" }` (the encrypted
/// store in the data directory).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SecretSource {
    /// A value written in the file.
    Literal(String),
    /// A reference resolved when the connector is loaded.
    Reference {
        /// `env:NAME`, `file:PATH` or `store:NAME`.
        secret: String,
    },
}

impl SecretSource {
    /// A relative `file:PATH` is relative to the configuration's folder,
    /// not to the working directory of whoever runs the command.
    pub(crate) fn anchor_file(&mut self, base: &std::path::Path) {
        if let SecretSource::Reference { secret } = self
            && let Some(path) = secret.strip_prefix("file:")
            && std::path::Path::new(path).is_relative()
        {
            *secret = format!("file:{}", base.join(path).display());
        }
    }
}

/// The embedded store (`[store]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreSettings {
    /// sled's page cache, in MiB: the store's share of the host's memory,
    /// whatever the size of the workforce.
    pub cache_mib: u32,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            cache_mib: (crate::store::CACHE_BYTES >> 20) as u32,
        }
    }
}

impl Config {
    /// Open the state database in `data_dir` with the configured cache.
    pub fn open_store(&self) -> anyhow::Result<crate::store::SledStore> {
        crate::store::SledStore::open_with_cache(
            &self.data_dir,
            u64::from(self.store.cache_mib) << 20,
        )
    }
}

/// How long things are kept (`[retention]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Audit records older than this many days are pruned.
    pub audit_days: u32,
    /// Dead letters older than this many days are deleted.
    pub dead_letter_days: u32,
    /// Snapshots of employees absent from full HRIS listings for longer than
    /// this many days are deleted.
    pub departed_days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            audit_days: 1095,
            dead_letter_days: 90,
            departed_days: 30,
        }
    }
}

/// When the daemon runs a link (`schedule`, `jitter` of `[links.NAME]`).
#[derive(Debug, Clone, Default)]
pub struct LinkSchedule {
    /// When the daemon runs the link; `None`: only when triggered.
    pub schedule: Option<Schedule>,
    /// Random delay (stable per slot) added to each scheduled run.
    pub jitter: Duration,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/switchyard.toml"), text)
    }

    const GOOD: &str = r#"
[connectors.hr]
plugin = "bamboohr"
config = { base_url = "https://acme.bamboohr.com", page_size = 50 }
allow = ["https://acme.bamboohr.com"]
auth = { kind = "basic", username = { secret = "env:KEY" }, password = "x" }

[connectors.lms]
plugin = "moodle"
allow = ["https://*.acme.example"]

[links.acme]
hris = "hr"
lms = "lms"
[[links.acme.rules]]
courses = ["SAFETY"]
when = { department = ["Warehouse"] }
due_in_days = 30
"#;

    #[test]
    fn the_store_cache_is_configurable_and_must_be_positive() {
        assert_eq!(parse(GOOD).unwrap().store.cache_mib, 16);
        let sized = format!("{GOOD}\n[store]\ncache_mib = 16\n");
        assert_eq!(parse(&sized).unwrap().store.cache_mib, 16);
        let zero = format!("{GOOD}\n[store]\ncache_mib = 0\n");
        let e = parse(&zero).unwrap_err();
        assert!(e.message.contains("cache_mib must be at least 1"), "{e}");
        let line = zero
            .lines()
            .position(|l| l.starts_with("cache_mib"))
            .unwrap()
            + 1;
        assert_eq!(e.line, line, "the line of cache_mib");
        let unknown = format!("{GOOD}\n[store]\ncache = 16\n");
        assert!(parse(&unknown).is_err());
    }

    #[test]
    fn parses_a_full_configuration() {
        let config = parse(GOOD).unwrap();
        assert_eq!(config.plugin_dir, Path::new("/etc/plugins.d"));
        let hr = &config.connectors["hr"];
        assert_eq!(hr.settings["page_size"], "50");
        assert_eq!(hr.allow[0].port, 443);
        let link = &config.links["acme"];
        assert_eq!(link.on_termination, TerminationPolicy::Suspend);
        assert_eq!(link.rules[0].due_in_days, Some(30));
    }

    #[test]
    fn relative_file_secrets_are_relative_to_the_configuration_folder() {
        let text = GOOD.replace("env:KEY", "file:secrets/hr-key");
        let config = parse(&text).unwrap();
        let Some(AuthConfig::Basic { username, .. }) = &config.connectors["hr"].auth else {
            panic!("basic auth");
        };
        let SecretSource::Reference { secret } = username else {
            panic!("a reference");
        };
        assert_eq!(secret, "file:/etc/secrets/hr-key");
        let text = GOOD.replace("env:KEY", "file:/run/hr-key");
        let config = parse(&text).unwrap();
        let Some(AuthConfig::Basic {
            username: SecretSource::Reference { secret },
            ..
        }) = &config.connectors["hr"].auth
        else {
            panic!("basic auth");
        };
        assert_eq!(secret, "file:/run/hr-key");
    }

    #[test]
    fn unknown_key_is_refused_with_its_line() {
        let text = GOOD.replace("due_in_days = 30", "due_in_dayz = 30");
        let err = parse(&text).unwrap_err();
        assert_eq!(err.line, 18, "{err}");
        assert!(err.to_string().contains("due_in_dayz"), "{err}");
        assert!(
            err.to_string().starts_with("/etc/switchyard.toml:18:"),
            "{err}"
        );
    }

    #[test]
    fn link_to_missing_connector_is_refused_with_its_line() {
        let text = GOOD.replace("lms = \"lms\"", "lms = \"nope\"");
        let err = parse(&text).unwrap_err();
        assert_eq!(err.line, 14, "{err}");
        assert!(err.message.contains("`nope` is not defined"), "{err}");
    }

    #[test]
    fn two_links_on_one_pair_of_connectors_are_refused_with_the_line() {
        let text = format!("{GOOD}\n[links.again]\nhris = \"hr\"\nlms = \"lms\"\n");
        let err = parse(&text).unwrap_err();
        assert_eq!(err.line, 22, "{err}");
        assert!(
            err.message
                .contains("link `again`: link `acme` already connects `hr` to `lms`"),
            "{err}"
        );
    }

    #[test]
    fn optional_connectors_and_plugin_lines_are_kept() {
        let text = GOOD.replace(
            "plugin = \"moodle\"",
            "plugin = \"moodle\"\noptional = true",
        );
        let config = parse(&text).unwrap();
        assert!(config.connectors["lms"].optional);
        assert!(!config.connectors["hr"].optional);
        assert_eq!(config.connectors["hr"].line, 3);
        assert_eq!(config.connectors["lms"].line, 9);
    }

    #[test]
    fn schedules_and_the_daemon_table_parse_and_bad_ones_name_their_line() {
        let text = GOOD.replace(
            "lms = \"lms\"\n",
            "lms = \"lms\"\nschedule = \"every 15m\"\njitter = \"30s\"\n",
        );
        let text = format!(
            "{text}\n[daemon]\nadmin_listen = \"127.0.0.1:0\"\nadmin_token = {{ secret = \"env:TOKEN\" }}\nplugin_settle = \"250ms\"\n"
        );
        let config = parse(&text).unwrap();
        let link = &config.schedules["acme"];
        assert_eq!(link.schedule.as_ref().unwrap().to_string(), "every 15m");
        assert_eq!(link.jitter, Duration::from_secs(30));
        assert_eq!(config.daemon.plugin_settle, Duration::from_millis(250));
        assert_eq!(config.daemon.admin_listen.port(), 0);

        let bad = text.replace("every 15m", "61 * * * *");
        let err = parse(&bad).unwrap_err();
        assert_eq!(err.line, 15, "{err}");
        assert!(err.message.contains("schedule `61 * * * *`"), "{err}");
        let bad = text.replace("every 15m", "every 15 minutes");
        assert_eq!(parse(&bad).unwrap_err().line, 15);
        // A step larger than its field: croner would read `*/61` as "at
        // minute 0", an hourly run where every 61 minutes was meant.
        for (cron, field) in [
            ("*/61 * * * *", "minute"),
            ("0 */24 * * *", "hour"),
            ("0 0 */0 * *", "day-of-month"),
            ("*/60 * * * * *", "second"),
        ] {
            let bad = text.replace("every 15m", cron);
            let err = parse(&bad).unwrap_err();
            assert_eq!(err.line, 15, "{err}");
            assert!(
                err.message.contains(&format!("in the {field} field")),
                "{cron}: {err}"
            );
        }
        for good in [
            "*/59 * * * *",
            "5-50/15 * * * *",
            "0 */23 * * *",
            "0 0 1 */6 *",
            "@hourly",
        ] {
            assert!(parse(&text.replace("every 15m", good)).is_ok(), "{good}");
        }
        let bad = text.replace("{ secret = \"env:TOKEN\" }", "\"hunter2\"");
        let err = parse(&bad).unwrap_err();
        assert!(err.message.contains("secret reference"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn origin_budgets_parse_and_bad_ones_are_refused() {
        let text =
            format!("{GOOD}\n[origins.\"https://acme.bamboohr.com\"]\nrequests_per_second = 5\n");
        let config = parse(&text).unwrap();
        assert_eq!(config.origins.len(), 1);
        assert_eq!(config.origins[0].1.requests_per_second, 5);
        let text = format!("{GOOD}\n[origins.\"acme.bamboohr.com\"]\nrequests_per_second = 5\n");
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("no scheme"), "{err}");
    }

    #[test]
    fn bad_origin_is_refused() {
        let text = GOOD.replace("https://*.acme.example", "ftp://x");
        let err = parse(&text).unwrap_err();
        assert_eq!(err.line, 10, "{err}");
    }

    #[test]
    fn origins_match_scheme_host_and_port() {
        let o = Origin::parse("https://*.acme.example").unwrap();
        assert!(o.matches(&"https://lms.acme.example/x".parse().unwrap()));
        assert!(!o.matches(&"https://acme.example/x".parse().unwrap()));
        assert!(!o.matches(&"http://lms.acme.example/x".parse().unwrap()));
        assert!(!o.matches(&"https://lms.acme.example:8443/x".parse().unwrap()));
        assert!(!o.matches(&"https://evilacme.example/x".parse().unwrap()));
        let v6 = Origin::parse("http://[::1]:9000").unwrap();
        assert!(v6.matches(&"http://[::1]:9000/x".parse().unwrap()));
        assert_eq!(Origin::parse("https://[::1]").unwrap().port, 443);
        let local = Origin::parse("http://127.0.0.1:8080").unwrap();
        assert!(local.matches(&"http://127.0.0.1:8080/api".parse().unwrap()));
        assert!(!local.matches(&"http://127.0.0.1:8081/api".parse().unwrap()));
    }

    #[test]
    fn wildcards_never_match_addresses() {
        let o = Origin::parse("http://*.0.0.1:8080").unwrap();
        assert!(!o.matches(&"http://127.0.0.1:8080/x".parse().unwrap()));
        let o = Origin::parse("http://*.254.169.254").unwrap();
        assert!(!o.matches(&"http://169.254.169.254/".parse().unwrap()));
    }

    #[test]
    fn webhook_tables_parse_and_bad_ones_are_refused_with_their_line() {
        let standard = GOOD.replace(
            "allow = [\"https://*.acme.example\"]",
            "allow = [\"https://*.acme.example\"]\n[connectors.lms.webhook]\nscheme = \"standard\"\nsecret = { secret = \"env:LMS_WEBHOOK\" }\nmax_body_kib = 64",
        );
        let config = parse(&standard).unwrap();
        let hook = &config.webhooks["lms"];
        assert_eq!(hook.scheme, WebhookScheme::Standard);
        assert_eq!((hook.max_body_kib, hook.tolerance_secs), (64, 300));
        assert!(!config.webhooks.contains_key("hr"));

        let bamboo = GOOD.replace(
            "password = \"x\" }",
            "password = \"x\" }\n[connectors.hr.webhook]\nscheme = \"hmac\"\nsecret = { secret = \"file:/run/hook\" }\nsignature_header = \"X-BambooHR-Signature\"\ntimestamp_header = \"X-BambooHR-Timestamp\"\nsigned_payload = \"body-then-timestamp\"",
        );
        let config = parse(&bamboo).unwrap();
        let WebhookScheme::Hmac(scheme) = &config.webhooks["hr"].scheme else {
            panic!("hmac")
        };
        assert_eq!(scheme.signature_header, "x-bamboohr-signature");
        assert_eq!(scheme.signature_encoding, SignatureEncoding::Hex);
        assert_eq!(scheme.signed_payload, SignedPayload::BodyThenTimestamp);

        for (bad, expect) in [
            (
                standard.replace("{ secret = \"env:LMS_WEBHOOK\" }", "\"whsec_abc\""),
                "sealed reference",
            ),
            (
                standard.replace("max_body_kib = 64", "signature_header = \"x-sig\""),
                "scheme = \"hmac\" only",
            ),
            (
                standard.replace("max_body_kib = 64", "max_body_kb = 64"),
                "unknown field",
            ),
            (
                standard.replace("scheme = \"standard\"", "scheme = \"rot13\""),
                "unknown variant",
            ),
            (
                bamboo.replace(
                    "signed_payload = \"body-then-timestamp\"",
                    "signed_payload = \"body\"",
                ),
                "does not sign it",
            ),
            (
                bamboo.replace("signature_header = \"X-BambooHR-Signature\"\n", ""),
                "needs `signature_header`",
            ),
        ] {
            let err = parse(&bad).unwrap_err();
            assert!(err.message.contains(expect), "{expect}: {err}");
            assert!(err.line > 1, "names a line: {err}");
        }
        let err = parse(&standard.replace("{ secret = \"env:LMS_WEBHOOK\" }", "\"whsec_abc\""))
            .unwrap_err();
        assert_eq!(err.line, 11, "the webhook table's line: {err}");
    }

    #[test]
    fn oauth2_and_new_limits_parse() {
        let text = GOOD.replace(
            "allow = [\"https://*.acme.example\"]",
            "allow = [\"https://*.acme.example\"]\nauth = { kind = \"oauth2\", token_url = \"https://login.acme.example/token\", client_id = \"sy\", client_secret = { secret = \"store:lms-client\" }, scope = \"read\", client_auth = \"body\" }\ncredential_origins = [\"https://*.acme.example\"]\n[connectors.lms.limits]\nmax_records = 500\nfuel = 1000000\nquarantine_after = 3",
        );
        let config = parse(&text).unwrap();
        let lms = &config.connectors["lms"];
        assert!(matches!(
            lms.auth,
            Some(AuthConfig::OAuth2 { client_auth: ClientAuthConfig::Body, ref scope, .. }) if scope.as_deref() == Some("read")
        ));
        assert_eq!(
            (
                lms.limits.max_records,
                lms.limits.fuel,
                lms.limits.quarantine_after
            ),
            (500, Some(1_000_000), 3)
        );
        let hr = &config.connectors["hr"];
        assert_eq!(
            (
                hr.limits.max_records,
                hr.limits.fuel,
                hr.limits.quarantine_after
            ),
            (10_000, None, 5)
        );

        let bad = text.replace("https://login.acme.example/token", "login.acme.example");
        let err = parse(&bad).unwrap_err();
        assert!(err.message.contains("oauth2 `token_url`"), "{err}");
        let zero = text.replace("quarantine_after = 3", "quarantine_after = 0");
        assert!(parse(&zero).unwrap_err().message.contains("at least 1"));

        assert_eq!(lms.limits.max_batch, 100, "the default");
        let single = parse(&text.replace(
            "quarantine_after = 3",
            "quarantine_after = 3\nmax_batch = 1",
        ))
        .unwrap();
        assert_eq!(single.connectors["lms"].limits.max_batch, 1);
        for bad in ["0", "101"] {
            let text = text.replace(
                "quarantine_after = 3",
                &format!("quarantine_after = 3\nmax_batch = {bad}"),
            );
            let err = parse(&text).unwrap_err();
            assert!(
                err.message.contains("`max_batch` must be 1 to 100"),
                "{err}"
            );
        }
    }

    #[test]
    fn credentials_go_to_named_origins_and_a_wildcard_only_when_named() {
        let config = parse(GOOD).unwrap();
        let hr = &config.connectors["hr"];
        assert_eq!(
            hr.credential_origins(),
            vec![Origin::parse("https://acme.bamboohr.com").unwrap()],
            "default: the non-wildcard allowed origins"
        );
        let lms = "allow = [\"https://*.acme.example\"]";
        let auth = "auth = { kind = \"bearer\", token = { secret = \"env:T\" } }";

        // Only a wildcard allowed and nothing named: the credential would go
        // nowhere, which is refused at load with the way out.
        let err = parse(&GOOD.replace(lms, &format!("{lms}\n{auth}"))).unwrap_err();
        assert!(err.message.contains("credential_origins"), "{err}");
        assert!(err.message.contains("wildcard"), "{err}");

        // A named host under the wildcard.
        let named = format!("{lms}\n{auth}\ncredential_origins = [\"https://api.acme.example\"]");
        let config = parse(&GOOD.replace(lms, &named)).unwrap();
        let grants = config.connectors["lms"].grants();
        assert_eq!(grants.credential_origins.len(), 1);
        assert_eq!(grants.credential_origins[0].host, "api.acme.example");

        // The wildcard itself, named explicitly.
        let wildcard = format!("{lms}\n{auth}\ncredential_origins = [\"https://*.acme.example\"]");
        let config = parse(&GOOD.replace(lms, &wildcard)).unwrap();
        assert!(config.connectors["lms"].credential_origins()[0].is_wildcard());

        // Not an allowed origin.
        let outside = format!("{lms}\n{auth}\ncredential_origins = [\"https://evil.example\"]");
        let err = parse(&GOOD.replace(lms, &outside)).unwrap_err();
        assert!(err.message.contains("not covered by `allow`"), "{err}");

        // Without a credential, `credential_origins` means nothing.
        let orphan = format!("{lms}\ncredential_origins = [\"https://api.acme.example\"]");
        let err = parse(&GOOD.replace(lms, &orphan)).unwrap_err();
        assert!(err.message.contains("no `auth`"), "{err}");
    }
}
