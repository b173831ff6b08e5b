//! The `http` import: the only way out of the sandbox.
//!
//! Every request is checked against the connector's allowed origins (denied
//! by default), counted against the per-call limit, converted with header
//! and size limits (`wire`), sent by the host's shared client with a
//! timeout, and read with a size cap. The connector's credential is injected
//! here, at the network boundary, and only into requests to the origins
//! named for it (`credential_origins`). The host owns content negotiation
//! (`decode`): the response is decoded before the size cap and redaction,
//! and every spelling of every sealed credential value
//! ([`crate::secret::spellings`]) is redacted from its headers and body
//! before the plugin sees it.
//!
//! Addresses are checked where the connection is made: the shared client
//! resolves host names with [`PublicOnly`], which refuses loopback, private,
//! link-local, unspecified and cloud-metadata addresses, and the connection
//! goes to an address that passed the check (no second lookup a DNS
//! rebinding could change). An IP address literal never reaches the resolver,
//! and a URL with one passes the allowlist only if an origin names exactly
//! that address, so writing `http://127.0.0.1:8080` in `allow` is how an
//! operator grants an internal address.
//!
//! Redirects are not followed: the plugin sees the 3xx and must send a new
//! request, which passes the same checks.

mod decode;
mod wire;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::HostState;
use crate::bindings::hris::switchyard::connector::http::{Host, Request, Response};
use crate::grants::{Limits, Origin};
use crate::secret::{ClientAuth, Credential, OAuth2Client, Secret};

pub use wire::{MAX_HEADER_BYTES, MAX_HEADERS};

/// What a connector may reach, and the credential bound to some of those
/// origins.
#[derive(Debug)]
pub struct Egress {
    /// Allowed origins.
    pub allow: Vec<Origin>,
    /// The origins the credential is injected for (a wildcard here matches
    /// as in `allow`; only origins named for the credential are here).
    pub credential_origins: Vec<Origin>,
    /// Injected into requests to allowed origins that are also in
    /// `credential_origins`.
    pub credential: Option<Credential>,
    /// The OAuth2 access token, shared by every call of the connector.
    token: tokio::sync::Mutex<TokenState>,
    /// Request budgets per origin, shared by every connector of the runtime.
    budgets: Arc<OriginBudgets>,
}

impl Egress {
    /// Grants for one connector.
    pub fn new(
        allow: Vec<Origin>,
        credential_origins: Vec<Origin>,
        credential: Option<Credential>,
        budgets: Arc<OriginBudgets>,
    ) -> Egress {
        Egress {
            allow,
            credential_origins,
            credential,
            token: tokio::sync::Mutex::new(TokenState::default()),
            budgets,
        }
    }

    /// Whether the credential goes with a request to `url`.
    fn injects_into(&self, url: &url::Url) -> bool {
        self.credential.is_some() && self.credential_origins.iter().any(|o| o.matches(url))
    }
}

type Limiter = governor::DefaultDirectRateLimiter;

/// Request budgets per origin (`[origins."https://x".requests_per_second]`),
/// shared by all connectors that reach the same origin, so two connectors on
/// one vendor tenant cannot together exceed its rate limit.
#[derive(Default)]
pub struct OriginBudgets {
    limiters: std::sync::Mutex<std::collections::HashMap<String, Arc<Limiter>>>,
}

impl std::fmt::Debug for OriginBudgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let limiters = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_set().entries(limiters.keys()).finish()
    }
}

impl OriginBudgets {
    /// Limit requests to `origin` to `per_second`, with bursts of `burst`.
    pub fn limit(&self, origin: &Origin, per_second: u32, burst: u32) {
        let (Some(rate), Some(burst)) = (
            std::num::NonZeroU32::new(per_second),
            std::num::NonZeroU32::new(burst.max(1)),
        ) else {
            return;
        };
        let quota = governor::Quota::per_second(rate).allow_burst(burst);
        let mut limiters = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        limiters.insert(
            origin.to_string(),
            Arc::new(governor::RateLimiter::direct(quota)),
        );
    }

