//! The `switchyard` command line.
//!
//! Exit codes: 0 success; 1 failure; 2 invalid configuration, plugin or
//! usage; 3 a link stopped or halted and needs an operator (credentials,
//! config, mass deactivation, a quarantined connector).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use switchyard::audit::{Entry, Event, Filter, Kind, cli_actor};
use switchyard::config::{Config, ConfigError};
use switchyard::engine::{RunOptions, RunReport};
use switchyard::model::{DeadLetter, OpKind};
use switchyard::runtime::Runtime;
use switchyard::secrets::{SecretStore, StoreKey};
use switchyard::service::{RunOutcome, Service};
use switchyard::store::State;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Keeps an HRIS and an LMS in sync through sandboxed WebAssembly connector plugins"
)]
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

#[derive(Args)]
struct ConfigArg {
    /// Configuration file.
    #[arg(
        long,
        short,
        env = "SWITCHYARD_CONFIG",
        default_value = "switchyard.toml"
    )]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run as a long-running service: scheduled syncs, plugin hot reload,
    /// admin API and metrics. Stops cleanly on SIGTERM or SIGINT (exit 0).
    Run {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Run a sync of one link, or of every link.
    Sync {
        #[command(flatten)]
        config: ConfigArg,
        /// Run once and exit (the default; `switchyard run` runs on schedule).
        #[arg(long)]
        once: bool,
        /// Print the plan; make no write call and change no state.
        #[arg(long)]
        dry_run: bool,
        /// Go ahead with more deactivations than `max_deactivations` allows.
        #[arg(long)]
        approve_deactivations: bool,
        /// List every employee instead of the changes since the last run
        /// (notes who is gone from the HRIS, for retention).
        #[arg(long)]
        full: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// The link to sync (default: all links).
        link: Option<String>,
    },
    /// Ask a running daemon (`switchyard run`) to sync a link now, through
    /// its admin API (address and token from the configuration's [daemon]).
    Trigger {
        #[command(flatten)]
        config: ConfigArg,
        /// The link.
        link: String,
    },
    /// What the state database holds for each link.
    Status {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Report drift between the HRIS snapshot, the LMS and the completions written.
    Reconcile {
        #[command(flatten)]
        config: ConfigArg,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// The link.
        link: String,
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
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// The audit trail: verify, read, export; retention and subject erasure.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain from its anchor to its head; report the first
    /// break. Exit 1 if the chain is broken or `--expect` does not match.
    Verify {
        #[command(flatten)]
        config: ConfigArg,
        /// A head exported earlier (`SEQ:HASH`, from `audit head`) that must
        /// still be in the chain with that hash.
        #[arg(long)]
        expect: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the chain head as `SEQ:HASH`, to keep somewhere else.
    Head {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// The last records (matching the filters).
    Tail {
        #[command(flatten)]
        config: ConfigArg,
        /// How many.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        #[command(flatten)]
        filter: FilterArgs,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Every record matching the filters.
    Search {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        filter: FilterArgs,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Export records matching the filters as JSON Lines (with hashes, so
    /// an export can be checked against the chain).
    Export {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        filter: FilterArgs,
        /// Write to this file instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Subject erasure: remove an employee's personal fields from
    /// snapshots, the outbox, dead letters and audit payloads. The chain
    /// stays verifiable. Erase in the HRIS first: a later sync stores what
    /// the HRIS still lists.
    Forget {
        #[command(flatten)]
        config: ConfigArg,
        /// HRIS employee id.
        employee: String,
    },
    /// Apply the configured retention now (syncs also apply it).
    Prune {
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Args)]
struct FilterArgs {
    /// Only this link.
    #[arg(long)]
    link: Option<String>,
    /// Only this HRIS employee id.
    #[arg(long)]
    employee: Option<String>,
    /// Only this course.
    #[arg(long)]
    course: Option<String>,
    /// Only this kind, or kinds under it (`user` matches `user.created`).
    #[arg(long)]
    kind: Option<String>,
    /// From this time on (RFC 3339 or yyyy-mm-dd).
    #[arg(long, value_parser = parse_time)]
    since: Option<String>,
    /// Before this time (RFC 3339 or yyyy-mm-dd).
    #[arg(long, value_parser = parse_time)]
    until: Option<String>,
}

fn parse_time(text: &str) -> Result<String, String> {
    let rfc3339 =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).is_ok();
    let date = time::Date::parse(
        text,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .is_ok();
    if rfc3339 || date {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "`{text}` is neither an RFC 3339 time nor a yyyy-mm-dd date"
        ))
    }
}

impl From<FilterArgs> for Filter {
    fn from(f: FilterArgs) -> Filter {
        Filter {
            link: f.link,
            employee: f.employee,
            course: f.course,
            kind: f.kind,
            since: f.since,
            until: f.until,
        }
    }
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

#[derive(Subcommand)]
enum PluginCommand {
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
        connector: String,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead letters.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        /// The link (default: all links).
        link: Option<String>,
    },
    /// Show one dead letter in full.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        /// The link.
        link: String,
        /// Dead letter id.
        id: u64,
    },
    /// Put a dead letter back in the outbox and run the link's outbox.
    Replay {
        #[command(flatten)]
        config: ConfigArg,
        /// The link.
        link: String,
        /// Dead letter ids (in the order to replay).
        ids: Vec<u64>,
    },
    /// Delete a dead letter.
    Drop {
        #[command(flatten)]
        config: ConfigArg,
        /// The link.
        link: String,
        /// Dead letter id.
        id: u64,
    },
}

#[derive(Subcommand)]
enum SecretCommand {
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

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,switchyard=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
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
            } else {
                ExitCode::from(RunOutcome::of_error(&e).exit_code())
            }
        }
    }
}

fn open(config: &ConfigArg) -> anyhow::Result<Service> {
    Service::open(Config::load(&config.config)?)
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { config } => {
            let config = Config::load(&config.config)?;
            switchyard::daemon::run(config, switchyard::daemon::shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugin {
            command: PluginCommand::Inspect { file, config },
        } => inspect(&file, config.as_deref()),
        Command::Trigger { config, link } => trigger(&Config::load(&config.config)?, &link).await,
        Command::Sync {
            config,
            once: _,
            dry_run,
            approve_deactivations,
            full,
            json,
            link,
        } => {
            let service = open(&config)?;
            let options = RunOptions {
                dry_run,
                approve_deactivations,
                full_listing: full,
            };
            let links: Vec<String> = match link {
                Some(link) => vec![link],
                None => service.config.links.keys().cloned().collect(),
            };
            let today = time::OffsetDateTime::now_utc().date();
            let progress = Progress::new(links.len() as u64);
            let mut reports = Vec::new();
            for link in &links {
                progress.start(link);
                let report = service.sync_link_with(link, options, today).await;
                progress.finish(link, report.as_ref().ok());
                reports.push(report?);
            }
            progress.done();
            if json {
                println!("{}", serde_json::to_string_pretty(&reports)?);
            } else {
                for report in &reports {
                    print_report(report);
                }
                if !dry_run {
                    println!("state: {}", service.config.data_dir.display());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { config } => {
            let service = open(&config)?;
            println!(
                "{:<16} {:>9} {:>9} {:>11} {:>11} {:>7} {:>12}  STATUS",
                "LINK",
                "EMPLOYEES",
                "ACCOUNTS",
                "ENROLLMENTS",
                "COMPLETIONS",
                "OUTBOX",
                "DEAD LETTERS"
            );
            for link in service.config.links.keys() {
                let c = service.state.counts(link);
                let status = service.state.link_status(link)?;
                println!(
                    "{link:<16} {:>9} {:>9} {:>11} {:>11} {:>7} {:>12}  {}",
                    c.employees,
                    c.accounts,
                    c.enrollments,
                    c.completions,
                    c.outbox,
                    c.dead_letters,
                    status.halted.as_deref().unwrap_or("ok")
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
        Command::Reconcile {
            config,
            format,
            link,
        } => {
            let service = open(&config)?;
            let drifts = service.reconcile(&link).await?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&drifts)?),
                Format::Csv => {
                    let mut out = csv::Writer::from_writer(std::io::stdout());
                    out.write_record(["kind", "employee_id", "course", "detail"])?;
                    for d in &drifts {
                        let kind = serde_json::to_value(d.kind)?;
                        out.write_record([
                            kind.as_str().unwrap_or_default(),
                            &d.employee_id,
                            d.course.as_deref().unwrap_or(""),
                            &d.detail,
                        ])?;
                    }
                    out.flush()?;
                }
                Format::Table => {
                    println!("{:<24} {:<10} {:<16} DETAIL", "DRIFT", "EMPLOYEE", "COURSE");
                    for d in &drifts {
                        let kind = serde_json::to_value(d.kind)?;
                        println!(
                            "{:<24} {:<10} {:<16} {}",
                            kind.as_str().unwrap_or_default(),
                            d.employee_id,
                            d.course.as_deref().unwrap_or("-"),
                            d.detail
                        );
                    }
                    println!("{} drift(s)", drifts.len());
                }
            }
            // Drift is a finding, not a failure of the command; scripts can
            // count rows.
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugin {
            command: PluginCommand::Resume { config, connector },
        } => {
            let config = Config::load(&config)?;
            if !config.connectors.contains_key(&connector) {
                eprintln!(
                    "error: no connector named `{connector}` in {}",
                    config.file.display()
                );
                return Ok(ExitCode::from(2));
            }
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("failed to create {}", config.data_dir.display()))?;
            let state = State::open(&config.data_dir)?;
            let lifted = state.resume_connector(&connector)?;
            record_action(
                &state,
                Event::new(Kind::AdminConnectorResumed)
                    .connector(&connector)
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
            Ok(ExitCode::SUCCESS)
        }
        Command::Secret { command } => secret(command),
        Command::Plugin {
            command: PluginCommand::Check { file },
        } => {
            let runtime = Runtime::new()?;
            match runtime.load_plugin(&file) {
                Ok(p) => {
                    println!(
                        "{}: {} (contract {}), sha256 {}",
                        file.display(),
                        p.world,
                        p.contract_version,
                        p.sha256
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("refused: {e}");
                    Ok(ExitCode::from(2))
                }
            }
        }
        Command::Plugin {
            command: PluginCommand::List { config },
        } => {
            let config = Config::load(&config.config)?;
            let set = Runtime::new()?.load_dir(&config.plugin_dir)?;
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
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Command::Dlq { command } => dlq(command).await,
        Command::Audit { command } => audit(command),
    }
}

/// The state database of a configuration, without loading plugins (the
/// audit commands must work when a plugin does not).
fn open_state(config: &ConfigArg) -> anyhow::Result<(Config, State)> {
    let config = Config::load(&config.config)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("failed to create {}", config.data_dir.display()))?;
    let state = State::open(&config.data_dir)?;
    Ok((config, state))
}

/// Record a command-line action in the audit log of `data_dir`.
fn record_action(state: &State, event: Event) -> anyhow::Result<()> {
    state.audit().append(event.actor(cli_actor()))?;
    state.flush()
}

fn print_entry(e: &Entry, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(e)?);
        return Ok(());
    }
    let r = &e.record;
    let about: Vec<String> = [
        r.link.as_ref().map(|l| format!("link={l}")),
        r.employee.as_ref().map(|x| format!("employee={x}")),
        r.connector.as_ref().map(|x| format!("connector={x}")),
        r.course.as_ref().map(|x| format!("course={x}")),
        r.actor.as_ref().map(|x| format!("actor={x}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let detail = if r.detail.is_null() {
        String::new()
    } else {
        r.detail.to_string()
    };
    let why = r
        .cause
        .as_ref()
        .map(|c| format!(" because {c}"))
        .unwrap_or_default();
    println!(
        "{:>7} {} {:<24} {}{why} {detail}",
        r.seq,
        r.at,
        r.kind,
        about.join(" ")
    );
    Ok(())
}

fn audit(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify {
            config,
            expect,
            json,
        } => {
            let (_, state) = open_state(&config)?;
            let v = state.audit().verify()?;
            let mut failure = v
                .broken
                .as_ref()
                .map(|b| format!("audit chain broken at record {}: {}", b.seq, b.reason));
            if failure.is_none()
                && let Some(expect) = &expect
            {
                let (seq, hash) = expect
                    .split_once(':')
                    .and_then(|(s, h)| Some((s.parse::<u64>().ok()?, h)))
                    .with_context(|| format!("--expect `{expect}` is not SEQ:HASH"))?;
                failure = match state.audit().hash_of(seq)? {
                    Some(h) if h == hash => None,
                    Some(h) => Some(format!(
                        "record {seq} has hash {h}, not the expected {hash}"
                    )),
                    None if seq <= v.anchor.seq => Some(format!(
                        "record {seq} was pruned by retention (the chain now starts after record {}); it cannot be checked",
                        v.anchor.seq
                    )),
                    None => Some(format!(
                        "record {seq} does not exist (head is {})",
                        v.head.seq
                    )),
                };
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({ "verification": v, "failure": failure })
                    )?
                );
            } else if failure.is_none() {
                println!(
                    "audit chain ok: {} records ({}..{}), head {}; {} personal payloads checked, {} erased",
                    v.records,
                    v.anchor.seq + 1,
                    v.head.seq,
                    v.head,
                    v.personal_checked,
                    v.erased
                );
            }
            match failure {
                None => Ok(ExitCode::SUCCESS),
                Some(f) => {
                    eprintln!("error: {f}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        AuditCommand::Head { config } => {
            let (_, state) = open_state(&config)?;
            println!("{}", state.audit().head());
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Tail {
            config,
            lines,
            filter,
            json,
        } => {
            let (_, state) = open_state(&config)?;
            for e in state.audit().read(&filter.into(), Some(lines))? {
                print_entry(&e, json)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Search {
            config,
            filter,
            json,
        } => {
            let (_, state) = open_state(&config)?;
            let matched = state
                .audit()
                .scan(&filter.into(), |e| print_entry(&e, json))?;
            if !json {
                eprintln!("{matched} record(s)");
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Export {
            config,
            filter,
            output,
        } => {
            use std::io::Write;
            let (_, state) = open_state(&config)?;
            let filter: Filter = filter.into();
            let mut out: Box<dyn Write> = match &output {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("failed to create {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let records = state.audit().scan(&filter, |e| {
                serde_json::to_writer(&mut out, &e)?;
                out.write_all(b"\n")?;
                Ok(())
            })?;
            out.flush()?;
            drop(out);
            // An export carries personal data: who took it is on record.
            record_action(
                &state,
                Event::new(Kind::AdminAuditExported).detail(serde_json::json!({
                    "records": records,
                    "filter": filter,
                    "output": output.as_ref().map(|p| p.display().to_string()),
                })),
            )?;
            if let Some(path) = output {
                eprintln!("{records} record(s) written to {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Forget { config, employee } => {
            let (_, state) = open_state(&config)?;
            let f = state.forget(&employee, &cli_actor())?;
            println!(
                "employee {employee}: personal fields erased from {} snapshot(s), {} outbox operation(s), {} dead letter(s); {} audit payload(s) erased",
                f.snapshots, f.outbox, f.dead_letters, f.audit_payloads
            );
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Prune { config } => {
            let (config, state) = open_state(&config)?;
            let r = switchyard::service::apply_retention(&config, &state)?;
            state.flush()?;
            println!(
                "retention: {} audit record(s), {} dead letter(s), {} departed employee snapshot(s) removed",
                r.audit_records, r.dead_letters, r.snapshots
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn describe(kind: &OpKind) -> String {
    match kind {
        OpKind::UpsertUser { employee } => {
            format!("upsert-user {}", employee.email.as_deref().unwrap_or(""))
        }
        OpKind::SetActive { active } => format!("set-active {active}"),
        OpKind::Enroll { course, due, .. } => {
            format!("enroll {course} due {}", due.as_deref().unwrap_or("-"))
        }
        OpKind::Unenroll { course } => format!("unenroll {course}"),
        OpKind::PushCompletion { completion, .. } => format!(
            "push-completion {} attempt {}",
            completion.course_id, completion.attempt_id
        ),
    }
}

fn print_letter_line(link: &str, l: &DeadLetter) {
    println!(
        "{link}\t{}\t{}\t{}\t{}\t{}",
        l.id,
        l.at,
        l.operation.employee_id,
        describe(&l.operation.kind),
        l.reason
    );
}

async fn dlq(command: DlqCommand) -> anyhow::Result<ExitCode> {
    match command {
        DlqCommand::List { config, json, link } => {
            let service = open(&config)?;
            let mut all = Vec::new();
            for name in service
                .config
                .links
                .keys()
                .filter(|n| link.as_ref().is_none_or(|l| l == *n))
            {
                for letter in service.state.dead_letters(name)? {
                    all.push((name.clone(), letter));
                }
            }
            if json {
                let rows: Vec<_> = all
                    .iter()
                    .map(|(link, l)| serde_json::json!({ "link": link, "dead_letter": l }))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("LINK\tID\tAT\tEMPLOYEE\tOPERATION\tREASON");
                for (link, l) in &all {
                    print_letter_line(link, l);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Show { config, link, id } => {
            let service = open(&config)?;
            service.link(&link)?;
            let letter = service
                .state
                .dead_letter_by_id(&link, id)?
                .with_context(|| format!("link `{link}` has no dead letter {id}"))?;
            println!("{}", serde_json::to_string_pretty(&letter)?);
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Replay { config, link, ids } => {
            let service = open(&config)?;
            service.link(&link)?;
            for id in &ids {
                let op = service.state.replay_dead_letter(&link, *id)?;
                service.record_action(
                    Event::new(Kind::AdminDlqReplayed)
                        .link(&link)
                        .employee(&op.employee_id)
                        .key(&op.key)
                        .detail(
                            serde_json::json!({ "dead_letter": id, "operation": op.kind.name() }),
                        ),
                )?;
                println!(
                    "replaying dead letter {id}: {} for employee {}",
                    describe(&op.kind),
                    op.employee_id
                );
            }
            let report = service.drain_outbox(&link).await?;
            print_report(&report);
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Drop { config, link, id } => {
            let service = open(&config)?;
            service.link(&link)?;
            let letter = service.state.drop_dead_letter(&link, id)?;
            service.record_action(
                Event::new(Kind::AdminDlqDropped)
                    .link(&link)
                    .employee(&letter.operation.employee_id)
                    .key(&letter.operation.key)
                    .detail(serde_json::json!({ "dead_letter": id, "operation": letter.operation.kind.name() })),
            )?;
            println!(
                "dropped dead letter {id}: {}",
                describe(&letter.operation.kind)
            );
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
                return Ok(ExitCode::from(1));
            }
            audit_secret_change(&config, Kind::AdminSecretRemoved, &name);
            println!("secret `{name}` removed");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Record a change to the secret store (its name, never its value). The
/// store is a file of its own; if the state database cannot be opened (a
/// running daemon holds it), say so rather than fail the change.
fn audit_secret_change(config: &Config, kind: Kind, name: &str) {
    let recorded = std::fs::create_dir_all(&config.data_dir)
        .map_err(anyhow::Error::from)
        .and_then(|()| State::open(&config.data_dir))
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

/// Progress of a long command: a bar on a terminal (stderr), plain lines
/// otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new(steps: u64) -> Progress {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(steps);
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed}] {bar:30} {pos}/{len} links  {msg}",
            ) {
                bar.set_style(style);
            }
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        Progress { bar }
    }

    fn start(&self, link: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(format!("syncing {link}")),
            None => eprintln!("syncing link {link}"),
        }
    }

    fn finish(&self, link: &str, report: Option<&RunReport>) {
        let line = match report {
            Some(r) => format!(
                "link {link}: {} writes, {} dead letters, {} pending",
                r.writes(),
                r.dead_lettered,
                r.pending
            ),
            None => format!("link {link}: failed"),
        };
        match &self.bar {
            Some(bar) => {
                bar.inc(1);
                bar.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `trigger`: POST /v1/links/{link}/sync on the daemon's admin listener.
async fn trigger(config: &Config, link: &str) -> anyhow::Result<ExitCode> {
    let source = config
        .daemon
        .admin_token
        .as_ref()
        .with_context(|| format!("{} has no [daemon] admin_token", config.file.display()))?;
    let token =
        switchyard::secrets::resolve_secret(source, Some(&SecretStore::in_dir(&config.data_dir)))
            .map_err(|e| anyhow::anyhow!("daemon admin_token: {e}"))?;
    let mut addr = config.daemon.admin_listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = format!("http://{addr}/v1/links/{link}/sync");
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token.expose())
        .send()
        .await
        .with_context(|| format!("failed to reach the daemon at {url}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        println!("sync of link `{link}` triggered");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: the daemon answered {status}: {body}");
        Ok(ExitCode::from(
            if status == reqwest::StatusCode::NOT_FOUND {
                2
            } else {
                1
            },
        ))
    }
}

/// `plugin inspect`: the component's world, contract and imports, and what
/// the configuration grants the connectors that use it.
fn inspect(file: &std::path::Path, config: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::new()?;
    let plugin = match runtime.load_plugin(file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("refused: {e}");
            return Ok(ExitCode::from(2));
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
        return Ok(ExitCode::SUCCESS);
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
        let auth = match &c.auth {
            None => "none".to_owned(),
            Some(a) => format!(
                "{} (injected by the host for the allowed origins; the plugin never sees it)",
                auth_kind(a)
            ),
        };
        println!("  credential       {auth}");
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
    Ok(ExitCode::SUCCESS)
}

fn auth_kind(auth: &switchyard::config::AuthConfig) -> &'static str {
    use switchyard::config::AuthConfig;
    match auth {
        AuthConfig::Basic { .. } => "basic",
        AuthConfig::Bearer { .. } => "bearer",
        AuthConfig::Header { .. } => "header",
        AuthConfig::Query { .. } => "query parameter",
        AuthConfig::OAuth2 { .. } => "oauth2 client credentials",
    }
}

fn print_report(r: &RunReport) {
    let mode = if r.dry_run {
        "dry run, nothing written"
    } else if r.full_listing {
        "full listing"
    } else {
        "changes-only listing"
    };
    println!("link {} ({mode})", r.link);
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
}
