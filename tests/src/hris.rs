//! In-memory HRIS simulator shaped like the [BambooHR REST API].
//!
//! Long on purpose: one file per simulated vendor, so that everything the
//! simulator does the BambooHR way (auth, paging, errors, throttling, fault
//! injection, the call log) can be checked against the vendor docs in one place.
//!
//! [`HrisSim::start`] binds `127.0.0.1:0`, serves the routes below from a tokio task and
//! exposes the simulated company's state to tests (read it, mutate it, inject faults,
//! inspect the request log). Dropping the [`HrisSim`] (or calling [`HrisSim::shutdown`])
//! stops the server.
//!
//! [BambooHR REST API]: https://documentation.bamboohr.com/reference
//!
//! # Mimicked API
//!
//! All routes live under `/api/v1` and require HTTP Basic auth whose user name is the API
//! key (the password is ignored; BambooHR clients send `x`). A missing or wrong key gets
//! `401` with an empty body and `WWW-Authenticate: Basic realm="BambooHR"`.
//!
//! | Route | BambooHR counterpart |
//! |---|---|
//! | `POST /api/v1/datasets/employee?page=N&page_size=M` | Datasets API (paged employee dataset) |
//! | `GET /api/v1/employees/changed?since=<ISO 8601>` | "Get a list of updated employee IDs" |
//! | `GET /api/v1/employees/{id}` | "Get employee" |
//! | `GET /api/v1/training/type` | "List training types" |
//! | `GET /api/v1/training/record/employee/{employeeId}?type=T` | "List employee trainings" |
//! | `POST /api/v1/training/record/employee/{employeeId}` | "Add new employee training record" |
//! | `PUT /api/v1/training/record/{recordId}` | "Update employee training record" |
//! | `GET /api/v1/employees/directory` | "Get employee directory" (current employees) |
//! | `POST /api/v1/reports/custom?format=JSON` | "Request a custom report" (`fields`, `filters.lastChanged`) |
//!
//! # Control API
//!
//! Not BambooHR's: how a test or an integrator changes the simulated company
//! over HTTP, with no Rust code. Under `/_sim/`, with no credentials, never
//! faulted and not in the request log. Bodies and answers are JSON with the
//! API's camelCase employee fields.
//!
//! | Route | Does |
//! |---|---|
//! | `GET /_sim/state` | every employee, training type and training record |
//! | `POST /_sim/employees` | hires: any employee fields; `id` defaults to the next free one, `status` to `Active`, `hireDate` to today |
//! | `PATCH /_sim/employees/{id}` | changes the fields given (`department`, `jobTitle`, `workEmail` ...) |
//! | `POST /_sim/employees/{id}/terminate` | `Inactive`/`Terminated` as of `{"date": "yyyy-mm-dd"}` (default today) |
//! | `POST /_sim/employees/{id}/rehire` | `Active`/`Full-Time`, hired again as of `date` (default today) |
//! | `DELETE /_sim/employees/{id}` | removes the employee (reported as `Deleted` by `/employees/changed`) |
//! | `POST /_sim/training-records` | adds a training record by hand: `{"employeeId", "type", "completed"}` |
//! | `GET /_sim/requests` | the request log |
//! | `POST`, `GET`, `DELETE /_sim/faults` | scripted faults ([`crate::control::FaultRule`]) |
//!
//! Every change advances the logical clock, as the Rust API's do.
//!
//! # Seed data
//!
//! Deterministic, derived from the index `i` only: ids `"101"`, `"102"`, ...; names from
//! fixed lists (one last name is `O'Brien`; e-mails keep only ASCII alphanumerics, e.g.
//! `kira.obrien.111@acme.example`); departments, job titles and locations cycle; employees
//! with `i % 10 == 7` are `Inactive`/`Terminated` with a termination date, `i % 10 == 9`
//! are on `Leave of Absence`, `i % 10 == 4` are `Part-Time`, the rest `Full-Time`; `"101"`
//! has no supervisor, everyone else reports to the first employee of their department
//! (or to `"101"`).
//!
//! # Deviations from the real API
//!
//! * Routes are served at `/api/v1/...` on the simulator's own origin instead of
//!   `https://api.bamboohr.com/api/gateway.php/{company}/v1/...`; the seed's `company` only
//!   shows up in the generated work e-mail domains.
//! * The datasets endpoint ignores the requested `fields`, filters and sorting and always
//!   returns every [`SimEmployee`] field, ordered by numeric id. `page_size` above 1000 is
//!   clamped to 1000.
//! * Time is a logical clock, not the wall clock: seeded employees were last changed at
//!   `2026-01-01T00:00:00Z`, the clock starts a minute later, and every mutation made through the [`HrisSim`] API advances the
//!   clock by one second, so `/employees/changed` answers are deterministic. Every
//!   response's `Date` header is that clock's time, as a real server's is its own.
//! * `since` accepts any RFC 3339 timestamp (offsets and fractions included; a `+` decoded
//!   to a space by form-encoding is tolerated) and is compared to `lastChanged` as an
//!   instant.
//! * Training ids (types, records) are JSON numbers and training records start at id 1001.
//!   A `PUT` needs `completed` and `type` like a `POST`; other fields that are absent keep
//!   their value, present ones (including `null`) replace it.
//! * Handler errors (400/404) carry a JSON `{"error": "..."}` body in addition to BambooHR's
//!   `X-BambooHR-Error-Message` header.
//! * Fault injection ([`HrisSim::fail_next`]) applies to every request, before auth.
//! * The directory ignores the company's privacy settings and lists every
//!   `Active` employee with the fields below; `photoUrl` is always null.
//! * Custom reports take `format=JSON` only; a field the simulator does not
//!   know comes back as `null`, and `filters` other than `lastChanged` are
//!   refused with 400.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::control::{self, CONTROL_PREFIX, Faults, control_error};

/// Unix time of `2026-01-01T00:00:00Z`, the origin of the logical clock.
/// Seeded employees were last changed then; the clock starts
/// [`SEED_AGE_SECS`] later.
const CLOCK_EPOCH: i64 = 1_767_225_600;

/// How long before the simulator starts its seeded records were changed.
const SEED_AGE_SECS: i64 = 60;
/// Default and maximum `page_size` of the datasets endpoint.
const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;
/// First id handed out to training records.
const FIRST_RECORD_ID: u32 = 1001;

