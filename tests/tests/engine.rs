//! The sync engine's policies and safety nets, end to end: retake policies,
//! the mass-deactivation guard, leave and reassignment policies,
//! recertification, dead letters and replay, dry-run and reconcile.
//! Asserted on what the simulated HRIS and LMS hold.

use std::collections::BTreeSet;

use switchyard::engine::reconcile::DriftKind;
use switchyard::engine::{RunError, RunOptions};
use switchyard::service::SyncError;
use switchyard_testkit::harness::{Harness, LINK, Options};
use switchyard_testkit::hris::SimEmployee;

async fn harness(employees: usize, link_extra: &str) -> Harness {
    Harness::start_with(Options {
        employees,
        page_size: 25,
        link_extra: link_extra.to_owned(),
        ..Options::default()
    })
    .await
    .unwrap()
}

fn date(y: i32, m: u8, d: u8) -> switchyard::model::Date {
    time::Date::from_calendar_date(y, time::Month::try_from(m).unwrap(), d)
        .unwrap()
        .into()
}

fn full_time(h: &Harness, department: &str) -> SimEmployee {
    h.hris
        .employees()
        .into_iter()
        .find(|e| {
            e.status == "Active"
                && e.employment_history_status.as_deref() == Some("Full-Time")
                && e.department.as_deref() == Some(department)
        })
        .unwrap()
}

fn courses_of(h: &Harness, id: &str) -> BTreeSet<String> {
    h.lms
        .enrolments_of(id)
        .into_iter()
        .map(|(c, _)| c)
        .collect()
}

/// Three attempts at one course, synced one by one; returns the HRIS
/// training records of that employee afterwards.
async fn three_attempts(policy: &str) -> Vec<switchyard_testkit::hris::TrainingRecord> {
    let h = harness(10, &format!("completion_policy = \"{policy}\"")).await;
    let service = h.service().unwrap();
    service.sync_link(LINK).await.unwrap();
    let learner = full_time(&h, "Sales").id;
    for (grade, passed) in [(40.0, false), (80.0, true), (70.0, true)] {
        h.lms
            .mark_completed(&learner, "CODE-OF-CONDUCT", Some(grade), Some(passed))
            .unwrap();
        service.sync_link(LINK).await.unwrap();
    }
    h.hris
        .training_records()
        .into_iter()
        .filter(|r| r.employee_id == learner)
        .collect()
}

