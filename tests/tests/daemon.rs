//! The daemon (`switchyard run`): graceful shutdown of the real binary in
//! the middle of a sync, plugin hot reload, the admin API and its OpenAPI
//! document, and `/metrics`. Everything over real HTTP on 127.0.0.1 against
//! the simulators, with the real plugins.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard::Config;
use switchyard::daemon::Daemon;
use switchyard_testkit::harness::{Harness, LINK, Options};
use switchyard_testkit::plugins;

const TOKEN: &str = "test-admin-token-4f1c9a";

/// The `switchyard` binary built beside this test.
fn switchyard_bin() -> PathBuf {
    if let Ok(path) = std::env::var("SWITCHYARD_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let bin = dir.join("switchyard");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build -p switchyard`",
        bin.display()
    );
    bin
}

/// Append a `[daemon]` table to the harness configuration (admin token in a
/// file, as an operator would mount it).
fn add_daemon_table(h: &Harness, admin_listen: &str, extra: &str) {
    let token_file = h.dir.join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let mut config = std::fs::read_to_string(&h.config_path).unwrap();
    config.push_str(&format!(
        "\n[daemon]\nadmin_listen = \"{admin_listen}\"\nadmin_token = {{ secret = \"file:{}\" }}\nplugin_rescan = \"200ms\"\nplugin_settle = \"150ms\"\n{extra}\n",
        token_file.display()
    ));
    std::fs::write(&h.config_path, config).unwrap();
}

async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_one_account_each(h: &Harness) {
    let mut seen = BTreeSet::new();
    for u in h.lms.users() {
        assert!(
            seen.insert(u.idnumber.clone()),
            "duplicate account for {}",
            u.idnumber
        );
    }
    assert_eq!(
        seen,
        h.with_access(),
        "exactly one account per employee with access"
    );
    // No new assignments while on leave.
    let on_leave: BTreeSet<String> = h
        .hris
        .employees()
        .into_iter()
        .filter(|e| e.employment_history_status.as_deref() == Some("Leave of Absence"))
        .map(|e| e.id)
        .collect();
    for id in seen.difference(&on_leave) {
        let courses: BTreeSet<String> = h
            .lms
            .enrolments_of(id)
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        assert!(courses.contains("CODE-OF-CONDUCT"), "{id}: {courses:?}");
    }
}

struct Admin {
    base: String,
    client: reqwest::Client,
}

impl Admin {
    fn new(addr: std::net::SocketAddr) -> Admin {
        Admin {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
        }
    }

