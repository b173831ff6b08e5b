//! Credentials as the runtime injects them, in a type that never prints
//! its value. Where values come from (`env:`, `file:`, `store:`) is the
//! `switchyard` crate's business; the runtime only holds and injects them.
//!
//! **Invariant:** a secret value is held only in [`Secret`], whose `Debug`
//! and `Display` print `[redacted]`, and leaves the host only inside an
//! outgoing request to an origin the credential is bound to.

use std::fmt;

use base64::Engine as _;

/// A credential value. Prints as `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    /// Came from a secret reference (env, file), as opposed to a literal in
    /// the configuration such as BambooHR's conventional "x" password.
    sealed: bool,
}

impl Secret {
    /// A sealed value obtained at run time (an OAuth2 access token).
    pub fn sealed(value: String) -> Secret {
        Secret {
            value,
            sealed: true,
        }
    }

    /// A value from the configuration: `sealed` when it came from a secret
    /// reference (env, file, store), not when it was written as a literal
    /// (such as BambooHR's conventional "x" password).
    pub fn new(value: String, sealed: bool) -> Secret {
        Secret { value, sealed }
    }

    /// The value, for injection into a request.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Whether the value is secret (and so redacted from what plugins see).
    pub fn is_sealed(&self) -> bool {
        self.sealed
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A resolved credential, ready to inject.
#[derive(Debug, Clone)]
pub enum Credential {
    /// HTTP Basic.
    Basic {
        /// User name.
        username: Secret,
        /// Password.
        password: Secret,
    },
    /// Bearer token.
    Bearer(Secret),
    /// A named header.
    Header {
        /// Header name.
        name: String,
        /// Value.
        value: Secret,
    },
    /// A query parameter.
    Query {
        /// Parameter name.
        param: String,
        /// Value.
        value: Secret,
    },
    /// OAuth2 client credentials; the access token is fetched by `http`.
    OAuth2(OAuth2Client),
}

/// An OAuth2 client of the client-credentials grant.
#[derive(Debug, Clone)]
pub struct OAuth2Client {
    /// The token endpoint.
    pub token_url: url::Url,
    /// Client id.
    pub client_id: Secret,
    /// Client secret.
    pub client_secret: Secret,
    /// Requested scope.
    pub scope: Option<String>,
    /// How the client authenticates to the token endpoint.
    pub client_auth: ClientAuth,
}

/// How an OAuth2 client sends its id and secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// HTTP Basic.
    Basic,
    /// Form fields in the body.
    Body,
}

impl Credential {
    /// Every byte string that would reveal a sealed value if a plugin saw it:
    /// the [`spellings`] of each sealed value and, for a Basic pair (and an
    /// OAuth2 client's id and secret), of the whole `user:pass`.
    pub fn revealing_forms(&self) -> Vec<String> {
        let mut values: Vec<String> = Vec::new();
        let mut sealed = |s: &Secret| {
            if s.sealed && !s.value.is_empty() {
                values.push(s.value.clone());
            }
        };
        let pair = match self {
            Credential::Basic { username, password } => Some((username, password)),
            Credential::OAuth2(client) => Some((&client.client_id, &client.client_secret)),
            Credential::Bearer(value)
            | Credential::Header { value, .. }
            | Credential::Query { value, .. } => {
                sealed(value);
                None
            }
        };
        if let Some((user, pass)) = pair {
            sealed(user);
            sealed(pass);
            if user.sealed || pass.sealed {
                let joined = format!("{}:{}", user.value, pass.value);
                // The header value as sent: an echo may encode it whole.
                values.push(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(&joined)
                ));
                values.push(joined);
            }
        }
        if let Credential::Bearer(token) = self
            && token.sealed
            && !token.value.is_empty()
        {
            values.push(format!("Bearer {}", token.value));
        }
        let mut forms = Vec::new();
        for value in &values {
            for spelling in spellings(value) {
                if !forms.contains(&spelling) {
                    forms.push(spelling);
                }
            }
        }
        forms
    }
}

