//! The short chaos campaign CI runs: about twenty SIGKILLs of the real
//! binary (`sync --once` and the daemon in turn) at random moments, behind
//! proxies that inject 503s, 429s, connection resets before and after the
//! simulator applied a request, and delays, with HR and learner churn
//! between rounds; then nothing may be missing, duplicated or left behind.
//! The long campaign is `cargo run --release -p switchyard-testkit --bin
//! chaos` (RELIABILITY.md).

use switchyard_testkit::chaos::{self, Campaign, Finding, Mode, Report};
use switchyard_testkit::harness::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_kills_with_faults_and_churn_lose_and_duplicate_nothing() {
    let report = chaos::run(&Campaign {
        seed: 20261202,
        kills: 20,
        mode: Mode::Both,
        ..Campaign::default()
    })
    .await
    .unwrap();
    println!("{report}");
    assert_eq!(report.kills, 20);
    // The campaign exercised what it claims to.
    assert!(
        report.faults.values().sum::<usize>() > 0,
        "faults were injected: {report}"
    );
    assert!(report.modes.len() == 2, "both modes were killed: {report}");
    assert!(
        report.checked["completions"] > 0 && report.checked["training records"] > 0,
        "completions flowed: {report}"
    );
    assert!(report.findings.is_empty(), "{report}");
}

/// The campaign's check is what makes it able to fail: planted by hand,
/// a second account, a second training record and a termination the
/// host never saw are each found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_finds_duplicates_and_losses_planted_by_hand() {
    let h = Harness::start(12).await.unwrap();
    let out = h.sync_cli();
    assert!(out.status.success(), "{out:?}");
    let learner = h.lms.users()[0].idnumber.clone();
    h.lms
        .mark_completed(&learner, "CODE-OF-CONDUCT", Some(95.0), Some(true))
        .unwrap();
    let out = h.sync_cli();
    assert!(out.status.success(), "{out:?}");
    let mut clean = Report::default();
    chaos::check(&h, &mut clean).unwrap();
    assert!(clean.findings.is_empty(), "{clean}");

    let completed = &h.hris.training_records()[0].completed;
    h.hris
        .add_training_record(&learner, "CODE-OF-CONDUCT", completed)
        .unwrap();
    let other = h.lms.users()[1].idnumber.clone();
    h.lms
        .add_user("second.account", &other, "second@acme.example", false);
    let leaver = h.lms.users()[2].idnumber.clone();
    h.hris.update_employee_unseen(&leaver, |e| {
        e.status = "Inactive".into();
        e.employment_history_status = Some("Terminated".into());
    });
    let mut planted = Report::default();
    chaos::check(&h, &mut planted).unwrap();
    let has = |kind: Finding, text: &str| {
        planted
            .findings
            .iter()
            .any(|(k, d)| *k == kind && d.contains(text))
    };
    assert!(
        has(
            Finding::Duplicate,
            &format!("2 training records of CODE-OF-CONDUCT for {learner}")
        ),
        "{planted}"
    );
    assert!(
        has(
            Finding::Duplicate,
            &format!("2 LMS accounts for employee {other}")
        ),
        "{planted}"
    );
    assert!(
        has(
            Finding::Loss,
            &format!("employee {leaver} left, an account is still active")
        ),
        "{planted}"
    );
}
