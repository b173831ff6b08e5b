//! The `switchyard` command line.
//!
//! Exit codes: 0 success; 1 failure; 2 invalid configuration, plugin or
//! usage; 3 a link stopped and needs an operator (credentials, config).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use switchyard::config::{Config, ConfigError};
use switchyard::runtime::Runtime;
use switchyard::service::Service;
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
            } else if e.downcast_ref::<LinkStopped>().is_some() {
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
            Ok(ExitCode::SUCCESS)
        }
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