    /// Wait until the budget of `origin` (as `scheme://host:port`) allows one
    /// more request; returns at once for an origin without a budget.
    pub async fn acquire(&self, origin: &str) {
        let limiter = {
            let limiters = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
            limiters.get(origin).cloned()
        };
        if let Some(limiter) = limiter {
            limiter.until_ready().await;
        }
    }
}

/// An OAuth2 access token and when the host stops using it.
#[derive(Debug, Clone)]
struct AccessToken {
    token: Secret,
    renew_at: Instant,
}

/// The connector's OAuth2 token, or the token endpoint's refusal of its
/// credentials, remembered so that every call does not ask again.
#[derive(Debug, Default)]
struct TokenState {
    token: Option<AccessToken>,
    refused: Option<(Instant, String)>,
}

/// How long a refusal of the client credentials is remembered before the
/// token endpoint is asked again (a new configuration or secret starts a
/// new connector, and so asks at once).
const REFUSAL_BACKOFF: Duration = Duration::from_secs(300);

/// The OAuth2 `error` codes that say the client's credentials or
/// registration are wrong: a person must act (RFC 6749 section 5.2).
const CREDENTIAL_ERRORS: &[&str] = &[
    "invalid_client",
    "unauthorized_client",
    "invalid_grant",
    "invalid_scope",
];

/// Per-call HTTP state.
pub struct HttpState {
    client: reqwest::Client,
    egress: Arc<Egress>,
    connector: String,
    requests: u32,
    max_requests: u32,
    max_body: usize,
    max_request_bytes: usize,
    timeout: Duration,
    /// A per-call limit this call broke; the call fails with it even if
    /// the plugin swallows the refusal.
    pub(crate) limit_hit: Option<String>,
    /// The token endpoint refused the connector's credentials: the call
    /// fails as `unauthorized` (the link stops) whatever the plugin does.
    pub(crate) credential_refused: Option<String>,
    /// What this call's requests were, for the audit log.
    exchanges: ExchangeLog,
}

/// The requests of one call, shared with the caller so that they survive a
/// call cut off by its deadline.
#[derive(Debug, Clone, Default)]
pub struct ExchangeLog(Arc<std::sync::Mutex<(Vec<Exchange>, u32)>>);

impl ExchangeLog {
    fn push(&self, cap: usize, exchange: impl FnOnce() -> Exchange) {
        let mut log = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if log.0.len() >= cap {
            log.1 += 1;
        } else {
            log.0.push(exchange());
        }
    }

    /// The requests kept, and how many more were not kept (past the cap).
    pub fn take(&self) -> (Vec<Exchange>, u32) {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// One request a plugin made, as the audit log records it: never a header,
/// a body or a query value (a query value may carry a credential).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Exchange {
    /// HTTP method as asked.
    pub method: String,
    /// `scheme://host:port`, or the unparsable URL's scheme.
    pub origin: String,
    /// URL path.
    pub path: String,
    /// Names of the query parameters.
    pub query: Vec<String>,
    /// Response status, when there was a response.
    pub status: Option<u16>,
    /// Why there was no response (egress denied, limit, connection error).
    pub error: Option<String>,
    /// Milliseconds from the request to the end of the response body.
    pub duration_ms: u64,
    /// Request body bytes.
    pub bytes_out: usize,
    /// Response body bytes.
    pub bytes_in: usize,
}

const REDACTED: &str = "[redacted]";

/// The client every plugin request (and every OAuth2 token request) goes
/// through: no redirects, no proxies from the environment, and host names
/// resolved by [`PublicOnly`].
pub fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(PublicOnly))
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Resolves host names and keeps only addresses outside the host's own
/// networks. The connection is made to the addresses returned here, so the
/// check and the connection use the same lookup.
#[derive(Debug, Clone, Copy)]
pub struct PublicOnly;

