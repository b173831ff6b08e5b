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
    /// the values themselves and, for Basic, the encoded header.
    pub fn revealing_forms(&self) -> Vec<String> {
        let mut forms = Vec::new();
        let mut add = |s: &Secret| {
            if s.sealed && !s.value.is_empty() {
                forms.push(s.value.clone());
            }
        };
        match self {
            Credential::Basic { username, password } => {
                add(username);
                add(password);
                if username.sealed || password.sealed {
                    forms.push(
                        base64::engine::general_purpose::STANDARD
                            .encode(format!("{}:{}", username.value, password.value)),
                    );
                }
            }
            Credential::Bearer(token) => add(token),
            Credential::Header { value, .. } | Credential::Query { value, .. } => add(value),
            Credential::OAuth2(client) => {
                add(&client.client_id);
                add(&client.client_secret);
                forms.push(base64::engine::general_purpose::STANDARD.encode(format!(
                    "{}:{}",
                    client.client_id.value, client.client_secret.value
                )));
            }
        }
        forms
    }
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

    #[test]
    fn basic_credentials_reveal_their_encoded_form() {
        let c = Credential::Basic {
            username: Secret {
                value: "key".into(),
                sealed: true,
            },
            password: Secret {
                value: "x".into(),
                sealed: false,
            },
        };
        // "key:x" in base64
        assert_eq!(
            c.revealing_forms(),
            vec!["key".to_owned(), "a2V5Ong=".to_owned()]
        );
    }
}
