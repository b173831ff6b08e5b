//! Signature verification of webhook deliveries: pure functions of the
//! headers, the body, the key and the current time.
//!
//! Both schemes compute HMAC-SHA256 (the `hmac` crate) and compare with
//! `Mac::verify_slice`, which is constant-time: how much of a forged
//! signature matches is not observable. Signatures are decoded before the
//! comparison; decoding depends only on what the sender sent.

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::config::{HmacScheme, SignatureEncoding, SignedPayload};

type HmacSha256 = Hmac<Sha256>;

/// Standard Webhooks header names.
pub const ID_HEADER: &str = "webhook-id";
/// Standard Webhooks header names.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// Standard Webhooks header names.
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// The same headers under Svix's names, which the Svix libraries accept
/// for the same scheme (each looked up when its Standard name is absent).
pub const SVIX_ID_HEADER: &str = "svix-id";
/// See [`SVIX_ID_HEADER`].
pub const SVIX_TIMESTAMP_HEADER: &str = "svix-timestamp";
/// See [`SVIX_ID_HEADER`].
pub const SVIX_SIGNATURE_HEADER: &str = "svix-signature";

/// A delivery whose signature is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// What identifies the delivery for replay detection: the `webhook-id`,
    /// the vendor's id header, or (without one) the signature itself.
    pub id: String,
}

/// Why a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A header the scheme needs is absent.
    #[error("missing header `{0}`")]
    MissingHeader(String),
    /// A header is present but cannot be read.
    #[error("malformed header `{header}`: {reason}")]
    MalformedHeader {
        /// Header name.
        header: String,
        /// What is wrong.
        reason: String,
    },
    /// The signed timestamp is too far from now (too old, or from the future).
    #[error(
        "timestamp {timestamp} is {skew} s away from now, beyond the tolerance of {tolerance} s"
    )]
    Stale {
        /// The delivery's timestamp (Unix seconds).
        timestamp: i64,
        /// Seconds between it and now.
        skew: u64,
        /// The connector's tolerance.
        tolerance: u64,
    },
    /// No signature matches the body with the connector's secret.
    #[error("no signature matches")]
    BadSignature,
}

/// An HMAC key. Prints as `[redacted]`.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl SigningKey {
    /// A Standard Webhooks secret: `whsec_` (optional) and the key in base64.
    pub fn standard(secret: &str) -> Result<SigningKey, String> {
        let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
        let key = BASE64
            .decode(encoded.trim())
            .map_err(|_| "a standard webhook secret is `whsec_` followed by base64".to_owned())?;
        if key.is_empty() {
            return Err("the webhook secret is empty".into());
        }
        Ok(SigningKey(key))
    }

    /// A vendor's shared secret, used as given (its UTF-8 bytes).
    pub fn raw(secret: &str) -> SigningKey {
        SigningKey(secret.as_bytes().to_vec())
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        HmacSha256::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
    }
}

/// The value of a header, as text. Several occurrences are joined with a
/// space (how Standard Webhooks lists signatures anyway).
fn header(headers: &HeaderMap, name: &str) -> Result<Option<String>, Refusal> {
    let mut values = Vec::new();
    for value in headers.get_all(name) {
        let text = value.to_str().map_err(|_| Refusal::MalformedHeader {
            header: name.to_owned(),
            reason: "not visible ASCII".into(),
        })?;
        values.push(text.trim().to_owned());
    }
    Ok((!values.is_empty()).then(|| values.join(" ")))
}

fn required(headers: &HeaderMap, name: &str) -> Result<String, Refusal> {
    match header(headers, name)? {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(Refusal::MissingHeader(name.to_owned())),
    }
}

/// A Standard Webhooks header, under its own name or else Svix's; the
/// name it was found under is returned for error messages.
pub fn standard_header(
    headers: &HeaderMap,
    name: &'static str,
    svix: &'static str,
) -> Result<(String, &'static str), Refusal> {
    match required(headers, name) {
        Err(Refusal::MissingHeader(_)) => match required(headers, svix) {
            Ok(v) => Ok((v, svix)),
            Err(Refusal::MissingHeader(_)) => Err(Refusal::MissingHeader(name.to_owned())),
            Err(e) => Err(e),
        },
        other => other.map(|v| (v, name)),
    }
}

