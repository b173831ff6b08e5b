//! BambooHR connector (HRIS world).
//!
//! Translates BambooHR's REST API (`/api/v1`) into Switchyard's canonical
//! records. Authentication (HTTP Basic with the API key as user name) is
//! injected by the host; this plugin never sees the key.
//!
//! Config keys (all optional):
//! - `base_url`: API origin, e.g. `https://acme.bamboohr.com`; defaults to
//!   `https://{company}.bamboohr.com`;
//! - `company`: the company subdomain, used when `base_url` is not set;
//! - `page_size`: employees per listing page (default 200).
//!
//! Cursors (opaque to the host):
//! - `None`: full listing, page 1 (`POST /datasets/employee`);
//! - `page|{n}|{started}`: full listing, page n, carrying the moment the
//!   listing started by BambooHR's clock (the first page's `Date` header,
//!   less a few seconds of overlap), which becomes the changes cursor at
//!   the end. Not the newest `lastChanged` seen: a change made to someone
//!   on an earlier page while later pages are read can be older than that,
//!   and would never be seen by the next incremental run;
//! - `since|{ts}`: changes since ts (`GET /employees/changed`), first page;
//! - `changes|{since}|{latest}|{offset}`: a later page of those changes.
//!
//! Webhooks: BambooHR posts `{"employees": [{"id": .., "action": ..}, ..]}`,
//! signed with HMAC-SHA256 (`X-BambooHR-Signature`, hex, over the body then
//! `X-BambooHR-Timestamp`; the host verifies it). A webhook carries only the
//! monitored fields, so each created or updated employee is read in full
//! (`GET /employees/{id}`) and reported as `employee-changed`; a deleted one
//! is ignored (absence is not evidence of termination).

use std::collections::BTreeMap;

use serde::Deserialize;
use switchyard_sdk::http::Request;
use switchyard_sdk::{
    Completion, CompletionStatus, ConnectorError, Employee, EmployeePage, EmploymentStatus,
    HrisConnector, TrainingRecord as Record, Webhook, WebhookEvent, config, log,
};

struct BambooHr;

/// Fields requested from the employee dataset.
const FIELDS: &[&str] = &[
    "id",
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
    "lastChanged",
];

/// Employees fetched one by one per page of a changes listing.
const CHANGES_PAGE: usize = 100;

/// An employee as BambooHR returns it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BambooEmployee {
    #[serde(deserialize_with = "string_or_number")]
    id: String,
    employee_number: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    work_email: Option<String>,
    status: Option<String>,
    employment_history_status: Option<String>,
    department: Option<String>,
    job_title: Option<String>,
    location: Option<String>,
    #[serde(rename = "supervisorEId")]
    supervisor_eid: Option<String>,
    hire_date: Option<String>,
    termination_date: Option<String>,
    last_changed: Option<String>,
}

#[derive(Deserialize)]
struct DatasetPage {
    data: Vec<BambooEmployee>,
    pagination: Pagination,
}

#[derive(Deserialize)]
struct Pagination {
    next_page: Option<String>,
}

#[derive(Deserialize)]
struct Changed {
    latest: Option<String>,
    employees: BTreeMap<String, ChangedEntry>,
}

#[derive(Deserialize)]
struct ChangedEntry {
    action: String,
}

#[derive(Deserialize)]
struct TrainingType {
    id: u32,
    name: String,
}

#[derive(Deserialize)]
struct TrainingRecord {
    #[serde(deserialize_with = "string_or_number")]
    id: String,
    /// The training type's id.
    #[serde(rename = "type", default, deserialize_with = "string_or_number")]
    kind: String,
    /// `yyyy-mm-dd`.
    #[serde(default)]
    completed: String,
    notes: Option<String>,
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        S(String),
        N(u64),
    }
    Ok(match Id::deserialize(d)? {
        Id::S(s) => s,
        Id::N(n) => n.to_string(),
    })
}

fn api() -> Result<String, ConnectorError> {
    let base = match config::get("base_url") {
        Some(url) => url,
        None => {
            let company = config::get("company").ok_or_else(|| {
                ConnectorError::InvalidConfig("set `base_url` or `company`".into())
            })?;
            format!("https://{company}.bamboohr.com")
        }
    };
    Ok(format!("{}/api/v1", base.trim_end_matches('/')))
}

