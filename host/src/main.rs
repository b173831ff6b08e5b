//! The `switchyard` command line.
//!
//! Exit codes: 0 success; 1 failure; 2 invalid configuration, plugin or
//! usage; 3 a link stopped and needs an operator (credentials, config, a
//! quarantined connector).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

use clap::{Parser, Subcommand, ValueEnum};
use switchyard::config::{Config, ConfigError};
use switchyard::runtime::Runtime;
use switchyard::secrets::{SecretStore, StoreKey};
use switchyard::service::{Quarantined, Service};
use switchyard::state::State;
use switchyard::sync::{LinkStopped, RunReport};

#[derive(Parser)]
#[command(name = "switchyard", version, about = "Keeps an HRIS and an LMS in sync through sandboxed WebAssembly connector plugins")]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a sync of one link, or of every link.
    Sync {
        /// Configuration file.
        #[arg(long, short, env = "SWITCHYARD_CONFIG", default_value = "switchyard.toml")]
        config: PathBuf,
        /// Run once and exit (the only mode until the daemon lands).
        #[arg(long)]
        once: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// The link to sync (default: all links).
        link: Option<String>,
    },
    /// What the state database holds for each link.
    Status {
        /// Configuration file.
        #[arg(long, short, env = "SWITCHYARD_CONFIG", default_value = "switchyard.toml")]
        config: PathBuf,
    },
    /// Inspect plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// The encrypted secret store in the data directory (`store:NAME`).
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Dead letters: operations that were given up on.
    Dlq {
        /// Configuration file.
        #[arg(long, short, env = "SWITCHYARD_CONFIG", default_value = "switchyard.toml")]
        config: PathBuf,
        /// The link (default: all links).
        link: Option<String>,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Check a plugin file: is it a component, which world, which contract version.
    Check {
        /// The `.wasm` file.
        file: PathBuf,
    },
    /// List the plugins in the configured plugin directory, and refused files.
    List {
        /// Configuration file.
        #[arg(long, short, env = "SWITCHYARD_CONFIG", default_value = "switchyard.toml")]
        config: PathBuf,
    },
    /// Lift a connector's quarantine (its links run again on the next sync).
    Resume {
        /// Configuration file.
        #[arg(long, short, env = "SWITCHYARD_CONFIG", default_value = "switchyard.toml")]
        config: PathBuf,
        /// The connector.
        connector: String,
    },
}

#[derive(Subcommand)]
enum SecretCommand {
    /// Store a secret; the value is read from stdin. Needs the key in
    /// SWITCHYARD_SECRET_KEY or SWITCHYARD_SECRET_KEY_FILE.
    Set {
        /// Configuration file (for the data directory).
        #[arg(long, short, env = "SWITCHYARD_CONFIG", default_value = "switchyard.toml")]
        config: PathBuf,
        /// Secret name, referred to as `{ secret = "store:NAME" }`.
        name: String,
    },
    /// List the names of the stored secrets (never their values).
    List {
        /// Configuration file (for the data directory).
        #[arg(long, short, env = "SWITCHYARD_CONFIG", default_value = "switchyard.toml")]
        config: PathBuf,
    },
    /// Remove a secret.
    Rm {
        /// Configuration file (for the data directory).
        #[arg(long, short, env = "SWITCHYARD_CONFIG", default_value = "switchyard.toml")]
        config: PathBuf,
        /// Secret name.
        name: String,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,switchyard=info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(2)
            } else if e.downcast_ref::<LinkStopped>().is_some() || e.downcast_ref::<Quarantined>().is_some() {
                ExitCode::from(3)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Sync { config, once: _, json, link } => {
            let service = Service::open(Config::load(&config)?)?;
            let reports = match link {
                Some(link) => vec![service.sync_link(&link).await?],
                None => service.sync_all().await?,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&reports)?);
            } else {
                for report in &reports {
                    print_report(report);
                }
                println!("state: {}", service.config.data_dir.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { config } => {
            let service = Service::open(Config::load(&config)?)?;
            println!("{:<16} {:>9} {:>9} {:>11} {:>11} {:>12}", "LINK", "EMPLOYEES", "ACCOUNTS", "ENROLLMENTS", "COMPLETIONS", "DEAD LETTERS");
            for link in service.config.links.keys() {
                let c = service.state.counts(link);
                println!(
                    "{link:<16} {:>9} {:>9} {:>11} {:>11} {:>12}",
                    c.employees, c.accounts, c.enrollments, c.completions, c.dead_letters
                );
            }
            for (connector, health) in service.state.quarantined()? {
                if let Some(q) = health.quarantine {
                    println!(
                        "quarantined: connector `{connector}` (plugin {} {}) since {} after {} faults in a row: {}",
                        health.plugin,
                        health.sha256.get(..12).unwrap_or_default(),
                        q.at,
                        q.faults,
                        q.reason
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugin { command: PluginCommand::Resume { config, connector } } => {
            let config = Config::load(&config)?;
            if !config.connectors.contains_key(&connector) {
                eprintln!("error: no connector named `{connector}` in {}", config.file.display());
                return Ok(ExitCode::from(2));
            }
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("failed to create {}", config.data_dir.display()))?;
            let state = State::open(&config.data_dir)?;
            match state.resume_connector(&connector)? {
                Some(q) => println!("connector `{connector}` resumed (quarantined since {}: {})", q.at, q.reason),
                None => println!("connector `{connector}` was not quarantined"),
            }
            state.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Secret { command } => secret(command),
        Command::Plugin { command: PluginCommand::Check { file } } => {
            let runtime = Runtime::new()?;
            match runtime.load_plugin(&file) {
                Ok(p) => {
                    println!("{}: {} (contract {}), sha256 {}", file.display(), p.world, p.contract_version, p.sha256);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("refused: {e}");
                    Ok(ExitCode::from(2))
                }
            }
        }
        Command::Plugin { command: PluginCommand::List { config } } => {
            let config = Config::load(&config)?;
            let set = Runtime::new()?.load_dir(&config.plugin_dir)?;
            for p in set.plugins.values() {
                println!("{:<20} {:<15} contract {:<8} {}", p.name, p.world.to_string(), p.contract_version, p.version());
            }
            for e in &set.refused {
                println!("refused: {e}");
            }
            Ok(if set.refused.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(2) })
        }
        Command::Dlq { config, link } => {
            let service = Service::open(Config::load(&config)?)?;
            for name in service.config.links.keys().filter(|n| link.as_ref().is_none_or(|l| l == *n)) {
                for letter in service.state.dead_letters(name)? {
                    println!("{name}\t{}\t{}\t{}\t{}\t{}", letter.at, letter.operation, letter.employee_id, letter.idempotency_key, letter.reason);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn secret(command: SecretCommand) -> anyhow::Result<ExitCode> {
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
                return Ok(ExitCode::from(1));
            }
            println!("secret `{name}` removed");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_report(r: &RunReport) {
    println!("link {} ({} listing)", r.link, if r.full_listing { "full" } else { "changes-only" });
    println!("  employees fetched    {}", r.employees_fetched);
    println!("  users created        {}", r.users_created);
    println!("  users updated        {}", r.users_updated);
    println!("  users suspended      {}", r.users_suspended);
    println!("  users reactivated    {}", r.users_reactivated);
    println!("  enrollments          {}", r.enrollments);
    println!("  completions fetched  {}", r.completions_fetched);
    println!("  completions written  {}", r.completions_written);
    println!("  completions skipped  {}", r.completions_skipped);
    println!("  dead letters         {}", r.dead_lettered);
    println!("  retries              {}", r.retries);
}
