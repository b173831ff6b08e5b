//! `switchyard match` for N employees against N LMS accounts.

use std::time::Instant;

use switchyard_testkit::harness::{Harness, LINK, Options, switchyard_bin};
use switchyard_testkit::measure::run_sampled;

/// Accounts made by hand: 80% hold the HRIS id, 15% only the email (in
/// capitals), 5% are nobody's.
fn seed_accounts(h: &Harness) -> usize {
    let employees = h.hris.employees();
    for (i, e) in employees.iter().enumerate() {
        let email = e.work_email.clone().unwrap_or_default();
        let name = (e.first_name.as_str(), e.last_name.as_str());
        match i % 20 {
            0 => h.lms.add_named_user(
                &format!("gone{i}"),
                "",
                &format!("gone{i}@old.example"),
                ("Former", "Staff"),
            ),
            1..=3 => h
                .lms
                .add_named_user(&format!("hand{i}"), "", &email.to_uppercase(), name),
            _ => h
                .lms
                .add_named_user(&format!("hand{i}"), &e.id, &email, name),
        };
    }
    employees.len()
}

pub async fn run(employees: usize, page_size: usize) -> anyhow::Result<()> {
    let h = Harness::start_with(Options {
        employees,
        page_size,
        link_extra: r#"matching = { keys = ["hris-id", "email", "username"] }"#.into(),
        ..Options::default()
    })
    .await?;
    let accounts = seed_accounts(&h);

    // Floor: the listings alone, through the same plugins.
    let service = h.service()?;
    let t = Instant::now();
    let mut cursor: Option<String> = None;
    let mut listed = 0;
    loop {
        let page = service.connectors["hr"]
            .fetch_employees(cursor.as_deref())
            .await?;
        listed += page.employees.len();
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let hris_listing = t.elapsed();
    let mut cursor: Option<String> = None;
    loop {
        let page = service.connectors["lms"]
            .list_accounts(cursor.as_deref())
            .await?;
        listed += page.accounts.len();
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let floor = t.elapsed();
    drop(service);

    let sampled = run_sampled(
        std::process::Command::new(switchyard_bin())
            .args(["match", LINK, "--format", "json", "--config"])
            .arg(&h.config_path),
    )?;
    let (status, elapsed, peak, out) = (
        sampled.status,
        sampled.elapsed,
        sampled.peak_kib,
        sampled.stdout,
    );
    let code = status.code().unwrap_or(-1);
    anyhow::ensure!(code == 0 || code == 6, "match failed with exit code {code}");
    let report: serde_json::Value = serde_json::from_slice(&out)?;
    let s = &report["summary"];
    println!("matching report, {employees} employees against {accounts} LMS accounts");
    println!(
        "  switchyard match               {elapsed:>10.1?}   peak RSS {} MiB   ({} bound, {} new, {} to decide, {} unmatched accounts; {} KiB of JSON)",
        peak / 1024,
        s["bound"],
        s["new_accounts"],
        s["to_decide"],
        s["unmatched_accounts"],
        out.len() / 1024
    );
    println!(
        "  floor: both listings alone    {floor:>10.1?}   ({listed} records; the HRIS's {hris_listing:.1?}, the LMS's {:.1?})",
        floor - hris_listing
    );
    Ok(())
}
