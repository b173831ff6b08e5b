//! `switchyard plugin test`: the conformance runner, Switchyard's connector
//! acceptance test. It loads a plugin, points it at a live system (a vendor
//! sandbox, a simulator, a SCIM server) through a proxy of its own, and
//! drives it as the host would: every operation twice with the same key,
//! a lost answer, concurrent calls, and errors injected by status, each
//! checked against what the contract promises. The result is a table of
//! checks; any failure makes the command exit non-zero.
//!
//! The runner calls the plugin directly (no engine, no store): what it
//! checks is the plugin's side of the contract, with the host's own
//! recovery steps (a lookup by natural key after a refused create) where
//! the host would take them.

mod batch;
pub mod proxy;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use switchyard_model::{
    self as model, CompletionStatus, ConnectorError, Employee, EmploymentStatus, Timestamp,
};
use switchyard_runtime::{Connector, Runtime, World};

use crate::config::{AuthConfig, ConnectorConfig, Limits, Origin};
pub use proxy::Fault;
use proxy::Proxy;

/// What to test and against what.
#[derive(Debug, Clone)]
pub struct Options {
    /// The plugin file.
    pub plugin: PathBuf,
    /// The system's base URL; the plugin's `base_url` setting is the
    /// runner's proxy in front of it.
    pub against: String,
    /// Further settings for the plugin (`--set key=value`).
    pub settings: BTreeMap<String, String>,
    /// The credential, as a connector's `auth` table.
    pub auth: Option<AuthConfig>,
    /// A course (LMS) or training type (HRIS) that exists on the system.
    pub course: Option<String>,
}

/// How one check ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The plugin did what the contract says.
    Passed(String),
    /// It did not: what went wrong.
    Failed(String),
    /// Not run, and why (an optional operation the plugin does not
    /// implement, a check the target cannot support).
    Skipped(String),
}

/// One named check and its outcome.
#[derive(Debug, Clone)]
pub struct Check {
    /// The check's name, e.g. `hire`.
    pub name: &'static str,
    /// How it ended.
    pub outcome: Outcome,
}

/// Every check, in the order run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Which side the plugin implements.
    pub world: World,
    /// The contract it was built against.
    pub contract_version: String,
    /// The checks.
    pub checks: Vec<Check>,
}

impl Report {
    /// True when no check failed.
    pub fn passed(&self) -> bool {
        !self
            .checks
            .iter()
            .any(|c| matches!(c.outcome, Outcome::Failed(_)))
    }

    /// The outcome of the check called `name`.
    pub fn outcome(&self, name: &str) -> Option<&Outcome> {
        self.checks
            .iter()
            .find(|c| c.name == name)
            .map(|c| &c.outcome)
    }

    /// The table the CLI prints.
    pub fn table(&self) -> String {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(5);
        let mut out = format!("{:width$}  result  detail\n", "check");
        for check in &self.checks {
            let (result, detail) = match &check.outcome {
                Outcome::Passed(d) => ("pass", d),
                Outcome::Failed(d) => ("FAIL", d),
                Outcome::Skipped(d) => ("skip", d),
            };
            out.push_str(&format!("{:width$}  {result:6}  {detail}\n", check.name));
        }
        let failed = self
            .checks
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Failed(_)))
            .count();
        let skipped = self
            .checks
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Skipped(_)))
            .count();
        out.push_str(&format!(
            "{} checks: {} passed, {failed} failed, {skipped} skipped\n",
            self.checks.len(),
            self.checks.len() - failed - skipped
        ));
        out
    }
}

/// Why the runner could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    /// The plugin file was refused.
    #[error("{0}")]
    Plugin(#[from] switchyard_runtime::PluginError),
    /// The URL or the credential cannot be used.
    #[error("{0}")]
    Setup(String),
}

