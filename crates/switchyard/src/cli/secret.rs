//! `switchyard secret`: the encrypted secret store in the data directory
//! (`store:NAME`): set (value from stdin), list names, remove.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use switchyard::audit::{Event, Kind};
use switchyard::config::Config;
use switchyard::secrets::{SecretStore, StoreKey};

use super::common::{Exit, record_action};

#[derive(Subcommand)]
pub enum SecretCommand {
    /// Store a secret; the value is read from stdin. Needs the key in
    /// SWITCHYARD_SECRET_KEY or SWITCHYARD_SECRET_KEY_FILE.
    Set {
        /// Configuration file (for the data directory).
        #[arg(
            long,
            short,
            env = "SWITCHYARD_CONFIG",
            default_value = "switchyard.toml"
        )]
        config: PathBuf,
        /// Secret name, referred to as `{ secret = "store:NAME" }`.
        name: String,
    },
    /// List the names of the stored secrets (never their values).
    List {
        /// Configuration file (for the data directory).
        #[arg(
            long,
            short,
            env = "SWITCHYARD_CONFIG",
            default_value = "switchyard.toml"
        )]
        config: PathBuf,
    },
    /// Remove a secret.
    Rm {
        /// Configuration file (for the data directory).
        #[arg(
            long,
            short,
            env = "SWITCHYARD_CONFIG",
            default_value = "switchyard.toml"
        )]
        config: PathBuf,
        /// Secret name.
        name: String,
    },
}

pub fn execute(command: SecretCommand) -> anyhow::Result<Exit> {
    match command {
        SecretCommand::Set { config, name } => {
            let config = Config::load(&config)?;
            let key = StoreKey::from_env()?;
            let mut value = String::new();
            std::io::stdin()
                .read_to_string(&mut value)
                .context("failed to read the secret value from stdin")?;
            let value = value.trim_end_matches(['\r', '\n']);
            if value.is_empty() {
                bail!("no secret value on stdin");
            }
            let store = SecretStore::in_dir(&config.data_dir);
            store.set(&name, value, &key)?;
            audit_secret_change(&config, Kind::AdminSecretSet, &name);
            println!("secret `{name}` stored in {}", store.path().display());
        }
        SecretCommand::List { config } => {
            let config = Config::load(&config)?;
            for name in SecretStore::in_dir(&config.data_dir).names()? {
                println!("{name}");
            }
        }
        SecretCommand::Rm { config, name } => {
            let config = Config::load(&config)?;
            if !SecretStore::in_dir(&config.data_dir).remove(&name)? {
                eprintln!("error: no secret named `{name}` in the store");
                return Ok(Exit::Failure);
            }
            audit_secret_change(&config, Kind::AdminSecretRemoved, &name);
            println!("secret `{name}` removed");
        }
    }
    Ok(Exit::Success)
}

/// Record a change to the secret store (its name, never its value). The
/// store is a file of its own; if the state database cannot be opened (a
/// running daemon holds it), say so rather than fail the change.
fn audit_secret_change(config: &Config, kind: Kind, name: &str) {
    let recorded = std::fs::create_dir_all(&config.data_dir)
        .map_err(anyhow::Error::from)
        .and_then(|()| config.open_store())
        .and_then(|state| {
            record_action(
                &state,
                Event::new(kind).detail(serde_json::json!({ "secret": name })),
            )
        });
    if let Err(e) = recorded {
        eprintln!("warning: the change was made but not recorded in the audit log: {e:#}");
    }
}