fn page_size() -> Result<u32, ConnectorError> {
    match config::get("page_size") {
        None => Ok(200),
        Some(v) => v
            .parse()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                ConnectorError::InvalidConfig(format!("page_size `{v}` is not 1..=1000"))
            }),
    }
}

/// BambooHR's two status fields, normalised. `status` is whether the
/// employee record is active at all; the employment history status says
/// why. An inactive record is inactive whatever its last history entry (an
/// "Inactive" employee whose last entry is a leave of absence has left,
/// not gone on leave with access kept).
fn normalise_status(status: Option<&str>, history: Option<&str>) -> EmploymentStatus {
    let history = history.unwrap_or("").to_ascii_lowercase();
    let inactive = status.is_some_and(|s| s.eq_ignore_ascii_case("inactive"));
    if history.contains("terminat") {
        EmploymentStatus::Terminated
    } else if inactive {
        EmploymentStatus::Inactive
    } else if history.contains("leave") {
        EmploymentStatus::OnLeave
    } else if history.contains("pending") {
        EmploymentStatus::Pending
    } else if status.is_some_and(|s| s.eq_ignore_ascii_case("active")) {
        EmploymentStatus::Active
    } else {
        EmploymentStatus::Inactive
    }
}

fn to_employee(b: BambooEmployee) -> Employee {
    let status = normalise_status(b.status.as_deref(), b.employment_history_status.as_deref());
    let raw_status = match (&b.status, &b.employment_history_status) {
        (Some(s), Some(h)) => Some(format!("{s} / {h}")),
        (s, h) => s.clone().or(h.clone()),
    };
    let blank = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let mut e = Employee::new(b.id, status);
    e.employee_number = blank(b.employee_number);
    e.email = blank(b.work_email);
    e.given_name = blank(b.first_name);
    e.family_name = blank(b.last_name);
    e.raw_status = raw_status;
    e.department = blank(b.department);
    e.job_title = blank(b.job_title);
    e.location = blank(b.location);
    e.manager_id = blank(b.supervisor_eid);
    // BambooHR writes "0000-00-00" for an unset date.
    e.hire_date = blank(b.hire_date).filter(|d| !d.starts_with("0000"));
    e.termination_date = blank(b.termination_date).filter(|d| !d.starts_with("0000"));
    e.updated_at = blank(b.last_changed);
    e
}

/// Seconds the changes cursor reaches back before the listing started: a
/// change in the same second as the first page is seen again rather than
/// missed (planning it twice is harmless).
const CURSOR_OVERLAP_SECS: i64 = 2;

fn full_listing(page: u32, started: Option<String>) -> Result<EmployeePage, ConnectorError> {
    let body = serde_json::json!({ "fields": FIELDS });
    let response = Request::post(format!("{}/datasets/employee", api()?))
        .query("page", page.to_string())
        .query("page_size", page_size()?.to_string())
        .header("accept", "application/json")
        .json(&body)?
        .send()?
        .error_for_status()?;
    let started = match started {
        Some(started) => Some(started),
        None => response
            .header("date")
            .and_then(switchyard_sdk::time::parse_http_date)
            .map(|t| switchyard_sdk::time::rfc3339(t - CURSOR_OVERLAP_SECS)),
    };
    let response: DatasetPage = response.json()?;
    let employees = response.data.into_iter().map(to_employee).collect();
    let last = response.pagination.next_page.is_none();
    let started_text = started.clone().unwrap_or_default();
    if last && started.is_none() {
        log::warn("BambooHR sent no readable Date header: the next run lists everyone again");
    }
    Ok(EmployeePage {
        employees,
        next_cursor: (!last).then(|| format!("page|{}|{started_text}", page + 1)),
        changes_cursor: started.filter(|_| last).map(|s| format!("since|{s}")),
    })
}

/// A BambooHR webhook body.
#[derive(Deserialize)]
struct WebhookBody {
    employees: Vec<WebhookEmployee>,
}

#[derive(Deserialize)]
struct WebhookEmployee {
    #[serde(deserialize_with = "string_or_number")]
    id: String,
    #[serde(default)]
    action: Option<String>,
}

fn fetch_one(api: &str, id: &str) -> Result<Option<BambooEmployee>, ConnectorError> {
    let response = Request::get(format!("{api}/employees/{id}"))
        .query("fields", FIELDS.join(","))
        .header("accept", "application/json")
        .send()?;
    if response.status == 404 {
        return Ok(None);
    }
    response.error_for_status()?.json().map(Some)
}

