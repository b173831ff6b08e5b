//! Containment, second pass (issue #12): content negotiation owned by the
//! host, redaction of every common spelling of a sealed value, credentials
//! bound to the origins named for them, header limits, and log forging.
//! Each test drives the real `hostile` plugin and asserts on the limit or
//! rule that stopped it.

use std::io::Write;

use super::*;

/// The echo of a request (method, URI, headers), as `echo_server` writes it.
fn echo_text(req: &axum::extract::Request) -> String {
    let headers: Vec<String> = req
        .headers()
        .iter()
        .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("")))
        .collect();
    format!("{} {}\n{}", req.method(), req.uri(), headers.join("\n"))
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(data).unwrap();
    }
    out
}

fn zstd(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

/// An echo that compresses its answer: in the coding named by the query
/// parameter `coding` (`gzip`, `deflate`, `br`, `zstd`, `gzip-twice`: two
/// `Content-Encoding: gzip` headers, `compress`: a coding nobody decodes),
/// else in the first coding of the request's `Accept-Encoding`. `/bomb` is
/// 32 MiB of zeros, gzipped to about 32 KiB.
async fn compressing_echo() -> String {
    use axum::extract::Request;
    use axum::http::header::{CONTENT_ENCODING, HeaderValue};
    use axum::response::IntoResponse;
    let bomb = Arc::new(gzip(&vec![0u8; 32 << 20]));
    let app = axum::Router::new().fallback(move |req: Request| {
        let bomb = bomb.clone();
        async move {
            let gz = HeaderValue::from_static("gzip");
            if req.uri().path() == "/bomb" {
                return ([(CONTENT_ENCODING, gz)], bomb.as_ref().clone()).into_response();
            }
            let asked = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("coding=")))
                .map(str::to_owned)
                .or_else(|| {
                    req.headers()
                        .get("accept-encoding")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.split(',').next())
                        .map(|v| v.trim().to_owned())
                })
                .unwrap_or_default();
            let text = echo_text(&req).into_bytes();
            let mut response = match asked.as_str() {
                "gzip" => gzip(&text).into_response(),
                "deflate" => zlib(&text).into_response(),
                "br" => brotli(&text).into_response(),
                "zstd" => zstd(&text).into_response(),
                "gzip-twice" => gzip(&gzip(&text)).into_response(),
                "compress" => text.into_response(),
                _ => return text.into_response(),
            };
            let headers = response.headers_mut();
            match asked.as_str() {
                "gzip-twice" => {
                    headers.append(CONTENT_ENCODING, gz.clone());
                    headers.append(CONTENT_ENCODING, gz);
                }
                other => {
                    headers.insert(CONTENT_ENCODING, HeaderValue::from_str(other).unwrap());
                }
            }
            response
        }
    });
    serve(app).await
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn sealed_file(dir: &std::path::Path, name: &str, value: &str) -> SecretSource {
    let path = dir.join(name);
    std::fs::write(&path, value).unwrap();
    SecretSource::Reference {
        secret: format!("file:{}", path.display()),
    }
}

