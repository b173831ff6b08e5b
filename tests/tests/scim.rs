//! The SCIM 2.0 plugin (`plugins/scim`) against a real SCIM server
//! (`scim2-server`, see `switchyard_testkit::scim`): the conformance
//! runner, and a whole lifecycle synced from the BambooHR simulator.

use std::collections::BTreeSet;

use serde_json::Value;
use switchyard_testkit::harness::{Harness, LINK, switchyard_bin};
use switchyard_testkit::plugins;
use switchyard_testkit::scim::ScimServer;

/// Run the conformance runner on `plugin` against a fresh SCIM server and
/// check both its verdict and what the server holds afterwards.
async fn passes_conformance(plugin: &std::path::Path, batches: bool) {
    let scim = ScimServer::start("conformance-token").unwrap();
    let auth = format!(r#"{{ kind = "bearer", token = "{}" }}"#, scim.token());
    let output = std::process::Command::new(switchyard_bin())
        .args(["plugin", "test"])
        .arg(plugin)
        .args(["--against", scim.url(), "--auth", &auth])
        .args(["--course", "SAFETY-2026", "--json"])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert_eq!(output.status.code(), Some(0), "{report:#}");
    let results: Vec<(String, String)> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["check"].as_str().unwrap().to_owned(),
                c["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (check, result) in &results {
        let batch_check = matches!(
            check.as_str(),
            "batch accounts" | "batch twice" | "batch enrolments" | "account listing"
        );
        let expected = if check == "completion fetch" || (batch_check && !batches) {
            "skip" // SCIM has no completions; the Python example no batches
        } else {
            "pass"
        };
        assert_eq!(result, expected, "{check}: {report:#}");
    }
    assert!(results.len() >= 18, "{results:?}");

    // What the server holds: the eight enrolments made at once share one
    // group (the shared lock), the withdrawn first account is not in it.
    let groups = scim
        .list("Groups", r#"displayName eq "SAFETY-2026""#)
        .await
        .unwrap();
    assert_eq!(groups.len(), 1, "{groups:#?}");
    let members = groups[0]["members"].as_array().cloned().unwrap_or_default();
    // Three more, enrolled in one Bulk request, where the plugin batches.
    let batched = if batches { 3 } else { 0 };
    assert_eq!(members.len(), 8 + batched, "{members:#?}");
    let users = scim.list("Users", "").await.unwrap();
    assert_eq!(users.len(), 10 + batched, "one account per test employee");
    assert!(users.iter().all(|u| u["active"] == false), "left suspended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scim_plugin_passes_the_conformance_runner_against_a_real_scim_server() {
    passes_conformance(&plugins::build("scim").unwrap(), true).await;
}

/// The Python plugin (`examples/python-scim`, built with componentize-py
/// against the same WIT) passes the same checks against the same server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_plugin_passes_the_conformance_runner_against_a_real_scim_server() {
    let wasm = plugins::build_python("python-scim", "lms-connector").unwrap();
    passes_conformance(&wasm, false).await;
}

/// Make the harness link's LMS side the SCIM plugin against `scim`.
fn scim_lms(h: &Harness, scim: &ScimServer) {
    plugins::install("scim", &h.dir.join("plugins.d"), "scim").unwrap();
    let text = std::fs::read_to_string(&h.config_path).unwrap();
    let start = text.find("[connectors.lms]").unwrap();
    let end = text.find("[links.").unwrap();
    let lms = format!(
        "[connectors.lms]\nplugin = \"scim\"\nconfig = {{ base_url = \"{url}\" }}\nallow = [\"{url}\"]\nauth = {{ kind = \"bearer\", token = \"{token}\" }}\n\n",
        url = scim.url(),
        token = scim.token(),
    );
    std::fs::write(
        &h.config_path,
        format!("{}{lms}{}", &text[..start], &text[end..]),
    )
    .unwrap();
}

/// The paths of the requests the LMS connector made, from the audit log.
fn lms_paths(service: &switchyard::Service) -> Vec<String> {
    service
        .state
        .audit()
        .read(&Default::default(), None)
        .unwrap()
        .into_iter()
        .filter(|e| e.record.kind == "http.request" && e.record.connector.as_deref() == Some("lms"))
        .filter_map(|e| e.personal_data?["path"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_bulk_writes_in_a_few_requests_and_a_refused_operation_costs_only_itself() {
    let scim = ScimServer::start("bulk-token").unwrap();
    let h = Harness::start(30).await.unwrap();
    scim_lms(&h, &scim);
    let expected = h.with_access();
    // An account made by hand under the userName the plugin gives one
    // employee, without their HRIS id: the Bulk create meets 409 and the
    // plugin adopts that account.
    let by_hand = expected.iter().next().unwrap().clone();
    let made = scim
        .post(
            "Users",
            &serde_json::json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": format!("hris-{by_hand}"),
            }),
        )
        .await
        .unwrap();

    let service = h.service().unwrap();
    let report = service.sync_link(LINK).await.unwrap();
    assert_eq!(report.dead_lettered, 0, "{report:?}");
    assert_eq!(report.users_adopted, 1, "{report:?}");
    assert_eq!(report.users_created, expected.len() - 1, "{report:?}");
    let users = scim.list("Users", "").await.unwrap();
    assert_eq!(users.len(), expected.len(), "no duplicates");
    let adopted = users.iter().find(|u| u["id"] == made["id"]).unwrap();
    assert_eq!(adopted["externalId"], by_hand.as_str());

    // Accounts and memberships went out in Bulk requests: a handful of
    // requests, where one per operation would be over a hundred.
    let paths = lms_paths(&service);
    let bulk = paths.iter().filter(|p| p.ends_with("/Bulk")).count();
    assert!(bulk >= 2, "{paths:?}");
    assert!(
        paths.len() <= 20,
        "{} LMS requests for {} accounts: {paths:?}",
        paths.len(),
        expected.len()
    );
    assert_eq!(report.enrollments, {
        let groups = scim.list("Groups", "").await.unwrap();
        groups
            .iter()
            .map(|g| g["members"].as_array().map_or(0, Vec::len))
            .sum::<usize>()
    });

    // Someone deletes an account in the LMS; two employees change email.
    // In the next Bulk request the deleted one's update is refused (404)
    // and dead-lettered alone; the other goes through.
    let mut ids = expected.iter().filter(|id| **id != by_hand);
    let (gone, changed) = (ids.next().unwrap().clone(), ids.next().unwrap().clone());
    let gone_account = users
        .iter()
        .find(|u| u["externalId"] == gone.as_str())
        .unwrap();
    scim.delete(&format!("Users/{}", gone_account["id"].as_str().unwrap()))
        .await
        .unwrap();
    for id in [&gone, &changed] {
        h.hris.update_employee(id, |e| {
            e.work_email = Some(format!("{id}.new@acme.example"))
        });
    }
    let second = service.sync_link(LINK).await.unwrap();
    let letters = service.state.dead_letters(&LINK.into()).unwrap();
    assert!(!letters.is_empty(), "{second:?}");
    assert!(
        letters
            .iter()
            .all(|l| l.operation.employee_id.as_str() == gone.as_str()),
        "{letters:?}"
    );
    assert_eq!(letters[0].operation.kind.name(), "upsert-user");
    assert!(letters[0].reason.contains("404"), "{}", letters[0].reason);
    assert_eq!(second.users_updated, 1, "{second:?}");
    let users = scim.list("Users", "").await.unwrap();
    let updated = users
        .iter()
        .find(|u| u["externalId"] == changed.as_str())
        .unwrap();
    assert_eq!(
        updated["emails"][0]["value"],
        format!("{changed}.new@acme.example").as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_provisions_scim_users_and_course_groups_through_a_whole_lifecycle() {
    let scim = ScimServer::start("sync-token").unwrap();
    let h = Harness::start(12).await.unwrap();
    scim_lms(&h, &scim);
    let service = h.service().unwrap();
    let report = service.sync_link(LINK).await.unwrap();
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("does not fetch completions")),
        "no completions from SCIM, said: {:?}",
        report.notes
    );

    let with_access = h.with_access();
    let users = scim.list("Users", "").await.unwrap();
    let external: BTreeSet<String> = users
        .iter()
        .map(|u| u["externalId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(external, with_access);
    assert_eq!(users.len(), with_access.len(), "no duplicates");

    // Every course a group, everyone active in the code of conduct.
    let conduct = scim
        .list("Groups", r#"displayName eq "CODE-OF-CONDUCT""#)
        .await
        .unwrap();
    assert_eq!(conduct.len(), 1);
    let members: BTreeSet<String> = conduct[0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap().to_owned())
        .collect();
    assert!(members.len() >= with_access.len() - 2, "{members:?}");

    // A termination suspends, a rehire reactivates the same account.
    let id = "102";
    let account = |users: &[Value]| {
        users
            .iter()
            .find(|u| u["externalId"] == id)
            .cloned()
            .unwrap()
    };
    let before = account(&users);
    h.hris.update_employee(id, |e| {
        e.status = "Inactive".into();
        e.employment_history_status = Some("Terminated".into());
        e.termination_date = Some("2026-06-30".into());
    });
    service.sync_link(LINK).await.unwrap();
    let after = account(&scim.list("Users", "").await.unwrap());
    assert_eq!(after["active"], false);
    h.hris.update_employee(id, |e| {
        e.status = "Active".into();
        e.employment_history_status = Some("Full-Time".into());
        e.termination_date = None;
    });
    service.sync_link(LINK).await.unwrap();
    let users = scim.list("Users", "").await.unwrap();
    let rehired = account(&users);
    assert_eq!(rehired["active"], true);
    assert_eq!(rehired["id"], before["id"], "the same account");
    assert_eq!(users.len(), with_access.len(), "still no duplicates");
}