/// Run every check for the plugin's side.
pub async fn run(options: &Options) -> Result<Report, ConformanceError> {
    let runtime = Runtime::new().map_err(|e| ConformanceError::Setup(format!("{e:#}")))?;
    let plugin = Arc::new(runtime.load_plugin(&options.plugin)?);
    let proxy = Proxy::start(&options.against)
        .await
        .map_err(|e| ConformanceError::Setup(format!("starting the proxy: {e:#}")))?;
    let mut settings = options.settings.clone();
    settings.insert("base_url".into(), proxy.url().to_owned());
    let origin = Origin::parse(proxy.url()).map_err(ConformanceError::Setup)?;
    let config = ConnectorConfig {
        plugin: plugin.name.clone(),
        line: 0,
        optional: false,
        settings,
        allow: vec![origin],
        auth: options.auth.clone(),
        credential_origins: None,
        limits: Limits::default(),
    };
    let credential = match &options.auth {
        Some(auth) => Some(
            crate::secrets::resolve_credential(auth, None)
                .map_err(|e| ConformanceError::Setup(format!("the credential: {e}")))?,
        ),
        None => None,
    };
    let world = plugin.world;
    let contract_version = plugin.contract_version.clone();
    let connector = runtime.connector("under-test", &config.grants(), plugin, credential);
    let mut run = Run {
        connector,
        proxy,
        options: options.clone(),
        checks: Vec::new(),
        tag: unique_tag(),
    };
    match world {
        World::Lms => run.lms().await,
        World::Hris => run.hris().await,
    }
    Ok(Report {
        world,
        contract_version,
        checks: run.checks,
    })
}

/// A tag that keeps this run's test records apart from earlier runs'.
fn unique_tag() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{:x}", now % 0xff_ffff_ffff)
}

/// A change to a test employee.
type Change = fn(&mut Employee);
/// Whether an error is the one an injected fault must give.
type Expect = fn(&ConnectorError) -> bool;

struct Run {
    connector: Connector,
    proxy: Proxy,
    options: Options,
    checks: Vec<Check>,
    tag: String,
}

/// The error's kind, for messages.
fn kind(e: &ConnectorError) -> &'static str {
    match e {
        ConnectorError::Transient(_) => "transient",
        ConnectorError::RateLimited(_) => "rate-limited",
        ConnectorError::Unauthorized(_) => "unauthorized",
        ConnectorError::InvalidConfig(_) => "invalid-config",
        ConnectorError::Rejected(_) => "rejected",
        ConnectorError::Unsupported(_) => "unsupported",
        ConnectorError::PluginFault(_) => "plugin fault",
    }
}

impl Run {
    fn record(&mut self, name: &'static str, outcome: Outcome) {
        self.checks.push(Check { name, outcome });
    }

    fn employee(&self, n: usize) -> Employee {
        let id = format!("sy-{}-{n}", self.tag);
        Employee {
            id: id.as_str().into(),
            employee_number: Some(format!("C{n}")),
            email: Some(format!("conformance.{}.{n}@example.com", self.tag)),
            given_name: Some("Conformance".into()),
            family_name: Some(format!("Check {n}")),
            status: EmploymentStatus::Active,
            raw_status: Some("Active".into()),
            department: Some("Quality".into()),
            job_title: Some("Tester".into()),
            location: Some("Remote".into()),
            manager_id: None,
            hire_date: None,
            termination_date: None,
            updated_at: None,
            custom: Vec::new(),
        }
    }

    fn key(&self, what: &str) -> String {
        format!("conformance-{}-{what}", self.tag)
    }