const FIRST_NAMES: [&str; 13] = [
    "Alice", "Bruno", "Chloe", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ines", "Jonas",
    "Kira", "Liam", "Maya",
];
const LAST_NAMES: [&str; 11] = [
    "Becker", "Costa", "Dubois", "Evans", "Fischer", "Garcia", "Hansen", "Ito", "Jensen",
    "Kowalski", "O'Brien",
];
const DEPARTMENTS: [&str; 5] = ["Warehouse", "Operations", "Sales", "Engineering", "Finance"];
const JOB_TITLES: [[&str; 2]; 5] = [
    ["Forklift Operator", "Picker"],
    ["Operations Analyst", "Shift Supervisor"],
    ["Account Executive", "Sales Manager"],
    ["Software Engineer", "Site Reliability Engineer"],
    ["Accountant", "Financial Controller"],
];
const LOCATIONS: [&str; 3] = ["Berlin", "Austin", "Leeds"];

/// What a fresh [`HrisSim`] contains.
#[derive(Clone, Debug)]
pub struct HrisSeed {
    /// Number of generated employees (ids `"101"`, `"102"`, ...).
    pub employees: usize,
    /// Training type names; they get ids 1, 2, ... in this order.
    pub training_types: Vec<String>,
    /// API key accepted as the HTTP Basic user name.
    pub api_key: String,
    /// Company (sub)domain; used for the generated `workEmail` domain.
    pub company: String,
}

impl Default for HrisSeed {
    fn default() -> Self {
        Self {
            employees: 20,
            training_types: vec![
                "SAFETY-2026".to_owned(),
                "CODE-OF-CONDUCT".to_owned(),
                "FORKLIFT-CERT".to_owned(),
            ],
            api_key: "test-bamboo-key".to_owned(),
            company: "acme".to_owned(),
        }
    }
}

/// An employee as the simulator stores it and as the API serializes it (camelCase keys).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimEmployee {
    /// BambooHR employee id (numeric string).
    pub id: String,
    /// Employee number shown in BambooHR (`E{id}` for seeded employees).
    pub employee_number: Option<String>,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Work e-mail address.
    pub work_email: Option<String>,
    /// `"Active"` or `"Inactive"`.
    pub status: String,
    /// `"Full-Time"`, `"Part-Time"`, `"Leave of Absence"` or `"Terminated"`.
    pub employment_history_status: Option<String>,
    /// Department name.
    pub department: Option<String>,
    /// Job title.
    pub job_title: Option<String>,
    /// Office location.
    pub location: Option<String>,
    /// Id of the supervisor (BambooHR's `supervisorEId`).
    #[serde(rename = "supervisorEId")]
    pub supervisor_eid: Option<String>,
    /// `yyyy-mm-dd`.
    pub hire_date: Option<String>,
    /// `yyyy-mm-dd`.
    pub termination_date: Option<String>,
    /// RFC 3339 UTC with a `Z` suffix, e.g. `2026-01-01T00:00:05Z`; owned by the logical clock.
    pub last_changed: String,
}

/// A training record (BambooHR "employee training").
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrainingRecord {
    /// Record id (from 1001).
    pub id: u32,
    /// Owning employee id.
    pub employee_id: String,
    /// Training type id (see `/training/type`).
    pub type_id: u32,
    /// Completion date, `yyyy-mm-dd`.
    pub completed: String,
    /// Free-text notes.
    pub notes: Option<String>,
    /// Hours spent.
    pub hours: Option<f64>,
    /// Credits earned.
    pub credits: Option<f64>,
    /// Instructor name.
    pub instructor: Option<String>,
}

/// One request the simulator answered.
#[derive(Clone, Debug)]
pub struct RequestLogEntry {
    /// HTTP method, e.g. `"POST"`.
    pub method: String,
    /// Request path without the query string.
    pub path: String,
    /// HTTP status code of the response.
    pub status: u16,
}

