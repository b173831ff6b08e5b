//! What a connector is granted: the origins it may reach, the limits of
//! each call, and request budgets per origin. The configuration (in the
//! `switchyard` crate) parses them; the runtime enforces them.

use std::fmt;

use serde::Deserialize;

/// A request budget for one origin (`[origins."https://x.example"]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginBudget {
    /// Sustained requests per second.
    pub requests_per_second: u32,
    /// Requests allowed at once before the rate applies (default: the rate).
    #[serde(default)]
    pub burst: Option<u32>,
}

/// Limits applied to every call into a plugin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall-clock deadline of one call, in milliseconds.
    pub call_timeout_ms: u64,
    /// Cap on the instance's linear memory, in MiB.
    pub memory_mib: u64,
    /// Maximum HTTP requests in one call.
    pub max_requests: u32,
    /// Maximum size of one HTTP response body, in KiB.
    pub max_response_kib: u64,
    /// Maximum size of one HTTP request body, in KiB.
    pub max_request_kib: u64,
    /// Timeout of one HTTP request, in milliseconds.
    pub http_timeout_ms: u64,
    /// Maximum records (employees or completions) in one returned page.
    pub max_records: u32,
    /// Maximum approximate size of what one call returns, in KiB.
    pub max_output_kib: u64,
    /// Instruction budget of one call (wasmtime fuel); `None`: no budget,
    /// only the deadline.
    pub fuel: Option<u64>,
    /// Consecutive plugin faults after which the connector is quarantined.
    pub quarantine_after: u32,
    /// Pages one listing of a run may take (employees or completions).
    pub max_pages_per_run: u32,
    /// Records one listing of a run may return in all.
    pub max_records_per_run: u64,
    /// Minutes a run may last before it stops at its next checkpoint.
    pub max_run_minutes: u64,
    /// Items in one batch call (`upsert-users`, `enroll-all`), 1 to
    /// [`crate::MAX_BATCH`]; 1 sends one operation per call.
    pub max_batch: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            call_timeout_ms: 60_000,
            memory_mib: 128,
            max_requests: 1_000,
            max_response_kib: 16 * 1024,
            max_request_kib: 4 * 1024,
            http_timeout_ms: 30_000,
            max_records: 10_000,
            max_output_kib: 64 * 1024,
            fuel: None,
            quarantine_after: 5,
            max_pages_per_run: 100_000,
            max_records_per_run: 2_000_000,
            max_run_minutes: 360,
            max_batch: crate::MAX_BATCH as u32,
        }
    }
}

/// An origin a connector may reach: scheme, host (optionally `*.` wildcard)
/// and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `http` or `https`.
    pub scheme: String,
    /// Host name or address; a leading `*.` matches any subdomain.
    pub host: String,
    /// Port (the scheme's default when not written).
    pub port: u16,
}

impl Origin {
    /// Parse `https://host[:port]`, without path, query or credentials.
    pub fn parse(text: &str) -> Result<Origin, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("origin `{text}` has no scheme (https://...)"))?;
        let default_port = match scheme {
            "https" => 443,
            "http" => 80,
            _ => return Err(format!("origin `{text}`: scheme must be http or https")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "origin `{text}` must be scheme://host[:port] with no path, query or user"
            ));
        }
        let bad_port = |port: &str| format!("origin `{text}`: bad port `{port}`");
        let (host, port) = if let Some(after) = rest.strip_prefix('[') {
            // An IPv6 literal: `[::1]` or `[::1]:8080`.
            let (address, tail) = after
                .split_once(']')
                .ok_or_else(|| format!("origin `{text}`: unclosed `[`"))?;
            let port = match tail.strip_prefix(':') {
                Some(port) => port.parse().map_err(|_| bad_port(port))?,
                None if tail.is_empty() => default_port,
                None => return Err(bad_port(tail)),
            };
            (format!("[{address}]"), port)
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) => (host.to_owned(), port.parse().map_err(|_| bad_port(port))?),
                None => (rest.to_owned(), default_port),
            }
        };
        Ok(Origin {
            scheme: scheme.to_owned(),
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// Whether this is a `*.` wildcard origin.
    pub fn is_wildcard(&self) -> bool {
        self.host.starts_with("*.")
    }

    /// Whether every URL on `other` is on this origin: the same origin, or
    /// a named host (not a wildcard, not an address) under this wildcard.
    pub fn covers(&self, other: &Origin) -> bool {
        if self == other {
            return true;
        }
        if other.is_wildcard() {
            return false;
        }
        url::Url::parse(&format!(
            "{}://{}:{}/",
            other.scheme, other.host, other.port
        ))
        .is_ok_and(|url| self.matches(&url))
    }

    /// Whether `url` is on this origin.
    pub fn matches(&self, url: &url::Url) -> bool {
        let Some(host) = url.host_str() else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        // A wildcard matches names only: an address is allowed only where an
        // origin names exactly that address.
        let is_address = !matches!(url.host(), Some(url::Host::Domain(_)));
        let host_ok = match self.host.strip_prefix("*.") {
            Some(domain) => {
                !is_address
                    && host.len() > domain.len() + 1
                    && host.ends_with(&format!(".{domain}"))
            }
            None => host == self.host,
        };
        host_ok && url.scheme() == self.scheme && url.port_or_known_default() == Some(self.port)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// Everything a connector is granted besides its credential: the settings
/// its plugin reads through `config`, the origins it may reach (and those
/// its credential goes to), and the limits of each call.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Non-secret settings (`config.get`).
    pub settings: std::collections::BTreeMap<String, String>,
    /// Origins the plugin may send requests to.
    pub allow: Vec<Origin>,
    /// Origins the connector's credential is injected for: requests to
    /// other allowed origins go without it. Empty: the credential goes
    /// nowhere.
    pub credential_origins: Vec<Origin>,
    /// Per-call limits.
    pub limits: Limits,
}
