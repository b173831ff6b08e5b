//! `switchyard audit`: the audit trail: verify the hash chain, print its
//! head, read (tail, search) and export records; subject erasure and
//! retention.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use switchyard::audit::{Entry, Event, Filter, Kind, cli_actor};
use switchyard::model::EmployeeId;
use switchyard::store::Store;

use super::common::{ConfigArg, Exit, open_state, record_action};
use super::progress::Progress;

#[derive(Subcommand)]
pub enum AuditCommand {
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
        employee: EmployeeId,
    },
    /// Apply the configured retention now (syncs also apply it).
    Prune {
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Args)]
pub struct FilterArgs {
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
    switchyard::audit::check_time(text)
        .map(|()| text.to_owned())
        .map_err(|e| e.to_string())
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

pub fn execute(command: AuditCommand) -> anyhow::Result<Exit> {
    match command {
        AuditCommand::Verify {
            config,
            expect,
            json,
        } => verify(&config, expect.as_deref(), json),
        AuditCommand::Head { config } => {
            let (_, state) = open_state(&config)?;
            println!("{}", state.audit().head());
            Ok(Exit::Success)
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
            Ok(Exit::Success)
        }
        AuditCommand::Search {
            config,
            filter,
            json,
        } => {
            let (_, state) = open_state(&config)?;
            let matched = state
                .audit()
                .scan(&filter.into(), &mut |e| print_entry(&e, json))?;
            if !json {
                eprintln!("{matched} record(s)");
            }
            Ok(Exit::Success)
        }
        AuditCommand::Export {
            config,
            filter,
            output,
        } => export(&config, filter.into(), output),
        AuditCommand::Forget { config, employee } => {
            let (_, state) = open_state(&config)?;
            let f = state.forget(&employee, &cli_actor())?;
            println!(
                "employee {employee}: personal fields erased from {} snapshot(s), {} outbox operation(s), {} dead letter(s); {} audit payload(s) erased",
                f.snapshots, f.outbox, f.dead_letters, f.audit_payloads
            );
            Ok(Exit::Success)
        }
        AuditCommand::Prune { config } => {
            let (config, state) = open_state(&config)?;
            let r = switchyard::service::apply_retention(&config, &state)?;
            state.flush()?;
            println!(
                "retention: {} audit record(s), {} dead letter(s), {} departed employee snapshot(s) removed",
                r.audit_records, r.dead_letters, r.snapshots
            );
            Ok(Exit::Success)
        }
    }
}

/// `audit verify`: exit 1 if the chain is broken or `expect` (`SEQ:HASH`)
/// does not match.
fn verify(config: &ConfigArg, expect: Option<&str>, json: bool) -> anyhow::Result<Exit> {
    let (_, state) = open_state(config)?;
    let audit = state.audit();
    let records = audit.head().seq.saturating_sub(audit.anchor()?.seq);
    let progress = Progress::new(Some(records), "records");
    let v = audit.verify_with(&mut |n| progress.set(n))?;
    progress.done();
    let mut failure = v
        .broken
        .as_ref()
        .map(|b| format!("audit chain broken at record {}: {}", b.seq, b.reason));
    if failure.is_none()
        && let Some(expect) = expect
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
        None => Ok(Exit::Success),
        Some(f) => {
            eprintln!("error: {f}");
            Ok(Exit::Failure)
        }
    }
}

/// `audit export`: JSON Lines to a file or stdout; the export itself is
/// recorded (it carries personal data).
fn export(config: &ConfigArg, filter: Filter, output: Option<PathBuf>) -> anyhow::Result<Exit> {
    use std::io::Write;
    let (_, state) = open_state(config)?;
    let progress = Progress::new(None, "records written");
    let write = |out: &mut dyn Write| -> anyhow::Result<usize> {
        let records = state.audit().scan(&filter, &mut |e| {
            serde_json::to_writer(&mut *out, &e)?;
            out.write_all(b"\n")?;
            progress.inc();
            Ok(())
        })?;
        out.flush()?;
        Ok(records)
    };
    let records = match &output {
        // Written beside the target and renamed over it when complete: a
        // killed export leaves the previous file (or none), never half of one.
        Some(path) => {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let tmp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("failed to create a file in {}", dir.display()))?;
            let mut out = std::io::BufWriter::new(tmp);
            let records = write(&mut out)?;
            let tmp = out.into_inner().map_err(|e| e.into_error())?;
            tmp.as_file().sync_all()?;
            tmp.persist(path)
                .with_context(|| format!("failed to write {}", path.display()))?;
            records
        }
        None => write(&mut std::io::BufWriter::new(std::io::stdout().lock()))?,
    };
    progress.done();
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
    Ok(Exit::Success)
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