/// A host name resolved only to addresses the host refuses to reach.
#[derive(Debug, thiserror::Error)]
#[error("`{host}` resolves to {address}, a {kind} address")]
pub struct AddressRefused {
    /// The host name.
    pub host: String,
    /// The first refused address.
    pub address: IpAddr,
    /// Why it was refused ("loopback", "private", ...).
    pub kind: &'static str,
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let mut public = Vec::new();
            for address in found {
                match internal(address.ip()) {
                    Some(kind) => {
                        refused.get_or_insert((address.ip(), kind));
                    }
                    None => public.push(address),
                }
            }
            if public.is_empty() {
                if let Some((address, kind)) = refused {
                    tracing::warn!(host, %address, kind, "egress refused");
                    return Err(Box::new(AddressRefused {
                        host,
                        address,
                        kind,
                    }) as _);
                }
                return Err(format!("`{host}` resolves to no address").into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// What kind of internal address `ip` is, or `None` for a public one.
pub fn internal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4 == Ipv4Addr::new(169, 254, 169, 254) {
                Some("cloud-metadata")
            } else if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if a == 0 {
                Some("unspecified")
            } else if a == 100 && (64..128).contains(&b) {
                Some("shared (carrier-grade NAT)")
            } else if v4.is_broadcast() || v4.is_multicast() {
                Some("broadcast or multicast")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if let Some(kind) = embedded_ipv4(v6)
                .into_iter()
                .find_map(|v4| internal(IpAddr::V4(v4)))
            {
                // An address that reaches an IPv4 address is refused as that
                // address would be.
                Some(kind)
            } else if first & 0xfe00 == 0xfc00 {
                Some("private")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if first & 0xffc0 == 0xfec0 {
                Some("site-local")
            } else if v6.segments()[..3] == [0x64, 0xff9b, 0x1] {
                // RFC 8215 local-use NAT64: where the IPv4 address sits
                // depends on the operator's prefix length.
                Some("private")
            } else if v6.is_multicast() {
                Some("broadcast or multicast")
            } else {
                None
            }
        }
    }
}

/// The IPv4 addresses an IPv6 address leads to: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`, deprecated), NAT64
/// (`64:ff9b::/96`), 6to4 (`2002:AABB:CCDD::/48`), and Teredo
/// (`2001:0::/32`: the server's address in bits 32-63, the client's in the
/// last 32 bits, inverted).
fn embedded_ipv4(v6: Ipv6Addr) -> Vec<Ipv4Addr> {
    let s = v6.segments();
    let last = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if let Some(v4) = v6.to_ipv4_mapped() {
        vec![v4]
    } else if s[..6] == [0; 6] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // IPv4-compatible, NAT64.
        vec![last(s[6], s[7])]
    } else if s[0] == 0x2002 {
        vec![last(s[1], s[2])]
    } else if s[0] == 0x2001 && s[1] == 0 {
        vec![last(!s[6], !s[7]), last(s[2], s[3])]
    } else {
        Vec::new()
    }
}

/// Where the URL of a request came from, which decides what an operator
/// can do about a refused address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sender {
    /// The plugin: the connector's `allow` list grants an address.
    Plugin,
    /// The host's OAuth2 token request: `allow` does not apply to
    /// `token_url`, only an address written in it does (the URL's port).
    TokenUrl(u16),
}

/// The message for a failed send: the address refusal (with what the
/// operator can do about it) when that is the cause, else the error chain.
/// Never the URL (it may carry a credential).
fn describe(error: reqwest::Error, sender: Sender) -> String {
    let error = error.without_url();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    let mut chain = Vec::new();
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<AddressRefused>() {
            let hint = match sender {
                Sender::Plugin => "to allow it, name the address itself in `allow`".to_owned(),
                Sender::TokenUrl(port) => format!(
                    "to use a token server on an internal address, write the address itself in `token_url` (e.g. `http://{}/...`): an address written out is not looked up, so it is not refused (`allow` does not apply to `token_url`)",
                    SocketAddr::new(refused.address, port)
                ),
            };
            return format!("address refused: {refused}; {hint}");
        }
        chain.push(e.to_string());
        source = e.source();
    }
    chain.join(": ")
}

fn origin_of(url: &url::Url) -> String {
    format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port_or_known_default().unwrap_or(0)
    )
}

