//! A pilot: a link limited to part of the workforce (`scope`), widened,
//! narrowed again, and retired on request. Real plugins, simulators, sled.

use std::collections::BTreeSet;

use switchyard::engine::RunOptions;
use switchyard::model::Date;
use switchyard_testkit::harness::{Harness, LINK, Options};
use switchyard_testkit::hris::SimEmployee;

const WAREHOUSE: &str = r#"scope = { include = { department = ["Warehouse"] } }"#;
const WIDER: &str =
    r#"scope = { include = { department = ["Warehouse", "Sales"] }, exclude = { ids = ["101"] } }"#;

fn with_access(e: &SimEmployee) -> bool {
    e.status == "Active" && e.employment_history_status.as_deref() != Some("Terminated")
}

fn ids_in(h: &Harness, departments: &[&str]) -> BTreeSet<String> {
    h.hris
        .employees()
        .into_iter()
        .filter(with_access)
        .filter(|e| departments.contains(&e.department.as_deref().unwrap_or_default()))
        .map(|e| e.id)
        .collect()
}

/// LMS accounts by HRIS id: (active?).
fn accounts(h: &Harness) -> Vec<(String, bool)> {
    h.lms
        .users()
        .into_iter()
        .map(|u| (u.idnumber, !u.suspended))
        .collect()
}

fn set_scope(h: &Harness, from: &str, to: &str) {
    let text = std::fs::read_to_string(&h.config_path).unwrap();
    assert!(text.contains(from));
    std::fs::write(&h.config_path, text.replace(from, to)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pilot_scope_widens_narrows_without_suspending_and_retires_on_request() {
    let h = Harness::start_with(Options {
        employees: 25,
        link_extra: WAREHOUSE.into(),
        ..Default::default()
    })
    .await
    .unwrap();

    // The pilot: Warehouse only.
    let report = h.service().unwrap().sync_link(LINK).await.unwrap();
    let warehouse = ids_in(&h, &["Warehouse"]);
    assert!(warehouse.len() >= 3, "{warehouse:?}");
    let provisioned: BTreeSet<String> = accounts(&h).into_iter().map(|(id, _)| id).collect();
    assert_eq!(provisioned, warehouse, "only the pilot department");
    let in_warehouse = h
        .hris
        .employees()
        .iter()
        .filter(|e| e.department.as_deref() == Some("Warehouse"))
        .count();
    assert_eq!(report.in_scope, Some(in_warehouse));
    // Nobody outside the pilot got a course either.
    let enrolled: BTreeSet<u64> = h.lms.enrolments().iter().map(|e| e.userid).collect();
    for user in h.lms.users().iter().filter(|u| enrolled.contains(&u.id)) {
        assert!(warehouse.contains(&user.idnumber), "{}", user.idnumber);
    }

    // Widen to Sales (but never 101): an ordinary run provisions them,
    // though their records did not change; nobody is suspended.
    set_scope(&h, WAREHOUSE, WIDER);
    let report = h.service().unwrap().sync_link(LINK).await.unwrap();
    let sales: BTreeSet<String> = ids_in(&h, &["Sales"])
        .into_iter()
        .filter(|id| id != "101")
        .collect();
    assert!(!sales.is_empty());
    let provisioned: BTreeSet<String> = accounts(&h).into_iter().map(|(id, _)| id).collect();
    let expected: BTreeSet<String> = warehouse.union(&sales).cloned().collect();
    assert_eq!(provisioned, expected);
    assert_eq!(report.users_suspended, 0);
    for id in &sales {
        assert!(
            h.lms
                .enrolments_of(id)
                .iter()
                .any(|(c, _)| c == "CODE-OF-CONDUCT"),
            "{id} enrolled once in scope"
        );
    }

    // Narrow back: the Sales accounts are left alone.
    set_scope(&h, WIDER, WAREHOUSE);
    let report = h.service().unwrap().sync_link(LINK).await.unwrap();
    assert_eq!(report.users_suspended, 0, "narrowing suspends nobody");
    assert!(accounts(&h).iter().all(|(_, active)| *active));

    // A termination still suspends, in scope or not.
    let leaver = sales.iter().next().unwrap().clone();
    h.hris.update_employee(&leaver, |e| {
        e.status = "Inactive".into();
        e.employment_history_status = Some("Terminated".into());
        e.termination_date = Some("2026-06-30".into());
    });
    let report = h.service().unwrap().sync_link(LINK).await.unwrap();
    assert_eq!(report.users_suspended, 1);
    assert!(
        accounts(&h)
            .iter()
            .any(|(id, active)| *id == leaver && !active)
    );

    // Asked to, the run retires the rest of the Sales accounts (the
    // mass-deactivation guard is approved for the pilot's size).
    let options = RunOptions {
        retire_out_of_scope: true,
        approve_deactivations: true,
        ..RunOptions::default()
    };
    let report = h
        .service()
        .unwrap()
        .sync_link_with(LINK, options, Date::today())
        .await
        .unwrap();
    assert_eq!(report.users_suspended, sales.len() - 1);
    for (id, active) in accounts(&h) {
        assert_eq!(active, warehouse.contains(&id), "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retiring_out_of_scope_is_held_by_the_mass_deactivation_guard() {
    let h = Harness::start_with(Options {
        employees: 25,
        ..Default::default()
    })
    .await
    .unwrap();
    h.service().unwrap().sync_link(LINK).await.unwrap();
    let before = accounts(&h);
    // Everyone provisioned; then a pilot scope of one department is set and
    // retirement asked for: most accounts would go, the guard halts it.
    let text = std::fs::read_to_string(&h.config_path).unwrap();
    std::fs::write(
        &h.config_path,
        text.replacen("lms = \"lms\"", &format!("lms = \"lms\"\n{WAREHOUSE}"), 1),
    )
    .unwrap();
    let options = RunOptions {
        retire_out_of_scope: true,
        ..RunOptions::default()
    };
    let err = h
        .service()
        .unwrap()
        .sync_link_with(LINK, options, Date::today())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("max_deactivations"), "{err:#}");
    assert_eq!(accounts(&h), before, "nothing suspended");
}
