//! The `switchyard` command line: the top-level parser and the dispatch to
//! the subcommands, one file each under `cli/`.
//!
//! Exit codes are listed in one place: [`common::Exit`].

pub mod audit;
pub mod common;
pub mod dlq;
pub mod matching;
pub mod plugin;
pub mod progress;
pub mod reconcile;
pub mod run;
pub mod secret;
pub mod status;
pub mod sync;
pub mod trigger;

use clap::{Parser, Subcommand, ValueEnum};

use self::common::Exit;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Keeps an HRIS and an LMS in sync through sandboxed WebAssembly connector plugins"
)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run as a long-running service: scheduled syncs, plugin hot reload,
    /// admin API and metrics. Stops cleanly on SIGTERM or SIGINT (exit 0).
    Run(run::RunArgs),
    /// Run a sync of one link, or of every link.
    Sync(sync::SyncArgs),
    /// Ask a running daemon (`switchyard run`) to sync a link now, through
    /// its admin API (address and token from the configuration's [daemon]).
    Trigger(trigger::TriggerArgs),
    /// What the state database holds for each link.
    Status(status::StatusArgs),
    /// Report drift between the HRIS snapshot, the LMS and the completions written.
    Reconcile(reconcile::ReconcileArgs),
    /// Which existing LMS account each employee of a link would be bound
    /// to, and what a person must decide before the first sync. Reads
    /// both systems, writes nothing. Exit 0: nothing to decide; 6: see
    /// the report.
    Match(matching::MatchArgs),
    /// Inspect plugins.
    Plugin {
        #[command(subcommand)]
        command: plugin::PluginCommand,
    },
    /// The encrypted secret store in the data directory (`store:NAME`).
    Secret {
        #[command(subcommand)]
        command: secret::SecretCommand,
    },
    /// Dead letters: operations that were given up on.
    Dlq {
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// The audit trail: verify, read, export; retention and subject erasure.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
}

/// Run a subcommand. An error is mapped to its exit code by
/// [`common::exit_code_of`].
pub async fn execute(command: Command) -> anyhow::Result<Exit> {
    match command {
        Command::Run(args) => run::execute(args).await,
        Command::Sync(args) => sync::execute(args).await,
        Command::Trigger(args) => trigger::execute(args).await,
        Command::Status(args) => status::execute(args),
        Command::Reconcile(args) => reconcile::execute(args).await,
        Command::Match(args) => matching::execute(args).await,
        Command::Plugin { command } => plugin::execute(command).await,
        Command::Secret { command } => secret::execute(command),
        Command::Dlq { command } => dlq::execute(command).await,
        Command::Audit { command } => audit::execute(command),
    }
}
