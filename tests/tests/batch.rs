//! Batched writes (contract 0.5.0's `batch-provisioning`) against the
//! Moodle simulator, which takes many records per call and, as Moodle
//! does, refuses a whole call when one record in it is bad.

use std::collections::BTreeSet;

use switchyard_testkit::harness::{Harness, LINK};

/// Calls of `function` in the simulator's log: (all, refused with an exception).
fn calls_of(h: &Harness, function: &str) -> (usize, usize) {
    let calls: Vec<_> = h
        .lms
        .calls()
        .into_iter()
        .filter(|c| c.wsfunction == function)
        .collect();
    (calls.len(), calls.iter().filter(|c| c.exception).count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_one_bad_item_dead_letters_only_that_item() {
    let h = Harness::start(80).await.unwrap();
    let expected = h.with_access();
    // Someone made an account by hand under the username the plugin gives
    // one employee, without the HRIS id: Moodle refuses that employee's
    // create, and with it the whole `core_user_create_users` call.
    let victim = h
        .hris
        .employees()
        .into_iter()
        .find(|e| expected.contains(&e.id) && e.work_email.is_some())
        .unwrap();
    let squatter = format!("hris-{}", victim.id.to_lowercase());
    h.lms
        .add_user(&squatter, "", "someone.else@acme.example", false);

    let service = h.service().unwrap();
    let report = service.sync_link(LINK).await.unwrap();

    // Everyone else has exactly one account; the victim has none.
    let users = h.lms.users();
    let bound: BTreeSet<String> = users
        .iter()
        .filter(|u| !u.idnumber.is_empty())
        .map(|u| u.idnumber.clone())
        .collect();
    let mut others = expected.clone();
    others.remove(&victim.id);
    assert_eq!(bound, others);
    assert_eq!(users.len(), others.len() + 1, "no duplicates");
    assert_eq!(report.users_created, others.len());

    // Only the victim's operations are dead letters: the refused create,
    // then their enrolments, blocked behind it, in order.
    let letters = service.state.dead_letters(&LINK.into()).unwrap();
    assert!(letters.len() >= 2, "{letters:?}");
    assert!(
        letters.iter().all(|l| l.operation.employee_id == victim.id),
        "{letters:?}"
    );
    assert_eq!(letters[0].operation.kind.name(), "upsert-user");
    assert!(
        letters[0].reason.contains("Username already exists"),
        "{}",
        letters[0].reason
    );
    for later in &letters[1..] {
        assert_eq!(later.operation.kind.name(), "enroll");
        assert!(
            later.reason.starts_with("blocked: upsert-user"),
            "{}",
            later.reason
        );
    }
    assert_eq!(report.dead_lettered, letters.len());

    // The accounts went out in batches: the first create call was refused
    // as a whole, its halves were sent again until the bad one was alone.
    let (creates, refused) = calls_of(&h, "core_user_create_users");
    assert!(refused >= 1, "the batch was refused once at least");
    assert!(
        creates <= 2 * 7 + 1,
        "{creates} create calls for {} accounts: halving, not one per account",
        others.len()
    );
    // Everyone else's enrolments were made (those on leave get none), in a
    // few calls.
    let on_leave: BTreeSet<String> = h
        .hris
        .employees()
        .into_iter()
        .filter(|e| e.employment_history_status.as_deref() == Some("Leave of Absence"))
        .map(|e| e.id)
        .collect();
    let enrolled: BTreeSet<String> = h
        .lms
        .enrolments()
        .into_iter()
        .filter_map(|e| users.iter().find(|u| u.id == e.userid))
        .map(|u| u.idnumber.clone())
        .collect();
    assert_eq!(enrolled, &others - &on_leave);
    let (enrols, _) = calls_of(&h, "enrol_manual_enrol_users");
    assert!(enrols <= 6, "{enrols} enrolment calls");

    // The next run sends nothing again, and the dead letters stay as they were.
    let again = service.sync_link(LINK).await.unwrap();
    assert_eq!(again.writes(), 0, "{again:?}");
    assert_eq!(again.dead_lettered, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_sync_makes_few_round_trips_and_a_failed_batch_is_retried_item_by_item() {
    let h = Harness::start(400).await.unwrap();
    let expected = h.with_access();
    // The first call fails as a whole (Moodle's database went away): every
    // item of its batch is retried, none is dead-lettered or written twice.
    h.lms.fail_next_with_exception(1, "dbconnectionfailed");

    let service = h.service().unwrap();
    let report = service.sync_link(LINK).await.unwrap();
    assert_eq!(report.dead_lettered, 0, "{report:?}");
    assert!(report.retries >= 1, "{report:?}");
    let users = h.lms.users();
    let bound: BTreeSet<String> = users.iter().map(|u| u.idnumber.clone()).collect();
    assert_eq!(bound, expected);
    assert_eq!(users.len(), expected.len(), "no duplicates");
    assert_eq!(report.enrollments, h.lms.enrolments().len());

    // At most 0.1 round trips to the LMS per employee, reads included.
    let trips = h.lms.calls().len();
    let per_employee = trips as f64 / 400.0;
    assert!(
        per_employee <= 0.1,
        "{trips} LMS calls for 400 employees ({per_employee:.3} per employee)"
    );
}
