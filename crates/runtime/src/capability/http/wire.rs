//! The plugin's request record into an HTTP request, and an HTTP response's
//! headers back into the plugin's record: pure functions (no network), with
//! every limit on what a plugin sends or receives, so that they can be
//! fuzzed (`cargo test -p switchyard-runtime fuzz`; see the README for long
//! runs). Nothing here may panic, whatever the input.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::decode;
use crate::bindings::hris::switchyard::connector::http::Request;

/// Most headers in a request or a response.
pub const MAX_HEADERS: usize = 100;

/// Most bytes of headers (names, values and 4 bytes of separators each, as
/// on the wire) in a request or a response.
pub const MAX_HEADER_BYTES: usize = 64 << 10;

/// Headers the host controls; the plugin's are dropped. `accept-encoding`
/// and `te` because the host owns content negotiation (see `decode`).
pub const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "connection",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-connection",
    "keep-alive",
    "accept-encoding",
    "te",
];

/// Why a plugin's request was refused before anything was sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    /// The URL does not parse.
    #[error("invalid URL `{url}`: {reason}")]
    Url {
        /// The start of the URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// Not http or https.
    #[error("scheme `{0}` is not allowed")]
    Scheme(String),
    /// `user:pass@` in the URL.
    #[error("credentials in the URL are not allowed")]
    UserInfo,
    /// Not one of the methods a connector needs.
    #[error("method `{0}` is not allowed")]
    Method(String),
    /// More than [`MAX_HEADERS`] headers.
    #[error("{count} headers exceed the limit of {MAX_HEADERS} headers per request")]
    TooManyHeaders {
        /// Headers the plugin sent.
        count: usize,
    },
    /// More than [`MAX_HEADER_BYTES`] of headers.
    #[error(
        "{} KiB of headers exceed the limit of {} KiB of headers per request",
        .bytes >> 10,
        MAX_HEADER_BYTES >> 10
    )]
    HeaderBytes {
        /// Header bytes the plugin sent.
        bytes: usize,
    },
    /// Not a valid header name (RFC 9110 token).
    #[error("header name `{0}` is not a valid HTTP header name")]
    HeaderName(String),
    /// A header value with a control character (CR, LF, NUL...).
    #[error("the value of header `{0}` is not a valid HTTP header value")]
    HeaderValue(String),
    /// URL, headers and body together over `max_request_kib`.
    #[error(
        "request of {} KiB (URL, headers and body) exceeds the limit `max_request_kib` of {} KiB",
        .bytes >> 10,
        .limit >> 10
    )]
    TooLarge {
        /// Bytes of the request.
        bytes: usize,
        /// The limit in bytes.
        limit: usize,
    },
}

/// A request ready to send, before the credential is injected.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Method.
    pub method: reqwest::Method,
    /// URL as the plugin wrote it (checked by [`target`]).
    pub url: url::Url,
    /// The plugin's headers, less the reserved and credential-owned ones,
    /// plus the host's `Accept-Encoding`.
    pub headers: HeaderMap,
    /// Body.
    pub body: Vec<u8>,
}

/// At most 40 characters of `text`, for messages.
fn snippet(text: &str) -> String {
    let mut out: String = text.chars().take(40).collect();
    if out.len() < text.len() {
        out.push_str("...");
    }
    out
}

/// Parse the plugin's URL: http(s), no credentials in it.
pub fn target(url: &str) -> Result<url::Url, Refusal> {
    let parsed = url::Url::parse(url).map_err(|e| Refusal::Url {
        url: snippet(url),
        reason: e.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Refusal::Scheme(snippet(parsed.scheme())));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Refusal::UserInfo);
    }
    Ok(parsed)
}

/// Bytes `headers` take on the wire (`name: value\r\n`).
fn header_bytes<'a>(headers: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> usize {
    headers.fold(0usize, |sum, (name, value)| {
        sum.saturating_add(name.len())
            .saturating_add(value.len())
            .saturating_add(4)
    })
}

