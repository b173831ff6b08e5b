//! End-to-end sync: real plugins, real HTTP over loopback, real sled.
//! Every assertion is on what the simulated HRIS and LMS hold afterwards.

use std::collections::BTreeSet;

use switchyard_testkit::harness::{Harness, LINK};
use switchyard_testkit::hris::SimEmployee;

/// HRIS employees who should have an LMS account (active or on leave).
fn with_access(employees: &[SimEmployee]) -> BTreeSet<String> {
    employees
        .iter()
        .filter(|e| {
            e.status == "Active" && e.employment_history_status.as_deref() != Some("Terminated")
        })
        .map(|e| e.id.clone())
        .collect()
}

fn courses_of(h: &Harness, id: &str) -> BTreeSet<String> {
    h.lms
        .enrolments_of(id)
        .into_iter()
        .map(|(c, _)| c)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_sync_provisions_enrolls_and_writes_back_completions() {
    let h = Harness::start(40).await.unwrap();
    let service = h.service().unwrap();
    let report = service.sync_link(LINK).await.unwrap();

    let employees = h.hris.employees();
    let expected = with_access(&employees);
    assert_eq!(report.employees_fetched, 40);
    assert!(report.full_listing);
    assert_eq!(report.users_created, expected.len());

    // One LMS account per employee with access, identified by the HRIS id.
    let users = h.lms.users();
    let idnumbers: BTreeSet<String> = users.iter().map(|u| u.idnumber.clone()).collect();
    assert_eq!(idnumbers, expected);
    assert_eq!(users.len(), expected.len(), "no duplicates");
    assert!(users.iter().all(|u| !u.suspended));

    // Rules: everyone active gets the code of conduct; warehouse and
    // operations get safety with a due date; forklift operators get forklift.
    for e in employees.iter().filter(|e| expected.contains(&e.id)) {
        let courses = courses_of(&h, &e.id);
        let on_leave = e.employment_history_status.as_deref() == Some("Leave of Absence");
        if on_leave {
            assert!(
                courses.is_empty(),
                "{} is on leave: no new assignments",
                e.id
            );
            continue;
        }
        assert!(courses.contains("CODE-OF-CONDUCT"), "{}: {courses:?}", e.id);
        let warehouse = matches!(e.department.as_deref(), Some("Warehouse" | "Operations"));
        assert_eq!(
            courses.contains("SAFETY-2026"),
            warehouse,
            "{}: {courses:?}",
            e.id
        );
        let forklift = e.job_title.as_deref() == Some("Forklift Operator");
        assert_eq!(
            courses.contains("FORKLIFT-CERT"),
            forklift,
            "{}: {courses:?}",
            e.id
        );
    }
    let safety_course = h
        .lms
        .courses()
        .into_iter()
        .find(|c| c.idnumber == "SAFETY-2026")
        .unwrap();
    let safety: Vec<_> = h
        .lms
        .enrolments()
        .into_iter()
        .filter(|e| e.courseid == safety_course.id)
        .collect();
    assert!(!safety.is_empty());
    assert!(
        safety.iter().all(|e| e.timeend.is_some()),
        "due dates are sent"
    );
    assert_eq!(report.enrollments, h.lms.enrolments().len());

    // Completions flow back on the next run.
    let warehouse_worker = employees
        .iter()
        .find(|e| courses_of(&h, &e.id).contains("SAFETY-2026"))
        .unwrap()
        .id
        .clone();
    let someone_else = expected
        .iter()
        .find(|id| **id != warehouse_worker)
        .unwrap()
        .clone();
    h.lms
        .mark_completed(&warehouse_worker, "SAFETY-2026", Some(88.0), Some(true))
        .unwrap();
    h.lms
        .mark_completed(&someone_else, "CODE-OF-CONDUCT", None, None)
        .unwrap();
    let second = service.sync_link(LINK).await.unwrap();
    assert_eq!(second.completions_written, 2);
    assert_eq!(second.writes(), 2, "nothing else changed: {second:?}");

    let types = h.hris.training_types();
    let type_id = |name: &str| types.iter().find(|(_, n)| n == name).unwrap().0;
    let records = h.hris.training_records();
    assert_eq!(records.len(), 2);
    let safety_record = records
        .iter()
        .find(|r| r.employee_id == warehouse_worker)
        .unwrap();
    assert_eq!(safety_record.type_id, type_id("SAFETY-2026"));
    assert_eq!(safety_record.completed.len(), 10, "yyyy-mm-dd");
    let notes = safety_record.notes.as_deref().unwrap();
    assert!(
        notes.contains("status=passed") && notes.contains("score=88"),
        "{notes}"
    );
    assert!(
        notes.contains("expires="),
        "recertification sets an expiry: {notes}"
    );
    let coc_record = records
        .iter()
        .find(|r| r.employee_id == someone_else)
        .unwrap();
    assert_eq!(coc_record.type_id, type_id("CODE-OF-CONDUCT"));
    assert!(!coc_record.notes.as_deref().unwrap().contains("expires="));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_without_changes_writes_nothing() {
    let h = Harness::start(30).await.unwrap();
    let service = h.service().unwrap();
    let first = service.sync_link(LINK).await.unwrap();
    assert!(first.writes() > 0);
    let someone = h.lms.users()[0].idnumber.clone();
    h.lms
        .mark_completed(&someone, "CODE-OF-CONDUCT", Some(100.0), Some(true))
        .unwrap();
    service.sync_link(LINK).await.unwrap();
    assert_eq!(h.hris.training_records().len(), 1);

    h.hris.reset_request_log();
    h.lms.reset_request_log();
    let third = service.sync_link(LINK).await.unwrap();
    assert_eq!(third.writes(), 0, "{third:?}");
    assert!(
        !third.full_listing,
        "the run resumes from the changes cursor"
    );
    assert_eq!(
        h.hris.write_count(),
        0,
        "HRIS writes: {:?}",
        h.hris.requests()
    );
    assert_eq!(h.lms.write_count(), 0, "LMS writes: {:?}", h.lms.calls());
    assert_eq!(h.hris.training_records().len(), 1);

    // State survives a restart of the host: a new service on the same
    // database still writes nothing.
    drop(service);
    let reopened = h.service().unwrap();
    let fourth = reopened.sync_link(LINK).await.unwrap();
    assert_eq!(fourth.writes(), 0, "{fourth:?}");
    assert_eq!(h.lms.write_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_changes_reassign_suspend_and_reactivate_the_same_account() {
    let h = Harness::start(20).await.unwrap();
    let service = h.service().unwrap();
    service.sync_link(LINK).await.unwrap();

    // An active Sales employee moves to the warehouse and changes email.
    let mover = h
        .hris
        .employees()
        .into_iter()
        .find(|e| {
            e.status == "Active"
                && e.employment_history_status.as_deref() == Some("Full-Time")
                && e.department.as_deref() == Some("Sales")
        })
        .unwrap();
    assert!(!courses_of(&h, &mover.id).contains("SAFETY-2026"));
    h.hris.update_employee(&mover.id, |e| {
        e.department = Some("Warehouse".into());
        e.work_email = Some("moved@acme.example".into());
    });
    let report = service.sync_link(LINK).await.unwrap();
    assert!(!report.full_listing);
    assert_eq!(report.employees_fetched, 1, "changes only");
    assert_eq!(report.users_updated, 1);
    assert!(courses_of(&h, &mover.id).contains("SAFETY-2026"));
    let accounts = h.lms.user_by_idnumber(&mover.id);
    assert_eq!(
        accounts.len(),
        1,
        "an email change never creates a second account"
    );
    assert_eq!(accounts[0].email, "moved@acme.example");
    let lms_id = accounts[0].id;

    // Termination suspends.
    h.hris.update_employee(&mover.id, |e| {
        e.status = "Inactive".into();
        e.employment_history_status = Some("Terminated".into());
        e.termination_date = Some("2026-11-30".into());
    });
    let report = service.sync_link(LINK).await.unwrap();
    assert_eq!(report.users_suspended, 1);
    assert!(h.lms.user_by_idnumber(&mover.id)[0].suspended);

    // Rehire reactivates the same account.
    h.hris.update_employee(&mover.id, |e| {
        e.status = "Active".into();
        e.employment_history_status = Some("Full-Time".into());
        e.termination_date = None;
    });
    let report = service.sync_link(LINK).await.unwrap();
    assert_eq!(report.users_reactivated, 1);
    let accounts = h.lms.user_by_idnumber(&mover.id);
    assert_eq!(accounts.len(), 1, "rehire never creates a second account");
    assert_eq!(accounts[0].id, lms_id);
    assert!(!accounts[0].suspended);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_after_the_advertised_delay() {
    let h = Harness::start(10).await.unwrap();
    let service = h.service().unwrap();
    h.hris.fail_next(2, 1);
    h.lms.fail_next(1, 1);
    let report = service.sync_link(LINK).await.unwrap();
    assert!(report.retries >= 3, "{report:?}");
    assert_eq!(h.lms.users().len(), with_access(&h.hris.employees()).len());
    let throttled = h.hris.requests().iter().filter(|r| r.status == 503).count();
    assert_eq!(throttled, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_record_is_dead_lettered_and_the_rest_go_through() {
    let h = Harness::start(10).await.unwrap();
    // Moodle requires an email: this employee cannot be provisioned.
    let victim = h
        .hris
        .employees()
        .into_iter()
        .find(|e| e.status == "Active")
        .unwrap();
    h.hris.update_employee(&victim.id, |e| e.work_email = None);
    let service = h.service().unwrap();
    let report = service.sync_link(LINK).await.unwrap();
    assert!(h.lms.user_by_idnumber(&victim.id).is_empty());
    assert_eq!(
        h.lms.users().len(),
        with_access(&h.hris.employees()).len() - 1
    );
    let letters = service.state.dead_letters(&LINK.into()).unwrap();
    assert_eq!(report.dead_lettered, letters.len());
    assert!(letters.iter().all(|l| l.operation.employee_id == victim.id));
    assert_eq!(letters[0].operation.kind.name(), "upsert-user");
    assert!(
        letters[0].reason.contains("no email"),
        "{}",
        letters[0].reason
    );
    // The victim's enrollments depend on the account: dead-lettered after it,
    // in order, so a replay can apply them in the same order.
    assert!(letters.len() >= 2);
    for later in &letters[1..] {
        assert_eq!(later.operation.kind.name(), "enroll");
        assert!(
            later.reason.starts_with("blocked: upsert-user"),
            "{}",
            later.reason
        );
    }
    // A second run does not dead-letter the same operations again.
    let again = service.sync_link(LINK).await.unwrap();
    assert_eq!(again.dead_lettered, 0);
    assert_eq!(
        service.state.dead_letters(&LINK.into()).unwrap().len(),
        letters.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_credential_stops_the_link_without_hammering() {
    let h = Harness::start(10).await.unwrap();
    std::fs::write(h.dir.join("bamboohr.key"), "wrong-key").unwrap();
    let service = h.service().unwrap();
    let err = service.sync_link(LINK).await.unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("unauthorized"), "{message}");
    assert!(
        !message.contains("wrong-key"),
        "the credential never appears: {message}"
    );
    assert_eq!(h.hris.requests().len(), 1, "no retries on 401");
    assert!(h.lms.users().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_dead_letters_exits_4_and_a_vendor_that_stays_unavailable_exits_5() {
    let h = Harness::start(6).await.unwrap();
    let victim = h
        .hris
        .employees()
        .into_iter()
        .find(|e| e.status == "Active")
        .unwrap();
    h.hris.update_employee(&victim.id, |e| e.work_email = None);
    let out = h.sync_cli();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{text}");
    // Nothing new to give up on: success.
    let out = h.sync_cli();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The HRIS answers 503 to every attempt of the listing: the run stops
    // without losing anything, and says so with its own code.
    h.hris.fail_next(50, 0);
    let out = h.sync_cli();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(5), "{text}");
    assert!(text.contains("fetch-employees"), "{text}");
    h.hris.fail_next(0, 0);
    let out = h.sync_cli();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The changes cursor of a full listing is when the listing started, by
/// the HRIS's clock: someone terminated after their page was read is seen
/// by the next incremental run, even when a later page holds a change newer
/// than the termination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_while_a_full_listing_is_under_way_is_seen_next_time() {
    let h = Harness::start_with(switchyard_testkit::harness::Options {
        employees: 8,
        page_size: 2,
        ..Default::default()
    })
    .await
    .unwrap();
    let service = h.service().unwrap();
    let hr = &service.connectors["hr"];
    let first = hr.fetch_employees(None).await.unwrap();
    let early = first.employees[0].id.to_string();
    let last_page_id = h.hris.employees().last().unwrap().id.clone();
    // After page 1 was read: the early employee leaves, then someone on the
    // last page changes (a newer lastChanged than the termination).
    h.hris.update_employee(&early, |e| {
        e.status = "Inactive".into();
        e.employment_history_status = Some("Terminated".into());
    });
    h.hris
        .update_employee(&last_page_id, |e| e.job_title = Some("Lead".into()));
    let mut cursor = first.next_cursor;
    let mut changes = first.changes_cursor;
    while let Some(next) = cursor {
        let page = hr.fetch_employees(Some(&next)).await.unwrap();
        cursor = page.next_cursor;
        changes = page.changes_cursor;
    }
    let changes = changes.expect("a full listing ends with a changes cursor");
    let mut seen = BTreeSet::new();
    let mut cursor = Some(changes);
    while let Some(next) = cursor {
        let page = hr.fetch_employees(Some(&next)).await.unwrap();
        seen.extend(page.employees.into_iter().map(|e| e.id.to_string()));
        cursor = page.next_cursor;
    }
    assert!(seen.contains(&early), "{seen:?} lacks {early}");
}

/// BambooHR: an inactive employee record whose last history entry is a
/// leave of absence has left; their account is suspended like any inactive
/// employee's, not kept as if they were on leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inactive_employee_whose_last_entry_is_a_leave_is_not_on_leave() {
    let h = Harness::start(6).await.unwrap();
    let service = h.service().unwrap();
    service.sync_link(LINK).await.unwrap();
    let who = h
        .hris
        .employees()
        .into_iter()
        .find(|e| e.status == "Active")
        .unwrap();
    h.hris.update_employee(&who.id, |e| {
        e.status = "Inactive".into();
        e.employment_history_status = Some("Leave of Absence".into());
    });
    service.sync_link(LINK).await.unwrap();
    let account = h.lms.user_by_idnumber(&who.id);
    assert_eq!(account.len(), 1);
    assert!(account[0].suspended, "{account:?}");
}

/// An account the LMS already holds for an employee (made by hand or by an
/// old import, with the HRIS id) is adopted on the first sync: one account,
/// brought in line, audited as `user.adopted`, its suspension respected
/// until the planner reactivates it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_lms_account_is_adopted_not_created_again() {
    let h = Harness::start(6).await.unwrap();
    let who = h
        .hris
        .employees()
        .into_iter()
        .find(|e| e.status == "Active" && e.work_email.is_some())
        .unwrap();
    let existing = h
        .lms
        .add_user("made-by-hand", &who.id, "old@acme.example", true);
    let service = h.service().unwrap();
    let report = service.sync_link(LINK).await.unwrap();
    assert_eq!(report.users_adopted, 1, "{report:?}");
    let accounts = h.lms.user_by_idnumber(&who.id);
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    assert_eq!(accounts[0].id, existing);
    assert_eq!(Some(accounts[0].email.clone()), who.work_email);
    let adopted: Vec<_> = service
        .state
        .audit()
        .read(&Default::default(), None)
        .unwrap()
        .into_iter()
        .filter(|e| e.record.kind == "user.adopted")
        .collect();
    assert_eq!(adopted.len(), 1);
    assert_eq!(adopted[0].record.employee.as_deref(), Some(who.id.as_str()));
    // It was suspended: the next run reactivates it (the employee is active).
    service.sync_link(LINK).await.unwrap();
    assert!(!h.lms.user_by_idnumber(&who.id)[0].suspended);
}

/// One BambooHR training record per employee and course: a completion
/// replayed after a crash without knowing what it supersedes (its ledger
/// lost with the crash) updates the record Switchyard wrote, never adds a
/// second one; a record written by a person is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_completion_updates_the_record_it_wrote_not_a_second_one() {
    use switchyard::model::{Completion, CompletionStatus};
    let h = Harness::start(4).await.unwrap();
    let service = h.service().unwrap();
    let hr = &service.connectors["hr"];
    let who = h.hris.employees()[0].id.clone();
    let attempt = |n: u32| Completion {
        employee_id: who.as_str().into(),
        course_id: "CODE-OF-CONDUCT".into(),
        attempt_id: n.to_string(),
        status: CompletionStatus::Passed,
        completed_at: format!("2026-01-0{n}T10:00:00Z").parse().unwrap(),
        score: Some(f64::from(70 + n)),
        expires_at: None,
    };
    hr.push_completion(&attempt(1), "key-1", None)
        .await
        .unwrap();
    hr.push_completion(&attempt(2), "key-2", Some("key-1"))
        .await
        .unwrap();
    // The restart replays attempt 3 with its supersedes lost.
    hr.push_completion(&attempt(3), "key-3", None)
        .await
        .unwrap();
    // And attempt 3 again: already written.
    hr.push_completion(&attempt(3), "key-3", None)
        .await
        .unwrap();
    let records: Vec<_> = h
        .hris
        .training_records()
        .into_iter()
        .filter(|r| r.employee_id == who)
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].completed, "2026-01-03");
}

/// An LMS plugin that implements only accounts and enrollments (the SDK's
/// defaults answer `unsupported` for the rest): the link runs to the end,
/// exit 0, with a note that nothing is written back; a withdrawal is
/// skipped with a note and an `operation.skipped` record, and not tried
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_operations_a_plugin_leaves_out_are_skipped_with_a_note() {
    let h = Harness::start_with(switchyard_testkit::harness::Options {
        employees: 10,
        page_size: 25,
        link_extra: "on_reassignment = \"withdraw\"".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    switchyard_testkit::plugins::install("lms-minimal", &h.dir.join("plugins.d"), "moodle")
        .unwrap();
    let out = h.sync_cli();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("note: connector `lms` does not fetch completions"),
        "{stdout}"
    );
    let mover = h
        .hris
        .employees()
        .into_iter()
        .find(|e| e.status == "Active" && e.department.as_deref() == Some("Warehouse"))
        .unwrap()
        .id;
    h.hris.update_employee(&mover, |e| {
        e.department = Some("Finance".into());
        e.job_title = Some("Accountant".into());
    });
    let out = h.sync_cli();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "not a stopped link: {stdout}");
    assert!(
        stdout.contains("note: unenroll skipped: connector `lms` does not support it"),
        "{stdout}"
    );
    let service = h.service().unwrap();
    let skipped: Vec<_> = service
        .state
        .audit()
        .read(&Default::default(), None)
        .unwrap()
        .into_iter()
        .filter(|e| e.record.kind == "operation.skipped")
        .collect();
    assert!(!skipped.is_empty());
    assert!(
        skipped
            .iter()
            .all(|e| e.record.employee.as_deref() == Some(mover.as_str()))
    );
    drop(service);
    // Not tried again: the next run has nothing to skip.
    let out = h.sync_cli();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(!stdout.contains("unenroll skipped"), "{stdout}");
}

/// An HRIS plugin without `push-completion` (the SDK's default): a
/// completion in the LMS is skipped with a note, the link is not stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hris_that_takes_no_training_records_skips_write_back() {
    let h = Harness::start(3).await.unwrap();
    switchyard_testkit::plugins::install("hostile", &h.dir.join("plugins.d"), "bamboohr").unwrap();
    let config = std::fs::read_to_string(&h.config_path).unwrap();
    let hr = config
        .lines()
        .find(|l| l.starts_with("config = { base_url") && l.contains("page_size"))
        .unwrap()
        .to_owned();
    std::fs::write(
        &h.config_path,
        config.replace(
            &hr,
            "config = { mode = \"ok\", email = \"one@acme.example\" }",
        ),
    )
    .unwrap();
    let out = h.sync_cli();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The hostile plugin's one employee is `1`.
    h.lms
        .mark_completed("1", "CODE-OF-CONDUCT", Some(80.0), Some(true))
        .unwrap();
    let out = h.sync_cli();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "not a stopped link: {stdout}");
    assert!(
        stdout.contains("note: push-completion skipped: connector `hr` does not support it"),
        "{stdout}"
    );
}