/// A running BambooHR-shaped server. Stops when dropped.
pub struct HrisSim {
    addr: SocketAddr,
    state: Shared,
    faults: Arc<Faults>,
    shutdown_tx: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

type Shared = Arc<Mutex<HrisState>>;

fn lock(state: &Shared) -> MutexGuard<'_, HrisState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl HrisSim {
    /// Seeds the state, binds `127.0.0.1:0` and starts serving on a tokio task.
    pub async fn start(seed: HrisSeed) -> anyhow::Result<HrisSim> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the HRIS simulator to 127.0.0.1:0")?;
        let addr = listener
            .local_addr()
            .context("reading the HRIS simulator address")?;
        let state: Shared = Arc::new(Mutex::new(HrisState::seeded(
            &seed,
            format!("http://{addr}"),
        )));
        let faults = Arc::new(Faults::default());
        let app = router(state.clone()).merge(control::fault_routes(faults.clone()));
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let task = control::serve(listener, app, faults.clone(), shutdown_rx);
        tracing::debug!(%addr, "HRIS simulator listening");
        Ok(HrisSim {
            addr,
            state,
            faults,
            shutdown_tx: Some(shutdown_tx),
            task,
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The API key the server accepts (HTTP Basic user name).
    pub fn api_key(&self) -> String {
        lock(&self.state).api_key.clone()
    }

    /// Snapshot of all current (not removed) employees, ordered by numeric id.
    pub fn employees(&self) -> Vec<SimEmployee> {
        lock(&self.state).sorted_employees()
    }

    /// The current employee with this id, if any.
    pub fn employee(&self, id: &str) -> Option<SimEmployee> {
        lock(&self.state).employees.get(id).cloned()
    }

    /// Inserts or replaces an employee. `lastChanged` is set from the logical clock; a
    /// previously unknown id is reported as `"Inserted"` by `/employees/changed`.
    pub fn upsert_employee(&self, e: SimEmployee) {
        lock(&self.state).upsert(e);
    }

    /// Mutates an existing employee and bumps its `lastChanged`. The id cannot be changed
    /// (it is restored after `f`). Unknown ids are ignored (`f` is not called).
    pub fn update_employee(&self, id: &str, f: impl FnOnce(&mut SimEmployee)) {
        lock(&self.state).update(id, f);
    }

    /// Mutates an employee without bumping `lastChanged`: a change the
    /// vendor's change feed never reports, as when an integration missed
    /// it. Only a full listing shows it. Unknown ids are ignored.
    pub fn update_employee_unseen(&self, id: &str, f: impl FnOnce(&mut SimEmployee)) {
        let mut s = lock(&self.state);
        if let Some(e) = s.employees.get_mut(id) {
            let last_changed = e.last_changed.clone();
            f(e);
            e.id = id.to_owned();
            e.last_changed = last_changed;
        }
    }

    /// Adds a training record by hand, as an HR administrator would (or a
    /// client that wrote one twice). Returns its id; `None` for an unknown
    /// training type.
    pub fn add_training_record(
        &self,
        employee_id: &str,
        type_name: &str,
        completed: &str,
    ) -> Option<u32> {
        lock(&self.state).add_record_by_hand(employee_id, type_name, completed)
    }

    /// Removes an employee; `/employees/changed` then reports it as `"Deleted"`.
    /// Unknown ids are ignored. Its training records are kept.
    pub fn remove_employee(&self, id: &str) {
        lock(&self.state).remove(id);
    }

    /// `(id, name)` of every training type, ordered by id.
    pub fn training_types(&self) -> Vec<(u32, String)> {
        lock(&self.state).training_types.clone()
    }

    /// All training records, ordered by record id.
    pub fn training_records(&self) -> Vec<TrainingRecord> {
        lock(&self.state).records.values().cloned().collect()
    }

    /// The next `n` requests (any route, checked before auth) get `503 Service Unavailable`
    /// with `Retry-After: retry_after_secs`. Replaces any pending count.
    pub fn fail_next(&self, n: usize, retry_after_secs: u32) {
        let mut s = lock(&self.state);
        s.fail_remaining = n;
        s.retry_after_secs = retry_after_secs;
    }

    /// Delays every response by `d` (`Duration::ZERO` turns the delay off).
    pub fn set_latency(&self, d: Duration) {
        lock(&self.state).latency = d;
    }

    /// The scripted faults of the control API (`/_sim/faults`).
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Every answered request since start or the last [`reset_request_log`](Self::reset_request_log).
    pub fn requests(&self) -> Vec<RequestLogEntry> {
        lock(&self.state).log.clone()
    }

    /// Number of `POST`/`PUT` requests under `/api/v1/training/record` that returned 2xx.
    pub fn write_count(&self) -> usize {
        lock(&self.state)
            .log
            .iter()
            .filter(|r| {
                (r.method == "POST" || r.method == "PUT")
                    && r.path.starts_with("/api/v1/training/record")
                    && (200..300).contains(&r.status)
            })
            .count()
    }

    /// Clears the request log (and with it [`write_count`](Self::write_count)).
    pub fn reset_request_log(&self) {
        lock(&self.state).log.clear();
    }

    /// Stops the server (same as dropping the handle).
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for HrisSim {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(());
        }
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------

struct HrisState {
    api_key: String,
    base_url: String,
    employees: HashMap<String, SimEmployee>,
    /// The ids of `employees` in listing order (numeric), so that a page
    /// costs its size, not a sort of everyone.
    order: BTreeSet<(u64, String)>,
    /// Ids created through `upsert_employee` (reported as "Inserted").
    inserted: HashSet<String>,
    /// Removed employees: id -> lastChanged of the removal.
    tombstones: HashMap<String, String>,
    /// Seconds elapsed on the logical clock since `CLOCK_EPOCH`.
    clock: i64,
    training_types: Vec<(u32, String)>,
    records: BTreeMap<u32, TrainingRecord>,
    next_record_id: u32,
    fail_remaining: usize,
    retry_after_secs: u32,
    latency: Duration,
    log: Vec<RequestLogEntry>,
}

impl HrisState {
    fn seeded(seed: &HrisSeed, base_url: String) -> Self {
        let domain: String = seed
            .company
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase();
        let employees: HashMap<String, SimEmployee> = (0..seed.employees)
            .map(|i| {
                let e = seed_employee(i, &domain);
                (e.id.clone(), e)
            })
            .collect();
        let order = employees.keys().map(|id| order_key(id)).collect();
        let training_types = seed
            .training_types
            .iter()
            .enumerate()
            .map(|(i, name)| (u32::try_from(i + 1).unwrap_or(u32::MAX), name.clone()))
            .collect();
        Self {
            api_key: seed.api_key.clone(),
            base_url,
            employees,
            order,
            inserted: HashSet::new(),
            tombstones: HashMap::new(),
            // A minute after the seeded records were last changed: a listing
            // at the start is not in the same second as every seed.
            clock: SEED_AGE_SECS,
            training_types,
            records: BTreeMap::new(),
            next_record_id: FIRST_RECORD_ID,
            fail_remaining: 0,
            retry_after_secs: 0,
            latency: Duration::ZERO,
            log: Vec::new(),
        }
    }

    /// Advances the logical clock by one second and returns the new time.
    fn tick(&mut self) -> String {
        self.clock += 1;
        self.now()
    }

    fn now(&self) -> String {
        format_rfc3339(CLOCK_EPOCH + self.clock)
    }

    fn sorted_employees(&self) -> Vec<SimEmployee> {
        self.page(0, usize::MAX)
    }

    /// `take` employees in listing order after the first `skip`.
    fn page(&self, skip: usize, take: usize) -> Vec<SimEmployee> {
        self.order
            .iter()
            .skip(skip)
            .take(take)
            .filter_map(|(_, id)| self.employees.get(id).cloned())
            .collect()
    }

    fn has_type(&self, type_id: u32) -> bool {
        self.training_types.iter().any(|(id, _)| *id == type_id)
    }

    /// Today by the logical clock, `yyyy-mm-dd`.
    fn today(&self) -> String {
        self.now()[..10].to_owned()
    }

    fn upsert(&mut self, mut e: SimEmployee) {
        e.last_changed = self.tick();
        if !self.employees.contains_key(&e.id) {
            self.inserted.insert(e.id.clone());
        }
        self.tombstones.remove(&e.id);
        self.order.insert(order_key(&e.id));
        self.employees.insert(e.id.clone(), e);
    }

    /// Applies `f` to an employee and bumps its `lastChanged`; false for an unknown id.
    fn update(&mut self, id: &str, f: impl FnOnce(&mut SimEmployee)) -> bool {
        if !self.employees.contains_key(id) {
            return false;
        }
        let ts = self.tick();
        if let Some(e) = self.employees.get_mut(id) {
            f(e);
            e.id = id.to_owned();
            e.last_changed = ts;
        }
        true
    }

    fn remove(&mut self, id: &str) -> bool {
        if self.employees.remove(id).is_none() {
            return false;
        }
        self.order.remove(&order_key(id));
        let ts = self.tick();
        self.tombstones.insert(id.to_owned(), ts);
        true
    }

    fn add_record_by_hand(
        &mut self,
        employee_id: &str,
        type_name: &str,
        completed: &str,
    ) -> Option<u32> {
        let type_id = self.training_types.iter().find(|(_, n)| n == type_name)?.0;
        let id = self.next_record_id;
        self.next_record_id += 1;
        self.records.insert(
            id,
            TrainingRecord {
                id,
                employee_id: employee_id.to_owned(),
                type_id,
                completed: completed.to_owned(),
                notes: Some("entered by hand".into()),
                hours: None,
                credits: None,
                instructor: None,
            },
        );
        Some(id)
    }

    /// The next numeric id no employee, removed or not, has had.
    fn next_employee_id(&self) -> String {
        let highest = self
            .employees
            .keys()
            .chain(self.tombstones.keys())
            .filter_map(|id| id.parse::<u64>().ok())
            .max()
            .unwrap_or(100);
        (highest + 1).to_string()
    }
}

/// Sort key: numeric ids first, by value; anything else after, by string.
/// Listing order: numeric ids by value, anything else after them.
fn order_key(id: &str) -> (u64, String) {
    (id.parse::<u64>().unwrap_or(u64::MAX), id.to_owned())
}

/// Deterministic seed employee number `i` (0-based).
fn seed_employee(i: usize, domain: &str) -> SimEmployee {
    let id = (101 + i).to_string();
    let first = FIRST_NAMES[i % FIRST_NAMES.len()];
    let last = LAST_NAMES[i % LAST_NAMES.len()];
    let dept = i % DEPARTMENTS.len();
    let local = |s: &str| -> String {
        s.chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase()
    };
    let (status, history, termination) = match i % 10 {
        7 => (
            "Inactive",
            "Terminated",
            Some(format!("2025-12-{:02}", 29 + (i / 10) % 3)),
        ),
        9 => ("Active", "Leave of Absence", None),
        4 => ("Active", "Part-Time", None),
        _ => ("Active", "Full-Time", None),
    };
    let supervisor = match i {
        0 => None,
        1..=4 => Some("101".to_owned()),
        _ => Some((101 + i % DEPARTMENTS.len()).to_string()),
    };
    SimEmployee {
        employee_number: Some(format!("E{id}")),
        first_name: first.to_owned(),
        last_name: last.to_owned(),
        work_email: Some(format!(
            "{}.{}.{id}@{domain}.example",
            local(first),
            local(last)
        )),
        status: status.to_owned(),
        employment_history_status: Some(history.to_owned()),
        department: Some(DEPARTMENTS[dept].to_owned()),
        job_title: Some(JOB_TITLES[dept][(i / DEPARTMENTS.len()) % 2].to_owned()),
        location: Some(LOCATIONS[i % LOCATIONS.len()].to_owned()),
        supervisor_eid: supervisor,
        hire_date: Some(format!(
            "{}-{:02}-{:02}",
            2020 + i % 6,
            1 + (i * 7) % 12,
            1 + (i * 11) % 28
        )),
        termination_date: termination,
        last_changed: format_rfc3339(CLOCK_EPOCH),
        id,
    }
}

// ---------------------------------------------------------------------------------------
// HTTP layer
// ---------------------------------------------------------------------------------------

fn router(state: Shared) -> Router {
    Router::new()
        .route("/api/v1/datasets/employee", post(dataset_employee))
        .route("/api/v1/employees/changed", get(employees_changed))
        .route("/api/v1/employees/{id}", get(get_employee))
        .route("/api/v1/training/type", get(training_types))
        .route(
            "/api/v1/training/record/employee/{employee_id}",
            get(list_records).post(create_record),
        )
        .route("/api/v1/training/record/{record_id}", put(update_record))
        .route("/api/v1/employees/directory", get(directory))
        .route("/api/v1/reports/custom", post(custom_report))
        .route("/_sim/state", get(control_state))
        .route("/_sim/employees", post(control_hire))
        .route(
            "/_sim/employees/{id}",
            axum::routing::patch(control_change).delete(control_remove),
        )
        .route("/_sim/employees/{id}/terminate", post(control_terminate))
        .route("/_sim/employees/{id}/rehire", post(control_rehire))
        .route("/_sim/training-records", post(control_add_record))
        .route("/_sim/requests", get(control_requests))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(middleware::from_fn_with_state(state.clone(), gate))
        .with_state(state)
}

/// Runs around every request: latency, fault injection, auth, request log.
async fn gate(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    if path.starts_with(CONTROL_PREFIX) {
        return next.run(req).await;
    }
    let (latency, fault, authorized) = {
        let mut s = lock(&state);
        let fault = if s.fail_remaining > 0 {
            s.fail_remaining -= 1;
            Some(s.retry_after_secs)
        } else {
            None
        };
        (s.latency, fault, basic_auth_ok(req.headers(), &s.api_key))
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let needs_auth = path == "/api/v1" || path.starts_with("/api/v1/");
    let response = if let Some(secs) = fault {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, secs.to_string())],
            "Service Unavailable",
        )
            .into_response()
    } else if needs_auth && !authorized {
        (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"BambooHR\""),
            )],
        )
            .into_response()
    } else {
        next.run(req).await
    };
    // The Date header by the simulator's own (logical) clock, as a real
    // server's Date is by the clock its lastChanged values come from.
    let mut response = response;
    let now = std::time::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(CLOCK_EPOCH + lock(&state).clock).unwrap_or(0));
    if let Ok(date) = HeaderValue::from_str(&httpdate::fmt_http_date(now)) {
        response.headers_mut().insert(header::DATE, date);
    }
    let status = response.status().as_u16();
    tracing::debug!(%method, %path, status, "HRIS simulator request");
    lock(&state).log.push(RequestLogEntry {
        method,
        path,
        status,
    });
    response
}

