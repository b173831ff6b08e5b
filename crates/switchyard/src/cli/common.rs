//! What several subcommands share: the `--config` argument, the exit codes,
//! opening a configuration's service or state, recording an operator's
//! action in the audit log, and printing a run report.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use switchyard::audit::{Event, cli_actor};
use switchyard::config::{Config, ConfigError};
use switchyard::engine::RunReport;
use switchyard::service::{RunOutcome, Service, SyncError};
use switchyard::store::{SledStore, Store};

/// The exit codes a subcommand returns itself. The other codes come from an
/// error: [`exit_code_of`].
///
/// - 0 [`Exit::Success`];
/// - 1 [`Exit::Failure`], or an error that is not below;
/// - 2 [`Exit::Invalid`], or an invalid configuration ([`ConfigError`]);
///   clap also exits 2 on a usage error;
/// - 3 a link stopped or halted and needs an operator (credentials, config,
///   mass deactivation, a quarantined connector): from
///   [`RunOutcome::exit_code`], never returned by a subcommand itself;
/// - 4 [`Exit::DeadLettered`]: a run finished and dead-lettered operations;
/// - 5 a vendor stayed unavailable through every retry (the next run
///   resumes): from [`RunOutcome::exit_code`];
/// - 6 [`Exit::NeedsDecision`]: `match` found something a person must
///   decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Done.
    Success = 0,
    /// The command ran and found a failure: a broken audit chain, a secret
    /// that is not in the store, a daemon that refused a trigger.
    Failure = 1,
    /// Invalid input: a plugin file refused, an unknown connector or link.
    Invalid = 2,
    /// The run finished but gave up on some operations: they wait in the
    /// dead letters (`switchyard dlq list`).
    DeadLettered = 4,
    /// A report found something a person must decide (`match`).
    NeedsDecision = 6,
}

/// How a report is printed.
#[derive(Clone, Copy, PartialEq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON document.
    Json,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// The exit code of a command that failed with `e`: 2 for an invalid
/// configuration, else what [`RunOutcome`] says (3 if a link needs an
/// operator, 1 otherwise).
pub fn exit_code_of(e: &anyhow::Error) -> ExitCode {
    if e.downcast_ref::<ConfigError>().is_some() {
        Exit::Invalid.into()
    } else {
        let outcome = e
            .downcast_ref::<SyncError>()
            .map_or(RunOutcome::Failed, RunOutcome::of_error);
        ExitCode::from(outcome.exit_code())
    }
}

#[derive(Args)]
pub struct ConfigArg {
    /// Configuration file.
    #[arg(
        long,
        short,
        env = "SWITCHYARD_CONFIG",
        default_value = "switchyard.toml"
    )]
    pub config: PathBuf,
}

/// The configuration's service: connectors, plugins, state.
pub fn open(config: &ConfigArg) -> anyhow::Result<Service> {
    Service::open(Config::load(&config.config)?)
}

/// The configuration's service with connectors whose plugin is missing or
/// unfit paused instead of refused (`status`).
pub fn open_tolerant(config: &ConfigArg) -> anyhow::Result<Service> {
    Service::open_tolerant(Config::load(&config.config)?)
}

/// The state database of a configuration, without loading plugins (the
/// audit commands must work when a plugin does not).
pub fn open_state(config: &ConfigArg) -> anyhow::Result<(Config, SledStore)> {
    let config = Config::load(&config.config)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("failed to create {}", config.data_dir.display()))?;
    let state = config.open_store()?;
    Ok((config, state))
}

/// Record a command-line action in the audit log of `data_dir`.
pub fn record_action(state: &dyn Store, event: Event) -> anyhow::Result<()> {
    state.audit().append(event.actor(cli_actor()))?;
    state.flush()
}

/// How commands that run links end: 4 when any run gave up on operations
/// (they wait in the dead letters), else success.
pub fn exit_of(reports: &[RunReport]) -> Exit {
    if reports.iter().any(|r| r.dead_lettered > 0) {
        Exit::DeadLettered
    } else {
        Exit::Success
    }
}

/// A run report as text (`sync`, `dlq replay`).
pub fn print_report(r: &RunReport) {
    let mode = if r.dry_run {
        "dry run, nothing written"
    } else if r.full_listing {
        "full listing"
    } else {
        "changes-only listing"
    };
    println!("link {} ({mode})", r.link);
    if let Some(n) = r.in_scope {
        println!("  in the link's scope  {n} employees");
    }
    if r.dry_run {
        println!("  employees fetched    {}", r.employees_fetched);
        println!("  completions fetched  {}", r.completions_fetched);
        println!("  planned operations   {}", r.plan.len());
        for op in &r.plan {
            println!(
                "    {:<16} {:<8} {:<16} {}",
                op.operation,
                op.employee_id,
                op.course.as_deref().unwrap_or("-"),
                op.cause
            );
        }
        return;
    }
    println!("  employees fetched    {}", r.employees_fetched);
    if r.resumed > 0 {
        println!("  resumed from outbox  {}", r.resumed);
    }
    println!("  users created        {}", r.users_created);
    println!("  users updated        {}", r.users_updated);
    println!("  users adopted        {}", r.users_adopted);
    println!("  users suspended      {}", r.users_suspended);
    println!("  users reactivated    {}", r.users_reactivated);
    println!("  enrollments          {}", r.enrollments);
    println!("  unenrollments        {}", r.unenrollments);
    println!("  completions fetched  {}", r.completions_fetched);
    println!("  completions written  {}", r.completions_written);
    println!("  not winning (policy) {}", r.completions_not_winning);
    println!("  completions skipped  {}", r.completions_skipped);
    println!("  dead letters         {}", r.dead_lettered);
    println!("  retries              {}", r.retries);
    println!("  still in outbox      {}", r.pending);
    for note in &r.notes {
        println!("  note: {note}");
    }
}
