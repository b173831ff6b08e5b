//! `switchyard plugin`: check, inspect and list plugin files, and lift a
//! connector's quarantine.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use switchyard::audit::{Event, Kind};
use switchyard::config::{AuthConfig, Config};
use switchyard::model::ConnectorName;
use switchyard::runtime::Runtime;
use switchyard::store::{SledStore, Store};

use super::common::{ConfigArg, Exit, record_action};

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Check a plugin file: is it a component, which world, which contract version.
    Check {
        /// The `.wasm` file.
        file: PathBuf,
    },
    /// Show what a plugin file is and may do: world, contract version,
    /// imports, and what the configuration grants the connectors using it.
    Inspect {
        /// The `.wasm` file.
        file: PathBuf,
        /// Configuration file, to show the grants of the connectors using
        /// this plugin (optional).
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// List the plugins in the configured plugin directory, and refused files.
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Lift a connector's quarantine (its links run again on the next sync).
    Resume {
        /// Configuration file.
        #[arg(
            long,
            short,
            env = "SWITCHYARD_CONFIG",
            default_value = "switchyard.toml"
        )]
        config: PathBuf,
        /// The connector.
        connector: ConnectorName,
    },
}

pub fn execute(command: PluginCommand) -> anyhow::Result<Exit> {
    match command {
        PluginCommand::Check { file } => check(&file),
        PluginCommand::Inspect { file, config } => inspect(&file, config.as_deref()),
        PluginCommand::List { config } => list(&config),
        PluginCommand::Resume { config, connector } => resume(&config, &connector),
    }
}

/// `plugin check`: exit 2 if the file is refused.
fn check(file: &Path) -> anyhow::Result<Exit> {
    let runtime = Runtime::new()?;
    match runtime.load_plugin(file) {
        Ok(p) => {
            println!(
                "{}: {} (contract {}), sha256 {}",
                file.display(),
                p.world,
                p.contract_version,
                p.sha256
            );
            Ok(Exit::Success)
        }
        Err(e) => {
            eprintln!("refused: {e}");
            Ok(Exit::Invalid)
        }
    }
}

/// `plugin list`: exit 2 if a file in the directory is refused.
fn list(config: &ConfigArg) -> anyhow::Result<Exit> {
    let config = Config::load(&config.config)?;
    let set = Runtime::new()?
        .with_max_plugin_mib(config.max_plugin_mib)
        .load_dir(&config.plugin_dir)?;
    for p in set.plugins.values() {
        println!(
            "{:<20} {:<15} contract {:<8} {}",
            p.name,
            p.world.to_string(),
            p.contract_version,
            p.version()
        );
    }
    for e in &set.refused {
        println!("refused: {e}");
    }
    Ok(if set.refused.is_empty() {
        Exit::Success
    } else {
        Exit::Invalid
    })
}

/// `plugin resume`: exit 2 if the configuration has no such connector.
fn resume(config: &Path, connector: &ConnectorName) -> anyhow::Result<Exit> {
    let config = Config::load(config)?;
    if !config.connectors.contains_key(connector) {
        eprintln!(
            "error: no connector named `{connector}` in {}",
            config.file.display()
        );
        return Ok(Exit::Invalid);
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("failed to create {}", config.data_dir.display()))?;
    let state = SledStore::open(&config.data_dir)?;
    let lifted = state.resume_connector(connector)?;
    record_action(
        &state,
        Event::new(Kind::AdminConnectorResumed)
            .connector(connector)
            .detail(serde_json::json!({ "was_quarantined": lifted.is_some() })),
    )?;
    match lifted {
        Some(q) => println!(
            "connector `{connector}` resumed (quarantined since {}: {})",
            q.at, q.reason
        ),
        None => println!("connector `{connector}` was not quarantined"),
    }
    state.flush()?;
    Ok(Exit::Success)
}

