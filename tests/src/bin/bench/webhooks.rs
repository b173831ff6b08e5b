//! Webhook ingestion against a real `switchyard run` process, beside a
//! floor measured in the same run.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use switchyard::store::Store as _;
use switchyard_testkit::harness::{Harness, LINK, Options, switchyard_bin};
use switchyard_testkit::lms::LmsSim;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TOKEN: &str = "bench-admin-token-5d1e";
const LEVELS: [usize; 3] = [1, 8, 32];

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// CPU seconds (user + system) and RSS / peak RSS (KiB) of a process.
pub fn usage(pid: u32) -> anyhow::Result<(f64, u64, u64)> {
    let cpu = switchyard_testkit::measure::cpu_time(pid)?;
    let (rss, hwm) = switchyard_testkit::measure::rss_kib(pid)?;
    Ok((cpu.as_secs_f64(), rss, hwm))
}

/// One delivery: a completion body, signed, with a unique id.
struct Delivery {
    id: String,
    body: Arc<Vec<u8>>,
}

/// Send `deliveries` over `senders` concurrent connections; returns the
/// latencies of the accepted ones, the ids accepted, and the wall time.
async fn load(
    url: &str,
    deliveries: Vec<Delivery>,
    senders: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<String>, Duration)> {
    let queue = Arc::new(std::sync::Mutex::new(deliveries));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..senders {
        let queue = queue.clone();
        let url = url.to_owned();
        tasks.spawn(async move {
            let client = reqwest::Client::new();
            let mut latencies = Vec::new();
            let mut accepted = Vec::new();
            loop {
                let next = queue.lock().map_err(|_| anyhow!("poisoned"))?.pop();
                let Some(d) = next else { break };
                let headers = LmsSim::sign_webhook(SECRET, &d.id, unix_now(), &d.body)?;
                let mut request = client.post(&url).body(d.body.to_vec());
                for (name, value) in &headers {
                    request = request.header(name, value);
                }
                let at = Instant::now();
                let response = request.send().await?;
                let status = response.status();
                let text = response.text().await?;
                if status != 200 || !text.contains("\"accepted\"") {
                    bail!("delivery {} answered {status}: {text}", d.id);
                }
                latencies.push(at.elapsed());
                accepted.push(d.id);
            }
            anyhow::Ok((latencies, accepted))
        });
    }
    let mut latencies = Vec::new();
    let mut accepted = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (l, a) = joined??;
        latencies.extend(l);
        accepted.extend(a);
    }
    Ok((latencies, accepted, started.elapsed()))
}

fn deliveries(bodies: &[Arc<Vec<u8>>], tag: &str, n: usize) -> Vec<Delivery> {
    (0..n)
        .map(|i| Delivery {
            id: format!("msg_{tag}_{i}"),
            body: bodies[i % bodies.len()].clone(),
        })
        .collect()
}

