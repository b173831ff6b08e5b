//! Benchmarks, each beside a floor measured in the same run.
//!
//! `cargo run --release -p switchyard-testkit --bin bench [-- --employees N]`
//!
//! 1. Plugin call latency: a fresh store, instantiation from `InstancePre`
//!    and one call, through Switchyard's `Connector` (limits, host imports,
//!    record conversion) versus raw wasmtime doing instantiate + call of a
//!    trivial export.
//! 2. Employee listing throughput: every page of an N-employee HRIS through
//!    the BambooHR plugin versus a native reqwest + serde client fetching and
//!    decoding the same pages.
//! 3. A full sync of N employees (provisioning, enrollments) in employees/s
//!    and LMS round trips per employee, with batches (`max_batch = 100`)
//!    and with one operation per call (`max_batch = 1`, the floor of a
//!    plugin that does not batch), and verification of the audit chain.
//! 4. Audit append throughput (hash chain, salted personal payload, one
//!    sled transaction per call as the runtime writes them) versus plain
//!    sled inserts of the same JSON.
//! 5. The identity-matching report (`--matching`): `switchyard match`
//!    (the release binary beside this one) for N employees against N LMS
//!    accounts made by hand (most holding the HRIS id, some only the email,
//!    some nobody's): wall time and the process's peak RSS. Floor: the two
//!    listings alone (every `fetch-employees` page, every `list-accounts`
//!    page) through the same plugins, timed in this process.
//! 6. Workforce size (`--scale`): `switchyard sync` (the release binary
//!    beside this one) from nothing and then with no changes, for 10k, 100k
//!    and 1M employees: wall time and the process's peak RSS.
//! 7. Webhook ingestion (`--webhooks`): signed Standard Webhooks deliveries
//!    of real completion bodies to a `switchyard run` process (the release
//!    binary beside this one) at 1, 8 and 32 concurrent senders: accepted/s,
//!    p50 and p99, the daemon's CPU and RSS; then every accepted delivery is
//!    checked to be in the audit log exactly once. Floor: an axum server in
//!    this process that verifies the same signature and makes each delivery
//!    durable with one sled insert and flush.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use switchyard::config::{ConnectorConfig, Limits, Origin};
use switchyard::runtime::Runtime;
use switchyard_testkit::harness::{Harness, LINK, Options};
use switchyard_testkit::plugins;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

#[derive(Parser)]
struct Args {
    /// Employees for the listing and sync benchmarks.
    #[arg(long, default_value_t = 10_000)]
    employees: usize,
    /// Iterations of the call-latency benchmark.
    #[arg(long, default_value_t = 3_000)]
    calls: usize,
    /// Page size for listings.
    #[arg(long, default_value_t = 500)]
    page_size: usize,
    /// Records for the audit append benchmark.
    #[arg(long, default_value_t = 50_000)]
    audit_records: usize,
    /// Run only the full-sync benchmarks (batched, then one operation per call).
    #[arg(long)]
    sync_only: bool,
    /// Run only the plugin-call benchmark.
    #[arg(long)]
    calls_only: bool,
    /// Run only the audit-append benchmark.
    #[arg(long)]
    audit_only: bool,
    /// Run only the webhook ingestion benchmark.
    #[arg(long)]
    webhooks: bool,
    /// Run only the matching-report benchmark (`switchyard match` against
    /// as many LMS accounts as employees).
    #[arg(long)]
    matching: bool,
    /// Run only the workforce-size benchmark: `switchyard sync` from
    /// nothing, then with no changes, for each of `--sizes`, with its
    /// peak RSS.
    #[arg(long)]
    scale: bool,
    /// Workforce sizes of `--scale`, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    sizes: Vec<usize>,
    /// `[store] cache_mib` for `--scale` (default: the host's default).
    #[arg(long)]
    cache_mib: Option<u32>,
    /// Deliveries per concurrency level of the webhook benchmark.
    #[arg(long, default_value_t = 4_000)]
    deliveries: usize,
    /// Then deliver at 32 senders for this many seconds, sampling the
    /// daemon's RSS (0: no soak).
    #[arg(long, default_value_t = 0)]
    soak_secs: u64,
}

