//! Where credentials come from: literals, `env:`, `file:` and `store:`
//! references (the encrypted store in the data directory, `store.rs`),
//! resolved into the runtime's [`Secret`] and [`Credential`].

use crate::config::{AuthConfig, ClientAuthConfig, SecretSource};

pub mod store;

pub use store::{SecretStore, StoreError, StoreKey};
pub use switchyard_runtime::secret::{ClientAuth, Credential, OAuth2Client, Secret};

/// Resolve the secret references of an `auth` table, `store:NAME` from
/// `store` (with the key from the environment).
pub fn resolve_credential(
    auth: &AuthConfig,
    store: Option<&SecretStore>,
) -> Result<Credential, String> {
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

/// Resolve one value (such as the daemon's admin token): a literal,
/// `env:NAME`, `file:PATH` or `store:NAME`.
pub fn resolve_secret(
    source: &SecretSource,
    store: Option<&SecretStore>,
) -> Result<Secret, String> {
    resolve(source, store)
}

/// Resolve one value: a literal, `env:NAME`, `file:PATH` or `store:NAME`.
fn resolve(source: &SecretSource, store: Option<&SecretStore>) -> Result<Secret, String> {
    match source {
        SecretSource::Literal(value) => Ok(Secret::new(value.clone(), false)),
        SecretSource::Reference { secret } => {
            let value = if let Some(name) = secret.strip_prefix("env:") {
                std::env::var(name).map_err(|_| {
                    format!("secret `{secret}`: environment variable {name} is not set")
                })?
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
                    .expose()
                    .to_owned()
            } else {
                return Err(format!(
                    "secret `{secret}`: unknown source (use env:NAME, file:PATH or store:NAME)"
                ));
            };
            if value.is_empty() {
                return Err(format!("secret `{secret}` is empty"));
            }
            Ok(Secret::new(value, true))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_source_and_missing_env_are_errors() {
        let unknown = SecretSource::Reference {
            secret: "vault:x".into(),
        };
        assert!(
            resolve(&unknown, None)
                .unwrap_err()
                .contains("unknown source")
        );
        let missing = SecretSource::Reference {
            secret: "env:SWITCHYARD_TEST_SURELY_UNSET".into(),
        };
        assert!(resolve(&missing, None).unwrap_err().contains("is not set"));
    }
}
