//! Webhook ingress over real HTTP: the router served on loopback, a real
//! sled state, the real Moodle plugin, and the simulated LMS producing the
//! signed bodies its companion plugin would send. Each row of the table
//! asserts the status, the verdict and what the outbox holds afterwards;
//! then the outbox is applied and a poll must not write anything again.

use std::collections::BTreeSet;
use std::sync::Arc;

use switchyard::model::OpKind;
use switchyard::webhook::{Ingress, router};
use switchyard_testkit::harness::{Harness, LINK, Options};
use switchyard_testkit::lms::LmsSim;
use switchyard_testkit::plugins;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER_SECRET: &str = "whsec_c2VjcmV0LWtleS1vZi1zb21lb25lLWVsc2U=";
const MAX_BODY_KIB: usize = 4;

/// (employee, course, attempt) of every `push-completion` in the outbox.
type Pushes = BTreeSet<(String, String, String)>;

fn pushes(state: &dyn switchyard::store::Store) -> Pushes {
    state
        .outbox(&LINK.into())
        .unwrap()
        .into_iter()
        .flatten()
        .filter_map(|op| match op.kind {
            OpKind::PushCompletion { completion: c, .. } => {
                Some((c.employee_id.into(), c.course_id.into(), c.attempt_id))
            }
            _ => None,
        })
        .collect()
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

struct Delivery {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A delivery signed with `secret` at `timestamp`, to connector `lms`.
fn signed(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Delivery {
    Delivery {
        path: "/webhooks/lms".into(),
        headers: LmsSim::sign_webhook(secret, id, timestamp, body).unwrap(),
        body: body.to_vec(),
    }
}

struct Case {
    name: &'static str,
    delivery: Delivery,
    status: u16,
    verdict: &'static str,
    /// The outbox's push-completions after this row.
    outbox: Pushes,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_table_status_and_outbox_then_written_back_once() {
    let h = Harness::start(10).await.unwrap();
    // The LMS connector takes Standard Webhooks; `old-lms` runs a plugin
    // built against contract 0.1.0, which has no webhook-source.
    let secret_file = h.dir.join("lms-webhook.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    plugins::install("contract-v0-1", &h.dir.join("plugins.d"), "old-moodle").unwrap();
    let mut config = std::fs::read_to_string(&h.config_path).unwrap();
    config.push_str(&format!(
        r#"
[connectors.lms.webhook]
scheme = "standard"
secret = {{ secret = "file:{secret}" }}
max_body_kib = {MAX_BODY_KIB}

[connectors.old-lms]
plugin = "old-moodle"
[connectors.old-lms.webhook]
scheme = "standard"
secret = {{ secret = "file:{secret}" }}
"#,
        secret = secret_file.display()
    ));
    std::fs::write(&h.config_path, config).unwrap();

    let service = h.service().unwrap();
    service.sync_link(LINK).await.unwrap();
    assert!(pushes(&*service.state).is_empty());

    // Two employees complete a course in Moodle.
    let learners: Vec<String> = h
        .lms
        .users()
        .iter()
        .map(|u| u.idnumber.clone())
        .take(2)
        .collect();
    assert_eq!(learners.len(), 2, "the first sync created LMS accounts");
    let first = h
        .lms
        .mark_completed(&learners[0], "CODE-OF-CONDUCT", Some(90.0), Some(true))
        .unwrap();
    let second = h
        .lms
        .mark_completed(&learners[1], "CODE-OF-CONDUCT", Some(75.0), Some(true))
        .unwrap();
    let body1 = h.lms.completion_webhook_body(first).unwrap();
    let body2 = h.lms.completion_webhook_body(second).unwrap();
    let push1 = (
        learners[0].clone(),
        "CODE-OF-CONDUCT".to_owned(),
        first.to_string(),
    );
    let push2 = (
        learners[1].clone(),
        "CODE-OF-CONDUCT".to_owned(),
        second.to_string(),
    );

    let ingress = Ingress::for_service(&service).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server =
        tokio::spawn(async move { axum::serve(listener, router(Arc::new(ingress))).await });
    let client = reqwest::Client::new();

    let none = Pushes::new;
    let t = now();
    let cases = vec![
        Case {
            name: "unknown connector",
            delivery: Delivery {
                path: "/webhooks/nope".into(),
                ..signed(SECRET, "msg_a", t, &body1)
            },
            status: 404,
            verdict: "unknown-connector",
            outbox: none(),
        },
        Case {
            name: "connector without a webhook table",
            delivery: Delivery {
                path: "/webhooks/hr".into(),
                ..signed(SECRET, "msg_a", t, &body1)
            },
            status: 404,
            verdict: "not-configured",
            outbox: none(),
        },
        Case {
            name: "missing headers",
            delivery: {
                let mut d = signed(SECRET, "msg_a", t, &body1);
                d.headers.retain(|(n, _)| n != "webhook-id");
                d
            },
            status: 400,
            verdict: "missing-header",
            outbox: none(),
        },
        Case {
            name: "tampered body",
            delivery: {
                let mut d = signed(SECRET, "msg_a", t, &body1);
                d.body = String::from_utf8(body1.clone())
                    .unwrap()
                    .replace("90", "99")
                    .into_bytes();
                assert_ne!(d.body, body1);
                d
            },
            status: 401,
            verdict: "bad-signature",
            outbox: none(),
        },
        Case {
            name: "wrong secret",
            delivery: signed(OTHER_SECRET, "msg_a", t, &body1),
            status: 401,
            verdict: "bad-signature",
            outbox: none(),
        },
        Case {
            name: "stale timestamp",
            delivery: signed(SECRET, "msg_a", t - 600, &body1),
            status: 401,
            verdict: "stale",
            outbox: none(),
        },
        Case {
            name: "oversized body",
            delivery: {
                // Valid JSON and a valid signature: only the size is wrong.
                let mut big = body1.clone();
                big.extend(std::iter::repeat_n(b' ', MAX_BODY_KIB * 1024));
                signed(SECRET, "msg_a", t, &big)
            },
            status: 413,
            verdict: "too-large",
            outbox: none(),
        },
        Case {
            name: "plugin built against contract 0.1.0",
            delivery: Delivery {
                path: "/webhooks/old-lms".into(),
                ..signed(SECRET, "msg_a", t, &body1)
            },
            status: 422,
            verdict: "unsupported",
            outbox: none(),
        },
        Case {
            name: "valid",
            delivery: signed(SECRET, "msg_1", t, &body1),
            status: 200,
            verdict: "accepted",
            outbox: [push1.clone()].into(),
        },
        Case {
            name: "one valid signature among several",
            delivery: {
                let mut d = signed(SECRET, "msg_2", t, &body2);
                let wrong = signed(OTHER_SECRET, "msg_2", t, &body2);
                let (valid, forged) = (&d.headers[2].1, &wrong.headers[2].1);
                d.headers[2].1 = format!("{forged} v1,bm90LWEtc2lnbmF0dXJl {valid}");
                d
            },
            status: 200,
            verdict: "accepted",
            outbox: [push1.clone(), push2.clone()].into(),
        },
        Case {
            name: "replayed id",
            // Freshly signed, so only the id makes it a replay.
            delivery: signed(SECRET, "msg_1", t + 1, &body1),
            status: 200,
            verdict: "replay",
            outbox: [push1.clone(), push2.clone()].into(),
        },
        Case {
            name: "same completion under a new id",
            delivery: signed(SECRET, "msg_3", t, &body1),
            status: 200,
            verdict: "accepted",
            outbox: [push1.clone(), push2.clone()].into(),
        },
    ];

    for case in cases {
        let mut request = client
            .post(format!("{base}{}", case.delivery.path))
            .body(case.delivery.body.clone());
        for (name, value) in &case.delivery.headers {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(status, case.status, "{}: {answer}", case.name);
        assert_eq!(answer["verdict"], case.verdict, "{}: {answer}", case.name);
        assert_eq!(
            pushes(&*service.state),
            case.outbox,
            "{}: outbox",
            case.name
        );
    }
    assert!(
        service
            .state
            .is_webhook_delivered(&"lms".into(), "msg_1")
            .unwrap()
    );
    assert!(
        !service
            .state
            .is_webhook_delivered(&"lms".into(), "msg_a")
            .unwrap(),
        "refused deliveries leave no marker"
    );

    // The engine applies what the webhooks queued: one training record each.
    let writes_before = h.hris.write_count();
    service.drain_outbox(LINK).await.unwrap();
    assert!(pushes(&*service.state).is_empty());
    let records = |learner: &str| {
        h.hris
            .training_records()
            .into_iter()
            .filter(|r| r.employee_id == learner)
            .count()
    };
    assert_eq!((records(&learners[0]), records(&learners[1])), (1, 1));
    assert_eq!(h.hris.write_count(), writes_before + 2);

    // The next poll lists both completions again: nothing is written twice.
    let report = service.sync_link(LINK).await.unwrap();
    assert_eq!(report.completions_written, 0, "{report:?}");
    assert_eq!((records(&learners[0]), records(&learners[1])), (1, 1));
    assert_eq!(h.hris.write_count(), writes_before + 2);

    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_polled_first_is_not_queued_again_by_its_webhook() {
    let h = Harness::start(5).await.unwrap();
    let secret_file = h.dir.join("lms-webhook.secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let mut config = std::fs::read_to_string(&h.config_path).unwrap();
    config.push_str(&format!(
        "\n[connectors.lms.webhook]\nscheme = \"standard\"\nsecret = {{ secret = \"file:{}\" }}\n",
        secret_file.display()
    ));
    std::fs::write(&h.config_path, config).unwrap();
    let service = h.service().unwrap();
    service.sync_link(LINK).await.unwrap();
    let learner = h.lms.users()[0].idnumber.clone();
    let id = h
        .lms
        .mark_completed(&learner, "CODE-OF-CONDUCT", Some(80.0), Some(true))
        .unwrap();
    service.sync_link(LINK).await.unwrap();
    let writes = h.hris.write_count();

    // The webhook arrives late (retried by the sender after the poll).
    let ingress = Ingress::for_service(&service).unwrap();
    let body = h.lms.completion_webhook_body(id).unwrap();
    let mut headers = axum::http::HeaderMap::new();
    for (name, value) in LmsSim::sign_webhook(SECRET, "msg_late", now(), &body).unwrap() {
        headers.insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let outcome = ingress.handle("lms", &headers, body.into()).await;
    assert_eq!(outcome.verdict(), "accepted", "{outcome:?}");
    assert!(
        pushes(&*service.state).is_empty(),
        "already written by the poll"
    );
    service.drain_outbox(LINK).await.unwrap();
    assert_eq!(h.hris.write_count(), writes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bamboohr_change_webhook_with_an_hmac_header_plans_the_employee_once() {
    // The link keeps no location: a webhook's record passes the field
    // allowlist like a listing's.
    let h = Harness::start_with(Options {
        employees: 10,
        page_size: 25,
        link_extra: r#"fields = ["email", "given_name", "family_name", "department", "job_title"]"#
            .into(),
        ..Options::default()
    })
    .await
    .unwrap();
    let sign = hr_webhook(&h);
    let service = h.service().unwrap();
    service.sync_link(LINK).await.unwrap();

    let id = h
        .lms
        .users()
        .into_iter()
        .map(|u| u.idnumber)
        .find(|id| {
            !h.lms
                .enrolments_of(id)
                .iter()
                .any(|(c, _)| c == "FORKLIFT-CERT")
        })
        .expect("someone who is not a forklift operator");
    h.hris
        .update_employee(&id, |e| e.job_title = Some("Forklift Operator".into()));

    let body = format!(
        r#"{{"employees":[{{"id":"{id}","action":"Updated","changedFields":["jobTitle"]}}]}}"#
    );
    let t = now();
    let deliver = |key: &str, timestamp: i64| sign(key, timestamp, &body);
    let ingress = Ingress::for_service(&service).unwrap();
    let enrolls = |state: &dyn switchyard::store::Store| -> Vec<String> {
        state
            .outbox(&LINK.into())
            .unwrap()
            .into_iter()
            .flatten()
            .filter_map(|op| match op.kind {
                OpKind::Enroll { course, .. } if op.employee_id == id => Some(course.into()),
                _ => None,
            })
            .collect()
    };

    let refused = ingress
        .handle("hr", &deliver("not-the-key", t), body.clone().into())
        .await;
    assert_eq!(
        (refused.status().as_u16(), refused.verdict()),
        (401, "bad-signature")
    );
    assert!(enrolls(&*service.state).is_empty());

    // A quarantined connector's plugin is not called; the sender retries later.
    let plugin = &service.connectors["hr"].plugin;
    service
        .state
        .put_connector_health(
            &"hr".into(),
            &switchyard::store::ConnectorHealth {
                plugin: plugin.name.clone(),
                sha256: plugin.sha256.clone(),
                faults_in_a_row: 5,
                quarantine: Some(switchyard::store::Quarantine {
                    reason: "test".into(),
                    faults: 5,
                    at: switchyard::model::Timestamp::now(),
                }),
            },
        )
        .unwrap();
    let paused = ingress
        .handle("hr", &deliver("bamboo-private-key", t), body.clone().into())
        .await;
    assert_eq!(
        (paused.status().as_u16(), paused.verdict()),
        (503, "unavailable")
    );
    assert!(enrolls(&*service.state).is_empty());
    service.resume(&"hr".into()).unwrap();

    let accepted = ingress
        .handle("hr", &deliver("bamboo-private-key", t), body.clone().into())
        .await;
    assert_eq!(accepted.verdict(), "accepted", "{accepted:?}");
    assert_eq!(enrolls(&*service.state), vec!["FORKLIFT-CERT".to_owned()]);
    let snapshot = service
        .state
        .snapshot(&LINK.into(), &id.as_str().into())
        .unwrap()
        .unwrap()
        .employee;
    assert_eq!(snapshot.job_title.as_deref(), Some("Forklift Operator"));
    assert_eq!(
        (snapshot.location, snapshot.hire_date),
        (None, None),
        "dropped fields stored from a webhook"
    );
    // The sender retries the same delivery: same signature, a replay.
    let again = ingress
        .handle("hr", &deliver("bamboo-private-key", t), body.clone().into())
        .await;
    assert_eq!(again.verdict(), "replay");
    assert_eq!(enrolls(&*service.state).len(), 1);

    service.drain_outbox(LINK).await.unwrap();
    assert!(
        h.lms
            .enrolments_of(&id)
            .iter()
            .any(|(c, _)| c == "FORKLIFT-CERT")
    );
    // The next poll sees the same change: the snapshot already has it.
    let writes = h.lms.write_count();
    let report = service.sync_link(LINK).await.unwrap();
    assert_eq!(report.enrollments, 0, "{report:?}");
    assert_eq!(h.lms.write_count(), writes);
}

/// Point the HRIS connector `hr` at a BambooHR-style HMAC webhook keyed
/// `bamboo-private-key`, and return a function that signs a body with a key
/// at a time.
fn hr_webhook(h: &Harness) -> impl Fn(&str, i64, &str) -> axum::http::HeaderMap + use<> {
    use switchyard::config::{HmacScheme, SignatureEncoding, SignedPayload};
    use switchyard::webhook::verify::{SigningKey, sign_hmac};

    let secret_file = h.dir.join("hr-webhook.secret");
    std::fs::write(&secret_file, "bamboo-private-key").unwrap();
    let mut config = std::fs::read_to_string(&h.config_path).unwrap();
    config.push_str(&format!(
        r#"
[connectors.hr.webhook]
scheme = "hmac"
secret = {{ secret = "file:{}" }}
signature_header = "X-BambooHR-Signature"
timestamp_header = "X-BambooHR-Timestamp"
signed_payload = "body-then-timestamp"
"#,
        secret_file.display()
    ));
    std::fs::write(&h.config_path, config).unwrap();
    let scheme = HmacScheme {
        signature_header: "x-bamboohr-signature".into(),
        signature_prefix: None,
        signature_encoding: SignatureEncoding::Hex,
        timestamp_header: Some("x-bamboohr-timestamp".into()),
        id_header: None,
        signed_payload: SignedPayload::BodyThenTimestamp,
    };
    move |key: &str, t: i64, body: &str| {
        let signature = sign_hmac(&scheme, &SigningKey::raw(key), body.as_bytes(), Some(t));
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("x-bamboohr-signature", signature.parse().unwrap());
        headers.insert("x-bamboohr-timestamp", t.to_string().parse().unwrap());
        headers
    }
}

/// Polls and webhooks share one ingest path: the same HR change, brought
/// once by a changes-only listing and once by an `employee-changed` webhook
/// to an identical twin of the state, plans the same operations with the
/// same idempotency keys and causes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_change_by_poll_and_by_webhook_plans_the_same_operations() {
    use switchyard::engine::RunOptions;
    use switchyard::engine::plan::PlannedOperation;

    // Ann (102) becomes a forklift operator in another department; Bob
    // (103) leaves the company.
    let change = |h: &Harness| {
        h.hris.update_employee("102", |e| {
            e.job_title = Some("Forklift Operator".into());
            e.department = Some("Logistics".into());
        });
        h.hris.update_employee("103", |e| {
            e.status = "Inactive".into();
            e.employment_history_status = Some("Terminated".into());
        });
    };
    let changed = ["102", "103"];
    let today = switchyard::model::Date::today();

    let by_poll = {
        let h = Harness::start(10).await.unwrap();
        let service = h.service().unwrap();
        service.sync_link(LINK).await.unwrap();
        change(&h);
        let options = RunOptions {
            dry_run: true,
            ..RunOptions::default()
        };
        let report = service.sync_link_with(LINK, options, today).await.unwrap();
        assert!(!report.full_listing, "the second run lists changes only");
        report.plan
    };
    let by_webhook = {
        let h = Harness::start(10).await.unwrap();
        let sign = hr_webhook(&h);
        let service = h.service().unwrap();
        service.sync_link(LINK).await.unwrap();
        change(&h);
        let body = format!(
            r#"{{"employees":[{}]}}"#,
            changed
                .map(|id| format!(
                    r#"{{"id":"{id}","action":"Updated","changedFields":["jobTitle","status"]}}"#
                ))
                .join(",")
        );
        let ingress = Ingress::for_service(&service).unwrap();
        let outcome = ingress
            .handle(
                "hr",
                &sign("bamboo-private-key", now(), &body),
                body.clone().into(),
            )
            .await;
        assert_eq!(outcome.verdict(), "accepted", "{outcome:?}");
        service
            .state
            .outbox(&LINK.into())
            .unwrap()
            .iter()
            .flatten()
            .map(PlannedOperation::from)
            .collect::<Vec<_>>()
    };

    let lines = |plan: &[PlannedOperation]| -> Vec<String> {
        let mut lines: Vec<String> = plan
            .iter()
            .filter(|op| changed.contains(&op.employee_id.as_str()))
            .map(|op| {
                format!(
                    "{} {} {:?} {} [{}]",
                    op.employee_id, op.operation, op.course, op.key, op.cause
                )
            })
            .collect();
        lines.sort();
        lines
    };
    let (poll, webhook) = (lines(&by_poll), lines(&by_webhook));
    assert!(
        poll.iter().any(|l| l.starts_with("102 enroll")),
        "{poll:#?}"
    );
    assert!(
        poll.iter().any(|l| l.starts_with("103 set-active")),
        "{poll:#?}"
    );
    assert_eq!(poll, webhook);
}
