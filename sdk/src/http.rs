//! HTTP through the host, and what HTTP failures mean for the host.
//!
//! Requests go out through the host's `http` import: the host checks the
//! origin against the connector's allowlist, adds the credentials bound to
//! that origin (the plugin never sees them), and enforces timeouts and size
//! limits.
//!
//! ```ignore
//! let users: Vec<User> = Request::get(format!("{base}/users"))
//!     .query("page", "2")
//!     .send()?
//!     .error_for_status()?
//!     .json()?;
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::__private::base::switchyard::connector::http as imports;
use crate::ConnectorError;

/// An outgoing HTTP request, built step by step and sent with [`Request::send`].
#[derive(Clone, Debug)]
pub struct Request {
    method: String,
    url: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    /// A request with any method.
    pub fn new(method: &str, url: impl Into<String>) -> Self {
        Request {
            method: method.to_ascii_uppercase(),
            url: url.into(),
            query: Vec::new(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }
    /// A `POST` request.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new("POST", url)
    }
    /// A `PUT` request.
    pub fn put(url: impl Into<String>) -> Self {
        Self::new("PUT", url)
    }

    /// Append a query parameter (percent-encoded).
    pub fn query(mut self, name: &str, value: impl AsRef<str>) -> Self {
        self.query
            .push((name.to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Add a request header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Set a JSON body and its content type.
    pub fn json<T: Serialize + ?Sized>(mut self, body: &T) -> Result<Self, ConnectorError> {
        self.body = serde_json::to_vec(body)
            .map_err(|e| ConnectorError::Rejected(format!("cannot encode JSON body: {e}")))?;
        Ok(self.header("content-type", "application/json"))
    }

    /// Set an `application/x-www-form-urlencoded` body from name/value pairs.
    pub fn form<K: AsRef<str>, V: AsRef<str>>(mut self, pairs: &[(K, V)]) -> Self {
        let mut encoder = form_urlencoded::Serializer::new(String::new());
        for (name, value) in pairs {
            encoder.append_pair(name.as_ref(), value.as_ref());
        }
        self.body = encoder.finish().into_bytes();
        self.header("content-type", "application/x-www-form-urlencoded")
    }

    /// The full URL, query parameters included.
    pub fn url(&self) -> String {
        if self.query.is_empty() {
            return self.url.clone();
        }
        let mut encoder = form_urlencoded::Serializer::new(String::new());
        for (name, value) in &self.query {
            encoder.append_pair(name, value);
        }
        let separator = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{separator}{}", self.url, encoder.finish())
    }

    /// Send the request through the host. A request that got no response
    /// (origin not allowed, connection failure, timeout, limit) is a
    /// `transient` error carrying the host's reason; an HTTP error status is
    /// not an error here: see [`Response::error_for_status`].
    pub fn send(self) -> Result<Response, ConnectorError> {
        let url = self.url();
        let request = imports::Request {
            method: self.method,
            url,
            headers: self.headers,
            body: self.body,
        };
        imports::send(&request)
            .map(|r| Response {
                status: r.status,
                headers: r.headers,
                body: r.body,
            })
            .map_err(ConnectorError::Transient)
    }
}

/// A response received through the host.
#[derive(Clone, Debug)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// True for 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text (lossy UTF-8), for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Decode the body as JSON. A body that does not decode is `transient`:
    /// vendors answer with HTML error pages from proxies and load balancers.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ConnectorError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            ConnectorError::Transient(format!(
                "cannot decode JSON response (HTTP {}): {e}; body starts: {}",
                self.status,
                snippet(&self.text())
            ))
        })
    }

    /// Keep a 2xx response; turn any other status into the error that tells
    /// the host what to do (see [`status_error`]).
    pub fn error_for_status(self) -> Result<Response, ConnectorError> {
        if self.is_success() {
            Ok(self)
        } else {
            Err(status_error(&self))
        }
    }
}

/// What an HTTP error status means for the host:
///
/// - 429 and 503: `rate-limited`, with the `Retry-After` seconds when given;
/// - 401 and 403: `unauthorized` (stop, alert; retrying will not help);
/// - 408 and other 5xx: `transient`;
/// - other 4xx: `rejected` (this record was refused).
pub fn status_error(response: &Response) -> ConnectorError {
    let status = response.status;
    let detail = format!("HTTP {status}: {}", snippet(&response.text()));
    match status {
        429 | 503 => {
            ConnectorError::RateLimited(response.header("retry-after").and_then(parse_retry_after))
        }
        401 | 403 => ConnectorError::Unauthorized(detail),
        408 | 500..=599 => ConnectorError::Transient(detail),
        _ => ConnectorError::Rejected(detail),
    }
}

/// Retry-After as delta-seconds. The HTTP-date form gives `None` (the host
/// then backs off on its own): a plugin has no trustworthy clock.
pub fn parse_retry_after(value: &str) -> Option<u32> {
    value.trim().parse().ok()
}

/// The first 200 characters of `text`, for error messages.
pub fn snippet(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}