fn attempt_of(notes: &str) -> (String, String) {
    let field = |name: &str| {
        notes
            .split(' ')
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap_or("")
            .to_owned()
    };
    (field("status"), field("score"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retake_policy_latest_keeps_one_record_with_the_last_attempt() {
    let records = three_attempts("latest").await;
    assert_eq!(
        records.len(),
        1,
        "a winning retake updates the record: {records:?}"
    );
    assert_eq!(
        attempt_of(records[0].notes.as_deref().unwrap()),
        ("passed".into(), "70".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retake_policy_highest_score_keeps_the_best_attempt() {
    let records = three_attempts("highest-score").await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(
        attempt_of(records[0].notes.as_deref().unwrap()),
        ("passed".into(), "80".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retake_policy_first_pass_ignores_failures_and_later_passes() {
    let records = three_attempts("first-pass").await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(
        attempt_of(records[0].notes.as_deref().unwrap()),
        ("passed".into(), "80".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mass_deactivation_halts_before_acting_until_approved() {
    let h = harness(20, "max_deactivations = 2").await;
    let service = h.service().unwrap();
    service.sync_link(LINK).await.unwrap();
    let active: Vec<String> = h
        .lms
        .users()
        .iter()
        .map(|u| u.idnumber.clone())
        .take(5)
        .collect();
    for id in &active {
        h.hris.update_employee(id, |e| {
            e.status = "Inactive".into();
            e.employment_history_status = Some("Terminated".into());
        });
    }
    h.lms.reset_request_log();
    let err = service.sync_link(LINK).await.unwrap_err();
    let SyncError::Run(RunError::Halted(halted)) = &err else {
        panic!("halted, not {err:#}");
    };
    assert_eq!((halted.planned, halted.allowed), (5, 2));
    assert!(err.to_string().contains("--approve-deactivations"), "{err}");
    assert_eq!(h.lms.write_count(), 0, "nothing changed");
    assert!(h.lms.users().iter().all(|u| !u.suspended));
    assert!(
        service
            .state
            .link_status(&LINK.into())
            .unwrap()
            .halted
            .is_some()
    );

    let state = service.link_state(&LINK.into()).unwrap();
    assert_eq!(state.label(), "halted");
    assert!(
        state.to_string().contains("--approve-deactivations"),
        "{state}"
    );

    // The halt is sticky: the next run halts too, nothing was committed.
    assert!(service.sync_link(LINK).await.is_err());

    let today = switchyard::model::Date::today();
    let options = RunOptions {
        approve_deactivations: true,
        ..RunOptions::default()
    };
    let report = service.sync_link_with(LINK, options, today).await.unwrap();
    assert_eq!(report.users_suspended, 5);
    for id in &active {
        assert!(h.lms.user_by_idnumber(id)[0].suspended);
    }
    assert!(
        service
            .state
            .link_status(&LINK.into())
            .unwrap()
            .halted
            .is_none()
    );
}

/// The guard sees a plan that spans many pages before any of it is work:
/// the plan is staged page by page, and a halt leaves nothing of it
/// behind, not the changes on the pages before the suspensions either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halted_run_over_many_pages_commits_nothing_of_its_plan() {
    let h = Harness::start_with(Options {
        employees: 60,
        page_size: 7,
        link_extra: "max_deactivations = 2".into(),
        ..Options::default()
    })
    .await
    .unwrap();
    let service = h.service().unwrap();
    service.sync_link(LINK).await.unwrap();
    let link = LINK.into();
    let accounts = h.lms.users();
    // Suspensions spread over the listing's pages, and a change on an
    // earlier page than most of them.
    let ids: Vec<String> = accounts.iter().map(|u| u.idnumber.clone()).collect();
    let moved = ids[0].clone();
    let leaving: Vec<String> = ids.iter().skip(5).step_by(9).take(4).cloned().collect();
    h.hris
        .update_employee(&moved, |e| e.department = Some("Warehouse".into()));
    for id in &leaving {
        h.hris.update_employee(id, |e| {
            e.status = "Inactive".into();
            e.employment_history_status = Some("Terminated".into());
        });
    }
    let before = service
        .state
        .snapshot(&link, &moved.clone().into())
        .unwrap();
    let cursor = service.state.cursor(&link, "employees").unwrap();
    h.lms.reset_request_log();
    let full = RunOptions {
        full_listing: true,
        ..RunOptions::default()
    };
    let today = switchyard::model::Date::today();
    let err = service.sync_link_with(LINK, full, today).await.unwrap_err();
    let SyncError::Run(RunError::Halted(halted)) = &err else {
        panic!("halted, not {err:#}");
    };
    assert_eq!(halted.planned, leaving.len());
    assert_eq!(h.lms.write_count(), 0, "nothing changed in the LMS");
    assert_eq!(
        service.state.counts(&link).unwrap().outbox,
        0,
        "no work queued"
    );
    assert_eq!(
        service
            .state
            .snapshot(&link, &moved.clone().into())
            .unwrap(),
        before,
        "the moved employee's snapshot is as it was"
    );
    assert_eq!(service.state.cursor(&link, "employees").unwrap(), cursor);

    let approved = RunOptions {
        full_listing: true,
        approve_deactivations: true,
        ..RunOptions::default()
    };
    let report = service.sync_link_with(LINK, approved, today).await.unwrap();
    assert_eq!(report.users_suspended, leaving.len());
    assert!(
        leaving
            .iter()
            .all(|id| h.lms.user_by_idnumber(id)[0].suspended)
    );
    assert_eq!(h.lms.user_by_idnumber(&moved)[0].department, "Warehouse");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_suspends_by_policy_and_return_reactivates() {
    let h = harness(10, "on_leave = \"suspend\"").await;
    let service = h.service().unwrap();
    service.sync_link(LINK).await.unwrap();
    let worker = full_time(&h, "Sales").id;
    h.hris.update_employee(&worker, |e| {
        e.employment_history_status = Some("Leave of Absence".into())
    });
    let report = service.sync_link(LINK).await.unwrap();
    assert_eq!(report.users_suspended, 1);
    assert!(h.lms.user_by_idnumber(&worker)[0].suspended);
    h.hris.update_employee(&worker, |e| {
        e.employment_history_status = Some("Full-Time".into())
    });
    let report = service.sync_link(LINK).await.unwrap();
    assert_eq!(report.users_reactivated, 1);
    assert_eq!(h.lms.user_by_idnumber(&worker).len(), 1);
    assert!(!h.lms.user_by_idnumber(&worker)[0].suspended);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn termination_policy_record_keeps_access() {
    let h = harness(10, "on_termination = \"record\"\nmax_deactivations = 100").await;
    let service = h.service().unwrap();
    service.sync_link(LINK).await.unwrap();
    let leaver = full_time(&h, "Sales").id;
    h.hris.update_employee(&leaver, |e| {
        e.status = "Inactive".into();
        e.employment_history_status = Some("Terminated".into());
    });
    let report = service.sync_link(LINK).await.unwrap();
    assert_eq!(report.writes(), 0);
    assert!(!h.lms.user_by_idnumber(&leaver)[0].suspended);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reassignment_withdraws_courses_no_longer_required_by_policy() {
    let h = harness(10, "on_reassignment = \"withdraw\"").await;
    let service = h.service().unwrap();
    service.sync_link(LINK).await.unwrap();
    let mover = full_time(&h, "Warehouse").id;
    assert!(courses_of(&h, &mover).contains("SAFETY-2026"));
    h.hris.update_employee(&mover, |e| {
        e.department = Some("Finance".into());
        e.job_title = Some("Accountant".into());
    });
    let report = service.sync_link(LINK).await.unwrap();
    assert!(report.unenrollments >= 1, "{report:?}");
    let courses = courses_of(&h, &mover);
    assert!(!courses.contains("SAFETY-2026"), "{courses:?}");
    assert!(!courses.contains("FORKLIFT-CERT"), "{courses:?}");
    assert!(
        courses.contains("CODE-OF-CONDUCT"),
        "still required: {courses:?}"
    );

    // The default policy keeps them.
    let h = harness(10, "").await;
    let service = h.service().unwrap();
    service.sync_link(LINK).await.unwrap();
    let mover = full_time(&h, "Warehouse").id;
    h.hris
        .update_employee(&mover, |e| e.department = Some("Finance".into()));
    service.sync_link(LINK).await.unwrap();
    assert!(courses_of(&h, &mover).contains("SAFETY-2026"));
}

/// A rule removed by mistake and restored, while nobody's HRIS record
/// changes: the course is withdrawn, then assigned again (the restored
/// enrollment is a new operation, not the first one's key already done),
/// and a second round does the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_removed_and_restored_assigns_the_course_again() {
    let h = harness(10, "on_reassignment = \"withdraw\"").await;
    h.service().unwrap().sync_link(LINK).await.unwrap();
    let worker = full_time(&h, "Warehouse").id;
    assert!(courses_of(&h, &worker).contains("SAFETY-2026"));
    let original = std::fs::read_to_string(&h.config_path).unwrap();
    let without = original.replace(
        "courses = [\"SAFETY-2026\"]",
        "courses = [\"CODE-OF-CONDUCT\"]",
    );
    assert_ne!(original, without);
    for round in 1..=2 {
        std::fs::write(&h.config_path, &without).unwrap();
        let report = h.service().unwrap().sync_link(LINK).await.unwrap();
        assert!(report.unenrollments >= 1, "round {round}: {report:?}");
        assert!(!courses_of(&h, &worker).contains("SAFETY-2026"));
        std::fs::write(&h.config_path, &original).unwrap();
        h.service().unwrap().sync_link(LINK).await.unwrap();
        assert!(
            courses_of(&h, &worker).contains("SAFETY-2026"),
            "round {round}: assigned again"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recertification_reassigns_once_before_expiry() {
    let h = harness(10, "recertify_lead_days = 30").await;
    let service = h.service().unwrap();
    let run = |today| service.sync_link_with(LINK, RunOptions::default(), today);

    run(date(2025, 12, 1)).await.unwrap();
    let worker = full_time(&h, "Warehouse").id;
    let first_due = h
        .lms
        .enrolments_of(&worker)
        .into_iter()
        .find(|(c, _)| c == "SAFETY-2026")
        .unwrap()
        .1
        .timeend;
    // The simulated LMS completes on 2026-01-01; the rule recertifies yearly.
    h.lms
        .mark_completed(&worker, "SAFETY-2026", Some(90.0), Some(true))
        .unwrap();
    run(date(2026, 1, 2)).await.unwrap();
    let record = h
        .hris
        .training_records()
        .into_iter()
        .find(|r| r.employee_id == worker)
        .unwrap();
    assert!(
        record
            .notes
            .as_deref()
            .unwrap()
            .contains("expires=2027-01-01"),
        "{record:?}"
    );

    // Outside the lead time: nothing.
    let early = run(date(2026, 11, 1)).await.unwrap();
    assert_eq!(early.enrollments, 0);
    // Inside it: reassigned once, with a new due date.
    let due = run(date(2026, 12, 10)).await.unwrap();
    assert_eq!(due.enrollments, 1, "{due:?}");
    let second_due = h
        .lms
        .enrolments_of(&worker)
        .into_iter()
        .find(|(c, _)| c == "SAFETY-2026")
        .unwrap()
        .1
        .timeend;
    assert_ne!(first_due, second_due);
    assert_eq!(
        service
            .state
            .enrollment(&LINK.into(), &worker.as_str().into(), &"SAFETY-2026".into())
            .unwrap()
            .unwrap()
            .cycle,
        1
    );
    let again = run(date(2026, 12, 11)).await.unwrap();
    assert_eq!(
        again.enrollments, 0,
        "one reassignment per expiring completion"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_replay_in_order_and_finish_the_work() {
    let h = harness(10, "").await;
    let service = h.service().unwrap();
    // The first two LMS calls are refused the Moodle way.
    h.lms.fail_next_with_exception(2, "invalidparameter");
    let report = service.sync_link(LINK).await.unwrap();
    assert!(report.dead_lettered >= 2, "{report:?}");
    let letters = service.state.dead_letters(&LINK.into()).unwrap();
    let refused: BTreeSet<String> = letters
        .iter()
        .map(|l| l.operation.employee_id.to_string())
        .collect();
    for id in &refused {
        assert!(h.lms.user_by_idnumber(id).is_empty());
    }

    for letter in &letters {
        service
            .state
            .replay_dead_letter(&LINK.into(), letter.id)
            .unwrap();
    }
    let replay = service.drain_outbox(LINK).await.unwrap();
    assert_eq!(replay.dead_lettered, 0, "{replay:?}");
    assert!(service.state.dead_letters(&LINK.into()).unwrap().is_empty());
    for id in &refused {
        assert_eq!(h.lms.user_by_idnumber(id).len(), 1, "created once");
        assert!(
            courses_of(&h, id).contains("CODE-OF-CONDUCT"),
            "enrolled after its account"
        );
    }
    let next = service.sync_link(LINK).await.unwrap();
    assert_eq!(next.writes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_the_plan_and_writes_nothing() {
    let h = harness(10, "").await;
    let service = h.service().unwrap();
    let today = switchyard::model::Date::today();
    let dry = RunOptions {
        dry_run: true,
        ..RunOptions::default()
    };
    let plan = service.sync_link_with(LINK, dry, today).await.unwrap();
    assert_eq!(h.lms.write_count(), 0);
    assert!(h.lms.users().is_empty());
    let creates = plan
        .plan
        .iter()
        .filter(|p| p.operation == "upsert-user")
        .count();
    let expected = h
        .hris
        .employees()
        .iter()
        .filter(|e| e.status == "Active")
        .count();
    assert_eq!(creates, expected);
    assert!(
        plan.plan
            .iter()
            .any(|p| p.operation == "enroll" && p.cause.contains("rule safety-warehouse matched"))
    );

    // Nothing was committed: the real run does exactly the plan.
    let real = service.sync_link(LINK).await.unwrap();
    assert_eq!(real.users_created, creates);
    assert_eq!(
        real.enrollments,
        plan.plan.iter().filter(|p| p.operation == "enroll").count()
    );

    let learner = h.lms.users()[0].idnumber.clone();
    h.lms
        .mark_completed(&learner, "CODE-OF-CONDUCT", Some(99.0), Some(true))
        .unwrap();
    let plan = service.sync_link_with(LINK, dry, today).await.unwrap();
    assert_eq!(plan.plan.len(), 1);
    assert_eq!(plan.plan[0].operation, "push-completion");
    assert!(h.hris.training_records().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_reports_drift_between_the_systems() {
    let h = harness(10, "").await;
    let service = h.service().unwrap();
    service.sync_link(LINK).await.unwrap();
    assert!(
        service
            .reconcile(LINK, &switchyard::engine::paging::unobserved)
            .await
            .unwrap()
            .drifts
            .is_empty(),
        "in sync after a run"
    );

    // Someone suspends an account by hand in the LMS, and a course is
    // completed after the last sync.
    let victim = h.lms.users()[0].clone();
    let client = reqwest::Client::new();
    let body: serde_json::Value = client
        .post(format!("{}/webservice/rest/server.php", h.lms.base_url()))
        .form(&[
            ("wstoken", h.lms.token()),
            ("wsfunction", "core_user_update_users".into()),
            ("moodlewsrestformat", "json".into()),
            ("users[0][id]", victim.id.to_string()),
            ("users[0][suspended]", "1".into()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(body.get("exception").is_none(), "{body}");
    let learner = h.lms.users()[1].idnumber.clone();
    h.lms
        .mark_completed(&learner, "CODE-OF-CONDUCT", Some(75.0), Some(true))
        .unwrap();

    let found = service
        .reconcile(LINK, &switchyard::engine::paging::unobserved)
        .await
        .unwrap();
    assert!(found.hris_records_read, "BambooHR lists training records");
    let drifts = found.drifts;
    let kinds: Vec<(DriftKind, String)> = drifts
        .iter()
        .map(|d| (d.kind, d.employee_id.to_string()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (DriftKind::SuspendedInLms, victim.idnumber.clone()),
            (DriftKind::CompletionNotInHris, learner.clone()),
        ],
        "{drifts:?}"
    );
    // After a sync, the completion is no longer drift; the manual suspension
    // still is (the host does not fight it unless the HRIS changes).
    service.sync_link(LINK).await.unwrap();
    let drifts = service
        .reconcile(LINK, &switchyard::engine::paging::unobserved)
        .await
        .unwrap()
        .drifts;
    assert_eq!(drifts.len(), 1);
    assert_eq!(drifts[0].kind, DriftKind::SuspendedInLms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_employee_missing_from_a_full_listing_keeps_access() {
    let h = harness(10, "").await;
    let service = h.service().unwrap();
    service.sync_link(LINK).await.unwrap();
    let missing = full_time(&h, "Sales").id;
    h.hris.remove_employee(&missing);
    // Force the next run to list everyone (as after a lost changes cursor).
    service
        .state
        .commit_plan(&LINK.into(), &[], Some(("employees", None)))
        .unwrap();
    let report = service.sync_link(LINK).await.unwrap();
    assert!(report.full_listing);
    assert_eq!(report.users_suspended, 0, "absence is not evidence");
    assert!(!h.lms.user_by_idnumber(&missing)[0].suspended);
}
