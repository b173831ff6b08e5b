//! Moodle connector (LMS world).
//!
//! Translates Moodle web services (REST protocol, JSON format) into
//! Switchyard's canonical records. The web-service token (`wstoken`) is
//! injected by the host as a query parameter; this plugin never sees it.
//!
//! Moodle reports most errors as HTTP 200 with an `exception` body, so every
//! response body is checked, not only the status.
//!
//! Functions used: `core_user_get_users_by_field`, `core_user_create_users`,
//! `core_user_update_users`, `core_course_get_courses_by_field`,
//! `enrol_manual_enrol_users`, and `local_switchyard_get_course_completions`.
//! The account and enrolment functions take many records per call, and the
//! plugin sends up to the host's batch of 100 in one (`batch.rs`).
//! `list-accounts` pages by the first character of the email (Moodle has no
//! paged listing of users and requires an email): one `core_user_get_users`
//! call per character, 53 in all; a page's size is bounded by the
//! connector's `max_response_kib`, `max_records` and `max_output_kib`
//! (about 300 bytes an account).
//! Moodle has no core function that lists completions across courses; the
//! last one comes from a small companion local plugin (a read-only query of
//! `course_completions` joined to the user and course `idnumber`s).
//!
//! Config keys (all optional but `base_url`):
//! - `base_url`: the Moodle site, e.g. `https://lms.acme.example`;
//! - `role_id`: role given on enrolment (default 5, student);
//! - `username_prefix`: new accounts are named `{prefix}{hris id}` (default `hris-`);
//! - `due_as_timeend`: `true` (default) sends a due date as the enrolment's
//!   end time; `false` ignores due dates;
//! - `page_size`: completions per page (default 200);
//! - `accounts_per_page`: accounts in one `list-accounts` page (default
//!   5000; the host refuses a page of more than `max_records`).
//!
//! Identity: the Moodle `idnumber` holds the HRIS employee id, so a retry
//! after a lost response finds the account it created instead of creating
//! a second one.
//!
//! Webhooks: the companion local plugin posts each `\core\event\course_completed`
//! to Switchyard, signed the Standard Webhooks way (the host verifies it), as
//! `{"eventname": "\\core\\event\\course_completed", "completion": {...}}` where
//! `completion` is the row `local_switchyard_get_course_completions` lists
//! (same id, so the next poll recognises the attempt). Other event names are
//! acknowledged and ignored.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use switchyard_sdk::http::Request;
use switchyard_sdk::time::{days_from_civil, rfc3339};
use switchyard_sdk::{
    AccountPage, AccountWrite, AccountWritten, Completion, CompletionPage, CompletionStatus,
    ConnectorError, Employee, EnrollmentWrite, ItemResult, LmsConnector, LmsUser, Webhook,
    WebhookEvent, config,
};

mod batch;

struct Moodle;

#[derive(Deserialize)]
struct MoodleException {
    exception: String,
    errorcode: Option<String>,
    message: Option<String>,
    debuginfo: Option<String>,
}

#[derive(Deserialize)]
struct User {
    id: u64,
    username: Option<String>,
    firstname: Option<String>,
    lastname: Option<String>,
    #[serde(default)]
    suspended: bool,
    email: Option<String>,
    idnumber: Option<String>,
}

#[derive(Deserialize)]
struct Courses {
    courses: Vec<Course>,
}

#[derive(Deserialize)]
struct Course {
    id: u64,
}

#[derive(Deserialize)]
struct CompletionRows {
    completions: Vec<CompletionRow>,
    more: bool,
}

/// A webhook delivery from the companion local plugin.
#[derive(Deserialize)]
struct WebhookBody {
    eventname: String,
    completion: Option<CompletionRow>,
}

const COURSE_COMPLETED: &str = "\\core\\event\\course_completed";

#[derive(Deserialize)]
struct CompletionRow {
    id: u64,
    useridnumber: Option<String>,
    courseidnumber: Option<String>,
    timecompleted: i64,
    grade: Option<f64>,
    passed: Option<bool>,
}

/// Call one web-service function with form parameters in Moodle's array
/// notation; return its JSON result or the error the host should act on.
fn call(function: &str, params: &[(String, String)]) -> Result<Value, ConnectorError> {
    let base = config::require("base_url")?;
    let response = Request::post(format!(
        "{}/webservice/rest/server.php",
        base.trim_end_matches('/')
    ))
    .query("wsfunction", function)
    .query("moodlewsrestformat", "json")
    .form(params)
    .send()?
    .error_for_status()?;
    let value: Value = response.json()?;
    if value.get("exception").is_some() {
        let e: MoodleException = serde_json::from_value(value)
            .map_err(|e| ConnectorError::Transient(format!("malformed Moodle exception: {e}")))?;
        return Err(exception_error(function, e));
    }
    Ok(value)
}

