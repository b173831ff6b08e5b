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
    /// A `PATCH` request.
    pub fn patch(url: impl Into<String>) -> Self {
        Self::new("PATCH", url)
    }
    /// A `DELETE` request.
    pub fn delete(url: impl Into<String>) -> Self {
        Self::new("DELETE", url)
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

    /// Set a JSON body and its content type (`application/json`).
    pub fn json<T: Serialize + ?Sized>(self, body: &T) -> Result<Self, ConnectorError> {
        self.json_as(body, "application/json")
    }

    /// Set a JSON body sent with another content type, such as SCIM's
    /// `application/scim+json`.
    pub fn json_as<T: Serialize + ?Sized>(
        self,
        body: &T,
        content_type: &str,
    ) -> Result<Self, ConnectorError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| ConnectorError::Rejected(format!("cannot encode JSON body: {e}")))?;
        Ok(self.body(bytes, content_type))
    }

    /// Set a raw body and its content type (replacing any set before).
    pub fn body(mut self, bytes: impl Into<Vec<u8>>, content_type: &str) -> Self {
        self.body = bytes.into();
        self.headers
            .retain(|(name, _)| !name.eq_ignore_ascii_case("content-type"));
        self.header("content-type", content_type)
    }

    /// Set an `application/x-www-form-urlencoded` body from name/value pairs.
    pub fn form<K: AsRef<str>, V: AsRef<str>>(self, pairs: &[(K, V)]) -> Self {
        let mut encoder = form_urlencoded::Serializer::new(String::new());
        for (name, value) in pairs {
            encoder.append_pair(name.as_ref(), value.as_ref());
        }
        let body = encoder.finish().into_bytes();
        self.body(body, "application/x-www-form-urlencoded")
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
        crate::host::send(self.method, url, self.headers, self.body)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_delete_and_a_body_with_its_own_content_type() {
        let patch = Request::patch("https://lms.example/scim/v2/Groups/7")
            .json_as(
                &serde_json::json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"]}),
                "application/scim+json",
            )
            .unwrap();
        assert_eq!(patch.method, "PATCH");
        assert_eq!(
            patch.headers,
            [(
                "content-type".to_owned(),
                "application/scim+json".to_owned()
            )]
        );
        assert!(patch.body.starts_with(b"{\"schemas\""));

        let delete = Request::delete("https://lms.example/scim/v2/Users/9").query("a b", "c&d");
        assert_eq!(delete.method, "DELETE");
        assert_eq!(
            delete.url(),
            "https://lms.example/scim/v2/Users/9?a+b=c%26d"
        );

        // A later body replaces the content type of an earlier one.
        let raw = Request::post("https://x.example")
            .header("Content-Type", "text/plain")
            .json(&1)
            .unwrap()
            .body(b"<a/>".to_vec(), "application/xml");
        assert_eq!(
            raw.headers,
            [("content-type".to_owned(), "application/xml".to_owned())]
        );
        assert_eq!(raw.body, b"<a/>");
    }
}
