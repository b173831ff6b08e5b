//! Connecting to an LMS that already holds accounts: `switchyard match`
//! reports which account each employee would be bound to and what a person
//! must decide; the first sync follows the decisions file. Real plugins,
//! the Moodle and BambooHR simulators over loopback, sled, the binary.

use std::collections::BTreeMap;
use std::process::{Command, Output};

use serde_json::Value;
use switchyard::audit::Filter;
use switchyard_testkit::harness::{Harness, LINK, Options, switchyard_bin};
use switchyard_testkit::hris::SimEmployee;

const MATCHING: &str =
    r#"matching = { keys = ["hris-id", "email", "username"], decisions = "decisions.toml" }"#;

fn cli(h: &Harness, args: &[&str]) -> Output {
    Command::new(switchyard_bin())
        .args(args)
        .arg("--config")
        .arg(&h.config_path)
        .output()
        .unwrap()
}

fn report(h: &Harness) -> (Option<i32>, Value) {
    let out = cli(h, &["match", LINK, "--format", "json"]);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "match printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    // In a pipe, no progress bar is drawn.
    assert!(
        !out.stderr.iter().any(|b| *b == b'\r' || *b == 0x1b),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), json)
}

fn line<'a>(report: &'a Value, employee: &str) -> &'a Value {
    report["employees"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["employee_id"] == employee)
        .unwrap_or_else(|| panic!("no line for employee {employee}: {report:#}"))
}

