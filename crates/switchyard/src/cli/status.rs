//! `switchyard status`: what the state database holds for each link (counts,
//! halted links) and which connectors are quarantined.

use clap::Args;

use super::common::{ConfigArg, Exit, open_tolerant};

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    config: ConfigArg,
}

pub fn execute(args: StatusArgs) -> anyhow::Result<Exit> {
    let service = open_tolerant(&args.config)?;
    println!(
        "{:<16} {:>9} {:>9} {:>11} {:>11} {:>7} {:>12}  STATUS",
        "LINK", "EMPLOYEES", "ACCOUNTS", "ENROLLMENTS", "COMPLETIONS", "OUTBOX", "DEAD LETTERS"
    );
    for link in service.config.links.keys() {
        let c = service.state.counts(link)?;
        let state = service.link_state(link)?;
        println!(
            "{link:<16} {:>9} {:>9} {:>11} {:>11} {:>7} {:>12}  {}",
            c.employees, c.accounts, c.enrollments, c.completions, c.outbox, c.dead_letters, state
        );
    }
    for (link, config) in &service.config.links {
        if let Some(scope) = &config.scope {
            // Page by page: the workforce is not held in memory.
            let mut covered = 0;
            let mut after = None;
            loop {
                let page = service.state.snapshots_after(link, after.as_ref(), 1_000)?;
                let Some(last) = page.last() else { break };
                after = Some(last.employee.id.clone());
                covered += page.iter().filter(|s| scope.covers(&s.employee)).count();
            }
            println!(
                "scope: link `{link}` manages {} ({covered} of the employees it knows)",
                scope.describe()
            );
        }
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
    Ok(Exit::Success)
}