/// The spellings of `value` that redaction looks for: the common ways an
/// endpoint echoing a request could write it back.
///
/// Each of these *base* forms
/// - the value itself,
/// - base64, standard and URL-safe alphabets, with and without padding,
/// - hex, lower and upper case,
///
/// in each of these *text* encodings
/// - as is,
/// - percent-encoded keeping RFC 3986's unreserved characters, keeping
///   `encodeURIComponent`'s set, or escaping every byte,
/// - form-encoded (`application/x-www-form-urlencoded`: space as `+`),
/// - JSON-escaped: minimally (`\"`, `\\`, controls), with `\/`, with
///   non-ASCII as `\uXXXX`, HTML-safe (`<`, `>`, `&` as `\u003c`...), every
///   non-alphanumeric character as `\u00XX`, and every character as `\u00XX`,
///
/// with hex digits of escapes in upper and lower case. Matching is also
/// ASCII case-insensitive (see `capability::http`), which covers escapes
/// with mixed-case hex digits.
///
/// Encoded spellings shorter than 4 characters are left out (the value
/// itself never is): redacting `eA` (`x` in base64) would garble text.
///
/// Not covered (and cannot be in general): base64 of the value embedded at
/// an offset not a multiple of 3 in a longer base64 string (its characters
/// then depend on the bytes around it), escapes mixed in other patterns
/// than the ones above, and any other transformation (compression other
/// than the response's `Content-Encoding`, encryption, splitting, another
/// encoding on top). Those need an origin that transforms the secret on
/// purpose, which is why a credential goes only to the origins named for it.
pub fn spellings(value: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let bytes = value.as_bytes();
    let bases = [
        value.to_owned(),
        STANDARD.encode(bytes),
        STANDARD_NO_PAD.encode(bytes),
        URL_SAFE.encode(bytes),
        URL_SAFE_NO_PAD.encode(bytes),
        hex::encode(bytes),
        hex::encode_upper(bytes),
    ];
    if value.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<String> = vec![value.to_owned()];
    // An encoded spelling of a value of a byte or two is so short (`eA`,
    // `78`) that redacting it would garble ordinary text; the value itself
    // is always redacted.
    let mut add = |s: String| {
        if s.len() >= MIN_SPELLING && !out.contains(&s) {
            out.push(s);
        }
    };
    for base in &bases {
        add(base.clone());
        for upper in [true, false] {
            add(percent(
                base,
                upper,
                |b| b.is_ascii_alphanumeric() || b"-._~".contains(&b),
                false,
            ));
            add(percent(
                base,
                upper,
                |b| b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b),
                false,
            ));
            add(percent(base, upper, |_| false, false));
            add(percent(
                base,
                upper,
                |b| b.is_ascii_alphanumeric() || b"*-._".contains(&b),
                true,
            ));
            add(json(base, JsonEscape::NonAlphanumeric, upper));
            add(json(base, JsonEscape::Every, upper));
        }
        for escape in [
            JsonEscape::Minimal,
            JsonEscape::Solidus,
            JsonEscape::AsciiOnly,
            JsonEscape::HtmlSafe,
        ] {
            add(json(base, escape, false));
        }
    }
    out
}

/// The shortest encoded spelling redacted.
const MIN_SPELLING: usize = 4;