/// Moodle's error codes, by what the host should do about them.
fn exception_error(function: &str, e: MoodleException) -> ConnectorError {
    let code = e.errorcode.unwrap_or_default();
    let mut detail = format!(
        "{function}: {} ({code}): {}",
        e.exception,
        e.message.unwrap_or_default()
    );
    if let Some(debug) = e.debuginfo {
        detail.push_str(&format!(" [{debug}]"));
    }
    match code.as_str() {
        "invalidtoken" | "accessexception" | "nopermissions" | "usernotfullysetup" => {
            ConnectorError::Unauthorized(detail)
        }
        "invalidrecord" | "webservicesnotenabled" | "servicenotavailable" => {
            ConnectorError::InvalidConfig(detail)
        }
        "sitemaintenance" | "dbconnectionfailed" => ConnectorError::Transient(detail),
        _ => ConnectorError::Rejected(detail),
    }
}

fn decode<T: serde::de::DeserializeOwned>(function: &str, v: Value) -> Result<T, ConnectorError> {
    serde_json::from_value(v)
        .map_err(|e| ConnectorError::Transient(format!("{function}: unexpected response: {e}")))
}

fn param(name: &str, value: impl ToString) -> (String, String) {
    (name.to_owned(), value.to_string())
}

/// The accounts whose `idnumber` is one of `ids`, in one call.
fn held_accounts(ids: &[&str]) -> Result<BTreeMap<String, User>, ConnectorError> {
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    const F: &str = "core_user_get_users_by_field";
    let mut params = vec![param("field", "idnumber")];
    params.extend(
        ids.iter()
            .enumerate()
            .map(|(k, id)| param(&format!("values[{k}]"), id)),
    );
    let users: Vec<User> = decode(F, call(F, &params)?)?;
    Ok(users
        .into_iter()
        .filter_map(|u| Some((u.idnumber.clone().filter(|s| !s.is_empty())?, u)))
        .collect())
}

fn find_by_idnumber(hris_id: &str) -> Result<Option<User>, ConnectorError> {
    Ok(held_accounts(&[hris_id])?.remove(hris_id))
}

/// The parameters of a new account (`{prefix}` is `users[k]`): a username
/// from the HRIS id, manual auth with a password Moodle makes, the profile.
fn new_user_params(e: &Employee, prefix: &str) -> Result<Vec<(String, String)>, ConnectorError> {
    let name_prefix = config::get("username_prefix").unwrap_or_else(|| "hris-".into());
    let username = format!("{name_prefix}{}", e.id).to_lowercase();
    let mut params = vec![
        param(&format!("{prefix}[username]"), username),
        param(&format!("{prefix}[auth]"), "manual"),
        param(&format!("{prefix}[createpassword]"), 1),
    ];
    params.extend(profile(e, prefix)?);
    Ok(params)
}

fn parse_user_id(id: &str) -> Result<u64, ConnectorError> {
    id.parse()
        .map_err(|_| ConnectorError::Rejected(format!("`{id}` is not a Moodle user id")))
}

/// Profile fields Moodle requires, from the employee record.
fn profile(e: &Employee, prefix: &str) -> Result<Vec<(String, String)>, ConnectorError> {
    let email = e
        .email
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ConnectorError::Rejected(format!(
                "employee {} has no email; Moodle requires one",
                e.id
            ))
        })?;
    let mut params = vec![
        param(
            &format!("{prefix}[firstname]"),
            e.given_name.as_deref().unwrap_or("-"),
        ),
        param(
            &format!("{prefix}[lastname]"),
            e.family_name.as_deref().unwrap_or("-"),
        ),
        param(&format!("{prefix}[email]"), email),
        param(&format!("{prefix}[idnumber]"), &e.id),
    ];
    // Optional profile fields: sent only when the host passed them on
    // (the link's field allowlist decides).
    for (field, value) in [("department", &e.department), ("city", &e.location)] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            params.push(param(&format!("{prefix}[{field}]"), v));
        }
    }
    Ok(params)
}

fn course_id(key: &str) -> Result<u64, ConnectorError> {
    const F: &str = "core_course_get_courses_by_field";
    let found: Courses = decode(
        F,
        call(F, &[param("field", "idnumber"), param("value", key)])?,
    )?;
    found
        .courses
        .first()
        .map(|c| c.id)
        .ok_or_else(|| ConnectorError::Rejected(format!("no Moodle course has idnumber `{key}`")))
}