fn changes(
    since: &str,
    latest: Option<String>,
    offset: usize,
) -> Result<EmployeePage, ConnectorError> {
    let api = api()?;
    let changed: Changed = Request::get(format!("{api}/employees/changed"))
        .query("since", since)
        .header("accept", "application/json")
        .send()?
        .error_for_status()?
        .json()?;
    // Pin `latest` on the first page so that later pages and the next run
    // agree on where this listing ends.
    let latest = latest
        .or(changed.latest)
        .unwrap_or_else(|| since.to_owned());
    let entries: Vec<(String, ChangedEntry)> = changed.employees.into_iter().collect();
    let mut employees = Vec::new();
    for (id, entry) in entries.iter().skip(offset).take(CHANGES_PAGE) {
        let found = if entry.action.eq_ignore_ascii_case("deleted") {
            None
        } else {
            fetch_one(&api, id)?
        };
        match found {
            Some(b) => employees.push(to_employee(b)),
            None => {
                // Deleted from BambooHR: evidence that the person is gone.
                let mut e = Employee::new(id.clone(), EmploymentStatus::Inactive);
                e.raw_status = Some("Deleted".into());
                employees.push(e);
            }
        }
    }
    let next = offset + CHANGES_PAGE;
    let last = next >= entries.len();
    Ok(EmployeePage {
        employees,
        next_cursor: (!last).then(|| format!("changes|{since}|{latest}|{next}")),
        changes_cursor: last.then(|| format!("since|{latest}")),
    })
}

/// BambooHR's training types, by id.
fn training_types(api: &str) -> Result<BTreeMap<String, TrainingType>, ConnectorError> {
    Request::get(format!("{api}/training/type"))
        .header("accept", "application/json")
        .send()?
        .error_for_status()?
        .json()
}

fn bad_cursor(cursor: &str) -> ConnectorError {
    ConnectorError::InvalidConfig(format!("unrecognised cursor `{cursor}`"))
}

impl HrisConnector for BambooHr {
    fn parse_webhook(webhook: Webhook) -> Result<Vec<WebhookEvent>, ConnectorError> {
        let body: WebhookBody = webhook.json()?;
        let api = api()?;
        let mut events = Vec::new();
        for entry in body.employees {
            if entry
                .action
                .as_deref()
                .is_some_and(|a| a.eq_ignore_ascii_case("deleted"))
            {
                continue;
            }
            if let Some(employee) = fetch_one(&api, &entry.id)? {
                events.push(WebhookEvent::EmployeeChanged(to_employee(employee)));
            }
        }
        Ok(events)
    }

    fn fetch_employees(cursor: Option<String>) -> Result<EmployeePage, ConnectorError> {
        let Some(cursor) = cursor else {
            return full_listing(1, None);
        };
        let parts: Vec<&str> = cursor.split('|').collect();
        match parts.as_slice() {
            ["page", page, started] => {
                let page = page.parse().map_err(|_| bad_cursor(&cursor))?;
                let started = (!started.is_empty()).then(|| (*started).to_owned());
                return full_listing(page, started);
            }
            ["since", since] => return changes(since, None, 0),
            ["changes", since, latest, offset] => {
                let offset = offset.parse().map_err(|_| bad_cursor(&cursor))?;
                return changes(since, Some((*latest).to_owned()), offset);
            }
            _ => {}
        }
        Err(bad_cursor(&cursor))
    }

    fn list_training_records(employee_id: String) -> Result<Vec<Record>, ConnectorError> {
        let api = api()?;
        let types = training_types(&api)?;
        let records: BTreeMap<String, TrainingRecord> =
            Request::get(format!("{api}/training/record/employee/{employee_id}"))
                .header("accept", "application/json")
                .send()?
                .error_for_status()?
                .json()?;
        // Records of training types that are not courses of the link come
        // back too (with the type's name); the host keeps what it knows.
        Ok(records
            .into_values()
            .filter_map(|r| {
                let kind = types.values().find(|t| t.id.to_string() == r.kind)?;
                Some(Record {
                    id: r.id,
                    course_id: kind.name.clone(),
                    completed_on: r.completed,
                })
            })
            .collect())
    }