/// The plugin's request as the host will send it to `url`: method checked,
/// headers counted, measured and validated, the reserved ones and `owned`
/// (the header the credential sets, lower case) dropped, and the whole
/// request measured against `max_request_bytes`.
pub fn convert(
    request: &Request,
    url: url::Url,
    owned: Option<&str>,
    max_request_bytes: usize,
) -> Result<Outgoing, Refusal> {
    let method = match request.method.to_ascii_uppercase().as_str() {
        "GET" => reqwest::Method::GET,
        "HEAD" => reqwest::Method::HEAD,
        "POST" => reqwest::Method::POST,
        "PUT" => reqwest::Method::PUT,
        "PATCH" => reqwest::Method::PATCH,
        "DELETE" => reqwest::Method::DELETE,
        _ => return Err(Refusal::Method(snippet(&request.method))),
    };
    if request.headers.len() > MAX_HEADERS {
        return Err(Refusal::TooManyHeaders {
            count: request.headers.len(),
        });
    }
    let bytes = header_bytes(
        request
            .headers
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes())),
    );
    if bytes > MAX_HEADER_BYTES {
        return Err(Refusal::HeaderBytes { bytes });
    }
    let total = bytes
        .saturating_add(request.url.len())
        .saturating_add(request.body.len());
    if total > max_request_bytes {
        return Err(Refusal::TooLarge {
            bytes: total,
            limit: max_request_bytes,
        });
    }
    let mut headers = HeaderMap::new();
    for (name, value) in &request.headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Refusal::HeaderName(snippet(name)))?;
        if RESERVED_HEADERS.contains(&header.as_str()) || Some(header.as_str()) == owned {
            continue;
        }
        let value = HeaderValue::from_bytes(value.as_bytes())
            .map_err(|_| Refusal::HeaderValue(snippet(name)))?;
        headers
            .try_append(header, value)
            .map_err(|_| Refusal::TooManyHeaders {
                count: request.headers.len(),
            })?;
    }
    headers
        .try_insert(
            reqwest::header::ACCEPT_ENCODING,
            HeaderValue::from_static(decode::ACCEPT_ENCODING),
        )
        .map_err(|_| Refusal::TooManyHeaders {
            count: request.headers.len(),
        })?;
    Ok(Outgoing {
        method,
        url,
        headers,
        body: request.body.clone(),
    })
}

/// Why a response was not handed to the plugin because of its headers.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResponseRefusal {
    /// More than [`MAX_HEADERS`] headers.
    #[error("it has {0} headers, more than the limit of {MAX_HEADERS}")]
    TooManyHeaders(usize),
    /// More than [`MAX_HEADER_BYTES`] of headers.
    #[error(
        "it has {} KiB of headers, more than the limit of {} KiB",
        .0 >> 10,
        MAX_HEADER_BYTES >> 10
    )]
    HeaderBytes(usize),
}

