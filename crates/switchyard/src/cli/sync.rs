//! `switchyard sync`: run one sync of one link, or of every link in turn,
//! and print the reports (text or JSON); a progress bar on a terminal.

use clap::Args;
use switchyard::engine::RunOptions;

use super::common::{ConfigArg, Exit, exit_of, open, print_report};
use super::progress::Progress;

#[derive(Args)]
pub struct SyncArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Run once and exit: the default, so this flag has no effect (kept for
    /// scripts; `switchyard run` runs on schedule).
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
    /// Suspend the accounts of active employees outside the link's `scope`
    /// (a narrowed pilot); without it they are left alone.
    #[arg(long)]
    retire_out_of_scope: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// The link to sync (default: all links).
    link: Option<String>,
}

pub async fn execute(args: SyncArgs) -> anyhow::Result<Exit> {
    let SyncArgs {
        config,
        // `sync` always runs once, with or without `--once`, for one link
        // or all of them.
        once: _,
        dry_run,
        approve_deactivations,
        full,
        retire_out_of_scope,
        json,
        link,
    } = args;
    let service = open(&config)?;
    let options = RunOptions {
        dry_run,
        approve_deactivations,
        full_listing: full,
        retire_out_of_scope,
    };
    let links: Vec<String> = match link {
        Some(link) => vec![link],
        None => service.config.links.keys().map(|l| l.to_string()).collect(),
    };
    let today = switchyard::model::Date::today();
    let progress = Progress::new(Some(links.len() as u64), "links");
    let mut reports = Vec::new();
    for link in &links {
        progress.status(format!("syncing {link}"));
        let report = service.sync_link_with(link, options, today).await;
        progress.inc();
        progress.note(&match &report {
            Ok(r) => format!(
                "link {link}: {} writes, {} dead letters, {} pending",
                r.writes(),
                r.dead_lettered,
                r.pending
            ),
            Err(_) => format!("link {link}: failed"),
        });
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
    Ok(exit_of(&reports))
}