/// Parse a Unix-seconds timestamp and check it against `now` and `tolerance`.
fn fresh(name: &str, text: &str, now: i64, tolerance: u64) -> Result<i64, Refusal> {
    let timestamp: i64 = text.parse().map_err(|_| Refusal::MalformedHeader {
        header: name.to_owned(),
        reason: format!("`{text}` is not Unix seconds"),
    })?;
    let skew = now.abs_diff(timestamp);
    if skew > tolerance {
        return Err(Refusal::Stale {
            timestamp,
            skew,
            tolerance,
        });
    }
    Ok(timestamp)
}

/// Verify a Standard Webhooks delivery: `webhook-signature` lists
/// space-separated `v1,<base64>` signatures (several during a key
/// rotation); one matching HMAC-SHA256 of `id.timestamp.body` suffices.
/// Entries of other versions are ignored.
pub fn verify_standard(
    key: &SigningKey,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    tolerance: u64,
) -> Result<Verified, Refusal> {
    let (id, _) = standard_header(headers, ID_HEADER, SVIX_ID_HEADER)?;
    let (timestamp, timestamp_header) =
        standard_header(headers, TIMESTAMP_HEADER, SVIX_TIMESTAMP_HEADER)?;
    let (signatures, signature_header) =
        standard_header(headers, SIGNATURE_HEADER, SVIX_SIGNATURE_HEADER)?;
    fresh(timestamp_header, &timestamp, now, tolerance)?;

    let mut mac = key.mac();
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);

    let mut candidates = 0;
    for entry in signatures.split_ascii_whitespace() {
        let Some(("v1", encoded)) = entry.split_once(',') else {
            continue;
        };
        candidates += 1;
        // An undecodable entry is just one more signature that does not match.
        if let Ok(signature) = BASE64.decode(encoded)
            && mac.clone().verify_slice(&signature).is_ok()
        {
            return Ok(Verified { id });
        }
    }
    if candidates == 0 {
        return Err(Refusal::MalformedHeader {
            header: signature_header.into(),
            reason: "no `v1,<base64>` signature".into(),
        });
    }
    Err(Refusal::BadSignature)
}

/// Verify a vendor's HMAC-SHA256 header as `scheme` describes it.
pub fn verify_hmac(
    scheme: &HmacScheme,
    key: &SigningKey,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    tolerance: u64,
) -> Result<Verified, Refusal> {
    let name = scheme.signature_header.as_str();
    let raw = required(headers, name)?;
    let malformed = |reason: String| Refusal::MalformedHeader {
        header: name.to_owned(),
        reason,
    };
    let encoded = match &scheme.signature_prefix {
        Some(prefix) => raw
            .strip_prefix(prefix.as_str())
            .ok_or_else(|| malformed(format!("does not start with `{prefix}`")))?,
        None => raw.as_str(),
    }
    .trim();
    let signature = match scheme.signature_encoding {
        SignatureEncoding::Hex => hex::decode(encoded).map_err(|_| malformed("not hex".into()))?,
        SignatureEncoding::Base64 => BASE64
            .decode(encoded)
            .map_err(|_| malformed("not base64".into()))?,
    };
    let timestamp = match &scheme.timestamp_header {
        Some(ts_name) => {
            let text = required(headers, ts_name)?;
            fresh(ts_name, &text, now, tolerance)?;
            Some(text)
        }
        None => None,
    };
    let id = match &scheme.id_header {
        Some(id_name) => required(headers, id_name)?,
        // The same delivery sent again carries the same signature.
        None => format!("sig:{}", hex::encode(Sha256::digest(&signature))),
    };

    let mut mac = key.mac();
    let ts = timestamp.as_deref().unwrap_or_default().as_bytes();
    match scheme.signed_payload {
        SignedPayload::Body => mac.update(body),
        SignedPayload::BodyThenTimestamp => {
            mac.update(body);
            mac.update(ts);
        }
        SignedPayload::TimestampDotBody => {
            mac.update(ts);
            mac.update(b".");
            mac.update(body);
        }
    }
    mac.verify_slice(&signature)
        .map_err(|_| Refusal::BadSignature)?;
    Ok(Verified { id })
}

