//! `switchyard dlq`: dead letters (operations that were given up on): list,
//! show, replay through the outbox, drop.

use anyhow::Context;
use clap::Subcommand;
use switchyard::audit::{Event, Kind};
use switchyard::model::{DeadLetter, LinkName, OpKind};

use super::common::{ConfigArg, Exit, exit_of, open, print_report};

#[derive(Subcommand)]
pub enum DlqCommand {
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
        link: LinkName,
        /// Dead letter id.
        id: u64,
    },
    /// Put a dead letter back in the outbox and run the link's outbox.
    Replay {
        #[command(flatten)]
        config: ConfigArg,
        /// The link.
        link: LinkName,
        /// Dead letter ids (in the order to replay).
        ids: Vec<u64>,
    },
    /// Delete a dead letter.
    Drop {
        #[command(flatten)]
        config: ConfigArg,
        /// The link.
        link: LinkName,
        /// Dead letter id.
        id: u64,
    },
}

pub async fn execute(command: DlqCommand) -> anyhow::Result<Exit> {
    match command {
        DlqCommand::List { config, json, link } => {
            let service = open(&config)?;
            let mut all = Vec::new();
            for name in service
                .config
                .links
                .keys()
                .filter(|n| link.as_ref().is_none_or(|l| l == n.as_str()))
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
            Ok(Exit::Success)
        }
        DlqCommand::Show { config, link, id } => {
            let service = open(&config)?;
            service.link(&link)?;
            let letter = service
                .state
                .dead_letter_by_id(&link, id)?
                .with_context(|| format!("link `{link}` has no dead letter {id}"))?;
            println!("{}", serde_json::to_string_pretty(&letter)?);
            Ok(Exit::Success)
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
            Ok(exit_of(std::slice::from_ref(&report)))
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
            Ok(Exit::Success)
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
            format!(
                "enroll {course} due {}",
                due.map_or_else(|| "-".to_owned(), |d| d.to_string())
            )
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