/// A response's headers as the plugin gets them, counted and measured;
/// when the host `decoded` the body, without the `Content-Encoding` and
/// `Content-Length` that described the coded one.
pub fn response_headers(
    headers: &HeaderMap,
    decoded: bool,
) -> Result<Vec<(String, String)>, ResponseRefusal> {
    if headers.len() > MAX_HEADERS {
        return Err(ResponseRefusal::TooManyHeaders(headers.len()));
    }
    let bytes = header_bytes(
        headers
            .iter()
            .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes())),
    );
    if bytes > MAX_HEADER_BYTES {
        return Err(ResponseRefusal::HeaderBytes(bytes));
    }
    Ok(headers
        .iter()
        .filter(|(k, _)| {
            !(decoded
                && (*k == reqwest::header::CONTENT_ENCODING
                    || *k == reqwest::header::CONTENT_LENGTH))
        })
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn request(method: &str, url: &str, headers: Vec<(String, String)>, body: Vec<u8>) -> Request {
        Request {
            method: method.to_owned(),
            url: url.to_owned(),
            headers,
            body,
        }
    }

    fn send(r: &Request, max: usize) -> Result<Outgoing, Refusal> {
        convert(r, target(&r.url)?, Some("authorization"), max)
    }

    #[test]
    fn header_limits_are_refusals_naming_the_limit() {
        // 40,000 distinct names: over the http crate's 32,768 (a panic there).
        let many: Vec<(String, String)> = (0..40_000)
            .map(|i| (format!("x-h{i}"), "v".to_owned()))
            .collect();
        let err = send(&request("GET", "https://a.example/", many, vec![]), 1 << 30).unwrap_err();
        assert_eq!(err, Refusal::TooManyHeaders { count: 40_000 });
        assert!(err.to_string().contains("limit of 100 headers"), "{err}");

        let big = vec![("x-big".to_owned(), "v".repeat(70 << 10))];
        let err = send(&request("GET", "https://a.example/", big, vec![]), 1 << 30).unwrap_err();
        assert!(matches!(err, Refusal::HeaderBytes { .. }), "{err}");

        // Headers count in `max_request_kib`.
        let some = vec![("x-some".to_owned(), "v".repeat(3 << 10))];
        let err = send(&request("GET", "https://a.example/", some, vec![]), 2 << 10).unwrap_err();
        assert!(
            err.to_string().contains("`max_request_kib` of 2 KiB"),
            "{err}"
        );

        for (name, value) in [("bad name", "v"), ("", "v"), ("x-ok", "a\r\nInjected: yes")] {
            let headers = vec![(name.to_owned(), value.to_owned())];
            let err = send(
                &request("GET", "https://a.example/", headers, vec![]),
                1 << 20,
            );
            assert!(
                matches!(err, Err(Refusal::HeaderName(_) | Refusal::HeaderValue(_))),
                "{name:?}: {err:?}"
            );
        }
    }

    #[test]
    fn the_plugin_does_not_negotiate_content_or_set_reserved_headers() {
        let headers = vec![
            ("Accept-Encoding".to_owned(), "identity".to_owned()),
            ("TE".to_owned(), "gzip".to_owned()),
            ("Authorization".to_owned(), "Bearer mine".to_owned()),
            ("Host".to_owned(), "elsewhere".to_owned()),
            ("X-Kept".to_owned(), "yes".to_owned()),
        ];
        let out = send(
            &request("get", "https://a.example/", headers, vec![]),
            1 << 20,
        )
        .unwrap();
        assert_eq!(out.method, reqwest::Method::GET);
        let names: Vec<&str> = out.headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, vec!["x-kept", "accept-encoding"]);
        assert_eq!(out.headers["accept-encoding"], decode::ACCEPT_ENCODING);
    }

    #[test]
    fn response_header_limits() {
        let mut many = HeaderMap::new();
        for i in 0..150 {
            many.append(
                HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        assert_eq!(
            response_headers(&many, false),
            Err(ResponseRefusal::TooManyHeaders(150))
        );
        let mut coded = HeaderMap::new();
        coded.insert("content-encoding", HeaderValue::from_static("gzip"));
        coded.insert("content-length", HeaderValue::from_static("12"));
        coded.insert("x-kept", HeaderValue::from_static("1"));
        assert_eq!(
            response_headers(&coded, true).unwrap(),
            vec![("x-kept".to_owned(), "1".to_owned())]
        );
    }

    fn header_list() -> impl Strategy<Value = Vec<(String, String)>> {
        let name = prop_oneof![
            "[a-zA-Z0-9-]{1,20}",
            ".{0,20}",
            Just("accept-encoding".to_owned()),
            Just("content-length".to_owned()),
            Just("Authorization".to_owned()),
        ];
        let value = prop_oneof![".{0,40}", "[ -~]{0,200}", Just("\r\n".to_owned())];
        prop::collection::vec((name, value), 0..150)
    }

    fn url() -> impl Strategy<Value = String> {
        prop_oneof![
            ".{0,60}",
            "(https?|ftp|file|data)://[a-z0-9.:@\\[\\]%-]{0,30}(/[ -~]{0,30})?",
            Just("https://user:pass@a.example/".to_owned()),
            Just("http://[::ffff:127.0.0.1]:80/x".to_owned()),
        ]
    }

    proptest! {
        /// Fuzz of the request conversion: arbitrary methods, URLs, header
        /// lists and bodies never panic, and whatever is accepted keeps the
        /// limits. `PROPTEST_CASES=100000 cargo test -p switchyard-runtime
        /// fuzz` for a long run.
        #[test]
        fn fuzz_request_conversion_never_panics(
            method in prop_oneof![".{0,8}", "(get|GET|Post|PUT|patch|DELETE|head|OPTIONS|trace|connect)"],
            url in url(),
            headers in header_list(),
            body in prop::collection::vec(any::<u8>(), 0..2048),
            max in 0usize..(128 << 10),
        ) {
            let r = request(&method, &url, headers, body);
            if let Ok(out) = send(&r, max) {
                prop_assert!(out.headers.len() <= MAX_HEADERS + 1);
                prop_assert!(r.body.len() <= max);
                prop_assert!(!out.headers.contains_key("authorization"));
                prop_assert_eq!(out.headers.get_all("accept-encoding").iter().count(), 1);
                prop_assert!(matches!(out.url.scheme(), "http" | "https"));
            }
        }

        /// Fuzz of the response side: arbitrary header maps never panic.
        #[test]
        fn fuzz_response_headers_never_panic(
            headers in prop::collection::vec(("[a-z0-9-]{1,12}", "[ -~]{0,2000}"), 0..160),
            decoded in any::<bool>(),
        ) {
            let mut map = HeaderMap::new();
            for (k, v) in &headers {
                if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
                    map.append(k, v);
                }
            }
            let _ = response_headers(&map, decoded);
            let _ = decode::codings(&map);
        }
    }
}
