//! The `http` import: the only way out of the sandbox.
//!
//! Every request is checked against the connector's allowed origins (denied
//! by default), counted against the per-call limit, sent by the host's shared
//! client with a timeout, and read with a size cap. The connector's
//! credential is injected here, at the network boundary, and every sealed
//! credential value is redacted from the response before the plugin sees it.
//! Redirects are not followed: the plugin sees the 3xx and must send a new
//! request, which passes the same checks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Limits, Origin};
use crate::runtime::HostState;
use crate::runtime::bindings::hris::switchyard::connector::http::{Host, Request, Response};
use crate::secrets::Credential;

/// What a connector may reach, and the credential bound to those origins.
#[derive(Debug)]
pub struct Egress {
    /// Allowed origins.
    pub allow: Vec<Origin>,
    /// Injected into requests to allowed origins.
    pub credential: Option<Credential>,
}

/// Per-call HTTP state.
pub struct HttpState {
    client: reqwest::Client,
    egress: Arc<Egress>,
    connector: String,
    requests: u32,
    max_requests: u32,
    max_body: usize,
    timeout: Duration,
}

/// Headers the host controls.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "connection",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

const REDACTED: &[u8] = b"[redacted]";

impl HttpState {
    /// State for one call.
    pub fn new(client: reqwest::Client, egress: Arc<Egress>, limits: &Limits, connector: &str) -> Self {
        HttpState {
            client,
            egress,
            connector: connector.to_owned(),
            requests: 0,
            max_requests: limits.max_requests,
            max_body: (limits.max_response_kib as usize) << 10,
            timeout: Duration::from_millis(limits.http_timeout_ms),
        }
    }

    /// Check, send, read, redact. `Err` carries a message for the plugin;
    /// it never contains a credential.
    pub async fn send(&mut self, request: Request) -> Result<Response, String> {
        let mut url = url::Url::parse(&request.url)
            .map_err(|e| format!("invalid URL `{}`: {e}", request.url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("scheme `{}` is not allowed", url.scheme()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("credentials in the URL are not allowed".into());
        }
        let origin = format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().unwrap_or(""),
            url.port_or_known_default().unwrap_or(0)
        );
        if !self.egress.allow.iter().any(|o| o.matches(&url)) {
            tracing::warn!(connector = %self.connector, %origin, "egress denied");
            return Err(format!(
                "egress to {origin} is not allowed for connector `{}`",
                self.connector
            ));
        }
        self.requests += 1;
        if self.requests > self.max_requests {
            return Err(format!(
                "limit of {} HTTP requests per call reached",
                self.max_requests
            ));
        }
        let method = match request.method.to_ascii_uppercase().as_str() {
            m @ ("GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE") => {
                reqwest::Method::from_bytes(m.as_bytes()).map_err(|e| e.to_string())?
            }
            other => return Err(format!("method `{other}` is not allowed")),
        };

        let credential = self.egress.credential.as_ref();
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
        let path = url.path().to_owned();
        let mut builder = self.client.request(method.clone(), url).timeout(self.timeout);
        for (name, value) in &request.headers {
            let lower = name.to_ascii_lowercase();
            let owned_by_credential = match credential {
                Some(Credential::Basic { .. } | Credential::Bearer(_)) => lower == "authorization",
                Some(Credential::Header { name, .. }) => lower == name.to_ascii_lowercase(),
                _ => false,
            };
            if RESERVED_HEADERS.contains(&lower.as_str()) || owned_by_credential {
                continue;
            }
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder = match credential {
            Some(Credential::Basic { username, password }) => {
                builder.basic_auth(username.expose(), Some(password.expose()))
            }
            Some(Credential::Bearer(token)) => builder.bearer_auth(token.expose()),
            Some(Credential::Header { name, value }) => builder.header(name.as_str(), value.expose()),
            _ => builder,
        };
        if !request.body.is_empty() {
            builder = builder.body(request.body);
        }

        let started = Instant::now();
        let mut response = builder
            .send()
            .await
            // `without_url`: the URL may carry a query-parameter credential.
            .map_err(|e| format!("request to {origin} failed: {}", e.without_url()))?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("reading response from {origin} failed: {}", e.without_url()))?
        {
            if body.len() + chunk.len() > self.max_body {
                return Err(format!(
                    "response from {origin} exceeds the limit of {} KiB",
                    self.max_body >> 10
                ));
            }
            body.extend_from_slice(&chunk);
        }
        tracing::debug!(
            connector = %self.connector,
            method = %method,
            %origin,
            path,
            status,
            bytes = body.len(),
            ms = started.elapsed().as_millis() as u64,
            "http"
        );
        let mut headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        if let Some(credential) = credential {
            for form in credential.revealing_forms() {
                redact(&mut body, form.as_bytes());
                for (_, value) in &mut headers {
                    if value.contains(&form) {
                        *value = value.replace(&form, "[redacted]");
                    }
                }
            }
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// Replace every occurrence of `needle` in `haystack` with `[redacted]`.
fn redact(haystack: &mut Vec<u8>, needle: &[u8]) {
    if needle.is_empty() || haystack.len() < needle.len() {
        return;
    }
    if !haystack.windows(needle.len()).any(|w| w == needle) {
        return;
    }
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(REDACTED);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    *haystack = out;
}

impl Host for HostState {
    async fn send(&mut self, request: Request) -> wasmtime::Result<Result<Response, String>> {
        Ok(self.http.send(request).await)
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_every_occurrence() {
        let mut body = b"token=abc123&echo=abc123abc12".to_vec();
        redact(&mut body, b"abc123");
        assert_eq!(body, b"token=[redacted]&echo=[redacted]abc12".to_vec());
    }
}