impl HttpState {
    /// State for one call.
    pub fn new(
        client: reqwest::Client,
        egress: Arc<Egress>,
        limits: &Limits,
        connector: &str,
        exchanges: ExchangeLog,
    ) -> Self {
        HttpState {
            client,
            egress,
            connector: connector.to_owned(),
            requests: 0,
            max_requests: limits.max_requests,
            max_body: (limits.max_response_kib as usize) << 10,
            max_request_bytes: (limits.max_request_kib as usize) << 10,
            timeout: Duration::from_millis(limits.http_timeout_ms),
            limit_hit: None,
            credential_refused: None,
            exchanges,
        }
    }

    /// [`HttpState::exchange`] one request and keep a note of it for the
    /// audit log (up to the request limit plus a few refusals).
    pub async fn send(&mut self, request: Request) -> Result<Response, String> {
        let started = Instant::now();
        let method = request.method.to_ascii_uppercase();
        let bytes_out = request.body.len();
        let parsed = url::Url::parse(&request.url);
        let result = self.exchange(request).await;
        self.exchanges.push(self.max_requests as usize + 8, || {
            let (origin, path, query) = match &parsed {
                Ok(url) => (
                    origin_of(url),
                    url.path().to_owned(),
                    url.query_pairs().map(|(k, _)| k.into_owned()).collect(),
                ),
                Err(_) => ("(invalid URL)".to_owned(), String::new(), Vec::new()),
            };
            let (status, error, bytes_in) = match &result {
                Ok(r) => (Some(r.status), None, r.body.len()),
                Err(e) => (None, Some(e.clone()), 0),
            };
            Exchange {
                method,
                origin,
                path,
                query,
                status,
                error,
                duration_ms: started.elapsed().as_millis() as u64,
                bytes_out,
                bytes_in,
            }
        });
        result
    }

    /// Check, send, read, decode, redact. `Err` carries a message for the
    /// plugin; it never contains a credential.
    async fn exchange(&mut self, request: Request) -> Result<Response, String> {
        let url = wire::target(&request.url).map_err(|e| e.to_string())?;
        let origin = origin_of(&url);
        if !self.egress.allow.iter().any(|o| o.matches(&url)) {
            tracing::warn!(connector = %self.connector, %origin, "egress denied");
            return Err(format!(
                "egress to {origin} is not allowed for connector `{}`",
                self.connector
            ));
        }
        self.requests += 1;
        if self.requests > self.max_requests {
            let message = format!(
                "limit of {} HTTP requests per call reached",
                self.max_requests
            );
            self.limit_hit.get_or_insert_with(|| message.clone());
            return Err(message);
        }
        let inject = self.egress.injects_into(&url);
        let owned = match (&self.egress.credential, inject) {
            (
                Some(Credential::Basic { .. } | Credential::Bearer(_) | Credential::OAuth2(_)),
                true,
            ) => Some("authorization".to_owned()),
            (Some(Credential::Header { name, .. }), true) => Some(name.to_ascii_lowercase()),
            _ => None,
        };
        let outgoing = wire::convert(&request, url, owned.as_deref(), self.max_request_bytes)
            .map_err(|e| e.to_string())?;

        self.egress
            .budgets
            .acquire(&origin.to_ascii_lowercase())
            .await;
        let started = Instant::now();
        let mut token = if inject {
            self.access_token(None).await?
        } else {
            None
        };
        let mut response = self.dispatch(&outgoing, inject, token.as_ref()).await?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED && token.is_some() {
            // The token may have been revoked before its expiry: fetch a new
            // one and try once more.
            tracing::info!(connector = %self.connector, %origin, "401 with a cached OAuth2 token; refreshing it once");
            token = self.access_token(token.as_ref()).await?;
            response = self.dispatch(&outgoing, inject, token.as_ref()).await?;
        }
        let status = response.status().as_u16();
        let refused =
            |why: &dyn std::fmt::Display| format!("response from {origin} refused: {why}");
        let codings = decode::codings(response.headers()).map_err(|e| refused(&e))?;
        let headers = wire::response_headers(response.headers(), !codings.is_empty())
            .map_err(|e| refused(&e))?;
        let raw = read_capped(&mut response, self.max_body, &origin).await?;
        // An empty body (HEAD, 204, 304) has nothing to decode, whatever
        // its `Content-Encoding` says.
        let body = if codings.is_empty() || raw.is_empty() {
            raw
        } else {
            // CPU-bound and bounded by `max_body` per coding; a panic in a
            // decoder would end this task only.
            let max = self.max_body;
            tokio::task::spawn_blocking(move || decode::decode(raw, &codings, max))
                .await
                .map_err(|_| refused(&"its body could not be decoded"))?
                .map_err(|e| refused(&e))?
        };
        tracing::debug!(
            connector = %self.connector,
            method = %outgoing.method,
            %origin,
            path = outgoing.url.path(),
            status,
            bytes = body.len(),
            ms = started.elapsed().as_millis() as u64,
            "http"
        );
        let mut forms = self
            .egress
            .credential
            .as_ref()
            .map(Credential::revealing_forms)
            .unwrap_or_default();
        if let Some(token) = &token {
            forms.extend(crate::secret::spellings(token.expose()));
            forms.extend(crate::secret::spellings(&format!(
                "Bearer {}",
                token.expose()
            )));
        }
        let redactor = Redactor::new(&forms).map_err(|e| refused(&e))?;
        Ok(Response {
            status,
            headers: headers
                .into_iter()
                .map(|(k, v)| (redactor.text(&k), redactor.text(&v)))
                .collect(),
            body: redactor.bytes(&body),
        })
    }