const BEARER: &str = "bearer/s3cret+value=";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_owns_content_negotiation_and_redacts_the_decoded_body() {
    let runtime = Runtime::new().unwrap();
    let echo = compressing_echo().await;
    let dir = tempfile::tempdir().unwrap();
    let bearer = || {
        Some(AuthConfig::Bearer {
            token: sealed_file(dir.path(), "t", BEARER),
        })
    };

    // The plugin asks for gzip itself (`Accept-Encoding`, `TE`): the host
    // drops both, asks for what it decodes, and hands over the decoded,
    // redacted body without the `Content-Encoding` that no longer applies.
    let evil = hostile(
        &runtime,
        "negotiate",
        &format!("{echo}/anything"),
        Limits::default(),
        bearer(),
    );
    let seen = given_name(evil.fetch_employees(None).await);
    let (encoding, body) = seen.split_once('\n').unwrap();
    assert_eq!(encoding, "-", "decoded: {seen:?}");
    assert!(body.starts_with("GET /anything"), "{seen:?}");
    assert!(
        body.contains("accept-encoding: gzip, deflate, br, zstd"),
        "the host's negotiation: {body}"
    );
    assert!(!body.contains("te: "), "the plugin's TE is dropped: {body}");
    assert!(body.contains("authorization: [redacted]"), "{body}");
    assert!(!body.contains("s3cret"), "{body}");

    // Whatever the coding, stacked ones included.
    for coding in ["gzip", "deflate", "br", "zstd", "gzip-twice"] {
        let evil = hostile(
            &runtime,
            "fetch",
            &format!("{echo}/anything?coding={coding}"),
            Limits::default(),
            bearer(),
        );
        let seen = given_name(evil.fetch_employees(None).await);
        assert!(seen.starts_with("GET /anything"), "{coding}: {seen:?}");
        assert!(
            seen.contains("authorization: [redacted]"),
            "{coding}: {seen}"
        );
        assert!(!seen.contains("s3cret"), "{coding}: {seen}");
    }

    // A coding the host does not decode is refused, not passed on.
    let evil = hostile(
        &runtime,
        "fetch",
        &format!("{echo}/anything?coding=compress"),
        Limits::default(),
        bearer(),
    );
    let seen = given_name(evil.fetch_employees(None).await);
    assert!(
        seen.starts_with("refused: response from http://127.0.0.1:")
            && seen.contains("the coding `compress`, which the host does not decode"),
        "{seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decompression_bomb_stops_at_max_response_kib_of_decoded_bytes() {
    let runtime = Runtime::new().unwrap();
    let echo = compressing_echo().await;
    let limits = Limits {
        max_response_kib: 1024,
        ..Limits::default()
    };
    // About 32 KiB on the wire, well under the limit; 32 MiB decoded.
    let evil = hostile(&runtime, "fetch", &format!("{echo}/bomb"), limits, None);
    let seen = given_name(evil.fetch_employees(None).await);
    assert!(
        seen.contains("exceeds the limit `max_response_kib` of 1024 KiB once decoded"),
        "{seen}"
    );
}

// ---- spellings of a sealed value ----

fn b64(engine: &base64::engine::GeneralPurpose, s: &str) -> String {
    use base64::Engine as _;
    engine.encode(s)
}

fn percent_all(s: &str, upper: bool) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else if upper {
                format!("%{b:02X}")
            } else {
                format!("%{b:02x}")
            }
        })
        .collect()
}

fn json_every(s: &str, upper: bool) -> String {
    s.chars()
        .map(|c| {
            if upper {
                format!("\\u{:04X}", u32::from(c))
            } else {
                format!("\\u{:04x}", u32::from(c))
            }
        })
        .collect()
}

/// How an echo could spell `value` back: written here independently of
/// the host's list.
fn echo_spellings(value: &str) -> Vec<(&'static str, String)> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let std = b64(&STANDARD, value);
    vec![
        ("verbatim", value.to_owned()),
        ("base64", std.clone()),
        ("base64 without padding", b64(&STANDARD_NO_PAD, value)),
        ("base64 URL-safe", b64(&URL_SAFE, value)),
        (
            "base64 URL-safe without padding",
            b64(&URL_SAFE_NO_PAD, value),
        ),
        ("base64, padding as %3D", percent_all(&std, true)),
        ("base64, padding as %3d", percent_all(&std, false)),
        ("percent-encoded", percent_all(value, true)),
        ("percent-encoded, lower hex", percent_all(value, false)),
        (
            "form-encoded",
            url::form_urlencoded::byte_serialize(value.as_bytes()).collect(),
        ),
        ("JSON with \\/", value.replace('/', "\\/")),
        ("JSON, every char as \\u00XX", json_every(value, false)),
        (
            "JSON, every char as \\u00XX, upper",
            json_every(value, true),
        ),
        ("hex", hex::encode(value)),
        ("hex upper", hex::encode_upper(value)),
    ]
}

