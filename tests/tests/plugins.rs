//! Plugin loading and containment: files the host must refuse, and plugins
//! that misbehave. Real components built from `plugins/` and `tests/plugins/`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard::Config;
use switchyard::config::{
    AuthConfig, ClientAuthConfig, ConnectorConfig, Limits, Origin, SecretSource,
};
use switchyard::model::{AccountWrite, ConnectorError, Employee, EmploymentStatus};
use switchyard::runtime::{Connector, PluginError, Runtime, World};
use switchyard_testkit::harness::{Harness, switchyard_bin};
use switchyard_testkit::plugins;

#[path = "plugins/containment.rs"]
mod containment;

#[test]
fn the_real_plugins_implement_their_worlds() {
    let runtime = Runtime::new().unwrap();
    let hris = runtime
        .load_plugin(&plugins::build("bamboohr").unwrap())
        .unwrap();
    assert_eq!(hris.world, World::Hris);
    assert_eq!(hris.contract_version, "0.5.0");
    assert!(hris.takes_webhooks());
    let lms = runtime
        .load_plugin(&plugins::build("moodle").unwrap())
        .unwrap();
    assert_eq!(lms.world, World::Lms);
    assert_eq!(lms.contract_version, "0.5.0");
    assert!(lms.takes_webhooks());
}