    /// Send one request, with the credential injected when `inject`.
    async fn dispatch(
        &self,
        outgoing: &wire::Outgoing,
        inject: bool,
        token: Option<&Secret>,
    ) -> Result<reqwest::Response, String> {
        let mut url = outgoing.url.clone();
        let credential = self.egress.credential.as_ref().filter(|_| inject);
        if let Some(Credential::Query { param, value }) = credential {
            // The host's value wins over anything the plugin put there.
            let others: Vec<(String, String)> = url
                .query_pairs()
                .filter(|(k, _)| k != param.as_str())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            url.query_pairs_mut()
                .clear()
                .extend_pairs(others)
                .append_pair(param, value.expose());
        }
        let origin = origin_of(&url);
        let mut builder = self
            .client
            .request(outgoing.method.clone(), url)
            .timeout(self.timeout)
            .headers(outgoing.headers.clone());
        builder = match credential {
            Some(Credential::Basic { username, password }) => {
                builder.basic_auth(username.expose(), Some(password.expose()))
            }
            Some(Credential::Bearer(token)) => builder.bearer_auth(token.expose()),
            Some(Credential::Header { name, value }) => {
                builder.header(name.as_str(), value.expose())
            }
            _ => builder,
        };
        if let Some(token) = token {
            builder = builder.bearer_auth(token.expose());
        }
        if !outgoing.body.is_empty() {
            builder = builder.body(outgoing.body.clone());
        }
        builder.send().await.map_err(|e| {
            let message = format!(
                "request to {origin} failed: {}",
                describe(e, Sender::Plugin)
            );
            if message.contains("address refused") {
                tracing::warn!(connector = %self.connector, %origin, "egress denied: {message}");
            }
            message
        })
    }

    /// The connector's OAuth2 access token (`None` for other credentials):
    /// the cached one, or a new one when there is none, it is due for
    /// renewal, or it is `rejected` (the token a request just got a 401 with).
    async fn access_token(&mut self, rejected: Option<&Secret>) -> Result<Option<Secret>, String> {
        let egress = self.egress.clone();
        let Some(Credential::OAuth2(client)) = &egress.credential else {
            return Ok(None);
        };
        // Held across the fetch: concurrent calls wait for one token request.
        let mut state = egress.token.lock().await;
        if let Some(current) = state.token.as_ref() {
            let fresh = Instant::now() < current.renew_at;
            if fresh && rejected.is_none_or(|r| r != &current.token) {
                return Ok(Some(current.token.clone()));
            }
        }
        state.token = None;
        if let Some((at, message)) = &state.refused
            && at.elapsed() < REFUSAL_BACKOFF
        {
            self.credential_refused = Some(message.clone());
            return Err(message.clone());
        }
        state.refused = None;
        match self.fetch_token(client).await {
            Ok(token) => {
                let secret = token.token.clone();
                state.token = Some(token);
                Ok(Some(secret))
            }
            Err(TokenError::Refused(message)) => {
                state.refused = Some((Instant::now(), message.clone()));
                self.credential_refused = Some(message.clone());
                Err(message)
            }
            Err(TokenError::Other(message)) => Err(message),
        }
    }