/// `plugin inspect`: the component's world, contract and imports, and what
/// the configuration grants the connectors that use it. Exit 2 if the file
/// is refused.
fn inspect(file: &Path, config: Option<&Path>) -> anyhow::Result<Exit> {
    let runtime = Runtime::new()?;
    let plugin = match runtime.load_plugin(file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("refused: {e}");
            return Ok(Exit::Invalid);
        }
    };
    println!("file              {}", file.display());
    println!("plugin            {}", plugin.name);
    println!("sha256            {}", plugin.sha256);
    println!("world             {}", plugin.world);
    println!("contract version  {}", plugin.contract_version);
    println!("imports");
    for import in &plugin.imports {
        let note = if import.starts_with("switchyard:connector/") {
            "host capability"
        } else if import.starts_with("wasi:") {
            "WASI (linked with an empty context: no files, env, args, sockets or clock access beyond what WASI requires)"
        } else {
            "unknown to the host: the plugin cannot be linked"
        };
        println!("  {import:<40} {note}");
    }
    let Some(config) = config else {
        println!("grants            (pass --config to show what a configuration grants it)");
        return Ok(Exit::Success);
    };
    let config = Config::load(config)?;
    let users: Vec<_> = config
        .connectors
        .iter()
        .filter(|(_, c)| c.plugin == plugin.name)
        .collect();
    if users.is_empty() {
        println!(
            "grants            no connector in {} uses plugin `{}`",
            config.file.display(),
            plugin.name
        );
    }
    for (name, c) in users {
        println!("connector `{name}`");
        let allow: Vec<String> = c.allow.iter().map(ToString::to_string).collect();
        println!(
            "  may reach        {}",
            if allow.is_empty() {
                "nothing (no `allow`)".to_owned()
            } else {
                allow.join(", ")
            }
        );
        match &c.auth {
            None => println!("  credential       none"),
            Some(a) => {
                println!(
                    "  credential       {} (injected by the host; the plugin never sees it)",
                    auth_kind(a)
                );
                let receiving = c.credential_origins();
                let named = receiving
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>();
                println!(
                    "    sent to        {}{}",
                    if named.is_empty() {
                        "no origin".to_owned()
                    } else {
                        named.join(", ")
                    },
                    if c.credential_origins.is_some() {
                        " (`credential_origins`)"
                    } else {
                        " (the allowed origins that are not wildcards)"
                    }
                );
                let without: Vec<String> = c
                    .allow
                    .iter()
                    .filter(|o| !receiving.contains(o))
                    .map(|o| {
                        if receiving.iter().any(|r| o.covers(r)) {
                            format!("other hosts under {o}")
                        } else {
                            o.to_string()
                        }
                    })
                    .collect();
                if !without.is_empty() {
                    println!("    not sent to    {}", without.join(", "));
                }
            }
        }
        for (key, value) in &c.settings {
            println!("  config {key:<10} {value}");
        }
        let l = &c.limits;
        println!(
            "  limits           {} ms per call, {} MiB memory, {} requests per call, {} KiB per response, {} records per page, fuel {}",
            l.call_timeout_ms,
            l.memory_mib,
            l.max_requests,
            l.max_response_kib,
            l.max_records,
            l.fuel.map_or("unlimited".to_owned(), |f| f.to_string())
        );
        for (link, lc) in config
            .links
            .iter()
            .filter(|(_, lc)| lc.hris == *name || lc.lms == *name)
        {
            let role = if lc.hris == *name { "hris" } else { "lms" };
            println!("  used by          link `{link}` as {role}");
        }
    }
    Ok(Exit::Success)
}

fn auth_kind(auth: &AuthConfig) -> &'static str {
    match auth {
        AuthConfig::Basic { .. } => "basic",
        AuthConfig::Bearer { .. } => "bearer",
        AuthConfig::Header { .. } => "header",
        AuthConfig::Query { .. } => "query parameter",
        AuthConfig::OAuth2 { .. } => "oauth2 client credentials",
    }
}