/// A connector of `plugin` with no settings, grants or auth.
fn bare_config(plugin: &str) -> ConnectorConfig {
    ConnectorConfig {
        plugin: plugin.into(),
        line: 0,
        optional: false,
        settings: BTreeMap::new(),
        allow: Vec::new(),
        auth: None,
        credential_origins: None,
        limits: Limits::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_of_contract_0_3_still_loads_and_runs_every_operation() {
    let runtime = Runtime::new().unwrap();
    let plugin = Arc::new(
        runtime
            .load_plugin(&plugins::build("contract-v0-3").unwrap())
            .unwrap(),
    );
    assert_eq!(plugin.world, World::Hris);
    assert_eq!(plugin.contract_version, "0.3.0");
    assert!(plugin.takes_webhooks());
    assert!(
        plugin.imports.iter().all(|i| !i.contains("shared")),
        "{:?}",
        plugin.imports
    );
    let config = bare_config("contract-v0-3");
    let old = runtime.connector("old-hris", &config.grants(), plugin, None);
    assert_eq!(
        old.fetch_employees(None).await.unwrap().employees[0].id,
        "1"
    );
    let records = old.list_training_records("1").await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].course_id, "OLD-COURSE");
    assert!(old.parse_webhook(&[], b"{}").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_of_contract_0_4_still_loads_and_gets_single_operations() {
    let runtime = Runtime::new().unwrap();
    let plugin = Arc::new(
        runtime
            .load_plugin(&plugins::build("contract-v0-4").unwrap())
            .unwrap(),
    );
    assert_eq!(plugin.world, World::Lms);
    assert_eq!(plugin.contract_version, "0.4.0");
    assert!(
        plugin.imports.iter().any(|i| i.contains("shared@0.4.0")),
        "{:?}",
        plugin.imports
    );
    let config = bare_config("contract-v0-4");
    let old = runtime.connector("old-lms", &config.grants(), plugin, None);
    // No batches: the host does not ask, and a batch call is answered
    // `unsupported` without a call into the plugin.
    assert!(!old.batches_accounts() && !old.batches_enrollments());
    let employee = Employee {
        id: "7".into(),
        employee_number: None,
        email: Some("seven@example.com".into()),
        given_name: Some("Sev".into()),
        family_name: Some("En".into()),
        status: EmploymentStatus::Active,
        raw_status: None,
        department: None,
        job_title: None,
        location: None,
        manager_id: None,
        hire_date: None,
        termination_date: None,
        updated_at: None,
        custom: Vec::new(),
    };
    let write = AccountWrite {
        employee: employee.clone(),
        lms_user_id: None,
        key: "k".into(),
    };
    match old.upsert_users(&[write]).await {
        Err(ConnectorError::Unsupported(m)) => assert!(m.contains("0.5.0"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        old.list_accounts(None).await,
        Err(ConnectorError::Unsupported(_))
    ));
    // The single operations, and 0.4.0's `shared` import under its own name.
    assert_eq!(
        old.upsert_user(&employee, None, "k").await.unwrap(),
        "lms-7"
    );
    let found = old.find_user("7").await.unwrap().unwrap();
    assert_eq!(found.id.as_str(), "lms-7");
    old.enroll("lms-7", "SAFETY", None, "e").await.unwrap();
}

/// A group API for `shared-groups`: lookups wait (up to 20 s) until
/// `expected` of them are in flight, so that calls that do not take turns
/// all look before any creates, deterministically.
mod group_api {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::extract::{Path, Query, State};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use serde_json::{Value, json};

    #[derive(Default)]
    pub struct Groups {
        pub groups: Mutex<Vec<String>>,
        pub members: Mutex<Vec<(String, String)>>,
        lookups: tokio::sync::Notify,
        waiting: Mutex<usize>,
        pub expected: usize,
    }

    pub async fn start(expected: usize) -> (String, Arc<Groups>) {
        let state = Arc::new(Groups {
            expected,
            ..Groups::default()
        });
        let app = Router::new()
            .route("/groups", get(find).post(create))
            .route("/groups/{id}/members", post(add))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, state)
    }

    async fn find(
        State(s): State<Arc<Groups>>,
        Query(q): Query<std::collections::HashMap<String, String>>,
    ) -> Json<Value> {
        // Registered before this lookup is counted, so that the last one's
        // notification cannot be missed.
        let notified = s.lookups.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let arrived = {
            let mut waiting = s.waiting.lock().unwrap();
            *waiting += 1;
            *waiting
        };
        if arrived >= s.expected {
            s.lookups.notify_waiters();
        } else {
            // Generous: on a loaded machine eight instances take a while.
            let _ = tokio::time::timeout(Duration::from_secs(20), notified).await;
        }
        let name = q.get("name").cloned().unwrap_or_default();
        let groups = s.groups.lock().unwrap();
        let found: Vec<Value> = groups
            .iter()
            .enumerate()
            .filter(|(_, g)| **g == name)
            .map(|(i, _)| json!({ "id": i.to_string() }))
            .collect();
        Json(json!(found))
    }

    async fn create(State(s): State<Arc<Groups>>, Json(body): Json<Value>) -> Json<Value> {
        let mut groups = s.groups.lock().unwrap();
        groups.push(body["name"].as_str().unwrap_or_default().to_owned());
        Json(json!({ "id": (groups.len() - 1).to_string() }))
    }

    async fn add(
        State(s): State<Arc<Groups>>,
        Path(id): Path<String>,
        Json(body): Json<Value>,
    ) -> Json<Value> {
        let user = body["user"].as_str().unwrap_or_default().to_owned();
        s.members.lock().unwrap().push((id, user));
        Json(json!({}))
    }
}

/// Eight concurrent enrolments in one course through `shared-groups`:
/// with `coordinate` set to `none`, the calls race and create a group each;
/// with the host's lock, one group is made and every member is in it.
async fn enrol_eight(coordinate: &str) -> (Vec<String>, Vec<(String, String)>) {
    // Without coordination all eight lookups meet before any create; with
    // the lock only one call looks at a time, so none waits for others.
    let expected = if coordinate == "none" { 8 } else { 1 };
    let (url, api) = group_api::start(expected).await;
    let runtime = Runtime::new().unwrap();
    let plugin = Arc::new(
        runtime
            .load_plugin(&plugins::build("shared-groups").unwrap())
            .unwrap(),
    );
    let mut config = bare_config("shared-groups");
    config.settings.insert("base_url".into(), url.clone());
    config
        .settings
        .insert("coordinate".into(), coordinate.into());
    config.allow = vec![origin_of(&url)];
    let lms = runtime.connector("groups", &config.grants(), plugin, None);
    let calls = (0..8).map(|i| {
        let lms = lms.clone();
        async move {
            lms.enroll(&format!("user-{i}"), "SAFETY", None, &format!("key-{i}"))
                .await
        }
    });
    for result in futures::future::join_all(calls).await {
        result.unwrap();
    }
    let groups = api.groups.lock().unwrap().clone();
    let members = api.members.lock().unwrap().clone();
    (groups, members)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_make_a_shared_resource_once_under_the_hosts_lock() {
    // The race the lock exists for: every call looks, finds nothing, creates.
    let (groups, _) = enrol_eight("none").await;
    assert_eq!(
        groups.len(),
        8,
        "without coordination each call made a group"
    );

    let (groups, members) = enrol_eight("lock").await;
    assert_eq!(groups, ["SAFETY"], "one group for the course");
    assert_eq!(members.len(), 8);
    assert!(members.iter().all(|(group, _)| group == "0"), "{members:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_hogs_a_shared_key_cannot_stall_the_others_or_keep_it() {
    // The hog says it holds the key by a request to this server.
    let held = Arc::new(tokio::sync::Notify::new());
    let signal = held.clone();
    let app = axum::Router::new().route(
        "/held",
        axum::routing::get(move || {
            let signal = signal.clone();
            async move {
                signal.notify_one();
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}/held", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let runtime = Runtime::new().unwrap();
    // Both calls have this deadline; the waiter gives up a tenth before
    // its own, so it must start within a second of the hog (it does: it
    // starts when the hog says it holds the key).
    let limits = Limits {
        call_timeout_ms: 10_000,
        ..Limits::default()
    };
    let evil = hostile_with(
        &runtime,
        "shared",
        &target,
        limits,
        None,
        &[("key", "group:SAFETY"), ("count", "17"), ("bytes", "10")],
    );
    // One call takes the key and spins; another waits for it, and gets a
    // transient error before its own deadline: contention, not a fault.
    let hog = {
        let evil = evil.clone();
        tokio::spawn(async move { evil.fetch_employees(Some("hog")).await })
    };
    tokio::time::timeout(Duration::from_secs(60), held.notified())
        .await
        .expect("the hog took the key");
    let waited = evil.fetch_employees(Some("lock")).await.unwrap();
    let name = waited.employees[0].given_name.clone().unwrap();
    assert!(name.contains("Transient"), "{name}");
    assert!(name.contains("group:SAFETY"), "names the key: {name}");

    // The hog is stopped at its deadline, and its key is let go with it.
    let stopped = hog.await.unwrap().unwrap_err();
    assert!(
        matches!(stopped, ConnectorError::PluginFault(_)),
        "{stopped}"
    );
    let after = evil.fetch_employees(Some("lock")).await.unwrap();
    assert_eq!(after.employees[0].given_name.as_deref(), Some("locked"));

    // A call holds at most 16 keys.
    let hoard = evil.fetch_employees(Some("hoard")).await.unwrap();
    let name = hoard.employees[0].given_name.clone().unwrap();
    assert!(
        name.starts_with("16: ") && name.contains("Transient"),
        "{name}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remembered_values_are_bounded_in_size() {
    let runtime = Runtime::new().unwrap();
    let evil = hostile_with(
        &runtime,
        "shared",
        "",
        Limits::default(),
        None,
        &[("count", "2"), ("bytes", "5000")],
    );
    let hoard = evil.fetch_employees(Some("hoard")).await.unwrap();
    assert_eq!(
        hoard.employees[0].given_name.as_deref(),
        Some("0: not kept"),
        "a value over 4 KiB is not kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_of_contract_0_2_still_loads_and_runs_without_training_record_reads() {
    let runtime = Runtime::new().unwrap();
    let plugin = Arc::new(
        runtime
            .load_plugin(&plugins::build("contract-v0-2").unwrap())
            .unwrap(),
    );
    assert_eq!(plugin.world, World::Hris);
    assert_eq!(plugin.contract_version, "0.2.0");
    assert!(plugin.takes_webhooks());
    let config = bare_config("contract-v0-2");
    let old = runtime.connector("old-hris", &config.grants(), plugin, None);
    let page = old.fetch_employees(None).await.unwrap();
    assert_eq!(page.employees[0].id, "1");
    assert!(old.parse_webhook(&[], b"{}").await.unwrap().is_empty());
    let err = old.list_training_records("1").await.unwrap_err();
    assert!(matches!(err, ConnectorError::Unsupported(_)), "{err}");
    assert!(
        err.to_string().contains("0.2.0") && err.to_string().contains("0.3.0"),
        "names the plugin's contract and the one needed: {err}"
    );
    assert_eq!(old.consecutive_faults(), 0, "not a plugin fault");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_of_contract_0_1_still_loads_and_runs_without_webhooks() {
    let runtime = Runtime::new().unwrap();
    let plugin = Arc::new(
        runtime
            .load_plugin(&plugins::build("contract-v0-1").unwrap())
            .unwrap(),
    );
    assert_eq!(plugin.world, World::Lms);
    assert_eq!(plugin.contract_version, "0.1.0");
    assert!(!plugin.takes_webhooks());
    let config = bare_config("contract-v0-1");
    let old = runtime.connector("old-lms", &config.grants(), plugin, None);
    let page = old.fetch_completions(None).await.unwrap();
    assert_eq!(page.completions.len(), 1);
    assert_eq!(page.completions[0].course_id, "OLD-COURSE");
    old.set_active("old-7", false, "key-1").await.unwrap();
    let err = old.parse_webhook(&[], b"{}").await.unwrap_err();
    assert!(matches!(err, ConnectorError::Unsupported(_)), "{err}");
    assert!(
        err.to_string().contains("0.1.0"),
        "names the contract: {err}"
    );
    assert_eq!(old.consecutive_faults(), 0, "not a plugin fault");
}

#[test]
fn a_file_that_is_not_a_component_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new().unwrap();

    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, "this is not wasm").unwrap();
    let err = runtime.load_plugin(&text).unwrap_err();
    assert!(matches!(err, PluginError::NotAComponent { .. }), "{err}");
    assert!(err.to_string().contains("notes.wasm"), "{err}");

    // A core module (wasm, but not a component).
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let err = runtime.load_plugin(&core).unwrap_err();
    assert!(matches!(err, PluginError::NotAComponent { .. }), "{err}");
    assert!(err.to_string().contains("core.wasm"), "{err}");

    // Truncated mid-copy.
    let real = std::fs::read(plugins::build("bamboohr").unwrap()).unwrap();
    let half = dir.path().join("half.wasm");
    std::fs::write(&half, &real[..real.len() / 2]).unwrap();
    let err = runtime.load_plugin(&half).unwrap_err();
    assert!(matches!(err, PluginError::NotAComponent { .. }), "{err}");
}

#[test]
fn a_component_of_no_connector_world_is_refused() {
    let runtime = Runtime::new().unwrap();
    let err = runtime
        .load_plugin(&plugins::build("not-a-connector").unwrap())
        .unwrap_err();
    assert!(matches!(err, PluginError::NoWorld { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("not_a_connector.wasm"), "{message}");
    assert!(
        message.contains("example:greeter/greet@1.0.0"),
        "names what it exports: {message}"
    );
}

#[test]
fn exports_of_the_wrong_types_are_refused_at_load_naming_the_function() {
    let runtime = Runtime::new().unwrap();
    let err = runtime
        .load_plugin(&plugins::build("wrong-types").unwrap())
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, PluginError::Link { .. }), "{message}");
    assert!(
        message.contains("wrong-types.wasm") || message.contains("wrong_types.wasm"),
        "{message}"
    );
    assert!(
        message.contains("fetch-employees"),
        "names the function: {message}"
    );
}

#[test]
fn an_unsupported_contract_version_is_refused() {
    let runtime = Runtime::new().unwrap();
    let err = runtime
        .load_plugin(&plugins::build("future-contract").unwrap())
        .unwrap_err();
    assert!(
        matches!(err, PluginError::UnsupportedVersion { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("9.0.0"), "{err}");
    assert!(
        err.to_string().contains("0.1.0"),
        "says what is supported: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_of_the_wrong_world_is_refused_for_its_role() {
    let h = Harness::start(3).await.unwrap();
    let text = std::fs::read_to_string(&h.config_path).unwrap().replacen(
        "plugin = \"bamboohr\"",
        "plugin = \"moodle\"",
        1,
    );
    std::fs::write(&h.config_path, text).unwrap();
    let err = h.service().err().unwrap();
    let message = format!("{err:#}");
    assert!(
        message.contains("switchyard.toml:6: link `acme`: hris connector `hr` names plugin `moodle`, which implements lms-connector, not hris-connector"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_file_in_the_plugin_directory_does_not_stop_the_others() {
    let h = Harness::start(3).await.unwrap();
    std::fs::write(h.dir.join("plugins.d").join("broken.wasm"), "garbage").unwrap();
    // A sync reads only the plugins its connectors use: the broken file is
    // not even opened.
    let service = h.service().unwrap();
    assert!(service.refused.is_empty());
    assert!(service.sync_link("acme").await.is_ok());
    // Listing the directory (`plugin list`) reports it, beside the others.
    let set = Runtime::new()
        .unwrap()
        .load_dir(&h.dir.join("plugins.d"))
        .unwrap();
    assert_eq!(set.refused.len(), 1);
    assert!(set.refused[0].to_string().contains("broken.wasm"));
    assert!(set.plugins.contains_key("bamboohr"));
}

#[test]
fn a_config_with_an_unknown_key_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    std::fs::write(
        &path,
        "plugin_dir = \"p\"\n\n[connectors.hr]\nplugin = \"bamboohr\"\nallowed = [\"https://x.example\"]\n",
    )
    .unwrap();
    let err = Config::load(&path).unwrap_err();
    assert_eq!(err.line, 5, "{err}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("{}:5:", path.display())),
        "{message}"
    );
    assert!(message.contains("unknown field `allowed`"), "{message}");
}

// ---- containment ----

fn hostile(
    runtime: &Runtime,
    mode: &str,
    target: &str,
    limits: Limits,
    auth: Option<AuthConfig>,
) -> Connector {
    hostile_with(runtime, mode, target, limits, auth, &[])
}

fn hostile_with(
    runtime: &Runtime,
    mode: &str,
    target: &str,
    limits: Limits,
    auth: Option<AuthConfig>,
    extra: &[(&str, &str)],
) -> Connector {
    let plugin = Arc::new(
        runtime
            .load_plugin(&plugins::build("hostile").unwrap())
            .unwrap(),
    );
    let mut settings = BTreeMap::new();
    settings.insert("mode".to_owned(), mode.to_owned());
    settings.insert("target".to_owned(), target.to_owned());
    for (k, v) in extra {
        settings.insert((*k).to_owned(), (*v).to_owned());
    }
    let allow = if target.is_empty() {
        Vec::new()
    } else {
        vec![origin_of(target)]
    };
    let config = ConnectorConfig {
        plugin: "hostile".into(),
        line: 0,
        optional: false,
        settings,
        allow,
        auth: auth.clone(),
        credential_origins: None,
        limits,
    };
    let credential = auth
        .as_ref()
        .map(|a| switchyard::secrets::resolve_credential(a, None).unwrap());
    runtime.connector("evil", &config.grants(), plugin, credential)
}

fn origin_of(url: &str) -> Origin {
    let u = url::Url::parse(url).unwrap();
    Origin::parse(&format!(
        "{}://{}:{}",
        u.scheme(),
        u.host_str().unwrap(),
        u.port_or_known_default().unwrap()
    ))
    .unwrap()
}

fn fault(result: Result<switchyard::model::EmployeePage, ConnectorError>) -> String {
    match result {
        Err(ConnectorError::PluginFault(f)) => f.message,
        other => panic!("expected a plugin fault, got {other:?}"),
    }
}

fn given_name(result: Result<switchyard::model::EmployeePage, ConnectorError>) -> String {
    result.unwrap().employees[0]
        .given_name
        .clone()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_hits_the_deadline_and_the_next_call_works() {
    let runtime = Runtime::new().unwrap();
    let limits = Limits {
        call_timeout_ms: 300,
        ..Limits::default()
    };
    let evil = hostile(&runtime, "loop", "", limits.clone(), None);
    let started = Instant::now();
    let message = fault(evil.fetch_employees(None).await);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(message.contains("deadline"), "{message}");
    assert!(
        message.contains("connector `evil`") && message.contains("hostile"),
        "{message}"
    );
    // Contained: the same plugin serves the next call.
    let fine = hostile(&runtime, "ok", "", limits, None);
    assert_eq!(given_name(fine.fetch_employees(None).await), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_hits_the_memory_budget() {
    let runtime = Runtime::new().unwrap();
    let limits = Limits {
        memory_mib: 32,
        ..Limits::default()
    };
    let evil = hostile(&runtime, "memory", "", limits, None);
    let message = fault(evil.fetch_employees(None).await);
    assert!(message.contains("memory"), "{message}");
}

/// A plugin that asks the host for the same setting in a loop is stopped
/// by the host-call limit, a fault of its own kind, well before its
/// deadline; the next call of a good plugin works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_call_amplification_is_capped() {
    let runtime = Runtime::new().unwrap();
    let evil = hostile(&runtime, "chatty", "", Limits::default(), None);
    match evil.fetch_employees(None).await {
        Err(ConnectorError::PluginFault(f)) => {
            assert_eq!(f.kind, switchyard::model::FaultKind::HostCalls);
            assert!(
                f.message
                    .contains("limit of 100000 host calls (http, log, config) per call reached"),
                "{}",
                f.message
            );
        }
        other => panic!("a host-calls fault, not {other:?}"),
    }
    let fine = hostile(&runtime, "ok", "", Limits::default(), None);
    assert_eq!(given_name(fine.fetch_employees(None).await), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_recursion_hits_the_stack_limit() {
    let runtime = Runtime::new().unwrap();
    let evil = hostile(&runtime, "recursion", "", Limits::default(), None);
    let message = fault(evil.fetch_employees(None).await);
    assert!(message.contains("stack overflow"), "{message}");
    let fine = hostile(&runtime, "ok", "", Limits::default(), None);
    assert_eq!(given_name(fine.fetch_employees(None).await), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_a_classified_trap() {
    let runtime = Runtime::new().unwrap();
    let evil = hostile(&runtime, "trap", "", Limits::default(), None);
    let message = fault(evil.fetch_employees(None).await);
    assert!(message.contains("trap"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ambient_authority() {
    let runtime = Runtime::new().unwrap();
    // SAFETY: set before any thread of this test reads the environment.
    unsafe { std::env::set_var("SWITCHYARD_TEST_AMBIENT", "leak") };
    let evil = hostile(&runtime, "ambient", "", Limits::default(), None);
    let seen = given_name(evil.fetch_employees(None).await);
    assert_eq!(seen, "env=[] args=[] file=false dir=false");
}

/// A server that reflects the request (URL and headers) in its body, like
/// httpbin's /anything: an endpoint that would leak injected credentials.
async fn echo_server() -> String {
    use axum::extract::Request;
    let app = axum::Router::new().fallback(|req: Request| async move {
        let headers: Vec<String> = req
            .headers()
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("")))
            .collect();
        format!("{} {}\n{}", req.method(), req.uri(), headers.join("\n"))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_is_denied_unless_allowed_and_credentials_are_redacted() {
    let runtime = Runtime::new().unwrap();
    let echo = echo_server().await;

    // Not on the allowlist: refused before any connection.
    let plugin = Arc::new(
        runtime
            .load_plugin(&plugins::build("hostile").unwrap())
            .unwrap(),
    );
    let mut settings = BTreeMap::new();
    settings.insert("mode".to_owned(), "fetch".to_owned());
    settings.insert("target".to_owned(), format!("{echo}/steal"));
    let denied = runtime.connector(
        "evil",
        &ConnectorConfig {
            plugin: "hostile".into(),
            line: 0,
            optional: false,
            settings,
            allow: vec![Origin::parse("https://elsewhere.example").unwrap()],
            auth: None,
            credential_origins: None,
            limits: Limits::default(),
        }
        .grants(),
        plugin,
        None,
    );
    let seen = given_name(denied.fetch_employees(None).await);
    assert!(
        seen.starts_with("refused: egress to http://127.0.0.1:"),
        "{seen}"
    );

    // Allowed, with credentials: the echo reflects them, the host redacts.
    let dir = tempfile::tempdir().unwrap();
    let secret_file = |name: &str, value: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, value).unwrap();
        SecretSource::Reference {
            secret: format!("file:{}", path.display()),
        }
    };
    for (auth, secret) in [
        (
            AuthConfig::Bearer {
                token: secret_file("t", "bearer-s3cret-value"),
            },
            "bearer-s3cret-value",
        ),
        (
            AuthConfig::Query {
                param: "wstoken".into(),
                value: secret_file("q", "query-s3cret-value"),
            },
            "query-s3cret-value",
        ),
        (
            AuthConfig::Header {
                name: "x-api-key".into(),
                value: secret_file("h", "header-s3cret-value"),
            },
            "header-s3cret-value",
        ),
        (
            AuthConfig::Basic {
                username: secret_file("u", "basic-s3cret-user"),
                password: SecretSource::Literal("x".into()),
            },
            "basic-s3cret-user",
        ),
    ] {
        let evil = hostile(
            &runtime,
            "fetch",
            &format!("{echo}/anything"),
            Limits::default(),
            Some(auth),
        );
        let seen = given_name(evil.fetch_employees(None).await);
        assert!(
            seen.starts_with("GET /anything"),
            "the request went out: {seen}"
        );
        assert!(
            seen.contains("[redacted]"),
            "the credential was injected: {seen}"
        );
        assert!(
            !seen.contains(secret),
            "the plugin never sees {secret}: {seen}"
        );
        if secret.starts_with("basic") {
            // The encoded header ("basic-s3cret-user:x") is redacted too.
            assert!(!seen.contains("YmFzaWMtczNjcmV0LXVzZXI6eA=="), "{seen}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_flood_is_cut_at_the_limit() {
    let runtime = Runtime::new().unwrap();
    let echo = echo_server().await;
    let limits = Limits {
        max_requests: 20,
        ..Limits::default()
    };
    let evil = hostile(&runtime, "flood", &format!("{echo}/x"), limits, None);
    // The plugin gives up on the refusal with an error of its own; the call
    // fails as a plugin fault whatever the plugin returns.
    let message = fault(evil.fetch_employees(None).await);
    assert!(message.contains("limit of 20 HTTP requests"), "{message}");
    assert!(
        message.contains("connector `evil` (plugin hostile "),
        "{message}"
    );
}

// ---- egress: addresses and redirects ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_name_resolving_to_loopback_is_refused_unless_the_address_is_named() {
    let runtime = Runtime::new().unwrap();
    let echo = echo_server().await;
    let port = url::Url::parse(&echo).unwrap().port().unwrap();

    // `localhost` is on the allowlist, but it resolves to a loopback address.
    let by_name = hostile(
        &runtime,
        "fetch",
        &format!("http://localhost:{port}/inside"),
        Limits::default(),
        None,
    );
    let seen = given_name(by_name.fetch_employees(None).await);
    assert!(seen.starts_with("refused: "), "{seen}");
    assert!(
        seen.contains("`localhost` resolves to") && seen.contains("a loopback address"),
        "{seen}"
    );
    assert!(
        seen.contains("name the address itself in `allow`"),
        "{seen}"
    );

    // The same server, allowed by naming the address itself.
    let by_address = hostile(
        &runtime,
        "fetch",
        &format!("http://127.0.0.1:{port}/inside"),
        Limits::default(),
        None,
    );
    let seen = given_name(by_address.fetch_employees(None).await);
    assert!(seen.starts_with("GET /inside"), "{seen}");

    // The metadata address is reachable only where it is named: a wildcard
    // or another address does not grant it.
    let plugin = Arc::new(
        runtime
            .load_plugin(&plugins::build("hostile").unwrap())
            .unwrap(),
    );
    let mut settings = BTreeMap::new();
    settings.insert("mode".to_owned(), "fetch".to_owned());
    settings.insert(
        "target".to_owned(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
    );
    let metadata = runtime.connector(
        "evil",
        &ConnectorConfig {
            plugin: "hostile".into(),
            line: 0,
            optional: false,
            settings,
            allow: vec![
                Origin::parse("http://*.254.169.254").unwrap(),
                Origin::parse("http://127.0.0.1").unwrap(),
            ],
            auth: None,
            credential_origins: None,
            limits: Limits::default(),
        }
        .grants(),
        plugin,
        None,
    );
    let seen = given_name(metadata.fetch_employees(None).await);
    assert!(
        seen.starts_with("refused: egress to http://169.254.169.254:80 is not allowed"),
        "{seen}"
    );
}

/// Counts requests; any request reaching it would be a followed redirect.
async fn counting_server() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            "reached"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed_by_the_host() {
    let runtime = Runtime::new().unwrap();
    let (elsewhere, hits) = counting_server().await;
    let location = format!("{elsewhere}/stolen");
    let target = location.clone();
    let app = axum::Router::new().fallback(move || {
        let target = target.clone();
        async move { axum::response::Redirect::temporary(&target) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirector = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let evil = hostile(
        &runtime,
        "status",
        &format!("{redirector}/go"),
        Limits::default(),
        None,
    );
    let seen = given_name(evil.fetch_employees(None).await);
    // The plugin sees the 3xx; following it would be a new request, checked
    // against the allowlist (which does not name `elsewhere`).
    assert_eq!(seen, format!("307 {location}"));
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the redirect was not followed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_over_the_limit_is_refused_before_sending() {
    let runtime = Runtime::new().unwrap();
    let (server, hits) = counting_server().await;
    let limits = Limits {
        max_request_kib: 64,
        ..Limits::default()
    };
    let small = hostile_with(
        &runtime,
        "upload",
        &format!("{server}/in"),
        limits.clone(),
        None,
        &[("bytes", "1000")],
    );
    assert_eq!(given_name(small.fetch_employees(None).await), "reached");
    let big = hostile_with(
        &runtime,
        "upload",
        &format!("{server}/in"),
        limits,
        None,
        &[("bytes", "200000")],
    );
    let seen = given_name(big.fetch_employees(None).await);
    assert!(
        seen.contains("exceeds the limit `max_request_kib` of 64 KiB"),
        "{seen}"
    );
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the big request was not sent"
    );
}

// ---- output, fuel, stdio ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_records_or_bytes_returned_is_an_output_fault() {
    let runtime = Runtime::new().unwrap();
    let limits = Limits {
        max_records: 10,
        max_output_kib: 1024,
        ..Limits::default()
    };

    let fine = hostile_with(
        &runtime,
        "records",
        "",
        limits.clone(),
        None,
        &[("count", "10")],
    );
    assert_eq!(
        fine.fetch_employees(None).await.unwrap().employees.len(),
        10
    );

    let many = hostile_with(
        &runtime,
        "records",
        "",
        limits.clone(),
        None,
        &[("count", "11")],
    );
    let message = fault(many.fetch_employees(None).await);
    assert!(
        message.contains("output limit exceeded: 11 records returned, limit `max_records` is 10"),
        "{message}"
    );
    assert!(
        message.contains("connector `evil` (plugin hostile "),
        "{message}"
    );

    let big = hostile_with(
        &runtime,
        "big",
        "",
        limits.clone(),
        None,
        &[("bytes", &(2usize << 20).to_string())],
    );
    let message = fault(big.fetch_employees(None).await);
    assert!(
        message.contains("limit `max_output_kib` is 1024"),
        "{message}"
    );

    // Ten million records with the default limits: stopped by a limit, not the host.
    let flood = hostile_with(
        &runtime,
        "records",
        "",
        Limits::default(),
        None,
        &[("count", "10000000")],
    );
    let message = fault(flood.fetch_employees(None).await);
    assert!(
        message.contains("memory limit") || message.contains("output limit"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fuel_budget_stops_an_endless_loop_before_the_deadline() {
    let runtime = Runtime::new().unwrap();
    let limits = Limits {
        fuel: Some(20_000_000),
        call_timeout_ms: 120_000,
        ..Limits::default()
    };
    let evil = hostile(&runtime, "loop", "", limits.clone(), None);
    let started = Instant::now();
    let message = fault(evil.fetch_employees(None).await);
    assert!(
        message.contains("fuel budget exhausted: limit `fuel` is 20000000"),
        "{message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    // The same budget is enough for a well-behaved call.
    let fine = hostile(&runtime, "ok", "", limits, None);
    assert_eq!(given_name(fine.fetch_employees(None).await), "ok");
}

#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn plugin_stdout_and_stderr_go_to_the_log_bounded() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let runtime = Runtime::new().unwrap();
    let chatty = hostile_with(
        &runtime,
        "print",
        "",
        Limits::default(),
        None,
        &[("lines", "100000")],
    );
    // A flood of output neither fails the call nor fills the host's memory.
    assert_eq!(given_name(chatty.fetch_employees(None).await), "printed");
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    let stdout_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("hostile stdout line"))
        .collect();
    assert!(
        stdout_lines[0].contains("connector=\"evil\"")
            || stdout_lines[0].contains("connector=evil"),
        "{}",
        stdout_lines[0]
    );
    assert!(
        stdout_lines[0].contains("hostile stdout line 0"),
        "{}",
        stdout_lines[0]
    );
    assert_eq!(
        stdout_lines.len(),
        switchyard::runtime::capability::stdio::MAX_LINES_PER_CALL
    );
    assert!(
        text.lines()
            .any(|l| l.contains("hostile stderr line 0") && l.contains("WARN")),
        "{text}"
    );
    assert!(text.contains("was dropped"), "{text}");
}

// ---- OAuth2 client credentials ----

/// A token endpoint (`/token`) and an API (everything else) that accepts
/// only the token it issued last, like a provider that rotates tokens.
struct OAuthServer {
    url: String,
    issued: Arc<std::sync::atomic::AtomicUsize>,
    /// Token requests, refused ones included.
    asked: Arc<std::sync::atomic::AtomicUsize>,
    valid: Arc<std::sync::Mutex<String>>,
    expires_in: Arc<std::sync::atomic::AtomicU64>,
}

// Characters that RFC 6749 section 2.3.1's form-encoding changes: a
// server that decodes as the RFC says reads another client without it.
const CLIENT_ID: &str = "switchyard:client/1";
const CLIENT_SECRET: &str = "oauth+client=s3cret%2F:x";

async fn oauth_server() -> OAuthServer {
    use axum::extract::Request;
    use axum::http::StatusCode;
    use base64::Engine as _;
    use std::sync::atomic::Ordering;
    let issued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a = asked.clone();
    let valid = Arc::new(std::sync::Mutex::new(String::new()));
    let expires_in = Arc::new(std::sync::atomic::AtomicU64::new(3600));
    let (i, v, e) = (issued.clone(), valid.clone(), expires_in.clone());
    let app = axum::Router::new().fallback(move |req: Request| {
        let (issued, valid, expires_in) = (i.clone(), v.clone(), e.clone());
        let asked = a.clone();
        async move {
            let auth = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let headers: Vec<String> = req
                .headers()
                .iter()
                .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("")))
                .collect();
            let line = format!("{} {}", req.method(), req.uri());
            if req.uri().path() == "/token" {
                asked.fetch_add(1, Ordering::SeqCst);
                let body = axum::body::to_bytes(req.into_body(), 1 << 16)
                    .await
                    .unwrap_or_default();
                let form: Vec<(String, String)> =
                    url::form_urlencoded::parse(&body).into_owned().collect();
                let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                // client_secret_basic as RFC 6749 section 2.3.1 reads it:
                // base64, split at the first `:`, each part form-decoded.
                let basic = auth
                    .strip_prefix("Basic ")
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                    .and_then(|b| String::from_utf8(b).ok())
                    .and_then(|pair| {
                        let (id, secret) = pair.split_once(':')?;
                        let decode = |p: &str| {
                            url::form_urlencoded::parse(format!("x={p}").as_bytes())
                                .next()
                                .map(|(_, v)| v.into_owned())
                        };
                        Some((decode(id)?, decode(secret)?))
                    });
                let basic_auth = basic == Some((CLIENT_ID.to_owned(), CLIENT_SECRET.to_owned()));
                let body_auth = field("client_id").as_deref() == Some(CLIENT_ID)
                    && field("client_secret").as_deref() == Some(CLIENT_SECRET);
                if field("grant_type").as_deref() != Some("client_credentials")
                    || !(basic_auth || body_auth)
                {
                    let refusal = serde_json::json!({
                        "error": "invalid_client",
                        "error_description": "client authentication failed",
                    });
                    return (StatusCode::UNAUTHORIZED, refusal.to_string());
                }
                let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
                let token = format!("access-tok3n-{n}");
                *valid.lock().unwrap() = token.clone();
                let body = serde_json::json!({
                    "access_token": token,
                    "token_type": "Bearer",
                    "expires_in": expires_in.load(Ordering::SeqCst),
                    "scope": field("scope"),
                });
                return (StatusCode::OK, body.to_string());
            }
            let expected = format!("Bearer {}", valid.lock().unwrap());
            if auth != expected {
                return (
                    StatusCode::UNAUTHORIZED,
                    format!("bad token; you sent {auth}"),
                );
            }
            (StatusCode::OK, format!("{line}\n{}", headers.join("\n")))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    OAuthServer {
        url,
        issued,
        asked,
        valid,
        expires_in,
    }
}

fn oauth2(
    token_url: String,
    secret: &std::path::Path,
    client_auth: ClientAuthConfig,
) -> AuthConfig {
    AuthConfig::OAuth2 {
        token_url,
        client_id: SecretSource::Literal(CLIENT_ID.into()),
        client_secret: SecretSource::Reference {
            secret: format!("file:{}", secret.display()),
        },
        scope: Some("hris.read".into()),
        client_auth,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_tokens_are_fetched_cached_refreshed_on_401_and_never_seen() {
    use std::sync::atomic::Ordering;
    let runtime = Runtime::new().unwrap();
    let server = oauth_server().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, CLIENT_SECRET).unwrap();
    let auth = oauth2(
        format!("{}/token", server.url),
        &secret,
        ClientAuthConfig::Basic,
    );
    let evil = hostile(
        &runtime,
        "fetch",
        &format!("{}/api", server.url),
        Limits::default(),
        Some(auth),
    );

    let check = |seen: &str| {
        assert!(
            seen.starts_with("GET /api"),
            "the request was authorised: {seen}"
        );
        // The whole header value is one of the redacted spellings.
        assert!(seen.contains("authorization: [redacted]"), "{seen}");
        assert!(
            !seen.contains("access-tok3n") && !seen.contains(CLIENT_SECRET),
            "{seen}"
        );
    };
    check(&given_name(evil.fetch_employees(None).await));
    assert_eq!(server.issued.load(Ordering::SeqCst), 1);
    // A second call of the connector reuses the cached token.
    check(&given_name(evil.fetch_employees(None).await));
    assert_eq!(
        server.issued.load(Ordering::SeqCst),
        1,
        "cached across calls"
    );

    // The provider revokes the token: one 401, one refresh, one retry.
    *server.valid.lock().unwrap() = "revoked".into();
    check(&given_name(evil.fetch_employees(None).await));
    assert_eq!(server.issued.load(Ordering::SeqCst), 2, "refreshed once");

    // A token that expires at once is not reused.
    server.expires_in.store(1, Ordering::SeqCst);
    *server.valid.lock().unwrap() = "revoked".into();
    check(&given_name(evil.fetch_employees(None).await)); // 401, refresh (3)
    check(&given_name(evil.fetch_employees(None).await)); // expired, fetch (4)
    assert_eq!(server.issued.load(Ordering::SeqCst), 4);

    // Client authentication in the body works too.
    server.expires_in.store(3600, Ordering::SeqCst);
    let body_auth = oauth2(
        format!("{}/token", server.url),
        &secret,
        ClientAuthConfig::Body,
    );
    let other = hostile(
        &runtime,
        "fetch",
        &format!("{}/api", server.url),
        Limits::default(),
        Some(body_auth),
    );
    check(&given_name(other.fetch_employees(None).await));

    // Wrong client secret: the token request is refused and the plugin is told so.
    std::fs::write(&secret, "wrong-secret").unwrap();
    let wrong = hostile(
        &runtime,
        "fetch",
        &format!("{}/api", server.url),
        Limits::default(),
        Some(oauth2(
            format!("{}/token", server.url),
            &secret,
            ClientAuthConfig::Basic,
        )),
    );
    // The link stops (unauthorized, whatever the plugin made of it), the
    // message carries the server's OAuth error, and the refusal is
    // remembered: the next call does not ask the token endpoint again.
    let asked = server.asked.load(Ordering::SeqCst);
    for _ in 0..2 {
        match wrong.fetch_employees(None).await {
            Err(ConnectorError::Unauthorized(message)) => {
                assert!(
                    message.contains("401")
                        && message.contains("invalid_client (client authentication failed)"),
                    "{message}"
                );
                assert!(!message.contains("wrong-secret"), "{message}");
            }
            other => panic!("unauthorized, not {other:?}"),
        }
    }
    assert_eq!(server.asked.load(Ordering::SeqCst), asked + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oauth2_token_url_on_a_loopback_name_is_refused() {
    let runtime = Runtime::new().unwrap();
    let server = oauth_server().await;
    let port = url::Url::parse(&server.url).unwrap().port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, CLIENT_SECRET).unwrap();
    let auth = oauth2(
        format!("http://localhost:{port}/token"),
        &secret,
        ClientAuthConfig::Basic,
    );
    let evil = hostile(
        &runtime,
        "fetch",
        &format!("{}/api", server.url),
        Limits::default(),
        Some(auth),
    );
    let seen = given_name(evil.fetch_employees(None).await);
    assert!(
        seen.contains("OAuth2 token request") && seen.contains("a loopback address"),
        "{seen}"
    );
    // `allow` does not apply to a token URL: the hint says what does.
    assert!(!seen.contains("in `allow`"), "{seen}");
    assert!(
        seen.contains(&format!("in `token_url` (e.g. `http://127.0.0.1:{port}/"))
            || seen.contains(&format!("in `token_url` (e.g. `http://[::1]:{port}/")),
        "{seen}"
    );
    assert_eq!(server.issued.load(std::sync::atomic::Ordering::SeqCst), 0);
}

// ---- quarantine ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_that_keeps_faulting_is_quarantined_until_resumed_or_replaced() {
    use switchyard::service::SyncError;
    use switchyard_testkit::harness::{LINK, Options};
    let h = Harness::start_with(Options {
        employees: 3,
        limits: "quarantine_after = 2".into(),
        ..Options::default()
    })
    .await
    .unwrap();
    let plugin_dir = h.dir.join("plugins.d");
    plugins::install("hostile", &plugin_dir, "hostile").unwrap();
    let text = std::fs::read_to_string(&h.config_path)
        .unwrap()
        .replacen("plugin = \"bamboohr\"", "plugin = \"hostile\"", 1)
        .replacen(
            "config = { base_url",
            "config = { mode = \"trap\", base_url",
            1,
        );
    std::fs::write(&h.config_path, text).unwrap();

    let fault_run = async || {
        let service = h.service().unwrap();
        let err = service.sync_link(LINK).await.unwrap_err();
        assert!(
            !matches!(err, SyncError::Quarantined(_)),
            "not yet quarantined: {err:#}"
        );
        assert!(format!("{err:#}").contains("plugin fault"), "{err:#}");
    };
    fault_run().await;
    fault_run().await;

    // Two faults in a row: the next run (a new process, as far as state goes)
    // refuses the link without calling the plugin.
    let service = h.service().unwrap();
    assert_eq!(service.connectors["hr"].consecutive_faults(), 2);
    let err = service.sync_link(LINK).await.unwrap_err();
    let SyncError::Quarantined(quarantined) = &err else {
        panic!("a quarantine refusal, not {err:#}");
    };
    assert_eq!(quarantined.connector, "hr");
    let message = err.to_string();
    assert!(
        message.contains("link `acme` paused: connector `hr` (plugin hostile "),
        "{message}"
    );
    assert!(
        message.contains("after 2 plugin faults in a row") && message.contains("trap"),
        "{message}"
    );
    assert!(message.contains("switchyard plugin resume hr"), "{message}");
    assert_eq!(
        service.connectors["hr"].consecutive_faults(),
        2,
        "the plugin was not called"
    );
    assert_eq!(service.state.quarantined().unwrap().len(), 1);

    // An operator resumes it: the link runs (and faults) again.
    assert!(service.resume(&"hr".into()).unwrap().is_some());
    let err = service.sync_link(LINK).await.unwrap_err();
    assert!(!matches!(err, SyncError::Quarantined(_)), "{err:#}");
    let err = service.sync_link(LINK).await.unwrap_err();
    assert!(
        !matches!(err, SyncError::Quarantined(_)),
        "the run that quarantines reports its fault: {err:#}"
    );
    assert!(matches!(
        service.sync_link(LINK).await.unwrap_err(),
        SyncError::Quarantined(_)
    ));
    drop(service);

    // A different plugin file under the same name lifts the quarantine.
    plugins::install("bamboohr", &plugin_dir, "hostile").unwrap();
    let service = h.service().unwrap();
    let report = service.sync_link(LINK).await.unwrap();
    assert_eq!(report.employees_fetched, 3);
    assert!(service.state.quarantined().unwrap().is_empty());
}

// ---- the encrypted secret store ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_secret_is_resolved_and_a_wrong_key_is_refused() {
    use base64::Engine as _;
    use switchyard::secrets::{SecretStore, StoreKey};
    use switchyard_testkit::harness::LINK;
    let h = Harness::start(3).await.unwrap();
    let key_text = base64::engine::general_purpose::STANDARD.encode([42u8; 32]);
    let store = SecretStore::in_dir(&h.dir.join("state"));
    store
        .set(
            "moodle-token",
            &h.lms.token(),
            &StoreKey::from_base64(&key_text).unwrap(),
        )
        .unwrap();
    let token_file = h.dir.join("moodle.token");
    let text = std::fs::read_to_string(&h.config_path).unwrap().replace(
        &format!("file:{}", token_file.display()),
        "store:moodle-token",
    );
    std::fs::write(&h.config_path, text).unwrap();
    std::fs::remove_file(&token_file).unwrap();

    // SAFETY: only this test reads this variable.
    unsafe {
        std::env::set_var(
            "SWITCHYARD_SECRET_KEY",
            base64::engine::general_purpose::STANDARD.encode([1u8; 32]),
        )
    };
    let err = h.service().err().expect("a wrong key is refused");
    assert!(
        format!("{err:#}")
            .contains("secret `store:moodle-token`: the secret store key does not match"),
        "{err:#}"
    );

    unsafe { std::env::set_var("SWITCHYARD_SECRET_KEY", &key_text) };
    let service = h.service().unwrap();
    let report = service.sync_link(LINK).await.unwrap();
    assert!(
        report.users_created > 0,
        "the LMS accepted the token from the store"
    );
    service.state.flush().unwrap();
    drop(service);

    // Nothing the host wrote (sled, the store) holds the token in clear.
    let token = h.lms.token();
    let mut files = vec![h.dir.clone()];
    let mut checked = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if path.extension().is_none_or(|x| x != "wasm") && path != h.dir.join("bamboohr.key")
        {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                "{} holds the token",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 3, "sled files and the store were checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_hostile_suite_a_well_behaved_plugin_in_the_same_runtime_still_syncs() {
    use switchyard_testkit::harness::LINK;
    let runtime = Runtime::new().unwrap();
    let echo = echo_server().await;
    let tight = Limits {
        call_timeout_ms: 300,
        memory_mib: 32,
        max_requests: 5,
        max_records: 10,
        ..Limits::default()
    };
    for (mode, extra) in [
        ("loop", vec![]),
        ("memory", vec![]),
        ("trap", vec![]),
        ("flood", vec![]),
        ("records", vec![("count", "100000")]),
    ] {
        let evil = hostile_with(
            &runtime,
            mode,
            &format!("{echo}/x"),
            tight.clone(),
            None,
            &extra,
        );
        let message = fault(evil.fetch_employees(None).await);
        assert!(
            message.contains("connector `evil` (plugin hostile "),
            "{mode}: {message}"
        );
    }
    // The real BambooHR plugin, on the same engine and client, against the
    // HRIS simulator.
    let h = Harness::start(30).await.unwrap();
    let service = h.service().unwrap();
    let hr_config = &service.config.connectors["hr"];
    let plugin = Arc::new(
        runtime
            .load_plugin(&plugins::build("bamboohr").unwrap())
            .unwrap(),
    );
    let credential =
        switchyard::secrets::resolve_credential(hr_config.auth.as_ref().unwrap(), None).unwrap();
    let hr = runtime.connector("hr", &hr_config.grants(), plugin, Some(credential));
    let mut fetched = 0;
    let mut cursor = None;
    loop {
        let page = hr.fetch_employees(cursor.as_deref()).await.unwrap();
        fetched += page.employees.len();
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(fetched, 30);
    assert_eq!(service.sync_link(LINK).await.unwrap().employees_fetched, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_budget_is_shared_by_every_connector_reaching_it() {
    let runtime = Runtime::new().unwrap();
    let echo = echo_server().await;
    let target = format!("{echo}/x");
    runtime.limit_origin(&origin_of(&target), 10, 1);
    let a = hostile(&runtime, "fetch", &target, Limits::default(), None);
    let b = hostile(&runtime, "fetch", &target, Limits::default(), None);
    let started = Instant::now();
    let calls = (0..3)
        .flat_map(|_| [a.clone(), b.clone()])
        .map(|c| async move { c.fetch_employees(None).await });
    for result in futures::future::join_all(calls).await {
        assert!(given_name(result).starts_with("GET /x"));
    }
    // Six requests at 10 per second with no burst: at least 0.5 s, whichever
    // connector sent them.
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");

    // Another origin is not slowed down.
    let other = echo_server().await;
    let c = hostile(
        &runtime,
        "fetch",
        &format!("{other}/y"),
        Limits::default(),
        None,
    );
    let started = Instant::now();
    for _ in 0..6 {
        given_name(c.fetch_employees(None).await);
    }
    assert!(
        started.elapsed() < Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
}

/// A server that holds each request for `hold`, counting the requests in
/// progress and the most at once.
async fn holding_server(hold: Duration) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (in_flight, most) = (now.clone(), peak.clone());
    let app = axum::Router::new().fallback(move || {
        let (in_flight, most) = (in_flight.clone(), most.clone());
        async move {
            let n = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(hold).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            "held"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, peak)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_calls_at_once_than_pool_slots_wait_for_a_slot_and_all_succeed() {
    use std::sync::atomic::Ordering;
    let runtime = Runtime::new().unwrap();
    let (server, peak) = holding_server(Duration::from_millis(300)).await;
    let target = format!("{server}/hold");
    let connector = hostile(&runtime, "fetch", &target, Limits::default(), None);
    let slots = switchyard::runtime::CALL_SLOTS as usize;
    let calls = (0..slots + 40).map(|_| {
        let c = connector.clone();
        async move { c.fetch_employees(None).await }
    });
    for result in futures::future::join_all(calls).await {
        assert!(given_name(result).starts_with("held"));
    }
    // Every call held a slot while its request waited: never more at once
    // than the pool has, and the pool was full (the extra calls waited).
    assert_eq!(peak.load(Ordering::SeqCst), slots);
}

// ---- run bounds ----

/// A link whose HRIS plugin is the hostile one in `mode`, with `limits`.
async fn hostile_link(mode: &str, limits: &str) -> Harness {
    use switchyard_testkit::harness::Options;
    let h = Harness::start_with(Options {
        employees: 3,
        limits: limits.into(),
        ..Options::default()
    })
    .await
    .unwrap();
    plugins::install("hostile", &h.dir.join("plugins.d"), "hostile").unwrap();
    let text = std::fs::read_to_string(&h.config_path)
        .unwrap()
        .replacen("plugin = \"bamboohr\"", "plugin = \"hostile\"", 1)
        .replacen(
            "config = { base_url",
            &format!("config = {{ mode = \"{mode}\", base_url"),
            1,
        );
    std::fs::write(&h.config_path, text).unwrap();
    h
}

/// A listing that repeats its cursor, or never ends, stops the run with a
/// `run-bound` fault naming the bound: no endless loop, no host growing
/// without end, nothing planned from the partial listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_that_never_ends_stops_the_run_naming_the_bound() {
    use switchyard::engine::RunError;
    use switchyard::model::{ConnectorError, FaultKind};
    use switchyard::service::SyncError;
    use switchyard_testkit::harness::LINK;
    let fault_of = |err: SyncError| match err {
        SyncError::Run(RunError::Stopped(stopped)) => match stopped.error {
            ConnectorError::PluginFault(fault) => fault,
            other => panic!("a plugin fault, not {other:?}"),
        },
        other => panic!("a stopped run, not {other:#}"),
    };

    let h = hostile_link("same-cursor", "").await;
    let service = h.service().unwrap();
    let fault = fault_of(service.sync_link(LINK).await.unwrap_err());
    assert_eq!(fault.kind, FaultKind::RunBound);
    assert!(
        fault.message.contains("cursor `again` a second time"),
        "{}",
        fault.message
    );
    assert!(
        h.lms.users().is_empty(),
        "nothing planned from a broken listing"
    );
    drop(service);

    let h = hostile_link("endless", "max_pages_per_run = 50").await;
    let service = h.service().unwrap();
    let fault = fault_of(service.sync_link(LINK).await.unwrap_err());
    assert_eq!(fault.kind, FaultKind::RunBound);
    assert!(
        fault
            .message
            .contains("51 pages, more than the limit `max_pages_per_run` of 50"),
        "{}",
        fault.message
    );
    assert!(h.lms.users().is_empty());
    drop(service);

    let h = hostile_link("endless", "max_records_per_run = 20").await;
    let service = h.service().unwrap();
    let fault = fault_of(service.sync_link(LINK).await.unwrap_err());
    assert!(
        fault.message.contains("`max_records_per_run` of 20"),
        "{}",
        fault.message
    );
    // The same host still syncs a good link afterwards.
    let good = Harness::start(3).await.unwrap();
    let report = good.service().unwrap().sync_link(LINK).await.unwrap();
    assert!(report.users_created > 0, "{report:?}");
}

// ---- plugin files ----

/// A command reads and compiles only the plugins its connectors use: a
/// 3 GiB file beside them costs nothing. A used plugin file over
/// `max_plugin_mib` is refused by its size, before it is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_plugins_in_use_are_read_and_a_file_too_large_is_refused_unread() {
    use switchyard_testkit::harness::LINK;
    let h = Harness::start(3).await.unwrap();
    let plugin_dir = h.dir.join("plugins.d");
    let huge = std::fs::File::create(plugin_dir.join("huge.wasm")).unwrap();
    huge.set_len(3 << 30).unwrap();
    drop(huge);
    let service = h.service().unwrap();
    assert!(
        service.refused.is_empty(),
        "{:?}",
        service
            .refused
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
    );
    service.sync_link(LINK).await.unwrap();
    drop(service);

    let real = plugin_dir.join("bamboohr.wasm");
    std::fs::remove_file(&real).unwrap();
    let big = std::fs::File::create(&real).unwrap();
    big.set_len(5 << 20).unwrap();
    drop(big);
    let text = std::fs::read_to_string(&h.config_path).unwrap();
    std::fs::write(&h.config_path, format!("max_plugin_mib = 1\n{text}")).unwrap();
    let message = match h.service() {
        Ok(_) => panic!("a plugin over max_plugin_mib must be refused"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        message.contains("5242880 bytes, larger than the limit `max_plugin_mib` of 1 MiB"),
        "{message}"
    );
}

/// The bundled plugins' own unit tests run natively against the SDK's mock
/// host (canned responses, config, captured requests): no wasm build, no host.
#[test]
fn the_bundled_plugins_unit_tests_run_natively_against_the_mock_host() {
    for (plugin, at_least) in [("bamboohr", 3), ("scim", 3)] {
        let out = plugins::test_natively(plugin).unwrap();
        let passed: usize = out
            .lines()
            .filter_map(|l| l.strip_prefix("test result: ok. "))
            .filter_map(|rest| rest.split(' ').next()?.parse::<usize>().ok())
            .sum();
        assert!(passed >= at_least, "{plugin}'s tests ran: {out}");
    }
}

/// The same in Python: `switchyard plugin new --lang python` makes a
/// project whose unit tests pass natively on its mock host, which
/// componentize-py builds to a component the host loads; the LMS one (the
/// SCIM example) passes `switchyard plugin test` against a real SCIM server.
#[test]
fn plugin_new_in_python_makes_a_project_that_tests_builds_and_loads_out_of_tree() {
    use switchyard_testkit::python;
    let parent = tempfile::tempdir().unwrap();
    let componentize = python::tool(python::COMPONENTIZE_PY, "componentize-py").unwrap();
    let interpreter = python::venv().join("bin").join("python");
    for (name, kind, world) in [
        ("py-lms", "lms", "lms-connector"),
        ("py-hr", "hris", "hris-connector"),
    ] {
        let made = std::process::Command::new(switchyard_bin())
            .args([
                "plugin", "new", name, "--kind", kind, "--lang", "python", "--dir",
            ])
            .arg(parent.path())
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
        let dir = parent.path().join(name);
        let run = |program: &std::path::Path, args: &[&str]| {
            let out = std::process::Command::new(program)
                .current_dir(&dir)
                .args(args)
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "{program:?} {args:?}: {text}");
            text
        };
        run(&componentize, &["-d", "wit", "-w", world, "bindings", "."]);
        let tested = run(&interpreter, &["-m", "unittest", &format!("test_{kind}")]);
        assert!(
            tested.contains("Ran 2 tests") && tested.contains("OK"),
            "{tested}"
        );
        let wasm = dir.join(format!("{}.wasm", name.replace('-', "_")));
        run(
            &componentize,
            &[
                "-d",
                "wit",
                "-w",
                world,
                "componentize",
                "app",
                "-o",
                wasm.to_str().unwrap(),
            ],
        );
        let check = run(
            &switchyard_bin(),
            &["plugin", "check", wasm.to_str().unwrap()],
        );
        assert!(check.contains(world), "{check}");
        if kind == "lms" {
            let scim = switchyard_testkit::scim::ScimServer::start("py-token").unwrap();
            let table = run(
                &switchyard_bin(),
                &[
                    "plugin",
                    "test",
                    wasm.to_str().unwrap(),
                    "--against",
                    scim.url(),
                    "--course",
                    "SAFETY-2026",
                    "--auth",
                    r#"{ kind = "bearer", token = "py-token" }"#,
                ],
            );
            assert!(table.contains(" 0 failed"), "{table}");
        }
    }
}

/// From nothing to a loadable plugin, out of the repository's tree:
/// `switchyard plugin new` makes a crate whose own unit tests pass against
/// the mock host (`cargo test`), which builds to a component with one
/// command, and which `switchyard plugin check` accepts. Both kinds; the
/// LMS one (a SCIM 2.0 starting point) also passes `switchyard plugin test`
/// against a real SCIM server.
#[test]
fn plugin_new_makes_a_crate_that_tests_builds_and_loads_out_of_tree() {
    let parent = tempfile::tempdir().unwrap();
    let root = plugins::workspace_root();
    // Cached between local runs; the crate itself is outside the repository.
    let target = root.join("target").join("plugin-new");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    plugins::ensure_wasm_target(&root).unwrap();
    for (name, kind, world) in [
        ("acme-lms", "lms", "lms-connector"),
        ("acme-hr", "hris", "hris-connector"),
    ] {
        let out = std::process::Command::new(switchyard_bin())
            .args(["plugin", "new", name, "--kind", kind, "--dir"])
            .arg(parent.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let dir = parent.path().join(name);
        let run = |args: &[&str]| {
            let out = std::process::Command::new(&cargo)
                .current_dir(&dir)
                .args(args)
                .env("CARGO_TARGET_DIR", &target)
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_ENCODED_RUSTFLAGS")
                .env_remove("CARGO_BUILD_TARGET")
                .env_remove("RUSTUP_TOOLCHAIN")
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.status.success(),
                "cargo {args:?} in {}: {text}",
                dir.display()
            );
            text
        };
        let tested = run(&["test"]);
        assert!(tested.contains("test result: ok."), "{tested}");
        assert!(!tested.contains("test result: ok. 0 passed"), "{tested}");
        run(&["build", "--release", "--target", "wasm32-wasip2"]);
        let wasm = target
            .join("wasm32-wasip2")
            .join("release")
            .join(format!("{}.wasm", name.replace('-', "_")));
        let check = std::process::Command::new(switchyard_bin())
            .args(["plugin", "check"])
            .arg(&wasm)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&check.stdout);
        assert!(
            check.status.success(),
            "{said}{}",
            String::from_utf8_lossy(&check.stderr)
        );
        assert!(said.contains(world), "{said}");
        if kind == "lms" {
            let scim = switchyard_testkit::scim::ScimServer::start("new-token").unwrap();
            let tested = std::process::Command::new(switchyard_bin())
                .args(["plugin", "test"])
                .arg(&wasm)
                .args(["--against", scim.url(), "--course", "SAFETY-2026"])
                .args(["--auth", r#"{ kind = "bearer", token = "new-token" }"#])
                .output()
                .unwrap();
            let table = String::from_utf8_lossy(&tested.stdout);
            assert!(tested.status.success(), "{table}");
            assert!(table.contains(" 0 failed"), "{table}");
        }
    }
    // A second `new` with the same name is refused, not overwritten.
    let again = std::process::Command::new(switchyard_bin())
        .args(["plugin", "new", "acme-lms", "--kind", "lms", "--dir"])
        .arg(parent.path())
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
}