    /// The client-credentials grant (RFC 6749 section 4.4).
    async fn fetch_token(&self, client: &OAuth2Client) -> Result<AccessToken, TokenError> {
        let origin = origin_of(&client.token_url);
        let form = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials");
            if let Some(scope) = &client.scope {
                form.append_pair("scope", scope);
            }
            if client.client_auth == ClientAuth::Body {
                form.append_pair("client_id", client.client_id.expose());
                form.append_pair("client_secret", client.client_secret.expose());
            }
            form.finish()
        };
        let mut builder = self
            .client
            .post(client.token_url.clone())
            .timeout(self.timeout)
            .header("accept", "application/json")
            .header("content-type", "application/x-www-form-urlencoded");
        if client.client_auth == ClientAuth::Basic {
            // RFC 6749 section 2.3.1: each part form-encoded, then joined.
            let encode = |s: &Secret| {
                url::form_urlencoded::byte_serialize(s.expose().as_bytes()).collect::<String>()
            };
            builder = builder.basic_auth(
                encode(&client.client_id),
                Some(encode(&client.client_secret)),
            );
        }
        let requested = Instant::now();
        let mut response = builder.body(form).send().await.map_err(|e| {
            TokenError::Other(format!(
                "OAuth2 token request to {origin} failed: {}",
                describe(
                    e,
                    Sender::TokenUrl(client.token_url.port_or_known_default().unwrap_or(443))
                )
            ))
        })?;
        let status = response.status();
        if !status.is_success() {
            let body = read_capped(&mut response, self.max_body, &origin)
                .await
                .unwrap_or_default();
            let said = oauth_error(&body, client);
            tracing::warn!(connector = %self.connector, %origin, status = status.as_u16(), error = said.as_ref().map(|(code, _)| code.as_str()), "OAuth2 token request refused");
            let mut message =
                format!("OAuth2 token request to {origin} was refused with status {status}");
            if let Some((code, description)) = &said {
                message.push_str(&format!(": {code}"));
                if let Some(description) = description {
                    message.push_str(&format!(" ({description})"));
                }
            }
            let credentials = status == reqwest::StatusCode::UNAUTHORIZED
                || said
                    .as_ref()
                    .is_some_and(|(code, _)| CREDENTIAL_ERRORS.contains(&code.as_str()));
            return Err(if credentials {
                message.push_str("; the link stops until the client credentials are fixed");
                TokenError::Refused(message)
            } else {
                TokenError::Other(message)
            });
        }
        let body = read_capped(&mut response, self.max_body, &origin)
            .await
            .map_err(TokenError::Other)?;
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            access_token: String,
            expires_in: Option<u64>,
        }
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
            TokenError::Other(format!("OAuth2 token response from {origin} is not a token (expected JSON with `access_token`)"))
        })?;
        if parsed.access_token.is_empty() {
            return Err(TokenError::Other(format!(
                "OAuth2 token response from {origin} has an empty `access_token`"
            )));
        }
        // Renew a little before the server's expiry; without one, after a minute.
        let lifetime = match parsed.expires_in {
            Some(s) if s > 60 => s - 30,
            Some(s) => s / 2,
            None => 60,
        };
        tracing::debug!(connector = %self.connector, %origin, lifetime, "OAuth2 token fetched");
        Ok(AccessToken {
            token: Secret::sealed(parsed.access_token),
            renew_at: requested + Duration::from_secs(lifetime),
        })
    }
}