    /// `find_user`, with `None` meaning the plugin does not implement it.
    async fn find(&self, e: &Employee) -> Result<Option<Option<model::LmsUser>>, ConnectorError> {
        match self.connector.find_user(e.id.as_str()).await {
            Ok(found) => Ok(Some(found)),
            Err(ConnectorError::Unsupported(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A create as the host makes it: look first, create, and after a
    /// refusal or a lost answer look again and adopt what is there.
    async fn provision(&self, e: &Employee, key: &str) -> Result<String, String> {
        if let Ok(Some(Some(found))) = self.find(e).await {
            return Ok(found.id.into_string());
        }
        match self.connector.upsert_user(e, None, key).await {
            Ok(id) => Ok(id),
            Err(first) => match self.find(e).await {
                Ok(Some(Some(found))) => Ok(found.id.into_string()),
                _ => Err(format!("{first}")),
            },
        }
    }

    // ------------------------------------------------------------------
    // LMS
    // ------------------------------------------------------------------

    async fn lms(&mut self) {
        let mut first = self.employee(1);
        let before = self.proxy.seen();
        let created = self
            .connector
            .upsert_user(&first, None, &self.key("hire"))
            .await;
        let create_requests = self.proxy.seen() - before;
        let id = match created {
            Ok(id) => id,
            Err(e) => {
                self.record("hire", Outcome::Failed(format!("upsert-user: {e}")));
                self.record(
                    "the rest",
                    Outcome::Skipped("nothing to check without an account".into()),
                );
                return;
            }
        };
        let can_find = match self.find(&first).await {
            Ok(Some(Some(found))) if found.id.as_str() == id && found.active => {
                self.record(
                    "hire",
                    Outcome::Passed(format!("account {id}, found by the HRIS id")),
                );
                true
            }
            Ok(Some(found)) => {
                self.record(
                    "hire",
                    Outcome::Failed(format!(
                        "account {id} created, but find-user says {found:?}"
                    )),
                );
                true
            }
            Ok(None) => {
                self.record(
                    "hire",
                    Outcome::Passed(format!("account {id} (find-user not implemented)")),
                );
                false
            }
            Err(e) => {
                self.record("hire", Outcome::Failed(format!("find-user: {e}")));
                true
            }
        };

        // The same create again, with the same key: the same account.
        let again = self
            .connector
            .upsert_user(&first, None, &self.key("hire"))
            .await;
        let outcome = match again {
            Ok(same) if same == id => Outcome::Passed("the same account".into()),
            Ok(other) => Outcome::Failed(format!("a second account {other} beside {id}")),
            Err(ConnectorError::Rejected(m)) if can_find => match self.find(&first).await {
                Ok(Some(Some(found))) if found.id.as_str() == id => Outcome::Passed(format!(
                    "refused as existing ({m}); the host adopts {id} by the HRIS id"
                )),
                other => Outcome::Failed(format!(
                    "refused ({m}) and find-user says {other:?}, not {id}"
                )),
            },
            Err(e) => Outcome::Failed(format!("{e}")),
        };
        self.record("hire twice", outcome);

        // Updates, each twice with its key: the same account every time.
        let changes: [(&'static str, Change); 3] = [
            ("profile change", |e| {
                e.given_name = Some("Changed".into());
            }),
            ("department change", |e| {
                e.department = Some("Audit".into());
                e.job_title = Some("Auditor".into());
            }),
            ("email change", |e| {
                e.email = e.email.as_ref().map(|m| format!("new.{m}"));
            }),
        ];
        for (name, change) in changes {
            change(&mut first);
            let mut outcome = Outcome::Passed("the same account, twice".into());
            for _ in 0..2 {
                match self
                    .connector
                    .upsert_user(&first, Some(&id), &self.key(name))
                    .await
                {
                    Ok(same) if same == id => {}
                    Ok(other) => {
                        outcome = Outcome::Failed(format!("answered account {other}, not {id}"));
                    }
                    Err(e) => outcome = Outcome::Failed(format!("{e}")),
                }
            }
            if name == "email change" && can_find && matches!(outcome, Outcome::Passed(_)) {
                match self.find(&first).await {
                    Ok(Some(Some(found))) if found.email == first.email => {}
                    Ok(Some(Some(found)))
                        if found.email.as_deref().map(str::to_lowercase)
                            == first.email.as_deref().map(str::to_lowercase) => {}
                    Ok(Some(Some(found))) if found.email.is_none() => {}
                    other => {
                        outcome = Outcome::Failed(format!(
                            "the LMS still says {other:?} after the change to {:?}",
                            first.email
                        ));
                    }
                }
            }
            self.record(name, outcome);
        }

        // Termination and rehire: suspended and back, the same account.
        for (name, active) in [("termination", false), ("rehire", true)] {
            let mut outcome = Outcome::Passed(if active {
                "active again, the same account".into()
            } else {
                "suspended, twice".into()
            });
            for _ in 0..2 {
                if let Err(e) = self
                    .connector
                    .set_active(&id, active, &self.key(name))
                    .await
                {
                    outcome = Outcome::Failed(format!("set-active: {e}"));
                }
            }
            if can_find && matches!(outcome, Outcome::Passed(_)) {
                match self.find(&first).await {
                    Ok(Some(Some(found))) if found.id.as_str() == id && found.active == active => {}
                    other => {
                        outcome = Outcome::Failed(format!(
                            "find-user says {other:?}, expected {id} with active = {active}"
                        ));
                    }
                }
            }
            self.record(name, outcome);
        }

        // Enrolment and withdrawal, twice each.
        match self.options.course.clone() {
            None => {
                self.record(
                    "enrolment",
                    Outcome::Skipped("no --course given (a course that exists in the LMS)".into()),
                );
            }
            Some(course) => {
                let mut outcome = Outcome::Passed(format!("in {course}, twice"));
                for _ in 0..2 {
                    if let Err(e) = self
                        .connector
                        .enroll(&id, &course, None, &self.key("enrol"))
                        .await
                    {
                        outcome = Outcome::Failed(format!("enroll: {e}"));
                    }
                }
                self.record("enrolment", outcome);
                let mut outcome = Outcome::Passed(format!("out of {course}, twice"));
                for _ in 0..2 {
                    match self
                        .connector
                        .unenroll(&id, &course, &self.key("withdraw"))
                        .await
                    {
                        Ok(()) => {}
                        Err(ConnectorError::Unsupported(m)) => {
                            outcome =
                                Outcome::Skipped(format!("unenroll is not implemented ({m})"));
                            break;
                        }
                        Err(e) => outcome = Outcome::Failed(format!("unenroll: {e}")),
                    }
                }
                self.record("withdrawal", outcome);
            }
        }

        // Completions: page to the end.
        let outcome = self.fetch_all_completions().await;
        self.record("completion fetch", outcome);

        // A lost answer: the create is applied, its answer dropped.
        let lost = self.employee(2);
        let outcome = if create_requests == 0 {
            Outcome::Skipped("the first create made no request to drop".into())
        } else {
            self.proxy.plan(create_requests, Fault::ResetAfter);
            let first_try = self
                .connector
                .upsert_user(&lost, None, &self.key("lost"))
                .await;
            self.proxy.settle();
            match first_try {
                Ok(made) => Outcome::Failed(format!(
                    "the answer was dropped, yet upsert-user returned {made}"
                )),
                Err(ConnectorError::Transient(_) | ConnectorError::RateLimited(_)) => {
                    match self.provision(&lost, &self.key("lost")).await {
                        Ok(made) => {
                            let found = self.find(&lost).await;
                            // Leave it suspended, as every test account.
                            let _ = self
                                .connector
                                .set_active(&made, false, &self.key("cleanup-lost"))
                                .await;
                            match found {
                                Ok(Some(Some(found))) if found.id.as_str() == made => {
                                    Outcome::Passed(format!(
                                        "transient, and the retry found {made}: one account"
                                    ))
                                }
                                Ok(None) => Outcome::Passed(format!(
                                    "transient, and the retry answered {made} (find-user not implemented: duplicates cannot be seen)"
                                )),
                                other => Outcome::Failed(format!(
                                    "the retry answered {made} but find-user says {other:?}"
                                )),
                            }
                        }
                        Err(e) => Outcome::Failed(format!("the retry failed: {e}")),
                    }
                }
                Err(e) => Outcome::Failed(format!(
                    "a dropped answer must be transient (retried), not {e}"
                )),
            }
        };
        self.record("lost answer", outcome);

        // Concurrent calls: eight hires, then eight enrolments in one course.
        let outcome = self.concurrent().await;
        self.record("concurrent calls", outcome);

        // Batches (contract 0.5.0), and the account listing.
        self.batches(&id).await;

        // Error classification.
        let cases: [(&'static str, Fault, Expect, &str); 6] = [
            (
                "401 is unauthorized",
                Fault::Status(401, None),
                |e| matches!(e, ConnectorError::Unauthorized(_)),
                "unauthorized",
            ),
            (
                "404 is rejected",
                Fault::Status(404, None),
                |e| matches!(e, ConnectorError::Rejected(_)),
                "rejected",
            ),
            (
                "409 is rejected",
                Fault::Status(409, None),
                |e| matches!(e, ConnectorError::Rejected(_)),
                "rejected",
            ),
            (
                "429 is rate-limited",
                Fault::Status(429, Some(7)),
                |e| matches!(e, ConnectorError::RateLimited(Some(7))),
                "rate-limited(7), from Retry-After",
            ),
            (
                "5xx is retried",
                Fault::Status(500, None),
                |e| {
                    matches!(
                        e,
                        ConnectorError::Transient(_) | ConnectorError::RateLimited(_)
                    )
                },
                "transient",
            ),
            (
                "no answer is retried",
                Fault::ResetBefore,
                |e| matches!(e, ConnectorError::Transient(_)),
                "transient",
            ),
        ];
        for (name, fault, expected, wanted) in cases {
            self.proxy.plan(1, fault);
            let result = self
                .connector
                .set_active(&id, true, &self.key("classify"))
                .await;
            self.proxy.settle();
            let outcome = match result {
                Err(e) if expected(&e) => Outcome::Passed(kind(&e).to_owned()),
                Err(e) => Outcome::Failed(format!("{e}; the contract wants {wanted}")),
                Ok(()) => {
                    Outcome::Failed(format!("the call succeeded; the contract wants {wanted}"))
                }
            };
            self.record(name, outcome);
        }

        // Leave nothing active behind.
        let _ = self
            .connector
            .set_active(&id, false, &self.key("cleanup"))
            .await;
    }

    async fn fetch_all_completions(&self) -> Outcome {
        let mut cursor: Option<String> = None;
        let mut seen = 0usize;
        for _ in 0..1000 {
            match self.connector.fetch_completions(cursor.as_deref()).await {
                Ok(page) => {
                    seen += page.completions.len();
                    if !page.more || page.next_cursor.is_none() || page.next_cursor == cursor {
                        return Outcome::Passed(format!("{seen} completions, to the end"));
                    }
                    cursor = page.next_cursor;
                }
                Err(ConnectorError::Unsupported(m)) => {
                    return Outcome::Skipped(format!("fetch-completions is not implemented ({m})"));
                }
                Err(e) => return Outcome::Failed(format!("{e}")),
            }
        }
        Outcome::Failed("more than 1000 pages of completions".into())
    }

    async fn concurrent(&self) -> Outcome {
        let people: Vec<Employee> = (10..18).map(|n| self.employee(n)).collect();
        let hires = people.iter().map(|e| {
            let key = self.key(&format!("hire-{}", e.id.as_str()));
            async move { self.provision(e, &key).await }
        });
        let ids: Vec<Result<String, String>> = futures::future::join_all(hires).await;
        let mut accounts = Vec::new();
        for (e, id) in people.iter().zip(ids) {
            match id {
                Ok(id) => accounts.push(id),
                Err(m) => return Outcome::Failed(format!("hiring {}: {m}", e.id.as_str())),
            }
        }
        let distinct: BTreeSet<&String> = accounts.iter().collect();
        if distinct.len() != accounts.len() {
            return Outcome::Failed(format!("eight hires got {} accounts", distinct.len()));
        }
        let mut detail = "8 hires at once, 8 accounts".to_owned();
        if let Some(course) = &self.options.course {
            let enrolments = accounts.iter().map(|id| {
                let key = self.key(&format!("enrol-{id}"));
                async move { self.connector.enroll(id, course, None, &key).await }
            });
            for result in futures::future::join_all(enrolments).await {
                if let Err(e) = result {
                    return Outcome::Failed(format!("enrolling at once in {course}: {e}"));
                }
            }
            detail.push_str(&format!("; 8 enrolments in {course} at once"));
        }
        for id in &accounts {
            let _ = self
                .connector
                .set_active(id, false, &self.key(&format!("cleanup-{id}")))
                .await;
        }
        Outcome::Passed(detail)
    }

    // ------------------------------------------------------------------
    // HRIS
    // ------------------------------------------------------------------

    async fn hris(&mut self) {
        let listing = match self.list_all(None).await {
            Ok(listing) => listing,
            Err(m) => {
                self.record("paging to the end", Outcome::Failed(m));
                return;
            }
        };
        let ids: BTreeSet<&str> = listing.employees.iter().map(|e| e.id.as_str()).collect();
        if listing.employees.is_empty() {
            self.record(
                "paging to the end",
                Outcome::Failed("the listing is empty: nothing to check".into()),
            );
            return;
        }
        if ids.len() != listing.employees.len() {
            self.record(
                "paging to the end",
                Outcome::Failed(format!(
                    "{} employees over {} pages, but only {} distinct ids",
                    listing.employees.len(),
                    listing.pages,
                    ids.len()
                )),
            );
        } else {
            self.record(
                "paging to the end",
                Outcome::Passed(format!(
                    "{} employees over {} pages",
                    listing.employees.len(),
                    listing.pages
                )),
            );
        }

        match &listing.changes_cursor {
            None => self.record(
                "changes cursor",
                Outcome::Skipped("no changes-cursor: every run lists in full".into()),
            ),
            Some(cursor) => {
                let outcome = match self.list_all(Some(cursor.clone())).await {
                    Ok(changes) => Outcome::Passed(format!(
                        "resumes: {} changed since the listing",
                        changes.employees.len()
                    )),
                    Err(m) => Outcome::Failed(format!("resuming from the changes cursor: {m}")),
                };
                self.record("changes cursor", outcome);
            }
        }

        let outcome = self.change_during_listing().await;
        self.record("change during a listing", outcome);

        let outcome = self.transient_listing().await;
        self.record("no answer is retried", outcome);

        let Some(employee) = listing
            .employees
            .iter()
            .find(|e| e.status == EmploymentStatus::Active)
            .cloned()
        else {
            self.record(
                "writeback",
                Outcome::Skipped("no active employee to write a completion for".into()),
            );
            return;
        };
        self.writeback(&employee).await;
    }

    async fn list_all(&self, from: Option<String>) -> Result<Listing, String> {
        let mut cursor = from;
        let mut listing = Listing::default();
        let mut seen_cursors = BTreeSet::new();
        loop {
            let page = self
                .connector
                .fetch_employees(cursor.as_deref())
                .await
                .map_err(|e| format!("fetch-employees: {e}"))?;
            listing.pages += 1;
            listing.employees.extend(page.employees);
            match page.next_cursor {
                Some(next) => {
                    if !seen_cursors.insert(next.clone()) {
                        return Err(format!("the cursor `{next}` came back a second time"));
                    }
                    if listing.pages >= 10_000 {
                        return Err("more than 10 000 pages".into());
                    }
                    cursor = Some(next);
                }
                None => {
                    listing.changes_cursor = page.changes_cursor;
                    return Ok(listing);
                }
            }
        }
    }

    /// With a simulator's control API: change someone on the first page
    /// while the rest is read, and expect the change from the cursor.
    async fn change_during_listing(&self) -> Outcome {
        let control = format!(
            "{}/_sim/employees",
            self.options.against.trim_end_matches('/')
        );
        let client = reqwest::Client::new();
        let probe = client
            .get(format!(
                "{}/_sim/state",
                self.options.against.trim_end_matches('/')
            ))
            .send()
            .await;
        if !probe.is_ok_and(|r| r.status().is_success()) {
            return Outcome::Skipped(
                "the target has no control API (/_sim/) to change an employee mid-listing".into(),
            );
        }
        let first = match self.connector.fetch_employees(None).await {
            Ok(page) => page,
            Err(e) => return Outcome::Failed(format!("{e}")),
        };
        let Some(next) = first.next_cursor.clone() else {
            return Outcome::Skipped("the listing has one page; set a smaller page size".into());
        };
        let Some(target) = first.employees.first() else {
            return Outcome::Failed("the first page is empty".into());
        };
        let changed = client
            .patch(format!("{control}/{}", target.id.as_str()))
            .json(&serde_json::json!({ "department": format!("Moved {}", self.tag) }))
            .send()
            .await;
        if !changed.is_ok_and(|r| r.status().is_success()) {
            return Outcome::Failed("the control API refused the change".into());
        }
        // Then someone listed last changes too, later: a cursor taken from
        // the newest change seen would be past the first change.
        let last = match client
            .get(format!(
                "{}/_sim/state",
                self.options.against.trim_end_matches('/')
            ))
            .send()
            .await
        {
            Ok(r) => r.json::<serde_json::Value>().await.ok().and_then(|state| {
                state["employees"]
                    .as_array()
                    .and_then(|all| all.last())
                    .and_then(|e| e["id"].as_str().map(str::to_owned))
            }),
            Err(_) => None,
        };
        if let Some(last) = last.filter(|l| l != target.id.as_str()) {
            let _ = client
                .patch(format!("{control}/{last}"))
                .json(&serde_json::json!({ "location": format!("Moved {}", self.tag) }))
                .send()
                .await;
        }
        let rest = match self.list_all(Some(next)).await {
            Ok(rest) => rest,
            Err(m) => return Outcome::Failed(m),
        };
        let Some(cursor) = rest.changes_cursor else {
            return Outcome::Skipped("no changes-cursor: every run lists in full".into());
        };
        match self.list_all(Some(cursor)).await {
            Ok(changes) if changes.employees.iter().any(|e| e.id == target.id) => {
                Outcome::Passed(format!(
                    "{} changed on page 1 mid-listing, seen from the cursor",
                    target.id.as_str()
                ))
            }
            Ok(_) => Outcome::Failed(format!(
                "{} changed while later pages were read, and the changes cursor skips it: make the cursor the moment the listing started",
                target.id.as_str()
            )),
            Err(m) => Outcome::Failed(m),
        }
    }

    /// A listing whose first answer is lost must fail as retryable.
    async fn transient_listing(&self) -> Outcome {
        self.proxy.plan(1, Fault::ResetBefore);
        let result = self.connector.fetch_employees(None).await;
        self.proxy.settle();
        match result {
            Err(ConnectorError::Transient(_) | ConnectorError::RateLimited(_)) => {
                Outcome::Passed("transient".into())
            }
            Err(e) => Outcome::Failed(format!("a dropped connection must be transient, not {e}")),
            Ok(_) => Outcome::Failed("a page came back though the connection dropped".into()),
        }
    }

    async fn writeback(&mut self, employee: &Employee) {
        let Some(course) = self.options.course.clone() else {
            self.record(
                "writeback",
                Outcome::Skipped("no --course given (a training type the HRIS has)".into()),
            );
            return;
        };
        // The first attempt a month ago, the retake yesterday: the record
        // must say the retake's day after it.
        let first_at = Timestamp::now().plus_days(-30);
        let retake_at = Timestamp::now().plus_days(-1);
        let completion = |attempt: &str, score: f64, completed_at: Timestamp| model::Completion {
            employee_id: employee.id.clone(),
            course_id: course.as_str().into(),
            attempt_id: attempt.to_owned(),
            status: CompletionStatus::Passed,
            completed_at,
            score: Some(score),
            expires_at: Some(completed_at.plus_days(365)),
        };
        let first_key = self.key("completion-1");
        let mut outcome = Outcome::Passed(format!(
            "{} passed {course} (score, attempt, expiry), twice",
            employee.id.as_str()
        ));
        for _ in 0..2 {
            if let Err(e) = self
                .connector
                .push_completion(
                    &completion("conformance-1", 91.5, first_at),
                    &first_key,
                    None,
                )
                .await
            {
                outcome = Outcome::Failed(format!("push-completion: {e}"));
            }
        }
        let records = self.records_of(employee, &course).await;
        if matches!(outcome, Outcome::Passed(_)) {
            match &records {
                Some(Ok(found)) if found.len() != 1 => {
                    outcome = Outcome::Failed(format!(
                        "{} training records of {course} after the same completion twice",
                        found.len()
                    ));
                }
                Some(Ok(found)) if found[0].completed_on != first_at.date() => {
                    outcome = Outcome::Failed(format!(
                        "the record says completed on {}, the completion {}",
                        found[0].completed_on,
                        first_at.date()
                    ));
                }
                Some(Err(m)) => outcome = Outcome::Failed(m.clone()),
                _ => {}
            }
        }
        self.record("writeback", outcome);

        let mut outcome = Outcome::Passed("the retake updated the record".into());
        if let Err(e) = self
            .connector
            .push_completion(
                &completion("conformance-2", 97.0, retake_at),
                &self.key("completion-2"),
                Some(&first_key),
            )
            .await
        {
            outcome = Outcome::Failed(format!("push-completion: {e}"));
        }
        match self.records_of(employee, &course).await {
            None => {
                if matches!(outcome, Outcome::Passed(_)) {
                    outcome = Outcome::Passed(
                        "accepted (list-training-records not implemented: a second record cannot be seen)"
                            .into(),
                    );
                }
            }
            Some(Ok(found)) if found.len() != 1 => {
                outcome = Outcome::Failed(format!(
                    "{} training records of {course}: a retake must update the record it supersedes",
                    found.len()
                ));
            }
            Some(Ok(found)) if found[0].completed_on != retake_at.date() => {
                outcome = Outcome::Failed(format!(
                    "the record still says {}, not the retake's {}",
                    found[0].completed_on,
                    retake_at.date()
                ));
            }
            Some(Ok(_)) => {}
            Some(Err(m)) => outcome = Outcome::Failed(m),
        }
        self.record("retake supersedes", outcome);
    }

    /// How many training records of `course` the HRIS holds for the
    /// employee; `None` if the plugin cannot list them.
    async fn records_of(
        &self,
        employee: &Employee,
        course: &str,
    ) -> Option<Result<Vec<model::TrainingRecord>, String>> {
        match self
            .connector
            .list_training_records(employee.id.as_str())
            .await
        {
            Ok(records) => Some(Ok(records
                .into_iter()
                .filter(|r| r.course_id.as_str() == course)
                .collect())),
            Err(ConnectorError::Unsupported(_)) => None,
            Err(e) => Some(Err(format!("list-training-records: {e}"))),
        }
    }
}

#[derive(Default)]
struct Listing {
    employees: Vec<Employee>,
    pages: usize,
    changes_cursor: Option<String>,
}
