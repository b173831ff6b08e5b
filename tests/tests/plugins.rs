//! Plugin loading and containment: files the host must refuse, and plugins
//! that misbehave. Real components built from `plugins/` and `tests/plugins/`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard::config::{AuthConfig, ConnectorConfig, Limits, Origin, SecretSource};
use switchyard::model::ConnectorError;
use switchyard::runtime::{Connector, PluginError, Runtime, World};
use switchyard::secrets::Credential;
use switchyard::Config;
use switchyard_testkit::harness::Harness;
use switchyard_testkit::plugins;

#[test]
fn the_real_plugins_implement_their_worlds() {
    let runtime = Runtime::new().unwrap();
    let hris = runtime.load_plugin(&plugins::build("bamboohr").unwrap()).unwrap();
    assert_eq!(hris.world, World::Hris);
    assert_eq!(hris.contract_version, "0.1.0");
    let lms = runtime.load_plugin(&plugins::build("moodle").unwrap()).unwrap();
    assert_eq!(lms.world, World::Lms);
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
    assert!(message.contains("example:greeter/greet@1.0.0"), "names what it exports: {message}");
}

#[test]
fn an_unsupported_contract_version_is_refused() {
    let runtime = Runtime::new().unwrap();
    let err = runtime
        .load_plugin(&plugins::build("future-contract").unwrap())
        .unwrap_err();
    assert!(matches!(err, PluginError::UnsupportedVersion { .. }), "{err}");
    assert!(err.to_string().contains("9.0.0"), "{err}");
    assert!(err.to_string().contains("0.1.0"), "says what is supported: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_of_the_wrong_world_is_refused_for_its_role() {
    let h = Harness::start(3).await.unwrap();
    let text = std::fs::read_to_string(&h.config_path)
        .unwrap()
        .replacen("plugin = \"bamboohr\"", "plugin = \"moodle\"", 1);
    std::fs::write(&h.config_path, text).unwrap();
    let err = h.service().err().unwrap();
    let message = format!("{err:#}");
    assert!(
        message.contains("hris connector `hr` runs plugin `moodle`, which implements lms-connector, not hris-connector"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_file_in_the_plugin_directory_does_not_stop_the_others() {
    let h = Harness::start(3).await.unwrap();
    std::fs::write(h.dir.join("plugins.d").join("broken.wasm"), "garbage").unwrap();
    let service = h.service().unwrap();
    assert_eq!(service.refused.len(), 1);
    assert!(service.refused[0].to_string().contains("broken.wasm"));
    assert!(service.sync_link("acme").await.is_ok());
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
    assert!(message.starts_with(&format!("{}:5:", path.display())), "{message}");
    assert!(message.contains("unknown field `allowed`"), "{message}");
}

// ---- containment ----

fn hostile(runtime: &Runtime, mode: &str, target: &str, limits: Limits, auth: Option<AuthConfig>) -> Connector {
    let plugin = Arc::new(runtime.load_plugin(&plugins::build("hostile").unwrap()).unwrap());
    let mut settings = BTreeMap::new();
    settings.insert("mode".to_owned(), mode.to_owned());
    settings.insert("target".to_owned(), target.to_owned());
    let allow = if target.is_empty() { Vec::new() } else { vec![origin_of(target)] };
    let config = ConnectorConfig {
        plugin: "hostile".into(),
        settings,
        allow,
        auth: auth.clone(),
        limits,
    };
    let credential = auth.as_ref().map(|a| Credential::resolve(a).unwrap());
    runtime.connector("evil", &config, plugin, credential)
}

fn origin_of(url: &str) -> Origin {
    let u = url::Url::parse(url).unwrap();
    Origin::parse(&format!("{}://{}:{}", u.scheme(), u.host_str().unwrap(), u.port_or_known_default().unwrap())).unwrap()
}

fn fault(result: Result<switchyard::model::EmployeePage, ConnectorError>) -> String {
    match result {
        Err(ConnectorError::PluginFault(m)) => m,
        other => panic!("expected a plugin fault, got {other:?}"),
    }
}

fn given_name(result: Result<switchyard::model::EmployeePage, ConnectorError>) -> String {
    result.unwrap().employees[0].given_name.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_hits_the_deadline_and_the_next_call_works() {
    let runtime = Runtime::new().unwrap();
    let limits = Limits { call_timeout_ms: 300, ..Limits::default() };
    let evil = hostile(&runtime, "loop", "", limits.clone(), None);
    let started = Instant::now();
    let message = fault(evil.fetch_employees(None).await);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(message.contains("deadline"), "{message}");
    assert!(message.contains("connector `evil`") && message.contains("hostile"), "{message}");
    // Contained: the same plugin serves the next call.
    let fine = hostile(&runtime, "ok", "", limits, None);
    assert_eq!(given_name(fine.fetch_employees(None).await), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_hits_the_memory_budget() {
    let runtime = Runtime::new().unwrap();
    let limits = Limits { memory_mib: 32, ..Limits::default() };
    let evil = hostile(&runtime, "memory", "", limits, None);
    let message = fault(evil.fetch_employees(None).await);
    assert!(message.contains("memory"), "{message}");
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
    let plugin = Arc::new(runtime.load_plugin(&plugins::build("hostile").unwrap()).unwrap());
    let mut settings = BTreeMap::new();
    settings.insert("mode".to_owned(), "fetch".to_owned());
    settings.insert("target".to_owned(), format!("{echo}/steal"));
    let denied = runtime.connector(
        "evil",
        &ConnectorConfig {
            plugin: "hostile".into(),
            settings,
            allow: vec![Origin::parse("https://elsewhere.example").unwrap()],
            auth: None,
            limits: Limits::default(),
        },
        plugin,
        None,
    );
    let seen = given_name(denied.fetch_employees(None).await);
    assert!(seen.starts_with("refused: egress to http://127.0.0.1:"), "{seen}");

    // Allowed, with credentials: the echo reflects them, the host redacts.
    let dir = tempfile::tempdir().unwrap();
    let secret_file = |name: &str, value: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, value).unwrap();
        SecretSource::Reference { secret: format!("file:{}", path.display()) }
    };
    for (auth, secret) in [
        (AuthConfig::Bearer { token: secret_file("t", "bearer-s3cret-value") }, "bearer-s3cret-value"),
        (AuthConfig::Query { param: "wstoken".into(), value: secret_file("q", "query-s3cret-value") }, "query-s3cret-value"),
        (AuthConfig::Header { name: "x-api-key".into(), value: secret_file("h", "header-s3cret-value") }, "header-s3cret-value"),
        (
            AuthConfig::Basic { username: secret_file("u", "basic-s3cret-user"), password: SecretSource::Literal("x".into()) },
            "basic-s3cret-user",
        ),
    ] {
        let evil = hostile(&runtime, "fetch", &format!("{echo}/anything"), Limits::default(), Some(auth));
        let seen = given_name(evil.fetch_employees(None).await);
        assert!(seen.starts_with("GET /anything"), "the request went out: {seen}");
        assert!(seen.contains("[redacted]"), "the credential was injected: {seen}");
        assert!(!seen.contains(secret), "the plugin never sees {secret}: {seen}");
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
    let limits = Limits { max_requests: 20, ..Limits::default() };
    let evil = hostile(&runtime, "flood", &format!("{echo}/x"), limits, None);
    match evil.fetch_employees(None).await {
        Err(ConnectorError::Transient(m)) => assert!(m.contains("limit of 20 HTTP requests"), "{m}"),
        other => panic!("expected the request limit, got {other:?}"),
    }
}