/// Why a token request failed.
enum TokenError {
    /// The endpoint refused the client's credentials or registration.
    Refused(String),
    /// Anything else (network, a malformed answer): the call may retry.
    Other(String),
}

/// The `error` code and `error_description` of an OAuth2 error response
/// (RFC 6749 section 5.2), cut short and with the client's secret and id
/// removed should the server echo them.
fn oauth_error(body: &[u8], client: &OAuth2Client) -> Option<(String, Option<String>)> {
    #[derive(serde::Deserialize)]
    struct ErrorResponse {
        error: String,
        error_description: Option<String>,
    }
    let parsed: ErrorResponse = serde_json::from_slice(body).ok()?;
    let clean = |text: &str| {
        let mut text: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
        for secret in [&client.client_secret, &client.client_id] {
            if secret.expose().len() >= 4 {
                text = text.replace(secret.expose(), "[redacted]");
            }
        }
        text
    };
    Some((
        clean(&parsed.error),
        parsed.error_description.as_deref().map(clean),
    ))
}

/// Read a response body as it came (before any decoding), refusing one
/// larger than `max` bytes.
async fn read_capped(
    response: &mut reqwest::Response,
    max: usize,
    origin: &str,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        format!(
            "reading response from {origin} failed: {}",
            describe(e, Sender::Plugin)
        )
    })? {
        if body.len() + chunk.len() > max {
            return Err(format!(
                "response from {origin} exceeds the limit `max_response_kib` of {} KiB",
                max >> 10
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Replaces every spelling of every sealed value with `[redacted]`, in one
/// pass, leftmost-longest, ignoring ASCII case (which covers escapes with
/// upper, lower or mixed-case hex digits, at the cost of also redacting a
/// case variant of a secret).
struct Redactor(Option<aho_corasick::AhoCorasick>);

impl Redactor {
    fn new(forms: &[String]) -> Result<Redactor, String> {
        // An empty pattern would match between every two bytes.
        let forms: Vec<&String> = forms.iter().filter(|f| !f.is_empty()).collect();
        if forms.is_empty() {
            return Ok(Redactor(None));
        }
        aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(forms)
            .map(|a| Redactor(Some(a)))
            .map_err(|e| format!("redaction could not be prepared ({e})"))
    }

    fn bytes(&self, haystack: &[u8]) -> Vec<u8> {
        match &self.0 {
            Some(a) => a.replace_all_bytes(haystack, &vec![REDACTED; a.patterns_len()]),
            None => haystack.to_vec(),
        }
    }

    fn text(&self, haystack: &str) -> String {
        match &self.0 {
            Some(a) => a.replace_all(haystack, &vec![REDACTED; a.patterns_len()]),
            None => haystack.to_owned(),
        }
    }
}

impl Host for HostState {
    async fn send(&mut self, request: Request) -> wasmtime::Result<Result<Response, String>> {
        self.host_call()?;
        Ok(self.http.send(request).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_every_occurrence_in_any_case() {
        let redactor = Redactor::new(&["abc123".to_owned(), "abc123abc".to_owned()]).unwrap();
        assert_eq!(
            redactor.bytes(b"token=abc123&echo=ABC123abc12&x=abc12"),
            b"token=[redacted]&echo=[redacted]12&x=abc12".to_vec()
        );
        let none = Redactor::new(&[String::new()]).unwrap();
        assert_eq!(none.text("abc123"), "abc123");
    }

    #[test]
    fn internal_addresses_are_recognised() {
        for (ip, kind) in [
            ("127.0.0.1", "loopback"),
            ("127.9.9.9", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "cloud-metadata"),
            ("169.254.1.1", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00:ec2::254", "private"),
            ("fe80::1", "link-local"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "cloud-metadata"),
        ] {
            assert_eq!(internal(ip.parse().unwrap()), Some(kind), "{ip}");
        }
        for ip in ["93.184.216.34", "172.32.0.1", "2606:4700::1111", "8.8.8.8"] {
            assert_eq!(internal(ip.parse().unwrap()), None, "{ip}");
        }
    }

    /// IPv6 forms that lead to an IPv4 address are refused as that IPv4
    /// address is; the same forms of a public address are not.
    #[test]
    fn ipv6_forms_embedding_ipv4_are_judged_by_the_ipv4_address() {
        for (form, ip, kind) in [
            ("IPv4-mapped", "::ffff:10.0.0.1", Some("private")),
            ("IPv4-mapped", "::ffff:8.8.8.8", None),
            ("IPv4-compatible", "::127.0.0.1", Some("loopback")),
            (
                "IPv4-compatible",
                "::169.254.169.254",
                Some("cloud-metadata"),
            ),
            ("IPv4-compatible", "::192.168.0.1", Some("private")),
            ("IPv4-compatible", "::0.0.0.2", Some("unspecified")),
            ("IPv4-compatible", "::8.8.8.8", None),
            ("NAT64", "64:ff9b::127.0.0.1", Some("loopback")),
            ("NAT64", "64:ff9b::a9fe:a9fe", Some("cloud-metadata")),
            ("NAT64", "64:ff9b::10.1.2.3", Some("private")),
            ("NAT64", "64:ff9b::169.254.3.4", Some("link-local")),
            ("NAT64", "64:ff9b::8.8.8.8", None),
            ("NAT64 local-use", "64:ff9b:1::8.8.8.8", Some("private")),
            ("6to4", "2002:7f00:1::1", Some("loopback")),
            ("6to4", "2002:a9fe:a9fe::", Some("cloud-metadata")),
            ("6to4", "2002:c0a8:101::1", Some("private")),
            ("6to4", "2002:808:808::1", None),
            // Teredo: server 65.54.227.120, client 127.0.0.1 (inverted).
            (
                "Teredo",
                "2001:0:4136:e378:8000:63bf:80ff:fffe",
                Some("loopback"),
            ),
            // Teredo: client 169.254.169.254 inverted is 5601:5601.
            (
                "Teredo",
                "2001:0:4136:e378:0:0:5601:5601",
                Some("cloud-metadata"),
            ),
            // Teredo: client 10.0.0.1 inverted is f5ff:fffe.
            ("Teredo", "2001::f5ff:fffe", Some("private")),
            // Teredo: server 65.54.227.120, client 8.8.8.8.
            ("Teredo", "2001:0:4136:e378:0:0:f7f7:f7f7", None),
            ("site-local", "fec0::1", Some("site-local")),
        ] {
            assert_eq!(internal(ip.parse().unwrap()), kind, "{form} {ip}");
        }
    }

    #[test]
    fn a_credential_is_injected_only_for_the_origins_named_for_it() {
        let origin = |o: &str| Origin::parse(o).unwrap();
        let egress = Egress::new(
            vec![
                origin("https://*.acme.example"),
                origin("https://api.vendor.example"),
            ],
            vec![
                origin("https://api.vendor.example"),
                origin("https://login.acme.example"),
            ],
            Some(Credential::Bearer(Secret::sealed("t".into()))),
            Arc::default(),
        );
        for (url, injected) in [
            ("https://api.vendor.example/v1", true),
            ("https://login.acme.example/token", true),
            // Allowed by the wildcard, but not named for the credential.
            ("https://evil.acme.example/steal", false),
            ("https://api.vendor.example:8443/v1", false),
            ("http://api.vendor.example/v1", false),
        ] {
            let url = url::Url::parse(url).unwrap();
            assert_eq!(egress.injects_into(&url), injected, "{url}");
        }
        let without = Egress::new(
            vec![origin("https://api.vendor.example")],
            vec![origin("https://api.vendor.example")],
            None,
            Arc::default(),
        );
        assert!(!without.injects_into(&url::Url::parse("https://api.vendor.example/").unwrap()));
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_by_the_resolver() {
        use reqwest::dns::Resolve;
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let Err(error) = PublicOnly.resolve(name).await else {
            panic!("localhost resolved to something public");
        };
        let refused = error
            .downcast_ref::<AddressRefused>()
            .expect("an address refusal");
        assert_eq!(refused.kind, "loopback");
    }
}