/// HTTP Basic with user name == API key; the password is not checked.
fn basic_auth_ok(headers: &HeaderMap, api_key: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, encoded)) = value.trim().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let Ok(decoded) = String::from_utf8(decoded) else {
        return false;
    };
    matches!(decoded.split_once(':'), Some((user, _)) if user == api_key)
}

/// A 400/404 style error: JSON `{"error": msg}` plus `X-BambooHR-Error-Message`.
fn api_error(status: StatusCode, msg: impl Into<String>) -> Response {
    let msg = msg.into();
    let mut response = (status, Json(json!({ "error": msg }))).into_response();
    if let Ok(v) = HeaderValue::from_str(&msg) {
        response.headers_mut().insert("x-bamboohr-error-message", v);
    }
    response
}

/// Parses an optional positive integer query parameter (the error is the message for a 400).
fn positive_param(
    query: &HashMap<String, String>,
    name: &str,
    default: usize,
) -> Result<usize, String> {
    match query.get(name) {
        None => Ok(default),
        Some(raw) => match raw.trim().parse::<usize>() {
            Ok(0) | Err(_) => Err(format!("{name} must be a positive integer, got {raw:?}")),
            Ok(v) => Ok(v),
        },
    }
}

/// `POST /api/v1/datasets/employee?page=N&page_size=M`
async fn dataset_employee(
    State(state): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let page = match positive_param(&query, "page", 1) {
        Ok(v) => v,
        Err(msg) => return api_error(StatusCode::BAD_REQUEST, msg),
    };
    let page_size = match positive_param(&query, "page_size", DEFAULT_PAGE_SIZE) {
        Ok(v) => v.min(MAX_PAGE_SIZE),
        Err(msg) => return api_error(StatusCode::BAD_REQUEST, msg),
    };
    if !body.iter().all(u8::is_ascii_whitespace) {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(obj)) => match obj.get("fields") {
                None | Some(Value::Null) => {}
                Some(Value::Array(fields)) if fields.iter().all(Value::is_string) => {}
                Some(_) => {
                    return api_error(
                        StatusCode::BAD_REQUEST,
                        "fields must be an array of field names",
                    );
                }
            },
            Ok(_) => return api_error(StatusCode::BAD_REQUEST, "body must be a JSON object"),
            Err(e) => {
                return api_error(
                    StatusCode::BAD_REQUEST,
                    format!("body is not valid JSON: {e}"),
                );
            }
        }
    }
    let s = lock(&state);
    let total = s.employees.len();
    let total_pages = total.div_ceil(page_size);
    let data = s.page((page - 1).saturating_mul(page_size), page_size);
    let page_url = |p: usize| {
        Value::String(format!(
            "{}/api/v1/datasets/employee?page={p}&page_size={page_size}",
            s.base_url
        ))
    };
    let next_page = if page < total_pages {
        page_url(page + 1)
    } else {
        Value::Null
    };
    let prev_page = if page > 1 {
        page_url(page - 1)
    } else {
        Value::Null
    };
    Json(json!({
        "data": data,
        "pagination": {
            "total_records": total,
            "current_page": page,
            "total_pages": total_pages,
            "page_size": page_size,
            "next_page": next_page,
            "prev_page": prev_page,
        }
    }))
    .into_response()
}