/// The `webhook-signature` entry for a delivery: `v1,<base64>`. For senders
/// (and tests) that sign the way `verify_standard` checks.
pub fn sign_standard(key: &SigningKey, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = key.mac();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// The signature header value `scheme` expects for `body` (with
/// `timestamp` when the scheme signs one). For senders and tests.
pub fn sign_hmac(
    scheme: &HmacScheme,
    key: &SigningKey,
    body: &[u8],
    timestamp: Option<i64>,
) -> String {
    let mut mac = key.mac();
    let ts = timestamp.map(|t| t.to_string()).unwrap_or_default();
    match scheme.signed_payload {
        SignedPayload::Body => mac.update(body),
        SignedPayload::BodyThenTimestamp => {
            mac.update(body);
            mac.update(ts.as_bytes());
        }
        SignedPayload::TimestampDotBody => {
            mac.update(ts.as_bytes());
            mac.update(b".");
            mac.update(body);
        }
    }
    let bytes = mac.finalize().into_bytes();
    let encoded = match scheme.signature_encoding {
        SignatureEncoding::Hex => hex::encode(bytes),
        SignatureEncoding::Base64 => BASE64.encode(bytes),
    };
    format!(
        "{}{encoded}",
        scheme.signature_prefix.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    // The example of the Standard Webhooks specification: an independent
    // check that signing and verifying agree with the rest of the world.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1614265330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn spec_headers(signature: &str) -> HeaderMap {
        headers(&[
            (ID_HEADER, SPEC_ID),
            (TIMESTAMP_HEADER, &SPEC_TS.to_string()),
            (SIGNATURE_HEADER, signature),
        ])
    }

    #[test]
    fn svix_header_names_verify_like_the_standard_ones() {
        let key = SigningKey::standard(SPEC_SECRET).unwrap();
        let svix = headers(&[
            (SVIX_ID_HEADER, SPEC_ID),
            (SVIX_TIMESTAMP_HEADER, &SPEC_TS.to_string()),
            (SVIX_SIGNATURE_HEADER, SPEC_SIGNATURE),
        ]);
        assert_eq!(
            verify_standard(&key, &svix, SPEC_BODY, SPEC_TS, 300),
            Ok(Verified { id: SPEC_ID.into() })
        );
        let forged = headers(&[
            (SVIX_ID_HEADER, "msg_other"),
            (SVIX_TIMESTAMP_HEADER, &SPEC_TS.to_string()),
            (SVIX_SIGNATURE_HEADER, SPEC_SIGNATURE),
        ]);
        assert_eq!(
            verify_standard(&key, &forged, SPEC_BODY, SPEC_TS, 300),
            Err(Refusal::BadSignature)
        );
        let stale = verify_standard(&key, &svix, SPEC_BODY, SPEC_TS + 3600, 300);
        assert!(matches!(stale, Err(Refusal::Stale { .. })), "{stale:?}");
        // Neither name: the Standard name is reported missing.
        let mut missing = svix.clone();
        missing.remove(SVIX_ID_HEADER);
        assert_eq!(
            verify_standard(&key, &missing, SPEC_BODY, SPEC_TS, 300),
            Err(Refusal::MissingHeader(ID_HEADER.into()))
        );
    }

    #[test]
    fn the_specification_example_signs_and_verifies() {
        let key = SigningKey::standard(SPEC_SECRET).unwrap();
        assert_eq!(
            sign_standard(&key, SPEC_ID, SPEC_TS, SPEC_BODY),
            SPEC_SIGNATURE
        );
        let ok = verify_standard(
            &key,
            &spec_headers(SPEC_SIGNATURE),
            SPEC_BODY,
            SPEC_TS + 10,
            300,
        );
        assert_eq!(ok, Ok(Verified { id: SPEC_ID.into() }));
    }

    #[test]
    fn one_valid_signature_among_several_is_enough() {
        let key = SigningKey::standard(SPEC_SECRET).unwrap();
        let listed = format!("v1,Zm9yZ2Vk v2,whatever v1a,x {SPEC_SIGNATURE} v1,bm90LWl0");
        assert!(verify_standard(&key, &spec_headers(&listed), SPEC_BODY, SPEC_TS, 300).is_ok());
    }

    #[test]
    fn tampered_body_wrong_key_and_altered_signatures_are_refused() {
        let key = SigningKey::standard(SPEC_SECRET).unwrap();
        let h = spec_headers(SPEC_SIGNATURE);
        assert_eq!(
            verify_standard(&key, &h, br#"{"test": 2432232315}"#, SPEC_TS, 300),
            Err(Refusal::BadSignature)
        );
        let other = SigningKey::standard("whsec_c2VjcmV0LWtleS1vZi1zb21lb25lLWVsc2U=").unwrap();
        assert_eq!(
            verify_standard(&other, &h, SPEC_BODY, SPEC_TS, 300),
            Err(Refusal::BadSignature)
        );
        // One bit off, truncated, extended: all plain mismatches (the
        // comparison is `verify_slice`, constant-time and length-checked).
        for forged in [
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE4g0hM",
            "v1,not base64!",
        ] {
            assert_eq!(
                verify_standard(&key, &spec_headers(forged), SPEC_BODY, SPEC_TS, 300),
                Err(Refusal::BadSignature),
                "{forged}"
            );
        }
        // Another delivery's id or timestamp does not carry the signature over.
        let moved = headers(&[
            (ID_HEADER, "msg_other"),
            (TIMESTAMP_HEADER, &SPEC_TS.to_string()),
            (SIGNATURE_HEADER, SPEC_SIGNATURE),
        ]);
        assert_eq!(
            verify_standard(&key, &moved, SPEC_BODY, SPEC_TS, 300),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() {
        let key = SigningKey::standard(SPEC_SECRET).unwrap();
        let h = spec_headers(SPEC_SIGNATURE);
        assert!(verify_standard(&key, &h, SPEC_BODY, SPEC_TS + 300, 300).is_ok());
        assert!(matches!(
            verify_standard(&key, &h, SPEC_BODY, SPEC_TS + 301, 300),
            Err(Refusal::Stale { skew: 301, .. })
        ));
        assert!(matches!(
            verify_standard(&key, &h, SPEC_BODY, SPEC_TS - 301, 300),
            Err(Refusal::Stale { .. })
        ));
    }

    #[test]
    fn missing_and_malformed_headers_are_named() {
        let key = SigningKey::standard(SPEC_SECRET).unwrap();
        for missing in [ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER] {
            let mut h = spec_headers(SPEC_SIGNATURE);
            h.remove(missing);
            assert_eq!(
                verify_standard(&key, &h, SPEC_BODY, SPEC_TS, 300),
                Err(Refusal::MissingHeader(missing.into()))
            );
        }
        let h = headers(&[
            (ID_HEADER, SPEC_ID),
            (TIMESTAMP_HEADER, "yesterday"),
            (SIGNATURE_HEADER, SPEC_SIGNATURE),
        ]);
        assert!(matches!(
            verify_standard(&key, &h, SPEC_BODY, SPEC_TS, 300),
            Err(Refusal::MalformedHeader { ref header, .. }) if header == TIMESTAMP_HEADER
        ));
        assert!(matches!(
            verify_standard(&key, &spec_headers("v2,abc"), SPEC_BODY, SPEC_TS, 300),
            Err(Refusal::MalformedHeader { .. })
        ));
    }

    #[test]
    fn secrets_must_be_base64_and_never_print() {
        assert!(SigningKey::standard("whsec_!!!").is_err());
        assert!(SigningKey::standard("whsec_").is_err());
        let key = SigningKey::standard(SPEC_SECRET).unwrap();
        assert_eq!(format!("{key:?}"), "[redacted]");
    }

    fn bamboo() -> HmacScheme {
        HmacScheme {
            signature_header: "x-bamboohr-signature".into(),
            signature_prefix: None,
            signature_encoding: SignatureEncoding::Hex,
            timestamp_header: Some("x-bamboohr-timestamp".into()),
            id_header: None,
            signed_payload: SignedPayload::BodyThenTimestamp,
        }
    }

    #[test]
    fn hmac_header_scheme_body_then_timestamp_in_hex() {
        let key = SigningKey::raw("bamboo-private-key");
        let body = br#"{"employees":[{"id":"4"}]}"#;
        // HMAC-SHA256(key, body || "1767225600"), computed independently
        // (`printf %s '{"employees":[{"id":"4"}]}1767225600' | openssl dgst -sha256 -hmac bamboo-private-key`).
        let signature = "2bb07c2f9a7b9812bfc73fcde6e2d89597a26fcc60861e0dd3d0fe01cbe3d5ad";
        assert_eq!(
            sign_hmac(&bamboo(), &key, body, Some(1767225600)),
            signature
        );
        let h = headers(&[
            ("x-bamboohr-signature", signature),
            ("x-bamboohr-timestamp", "1767225600"),
        ]);
        let ok = verify_hmac(&bamboo(), &key, &h, body, 1767225600, 300).unwrap();
        assert!(
            ok.id.starts_with("sig:"),
            "no id header: the signature identifies the delivery"
        );
        assert_eq!(
            verify_hmac(&bamboo(), &key, &h, b"{}", 1767225600, 300),
            Err(Refusal::BadSignature)
        );
        assert!(matches!(
            verify_hmac(&bamboo(), &key, &h, body, 1767225600 + 301, 300),
            Err(Refusal::Stale { .. })
        ));
        let unsigned_ts = headers(&[
            ("x-bamboohr-signature", signature),
            ("x-bamboohr-timestamp", "1767225601"),
        ]);
        assert_eq!(
            verify_hmac(&bamboo(), &key, &unsigned_ts, body, 1767225600, 300),
            Err(Refusal::BadSignature)
        );
        let no_ts = headers(&[("x-bamboohr-signature", &signature.to_uppercase())]);
        assert_eq!(
            verify_hmac(&bamboo(), &key, &no_ts, body, 1767225600, 300),
            Err(Refusal::MissingHeader("x-bamboohr-timestamp".into()))
        );
    }

    #[test]
    fn hmac_header_scheme_with_prefix_base64_and_id_header() {
        let scheme = HmacScheme {
            signature_header: "x-hub-signature-256".into(),
            signature_prefix: Some("sha256=".into()),
            signature_encoding: SignatureEncoding::Base64,
            timestamp_header: None,
            id_header: Some("x-delivery".into()),
            signed_payload: SignedPayload::Body,
        };
        let key = SigningKey::raw("s3cret");
        let mut mac = key.mac();
        mac.update(b"hello");
        let signature = format!("sha256={}", BASE64.encode(mac.finalize().into_bytes()));
        let h = headers(&[("x-hub-signature-256", &signature), ("x-delivery", "d-1")]);
        assert_eq!(
            verify_hmac(&scheme, &key, &h, b"hello", 0, 300),
            Ok(Verified { id: "d-1".into() })
        );
        let unprefixed = headers(&[
            ("x-hub-signature-256", &signature["sha256=".len()..]),
            ("x-delivery", "d-1"),
        ]);
        assert!(matches!(
            verify_hmac(&scheme, &key, &unprefixed, b"hello", 0, 300),
            Err(Refusal::MalformedHeader { .. })
        ));
        let no_id = headers(&[("x-hub-signature-256", &signature)]);
        assert_eq!(
            verify_hmac(&scheme, &key, &no_id, b"hello", 0, 300),
            Err(Refusal::MissingHeader("x-delivery".into()))
        );
    }
}