struct Floor {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Floor {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

fn stats(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let median = samples[samples.len() / 2];
    let p99 = samples[(samples.len() * 99 / 100).min(samples.len() - 1)];
    (median, p99)
}

async fn call_latency(calls: usize) -> anyhow::Result<()> {
    // Switchyard: the hostile test plugin in `ok` mode returns one employee
    // after reading two config keys through host imports.
    let runtime = Runtime::new()?;
    let plugin = Arc::new(runtime.load_plugin(&plugins::build("hostile")?)?);
    let mut settings = BTreeMap::new();
    settings.insert("mode".to_owned(), "ok".to_owned());
    let mut connector = runtime.connector(
        "bench",
        &ConnectorConfig {
            plugin: "hostile".into(),
            line: 0,
            optional: false,
            settings,
            allow: vec![Origin::parse("https://unused.example").map_err(anyhow::Error::msg)?],
            auth: None,
            credential_origins: None,
            limits: Limits::default(),
        }
        .grants(),
        plugin,
        None,
    );
    // As in production: the calls are observed for metrics and the audit
    // log (a plugin call's HTTP requests and failures are audit records).
    let state_dir = tempfile::tempdir()?;
    let state: Arc<dyn switchyard::store::Store> =
        Arc::new(switchyard::store::SledStore::open(state_dir.path())?);
    connector.set_observer(Arc::new(switchyard::telemetry::Telemetry::with_audit(
        state,
    )));
    for _ in 0..100 {
        connector.fetch_employees(None).await?;
    }
    let mut ours = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        let page = connector.fetch_employees(None).await?;
        ours.push(t.elapsed());
        std::hint::black_box(page);
    }

    // Floors: raw wasmtime, InstancePre + instantiate + call of a trivial
    // export (`hello() -> string`), WASI linked the same way, no limits:
    // with the instance pool Switchyard's engine uses, and with wasmtime's
    // default allocator (a fresh mapping per instance).
    let pooled = raw_floor(calls, Some(switchyard::runtime::instance_pool())).await?;
    let on_demand = raw_floor(calls, None).await?;
    let (om, op) = stats(ours);
    let (pm, pp) = stats(pooled);
    let (fm, fp) = stats(on_demand);
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!("plugin call (fresh store + instantiate + call), {calls} calls");
    println!("  switchyard connector                 median {om:>10.1?}   p99 {op:>10.1?}");
    println!("  floor: raw wasmtime, same pool       median {pm:>10.1?}   p99 {pp:>10.1?}");
    println!("  floor: raw wasmtime, default alloc   median {fm:>10.1?}   p99 {fp:>10.1?}");
    println!(
        "  ratio                                {:.2}x the pooled floor, {:.2}x the default-allocator floor (median)",
        ratio(om, pm),
        ratio(om, fm)
    );
    Ok(())
}

/// `calls` raw instantiate-and-call samples (after 100 to warm up), with
/// `pool` as the engine's instance allocator (`None`: wasmtime's default).
async fn raw_floor(
    calls: usize,
    pool: Option<wasmtime::InstanceAllocationStrategy>,
) -> anyhow::Result<Vec<Duration>> {
    let mut config = wasmtime::Config::new();
    if let Some(pool) = pool {
        config.allocation_strategy(pool);
    }
    let engine = Engine::new(&config)?;
    let mut linker: Linker<Floor> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    let component = Component::from_file(&engine, plugins::build("not-a-connector")?)?;
    let pre = linker.instantiate_pre(&component)?;
    let interface = component
        .get_export_index(None, "example:greeter/greet@1.0.0")
        .ok_or_else(|| anyhow::anyhow!("no greet export"))?;
    let hello = component
        .get_export_index(Some(&interface), "hello")
        .ok_or_else(|| anyhow::anyhow!("no hello export"))?;
    let mut floor = Vec::with_capacity(calls);
    for i in 0..calls + 100 {
        let t = Instant::now();
        let mut store = Store::new(
            &engine,
            Floor {
                ctx: WasiCtx::builder().build(),
                table: ResourceTable::new(),
            },
        );
        let instance = pre.instantiate_async(&mut store).await?;
        let func = instance.get_typed_func::<(), (String,)>(&mut store, &hello)?;
        let (s,) = func.call_async(&mut store, ()).await?;
        std::hint::black_box(s);
        drop(store);
        if i >= 100 {
            floor.push(t.elapsed());
        }
    }
    Ok(floor)
}

/// The native floor's view of a BambooHR dataset page.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Page {
    data: Vec<switchyard_testkit::hris::SimEmployee>,
    pagination: Pagination,
}

#[derive(serde::Deserialize)]
struct Pagination {
    next_page: Option<String>,
}