    async fn send(&self, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
        let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.send("get", path, Some(TOKEN)).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    async fn post(&self, path: &str) -> (u16, Value) {
        let (status, body) = self.send("post", path, Some(TOKEN)).await;
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    async fn link(&self) -> Value {
        self.get(&format!("/v1/links/{LINK}")).await
    }

    async fn plugin(&self, name: &str) -> Value {
        let plugins = self.get("/v1/plugins").await;
        plugins
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Trigger a sync and wait for the run it causes to end; returns the
    /// link's JSON then.
    async fn sync(&self) -> Value {
        let before = self.link().await["activity"]["runs"].as_u64().unwrap_or(0);
        let (status, body) = self.post(&format!("/v1/links/{LINK}/sync")).await;
        assert_eq!(status, 202, "{body}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let link = self.link().await;
            if link["activity"]["runs"].as_u64().unwrap_or(0) > before && link["running"] == false {
                return link;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for the triggered run: {link}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sigterm(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut std::process::Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the daemon did not exit within {timeout:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_binary(h: &Harness) -> std::process::Child {
    Command::new(switchyard_bin())
        .args(["run", "--config"])
        .arg(&h.config_path)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_sync_exits_0_and_a_restart_finishes_it_exactly_once() {
    let h = Harness::start_with(Options {
        employees: 40,
        page_size: 10,
        link_extra: "schedule = \"every 1h\"\nconcurrency = 2".into(),
        // One operation per call, so that the run has many checkpoints
        // between writes to stop at.
        limits: "max_batch = 1".into(),
        ..Options::default()
    })
    .await
    .unwrap();
    let port = free_port();
    // The grace period is long; the run must stop at its next checkpoint
    // well before it ends.
    add_daemon_table(&h, &format!("127.0.0.1:{port}"), "shutdown_grace = \"30s\"");
    h.lms.set_latency(Duration::from_millis(20));

    // The first start runs the link at once (it never ran); stop it midway.
    let mut daemon = start_binary(&h);
    eventually(
        "the sync to be under way",
        Duration::from_secs(60),
        || async { h.lms.write_count() >= 10 },
    )
    .await;
    let signalled = Instant::now();
    sigterm(&daemon);
    let status = wait_exit(&mut daemon, Duration::from_secs(25));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "stopped at a checkpoint, not at the end of the grace period"
    );
    let users_at_stop = h.lms.users().len();
    assert!(
        users_at_stop < h.with_access().len(),
        "the run was stopped midway ({users_at_stop} accounts)"
    );
    // What was left is in the outbox, durable.
    let out = Command::new(switchyard_bin())
        .args(["status", "--config"])
        .arg(&h.config_path)
        .output()
        .unwrap();
    let status_text = String::from_utf8_lossy(&out.stdout);
    let row = status_text.lines().find(|l| l.starts_with(LINK)).unwrap();
    let outbox: usize = row.split_whitespace().nth(5).unwrap().parse().unwrap();
    assert!(outbox > 0, "operations left in the outbox: {status_text}");

    // Restart: the interrupted run was not recorded as finished, so the link
    // runs at once and finishes the outbox.
    h.lms.set_latency(Duration::ZERO);
    let mut daemon = start_binary(&h);
    let admin = Admin::new(format!("127.0.0.1:{port}").parse().unwrap());
    eventually(
        "the restarted daemon to finish the run",
        Duration::from_secs(90),
        || async {
            let Ok(response) = admin
                .client
                .get(format!("{}/v1/links/{LINK}", admin.base))
                .bearer_auth(TOKEN)
                .send()
                .await
            else {
                return false;
            };
            let link: Value = response.json().await.unwrap_or(Value::Null);
            link["activity"]["last_outcome"] == "ok"
        },
    )
    .await;
    let link = admin.link().await;
    assert_eq!(link["counts"]["outbox"], 0, "{link}");
    assert_eq!(link["counts"]["dead_letters"], 0, "{link}");
    assert!(
        link["next_run"].is_string(),
        "the next run is scheduled: {link}"
    );
    sigterm(&daemon);
    let status = wait_exit(&mut daemon, Duration::from_secs(20));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");

    assert_one_account_each(&h);
}

async fn start_in_process(h: &Harness) -> (Daemon, Admin) {
    let daemon = Daemon::start(Config::load(&h.config_path).unwrap())
        .await
        .unwrap();
    let admin = Admin::new(daemon.admin_addr);
    (daemon, admin)
}

/// A valid component with different bytes: a custom section appended.
fn variant_of(wasm: &Path, tag: &str) -> Vec<u8> {
    let mut bytes = std::fs::read(wasm).unwrap();
    let name = b"switchyard-test";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    assert!(payload.len() < 128);
    bytes.push(0); // custom section
    bytes.push(payload.len() as u8);
    bytes.extend_from_slice(&payload);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_dropped_in_are_used_by_the_next_sync_and_bad_ones_are_refused() {
    let h = Harness::start(12).await.unwrap();
    add_daemon_table(&h, "127.0.0.1:0", "");
    let plugin_dir = h.dir.join("plugins.d");
    let moodle = plugins::build("moodle").unwrap();
    std::fs::remove_file(plugin_dir.join("moodle.wasm")).unwrap();
    let (daemon, admin) = start_in_process(&h).await;

    // No LMS plugin yet: the connector is paused and so is the link.
    let connectors = admin.get("/v1/connectors").await;
    let lms = connectors
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "lms")
        .unwrap();
    assert_eq!(lms["status"], "paused", "{connectors}");
    let link = admin.sync().await;
    assert_eq!(link["activity"]["last_outcome"], "paused", "{link}");
    assert_eq!(link["status"], "paused", "{link}");
    assert!(
        link["status_detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("paused: connector `lms`")),
        "{link}"
    );
    assert!(h.lms.users().is_empty());

    // Copied in while the daemon runs: picked up and used by the next sync.
    std::fs::copy(&moodle, plugin_dir.join("moodle.wasm")).unwrap();
    eventually("moodle to be served", Duration::from_secs(30), || async {
        admin.plugin("moodle").await["status"] == "serving"
    })
    .await;
    let first = admin.plugin("moodle").await["serving"]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let link = admin.sync().await;
    assert_eq!(link["activity"]["last_outcome"], "ok", "{link}");
    assert_one_account_each(&h);

    // A broken file (a copy cut short) is refused; the old version serves on.
    let bytes = std::fs::read(&moodle).unwrap();
    std::fs::write(plugin_dir.join("moodle.wasm"), &bytes[..bytes.len() / 2]).unwrap();
    eventually(
        "the truncated file to be refused",
        Duration::from_secs(30),
        || async { admin.plugin("moodle").await["refused"]["reason"].is_string() },
    )
    .await;
    let plugin = admin.plugin("moodle").await;
    assert_eq!(plugin["status"], "serving", "{plugin}");
    assert_eq!(plugin["serving"]["sha256"], first.as_str(), "{plugin}");
    h.hris.update_employee(&h.hris.employees()[0].id, |e| {
        e.first_name = "Renamed".into()
    });
    let link = admin.sync().await;
    assert_eq!(
        link["activity"]["last_outcome"], "ok",
        "the old version keeps serving: {link}"
    );
    assert!(
        link["activity"]["last_report"]["users_updated"]
            .as_u64()
            .unwrap()
            >= 1,
        "{link}"
    );

    // A valid component of the wrong world for this name is refused too.
    std::fs::copy(
        plugins::build("bamboohr").unwrap(),
        plugin_dir.join("moodle.wasm"),
    )
    .unwrap();
    eventually(
        "the HRIS plugin under the LMS name to be refused",
        Duration::from_secs(30),
        || async {
            admin.plugin("moodle").await["refused"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("needs lms-connector"))
        },
    )
    .await;
    assert_eq!(
        admin.plugin("moodle").await["serving"]["sha256"],
        first.as_str()
    );

    // A new valid version replaces the old one, installed the atomic way.
    let hidden = plugin_dir.join(".moodle.wasm.part");
    std::fs::write(&hidden, variant_of(&moodle, "v2")).unwrap();
    std::fs::rename(&hidden, plugin_dir.join("moodle.wasm")).unwrap();
    eventually(
        "the new version to serve",
        Duration::from_secs(30),
        || async {
            let p = admin.plugin("moodle").await;
            p["serving"]["sha256"].as_str().is_some_and(|s| s != first) && p["refused"].is_null()
        },
    )
    .await;
    let second = admin.plugin("moodle").await["serving"]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let connectors = admin.get("/v1/connectors").await;
    let lms = connectors
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "lms")
        .unwrap();
    assert_eq!(lms["sha256"], second.as_str(), "{connectors}");
    assert_eq!(lms["status"], "running");
    let link = admin.sync().await;
    assert_eq!(link["activity"]["last_outcome"], "ok", "{link}");
    // Compiled code is cached by sha256.
    let cached: Vec<String> = std::fs::read_dir(h.dir.join("state/cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(cached.iter().any(|n| n.starts_with(&second)), "{cached:?}");
    assert!(cached.iter().any(|n| n.starts_with(&first)), "{cached:?}");

    // Removed: its connector pauses, and with it the link.
    std::fs::remove_file(plugin_dir.join("moodle.wasm")).unwrap();
    eventually("moodle to be removed", Duration::from_secs(30), || async {
        admin.plugin("moodle").await["status"] == "removed"
    })
    .await;
    let link = admin.sync().await;
    assert_eq!(link["activity"]["last_outcome"], "paused", "{link}");
    assert!(
        link["activity"]["last_error"]
            .as_str()
            .unwrap()
            .contains("removed"),
        "{link}"
    );
    assert_one_account_each(&h);
    daemon.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_needs_the_token_and_serves_every_documented_route() {
    let h = Harness::start(5).await.unwrap();
    add_daemon_table(&h, "127.0.0.1:0", "");
    let (daemon, admin) = start_in_process(&h).await;
    let doc = admin.get("/openapi.json").await;
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 12, "{doc}");
    for (path, item) in paths {
        let concrete = path
            .replace("{link}", LINK)
            .replace("{connector}", "lms")
            .replace("{id}", "999");
        for method in item.as_object().unwrap().keys() {
            let (status, _) = admin.send(method, &concrete, None).await;
            assert_eq!(status, 401, "{method} {path} without a token");
            let (status, _) = admin.send(method, &concrete, Some("not-the-token")).await;
            assert_eq!(status, 401, "{method} {path} with a wrong token");
            let (status, body) = admin.send(method, &concrete, Some(TOKEN)).await;
            let documented: Vec<&String> = item[method]["responses"]
                .as_object()
                .unwrap()
                .keys()
                .collect();
            assert!(
                documented
                    .iter()
                    .any(|code| code.as_str() == status.to_string()),
                "{method} {path}: status {status} is not documented ({documented:?}): {body}"
            );
            // An unknown route would be axum's bare 404/405.
            assert!(
                status != 405 && !(status == 404 && body.is_empty()),
                "{method} {path} is not served"
            );
        }
    }
    // The matching report, as `switchyard match` prints it, once the sync
    // triggered above has bound everyone.
    let deadline = Instant::now() + Duration::from_secs(60);
    let report = loop {
        let report = admin.get(&format!("/v1/links/{LINK}/match")).await;
        if report["summary"]["bound"] == h.with_access().len() || Instant::now() > deadline {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        report["summary"]["employees"],
        h.with_access().len(),
        "{report}"
    );
    assert_eq!(
        report["summary"]["bound"],
        h.with_access().len(),
        "{report}"
    );
    assert_eq!(report["employees"][0]["by"], "sync-state", "{report}");
    assert_eq!(report["summary"]["to_decide"], 0, "{report}");
    // Unknown names are 404 with a reason.
    let (status, body) = admin.post("/v1/links/nope/sync").await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("nope"));
    // Parameters that do not parse are a documented 400 with a JSON error.
    for (method, path) in [
        ("get", "/v1/audit?since=notadate"),
        ("get", "/v1/audit?until=2026-13-45"),
        ("get", "/v1/audit?last=many"),
        ("post", "/v1/links/acme/dead-letters/notanumber/replay"),
    ] {
        let (status, body) = admin.send(method, path, Some(TOKEN)).await;
        assert_eq!(status, 400, "{method} {path}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert!(body["error"].is_string(), "{method} {path}: {body}");
    }
    // The scheme name is case-insensitive (RFC 9110).
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let response = admin
            .client
            .get(format!("{}/v1/health", admin.base))
            .header("authorization", format!("{scheme} {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "scheme `{scheme}`");
    }
    let health = admin.get("/v1/health").await;
    assert_eq!(health["status"], "ok");
    let ready = admin.get("/v1/ready").await;
    assert_eq!(ready["ready"], true);
    let plugins = admin.get("/v1/plugins").await;
    for p in plugins.as_array().unwrap() {
        assert_eq!(p["status"], "serving", "{p}");
        assert_eq!(p["serving"]["sha256"].as_str().unwrap().len(), 64);
        assert_eq!(p["serving"]["contract_version"], "0.5.0");
    }
    // A manual trigger runs the link; the link shows its last run and counts.
    let link = admin.sync().await;
    assert_eq!(link["activity"]["last_outcome"], "ok", "{link}");
    assert!(link["last_run_finished"].is_string(), "{link}");
    assert_eq!(
        link["counts"]["accounts"].as_u64().unwrap() as usize,
        h.with_access().len()
    );
    assert!(
        link["next_run"].is_null(),
        "no schedule, no next run: {link}"
    );
    let (status, body) = admin.post("/v1/connectors/lms/resume").await;
    assert_eq!(
        (status, &body["resumed"]),
        (200, &Value::Bool(false)),
        "{body}"
    );
    // The audit trail through the API (the CLI cannot open the database
    // while the daemon holds it): admin actions name the token and address.
    let actions = admin.get("/v1/audit?kind=admin.trigger-sync").await;
    let actions = actions.as_array().unwrap();
    assert!(!actions.is_empty());
    assert!(
        actions
            .iter()
            .all(|a| a["actor"].as_str().unwrap().starts_with("admin token ")),
        "{actions:?}"
    );
    let (status, body) = admin.post("/v1/audit/forget/101").await;
    assert_eq!(
        (status, &body["forgotten"]["snapshots"]),
        (200, &Value::from(1)),
        "{body}"
    );
    let erased = admin
        .get("/v1/audit?employee=101&kind=subject.erased")
        .await;
    assert_eq!(erased.as_array().unwrap().len(), 1, "{erased}");
    let verified = admin.get("/v1/audit/verify").await;
    assert!(
        verified["broken"].is_null() && verified["records"].as_u64().unwrap() > 10,
        "{verified}"
    );
    daemon.shutdown().await.unwrap();
}

/// Parse the Prometheus text format: (name, labels) -> value.
fn parse_metrics(text: &str) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let labels = rest.trim_end_matches('}');
                let map = labels
                    .split("\",")
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap();
                        (k.to_owned(), v.trim_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), map)
            }
            None => (series.to_owned(), BTreeMap::new()),
        };
        out.insert((name, labels), value.parse::<f64>().unwrap());
    }
    out
}

fn metric(
    m: &BTreeMap<(String, BTreeMap<String, String>), f64>,
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    m.iter()
        .filter(|((n, l), _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| *v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_sync_count_what_it_did() {
    let h = Harness::start(20).await.unwrap();
    add_daemon_table(&h, "127.0.0.1:0", "");
    let (daemon, admin) = start_in_process(&h).await;
    let (status, _) = admin.send("get", "/metrics", None).await;
    assert_eq!(status, 401);
    let link = admin.sync().await;
    assert_eq!(link["activity"]["last_outcome"], "ok", "{link}");
    let accounts = h.with_access().len() as f64;

    let (status, text) = admin.send("get", "/metrics", Some(TOKEN)).await;
    assert_eq!(status, 200);
    let m = parse_metrics(&text);
    let acme = [("link", LINK)];
    assert!(
        metric(
            &m,
            "switchyard_link_runs_total",
            &[("link", LINK), ("outcome", "ok")]
        ) >= 1.0,
        "{text}"
    );
    assert!(
        metric(
            &m,
            "switchyard_records_fetched_total",
            &[("link", LINK), ("kind", "employees")]
        ) >= 20.0,
        "{text}"
    );
    assert!(
        metric(
            &m,
            "switchyard_operations_total",
            &[("link", LINK), ("kind", "upsert-user"), ("result", "ok")]
        ) >= accounts,
        "{text}"
    );
    assert!(
        metric(
            &m,
            "switchyard_operations_total",
            &[("link", LINK), ("kind", "enroll"), ("result", "ok")]
        ) >= accounts,
        "{text}"
    );
    assert!(
        metric(
            &m,
            "switchyard_plugin_call_duration_seconds_count",
            &[("connector", "hr"), ("operation", "fetch-employees")]
        ) >= 1.0,
        "{text}"
    );
    assert!(
        metric(
            &m,
            "switchyard_plugin_calls_total",
            &[
                ("connector", "lms"),
                ("operation", "upsert-users"),
                ("result", "ok")
            ]
        ) >= 1.0,
        "the Moodle plugin writes accounts in batches: {text}"
    );
    let last_success = metric(&m, "switchyard_link_last_success_timestamp_seconds", &acme);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        last_success > now - 120.0 && last_success <= now + 1.0,
        "last success {last_success}, now {now}"
    );
    assert!(
        m.contains_key(&(
            "switchyard_outbox_depth".to_owned(),
            BTreeMap::from([("link".to_owned(), LINK.to_owned())])
        )),
        "{text}"
    );
    assert!(
        metric(
            &m,
            "switchyard_plugin_reloads_total",
            &[("plugin", "moodle"), ("result", "loaded")]
        ) >= 1.0,
        "{text}"
    );
    daemon.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_code_is_cached_and_a_corrupt_entry_is_recompiled_not_trusted() {
    let h = Harness::start(4).await.unwrap();
    add_daemon_table(&h, "127.0.0.1:0", "");
    let (daemon, _admin) = start_in_process(&h).await;
    daemon.shutdown().await.unwrap();
    let cache = h.dir.join("state/cache");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    assert_eq!(entries.len(), 2, "one entry per plugin: {entries:?}");
    let good: Vec<Vec<u8>> = entries.iter().map(|p| std::fs::read(p).unwrap()).collect();
    // A second start uses the entries (it does not rewrite them).
    let modified = |p: &PathBuf| std::fs::metadata(p).unwrap().modified().unwrap();
    let before: Vec<_> = entries.iter().map(modified).collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (daemon, _admin) = start_in_process(&h).await;
    daemon.shutdown().await.unwrap();
    assert_eq!(
        entries.iter().map(modified).collect::<Vec<_>>(),
        before,
        "cache entries reused"
    );
    // Flip a byte in the middle of each compiled payload.
    for (path, bytes) in entries.iter().zip(&good) {
        let mut bad = bytes.clone();
        let middle = bad.len() / 2;
        bad[middle] ^= 0xff;
        std::fs::write(path, bad).unwrap();
    }
    let (daemon, admin) = start_in_process(&h).await;
    for p in admin.get("/v1/plugins").await.as_array().unwrap() {
        assert_eq!(p["status"], "serving", "{p}");
    }
    let link = admin.sync().await;
    assert_eq!(link["activity"]["last_outcome"], "ok", "{link}");
    assert_one_account_each(&h);
    // The entries were rewritten from a fresh compilation.
    for (path, bytes) in entries.iter().zip(&good) {
        assert_eq!(
            &std::fs::read(path).unwrap(),
            bytes,
            "{} rewritten",
            path.display()
        );
    }
    daemon.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_inspect_shows_world_contract_imports_and_grants() {
    let h = Harness::start(1).await.unwrap();
    let out = Command::new(switchyard_bin())
        .args(["plugin", "inspect"])
        .arg(h.dir.join("plugins.d/moodle.wasm"))
        .arg("--config")
        .arg(&h.config_path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("world             lms-connector"), "{text}");
    assert!(text.contains("contract version  0.5.0"), "{text}");
    assert!(text.contains("switchyard:connector/http"), "{text}");
    assert!(text.contains("connector `lms`"), "{text}");
    let origin = h.lms.base_url().trim_end_matches('/').to_owned();
    let port = origin.rsplit(':').next().unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("may reach") && l.contains(port)),
        "{text}"
    );
    assert!(
        text.contains("query parameter (injected by the host"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("sent to") && l.contains(port) && !l.contains("not sent")),
        "which origins receive the credential: {text}"
    );
    assert!(
        !text.contains(&h.lms.token()),
        "no secret value is shown: {text}"
    );
    assert!(
        text.contains("used by          link `acme` as lms"),
        "{text}"
    );

    // Not a plugin: refused with exit code 2.
    let junk = h.dir.join("junk.wasm");
    std::fs::write(&junk, b"not wasm").unwrap();
    let out = Command::new(switchyard_bin())
        .args(["plugin", "inspect"])
        .arg(&junk)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_replayed_through_the_admin_api() {
    let h = Harness::start(10).await.unwrap();
    add_daemon_table(&h, "127.0.0.1:0", "");
    let (daemon, admin) = start_in_process(&h).await;
    // The first two LMS calls are refused the Moodle way: dead letters.
    h.lms.fail_next_with_exception(2, "invalidparameter");
    let link = admin.sync().await;
    assert_eq!(link["activity"]["last_outcome"], "ok", "{link}");
    let letters = admin.get(&format!("/v1/links/{LINK}/dead-letters")).await;
    let letters = letters.as_array().unwrap().clone();
    assert!(letters.len() >= 2, "{letters:?}");
    assert_eq!(
        link["counts"]["dead_letters"].as_u64().unwrap() as usize,
        letters.len()
    );
    let refused: BTreeSet<String> = letters
        .iter()
        .map(|l| l["operation"]["employee_id"].as_str().unwrap().to_owned())
        .collect();
    for id in &refused {
        assert!(h.lms.user_by_idnumber(id).is_empty());
    }
    for letter in &letters {
        let id = letter["id"].as_u64().unwrap();
        let (status, body) = admin
            .post(&format!("/v1/links/{LINK}/dead-letters/{id}/replay"))
            .await;
        assert_eq!(status, 202, "{body}");
    }
    // A letter replayed twice is gone the second time.
    let id = letters[0]["id"].as_u64().unwrap();
    let (status, _) = admin
        .post(&format!("/v1/links/{LINK}/dead-letters/{id}/replay"))
        .await;
    assert_eq!(status, 404);
    eventually(
        "the replayed operations to be applied",
        Duration::from_secs(60),
        || async {
            let link = admin.link().await;
            link["counts"]["outbox"] == 0
                && link["running"] == false
                && link["counts"]["dead_letters"] == 0
        },
    )
    .await;
    assert!(
        admin
            .get(&format!("/v1/links/{LINK}/dead-letters"))
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    for id in &refused {
        assert_eq!(h.lms.user_by_idnumber(id).len(), 1, "{id} created once");
    }
    assert_one_account_each(&h);
    daemon.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_run_survives_a_restart_so_a_link_that_just_ran_is_not_run_again() {
    let h = Harness::start_with(Options {
        employees: 3,
        page_size: 10,
        link_extra: "schedule = \"every 1h\"".into(),
        ..Options::default()
    })
    .await
    .unwrap();
    add_daemon_table(&h, "127.0.0.1:0", "");
    // Never ran: it runs at start.
    let (daemon, admin) = start_in_process(&h).await;
    eventually(
        "the first scheduled run",
        Duration::from_secs(60),
        || async {
            let link = admin.link().await;
            link["activity"]["last_outcome"] == "ok" && link["running"] == false
        },
    )
    .await;
    let link = admin.link().await;
    let finished = link["last_run_finished"].as_str().unwrap().to_owned();
    let next = link["next_run"].as_str().unwrap().to_owned();
    daemon.shutdown().await.unwrap();
    let writes = h.lms.write_count();

    // Restarted a moment later: the next slot is an hour after that run,
    // read back from sled; nothing runs now.
    let (daemon, admin) = start_in_process(&h).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let link = admin.link().await;
    assert_eq!(link["activity"]["runs"], 0, "{link}");
    assert_eq!(link["last_run_finished"].as_str().unwrap(), finished);
    let parse = |t: &str| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).unwrap()
    };
    assert_eq!(parse(link["next_run"].as_str().unwrap()), parse(&next));
    assert_eq!(parse(&next) - parse(&finished), time::Duration::hours(1));
    assert_eq!(h.lms.write_count(), writes);
    daemon.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_copy_is_not_loaded_half_way() {
    let h = Harness::start(3).await.unwrap();
    add_daemon_table(&h, "127.0.0.1:0", "");
    let plugin_dir = h.dir.join("plugins.d");
    std::fs::remove_file(plugin_dir.join("moodle.wasm")).unwrap();
    let (daemon, admin) = start_in_process(&h).await;
    // A copy in progress for longer than `plugin_settle`, but never pausing
    // that long: the file keeps changing, so it is never looked at half-way.
    let bytes = variant_of(&plugins::build("moodle").unwrap(), "slow");
    let target = plugin_dir.join("moodle.wasm");
    let chunks: Vec<&[u8]> = bytes.chunks(bytes.len() / 12 + 1).collect();
    let mut file = std::fs::File::create(&target).unwrap();
    for chunk in chunks {
        use std::io::Write;
        file.write_all(chunk).unwrap();
        file.flush().unwrap();
        let p = admin.plugin("moodle").await;
        assert!(
            p.is_null() || p["refused"].is_null(),
            "a partial file was evaluated: {p}"
        );
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    drop(file);
    eventually(
        "the complete file to serve",
        Duration::from_secs(30),
        || async { admin.plugin("moodle").await["status"] == "serving" },
    )
    .await;
    let p = admin.plugin("moodle").await;
    assert!(p["refused"].is_null(), "{p}");
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    assert_eq!(p["serving"]["sha256"], sha.as_str());
    daemon.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_to_the_daemon_is_written_back_by_the_run_it_triggers() {
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let h = Harness::start(6).await.unwrap();
    let secret_file = h.dir.join("lms-webhook.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let extra = format!(
        "public_listen = \"127.0.0.1:0\"\n\n[connectors.lms.webhook]\nscheme = \"standard\"\nsecret = {{ secret = \"file:{}\" }}\n",
        secret_file.display()
    );
    add_daemon_table(&h, "127.0.0.1:0", &extra);
    let (daemon, admin) = start_in_process(&h).await;
    admin.sync().await;
    let learner = h.lms.users()[0].idnumber.clone();
    let completion = h
        .lms
        .mark_completed(&learner, "CODE-OF-CONDUCT", Some(88.0), Some(true))
        .unwrap();
    let body = h.lms.completion_webhook_body(completion).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let headers =
        switchyard_testkit::lms::LmsSim::sign_webhook(SECRET, "msg_daemon_1", now, &body).unwrap();
    let url = format!(
        "http://{}/webhooks/lms",
        daemon.public_addr.expect("a public listener")
    );
    let client = reqwest::Client::new();
    let send = |body: Vec<u8>| {
        let mut request = client.post(&url).body(body);
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        request.send()
    };
    assert_eq!(send(body.clone()).await.unwrap().status(), 200);
    // The delivery triggered the link's run, which writes the completion
    // back without waiting for a schedule or a poll.
    eventually(
        "the completion written to the HRIS",
        Duration::from_secs(20),
        || async {
            h.hris
                .training_records()
                .iter()
                .any(|r| r.employee_id == learner)
        },
    )
    .await;
    // A forged copy is refused; a replay is acknowledged and changes nothing.
    let mut forged = body.clone();
    forged.extend_from_slice(b" ");
    assert_eq!(send(forged).await.unwrap().status(), 401);
    assert_eq!(send(body).await.unwrap().status(), 200);
    admin.sync().await;
    assert_eq!(
        h.hris
            .training_records()
            .iter()
            .filter(|r| r.employee_id == learner)
            .count(),
        1
    );

    // All three deliveries are in the audit trail, with the write-back.
    let state = daemon.shared.state.clone();
    let kinds: Vec<String> = state
        .audit()
        .read(
            &switchyard::audit::Filter {
                kind: Some("webhook".into()),
                ..Default::default()
            },
            None,
        )
        .unwrap()
        .into_iter()
        .map(|e| e.record.kind)
        .collect();
    // The forged one is summed with the other refusals of its source (see
    // `refused_requests_are_summed_logged_sparingly_and_throttled`).
    assert_eq!(kinds, ["webhook.accepted", "webhook.replay"]);
    let written = state
        .audit()
        .read(
            &switchyard::audit::Filter {
                kind: Some("completion.written".into()),
                employee: Some(learner.clone()),
                ..Default::default()
            },
            None,
        )
        .unwrap();
    assert_eq!(written.len(), 1);
    assert_eq!(state.audit().verify().unwrap().broken, None);
    drop(state);
    daemon.shutdown().await.unwrap();
}

/// CPU time (user + system) a process has used so far, from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name is in parentheses and may hold spaces: count fields
    // after the last `)`. utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    let per_second: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    Duration::from_millis(ticks * 1000 / per_second)
}

/// Wait until the daemon's admin API answers `/v1/ready` with 200.
async fn wait_ready(admin: &Admin) {
    eventually(
        "the daemon to be ready",
        Duration::from_secs(60),
        || async {
            admin
                .client
                .get(format!("{}/v1/ready", admin.base))
                .bearer_auth(TOKEN)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_daemon_uses_almost_no_cpu() {
    let h = Harness::start(3).await.unwrap();
    let port = free_port();
    add_daemon_table(&h, &format!("127.0.0.1:{port}"), "");
    let mut daemon = start_binary(&h);
    let admin = Admin::new(format!("127.0.0.1:{port}").parse().unwrap());
    wait_ready(&admin).await;
    // Let start-up work (compiling plugins, the first scan) settle.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = cpu_time(daemon.id());
    let window = Duration::from_secs(3);
    tokio::time::sleep(window).await;
    let used = cpu_time(daemon.id()) - before;
    sigterm(&daemon);
    let status = wait_exit(&mut daemon, Duration::from_secs(20));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    eprintln!("idle daemon: {used:?} of CPU in {window:?}");
    assert!(
        used < Duration::from_millis(150),
        "an idle daemon used {used:?} of CPU in {window:?}"
    );
}

/// A daemon binary with a public listener taking the LMS's Standard
/// Webhooks (secret in a file); returns the admin and public ports.
fn add_webhook_daemon_table(h: &Harness, secret: &str, extra: &str) -> (u16, u16) {
    let secret_file = h.dir.join("lms-webhook.secret");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let (admin, public) = (free_port(), free_port());
    let extra = format!(
        "public_listen = \"127.0.0.1:{public}\"\n{extra}\n\n[connectors.lms.webhook]\nscheme = \"standard\"\nsecret = {{ secret = \"file:{}\" }}\n",
        secret_file.display()
    );
    add_daemon_table(h, &format!("127.0.0.1:{admin}"), &extra);
    (admin, public)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_work_and_its_audit_record_survive_a_kill_after_the_200_and_run_at_restart() {
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    // A link with no schedule: it runs on triggers only.
    let h = Harness::start(4).await.unwrap();
    let (admin_port, public_port) = add_webhook_daemon_table(&h, SECRET, "");
    let mut daemon = start_binary(&h);
    let admin = Admin::new(format!("127.0.0.1:{admin_port}").parse().unwrap());
    wait_ready(&admin).await;
    let link = admin.sync().await;
    assert_eq!(link["activity"]["last_outcome"], "ok", "{link}");

    // The HRIS is slow: the run the delivery triggers is still writing the
    // completion back when the daemon is killed right after the 200.
    h.hris.set_latency(Duration::from_secs(5));
    let learner = h.lms.users()[0].idnumber.clone();
    let completion = h
        .lms
        .mark_completed(&learner, "CODE-OF-CONDUCT", Some(91.0), Some(true))
        .unwrap();
    let body = h.lms.completion_webhook_body(completion).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let headers =
        switchyard_testkit::lms::LmsSim::sign_webhook(SECRET, "msg_kill_1", now, &body).unwrap();
    let mut request = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{public_port}/webhooks/lms"))
        .body(body);
    for (name, value) in &headers {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    daemon.kill().unwrap();
    daemon.wait().unwrap();

    // The delivery, its replay marker and its audit record were durable
    // before the 200.
    {
        use switchyard::store::Store as _;
        let state = switchyard::store::SledStore::open(&h.dir.join("state")).unwrap();
        let accepted = state
            .audit()
            .read(
                &switchyard::audit::Filter {
                    kind: Some("webhook.accepted".into()),
                    ..Default::default()
                },
                None,
            )
            .unwrap();
        assert_eq!(accepted.len(), 1, "the accepted delivery's audit record");
        assert!(
            state
                .is_webhook_delivered(&"lms".into(), "msg_kill_1")
                .unwrap()
        );
        assert_eq!(
            state.counts(&LINK.into()).unwrap().outbox,
            1,
            "the write-back queued"
        );
    }

    // Restarted, with no schedule and no trigger: the queued work runs.
    h.hris.set_latency(Duration::ZERO);
    let mut daemon = start_binary(&h);
    eventually(
        "the queued write-back to run at start",
        Duration::from_secs(60),
        || async {
            h.hris
                .training_records()
                .iter()
                .any(|r| r.employee_id == learner)
        },
    )
    .await;
    eventually("the outbox to drain", Duration::from_secs(30), || async {
        let Ok(response) = admin
            .client
            .get(format!("{}/v1/links/{LINK}", admin.base))
            .bearer_auth(TOKEN)
            .send()
            .await
        else {
            return false;
        };
        let link: Value = response.json().await.unwrap_or(Value::Null);
        link["counts"]["outbox"] == 0 && link["activity"]["last_outcome"] == "ok"
    })
    .await;
    sigterm(&daemon);
    let status = wait_exit(&mut daemon, Duration::from_secs(20));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    let written = h
        .hris
        .training_records()
        .iter()
        .filter(|r| r.employee_id == learner)
        .count();
    assert_eq!(written, 1, "written back once");
}

/// Start the daemon binary with the open-file limit (soft and hard) set to
/// `files`.
fn start_binary_with_file_limit(h: &Harness, files: u32) -> std::process::Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n {files} && exec \"$0\" run --config \"$1\""
        ))
        .arg(switchyard_bin())
        .arg(&h.config_path)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_holding_an_unfinished_request_head_does_not_outlast_the_grace_period() {
    let h = Harness::start(3).await.unwrap();
    // The head timeout (10s by default) is longer than the grace period:
    // only the shutdown can close these connections in time.
    let (admin_port, public_port) = add_webhook_daemon_table(
        &h,
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "shutdown_grace = \"2s\"",
    );
    let mut daemon = start_binary(&h);
    let admin = Admin::new(format!("127.0.0.1:{admin_port}").parse().unwrap());
    wait_ready(&admin).await;
    let mut held = Vec::new();
    for port in [admin_port, public_port] {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .write_all(b"POST /webhooks/lms HTTP/1.1\r\nHost: switchyard\r\nX-Partial: ")
            .unwrap();
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    sigterm(&daemon);
    let status = wait_exit(&mut daemon, Duration::from_secs(15));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(6),
        "exited {:?} after SIGTERM with a grace period of 2s",
        signalled.elapsed()
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_request_body_is_cut_off() {
    let h = Harness::start(3).await.unwrap();
    let (admin_port, public_port) = add_webhook_daemon_table(
        &h,
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "body_read_timeout = \"1s\"",
    );
    let mut daemon = start_binary(&h);
    let admin = Admin::new(format!("127.0.0.1:{admin_port}").parse().unwrap());
    wait_ready(&admin).await;
    let answered = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", public_port)).unwrap();
        stream
            .write_all(
                b"POST /webhooks/lms HTTP/1.1\r\nHost: switchyard\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n",
            )
            .unwrap();
        let mut writer = stream.try_clone().unwrap();
        // One byte every 100 ms: the whole body would take 10 s.
        std::thread::spawn(move || {
            for _ in 0..100 {
                if writer.write_all(b" ").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let started = Instant::now();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut response = [0u8; 12];
        let read = stream.read_exact(&mut response);
        (
            started.elapsed(),
            read.map(|()| String::from_utf8_lossy(&response).into_owned()),
        )
    })
    .await
    .unwrap();
    let (elapsed, response) = answered;
    let response = response.expect("an answer before the body was complete");
    assert_eq!(response, "HTTP/1.1 400", "{response}");
    assert!(
        elapsed < Duration::from_secs(5),
        "answered after {elapsed:?}, with a body timeout of 1s"
    );
    sigterm(&daemon);
    let status = wait_exit(&mut daemon, Duration::from_secs(20));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_beyond_the_file_limit_do_not_starve_the_admin_api() {
    let h = Harness::start(3).await.unwrap();
    let port = free_port();
    add_daemon_table(
        &h,
        &format!("127.0.0.1:{port}"),
        "header_read_timeout = \"1s\"",
    );
    // 256 descriptors; 300 idle connections would use them all up.
    let mut daemon = start_binary_with_file_limit(&h, 256);
    let admin = Admin::new(format!("127.0.0.1:{port}").parse().unwrap());
    wait_ready(&admin).await;
    let idle: Vec<std::net::TcpStream> = (0..300)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let started = Instant::now();
    let response = reqwest::Client::new()
        .get(format!("{}/v1/ready", admin.base))
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(30))
        .send()
        .await;
    let status = response.map(|r| r.status().as_u16());
    assert_eq!(
        status.as_ref().ok(),
        Some(&200),
        "{status:?} after {:?}",
        started.elapsed()
    );
    drop(idle);
    sigterm(&daemon);
    let status = wait_exit(&mut daemon, Duration::from_secs(20));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_retry_after_wait_exits_without_waiting_it_out() {
    let h = Harness::start(3).await.unwrap();
    let port = free_port();
    add_daemon_table(&h, &format!("127.0.0.1:{port}"), "shutdown_grace = \"30s\"");
    let mut daemon = start_binary(&h);
    let admin = Admin::new(format!("127.0.0.1:{port}").parse().unwrap());
    wait_ready(&admin).await;
    // The HRIS asks for a 50 s pause on the run's first read.
    h.hris.fail_next(1, 50);
    let (status, body) = admin.post(&format!("/v1/links/{LINK}/sync")).await;
    assert_eq!(status, 202, "{body}");
    eventually("the run to start", Duration::from_secs(30), || async {
        admin.link().await["running"] == true
    })
    .await;
    eventually(
        "the HRIS to have refused the first read",
        Duration::from_secs(30),
        || async { h.hris.requests().iter().any(|r| r.status == 503) },
    )
    .await;
    let signalled = Instant::now();
    sigterm(&daemon);
    let status = wait_exit(&mut daemon, Duration::from_secs(40));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "exited {:?} after SIGTERM during a 50 s Retry-After wait",
        signalled.elapsed()
    );
}

// ---- signed plugins and capability review on upgrade ----

/// Run the `switchyard` binary; returns (exit code, stdout, stderr).
fn switchyard(args: &[&std::ffi::OsStr]) -> (Option<i32>, String, String) {
    let out = Command::new(switchyard_bin()).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `plugin keygen`: a new key in `path`; returns its public key.
fn keygen(path: &Path) -> String {
    let (code, out, err) = switchyard(&[
        "plugin".as_ref(),
        "keygen".as_ref(),
        "--out".as_ref(),
        path.as_os_str(),
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    out.lines()
        .find_map(|l| l.strip_prefix("public key (for trusted_keys): "))
        .unwrap_or_else(|| panic!("no public key printed: {out}"))
        .to_owned()
}

/// `plugin sign FILE --key KEY`.
fn sign(file: &Path, key: &Path) {
    let (code, out, err) = switchyard(&[
        "plugin".as_ref(),
        "sign".as_ref(),
        file.as_os_str(),
        "--key".as_ref(),
        key.as_os_str(),
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
}

/// Put top-level settings into the harness configuration.
fn add_top_level(h: &Harness, lines: &str) {
    let config = std::fs::read_to_string(&h.config_path).unwrap();
    let config = config.replacen(
        "data_dir = \"state\"\n",
        &format!("data_dir = \"state\"\n{lines}\n"),
        1,
    );
    std::fs::write(&h.config_path, config).unwrap();
}

fn open_error(h: &Harness) -> String {
    match h.service() {
        Ok(_) => panic!("the service opened"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_files_signed_by_a_trusted_key_are_loaded_when_signatures_are_required() {
    let h = Harness::start(3).await.unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (ours, theirs) = (keys.path().join("ours.pem"), keys.path().join("theirs.pem"));
    let public = keygen(&ours);
    keygen(&theirs);
    // A key is never overwritten.
    let (code, _, err) = switchyard(&[
        "plugin".as_ref(),
        "keygen".as_ref(),
        "--out".as_ref(),
        ours.as_os_str(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&ours).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the secret key is private: {mode:o}");
    }
    add_top_level(
        &h,
        &format!("require_signed = true\ntrusted_keys = [\"{public}\"]"),
    );
    let plugin_dir = h.dir.join("plugins.d");
    let (hris, lms) = (
        plugin_dir.join("bamboohr.wasm"),
        plugin_dir.join("moodle.wasm"),
    );

    // Unsigned: refused before it is compiled, with the rule that refused it.
    let e = open_error(&h);
    assert!(e.contains("not signed, and `require_signed` is set"), "{e}");

    // Signed by a key the configuration does not trust.
    sign(&hris, &theirs);
    sign(&lms, &theirs);
    let e = open_error(&h);
    assert!(e.contains("which is not in `trusted_keys`"), "{e}");
    assert!(!e.contains(&public), "names the signer, not our key: {e}");

    // Signed by ours (signing again replaces the signature): loaded, and
    // the sync runs.
    sign(&hris, &ours);
    sign(&lms, &ours);
    let service = h.service().unwrap();
    let signer = service.plugins["moodle"].signer.unwrap();
    assert_eq!(signer.key.to_string(), public);
    assert!(signer.trusted);
    service.sync_link(LINK).await.unwrap();
    assert_eq!(h.lms.users().len(), 3);
    drop(service);
    let (code, out, err) = switchyard(&["plugin".as_ref(), "check".as_ref(), lms.as_os_str()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&format!("signed by {public}")), "{out}");

    // One byte changed after signing: refused as changed, whatever the
    // policy, and before wasmtime sees it.
    let mut bytes = std::fs::read(&lms).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&lms, &bytes).unwrap();
    let e = open_error(&h);
    assert!(
        e.contains("the signature does not verify") && e.contains("changed after"),
        "{e}"
    );
    let (code, _, err) = switchyard(&["plugin".as_ref(), "check".as_ref(), lms.as_os_str()]);
    assert_eq!(code, Some(2), "even without a configuration: {err}");
    assert!(err.contains("changed after"), "{err}");

    // A bad key in the configuration is a configuration error with its line.
    let config = std::fs::read_to_string(&h.config_path).unwrap();
    std::fs::write(&h.config_path, config.replace(&public, "ed25519:AAAA")).unwrap();
    let e = format!("{:#}", Config::load(&h.config_path).unwrap_err());
    assert!(
        e.contains("switchyard.toml:") && e.contains("trusted_keys") && e.contains("32 bytes"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_needs_more_is_held_until_an_operator_approves_it() {
    let h = Harness::start(2).await.unwrap();
    add_daemon_table(&h, "127.0.0.1:0", "");
    let plugin_dir = h.dir.join("plugins.d");
    let lms = plugin_dir.join("moodle.wasm");
    let current = plugins::build("moodle").unwrap();
    // The version first seen is a build against contract 0.1.0.
    std::fs::copy(plugins::build("contract-v0-1").unwrap(), &lms).unwrap();
    let (daemon, admin) = start_in_process(&h).await;
    let old = admin.plugin("moodle").await;
    assert_eq!(old["status"], "serving", "{old}");
    let old_sha = old["serving"]["sha256"].as_str().unwrap().to_owned();

    // A version built against 0.5.0 needs more: held, the old one serves on.
    let install = |bytes: Vec<u8>| {
        let hidden = plugin_dir.join(".moodle.wasm.part");
        std::fs::write(&hidden, bytes).unwrap();
        std::fs::rename(&hidden, &lms).unwrap();
    };
    install(std::fs::read(&current).unwrap());
    eventually(
        "the new version to be held",
        Duration::from_secs(30),
        || async { admin.plugin("moodle").await["status"] == "held" },
    )
    .await;
    let held = admin.plugin("moodle").await;
    assert_eq!(held["serving"]["sha256"], old_sha.as_str(), "{held}");
    let needs: Vec<String> = serde_json::from_value(held["held"]["needs"].clone()).unwrap();
    // The old build made no requests and read no settings, so it did not
    // import http or config: the new one asks for both.
    assert_eq!(
        needs,
        [
            "contract 0.5.0 (approved: 0.1.0)",
            "imports switchyard:connector/http@0.5.0",
            "imports switchyard:connector/config@0.5.0",
            "imports switchyard:connector/shared@0.5.0"
        ],
        "{held}"
    );
    let new_sha = held["held"]["sha256"].as_str().unwrap().to_owned();
    let connectors = admin.get("/v1/connectors").await;
    assert!(
        connectors
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "lms" && c["sha256"] == old_sha.as_str()),
        "{connectors}"
    );

    // Approving a version other than the one held changes nothing.
    let (status, body) = admin
        .post(&format!("/v1/plugins/moodle/approve?sha256={old_sha}"))
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = admin.post("/v1/plugins/bamboohr/approve").await;
    assert_eq!(status, 404, "nothing held: {body}");
    let (status, body) = admin
        .post(&format!("/v1/plugins/moodle/approve?sha256={new_sha}"))
        .await;
    assert_eq!(status, 200, "{body}");
    let now = admin.plugin("moodle").await;
    assert_eq!(now["status"], "serving", "{now}");
    assert_eq!(now["serving"]["sha256"], new_sha.as_str(), "{now}");
    let link = admin.sync().await;
    assert_eq!(link["activity"]["last_outcome"], "ok", "{link}");
    assert_eq!(h.lms.users().len(), 2);

    // Signed (the approved version was not): no more than approved.
    let keys = tempfile::tempdir().unwrap();
    let (a, b) = (keys.path().join("a.pem"), keys.path().join("b.pem"));
    let key_a = keygen(&a);
    let key_b = keygen(&b);
    let staged = keys.path().join("moodle.wasm");
    std::fs::copy(&current, &staged).unwrap();
    sign(&staged, &a);
    install(std::fs::read(&staged).unwrap());
    eventually(
        "the signed version to serve",
        Duration::from_secs(30),
        || async { admin.plugin("moodle").await["serving"]["signer"] == key_a.as_str() },
    )
    .await;
    // Then signed by another key: held.
    sign(&staged, &b);
    install(std::fs::read(&staged).unwrap());
    eventually(
        "the version signed by another key to be held",
        Duration::from_secs(30),
        || async { admin.plugin("moodle").await["status"] == "held" },
    )
    .await;
    let held = admin.plugin("moodle").await;
    assert_eq!(
        held["held"]["needs"][0],
        format!("signed by {key_b} (approved: signed by {key_a})"),
        "{held}"
    );
    assert_eq!(held["serving"]["signer"], key_a.as_str());
    daemon.shutdown().await.unwrap();

    // A restart does not approve it: nothing serves the old bytes now, so
    // the connector is paused and says why; a one-shot sync refuses it too.
    let (daemon, admin) = start_in_process(&h).await;
    let held = admin.plugin("moodle").await;
    assert_eq!(held["status"], "held", "{held}");
    assert!(held["serving"].is_null(), "{held}");
    let link = admin.sync().await;
    assert_eq!(link["activity"]["last_outcome"], "paused", "{link}");
    assert!(
        link["activity"]["last_error"]
            .as_str()
            .unwrap()
            .contains("held"),
        "{link}"
    );
    daemon.shutdown().await.unwrap();
    let e = open_error(&h);
    assert!(
        e.contains("held") && e.contains("switchyard plugin approve moodle"),
        "{e}"
    );

    // `plugin inspect` shows the difference; `plugin approve` approves it.
    let config = h.config_path.as_os_str();
    let (code, out, err) = switchyard(&[
        "plugin".as_ref(),
        "inspect".as_ref(),
        lms.as_os_str(),
        "--config".as_ref(),
        config,
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("approval          HELD"), "{out}");
    assert!(out.contains(&format!("  + signed by {key_b}")), "{out}");
    let (code, out, err) = switchyard(&[
        "plugin".as_ref(),
        "approve".as_ref(),
        "--config".as_ref(),
        config,
        "moodle".as_ref(),
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    let service = h.service().unwrap();
    assert_eq!(
        service.plugins["moodle"].signer.unwrap().key.to_string(),
        key_b
    );
    // Each hold and approval is in the audit log.
    let kinds: Vec<String> = service
        .state
        .audit()
        .read(&switchyard::audit::Filter::default(), None)
        .unwrap()
        .iter()
        .map(|r| r.record.kind.to_string())
        .collect();
    assert!(
        kinds.iter().filter(|k| *k == "plugin.held").count() >= 2,
        "{kinds:?}"
    );
    assert!(
        kinds.iter().filter(|k| *k == "plugin.approved").count() >= 2,
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_naming_the_wrong_plugin_pauses_only_itself() {
    let h = Harness::start(2).await.unwrap();
    // A second link, sorted first, whose HRIS connector names the LMS
    // plugin by mistake.
    let mut config = std::fs::read_to_string(&h.config_path).unwrap();
    config.push_str("\n[connectors.hr2]\nplugin = \"moodle\"\n\n[links.aaa-wrong]\nhris = \"hr2\"\nlms = \"lms\"\n");
    std::fs::write(&h.config_path, config).unwrap();
    let line = std::fs::read_to_string(&h.config_path)
        .unwrap()
        .lines()
        .position(|l| l == "[connectors.hr2]")
        .unwrap()
        + 2;
    add_daemon_table(&h, "127.0.0.1:0", "");
    let (daemon, admin) = start_in_process(&h).await;
    let moodle = admin.plugin("moodle").await;
    assert_eq!(
        moodle["status"], "serving",
        "the plugin is not refused: {moodle}"
    );
    let connectors = admin.get("/v1/connectors").await;
    let status = |name: &str| {
        connectors
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(status("lms")["status"], "running", "{connectors}");
    let wrong = status("hr2");
    assert_eq!(wrong["status"], "paused", "{connectors}");
    let reason = wrong["paused_reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!(
            "{}:{line}: link `aaa-wrong`: hris connector `hr2` names plugin `moodle`",
            h.config_path.display()
        )),
        "{reason}"
    );
    // The correctly configured link syncs.
    let link = admin.sync().await;
    assert_eq!(link["activity"]["last_outcome"], "ok", "{link}");
    assert_eq!(h.lms.users().len(), 2);
    daemon.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_listens_while_plugins_compile_and_answers_not_ready() {
    let h = Harness::start(1).await.unwrap();
    let port = free_port();
    add_daemon_table(&h, &format!("127.0.0.1:{port}"), "");
    // Eight distinct files (no compiled code cached for any): the first
    // start compiles them all.
    let moodle = plugins::build("moodle").unwrap();
    for i in 0..8 {
        std::fs::write(
            h.dir.join(format!("plugins.d/extra{i}.wasm")),
            variant_of(&moodle, &format!("extra {i}")),
        )
        .unwrap();
    }
    let mut child = start_binary(&h);
    let admin = Admin::new(format!("127.0.0.1:{port}").parse().unwrap());
    // The first answer comes before the plugins are compiled: 503.
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        let answer = admin
            .client
            .get(format!("{}/v1/ready", admin.base))
            .bearer_auth(TOKEN)
            .send()
            .await;
        if let Ok(response) = answer {
            break response.status().as_u16();
        }
        assert!(Instant::now() < deadline, "the admin API never answered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(first, 503, "not ready while compiling");
    wait_ready(&admin).await;
    let plugins = admin.get("/v1/plugins").await;
    assert_eq!(
        plugins
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["status"] == "serving")
            .count(),
        10,
        "{plugins}"
    );
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_stops_the_start_unless_the_connector_is_optional() {
    let h = Harness::start(1).await.unwrap();
    add_daemon_table(&h, "127.0.0.1:0", "");
    let config = std::fs::read_to_string(&h.config_path).unwrap();
    let key = h.dir.join("bamboohr.key");
    let missing = config.replace(
        &format!("file:{}", key.display()),
        "env:SWITCHYARD_TEST_NEVER_SET",
    );
    assert_ne!(missing, config);
    std::fs::write(&h.config_path, &missing).unwrap();
    let e = match Daemon::start(Config::load(&h.config_path).unwrap()).await {
        Ok(_) => panic!("the daemon started without the HRIS credential"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        e.contains("switchyard.toml:6: connector `hr`")
            && e.contains("SWITCHYARD_TEST_NEVER_SET")
            && e.contains("optional = true"),
        "{e}"
    );
    // Marked optional: the daemon starts, the connector is paused and says why.
    std::fs::write(
        &h.config_path,
        missing.replacen(
            "plugin = \"bamboohr\"\n",
            "plugin = \"bamboohr\"\noptional = true\n",
            1,
        ),
    )
    .unwrap();
    let (daemon, admin) = start_in_process(&h).await;
    let ready = admin.get("/v1/ready").await;
    assert!(
        ready["paused_connectors"]["hr"]
            .as_str()
            .is_some_and(|r| r.contains("SWITCHYARD_TEST_NEVER_SET")),
        "{ready}"
    );
    daemon.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_are_summed_throttled_and_cost_no_audit_record_each() {
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let h = Harness::start(2).await.unwrap();
    let (_, public_port) = add_webhook_daemon_table(
        &h,
        SECRET,
        "max_rejections_per_second = 5\nrejection_summary_every = \"1h\"",
    );
    let (daemon, admin) = start_in_process(&h).await;
    let state = daemon.shared.state.clone();
    let records_before = state
        .audit()
        .read(&switchyard::audit::Filter::default(), None)
        .unwrap()
        .len();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{public_port}/webhooks/lms");
    let forged = |i: usize| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let body = format!("{{\"junk\":{i}}}");
        let headers = switchyard_testkit::lms::LmsSim::sign_webhook(
            "whsec_bm90LXRoZS1yZWFsLXNlY3JldC1hdC1hbGw=",
            &format!("msg_junk_{i}"),
            now,
            body.as_bytes(),
        )
        .unwrap();
        let mut request = client.post(&url).body(body);
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        request
    };
    // 300 forged deliveries from one address: the first burst (50) is
    // refused as forged, then the address is answered 429 without its
    // requests being verified.
    let mut statuses = BTreeMap::<u16, usize>::new();
    let mut retry_after = None;
    let flood = Instant::now();
    for i in 0..300 {
        let response = forged(i).send().await.unwrap();
        if response.status() == 429 {
            retry_after = response.headers().get("retry-after").cloned();
        }
        *statuses.entry(response.status().as_u16()).or_default() += 1;
    }
    let refused = statuses.get(&401).copied().unwrap_or(0);
    let throttled = statuses.get(&429).copied().unwrap_or(0);
    assert_eq!(refused + throttled, 300, "{statuses:?}");
    // The burst, and what refilled at 5/s while the flood lasted.
    let refilled = 5 * (flood.elapsed().as_secs() as usize + 1);
    assert!(
        (50..=50 + refilled).contains(&refused) && throttled > 0,
        "a burst of 50, {refilled} at most refilled: {statuses:?}"
    );
    let wait: u64 = retry_after
        .expect("a 429 says when to retry")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    // Wrong admin tokens from the same address are throttled as well.
    let (status, _) = admin.send("get", "/v1/links", Some("wrong-token")).await;
    assert_eq!(status, 429);

    // Nothing was written per request.
    let records_now = state
        .audit()
        .read(&switchyard::audit::Filter::default(), None)
        .unwrap()
        .len();
    assert_eq!(records_now, records_before, "no audit record per refusal");
    daemon.shutdown().await.unwrap();

    // At shutdown, one summary per source, listener and reason.
    let summaries: Vec<serde_json::Value> = state
        .audit()
        .read(
            &switchyard::audit::Filter {
                kind: Some("requests.rejected".into()),
                ..Default::default()
            },
            None,
        )
        .unwrap()
        .into_iter()
        .map(|e| e.record.detail)
        .collect();
    let count = |listener: &str, reason: &str| {
        summaries
            .iter()
            .filter(|d| {
                d["listener"] == listener && d["reason"] == reason && d["source"] == "127.0.0.1"
            })
            .map(|d| d["count"].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(
        count("public", "bad-signature"),
        refused as u64,
        "{summaries:?}"
    );
    assert_eq!(
        count("public", "throttled"),
        throttled as u64,
        "{summaries:?}"
    );
    assert_eq!(count("admin", "throttled"), 1, "{summaries:?}");
    assert!(summaries.len() <= 4, "{summaries:?}");
    assert_eq!(state.audit().verify().unwrap().broken, None);
}