/// An echo that writes back what it was sent (the `Authorization`,
/// `x-api-key` and query values; for Basic, the pair and each part) in
/// every spelling of [`echo_spellings`], as a JSON document, and the
/// URL-safe base64 of the first of them in `Location` (a response header).
async fn spelling_echo() -> String {
    use axum::extract::Request;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let app = axum::Router::new().fallback(|req: Request| async move {
        let mut values: Vec<String> = Vec::new();
        if let Some(auth) = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
        {
            if let Some(token) = auth.strip_prefix("Bearer ") {
                values.push(token.to_owned());
            }
            if let Some(basic) = auth.strip_prefix("Basic ") {
                use base64::Engine as _;
                let pair = base64::engine::general_purpose::STANDARD
                    .decode(basic)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                if let Some((user, pass)) = pair.split_once(':') {
                    values.push(user.to_owned());
                    values.push(pass.to_owned());
                }
                values.push(pair);
            }
            values.push(auth.to_owned());
        }
        if let Some(key) = req.headers().get("x-api-key").and_then(|v| v.to_str().ok()) {
            values.push(key.to_owned());
        }
        let query = url::Url::parse(&format!("http://x{}", req.uri())).unwrap();
        values.extend(query.query_pairs().map(|(_, v)| v.into_owned()));
        let mut lines = Vec::new();
        for value in &values {
            for (how, spelling) in echo_spellings(value) {
                lines.push(serde_json::json!({ "how": how, "echo": spelling }).to_string());
                // And raw inside a JSON string, as a server that does not
                // escape would write it.
                lines.push(format!("{{\"raw\":\"{spelling}\"}}"));
            }
        }
        let location = format!(
            "https://elsewhere.example/?t={}",
            b64(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                values.first().map_or("", String::as_str)
            )
        );
        (
            StatusCode::FOUND,
            [("location", location)],
            lines.join("\n"),
        )
            .into_response()
    });
    serve(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_common_spelling_of_a_sealed_value_is_redacted_from_headers_and_body() {
    let runtime = Runtime::new().unwrap();
    let echo = spelling_echo().await;
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(AuthConfig, Vec<&str>)> = vec![
        (
            AuthConfig::Bearer {
                token: sealed_file(dir.path(), "t", BEARER),
            },
            vec![BEARER],
        ),
        (
            AuthConfig::Basic {
                username: sealed_file(dir.path(), "u", "basic-us3r"),
                password: sealed_file(dir.path(), "p", "p@ss/w0rd=?é"),
            },
            vec!["basic-us3r", "p@ss/w0rd=?é", "basic-us3r:p@ss/w0rd=?é"],
        ),
        (
            AuthConfig::Basic {
                username: sealed_file(dir.path(), "k", "bamboo-api-k3y"),
                password: SecretSource::Literal("x".into()),
            },
            vec!["bamboo-api-k3y", "bamboo-api-k3y:x"],
        ),
        (
            AuthConfig::Header {
                name: "x-api-key".into(),
                value: sealed_file(dir.path(), "h", "header+s3cret/value"),
            },
            vec!["header+s3cret/value"],
        ),
        (
            AuthConfig::Query {
                param: "wstoken".into(),
                value: sealed_file(dir.path(), "q", "query s3cret&value"),
            },
            vec!["query s3cret&value"],
        ),
    ];
    for (auth, secrets) in cases {
        let evil = hostile(
            &runtime,
            "fetch",
            &format!("{echo}/anything"),
            Limits::default(),
            Some(auth.clone()),
        );
        let seen = given_name(evil.fetch_employees(None).await);
        assert!(seen.contains("\"how\":\"verbatim\""), "echoed: {seen}");
        assert!(seen.contains("[redacted]"), "{seen}");
        for secret in &secrets {
            for (how, spelling) in echo_spellings(secret) {
                assert!(
                    !seen.contains(&spelling),
                    "{secret}: {how} `{spelling}` reached the plugin:\n{seen}"
                );
            }
        }
        // Response headers too.
        let evil = hostile(
            &runtime,
            "status",
            &format!("{echo}/anything"),
            Limits::default(),
            Some(auth),
        );
        let seen = given_name(evil.fetch_employees(None).await);
        assert_eq!(
            seen, "302 https://elsewhere.example/?t=[redacted]",
            "{secrets:?}"
        );
    }
}

// ---- credentials bound to origins ----

fn connector_with_origins(
    runtime: &Runtime,
    target: &str,
    allow: Vec<Origin>,
    credential_origins: Option<Vec<Origin>>,
    auth: AuthConfig,
) -> Connector {
    let plugin = Arc::new(
        runtime
            .load_plugin(&plugins::build("hostile").unwrap())
            .unwrap(),
    );
    let mut settings = BTreeMap::new();
    settings.insert("mode".to_owned(), "fetch".to_owned());
    settings.insert("target".to_owned(), target.to_owned());
    let config = ConnectorConfig {
        plugin: "hostile".into(),
        line: 0,
        optional: false,
        settings,
        allow,
        auth: Some(auth.clone()),
        credential_origins,
        limits: Limits::default(),
    };
    let credential = switchyard::secrets::resolve_credential(&auth, None).unwrap();
    runtime.connector("evil", &config.grants(), plugin, Some(credential))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_goes_only_to_the_origins_named_for_it() {
    let runtime = Runtime::new().unwrap();
    let vendor = echo_server().await;
    let other = echo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let allow = vec![origin_of(&vendor), origin_of(&other)];
    for auth in [
        AuthConfig::Bearer {
            token: sealed_file(dir.path(), "t", BEARER),
        },
        AuthConfig::Query {
            param: "wstoken".into(),
            value: sealed_file(dir.path(), "q", "query-s3cret"),
        },
    ] {
        for (target, receives) in [(&vendor, true), (&other, false)] {
            let evil = connector_with_origins(
                &runtime,
                &format!("{target}/anything"),
                allow.clone(),
                Some(vec![origin_of(&vendor)]),
                auth.clone(),
            );
            let seen = given_name(evil.fetch_employees(None).await);
            assert!(seen.starts_with("GET /anything"), "{seen}");
            assert_eq!(
                seen.contains("[redacted]"),
                receives,
                "the credential goes to {target} only if named for it: {seen}"
            );
            assert!(!seen.contains("s3cret"), "{seen}");
        }
    }
}

// ---- header limits ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_header_floods_are_refusals_naming_the_limit_not_a_panic() {
    let runtime = Runtime::new().unwrap();
    let echo = echo_server().await;
    let target = format!("{echo}/anything");
    let small = Limits {
        max_request_kib: 16,
        ..Limits::default()
    };
    for (count, bytes, extra, limits, expected) in [
        // 40,000 distinct names panicked the host (the http crate's
        // `HeaderMap` holds at most 32,768).
        (
            "40000",
            "1",
            "",
            Limits::default(),
            "40000 headers exceed the limit of 100 headers per request",
        ),
        (
            "50",
            "2048",
            "",
            Limits::default(),
            "exceed the limit of 64 KiB of headers per request",
        ),
        (
            "10",
            "2048",
            "",
            small,
            "exceeds the limit `max_request_kib` of 16 KiB",
        ),
        (
            "0",
            "0",
            "bad name: x",
            Limits::default(),
            "header name `bad name` is not a valid HTTP header name",
        ),
    ] {
        let evil = hostile_with(
            &runtime,
            "headers",
            &target,
            limits,
            None,
            &[("count", count), ("bytes", bytes), ("extra_header", extra)],
        );
        let seen = given_name(evil.fetch_employees(None).await);
        assert!(
            seen.starts_with("refused: ") && seen.contains(expected),
            "{count} x {bytes}: {seen}"
        );
    }
    // Within the limits the request goes out.
    let fine = hostile_with(
        &runtime,
        "headers",
        &target,
        Limits::default(),
        None,
        &[("count", "20"), ("bytes", "100")],
    );
    assert!(given_name(fine.fetch_employees(None).await).starts_with("GET /anything"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_with_too_many_header_bytes_is_refused() {
    use axum::response::IntoResponse;
    let runtime = Runtime::new().unwrap();
    let app = axum::Router::new().fallback(|| async {
        let mut response = "body".into_response();
        for i in 0..40 {
            response.headers_mut().insert(
                axum::http::HeaderName::from_bytes(format!("x-big-{i}").as_bytes()).unwrap(),
                axum::http::HeaderValue::from_str(&"v".repeat(2048)).unwrap(),
            );
        }
        response
    });
    let url = serve(app).await;
    let evil = hostile(
        &runtime,
        "fetch",
        &format!("{url}/x"),
        Limits::default(),
        None,
    );
    let seen = given_name(evil.fetch_employees(None).await);
    assert!(
        seen.contains("of headers, more than the limit of 64 KiB"),
        "{seen}"
    );
}

// ---- log forging ----

#[tokio::test(flavor = "current_thread")]
async fn plugin_log_text_cannot_forge_a_log_line_or_drive_the_terminal() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .fmt_fields(switchyard::telemetry::text_log_fields())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let runtime = Runtime::new().unwrap();
    let forged = "sync ok\n2026-01-01T00:00:00.000000Z  INFO switchyard: admin token rotated\r\x1b[2K\x1b]0;pwned\x07";
    for mode in ["log", "print"] {
        let evil = hostile_with(
            &runtime,
            mode,
            "",
            Limits::default(),
            None,
            &[("text", forged), ("lines", "1")],
        );
        given_name(evil.fetch_employees(None).await);
    }
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(text.contains("sync ok\\n2026-01-01T00:00:00"), "{text}");
    assert!(
        !text.lines().any(|l| l.starts_with("2026-01-01")),
        "a forged line: {text}"
    );
    assert!(!text.contains('\x1b') && !text.contains('\r'), "{text:?}");
}