/// `yyyy-mm-dd` as the Unix time of the end of that day (UTC).
fn end_of_day(date: &str) -> Result<i64, ConnectorError> {
    let bad = || ConnectorError::Rejected(format!("due date `{date}` is not yyyy-mm-dd"));
    let mut parts = date
        .splitn(3, '-')
        .map(|p| p.parse::<i64>().map_err(|_| bad()));
    let (y, m, d) = (
        parts.next().ok_or_else(bad)??,
        parts.next().ok_or_else(bad)??,
        parts.next().ok_or_else(bad)??,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    Ok(days_from_civil(y, m, d) * 86_400 + 86_399)
}

/// A completion row as a canonical completion; `None` for accounts not
/// provisioned from the HRIS (no idnumber) and courses without an idnumber,
/// which are outside every link's rules.
fn completion(r: CompletionRow) -> Option<Completion> {
    let employee_id = r.useridnumber.filter(|s| !s.is_empty())?;
    let course_id = r.courseidnumber.filter(|s| !s.is_empty())?;
    Some(Completion {
        employee_id,
        course_id,
        attempt_id: r.id.to_string(),
        status: match r.passed {
            Some(true) => CompletionStatus::Passed,
            Some(false) => CompletionStatus::Failed,
            None => CompletionStatus::Completed,
        },
        completed_at: rfc3339(r.timecompleted),
        score: r.grade,
        expires_at: None,
    })
}

impl LmsConnector for Moodle {
    fn upsert_users(
        items: Vec<AccountWrite>,
    ) -> Result<Vec<ItemResult<AccountWritten>>, ConnectorError> {
        batch::upsert_users(items)
    }

    fn enroll_all(items: Vec<EnrollmentWrite>) -> Result<Vec<ItemResult<()>>, ConnectorError> {
        batch::enroll_all(items)
    }

    fn list_accounts(cursor: Option<String>) -> Result<AccountPage, ConnectorError> {
        batch::list_accounts(cursor)
    }

    fn parse_webhook(webhook: Webhook) -> Result<Vec<WebhookEvent>, ConnectorError> {
        let body: WebhookBody = webhook.json()?;
        if body.eventname != COURSE_COMPLETED {
            return Ok(Vec::new());
        }
        let row = body.completion.ok_or_else(|| {
            ConnectorError::Rejected("course_completed webhook without `completion`".into())
        })?;
        Ok(completion(row)
            .map(WebhookEvent::Completion)
            .into_iter()
            .collect())
    }

    fn upsert_user(
        employee: Employee,
        lms_user_id: Option<String>,
        _idempotency_key: String,
    ) -> Result<String, ConnectorError> {
        let existing = match lms_user_id {
            Some(id) => Some(parse_user_id(&id)?),
            None => find_by_idnumber(&employee.id)?.map(|u| u.id),
        };
        if let Some(id) = existing {
            let mut params = vec![param("users[0][id]", id)];
            params.extend(profile(&employee, "users[0]")?);
            call("core_user_update_users", &params)?;
            return Ok(id.to_string());
        }
        let params = new_user_params(&employee, "users[0]")?;
        const F: &str = "core_user_create_users";
        let created: Vec<User> = decode(F, call(F, &params)?)?;
        created
            .first()
            .map(|u| u.id.to_string())
            .ok_or_else(|| ConnectorError::Transient(format!("{F} returned no user")))
    }

    fn set_active(lms_user_id: String, active: bool, _key: String) -> Result<(), ConnectorError> {
        let id = parse_user_id(&lms_user_id)?;
        call(
            "core_user_update_users",
            &[
                param("users[0][id]", id),
                param("users[0][suspended]", u8::from(!active)),
            ],
        )?;
        Ok(())
    }

    fn find_user(employee_id: String) -> Result<Option<LmsUser>, ConnectorError> {
        Ok(find_by_idnumber(&employee_id)?.map(|u| LmsUser {
            id: u.id.to_string(),
            active: !u.suspended,
            email: u.email,
        }))
    }

    fn unenroll(lms_user_id: String, course: String, _key: String) -> Result<(), ConnectorError> {
        let user = parse_user_id(&lms_user_id)?;
        let course = course_id(&course)?;
        call(
            "enrol_manual_unenrol_users",
            &[
                param("enrolments[0][userid]", user),
                param("enrolments[0][courseid]", course),
            ],
        )?;
        Ok(())
    }

    fn enroll(
        lms_user_id: String,
        course: String,
        due: Option<String>,
        _key: String,
    ) -> Result<(), ConnectorError> {
        let user = parse_user_id(&lms_user_id)?;
        let course = course_id(&course)?;
        let role = config::get("role_id").unwrap_or_else(|| "5".into());
        let mut params = vec![
            param("enrolments[0][roleid]", role),
            param("enrolments[0][userid]", user),
            param("enrolments[0][courseid]", course),
        ];
        let due_as_timeend = config::get("due_as_timeend").is_none_or(|v| v != "false");
        if let (Some(due), true) = (due, due_as_timeend) {
            params.push(param("enrolments[0][timeend]", end_of_day(&due)?));
        }
        call("enrol_manual_enrol_users", &params)?;
        Ok(())
    }

    fn fetch_completions(cursor: Option<String>) -> Result<CompletionPage, ConnectorError> {
        const F: &str = "local_switchyard_get_course_completions";
        let after: u64 = match &cursor {
            None => 0,
            Some(c) => c.parse().map_err(|_| {
                ConnectorError::InvalidConfig(format!("unrecognised completion cursor `{c}`"))
            })?,
        };
        let limit = config::get("page_size").unwrap_or_else(|| "200".into());
        let rows: CompletionRows = decode(
            F,
            call(F, &[param("afterid", after), param("limitnum", limit)])?,
        )?;
        let last = rows.completions.last().map(|r| r.id).unwrap_or(after);
        let completions = rows
            .completions
            .into_iter()
            .filter_map(completion)
            .collect();
        Ok(CompletionPage {
            completions,
            next_cursor: Some(last.to_string()),
            more: rows.more,
        })
    }
}

switchyard_sdk::export_lms!(Moodle);