/// The floor: verify the same signature, make the delivery durable with
/// one sled insert and a flush, answer 200.
async fn floor_server(dir: PathBuf) -> anyhow::Result<String> {
    use axum::extract::State;
    use axum::http::HeaderMap;
    let db = sled::open(dir)?;
    let key = switchyard::webhook::verify::SigningKey::standard(SECRET).map_err(|e| anyhow!(e))?;
    let state = Arc::new((db, key));
    let app = axum::Router::new()
        .route(
            "/webhooks/lms",
            axum::routing::post(
                |State(state): State<Arc<(sled::Db, switchyard::webhook::verify::SigningKey)>>,
                 headers: HeaderMap,
                 body: axum::body::Bytes| async move {
                    let get = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
                    let (id, ts) = (get("webhook-id"), get("webhook-timestamp"));
                    let ts: i64 = ts.parse().unwrap_or(0);
                    let expected =
                        switchyard::webhook::verify::sign_standard(&state.1, id, ts, &body);
                    if expected != get("webhook-signature") {
                        return (
                            axum::http::StatusCode::UNAUTHORIZED,
                            "bad-signature".to_owned(),
                        );
                    }
                    // A synchronous flush on the blocking pool (sled's own
                    // `flush_async` deadlocks its small thread pool when
                    // dozens wait at once).
                    let db = state.0.clone();
                    let id = id.to_owned();
                    let durable = tokio::task::spawn_blocking(move || {
                        db.insert(id.as_bytes(), &body[..])?;
                        db.flush()
                    })
                    .await;
                    if !matches!(durable, Ok(Ok(_))) {
                        return (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "unavailable".to_owned(),
                        );
                    }
                    (
                        axum::http::StatusCode::OK,
                        "{\"verdict\":\"accepted\"}".to_owned(),
                    )
                },
            ),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/webhooks/lms", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

pub async fn run(per_level: usize, soak_secs: u64) -> anyhow::Result<()> {
    let h = Harness::start_with(Options {
        employees: 200,
        page_size: 100,
        ..Options::default()
    })
    .await?;
    let (admin_port, public_port) = (free_port()?, free_port()?);
    let token_file = h.dir.join("admin.token");
    let secret_file = h.dir.join("lms-webhook.secret");
    std::fs::write(&token_file, TOKEN)?;
    std::fs::write(&secret_file, SECRET)?;
    let mut config = std::fs::read_to_string(&h.config_path)?;
    config.push_str(&format!(
        "\n[daemon]\nadmin_listen = \"127.0.0.1:{admin_port}\"\npublic_listen = \"127.0.0.1:{public_port}\"\nadmin_token = {{ secret = \"file:{}\" }}\n\n[connectors.lms.webhook]\nscheme = \"standard\"\nsecret = {{ secret = \"file:{}\" }}\n",
        token_file.display(),
        secret_file.display()
    ));
    std::fs::write(&h.config_path, config)?;
    let bin = switchyard_bin();
    if !bin.is_file() {
        bail!(
            "{} is missing: `cargo build --release -p switchyard` first",
            bin.display()
        );
    }
    let mut daemon = std::process::Command::new(&bin)
        .args(["run", "--config"])
        .arg(&h.config_path)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("failed to start {}", bin.display()))?;
    let pid = daemon.id();
    let admin = format!("http://127.0.0.1:{admin_port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ready = client
            .get(format!("{admin}/v1/ready"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ready {
            break;
        }
        if Instant::now() > deadline {
            let _ = daemon.kill();
            bail!("the daemon did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The first sync creates the accounts the completions are about.
    let link = format!("{admin}/v1/links/{LINK}");
    client
        .post(format!("{link}/sync"))
        .bearer_auth(TOKEN)
        .send()
        .await?;
    loop {
        let body: serde_json::Value = client
            .get(&link)
            .bearer_auth(TOKEN)
            .send()
            .await?
            .json()
            .await?;
        if body["activity"]["runs"].as_u64().unwrap_or(0) >= 1 && body["running"] == false {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut bodies = Vec::new();
    for user in h.lms.users() {
        let id = h
            .lms
            .mark_completed(&user.idnumber, "CODE-OF-CONDUCT", Some(90.0), Some(true))?;
        bodies.push(Arc::new(h.lms.completion_webhook_body(id)?));
    }
    if bodies.is_empty() {
        bail!("the first sync created no LMS accounts");
    }
    println!(
        "webhook ingestion: {per_level} signed deliveries per level, {} distinct completion bodies of about {} bytes",
        bodies.len(),
        bodies[0].len()
    );
    let url = format!("http://127.0.0.1:{public_port}/webhooks/lms");
    let floor_dir = tempfile::tempdir()?;
    let floor_url = floor_server(floor_dir.path().join("floor")).await?;
    let mut all_accepted = Vec::new();
    println!(
        "  {:<8} {:>12} {:>9} {:>9} {:>10} {:>9} {:>12} {:>9} {:>9}",
        "senders",
        "accepted/s",
        "p50",
        "p99",
        "daemon CPU",
        "RSS",
        "floor/s",
        "floor p50",
        "floor p99"
    );
    for senders in LEVELS {
        let (cpu_before, _, _) = usage(pid)?;
        let (latencies, accepted, wall) = load(
            &url,
            deliveries(&bodies, &format!("c{senders}"), per_level),
            senders,
        )
        .await?;
        let (cpu_after, rss, _) = usage(pid)?;
        let (p50, p99) = super::stats(latencies);
        let (floor_latencies, _, floor_wall) = load(
            &floor_url,
            deliveries(&bodies, &format!("f{senders}"), per_level),
            senders,
        )
        .await?;
        let (fp50, fp99) = super::stats(floor_latencies);
        println!(
            "  {senders:<8} {:>12.0} {:>9.1?} {:>9.1?} {:>9.0}% {:>6} MiB {:>12.0} {:>9.1?} {:>9.1?}",
            accepted.len() as f64 / wall.as_secs_f64(),
            p50,
            p99,
            100.0 * (cpu_after - cpu_before) / wall.as_secs_f64(),
            rss / 1024,
            per_level as f64 / floor_wall.as_secs_f64(),
            fp50,
            fp99,
        );
        all_accepted.extend(accepted);
    }
    if soak_secs > 0 {
        println!("  soak: 32 senders for {soak_secs} s, daemon RSS every 30 s (MiB)");
        let started = Instant::now();
        let mut round = 0;
        let mut samples = Vec::new();
        while started.elapsed() < Duration::from_secs(soak_secs) {
            let (_, accepted, _) =
                load(&url, deliveries(&bodies, &format!("s{round}"), 2_000), 32).await?;
            all_accepted.extend(accepted);
            round += 1;
            if samples.len() as u64 <= started.elapsed().as_secs() / 30 {
                let (_, rss, _) = usage(pid)?;
                samples.push(rss / 1024);
            }
        }
        println!("  {samples:?}");
    }
    let (_, _, peak) = usage(pid)?;
    // Stop the daemon, then check every accepted delivery is in the audit
    // log exactly once.
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    let status = daemon.wait()?;
    if !status.success() {
        bail!("the daemon exited with {status}");
    }
    let state = switchyard::store::SledStore::open(&h.dir.join("state"))?;
    let records = state.audit().read(
        &switchyard::audit::Filter {
            kind: Some("webhook.accepted".into()),
            ..Default::default()
        },
        None,
    )?;
    let recorded: Vec<String> = records
        .iter()
        .filter_map(|r| r.record.detail["delivery"].as_str().map(str::to_owned))
        .collect();
    let unique: BTreeSet<&String> = recorded.iter().collect();
    let expected: BTreeSet<&String> = all_accepted.iter().collect();
    if recorded.len() != all_accepted.len() || unique != expected {
        bail!(
            "{} deliveries accepted, {} webhook.accepted records ({} distinct)",
            all_accepted.len(),
            recorded.len(),
            unique.len()
        );
    }
    println!(
        "  every one of the {} accepted deliveries is in the audit log exactly once; daemon peak RSS {} MiB",
        all_accepted.len(),
        peak / 1024
    );
    Ok(())
}