    fn push_completion(
        completion: Completion,
        idempotency_key: String,
        supersedes: Option<String>,
    ) -> Result<(), ConnectorError> {
        let api = api()?;
        let types = training_types(&api)?;
        let Some(kind) = types.values().find(|t| t.name == completion.course_id) else {
            return Err(ConnectorError::Rejected(format!(
                "no BambooHR training type is named `{}`",
                completion.course_id
            )));
        };
        let records_url = format!("{api}/training/record/employee/{}", completion.employee_id);
        let marker = format!("switchyard:{idempotency_key}");

        // At-least-once delivery: a retry after a lost response must not add
        // a second record. The key travels in the record's notes.
        let existing = Request::get(&records_url)
            .query("type", kind.id.to_string())
            .header("accept", "application/json")
            .send()?
            .error_for_status()?;
        let existing: BTreeMap<String, TrainingRecord> = existing.json()?;
        if existing
            .values()
            .any(|r| r.notes.as_deref().is_some_and(|n| n.contains(&marker)))
        {
            log::info(&format!("training record {marker} already written"));
            return Ok(());
        }

        let status = match completion.status {
            CompletionStatus::Completed => "completed",
            CompletionStatus::Passed => "passed",
            CompletionStatus::Failed => "failed",
        };
        let mut notes = format!("{marker} attempt={} status={status}", completion.attempt_id);
        if let Some(score) = completion.score {
            notes.push_str(&format!(" score={score}"));
        }
        if let Some(expires) = &completion.expires_at {
            notes.push_str(&format!(" expires={expires}"));
        }
        let date = completion
            .completed_at
            .get(..10)
            .unwrap_or(&completion.completed_at);
        let body = serde_json::json!({ "completed": date, "type": kind.id, "notes": notes });

        // One record per employee and course: a new winner under the retake
        // policy replaces the record of the completion it supersedes, and
        // any record Switchyard wrote for this course before (a replay after
        // a crash may not know what it supersedes) is updated rather than a
        // second one added. Records written by people are left alone.
        let ours = |r: &&TrainingRecord| {
            r.notes
                .as_deref()
                .is_some_and(|n| n.contains("switchyard:"))
        };
        let replaced = supersedes
            .and_then(|previous| {
                let previous = format!("switchyard:{previous}");
                existing
                    .values()
                    .find(|r| r.notes.as_deref().is_some_and(|n| n.contains(&previous)))
            })
            .or_else(|| {
                existing
                    .values()
                    .filter(ours)
                    .min_by_key(|r| (r.id.len(), r.id.clone()))
            });
        let request = match replaced {
            Some(record) => Request::put(format!("{api}/training/record/{}", record.id)),
            None => Request::post(&records_url),
        };
        request
            .header("accept", "application/json")
            .json(&body)?
            .send()?
            .error_for_status()?;
        Ok(())
    }
}

switchyard_sdk::export_hris!(BambooHr);

