//! Credentials: where their values come from, and a type that never prints them.
//!
//! **Invariant:** a secret value is held only in [`Secret`], whose `Debug`
//! and `Display` print `[redacted]`, and leaves the host only inside an
//! outgoing request to an origin the credential is bound to.

use std::fmt;

use base64::Engine as _;

use crate::config::{AuthConfig, ClientAuthConfig, SecretSource};

pub mod store;

pub use store::{SecretStore, StoreError, StoreKey};

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
        Secret { value, sealed: true }
    }

    /// Resolve one configured value (a literal, `env:`, `file:` or `store:`,
    /// the last from `store` with the key from the environment).
    pub fn resolve(source: &SecretSource, store: Option<&SecretStore>) -> Result<Secret, String> {
        resolve(source, store)
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
    /// Resolve the secret references of an `auth` table (`store:` references
    /// are errors: use [`Credential::resolve_with`]).
    pub fn resolve(auth: &AuthConfig) -> Result<Credential, String> {
        Self::resolve_with(auth, None)
    }

    /// Resolve the secret references of an `auth` table, `store:NAME` from
    /// `store` (with the key from the environment).
    pub fn resolve_with(auth: &AuthConfig, store: Option<&SecretStore>) -> Result<Credential, String> {
        let resolve = |source: &SecretSource| resolve(source, store);
        Ok(match auth {
            AuthConfig::Basic { username, password } => Credential::Basic {
                username: resolve(username)?,
                password: resolve(password)?,
            },
            AuthConfig::Bearer { token } => Credential::Bearer(resolve(token)?),
            AuthConfig::Header { name, value } => Credential::Header {
                name: name.clone(),
                value: resolve(value)?,
            },
            AuthConfig::Query { param, value } => Credential::Query {
                param: param.clone(),
                value: resolve(value)?,
            },
            AuthConfig::OAuth2 {
                token_url,
                client_id,
                client_secret,
                scope,
                client_auth,
            } => Credential::OAuth2(OAuth2Client {
                token_url: url::Url::parse(token_url)
                    .map_err(|e| format!("oauth2 token_url `{token_url}`: {e}"))?,
                client_id: resolve(client_id)?,
                client_secret: resolve(client_secret)?,
                scope: scope.clone(),
                client_auth: match client_auth {
                    ClientAuthConfig::Basic => ClientAuth::Basic,
                    ClientAuthConfig::Body => ClientAuth::Body,
                },
            }),
        })
    }

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
                    forms.push(base64::engine::general_purpose::STANDARD.encode(format!(
                        "{}:{}",
                        username.value, password.value
                    )));
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

/// Resolve one value (such as the daemon's admin token): a literal,
/// `env:NAME`, `file:PATH` or `store:NAME`.
pub fn resolve_secret(source: &SecretSource, store: Option<&SecretStore>) -> Result<Secret, String> {
    resolve(source, store)
}

/// Resolve one value: a literal, `env:NAME`, `file:PATH` or `store:NAME`.
fn resolve(source: &SecretSource, store: Option<&SecretStore>) -> Result<Secret, String> {
    match source {
        SecretSource::Literal(value) => Ok(Secret {
            value: value.clone(),
            sealed: false,
        }),
        SecretSource::Reference { secret } => {
            let value = if let Some(name) = secret.strip_prefix("env:") {
                std::env::var(name)
                    .map_err(|_| format!("secret `{secret}`: environment variable {name} is not set"))?
            } else if let Some(path) = secret.strip_prefix("file:") {
                std::fs::read_to_string(path)
                    .map_err(|e| format!("secret `{secret}`: cannot read {path}: {e}"))?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned()
            } else if let Some(name) = secret.strip_prefix("store:") {
                let store = store.ok_or_else(|| {
                    format!("secret `{secret}`: no secret store is available here")
                })?;
                let key = StoreKey::from_env().map_err(|e| format!("secret `{secret}`: {e}"))?;
                store
                    .get(name, &key)
                    .map_err(|e| format!("secret `{secret}`: {e}"))?
                    .value
            } else {
                return Err(format!(
                    "secret `{secret}`: unknown source (use env:NAME, file:PATH or store:NAME)"
                ));
            };
            if value.is_empty() {
                return Err(format!("secret `{secret}` is empty"));
            }
            Ok(Secret {
                value,
                sealed: true,
            })
        }
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
        assert_eq!(c.revealing_forms(), vec!["key".to_owned(), "a2V5Ong=".to_owned()]);
    }

    #[test]
    fn unknown_source_and_missing_env_are_errors() {
        let unknown = SecretSource::Reference {
            secret: "vault:x".into(),
        };
        assert!(resolve(&unknown, None).unwrap_err().contains("unknown source"));
        let missing = SecretSource::Reference {
            secret: "env:SWITCHYARD_TEST_SURELY_UNSET".into(),
        };
        assert!(resolve(&missing, None).unwrap_err().contains("is not set"));
    }
}
