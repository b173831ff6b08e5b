//! The end-to-end demo: employees flow from a BambooHR-shaped HRIS into a
//! Moodle-shaped LMS and completions flow back, through the real wasm
//! plugins, over real HTTP on loopback, with state in sled.
//!
//! `cargo run -p switchyard-testkit --bin demo [-- --employees N]`

use std::path::PathBuf;

use clap::Parser;
use switchyard_testkit::harness::{Harness, LINK, Options};
use switchyard_testkit::plugins;

#[derive(Parser)]
#[command(about = "Run Switchyard end to end against the bundled simulators")]
struct Args {
    /// Employees seeded in the simulated HRIS.
    #[arg(long, default_value_t = 60)]
    employees: usize,
    /// Where the configuration, plugins and state are written (wiped first).
    #[arg(long, default_value_os_t = plugins::workspace_root().join("target").join("switchyard-demo"))]
    dir: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)?;
    }
    println!("Building the connector plugins (bamboohr, moodle) for wasm32-wasip2 ...");
    let h = Harness::start_in(
        &args.dir,
        Options {
            employees: args.employees,
            page_size: 25,
            ..Options::default()
        },
    )
    .await?;
    println!(
        "Simulated BambooHR at {} with {} employees",
        h.hris.base_url(),
        args.employees
    );
    println!("Simulated Moodle    at {}", h.lms.base_url());
    let service = h.service()?;
    for plugin in service.plugins.values() {
        println!(
            "Loaded plugin {:<9} {} (contract {}, sha256 {})",
            plugin.name,
            plugin.world,
            plugin.contract_version,
            plugin.version()
        );
    }

    println!("\n== Run 1: provision the LMS from the HRIS ==");
    let first = service.sync_link(LINK).await?;
    println!(
        "fetched {} employees, created {} LMS users, made {} enrollments",
        first.employees_fetched, first.users_created, first.enrollments
    );

    println!("\n== Learners finish courses in the LMS ==");
    let users = h.lms.users();
    let mut marked = 0;
    for (i, user) in users.iter().take(8).enumerate() {
        let courses = h.lms.enrolments_of(&user.idnumber);
        let Some((course, _)) = courses.first() else {
            continue;
        };
        let (grade, passed) = if i == 3 {
            (Some(41.0), Some(false))
        } else {
            (Some(70.0 + i as f64 * 3.5), Some(true))
        };
        h.lms
            .mark_completed(&user.idnumber, course, grade, passed)?;
        println!(
            "  {} {} finished {course} (score {:?}, passed {:?})",
            user.firstname,
            user.lastname,
            grade.unwrap_or_default(),
            passed.unwrap_or_default()
        );
        marked += 1;
    }

    println!("\n== An employee moves to the warehouse, another leaves the company ==");
    let employees = h.hris.employees();
    let moved = employees
        .iter()
        .find(|e| e.status == "Active" && e.department.as_deref() == Some("Sales"))
        .map(|e| e.id.clone());
    if let Some(mover) = employees
        .iter()
        .find(|e| e.status == "Active" && e.department.as_deref() == Some("Sales"))
    {
        h.hris
            .update_employee(&mover.id, |e| e.department = Some("Warehouse".into()));
        println!(
            "  {} {}: Sales -> Warehouse",
            mover.first_name, mover.last_name
        );
    }
    if let Some(leaver) = employees.iter().rev().find(|e| {
        e.status == "Active" && e.employment_history_status.as_deref() == Some("Full-Time")
    }) {
        h.hris.update_employee(&leaver.id, |e| {
            e.status = "Inactive".into();
            e.employment_history_status = Some("Terminated".into());
        });
        println!("  {} {}: terminated", leaver.first_name, leaver.last_name);
    }

    println!("\n== Run 2: changes only, completions written back ==");
    let second = service.sync_link(LINK).await?;
    println!(
        "fetched {} changed employees, updated {} users, suspended {}, made {} enrollments, wrote {} of {} completions back",
        second.employees_fetched,
        second.users_updated,
        second.users_suspended,
        second.enrollments,
        second.completions_written,
        marked
    );

    println!("\n== Run 3: nothing changed ==");
    h.hris.reset_request_log();
    h.lms.reset_request_log();
    let third = service.sync_link(LINK).await?;
    println!(
        "{} write calls (HRIS saw {} writes, LMS saw {} writes)",
        third.writes(),
        h.hris.write_count(),
        h.lms.write_count()
    );

    let records = h.hris.training_records();
    let suspended = h.lms.users().iter().filter(|u| u.suspended).count();
    println!("\n== Summary ==");
    println!("  employees fetched           {}", first.employees_fetched);
    println!(
        "  LMS users created           {} ({} suspended)",
        h.lms.users().len(),
        suspended
    );
    println!("  enrollments                 {}", h.lms.enrolments().len());
    println!(
        "  completions written back    {} training records in the HRIS",
        records.len()
    );
    for r in records.iter().take(3) {
        println!(
            "    employee {} type {} completed {} ({})",
            r.employee_id,
            r.type_id,
            r.completed,
            r.notes.as_deref().unwrap_or("")
        );
    }
    println!("  configuration               {}", h.config_path.display());
    println!(
        "  state (sled)                {}",
        service.config.data_dir.display()
    );
    let counts = service.state.counts(&LINK.into())?;
    println!(
        "  state holds                 {} employees, {} accounts, {} enrollments, {} completions",
        counts.employees, counts.accounts, counts.enrollments, counts.completions
    );
    let audit = service.state.audit();
    let verification = audit.verify()?;
    println!(
        "  audit log                   {} records, chain {} (head {})",
        verification.records,
        if verification.broken.is_none() {
            "verified"
        } else {
            "BROKEN"
        },
        verification.head
    );
    let why = switchyard::audit::Filter {
        employee: moved.clone(),
        kind: Some("course".into()),
        ..Default::default()
    };
    for e in audit.read(&why, Some(2))? {
        println!(
            "    #{} {} {} {}: {}",
            e.record.seq,
            e.record.kind,
            e.record.employee.as_deref().unwrap_or(""),
            e.record.course.as_deref().unwrap_or(""),
            e.record.cause.as_deref().unwrap_or("")
        );
    }
    println!(
        "  try: switchyard audit tail --config {}",
        h.config_path.display()
    );
    if first.users_created == 0
        || records.is_empty()
        || third.writes() != 0
        || verification.broken.is_some()
    {
        anyhow::bail!("the demo did not reach the expected end state");
    }
    Ok(())
}
