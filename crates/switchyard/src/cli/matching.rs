//! `switchyard match`: the identity-matching report of a link, as a table,
//! CSV or JSON. Exit 0 when there is nothing to decide, 6 when there is.

use clap::Args;
use switchyard::engine::matching::{EmployeeMatch, MatchReport, Outcome};

use super::common::{ConfigArg, Exit, Format, open};
use super::progress::Progress;

#[derive(Args)]
pub struct MatchArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// The link.
    link: String,
}

pub async fn execute(args: MatchArgs) -> anyhow::Result<Exit> {
    let service = open(&args.config)?;
    let progress = Progress::new(None, "records");
    let report = service.match_link(&args.link, &progress.listed()).await?;
    progress.done();
    match args.format {
        Format::Json => {
            // Written as it is serialised: a report of 100,000 lines is
            // tens of MiB of text.
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            serde_json::to_writer_pretty(&mut out, &report)?;
            std::io::Write::write_all(&mut out, b"\n")?;
            std::io::Write::flush(&mut out)?;
        }
        Format::Csv => csv(&report)?,
        Format::Table => table(&report),
    }
    Ok(if report.needs_decisions() {
        Exit::NeedsDecision
    } else {
        Exit::Success
    })
}

fn outcome(m: &EmployeeMatch) -> &'static str {
    match m.outcome {
        Outcome::Bind => "bind",
        Outcome::New => "new",
        Outcome::Decide => "decide",
    }
}

/// One row per employee and problem (an employee without a problem has
/// one row), then one per unmatched account.
fn csv(report: &MatchReport) -> anyhow::Result<()> {
    let mut out = ::csv::Writer::from_writer(std::io::stdout());
    out.write_record([
        "kind",
        "employee_id",
        "name",
        "email",
        "outcome",
        "account",
        "by",
        "problem",
        "detail",
    ])?;
    for m in &report.employees {
        let by = m.by.map(|b| b.name()).unwrap_or_default();
        let row = |problem: &str, detail: &str| {
            [
                "employee".to_owned(),
                m.employee_id.to_string(),
                m.name.clone(),
                m.email.clone().unwrap_or_default(),
                outcome(m).to_owned(),
                m.account.as_deref().unwrap_or_default().to_owned(),
                by.to_owned(),
                problem.to_owned(),
                detail.to_owned(),
            ]
        };
        if m.problems.is_empty() {
            out.write_record(row("", ""))?;
        }
        for p in &m.problems {
            let kind = serde_json::to_value(p)?;
            let kind = kind["problem"].as_str().unwrap_or_default().to_owned();
            out.write_record(row(&kind, &p.to_string()))?;
        }
    }
    for a in &report.unmatched_accounts {
        out.write_record([
            "unmatched-account",
            a.hris_id.as_deref().unwrap_or_default(),
            &a.name,
            a.email.as_deref().unwrap_or_default(),
            "",
            &a.account,
            "",
            "",
            &format!("username {}", a.username.as_deref().unwrap_or("-")),
        ])?;
    }
    out.flush()?;
    Ok(())
}

fn table(report: &MatchReport) {
    let keys: Vec<&str> = report
        .keys
        .iter()
        .map(|k| switchyard::engine::matching::BoundBy::from(*k).name())
        .collect();
    println!(
        "link {} matched by {} (tolerance {} edits)",
        report.link,
        keys.join(", then "),
        report.tolerance
    );
    if !report.enforced {
        println!(
            "note: the link has no [links.{}.matching] section: its sync binds accounts as the LMS plugin does (by HRIS id); add the section for the sync to follow this report",
            report.link
        );
    }
    println!(
        "{:<12} {:<7} {:<10} {:<11} {:<24} PROBLEM",
        "EMPLOYEE", "OUTCOME", "ACCOUNT", "BY", "NAME"
    );
    for m in &report.employees {
        let first = m
            .problems
            .first()
            .map(ToString::to_string)
            .unwrap_or_default();
        println!(
            "{:<12} {:<7} {:<10} {:<11} {:<24} {first}",
            m.employee_id,
            outcome(m),
            m.account.as_deref().unwrap_or("-"),
            m.by.map(|b| b.name()).unwrap_or("-"),
            m.name,
        );
        for p in m.problems.iter().skip(1) {
            println!("{:<68} {p}", "");
        }
    }
    if !report.unmatched_accounts.is_empty() {
        println!();
        println!("LMS accounts no employee matches (left alone):");
        println!(
            "{:<10} {:<20} {:<28} {:<24} HRIS ID",
            "ACCOUNT", "USERNAME", "EMAIL", "NAME"
        );
        for a in &report.unmatched_accounts {
            println!(
                "{:<10} {:<20} {:<28} {:<24} {}",
                a.account,
                a.username.as_deref().unwrap_or("-"),
                a.email.as_deref().unwrap_or("-"),
                a.name,
                a.hris_id.as_deref().unwrap_or("-"),
            );
        }
    }
    let s = &report.summary;
    println!();
    println!(
        "{} employees: {} bound to an existing account, {} new, {} to decide; {} LMS accounts, {} matching no employee",
        s.employees, s.bound, s.new_accounts, s.to_decide, s.accounts, s.unmatched_accounts
    );
    if s.to_decide > 0 {
        println!(
            "decide in the link's decisions file ([links.{}.matching] decisions = \"FILE\"): [[bind]] employee/account, or [[never]] employee and/or account",
            report.link
        );
    }
}