async fn listing(employees: usize, page_size: usize) -> anyhow::Result<()> {
    let h = Harness::start_with(Options {
        employees,
        page_size,
        ..Options::default()
    })
    .await?;
    let service = h.service()?;
    let hr = &service.connectors["hr"];

    let mut best_ours = Duration::MAX;
    let mut best_floor = Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let mut cursor: Option<String> = None;
        let mut count = 0;
        loop {
            let page = hr.fetch_employees(cursor.as_deref()).await?;
            count += page.employees.len();
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(count, employees);
        best_ours = best_ours.min(t.elapsed());

        let client = reqwest::Client::new();
        let t = Instant::now();
        let mut count = 0;
        let mut page_no = 1;
        loop {
            let page: Page = client
                .post(format!("{}/api/v1/datasets/employee", h.hris.base_url()))
                .query(&[
                    ("page", page_no.to_string()),
                    ("page_size", page_size.to_string()),
                ])
                .basic_auth(h.hris.api_key(), Some("x"))
                .json(&serde_json::json!({ "fields": ["id"] }))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            count += page.data.len();
            if page.pagination.next_page.is_none() {
                break;
            }
            page_no += 1;
        }
        assert_eq!(count, employees);
        best_floor = best_floor.min(t.elapsed());
    }
    let rate = |d: Duration| employees as f64 / d.as_secs_f64();
    println!("employee listing, {employees} employees in pages of {page_size} (best of 3)");
    println!(
        "  switchyard + bamboohr plugin  {best_ours:>10.1?}   {:>9.0} employees/s",
        rate(best_ours)
    );
    println!(
        "  floor: native reqwest + serde {best_floor:>10.1?}   {:>9.0} employees/s",
        rate(best_floor)
    );
    println!(
        "  overhead                      {:.2}x",
        best_ours.as_secs_f64() / best_floor.as_secs_f64()
    );

    drop(service);
    drop(h);
    full_sync(employees, page_size, 100).await?;
    full_sync(employees, page_size, 1).await?;
    Ok(())
}