/// `text` with every byte not `kept` as `%XX`; with `form`, space as `+`.
fn percent(text: &str, upper: bool, kept: impl Fn(u8) -> bool, form: bool) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for &b in text.as_bytes() {
        if form && b == b' ' {
            out.push('+');
        } else if kept(b) {
            out.push(char::from(b));
        } else if upper {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// Which characters a JSON encoder escapes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum JsonEscape {
    /// `"`, `\\` and controls (serde_json, most encoders).
    Minimal,
    /// Also `/` as `\/` (PHP's `json_encode`).
    Solidus,
    /// Also non-ASCII as `\uXXXX` (Python's `ensure_ascii`).
    AsciiOnly,
    /// Also `<`, `>`, `&`, U+2028 and U+2029 as `\uXXXX` (Go).
    HtmlSafe,
    /// Every character but ASCII letters and digits as `\uXXXX`.
    NonAlphanumeric,
    /// Every character as `\uXXXX`.
    Every,
}

/// `text` as the inside of a JSON string escaped as `escape` says: short
/// escapes (`\"`, `\n`...) for what JSON requires, `\uXXXX` (UTF-16 code
/// units) for the rest.
fn json(text: &str, escape: JsonEscape, upper: bool) -> String {
    let mut out = String::with_capacity(text.len() * 6);
    let mut units = [0u16; 2];
    for c in text.chars() {
        let short = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '/' if escape == JsonEscape::Solidus => Some("\\/"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            _ => None,
        };
        let kept = match escape {
            JsonEscape::Every => false,
            JsonEscape::NonAlphanumeric => c.is_ascii_alphanumeric(),
            _ if short.is_some() || c.is_control() => false,
            JsonEscape::Minimal | JsonEscape::Solidus => true,
            JsonEscape::AsciiOnly => c.is_ascii(),
            JsonEscape::HtmlSafe => !matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}'),
        };
        match short {
            _ if kept => out.push(c),
            Some(short) if !matches!(escape, JsonEscape::Every | JsonEscape::NonAlphanumeric) => {
                out.push_str(short)
            }
            _ => {
                for unit in c.encode_utf16(&mut units) {
                    if upper {
                        out.push_str(&format!("\\u{unit:04X}"));
                    } else {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret {
            value: "hunter2".into(),
            sealed: true,
        };
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
        let c = Credential::Bearer(s);
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    fn sealed(value: &str) -> Secret {
        Secret::new(value.into(), true)
    }

    /// Each row: how an echo could spell the value `ab/+ ?"é~`, and that
    /// spelling, which `spellings` must list.
    #[test]
    fn spellings_cover_the_common_encodings() {
        let all = spellings("ab/+ ?\"é~");
        for (how, spelling) in [
            ("verbatim", "ab/+ ?\"é~"),
            ("base64", "YWIvKyA/IsOpfg=="),
            ("base64 without padding", "YWIvKyA/IsOpfg"),
            ("base64 URL-safe", "YWIvKyA_IsOpfg=="),
            ("base64 URL-safe without padding", "YWIvKyA_IsOpfg"),
            ("hex", "61622f2b203f22c3a97e"),
            ("hex upper case", "61622F2B203F22C3A97E"),
            ("percent-encoded", "ab%2F%2B%20%3F%22%C3%A9~"),
            (
                "percent-encoded, lower-case hex",
                "ab%2f%2b%20%3f%22%c3%a9~",
            ),
            ("encodeURIComponent", "ab%2F%2B%20%3F%22%C3%A9~"),
            (
                "every byte percent-encoded",
                "%61%62%2F%2B%20%3F%22%C3%A9%7E",
            ),
            ("form-encoded", "ab%2F%2B+%3F%22%C3%A9%7E"),
            ("form-encoded, lower-case hex", "ab%2f%2b+%3f%22%c3%a9%7e"),
            ("JSON", "ab/+ ?\\\"é~"),
            ("JSON with \\/", "ab\\/+ ?\\\"é~"),
            ("JSON, ASCII only", "ab/+ ?\\\"\\u00e9~"),
            (
                "JSON, every non-alphanumeric as \\u",
                "ab\\u002f\\u002b\\u0020\\u003f\\u0022\\u00e9\\u007e",
            ),
            (
                "JSON, every non-alphanumeric as \\u, upper case",
                "ab\\u002F\\u002B\\u0020\\u003F\\u0022\\u00E9\\u007E",
            ),
            (
                "JSON, every character as \\u",
                "\\u0061\\u0062\\u002f\\u002b\\u0020\\u003f\\u0022\\u00e9\\u007e",
            ),
            (
                "base64 percent-encoded (%3D padding)",
                "YWIvKyA%2FIsOpfg%3D%3D",
            ),
            (
                "base64 percent-encoded, lower case",
                "YWIvKyA%2fIsOpfg%3d%3d",
            ),
            ("base64 form-encoded", "YWIvKyA%2FIsOpfg%3D%3D"),
            ("base64 in JSON with \\/", "YWIvKyA\\/IsOpfg=="),
            ("base64 in HTML-safe JSON", "YWIvKyA/IsOpfg=="),
            ("hex percent-encoded is hex", "61622f2b203f22c3a97e"),
        ] {
            assert!(
                all.iter().any(|s| s == spelling),
                "{how}: `{spelling}` is not among {all:#?}"
            );
        }
        // A value of one byte: itself, and no two-character encoding.
        assert_eq!(spellings("x")[0], "x");
        assert!(spellings("x").iter().all(|s| s == "x" || s.len() >= 4));
        let html = spellings("a<b&c>");
        assert!(
            html.iter().any(|s| s == "a\\u003cb\\u0026c\\u003e"),
            "{html:?}"
        );
    }

    #[test]
    fn basic_credentials_reveal_each_part_and_the_pair_in_each_encoding() {
        let c = Credential::Basic {
            username: sealed("user"),
            password: sealed("p=ss"),
        };
        let forms = c.revealing_forms();
        for form in [
            "user",
            "p=ss",
            "p%3Dss",
            "cD1zcw",
            "user:p=ss",
            "user%3Ap%3Dss",
            "dXNlcjpwPXNz",
            "757365723a703d7373",
        ] {
            assert!(forms.iter().any(|f| f == form), "{form} missing");
        }
        // A literal (unsealed) password is not redacted on its own, but the
        // pair it is part of is.
        let c = Credential::Basic {
            username: sealed("key"),
            password: Secret::new("x".into(), false),
        };
        let forms = c.revealing_forms();
        assert!(!forms.iter().any(|f| f == "x"));
        assert!(forms.iter().any(|f| f == "a2V5Ong="), "key:x in base64");
        assert!(
            forms.iter().any(|f| f == "a2V5Ong%3D"),
            "key:x, %3D padding"
        );
    }
}