/// `GET /api/v1/employees/changed?since=<RFC3339>`
async fn employees_changed(
    State(state): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(raw) = query.get("since") else {
        return api_error(StatusCode::BAD_REQUEST, "missing required parameter: since");
    };
    // A literal '+' in an unencoded offset arrives as a space.
    let Some(since) = parse_rfc3339(raw).or_else(|| parse_rfc3339(&raw.replace(' ', "+"))) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            format!("since must be an ISO 8601 / RFC 3339 timestamp, got {raw:?}"),
        );
    };
    let s = lock(&state);
    let after = |ts: &str| parse_rfc3339(ts).is_some_and(|t| t > since);
    let mut changed = Map::new();
    for e in s.employees.values().filter(|e| after(&e.last_changed)) {
        let action = if s.inserted.contains(&e.id) {
            "Inserted"
        } else {
            "Updated"
        };
        changed.insert(
            e.id.clone(),
            json!({ "id": e.id, "action": action, "lastChanged": e.last_changed }),
        );
    }
    for (id, ts) in s.tombstones.iter().filter(|(_, ts)| after(ts)) {
        changed.insert(
            id.clone(),
            json!({ "id": id, "action": "Deleted", "lastChanged": ts }),
        );
    }
    Json(json!({ "latest": s.now(), "employees": changed })).into_response()
}

/// `GET /api/v1/employees/{id}`
async fn get_employee(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    match lock(&state).employees.get(&id) {
        Some(e) => Json(e).into_response(),
        None => api_error(StatusCode::NOT_FOUND, format!("employee {id} not found")),
    }
}

/// `GET /api/v1/training/type`
async fn training_types(State(state): State<Shared>) -> Response {
    let s = lock(&state);
    let types: Map<String, Value> = s
        .training_types
        .iter()
        .map(|(id, name)| {
            (
                id.to_string(),
                json!({
                    "id": id,
                    "name": name,
                    "renewable": false,
                    "frequency": null,
                    "category": null,
                    "required": false,
                }),
            )
        })
        .collect();
    Json(Value::Object(types)).into_response()
}

fn record_json(r: &TrainingRecord) -> Value {
    json!({
        "id": r.id,
        "employeeId": r.employee_id,
        "completed": r.completed,
        "cost": null,
        "instructor": r.instructor,
        "credits": r.credits,
        "hours": r.hours,
        "notes": r.notes,
        "type": r.type_id,
    })
}

/// `GET /api/v1/training/record/employee/{employeeId}?type=T`
async fn list_records(
    State(state): State<Shared>,
    Path(employee_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let type_filter = match query.get("type").map(|t| t.trim()) {
        None | Some("") => None,
        Some(t) => match t.parse::<u32>() {
            Ok(v) => Some(v),
            Err(_) => {
                return api_error(
                    StatusCode::BAD_REQUEST,
                    format!("invalid type filter {t:?}"),
                );
            }
        },
    };
    let s = lock(&state);
    if !s.employees.contains_key(&employee_id) {
        return api_error(
            StatusCode::NOT_FOUND,
            format!("employee {employee_id} not found"),
        );
    }
    let records: Map<String, Value> = s
        .records
        .values()
        .filter(|r| r.employee_id == employee_id)
        .filter(|r| type_filter.is_none_or(|t| r.type_id == t))
        .map(|r| (r.id.to_string(), record_json(r)))
        .collect();
    Json(Value::Object(records)).into_response()
}

/// A validated training record body. Optional fields: `None` = absent from the body,
/// `Some(None)` = explicit `null`.
struct RecordInput {
    completed: String,
    type_id: u32,
    notes: Option<Option<String>>,
    instructor: Option<Option<String>>,
    hours: Option<Option<f64>>,
    credits: Option<Option<f64>>,
}

fn parse_record_body(body: &[u8], state: &HrisState) -> Result<RecordInput, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not valid JSON: {e}"))?;
    let Value::Object(obj) = value else {
        return Err("body must be a JSON object".to_owned());
    };
    let completed = match obj.get("completed") {
        Some(Value::String(s)) if is_valid_date(s) => s.clone(),
        Some(other) => return Err(format!("completed must be a yyyy-mm-dd date, got {other}")),
        None => return Err("completed is required".to_owned()),
    };
    let type_id = match obj.get("type") {
        Some(Value::Number(n)) => n.as_u64().and_then(|v| u32::try_from(v).ok()),
        Some(Value::String(s)) => s.trim().parse::<u32>().ok(),
        Some(_) => None,
        None => return Err("type is required".to_owned()),
    }
    .ok_or_else(|| "type must be a training type id".to_owned())?;
    if !state.has_type(type_id) {
        return Err(format!("unknown training type {type_id}"));
    }
    let text = |key: &str| -> Result<Option<Option<String>>, String> {
        match obj.get(key) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
            Some(other) => Err(format!("{key} must be a string, got {other}")),
        }
    };
    let number = |key: &str| -> Result<Option<Option<f64>>, String> {
        match obj.get(key) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::Number(n)) => Ok(Some(n.as_f64())),
            Some(Value::String(s)) if s.trim().parse::<f64>().is_ok_and(f64::is_finite) => {
                Ok(Some(s.trim().parse::<f64>().ok()))
            }
            Some(other) => Err(format!("{key} must be a number, got {other}")),
        }
    };
    Ok(RecordInput {
        completed,
        type_id,
        notes: text("notes")?,
        instructor: text("instructor")?,
        hours: number("hours")?,
        credits: number("credits")?,
    })
}

