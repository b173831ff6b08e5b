//! The audit trail and privacy, end to end: real plugins, simulators over
//! loopback, sled on disk, and the `switchyard audit` command line.

use std::path::Path;
use std::process::Command;

use switchyard::audit::{Entry, Filter};
use switchyard_testkit::harness::{Harness, LINK, Options, switchyard_bin};

fn entries(service: &switchyard::Service, filter: Filter) -> Vec<Entry> {
    service.state.audit().read(&filter, None).unwrap()
}

fn kind(k: &str) -> Filter {
    Filter {
        kind: Some(k.into()),
        ..Filter::default()
    }
}

/// Every byte of every file under `dir`, to search for values that must
/// never be stored.
fn files_contain(dir: &Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    hits.push(path.display().to_string());
                }
            }
        }
    }
    hits
}

fn audit_cli(h: &Harness, args: &[&str]) -> std::process::Output {
    Command::new(switchyard_bin())
        .arg("audit")
        .args(args)
        .arg("--config")
        .arg(&h.config_path)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_is_audited_with_its_causes_keys_and_requests() {
    let h = Harness::start(12).await.unwrap();
    let service = h.service().unwrap();
    let report = service.sync_link(LINK).await.unwrap();

    // Plugins loaded, with their sha256; the configuration.
    let loaded = entries(&service, kind("plugin.loaded"));
    let names: Vec<&str> = loaded
        .iter()
        .filter_map(|e| e.record.detail["plugin"].as_str())
        .collect();
    assert_eq!(names, ["bamboohr", "moodle"]);
    for e in &loaded {
        let sha = e.record.detail["sha256"].as_str().unwrap();
        assert_eq!(
            sha,
            service.plugins[e.record.detail["plugin"].as_str().unwrap()].sha256
        );
    }
    assert_eq!(entries(&service, kind("config.loaded")).len(), 1);

    // The run, with its counts.
    let finished = entries(&service, kind("run.finished"));
    assert_eq!(finished.len(), 1);
    assert_eq!(
        finished[0].record.detail["users_created"],
        report.users_created
    );
    assert_eq!(
        entries(&service, kind("run.started"))[0]
            .record
            .actor
            .as_deref()
            .map(|a| a.ends_with("via cli")),
        Some(true)
    );

    // One record per write, with the rule that caused it and the key.
    let created = entries(&service, kind("user.created"));
    assert_eq!(created.len(), report.users_created);
    let lms_users = h.lms.users();
    for e in &created {
        let id = e.record.employee.as_deref().unwrap();
        let user = lms_users.iter().find(|u| u.idnumber == id).unwrap();
        assert_eq!(
            e.personal_data.as_ref().unwrap()["email"],
            user.email.as_str()
        );
        assert!(e.record.key.as_ref().is_some_and(|k| k.len() == 32));
        assert!(
            e.record
                .cause
                .as_deref()
                .unwrap()
                .contains("has no LMS account"),
            "{:?}",
            e.record.cause
        );
    }
    let enrolled = entries(&service, kind("course.enrolled"));
    assert_eq!(enrolled.len(), report.enrollments);
    let safety = enrolled
        .iter()
        .find(|e| {
            e.record.employee.as_deref() == Some("101")
                && e.record.course.as_deref() == Some("SAFETY-2026")
        })
        .expect("employee 101 (Warehouse) was enrolled in SAFETY-2026");
    let cause = safety.record.cause.as_deref().unwrap();
    assert!(
        cause.contains("rule safety-warehouse matched") && cause.contains("department=Warehouse"),
        "{cause}"
    );
    assert_eq!(safety.record.detail["rule"], "safety-warehouse");
    // The key ties the record to the operation recorded as done.
    assert!(
        service
            .state
            .is_done(&LINK.into(), safety.record.key.as_deref().unwrap())
            .unwrap()
    );

    // Each request a plugin made: method, origin, status; the path is
    // personal for a call about one employee.
    let requests = entries(&service, kind("http.request"));
    let to_lms: Vec<&Entry> = requests
        .iter()
        .filter(|e| e.record.connector.as_deref() == Some("lms"))
        .collect();
    assert_eq!(to_lms.len(), h.lms.calls().len());
    assert!(to_lms.iter().all(|e| {
        e.record.detail["status"] == 200
            && e.record.detail["origin"]
                .as_str()
                .unwrap()
                .starts_with("http://127.0.0.1:")
    }));
    // The Moodle plugin writes in batches: a request of a batch call is
    // about many employees, so it names none (its path and query name
    // nobody either).
    assert!(
        to_lms.iter().all(|e| e.record.employee.is_none()
            && e.record.detail["query"]
                .as_array()
                .unwrap()
                .iter()
                .any(|q| q == "wsfunction")),
        "{to_lms:?}"
    );

    // A completion written back, with its score kept as personal data.
    h.lms
        .mark_completed("101", "SAFETY-2026", Some(91.0), Some(true))
        .unwrap();
    service.sync_link(LINK).await.unwrap();
    // A call about one employee (`push-completion`): its requests are on
    // their behalf, and the path that names them is personal.
    let for_101: Vec<Entry> = entries(&service, kind("http.request"))
        .into_iter()
        .filter(|e| e.record.employee.as_deref() == Some("101"))
        .collect();
    assert!(
        for_101
            .iter()
            .all(|e| e.record.connector.as_deref() == Some("hr")
                && e.record.detail["function"] == "push-completion"
                && e.personal_data.as_ref().unwrap()["path"].is_string()),
        "{for_101:?}"
    );
    assert!(
        for_101
            .iter()
            .any(|e| e.personal_data.as_ref().unwrap()["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("/employee/101"))),
        "the write names the employee in its path: {for_101:?}"
    );
    let written = entries(&service, kind("completion.written"));
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].record.course.as_deref(), Some("SAFETY-2026"));
    assert_eq!(written[0].record.connector.as_deref(), Some("hr"));
    assert_eq!(written[0].personal_data.as_ref().unwrap()["score"], 91.0);

    let v = service.state.audit().verify().unwrap();
    assert_eq!(v.broken, None);
    assert_eq!(
        v.head.seq,
        service
            .state
            .audit()
            .read(&Filter::default(), None)
            .unwrap()
            .len() as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_audited_and_no_secret_reaches_the_audit_log() {
    let h = Harness::start(6).await.unwrap();
    let service = h.service().unwrap();
    h.lms.fail_next(2, 0);
    h.hris.fail_next(1, 0);
    service.sync_link(LINK).await.unwrap();

    // Each failed call (all were retried), with the function and why.
    let failed = entries(&service, kind("plugin.call-failed"));
    assert_eq!(failed.len(), 3, "{failed:?}");
    let hr_failure = failed
        .iter()
        .find(|e| e.record.connector.as_deref() == Some("hr"))
        .unwrap();
    assert_eq!(hr_failure.record.detail["function"], "fetch-employees");
    // The error text is kept outside the hashed record.
    assert!(
        hr_failure.record.personal.is_some() && hr_failure.record.detail.get("error").is_none(),
        "{hr_failure:?}"
    );
    assert!(
        hr_failure.personal_data.as_ref().unwrap()["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{hr_failure:?}"
    );
    let unavailable = entries(&service, kind("http.request"))
        .into_iter()
        .filter(|e| e.record.detail["status"] == 503)
        .count();
    assert_eq!(unavailable, 3);

    // Nothing secret in any record, personal payloads included.
    let all: Vec<String> = entries(&service, Filter::default())
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    let all = all.join("\n");
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{}:x", h.hris.api_key()),
    );
    for secret in [h.hris.api_key(), h.lms.token(), basic] {
        assert!(!all.contains(&secret), "a secret value is in the audit log");
    }
    // Nor anywhere in the state database's files.
    service.state.flush().unwrap();
    drop(service);
    for secret in [h.hris.api_key(), h.lms.token()] {
        assert_eq!(
            files_contain(&h.dir.join("state"), &secret),
            Vec::<String>::new()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_one_stored_record_makes_verify_fail_at_exactly_that_record() {
    let h = Harness::start(4).await.unwrap();
    let service = h.service().unwrap();
    service.sync_link(LINK).await.unwrap();
    let head = service.state.audit().head();
    assert!(head.seq > 10);
    let target = head.seq / 2;
    // An exported head, kept elsewhere.
    let exported = head.to_string();
    service
        .state
        .audit()
        .tamper(target, &mut |json: &mut Vec<u8>| {
            let text = String::from_utf8(json.clone()).unwrap();
            let edited = text.replacen("\"at\":\"20", "\"at\":\"19", 1);
            assert_ne!(text, edited);
            *json = edited.into_bytes();
        })
        .unwrap();
    let v = service.state.audit().verify().unwrap();
    let broken = v.broken.expect("the edit is detected");
    assert_eq!(broken.seq, target);
    assert!(
        broken.reason.contains("does not match its hash"),
        "{}",
        broken.reason
    );
    service.state.flush().unwrap();
    drop(service);

    let out = audit_cli(&h, &["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("audit chain broken at record {target}:")),
        "{stderr}"
    );
    // The exported head still matches: the edit is before it, and verify
    // reports the break rather than accepting the head.
    let out = audit_cli(&h, &["verify", "--expect", &exported]);
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_old_records_and_the_chain_still_verifies() {
    // A full listing on every run (the default is weekly): that is how
    // an employee gone from the HRIS is noticed.
    let h = Harness::start_with(Options {
        employees: 8,
        page_size: 25,
        link_extra: "full_listing_every = \"1ms\"".into(),
        ..Options::default()
    })
    .await
    .unwrap();
    let service = h.service().unwrap();
    service.sync_link(LINK).await.unwrap();
    let before = service.state.audit().head();
    assert_eq!(service.state.audit().verify().unwrap().broken, None);
    drop(service);

    // Keep nothing older than now: audit records, dead letters and the
    // snapshots of employees gone from the HRIS.
    let text = std::fs::read_to_string(&h.config_path).unwrap();
    std::fs::write(
        &h.config_path,
        format!("{text}\n[retention]\naudit_days = 0\ndead_letter_days = 0\ndeparted_days = 0\n"),
    )
    .unwrap();
    let former = h.hris.employee("102").unwrap();
    h.hris.remove_employee("102");
    h.hris.update_employee("103", |e| e.work_email = None); // Moodle refuses: a dead letter
    let service = h.service().unwrap();
    let report = service.sync_link(LINK).await.unwrap();
    assert!(report.full_listing);
    assert!(report.dead_lettered >= 1, "{report:?}");

    let audit = service.state.audit();
    let v = audit.verify().unwrap();
    assert_eq!(v.broken, None, "{v:?}");
    assert!(
        v.anchor.seq >= before.seq,
        "records up to the first run were pruned: {v:?}"
    );
    assert!(audit.hash_of(1).unwrap().is_none());
    let pruned = entries(&service, kind("audit.pruned"));
    assert_eq!(pruned.len(), 1);
    assert_eq!(pruned[0].record.detail["through_seq"], v.anchor.seq);
    assert_eq!(
        pruned[0].record.detail["anchor_hash"],
        v.anchor.hash.as_str()
    );
    // Dead letters and the departed employee's snapshot are gone, and that
    // is on record too.
    assert!(service.state.dead_letters(&LINK.into()).unwrap().is_empty());
    assert!(
        service
            .state
            .snapshot(&LINK.into(), &"102".into())
            .unwrap()
            .is_none()
    );
    assert!(
        service
            .state
            .snapshot(&LINK.into(), &"104".into())
            .unwrap()
            .is_some()
    );
    assert_eq!(
        entries(&service, kind("retention.snapshots-deleted"))[0]
            .record
            .detail["employees"],
        serde_json::json!(["102"])
    );
    assert_eq!(
        entries(&service, kind("retention.dead-letters-deleted")).len(),
        1
    );

    // Appending after pruning keeps the chain whole. The departed employee
    // comes back with a new email: the update reaches the same LMS account
    // (its snapshot's numbering continues, so the update is a new effect).
    let mut back = former.clone();
    back.work_email = Some("back.again@acme.example".into());
    h.hris.upsert_employee(back);
    service.sync_link(LINK).await.unwrap();
    let users = h.lms.user_by_idnumber("102");
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].email, "back.again@acme.example");
    assert_eq!(service.state.audit().verify().unwrap().broken, None);
    drop(service);
    let out = audit_cli(&h, &["verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("audit chain ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_not_on_the_allowlist_never_reaches_sled_or_the_lms() {
    // Location (the LMS `city`), hire date, manager and employee number are
    // not on this link's list.
    let h = Harness::start_with(Options {
        employees: 9,
        page_size: 25,
        link_extra: r#"fields = ["email", "given_name", "family_name", "department", "job_title"]"#
            .into(),
        ..Options::default()
    })
    .await
    .unwrap();
    let service = h.service().unwrap();
    service.sync_link(LINK).await.unwrap();
    let snapshots = service.state.snapshots(&LINK.into()).unwrap();
    assert_eq!(snapshots.len(), 9);
    for s in &snapshots {
        let e = &s.employee;
        assert_eq!(
            (&e.location, &e.hire_date, &e.manager_id, &e.employee_number),
            (&None, &None, &None, &None),
            "{e:?}"
        );
        assert!(e.email.is_some() && e.department.is_some());
    }
    let users = h.lms.users();
    assert!(!users.is_empty());
    assert!(
        users
            .iter()
            .all(|u| u.city.is_empty() && !u.department.is_empty()),
        "{users:?}"
    );
    service.state.flush().unwrap();
    drop(service);
    for city in ["Berlin", "Austin", "Leeds"] {
        assert_eq!(
            files_contain(&h.dir.join("state"), city),
            Vec::<String>::new(),
            "{city} stored"
        );
    }

    // The same data with the default list does reach the LMS: the
    // assertions above can fail.
    let h = Harness::start(3).await.unwrap();
    let service = h.service().unwrap();
    service.sync_link(LINK).await.unwrap();
    assert!(h.lms.users().iter().all(|u| !u.city.is_empty()));
    assert!(
        service
            .state
            .snapshots(&LINK.into())
            .unwrap()
            .iter()
            .all(|s| s.employee.location.is_some())
    );
    drop(service);

    // Narrowing the list later: the next run (changes only, nobody changed)
    // rewrites the stored records without the field.
    let text = std::fs::read_to_string(&h.config_path).unwrap();
    let narrowed = text.replace("lms = \"lms\"\n", "lms = \"lms\"\nfields = [\"email\", \"given_name\", \"family_name\", \"department\", \"job_title\"]\n");
    assert_ne!(text, narrowed);
    std::fs::write(&h.config_path, narrowed).unwrap();
    let service = h.service().unwrap();
    let report = service.sync_link(LINK).await.unwrap();
    assert!(!report.full_listing);
    assert!(
        service
            .state
            .snapshots(&LINK.into())
            .unwrap()
            .iter()
            .all(|s| s.employee.location.is_none())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_erases_personal_data_everywhere_and_verify_still_passes() {
    let h = Harness::start(8).await.unwrap();
    h.hris
        .update_employee("104", |e| e.work_email = Some("not-an-email".into())); // a dead letter that quotes it
    let service = h.service().unwrap();
    service.sync_link(LINK).await.unwrap();
    // A completion of theirs written back: a record and a request about them.
    h.lms
        .mark_completed("101", "CODE-OF-CONDUCT", Some(77.0), Some(true))
        .unwrap();
    service.sync_link(LINK).await.unwrap();
    let victim = h.hris.employee("101").unwrap();
    let email = victim.work_email.clone().unwrap();
    assert!(
        entries(
            &service,
            Filter {
                employee: Some("101".into()),
                ..Filter::default()
            }
        )
        .iter()
        .any(|e| e
            .personal_data
            .as_ref()
            .is_some_and(|p| p.to_string().contains(&email)))
    );
    let letters = service.state.dead_letters(&LINK.into()).unwrap();
    assert!(
        letters.iter().any(|l| l.reason.contains("not-an-email")),
        "{letters:?}"
    );

    let forgotten = service.forget(&"101".into()).unwrap();
    assert_eq!(forgotten.snapshots, 1);
    assert!(forgotten.audit_payloads >= 3, "{forgotten:?}");
    service.forget(&"104".into()).unwrap();

    // Snapshots: no personal field left; org context kept for the engine.
    let s = service
        .state
        .snapshot(&LINK.into(), &"101".into())
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            &s.employee.email,
            &s.employee.given_name,
            &s.employee.family_name,
            &s.employee.hire_date
        ),
        (&None, &None, &None, &None)
    );
    assert_eq!(s.employee.department.as_deref(), Some("Warehouse"));
    // Dead letters: the record and the vendor text scrubbed.
    let letters =
        serde_json::to_string(&service.state.dead_letters(&LINK.into()).unwrap()).unwrap();
    assert!(
        letters.contains("104") && !letters.contains("not-an-email"),
        "{letters}"
    );
    // Audit: every payload of the subject erased; the records stay.
    let theirs = entries(
        &service,
        Filter {
            employee: Some("101".into()),
            ..Filter::default()
        },
    );
    assert!(
        theirs
            .iter()
            .filter(|e| e.record.personal.is_some())
            .all(|e| e.erased && e.personal_data.is_none())
    );
    let everything: String = entries(&service, Filter::default())
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    assert!(!everything.contains(&email));
    assert!(!everything.contains("not-an-email"));
    // Other people's data is untouched.
    assert!(
        entries(
            &service,
            Filter {
                employee: Some("102".into()),
                ..Filter::default()
            }
        )
        .iter()
        .any(|e| e.personal_data.is_some())
    );
    assert_eq!(entries(&service, kind("subject.erased")).len(), 2);

    let v = service.state.audit().verify().unwrap();
    assert_eq!(v.broken, None);
    assert!(v.erased >= forgotten.audit_payloads);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_tails_searches_and_exports_with_filters() {
    let h = Harness::start(6).await.unwrap();
    let service = h.service().unwrap();
    service.sync_link(LINK).await.unwrap();
    let enrolled_101 = entries(
        &service,
        Filter {
            employee: Some("101".into()),
            kind: Some("course".into()),
            ..Filter::default()
        },
    )
    .len();
    assert!(enrolled_101 >= 2);
    let total = service.state.audit().head().seq as usize;
    service.state.flush().unwrap();
    drop(service);

    let out = audit_cli(&h, &["export", "--employee", "101", "--kind", "course"]);
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), enrolled_101);
    assert!(lines.iter().all(|l| l["employee"] == "101"
        && l["kind"] == "course.enrolled"
        && l["hash"].as_str().unwrap().len() == 64));
    // The export itself is on record, with its filter.
    let total = total + 1;

    let out = audit_cli(&h, &["tail", "-n", "3", "--json"]);
    let tail: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        tail.iter()
            .map(|l| l["seq"].as_u64().unwrap() as usize)
            .collect::<Vec<_>>(),
        [total - 2, total - 1, total]
    );
    assert_eq!(tail[2]["kind"], "admin.audit-exported");
    assert_eq!(tail[2]["detail"]["filter"]["employee"], "101");
    assert!(tail[2]["actor"].as_str().unwrap().ends_with("via cli"));

    let out = audit_cli(
        &h,
        &[
            "search",
            "--link",
            LINK,
            "--kind",
            "run",
            "--since",
            "2020-01-01",
        ],
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains("run.started") && text.contains("run.finished"));
    let out = audit_cli(&h, &["search", "--until", "2020-01-01"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 0);
    let out = audit_cli(&h, &["search", "--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(2));

    let out = audit_cli(&h, &["head"]);
    let head = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(head.starts_with(&format!("{total}:")), "{head}");
    let out = audit_cli(&h, &["verify", "--expect", &head]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wrong = format!("{total}:{}", "0".repeat(64));
    assert_eq!(
        audit_cli(&h, &["verify", "--expect", &wrong]).status.code(),
        Some(1)
    );
}