/// Native unit tests against the SDK's mock host: `cargo test -p bamboohr`
/// (the test kit runs them; no wasm build, no simulator).
#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::mock::{MockHost, MockResponse};

    const API: &str = "https://acme.example/api/v1";

    fn host() -> MockHost {
        MockHost::new()
            .config("base_url", "https://acme.example")
            .config("page_size", "2")
    }

    #[test]
    fn a_full_listing_pages_and_its_changes_cursor_is_when_it_started() {
        let host = host()
            .on(
                "POST",
                &format!("{API}/datasets/employee?page=1&page_size=2"),
                MockResponse::json(
                    200,
                    serde_json::json!({
                        "data": [
                            {"id": 7, "firstName": "Ann", "status": "Active", "employmentHistoryStatus": "Full-Time", "hireDate": "0000-00-00"},
                            {"id": "8", "status": "Inactive", "employmentHistoryStatus": "Leave of Absence"},
                        ],
                        "pagination": {"next_page": "2"}
                    }),
                )
                .header("Date", "Wed, 02 Dec 2026 10:00:00 GMT"),
            )
            .on(
                "POST",
                &format!("{API}/datasets/employee?page=2&page_size=2"),
                MockResponse::json(
                    200,
                    serde_json::json!({
                        "data": [{"id": 9, "status": "Active", "employmentHistoryStatus": "Terminated"}],
                        "pagination": {"next_page": null}
                    }),
                )
                .header("Date", "Wed, 02 Dec 2026 10:05:00 GMT"),
            );
        let _installed = host.install();
        let first = BambooHr::fetch_employees(None).unwrap();
        assert_eq!(first.employees[0].id, "7");
        assert_eq!(first.employees[0].status, EmploymentStatus::Active);
        assert_eq!(first.employees[0].hire_date, None, "0000-00-00 is no date");
        assert_eq!(
            first.employees[1].status,
            EmploymentStatus::Inactive,
            "inactive with a leave entry has left"
        );
        let next = first.next_cursor.unwrap();
        assert_eq!(first.changes_cursor, None);
        let last = BambooHr::fetch_employees(Some(next)).unwrap();
        assert_eq!(last.employees[0].status, EmploymentStatus::Terminated);
        // The moment the listing started (first page's Date, less 2 s), not
        // the last page's.
        assert_eq!(
            last.changes_cursor.as_deref(),
            Some("since|2026-12-02T09:59:58Z")
        );
        let requests = host.requests();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].json()["fields"][0], "id");
    }

    #[test]
    fn a_completion_already_written_under_its_key_is_not_written_again() {
        let host = host()
            .on(
                "GET",
                &format!("{API}/training/type"),
                MockResponse::json(200, serde_json::json!({"1": {"id": 1, "name": "SAFETY"}})),
            )
            .on(
                "GET",
                &format!("{API}/training/record/employee/7?type=1"),
                MockResponse::json(
                    200,
                    serde_json::json!({"1001": {"id": 1001, "type": 1, "completed": "2026-03-01", "notes": "switchyard:key-1 attempt=1"}}),
                ),
            );
        let _installed = host.install();
        let completion = Completion {
            employee_id: "7".into(),
            course_id: "SAFETY".into(),
            attempt_id: "1".into(),
            status: CompletionStatus::Passed,
            completed_at: "2026-03-01T09:00:00Z".into(),
            score: Some(90.0),
            expires_at: None,
        };
        BambooHr::push_completion(completion.clone(), "key-1".into(), None).unwrap();
        assert!(
            host.requests().iter().all(|r| r.method == "GET"),
            "nothing written twice: {:?}",
            host.requests()
        );
        // A new attempt updates Switchyard's record, never adds one.
        let newer = Completion {
            attempt_id: "2".into(),
            ..completion
        };
        let host = host.on(
            "PUT",
            &format!("{API}/training/record/1001"),
            MockResponse::status(200),
        );
        BambooHr::push_completion(newer, "key-2".into(), Some("key-1".into())).unwrap();
        let put = host
            .requests()
            .into_iter()
            .find(|r| r.method == "PUT")
            .unwrap();
        assert_eq!(put.json()["completed"], "2026-03-01");
        assert!(
            put.json()["notes"]
                .as_str()
                .unwrap()
                .contains("switchyard:key-2")
        );
        assert!(host.requests().iter().all(|r| r.method != "POST"));
    }

    #[test]
    fn training_records_are_listed_by_course_and_errors_are_classified() {
        let host = host()
            .on(
                "GET",
                &format!("{API}/training/type"),
                MockResponse::json(200, serde_json::json!({"1": {"id": 1, "name": "SAFETY"}})),
            )
            .on(
                "GET",
                &format!("{API}/training/record/employee/7"),
                MockResponse::json(
                    200,
                    serde_json::json!({
                        "1001": {"id": 1001, "type": 1, "completed": "2026-03-01"},
                        "1002": {"id": "1002", "type": "1", "completed": "2026-03-02"},
                        "1003": {"id": 1003, "type": 99, "completed": "2026-03-03"},
                    }),
                ),
            )
            .on(
                "GET",
                &format!("{API}/training/record/employee/8"),
                MockResponse::status(429).header("Retry-After", "30"),
            );
        let _installed = host.install();
        let records = BambooHr::list_training_records("7".into()).unwrap();
        let listed: Vec<(&str, &str)> = records
            .iter()
            .map(|r| (r.course_id.as_str(), r.completed_on.as_str()))
            .collect();
        assert_eq!(listed, [("SAFETY", "2026-03-01"), ("SAFETY", "2026-03-02")]);
        let err = BambooHr::list_training_records("8".into()).unwrap_err();
        assert!(
            matches!(err, ConnectorError::RateLimited(Some(30))),
            "{err:?}"
        );
    }
}
