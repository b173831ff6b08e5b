//! Crash safety: the real `switchyard` binary is killed with SIGKILL at many
//! points of a sync, against simulators that throttle and answer slowly, and
//! restarted. In the end the simulated systems hold exactly the right state:
//! every user once, every enrollment, every completion written once.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use switchyard_testkit::harness::{Harness, Options, switchyard_bin};

fn sync_command(h: &Harness) -> Command {
    let mut cmd = Command::new(switchyard_bin());
    cmd.args(["sync", "--once", "--config"])
        .arg(&h.config_path)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// Start a sync and SIGKILL it as soon as `progress()` reaches `at` (or
/// after 20 s); returns whether the run had finished by itself.
async fn run_and_kill(h: &Harness, progress: impl Fn(&Harness) -> usize, at: usize) -> bool {
    let mut child = sync_command(h).spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        if progress(h) >= at || std::time::Instant::now() > deadline {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn lms_writes(h: &Harness) -> usize {
    h.lms.write_count()
}

fn hris_writes(h: &Harness) -> usize {
    h.hris.write_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_many_points_a_restart_finishes_exactly_once() {
    let h = Harness::start_with(Options {
        employees: 40,
        page_size: 10,
        link_extra: "concurrency = 4\nmax_deactivations = 100".into(),
        // Small batches: the kills land between and inside batch calls
        // (a call whose batch was applied but not recorded).
        limits: "max_batch = 3".into(),
        ..Options::default()
    })
    .await
    .unwrap();
    h.hris.set_latency(Duration::from_millis(15));
    h.lms.set_latency(Duration::from_millis(15));

    // Provisioning, killed again and again as LMS writes go out, with
    // throttling injected.
    let mut at = 0;
    let mut killed = 0;
    for i in 0..10 {
        if i % 3 == 1 {
            h.lms.fail_next(2, 1);
        }
        if i % 3 == 2 {
            h.hris.fail_next(1, 1);
        }
        at += 3 + i * 2;
        killed += usize::from(!run_and_kill(&h, lms_writes, at).await);
    }
    assert!(
        killed >= 6,
        "most provisioning runs were killed mid-way ({killed})"
    );

    // Learners complete courses; terminations happen; keep killing.
    let with_account: Vec<String> = h.lms.users().iter().map(|u| u.idnumber.clone()).collect();
    assert!(
        !with_account.is_empty(),
        "some provisioning survived the kills"
    );
    let mut completed = BTreeSet::new();
    for id in with_account.iter().take(12) {
        if let Some((course, _)) = h.lms.enrolments_of(id).into_iter().next() {
            h.lms
                .mark_completed(id, &course, Some(90.0), Some(true))
                .unwrap();
            completed.insert((id.clone(), course));
        }
    }
    let leaver = with_account.last().unwrap().clone();
    h.hris.update_employee(&leaver, |e| {
        e.status = "Inactive".into();
        e.employment_history_status = Some("Terminated".into());
    });
    // Completions going out to the HRIS, killed as they are written.
    let mut at = h.hris.write_count();
    let mut killed = 0;
    for i in 0..6 {
        if i % 2 == 0 {
            h.hris.fail_next(1, 1);
        }
        at += 1 + i % 3;
        killed += usize::from(!run_and_kill(&h, hris_writes, at).await);
    }
    assert!(
        killed >= 3,
        "write-back runs were killed mid-way ({killed})"
    );

    // Let the last run finish.
    let status = sync_command(&h).status().unwrap();
    assert!(status.success(), "final run: {status:?}");

    // Every employee with access has exactly one account.
    let employees = h.hris.employees();
    let expected: BTreeSet<String> = employees
        .iter()
        .filter(|e| {
            e.status == "Active" && e.employment_history_status.as_deref() != Some("Terminated")
        })
        .map(|e| e.id.clone())
        .collect();
    let users = h.lms.users();
    let mut seen = BTreeSet::new();
    for u in &users {
        assert!(
            seen.insert(u.idnumber.clone()),
            "duplicate account for {}",
            u.idnumber
        );
    }
    let mut should_exist = expected.clone();
    should_exist.insert(leaver.clone());
    assert_eq!(seen, should_exist, "exactly the right accounts");
    assert!(
        h.lms.user_by_idnumber(&leaver)[0].suspended,
        "the leaver is suspended"
    );
    assert!(
        users
            .iter()
            .filter(|u| u.idnumber != leaver)
            .all(|u| !u.suspended)
    );

    // Every active employee has the code of conduct.
    for e in employees.iter().filter(|e| {
        expected.contains(&e.id)
            && e.employment_history_status.as_deref() != Some("Leave of Absence")
    }) {
        let courses: BTreeSet<String> = h
            .lms
            .enrolments_of(&e.id)
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        assert!(courses.contains("CODE-OF-CONDUCT"), "{}: {courses:?}", e.id);
    }

    // Every completion written once.
    let types = h.hris.training_types();
    let records = h.hris.training_records();
    let mut written = BTreeSet::new();
    for r in &records {
        let course = types
            .iter()
            .find(|(id, _)| *id == r.type_id)
            .unwrap()
            .1
            .clone();
        assert!(
            written.insert((r.employee_id.clone(), course.clone())),
            "completion written twice: {} {course}",
            r.employee_id
        );
    }
    assert_eq!(written, completed);

    // Nothing left behind.
    let out = Command::new(switchyard_bin())
        .args(["status", "--config"])
        .arg(&h.config_path)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    let row = status.lines().find(|l| l.starts_with("acme")).unwrap();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[5], "0", "outbox empty: {status}");
    assert_eq!(cols[6], "0", "no dead letters: {status}");
}
