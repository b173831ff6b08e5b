//! `switchyard plugin test`, the conformance runner, as an integrator runs
//! it: the real binary, real plugins, the simulators over loopback. The
//! bundled plugins pass; a plugin that ignores errors fails, with the
//! checks that caught it.

use std::process::Output;

use switchyard_testkit::harness::switchyard_bin;
use switchyard_testkit::hris::{HrisSeed, HrisSim};
use switchyard_testkit::lms::{LmsSeed, LmsSim};
use switchyard_testkit::plugins;

fn plugin_test(args: &[&str]) -> Output {
    let output = std::process::Command::new(switchyard_bin())
        .arg("plugin")
        .arg("test")
        .args(args)
        .output()
        .unwrap();
    eprintln!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The result column of `check` in the table.
fn result_of(stdout: &str, check: &str) -> String {
    stdout
        .lines()
        .find(|l| l.starts_with(check) && l[check.len()..].starts_with("  "))
        .and_then(|l| l[check.len()..].split_whitespace().next())
        .unwrap_or("missing")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_moodle_plugin_passes_against_the_lms_simulator() {
    let lms = LmsSim::start(LmsSeed::default()).await.unwrap();
    let plugin = plugins::build("moodle").unwrap();
    let auth = format!(
        r#"{{ kind = "query", param = "wstoken", value = "{}" }}"#,
        lms.token()
    );
    let output = plugin_test(&[
        plugin.to_str().unwrap(),
        "--against",
        &lms.base_url(),
        "--auth",
        &auth,
        "--course",
        "SAFETY-2026",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    for check in [
        "hire",
        "hire twice",
        "profile change",
        "department change",
        "email change",
        "termination",
        "rehire",
        "enrolment",
        "withdrawal",
        "completion fetch",
        "lost answer",
        "concurrent calls",
        "batch accounts",
        "batch twice",
        "batch enrolments",
        "account listing",
        "401 is unauthorized",
        "429 is rate-limited",
        "5xx is retried",
        "no answer is retried",
    ] {
        assert_eq!(result_of(&stdout, check), "pass", "{check}: {stdout}");
    }
    // What the checks claim is what the LMS holds: one account per test
    // employee (the lost answer made no second one), all left suspended.
    let users = lms.users();
    let mut idnumbers: Vec<&str> = users.iter().map(|u| u.idnumber.as_str()).collect();
    idnumbers.sort();
    let total = idnumbers.len();
    idnumbers.dedup();
    assert_eq!(idnumbers.len(), total, "no duplicate account");
    assert_eq!(
        total, 13,
        "hire, lost answer, eight at once, three in a batch: {idnumbers:?}"
    );
    assert!(users.iter().all(|u| u.suspended), "cleaned up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bamboohr_plugin_passes_against_the_hris_simulator() {
    let hris = HrisSim::start(HrisSeed {
        employees: 12,
        ..HrisSeed::default()
    })
    .await
    .unwrap();
    let plugin = plugins::build("bamboohr").unwrap();
    let auth = format!(
        r#"{{ kind = "basic", username = "{}", password = "x" }}"#,
        hris.api_key()
    );
    let output = plugin_test(&[
        plugin.to_str().unwrap(),
        "--against",
        &hris.base_url(),
        "--auth",
        &auth,
        "--set",
        "page_size=5",
        "--course",
        "SAFETY-2026",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("12 employees over 3 pages"), "{stdout}");
    for check in [
        "paging to the end",
        "changes cursor",
        "change during a listing",
        "no answer is retried",
        "writeback",
        "retake supersedes",
    ] {
        assert_eq!(result_of(&stdout, check), "pass", "{check}: {stdout}");
    }
    // One training record, updated by the retake, in the HRIS itself.
    let records = hris.training_records();
    assert_eq!(records.len(), 1, "{records:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_ignores_the_api_fails_the_checks_that_catch_it() {
    // lms-minimal answers every call without a request: it cannot lose an
    // answer or see a 401, so those checks fail, and the run exits 1.
    let lms = LmsSim::start(LmsSeed::default()).await.unwrap();
    let plugin = plugins::build("lms-minimal").unwrap();
    let output = plugin_test(&[
        plugin.to_str().unwrap(),
        "--against",
        &lms.base_url(),
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["passed"], false);
    let result = |name: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == name)
            .map(|c| c["result"].as_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(result("hire"), "pass");
    assert_eq!(result("401 is unauthorized"), "fail");
    assert_eq!(
        result("completion fetch"),
        "skip",
        "optional, not implemented"
    );
    assert_eq!(result("enrolment"), "skip", "no --course");
}

#[test]
fn bad_input_is_refused_with_exit_2() {
    let plugin = plugins::build("lms-minimal").unwrap();
    let plugin = plugin.to_str().unwrap();
    for args in [
        vec![plugin, "--against", "not a url"],
        vec![
            plugin,
            "--against",
            "http://127.0.0.1:9",
            "--set",
            "novalue",
        ],
        vec![
            plugin,
            "--against",
            "http://127.0.0.1:9",
            "--auth",
            "{ kind = \"magic\" }",
        ],
        vec!["/nonexistent.wasm", "--against", "http://127.0.0.1:9"],
    ] {
        let output = plugin_test(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("error"),
            "{args:?}"
        );
    }
}