/// `POST /api/v1/training/record/employee/{employeeId}`
async fn create_record(
    State(state): State<Shared>,
    Path(employee_id): Path<String>,
    body: Bytes,
) -> Response {
    let mut s = lock(&state);
    if !s.employees.contains_key(&employee_id) {
        return api_error(
            StatusCode::NOT_FOUND,
            format!("employee {employee_id} not found"),
        );
    }
    let input = match parse_record_body(&body, &s) {
        Ok(i) => i,
        Err(msg) => return api_error(StatusCode::BAD_REQUEST, msg),
    };
    let id = s.next_record_id;
    s.next_record_id += 1;
    let record = TrainingRecord {
        id,
        employee_id,
        type_id: input.type_id,
        completed: input.completed,
        notes: input.notes.flatten(),
        hours: input.hours.flatten(),
        credits: input.credits.flatten(),
        instructor: input.instructor.flatten(),
    };
    let body = record_json(&record);
    s.records.insert(id, record);
    (StatusCode::CREATED, Json(body)).into_response()
}

/// `PUT /api/v1/training/record/{recordId}`
async fn update_record(
    State(state): State<Shared>,
    Path(record_id): Path<String>,
    body: Bytes,
) -> Response {
    let mut s = lock(&state);
    let Some(id) = record_id
        .parse::<u32>()
        .ok()
        .filter(|id| s.records.contains_key(id))
    else {
        return api_error(
            StatusCode::NOT_FOUND,
            format!("training record {record_id} not found"),
        );
    };
    let input = match parse_record_body(&body, &s) {
        Ok(i) => i,
        Err(msg) => return api_error(StatusCode::BAD_REQUEST, msg),
    };
    let Some(record) = s.records.get_mut(&id) else {
        return api_error(
            StatusCode::NOT_FOUND,
            format!("training record {record_id} not found"),
        );
    };
    record.completed = input.completed;
    record.type_id = input.type_id;
    if let Some(v) = input.notes {
        record.notes = v;
    }
    if let Some(v) = input.instructor {
        record.instructor = v;
    }
    if let Some(v) = input.hours {
        record.hours = v;
    }
    if let Some(v) = input.credits {
        record.credits = v;
    }
    Json(record_json(record)).into_response()
}

// ---------------------------------------------------------------------------------------
// Dates and timestamps (no chrono/time dependency)
// ---------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------
// Directory and custom reports
// ---------------------------------------------------------------------------------------

/// Report fields the simulator knows: `(id, BambooHR type, display name)`.
const REPORT_FIELDS: [(&str, &str, &str); 16] = [
    ("employeeNumber", "text", "Employee #"),
    ("firstName", "text", "First Name"),
    ("lastName", "text", "Last Name"),
    ("displayName", "text", "Display name"),
    ("workEmail", "email", "Work Email"),
    ("status", "status", "Status"),
    ("employmentHistoryStatus", "list", "Employment Status"),
    ("department", "list", "Department"),
    ("jobTitle", "list", "Job Title"),
    ("location", "list", "Location"),
    ("supervisorEId", "int", "Supervisor EID"),
    ("supervisor", "text", "Supervisor"),
    ("hireDate", "date", "Hire Date"),
    ("terminationDate", "date", "Termination Date"),
    ("lastChanged", "timestamp", "Last Changed"),
    ("id", "int", "EEID"),
];

/// One employee as a flat object of report fields (the stored fields plus
/// `displayName` and the supervisor's name).
fn report_row(s: &HrisState, e: &SimEmployee) -> Map<String, Value> {
    let mut row = match serde_json::to_value(e) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    row.insert(
        "displayName".into(),
        Value::String(format!("{} {}", e.first_name, e.last_name)),
    );
    let supervisor = e
        .supervisor_eid
        .as_ref()
        .and_then(|id| s.employees.get(id))
        .map(|m| Value::String(format!("{} {}", m.first_name, m.last_name)))
        .unwrap_or(Value::Null);
    row.insert("supervisor".into(), supervisor);
    row
}

fn field_meta(id: &str) -> Value {
    let (kind, name) = REPORT_FIELDS
        .iter()
        .find(|(f, _, _)| *f == id)
        .map_or(("text", id), |(_, kind, name)| (*kind, *name));
    json!({ "id": id, "type": kind, "name": name })
}

/// `GET /api/v1/employees/directory`: current employees, BambooHR's shape.
async fn directory(State(state): State<Shared>) -> Response {
    const FIELDS: [&str; 11] = [
        "displayName",
        "firstName",
        "lastName",
        "jobTitle",
        "workEmail",
        "department",
        "location",
        "division",
        "supervisor",
        "photoUploaded",
        "photoUrl",
    ];
    let s = lock(&state);
    let employees: Vec<Value> = s
        .sorted_employees()
        .iter()
        .filter(|e| e.status == "Active")
        .map(|e| {
            let row = report_row(&s, e);
            let mut out = Map::new();
            out.insert("id".into(), Value::String(e.id.clone()));
            for field in FIELDS {
                let value = match field {
                    "photoUploaded" => Value::Bool(false),
                    other => row.get(other).cloned().unwrap_or(Value::Null),
                };
                out.insert(field.into(), value);
            }
            Value::Object(out)
        })
        .collect();
    let fields: Vec<Value> = FIELDS.iter().map(|f| field_meta(f)).collect();
    Json(json!({ "fields": fields, "employees": employees })).into_response()
}