/// A full sync of `employees` from nothing, the Moodle plugin sending up
/// to `max_batch` items per call (1: one operation per call), then a run
/// with no changes and `verify` of the audit chain both wrote.
async fn full_sync(employees: usize, page_size: usize, max_batch: u32) -> anyhow::Result<()> {
    let h = Harness::start_with(Options {
        employees,
        page_size,
        limits: format!("max_batch = {max_batch}"),
        ..Options::default()
    })
    .await?;
    let service = h.service()?;
    let rate = |d: Duration| employees as f64 / d.as_secs_f64();
    let t = Instant::now();
    let report = service.sync_link(LINK).await?;
    let elapsed = t.elapsed();
    let trips = h.lms.calls().len();
    println!(
        "full sync, {employees} employees (create users, enroll by rules), max_batch = {max_batch}"
    );
    println!(
        "  {elapsed:>10.1?}   {:>9.0} employees/s   ({} users created, {} enrollments, {} dead letters; {trips} LMS round trips, {:.3} per employee)",
        rate(elapsed),
        report.users_created,
        report.enrollments,
        report.dead_lettered,
        trips as f64 / employees as f64
    );
    let t = Instant::now();
    let again = service.sync_link(LINK).await?;
    println!(
        "  second run, no changes: {:>10.1?}, {} writes",
        t.elapsed(),
        again.writes()
    );
    let t = Instant::now();
    let v = service.state.audit().verify()?;
    let elapsed = t.elapsed();
    anyhow::ensure!(v.broken.is_none(), "audit chain broken: {:?}", v.broken);
    println!(
        "  audit chain of both runs: {} records, verified in {elapsed:>10.1?} ({:.0} records/s)",
        v.records,
        v.records as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

/// Appending records the way a sync does (an `http.request` with a
/// personal path per call), one transaction each and in groups of
/// [`GROUP`] (a wave's records, group commit), versus inserting the same
/// JSON into a sled tree with no chain, digest or transaction, one at a
/// time and in batches of [`GROUP`].
fn audit_append(records: usize) -> anyhow::Result<()> {
    use switchyard::audit::{Event, Kind};
    use switchyard::store::{AuditLog as Audit, AuditStore};
    let dir = tempfile::tempdir()?;
    let db = sled::open(dir.path())?;
    let audit = Audit::open(&db)?;
    let event = |i: usize| {
        Event::new(Kind::HttpRequest)
            .link("acme")
            .employee(format!("{}", 100 + i % 10_000))
            .connector("lms")
            .key(format!("{i:032x}"))
            .detail(serde_json::json!({
                "function": "enroll", "method": "POST", "origin": "http://127.0.0.1:8080",
                "query": ["wsfunction", "moodlewsrestformat"], "status": 200,
                "duration_ms": 3, "bytes_out": 120, "bytes_in": 40,
            }))
            .personal(serde_json::json!({ "path": "/webservice/rest/server.php", "error": null }))
    };
    let t = Instant::now();
    for i in 0..records {
        audit.append(event(i))?;
    }
    let ours = t.elapsed();
    // Group commit: the records of a wave (100 items) chained in memory
    // and written in one sled batch.
    let grouped_dir = tempfile::tempdir()?;
    let grouped_log = Audit::open(&sled::open(grouped_dir.path())?)?;
    let t = Instant::now();
    for group in (0..records).collect::<Vec<_>>().chunks(GROUP) {
        grouped_log.append_all(group.iter().map(|&i| event(i)).collect())?;
    }
    let grouped = t.elapsed();
    anyhow::ensure!(
        grouped_log.verify()?.broken.is_none(),
        "grouped chain broken"
    );
    let floor_tree = db.open_tree("floor")?;
    let sample = serde_json::to_vec(&serde_json::json!({
        "seq": 1, "at": "2026-11-28T04:00:00.000Z", "kind": "http.request", "link": "acme",
        "employee": "101", "connector": "lms", "key": format!("{:032x}", 1),
        "detail": { "function": "enroll", "method": "POST", "origin": "http://127.0.0.1:8080",
            "query": ["wsfunction", "moodlewsrestformat"], "status": 200, "duration_ms": 3, "bytes_out": 120, "bytes_in": 40 },
        "personal": "0".repeat(64), "prev": "0".repeat(64),
    }))?;
    let t = Instant::now();
    for i in 0..records as u64 {
        floor_tree.insert(i.to_be_bytes(), sample.as_slice())?;
    }
    let floor = t.elapsed();
    let batch_tree = db.open_tree("floor-batches")?;
    let t = Instant::now();
    for group in (0..records as u64).collect::<Vec<_>>().chunks(GROUP) {
        let mut batch = sled::Batch::default();
        for i in group {
            batch.insert(&i.to_be_bytes()[..], sample.as_slice());
        }
        batch_tree.apply_batch(batch)?;
    }
    let floor_batches = t.elapsed();
    let per = |d: Duration| d / records as u32;
    let ratio = |d: Duration| d.as_secs_f64() / floor.as_secs_f64();
    println!("audit append, {records} records");
    println!(
        "  switchyard, one transaction per record     {ours:>10.1?}   {:>9.1?}/record   {:.2}x",
        per(ours),
        ratio(ours)
    );
    println!(
        "  switchyard, group commit of {GROUP}            {grouped:>10.1?}   {:>9.1?}/record   {:.2}x",
        per(grouped),
        ratio(grouped)
    );
    println!(
        "  floor: plain sled insert per record        {floor:>10.1?}   {:>9.1?}/record",
        per(floor)
    );
    println!(
        "  plain sled inserts in batches of {GROUP}       {floor_batches:>10.1?}   {:>9.1?}/record   {:.2}x",
        per(floor_batches),
        ratio(floor_batches)
    );
    Ok(())
}

/// Records per group commit in the audit benchmark: a wave's batch.
const GROUP: usize = 100;

#[path = "bench/matching.rs"]
mod matching;
#[path = "bench/scale.rs"]
mod scale;
#[path = "bench/webhooks.rs"]
mod webhooks;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if cfg!(debug_assertions) {
        eprintln!("warning: debug build; run with --release for figures worth recording");
    }
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::env::consts::ARCH
    );
    if args.webhooks {
        return webhooks::run(args.deliveries, args.soak_secs).await;
    }
    if args.matching {
        return matching::run(args.employees, args.page_size).await;
    }
    if args.scale {
        return scale::run(&args.sizes, args.page_size, args.cache_mib).await;
    }
    if args.sync_only {
        full_sync(args.employees, args.page_size, 100).await?;
        return full_sync(args.employees, args.page_size, 1).await;
    }
    if args.calls_only {
        return call_latency(args.calls).await;
    }
    if args.audit_only {
        return audit_append(args.audit_records);
    }
    call_latency(args.calls).await?;
    audit_append(args.audit_records)?;
    listing(args.employees, args.page_size).await?;
    Ok(())
}