fn problems(line: &Value) -> Vec<&str> {
    line["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["problem"].as_str().unwrap())
        .collect()
}

fn email(e: &SimEmployee) -> String {
    e.work_email.clone().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_match_report_names_every_problem_and_the_first_sync_follows_the_decisions() {
    match_decide_sync("").await;
}

/// The same through single operations (`upsert-user`), not batches, and
/// with the LMS's accounts listed two to a page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_batches_the_first_sync_follows_the_decisions_too() {
    match_decide_sync("max_batch = 1").await;
}

async fn match_decide_sync(limits: &str) {
    let h = Harness::start_with(Options {
        employees: 12,
        link_extra: MATCHING.into(),
        limits: limits.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    if !limits.is_empty() {
        let text = std::fs::read_to_string(&h.config_path).unwrap();
        let moodle = text.find("plugin = \"moodle\"\nconfig = {").unwrap();
        let close = moodle + text[moodle..].find(" }").unwrap();
        let text = format!(
            "{}, accounts_per_page = 2{}",
            &text[..close],
            &text[close..]
        );
        std::fs::write(&h.config_path, text).unwrap();
    }
    std::fs::write(h.dir.join("decisions.toml"), "").unwrap();
    let with_access = h.with_access();
    let people: Vec<SimEmployee> = h
        .hris
        .employees()
        .into_iter()
        .filter(|e| with_access.contains(&e.id))
        .collect();
    assert!(people.len() >= 7, "{}", people.len());
    let [
        by_id,
        by_email,
        shared_a,
        shared_b,
        similar,
        differs,
        untouched,
    ] = [0, 1, 2, 3, 4, 5, 6].map(|i| people[i].clone());

    // Accounts made by hand, years ago.
    let lms = &h.lms;
    let a_id = lms.add_named_user(
        "hand.a",
        &by_id.id,
        &email(&by_id),
        (&by_id.first_name, &by_id.last_name),
    );
    // Only the email matches, in another case; the name in capitals.
    let a_email = lms.add_named_user(
        "hand.b",
        "",
        &email(&by_email).to_uppercase(),
        (
            &by_email.first_name.to_uppercase(),
            &by_email.last_name.to_uppercase(),
        ),
    );
    // One account two employees match: one by email, one by username.
    let local = email(&shared_b).split('@').next().unwrap().to_lowercase();
    let a_shared = lms.add_named_user(&local, "", &email(&shared_a), ("Shared", "Mailbox"));
    // Someone with almost the same name and another address.
    let typo = format!("{}x", similar.first_name);
    let a_similar = lms.add_named_user(
        "hand.similar",
        "",
        "private@elsewhere.example",
        (&typo, &similar.last_name),
    );
    // The HRIS id, but another name.
    let a_differs = lms.add_named_user(
        "hand.differs",
        &differs.id,
        &email(&differs),
        ("Somebody", "Else"),
    );
    let a_orphan = lms.add_named_user("orphan", "", "gone@acme.example", ("Long", "Gone"));
    let before = lms.users().len();

    // The report, line by line; nothing written to either system.
    let (code, r) = report(&h);
    assert_eq!(code, Some(6), "something to decide: {r:#}");
    let l = line(&r, &by_id.id);
    assert_eq!(
        (l["outcome"].as_str(), l["by"].as_str()),
        (Some("bind"), Some("hris-id"))
    );
    assert_eq!(l["account"], a_id.to_string());
    let l = line(&r, &by_email.id);
    assert_eq!(
        (l["outcome"].as_str(), l["by"].as_str()),
        (Some("bind"), Some("email"))
    );
    assert_eq!(l["account"], a_email.to_string());
    assert!(problems(l).is_empty(), "case is no difference: {l:#}");
    for who in [&shared_a, &shared_b] {
        let l = line(&r, &who.id);
        assert_eq!(l["outcome"], "decide");
        assert_eq!(problems(l), ["shared-account"], "{l:#}");
        assert_eq!(l["problems"][0]["account"], a_shared.to_string());
    }
    let l = line(&r, &similar.id);
    assert_eq!(
        (l["outcome"].as_str(), problems(l)),
        (Some("decide"), vec!["similar-account"])
    );
    assert_eq!(l["problems"][0]["account"], a_similar.to_string());
    let l = line(&r, &differs.id);
    assert_eq!(problems(l), ["differs"], "{l:#}");
    assert_eq!(l["problems"][0]["field"], "name");
    assert_eq!(line(&r, &untouched.id)["outcome"], "new");
    let unmatched: Vec<&str> = r["unmatched_accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["account"].as_str().unwrap())
        .collect();
    assert_eq!(unmatched, [a_similar.to_string(), a_orphan.to_string()]);
    assert_eq!(r["summary"]["to_decide"], 4);
    assert_eq!(r["summary"]["bound"], 2);
    assert_eq!(lms.users().len(), before, "match wrote nothing");
    assert_eq!(lms.write_count(), 0, "match wrote nothing");

    // The same as CSV (one row per problem) and as a table.
    let csv = cli(&h, &["match", LINK, "--format", "csv"]);
    assert_eq!(csv.status.code(), Some(6));
    let csv = String::from_utf8(csv.stdout).unwrap();
    let shared_rows = csv
        .lines()
        .filter(|l| l.contains(",shared-account,"))
        .count();
    assert_eq!(shared_rows, 2, "{csv}");
    assert!(
        csv.lines()
            .any(|l| l.starts_with("unmatched-account,") && l.contains("orphan"))
    );
    let table = cli(&h, &["match", LINK]);
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.contains("4 to decide"), "{table}");

    // Decisions for all but the similar name. The first sync binds as
    // decided and holds the undecided employee back.
    let decisions = format!(
        "[[bind]]\nemployee = \"{}\"\naccount = \"{a_shared}\"\n\n[[bind]]\nemployee = \"{}\"\naccount = \"{a_differs}\"\nnote = \"renamed\"\n",
        shared_a.id, differs.id
    );
    std::fs::write(h.dir.join("decisions.toml"), &decisions).unwrap();
    let (code, r) = report(&h);
    assert_eq!(code, Some(6));
    assert_eq!(r["summary"]["to_decide"], 1, "{r:#}");
    assert_eq!(line(&r, &shared_b.id)["outcome"], "new");
    let sync = h.sync_cli();
    assert_eq!(
        sync.status.code(),
        Some(4),
        "the undecided one is dead-lettered: {sync:?}"
    );
    let service = h.service().unwrap();
    let dead = service.state.dead_letters(&LINK.into()).unwrap();
    // Its account write, and what was blocked behind it (an enrolment).
    assert!(
        dead.iter().all(|d| *d.operation.employee_id == *similar.id),
        "{dead:?}"
    );
    assert_eq!(dead[0].operation.kind.name(), "upsert-user");
    assert!(
        dead[0].reason.contains("needs a decision") && dead[0].reason.contains("switchyard match"),
        "{}",
        dead[0].reason
    );
    drop(service);

    // Decided: a new account beside the similar one; replayed.
    std::fs::write(
        h.dir.join("decisions.toml"),
        format!(
            "{decisions}\n[[never]]\nemployee = \"{}\"\naccount = \"{a_similar}\"\n",
            similar.id
        ),
    )
    .unwrap();
    let (code, _) = report(&h);
    assert_eq!(code, Some(0), "nothing left to decide");
    let ids: Vec<String> = dead.iter().map(|d| d.id.to_string()).collect();
    let mut args = vec!["dlq", "replay", LINK];
    args.extend(ids.iter().map(String::as_str));
    let replay = cli(&h, &args);
    assert!(replay.status.success(), "{replay:?}");
    let sync = h.sync_cli();
    assert!(sync.status.success(), "{sync:?}");

    // Every binding as decided or matched; nobody twice; the rest alone.
    let users = lms.users();
    let by_idnumber: BTreeMap<&str, Vec<u64>> = users.iter().fold(BTreeMap::new(), |mut m, u| {
        m.entry(u.idnumber.as_str()).or_default().push(u.id);
        m
    });
    for (who, account) in [
        (&by_id, a_id),
        (&by_email, a_email),
        (&shared_a, a_shared),
        (&differs, a_differs),
    ] {
        assert_eq!(
            by_idnumber.get(who.id.as_str()),
            Some(&vec![account]),
            "{}",
            who.id
        );
    }
    for who in &people {
        assert_eq!(
            by_idnumber.get(who.id.as_str()).map(Vec::len),
            Some(1),
            "one account for {}",
            who.id
        );
    }
    for who in [&shared_b, &similar, &untouched] {
        let id = by_idnumber[who.id.as_str()][0];
        assert!(id > a_orphan, "{} got a new account", who.id);
    }
    let left: Vec<u64> = users
        .iter()
        .filter(|u| u.idnumber.is_empty())
        .map(|u| u.id)
        .collect();
    assert_eq!(left, [a_similar, a_orphan], "unmatched accounts left alone");
    assert_eq!(users.len(), before + people.len() - 4);

    // The audit log says what bound each adopted account.
    let service = h.service().unwrap();
    let adopted = service
        .state
        .audit()
        .read(
            &Filter {
                kind: Some("user.adopted".into()),
                ..Filter::default()
            },
            None,
        )
        .unwrap();
    let bound_by: BTreeMap<String, String> = adopted
        .iter()
        .map(|e| {
            (
                e.record.employee.clone().unwrap_or_default(),
                e.record.detail["bound_by"]
                    .as_str()
                    .unwrap_or("-")
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        bound_by.get(&shared_a.id).map(String::as_str),
        Some("decision")
    );
    assert_eq!(
        bound_by.get(&differs.id).map(String::as_str),
        Some("decision")
    );
    assert_eq!(
        bound_by.get(&by_email.id).map(String::as_str),
        Some("email")
    );
    assert_eq!(bound_by.get(&by_id.id).map(String::as_str), Some("hris-id"));
}