/// `POST /api/v1/reports/custom?format=JSON`: the fields asked for, of
/// every employee (or those changed after `filters.lastChanged.value`).
async fn custom_report(
    State(state): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    match query.get("format").map(String::as_str) {
        Some(f) if f.eq_ignore_ascii_case("json") => {}
        other => {
            return api_error(
                StatusCode::BAD_REQUEST,
                format!("format must be JSON (the simulator serves no other), got {other:?}"),
            );
        }
    }
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(&body) else {
        return api_error(StatusCode::BAD_REQUEST, "body must be a JSON object");
    };
    let Some(Value::Array(fields)) = request.get("fields") else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "fields must be an array of field names",
        );
    };
    let Some(fields) = fields
        .iter()
        .map(|f| f.as_str().map(str::to_owned))
        .collect::<Option<Vec<String>>>()
    else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "fields must be an array of field names",
        );
    };
    let mut since = None;
    if let Some(filters) = request.get("filters").filter(|f| !f.is_null()) {
        let Some(filters) = filters.as_object() else {
            return api_error(StatusCode::BAD_REQUEST, "filters must be an object");
        };
        for (name, filter) in filters {
            if name != "lastChanged" {
                return api_error(
                    StatusCode::BAD_REQUEST,
                    format!("filter {name} is not supported (lastChanged is)"),
                );
            }
            let value = filter.get("value").and_then(Value::as_str);
            match value.and_then(parse_rfc3339) {
                Some(t) => since = Some(t),
                None => {
                    return api_error(
                        StatusCode::BAD_REQUEST,
                        "filters.lastChanged.value must be an ISO 8601 timestamp",
                    );
                }
            }
        }
    }
    let s = lock(&state);
    let employees: Vec<Value> = s
        .sorted_employees()
        .iter()
        .filter(|e| since.is_none_or(|t| parse_rfc3339(&e.last_changed).is_some_and(|c| c > t)))
        .map(|e| {
            let row = report_row(&s, e);
            let mut out = Map::new();
            out.insert("id".into(), Value::String(e.id.clone()));
            for field in &fields {
                out.insert(
                    field.clone(),
                    row.get(field).cloned().unwrap_or(Value::Null),
                );
            }
            Value::Object(out)
        })
        .collect();
    let title = request
        .get("title")
        .and_then(Value::as_str)
        .unwrap_or("Report");
    let fields: Vec<Value> = fields.iter().map(|f| field_meta(f)).collect();
    Json(json!({ "title": title, "fields": fields, "employees": employees })).into_response()
}

// ---------------------------------------------------------------------------------------
// Control API
// ---------------------------------------------------------------------------------------

/// Employee fields the control API lets a caller set (`id` only on hire).
const SETTABLE: [&str; 12] = [
    "employeeNumber",
    "firstName",
    "lastName",
    "workEmail",
    "status",
    "employmentHistoryStatus",
    "department",
    "jobTitle",
    "location",
    "supervisorEId",
    "hireDate",
    "terminationDate",
];

/// `employee` with the fields of `changes` applied; an unknown field, a
/// wrong type or a malformed date is an error naming it.
fn apply_fields(employee: &SimEmployee, changes: &Value) -> Result<SimEmployee, String> {
    let Some(changes) = changes.as_object() else {
        return Err("the body must be a JSON object of employee fields".into());
    };
    let Ok(Value::Object(mut current)) = serde_json::to_value(employee) else {
        return Err("the employee does not serialize".into());
    };
    for (field, value) in changes {
        if !SETTABLE.contains(&field.as_str()) {
            return Err(format!(
                "{field} cannot be set (settable: {})",
                SETTABLE.join(", ")
            ));
        }
        if matches!(field.as_str(), "hireDate" | "terminationDate")
            && let Some(date) = value.as_str()
            && !is_valid_date(date)
        {
            return Err(format!("{field} {date:?} is not a date (yyyy-mm-dd)"));
        }
        current.insert(field.clone(), value.clone());
    }
    serde_json::from_value(Value::Object(current)).map_err(|e| format!("bad field value: {e}"))
}

/// A control request's JSON body (`{}` when empty); the error is a 400's message.
fn parse_body(body: &Bytes) -> Result<Value, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))
}

/// The `date` of a terminate or rehire body, today if absent.
fn body_date(s: &HrisState, body: &Value) -> Result<String, String> {
    match body.get("date") {
        None | Some(Value::Null) => Ok(s.today()),
        Some(Value::String(d)) if is_valid_date(d) => Ok(d.clone()),
        Some(other) => Err(format!("date {other} is not a date (yyyy-mm-dd)")),
    }
}

fn unknown_employee(id: &str) -> Response {
    control_error(StatusCode::NOT_FOUND, format!("no employee {id}"))
}

/// `GET /_sim/state`
async fn control_state(State(state): State<Shared>) -> Response {
    let s = lock(&state);
    let types: Vec<Value> = s
        .training_types
        .iter()
        .map(|(id, name)| json!({ "id": id, "name": name }))
        .collect();
    Json(json!({
        "now": s.now(),
        "employees": s.sorted_employees(),
        "trainingTypes": types,
        "trainingRecords": s.records.values().collect::<Vec<_>>(),
    }))
    .into_response()
}

/// `POST /_sim/employees`: a hire.
async fn control_hire(State(state): State<Shared>, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, e),
    };
    let mut s = lock(&state);
    let id = match body.get("id") {
        None | Some(Value::Null) => s.next_employee_id(),
        Some(Value::String(id)) if !id.trim().is_empty() => id.clone(),
        Some(other) => {
            return control_error(
                StatusCode::BAD_REQUEST,
                format!("id {other} is not a string"),
            );
        }
    };
    if s.employees.contains_key(&id) {
        return control_error(
            StatusCode::CONFLICT,
            format!("employee {id} exists (PATCH it, or rehire)"),
        );
    }
    let blank = SimEmployee {
        id: id.clone(),
        employee_number: None,
        first_name: String::new(),
        last_name: String::new(),
        work_email: None,
        status: "Active".into(),
        employment_history_status: Some("Full-Time".into()),
        department: None,
        job_title: None,
        location: None,
        supervisor_eid: None,
        hire_date: Some(s.today()),
        termination_date: None,
        last_changed: String::new(),
    };
    let mut fields = body;
    if let Some(map) = fields.as_object_mut() {
        map.remove("id");
    }
    match apply_fields(&blank, &fields) {
        Ok(employee) => {
            s.upsert(employee);
            let stored = s.employees.get(&id).cloned();
            (StatusCode::CREATED, Json(stored)).into_response()
        }
        Err(e) => control_error(StatusCode::BAD_REQUEST, e),
    }
}

/// Applies `change` (given the request's JSON body) to employee `id` and
/// answers with the result; a body that is not JSON, or the message
/// `change` fails with, is a 400.
fn change_employee(
    state: &Shared,
    id: &str,
    body: &Bytes,
    change: impl FnOnce(&HrisState, &SimEmployee, &Value) -> Result<SimEmployee, String>,
) -> Response {
    let body = match parse_body(body) {
        Ok(b) => b,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, e),
    };
    let mut s = lock(state);
    let Some(current) = s.employees.get(id).cloned() else {
        return unknown_employee(id);
    };
    let changed = match change(&s, &current, &body) {
        Ok(e) => e,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, e),
    };
    s.update(id, |e| *e = changed);
    Json(s.employees.get(id).cloned()).into_response()
}

/// `PATCH /_sim/employees/{id}`
async fn control_change(
    State(state): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    change_employee(&state, &id, &body, |_, e, body| apply_fields(e, body))
}

/// `POST /_sim/employees/{id}/terminate`
async fn control_terminate(
    State(state): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    change_employee(&state, &id, &body, |s, e, body| {
        let mut e = e.clone();
        e.status = "Inactive".into();
        e.employment_history_status = Some("Terminated".into());
        e.termination_date = Some(body_date(s, body)?);
        Ok(e)
    })
}

/// `POST /_sim/employees/{id}/rehire`
async fn control_rehire(
    State(state): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    change_employee(&state, &id, &body, |s, e, body| {
        let mut e = e.clone();
        e.status = "Active".into();
        e.employment_history_status = Some("Full-Time".into());
        e.hire_date = Some(body_date(s, body)?);
        e.termination_date = None;
        Ok(e)
    })
}

/// `DELETE /_sim/employees/{id}`
async fn control_remove(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    if lock(&state).remove(&id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        unknown_employee(&id)
    }
}

/// `POST /_sim/training-records`: `{"employeeId", "type" (a name), "completed"}`.
async fn control_add_record(State(state): State<Shared>, body: Bytes) -> Response {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct HandMade {
        employee_id: String,
        r#type: String,
        completed: String,
    }
    let record: HandMade = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return control_error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"employeeId\", \"type\", \"completed\"}}: {e}"),
            );
        }
    };
    if !is_valid_date(&record.completed) {
        return control_error(StatusCode::BAD_REQUEST, "completed must be yyyy-mm-dd");
    }
    let mut s = lock(&state);
    match s.add_record_by_hand(&record.employee_id, &record.r#type, &record.completed) {
        Some(id) => (StatusCode::CREATED, Json(s.records.get(&id).cloned())).into_response(),
        None => control_error(
            StatusCode::BAD_REQUEST,
            format!("no training type named {}", record.r#type),
        ),
    }
}

/// `GET /_sim/requests`
async fn control_requests(State(state): State<Shared>) -> Response {
    let log: Vec<Value> = lock(&state)
        .log
        .iter()
        .map(|r| json!({ "method": r.method, "path": r.path, "status": r.status }))
        .collect();
    Json(log).into_response()
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // Both values are small and positive by construction.
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

/// Formats unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
fn format_rfc3339(unix: i64) -> String {
    let (year, month, day) = civil_from_days(unix.div_euclid(86_400));
    let secs = unix.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// Parses `n` ASCII digits.
fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u32, |acc, d| {
        acc.checked_mul(10)?.checked_add(u32::from(d - b'0'))
    })
}

/// Parses a `yyyy-mm-dd` date into (year, month, day), validating the calendar.
fn parse_date(s: &[u8]) -> Option<(i64, u32, u32)> {
    if s.len() != 10 || s[4] != b'-' || s[7] != b'-' {
        return None;
    }
    let (year, month, day) = (
        i64::from(digits(&s[0..4])?),
        digits(&s[5..7])?,
        digits(&s[8..10])?,
    );
    (day >= 1 && day <= days_in_month(year, month)).then_some((year, month, day))
}

fn is_valid_date(s: &str) -> bool {
    parse_date(s.as_bytes()).is_some()
}

/// Parses an RFC 3339 timestamp into (unix seconds, nanoseconds), normalised to UTC.
fn parse_rfc3339(s: &str) -> Option<(i64, u32)> {
    let b = s.trim().as_bytes();
    if b.len() < 20 || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = parse_date(&b[..10])?;
    let (hour, minute, second) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &b[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        for (i, d) in frac[..n].iter().take(9).enumerate() {
            nanos += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
        }
        rest = &frac[n..];
    }
    let offset_secs = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (oh, om) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let off = i64::from(oh * 3600 + om * 60);
            if *sign == b'-' { -off } else { off }
        }
        _ => return None,
    };
    let unix = days_from_civil(year, month, day) * 86_400
        + i64::from(hour * 3600 + minute * 60 + second)
        - offset_secs;
    Some((unix, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_formatting_round_trips() {
        assert_eq!(format_rfc3339(CLOCK_EPOCH), "2026-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(CLOCK_EPOCH + 5), "2026-01-01T00:00:05Z");
        assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        for t in [
            0,
            951_782_400,
            CLOCK_EPOCH,
            CLOCK_EPOCH + 86_399 + 3_600 * 24 * 59,
        ] {
            assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some((t, 0)));
        }
        assert_eq!(
            parse_rfc3339("2026-01-01T01:00:05+01:00"),
            Some((CLOCK_EPOCH + 5, 0))
        );
        assert_eq!(
            parse_rfc3339("2026-01-01T00:00:05.5Z"),
            Some((CLOCK_EPOCH + 5, 500_000_000))
        );
        assert_eq!(parse_rfc3339("2026-02-30T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert!(is_valid_date("2024-02-29") && !is_valid_date("2023-02-29"));
        assert!(!is_valid_date("2024-1-01") && !is_valid_date("2024-13-01"));
    }
}
