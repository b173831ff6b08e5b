//! In-memory LMS simulator shaped like [Moodle web services] over the REST protocol.
//!
//! Long on purpose: one file per simulated vendor, so that everything the
//! simulator does the Moodle way (auth, paging, errors, throttling, fault
//! injection, the call log) can be checked against the vendor docs in one place.
//!
//! [`LmsSim::start`] binds `127.0.0.1:0`, serves `/webservice/rest/server.php` from a tokio
//! task and exposes the simulated site's users, courses, enrolments and completions to
//! tests, with fault injection and a call log. Dropping the [`LmsSim`] (or calling
//! [`LmsSim::shutdown`]) stops the server.
//!
//! [Moodle web services]: https://moodledev.io/docs/apis/subsystems/external
//!
//! # Mimicked protocol
//!
//! `POST` (or `GET`) `/webservice/rest/server.php`. Parameters are read from the query
//! string and the `application/x-www-form-urlencoded` body (body wins on conflicts):
//! `wstoken`, `wsfunction`, `moodlewsrestformat=json` and the function's arguments in
//! PHP array notation (`users[0][username]=jdoe`, `values[0]=101`, `values[]=102`).
//! Errors follow Moodle: HTTP 200 with
//! `{"exception": "...", "errorcode": "...", "message": "...", "debuginfo": "..."}`:
//!
//! * missing/wrong token: `moodle_exception` / `invalidtoken`;
//! * unknown `wsfunction`: `dml_missing_record_exception` / `invalidrecord`;
//! * bad arguments (missing, malformed, unexpected keys, business-rule violations such as
//!   a duplicate username): `invalid_parameter_exception` / `invalidparameter` with the
//!   detail in `debuginfo`.
//!
//! Implemented functions: `core_user_create_users`, `core_user_get_users_by_field`,
//! `core_user_get_users`,
//! `core_user_update_users`, `core_course_get_courses_by_field`,
//! `enrol_manual_enrol_users`, `core_completion_get_course_completion_status`, and
//! `local_switchyard_get_course_completions`, which is not core Moodle but the web service
//! of a companion local plugin (`local_switchyard`) that lists course completions
//! incrementally by completion id.
//!
//! # Deviations from real Moodle
//!
//! * Only `moodlewsrestformat=json` is supported (Moodle defaults to XML); anything else is
//!   an `invalidparameter` exception. Fault injection and the format check come before the
//!   token check.
//! * Exception classes are reported without namespaces (`moodle_exception`, not
//!   `core\exception\moodle_exception` as in Moodle 4.2+).
//! * `core_user_create_users` keeps Moodle's checks (username, firstname, lastname and
//!   email required; username must be a clean lowercase `PARAM_USERNAME`; internal auth
//!   methods need `password` or `createpassword`; duplicate usernames are rejected for the
//!   whole batch) but, like a site with `allowaccountssameemail` on, allows duplicate
//!   emails; `idnumber` is never unique-enforced, as in Moodle. Passwords are not stored.
//! * `core_user_update_users` raises an `invalidparameter` exception for an unknown user id
//!   (Moodle 4.x reports a warning instead) and validates the whole batch before changing
//!   anything.
//! * `core_user_get_users_by_field` always includes `idnumber`, `suspended` and `auth`
//!   (Moodle omits some of them depending on value and capabilities).
//! * `enrol_manual_enrol_users` accepts the roles assignable in a course (1 manager,
//!   3 editingteacher, 4 teacher, 5 student); re-enrolling a user replaces the role and the
//!   given `timestart`/`timeend` instead of adding a role assignment. `suspend` is accepted
//!   and ignored.
//! * `core_completion_get_course_completion_status` reports `completed` only; the criteria
//!   list is always empty. A user neither enrolled nor completed gets Moodle's
//!   `nottracked` exception.
//! * Time is a logical clock: completion `n` is stamped `1767225600 + n`
//!   (2026-01-01T00:00:00Z plus n seconds).
//!
//! # Control API
//!
//! Not Moodle's: how a test or an integrator changes the simulated site over
//! HTTP, with no Rust code. Under `/_sim/`, with no token, never faulted and
//! not in the call log. Bodies and answers are JSON.
//!
//! | Route | Does |
//! |---|---|
//! | `GET /_sim/state` | every user, course, enrolment (with the user's and course's idnumber) and completion |
//! | `POST /_sim/users` | an account made by hand: `{"username", "idnumber", "email", "suspended"}` |
//! | `POST /_sim/courses` | a course: `{"idnumber", "fullname"}` (`fullname` defaults from the idnumber) |
//! | `POST /_sim/completions` | a learner completes a course: `{"idnumber", "course", "grade", "passed"}` (grade and passed optional) |
//! | `GET /_sim/calls` | the call log |
//! | `POST`, `GET`, `DELETE /_sim/faults` | scripted faults ([`crate::control::FaultRule`]) |

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::control::{self, Faults, control_error};

/// Unix time of `2026-01-01T00:00:00Z`, the origin of the logical clock.
const CLOCK_EPOCH: i64 = 1_767_225_600;
/// Id of Moodle's site course / admin user; seeded entities start after it.
const FIRST_ID: u64 = 2;
/// Roles the manual enrolment plugin can assign in a course.
const ASSIGNABLE_ROLES: [u64; 4] = [1, 3, 4, 5];
/// Auth plugins accepted by `core_user_create_users`, and the internal ones among them.
#[rustfmt::skip]
const AUTH_PLUGINS: [&str; 11] = [
    "manual", "email", "nologin", "ldap", "oauth2", "saml2", "cas", "db", "lti",
    "shibboleth", "none",
];
const INTERNAL_AUTH: [&str; 3] = ["manual", "email", "none"];
/// Functions counted by [`LmsSim::write_count`].
const WRITE_FUNCTIONS: [&str; 4] = [
    "core_user_create_users",
    "core_user_update_users",
    "enrol_manual_enrol_users",
    "enrol_manual_unenrol_users",
];

/// Keys Moodle accepts per user in `core_user_create_users` (most are accepted and ignored).
#[rustfmt::skip]
const CREATE_USER_KEYS: &[&str] = &[
    "createpassword", "username", "auth", "password", "firstname", "lastname", "email",
    "maildisplay", "city", "country", "timezone", "description", "firstnamephonetic",
    "lastnamephonetic", "middlename", "alternatename", "interests", "idnumber",
    "institution", "department", "phone1", "phone2", "address", "lang", "calendartype",
    "theme", "mailformat", "customfields", "preferences",
];
/// Keys Moodle accepts per user in `core_user_update_users`.
#[rustfmt::skip]
const UPDATE_USER_KEYS: &[&str] = &[
    "id", "username", "auth", "suspended", "password", "firstname", "lastname", "email",
    "maildisplay", "city", "country", "timezone", "description", "userpicture",
    "firstnamephonetic", "lastnamephonetic", "middlename", "alternatename", "interests",
    "idnumber", "institution", "department", "phone1", "phone2", "address", "lang",
    "calendartype", "theme", "mailformat", "customfields", "preferences",
];
const ENROLMENT_KEYS: &[&str] = &[
    "roleid",
    "userid",
    "courseid",
    "timestart",
    "timeend",
    "suspend",
];

/// What a fresh [`LmsSim`] contains.
#[derive(Clone, Debug)]
pub struct LmsSeed {
    /// Course idnumbers (also used as shortnames); courses get ids 2, 3, ... in this order.
    pub courses: Vec<String>,
    /// The web service token accepted as `wstoken`.
    pub token: String,
}

impl Default for LmsSeed {
    fn default() -> Self {
        Self {
            courses: vec![
                "SAFETY-2026".to_owned(),
                "CODE-OF-CONDUCT".to_owned(),
                "FORKLIFT-CERT".to_owned(),
            ],
            token: "test-moodle-token".to_owned(),
        }
    }
}

/// A Moodle user (the admin, id 1, is not modelled).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LmsUser {
    /// User id (from 2).
    pub id: u64,
    /// Unique, lowercase login name.
    pub username: String,
    /// Given name.
    pub firstname: String,
    /// Family name.
    pub lastname: String,
    /// E-mail address.
    pub email: String,
    /// Free-text external id; not unique.
    pub idnumber: String,
    /// Whether the account is suspended.
    pub suspended: bool,
    /// Authentication plugin, e.g. `"manual"`.
    pub auth: String,
    /// Profile field `department` ("" when never set).
    pub department: String,
    /// Profile field `city` ("" when never set).
    pub city: String,
}

/// A Moodle course.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LmsCourse {
    /// Course id (from 2; 1 is the site course).
    pub id: u64,
    /// Short name (the seed idnumber).
    pub shortname: String,
    /// Human-readable name.
    pub fullname: String,
    /// External id used to match HRIS training types.
    pub idnumber: String,
}

/// A manual enrolment of a user in a course with one role.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Enrolment {
    /// Enrolled user id.
    pub userid: u64,
    /// Course id.
    pub courseid: u64,
    /// Role id (5 = student).
    pub roleid: u64,
    /// Unix seconds.
    pub timestart: Option<i64>,
    /// Unix seconds.
    pub timeend: Option<i64>,
}

/// One course completion (a retake appends another row).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CompletionRow {
    /// Completion id (from 1), the cursor of `local_switchyard_get_course_completions`.
    pub id: u64,
    /// User id.
    pub userid: u64,
    /// Course id.
    pub courseid: u64,
    /// Unix seconds on the logical clock.
    pub timecompleted: i64,
    /// Final grade, if any.
    pub grade: Option<f64>,
    /// Whether the grade passed, if known.
    pub passed: Option<bool>,
}

/// One web service call the simulator answered.
#[derive(Clone, Debug)]
pub struct CallLogEntry {
    /// The `wsfunction` parameter, or `""` if it was missing.
    pub wsfunction: String,
    /// HTTP status (200 even for Moodle exceptions).
    pub status: u16,
    /// Whether the body was a Moodle exception.
    pub exception: bool,
    /// The exception's `errorcode`, if any.
    pub errorcode: Option<String>,
}

/// A running Moodle-shaped server. Stops when dropped.
pub struct LmsSim {
    addr: SocketAddr,
    state: Shared,
    faults: Arc<Faults>,
    shutdown_tx: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

type Shared = Arc<Mutex<LmsState>>;

fn lock(state: &Shared) -> MutexGuard<'_, LmsState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl LmsSim {
    /// Seeds the courses, binds `127.0.0.1:0` and starts serving on a tokio task.
    pub async fn start(seed: LmsSeed) -> anyhow::Result<LmsSim> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the LMS simulator to 127.0.0.1:0")?;
        let addr = listener
            .local_addr()
            .context("reading the LMS simulator address")?;
        let state: Shared = Arc::new(Mutex::new(LmsState::seeded(&seed)));
        let app = Router::new()
            .route(
                "/webservice/rest/server.php",
                get(server_php).post(server_php),
            )
            .route("/_sim/state", get(control_state))
            .route("/_sim/users", post(control_add_user))
            .route("/_sim/courses", post(control_add_course))
            .route("/_sim/completions", post(control_complete))
            .route("/_sim/calls", get(control_calls))
            .fallback(|| async { StatusCode::NOT_FOUND })
            .with_state(state.clone());
        let faults = Arc::new(Faults::default());
        let app = app.merge(control::fault_routes(faults.clone()));
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let task = control::serve(listener, app, faults.clone(), shutdown_rx);
        tracing::debug!(%addr, "LMS simulator listening");
        Ok(LmsSim {
            addr,
            state,
            faults,
            shutdown_tx: Some(shutdown_tx),
            task,
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash (the endpoint is
    /// `{base_url}/webservice/rest/server.php`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The accepted `wstoken`.
    pub fn token(&self) -> String {
        lock(&self.state).token.clone()
    }

    /// All users, ordered by id.
    pub fn users(&self) -> Vec<LmsUser> {
        lock(&self.state).users.values().cloned().collect()
    }

    /// Adds an account as an administrator or a CSV import would, outside any
    /// client: `username` must be free. Returns its id.
    pub fn add_user(&self, username: &str, idnumber: &str, email: &str, suspended: bool) -> u64 {
        lock(&self.state).add_user(username, idnumber, email, suspended)
    }

    /// As [`LmsSim::add_user`], with the person's names (an account made
    /// by hand gets "Existing Account" otherwise).
    pub fn add_named_user(
        &self,
        username: &str,
        idnumber: &str,
        email: &str,
        name: (&str, &str),
    ) -> u64 {
        let mut s = lock(&self.state);
        let id = s.add_user(username, idnumber, email, false);
        if let Some(u) = s.users.get_mut(&id) {
            u.firstname = name.0.into();
            u.lastname = name.1.into();
        }
        id
    }

    /// Every user with this idnumber (more than one if a client created duplicates).
    pub fn user_by_idnumber(&self, idnumber: &str) -> Vec<LmsUser> {
        lock(&self.state)
            .users
            .values()
            .filter(|u| u.idnumber == idnumber)
            .cloned()
            .collect()
    }

    /// All courses, ordered by id.
    pub fn courses(&self) -> Vec<LmsCourse> {
        lock(&self.state).courses.clone()
    }

    /// All enrolments, in creation order.
    pub fn enrolments(&self) -> Vec<Enrolment> {
        lock(&self.state).enrolments.clone()
    }

    /// Enrolments of every user with this idnumber, paired with the course idnumber.
    pub fn enrolments_of(&self, idnumber: &str) -> Vec<(String, Enrolment)> {
        let s = lock(&self.state);
        s.enrolments
            .iter()
            .filter(|e| {
                s.users
                    .get(&e.userid)
                    .is_some_and(|u| u.idnumber == idnumber)
            })
            .filter_map(|e| {
                s.course(e.courseid)
                    .map(|c| (c.idnumber.clone(), e.clone()))
            })
            .collect()
    }

    /// Records a completion of the course by the user (both by idnumber) and returns the
    /// new completion id. Retakes append further rows. Enrolment is not required. Fails if
    /// the user or course is unknown or the user idnumber is ambiguous.
    pub fn mark_completed(
        &self,
        user_idnumber: &str,
        course_idnumber: &str,
        grade: Option<f64>,
        passed: Option<bool>,
    ) -> anyhow::Result<u64> {
        lock(&self.state).mark_completed(user_idnumber, course_idnumber, grade, passed)
    }

    /// The body the companion local plugin posts to Switchyard when
    /// completion `id` is recorded (`\core\event\course_completed` with the
    /// row `local_switchyard_get_course_completions` lists).
    pub fn completion_webhook_body(&self, id: u64) -> anyhow::Result<Vec<u8>> {
        let s = lock(&self.state);
        let row = s
            .completions
            .iter()
            .find(|c| c.id == id)
            .ok_or_else(|| anyhow!("no completion {id}"))?;
        let body = json!({
            "eventname": "\\core\\event\\course_completed",
            "completion": completion_json(&s, row),
        });
        Ok(serde_json::to_vec(&body)?)
    }

    /// The Standard Webhooks headers the companion plugin sends with `body`:
    /// `webhook-id`, `webhook-timestamp` and `webhook-signature` signed with
    /// `secret` (`whsec_...`).
    pub fn sign_webhook(
        secret: &str,
        id: &str,
        timestamp: i64,
        body: &[u8],
    ) -> anyhow::Result<Vec<(String, String)>> {
        use switchyard::webhook::verify::{SigningKey, sign_standard};
        let key = SigningKey::standard(secret).map_err(|e| anyhow!(e))?;
        Ok(vec![
            ("webhook-id".into(), id.to_owned()),
            ("webhook-timestamp".into(), timestamp.to_string()),
            (
                "webhook-signature".into(),
                sign_standard(&key, id, timestamp, body),
            ),
        ])
    }

    /// All completions, ordered by id.
    pub fn completions(&self) -> Vec<CompletionRow> {
        lock(&self.state).completions.clone()
    }

    /// The next `n` requests get HTTP 503 with `Retry-After: retry_after_secs`.
    /// Replaces any pending count; takes precedence over
    /// [`fail_next_with_exception`](Self::fail_next_with_exception).
    pub fn fail_next(&self, n: usize, retry_after_secs: u32) {
        let mut s = lock(&self.state);
        s.fail_unavailable = n;
        s.retry_after_secs = retry_after_secs;
    }

    /// The next `n` requests get HTTP 200 with a Moodle exception carrying `errorcode`
    /// (class and message chosen to match Moodle for known codes). Replaces any pending count.
    pub fn fail_next_with_exception(&self, n: usize, errorcode: &str) {
        let mut s = lock(&self.state);
        s.fail_exception = n;
        s.fail_errorcode = errorcode.to_owned();
    }

    /// Delays every response by `d` (`Duration::ZERO` turns the delay off).
    pub fn set_latency(&self, d: Duration) {
        lock(&self.state).latency = d;
    }

    /// The scripted faults of the control API (`/_sim/faults`).
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Every answered call since start or the last [`reset_request_log`](Self::reset_request_log).
    pub fn calls(&self) -> Vec<CallLogEntry> {
        lock(&self.state).calls.clone()
    }

    /// Number of successful (HTTP 200, no exception) calls of `core_user_create_users`,
    /// `core_user_update_users` and `enrol_manual_enrol_users`.
    pub fn write_count(&self) -> usize {
        lock(&self.state)
            .calls
            .iter()
            .filter(|c| {
                c.status == 200 && !c.exception && WRITE_FUNCTIONS.contains(&c.wsfunction.as_str())
            })
            .count()
    }

    /// Clears the call log (and with it [`write_count`](Self::write_count)).
    pub fn reset_request_log(&self) {
        lock(&self.state).calls.clear();
    }

    /// Stops the server (same as dropping the handle).
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for LmsSim {
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

/// A user index key: usernames and emails compare trimmed and without case.
fn index_key(field: &str, value: &str) -> String {
    match field {
        "username" | "email" => format!("{field}\0{}", value.trim().to_lowercase()),
        _ => format!("{field}\0{value}"),
    }
}

struct LmsState {
    token: String,
    users: BTreeMap<u64, LmsUser>,
    /// Users by `field \0 value` (username, idnumber, email, as Moodle
    /// compares them), as a database index would find them: entries may be
    /// stale after an update, so every hit is checked against the user.
    user_index: HashMap<String, BTreeSet<u64>>,
    next_user_id: u64,
    /// Ordered by id.
    courses: Vec<LmsCourse>,
    enrolments: Vec<Enrolment>,
    /// Where (user, course) is in `enrolments`.
    enrolment_at: HashMap<(u64, u64), usize>,
    completions: Vec<CompletionRow>,
    next_completion_id: u64,
    /// Seconds elapsed on the logical clock since `CLOCK_EPOCH`.
    clock: i64,
    fail_unavailable: usize,
    retry_after_secs: u32,
    fail_exception: usize,
    fail_errorcode: String,
    latency: Duration,
    calls: Vec<CallLogEntry>,
}

impl LmsState {
    fn seeded(seed: &LmsSeed) -> Self {
        let courses = seed
            .courses
            .iter()
            .zip(FIRST_ID..)
            .map(|(idnumber, id)| LmsCourse {
                id,
                shortname: idnumber.clone(),
                fullname: course_fullname(idnumber),
                idnumber: idnumber.clone(),
            })
            .collect();
        Self {
            token: seed.token.clone(),
            users: BTreeMap::new(),
            user_index: HashMap::new(),
            next_user_id: FIRST_ID,
            courses,
            enrolments: Vec::new(),
            enrolment_at: HashMap::new(),
            completions: Vec::new(),
            next_completion_id: 1,
            clock: 0,
            fail_unavailable: 0,
            retry_after_secs: 0,
            fail_exception: 0,
            fail_errorcode: String::new(),
            latency: Duration::ZERO,
            calls: Vec::new(),
        }
    }

    fn course(&self, id: u64) -> Option<&LmsCourse> {
        self.courses.iter().find(|c| c.id == id)
    }

    /// Index user `id` under its current username, idnumber and email.
    fn index_user(&mut self, id: u64) {
        let Some(u) = self.users.get(&id) else { return };
        let keys = [
            index_key("username", &u.username),
            index_key("idnumber", &u.idnumber),
            index_key("email", &u.email),
        ];
        for k in keys {
            self.user_index.entry(k).or_default().insert(id);
        }
    }

    /// Users whose `field` (username, idnumber or email) is `value`, by id.
    fn users_where(&self, field: &str, value: &str) -> Vec<&LmsUser> {
        let Some(ids) = self.user_index.get(&index_key(field, value)) else {
            return Vec::new();
        };
        ids.iter()
            .filter_map(|id| self.users.get(id))
            .filter(|u| match field {
                "username" => u.username == value.trim().to_lowercase(),
                "email" => u.email.trim().eq_ignore_ascii_case(value.trim()),
                _ => u.idnumber == value,
            })
            .collect()
    }

    /// The enrolment of a user in a course.
    fn enrolment_mut(&mut self, userid: u64, courseid: u64) -> Option<&mut Enrolment> {
        let at = *self.enrolment_at.get(&(userid, courseid))?;
        self.enrolments.get_mut(at)
    }

    fn push_enrolment(&mut self, e: Enrolment) {
        self.enrolment_at
            .insert((e.userid, e.courseid), self.enrolments.len());
        self.enrolments.push(e);
    }

    fn remove_enrolments(&mut self, gone: &[(u64, u64)]) {
        self.enrolments
            .retain(|e| !gone.contains(&(e.userid, e.courseid)));
        self.enrolment_at = (self.enrolments.iter().enumerate())
            .map(|(at, e)| ((e.userid, e.courseid), at))
            .collect();
    }

    fn add_user(&mut self, username: &str, idnumber: &str, email: &str, suspended: bool) -> u64 {
        let id = self.next_user_id;
        self.next_user_id += 1;
        self.users.insert(
            id,
            LmsUser {
                id,
                username: username.to_lowercase(),
                firstname: "Existing".into(),
                lastname: "Account".into(),
                email: email.into(),
                idnumber: idnumber.into(),
                suspended,
                auth: "manual".into(),
                department: String::new(),
                city: String::new(),
            },
        );
        self.index_user(id);
        id
    }

    fn mark_completed(
        &mut self,
        user_idnumber: &str,
        course_idnumber: &str,
        grade: Option<f64>,
        passed: Option<bool>,
    ) -> anyhow::Result<u64> {
        let userids: Vec<u64> = self
            .users
            .values()
            .filter(|u| u.idnumber == user_idnumber)
            .map(|u| u.id)
            .collect();
        let userid = match userids.as_slice() {
            [id] => *id,
            [] => bail!("no LMS user with idnumber {user_idnumber:?}"),
            _ => bail!("idnumber {user_idnumber:?} is shared by users {userids:?}"),
        };
        let courseid = self
            .courses
            .iter()
            .find(|c| c.idnumber == course_idnumber)
            .map(|c| c.id)
            .ok_or_else(|| anyhow!("no LMS course with idnumber {course_idnumber:?}"))?;
        self.clock += 1;
        let id = self.next_completion_id;
        self.next_completion_id += 1;
        let timecompleted = CLOCK_EPOCH + self.clock;
        self.completions.push(CompletionRow {
            id,
            userid,
            courseid,
            timecompleted,
            grade,
            passed,
        });
        Ok(id)
    }
}

/// `"FORKLIFT-CERT"` -> `"Forklift Cert"`.
fn course_fullname(idnumber: &str) -> String {
    idnumber
        .split(['-', '_', ' '])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            match chars.next() {
                Some(first) => first
                    .to_uppercase()
                    .chain(chars.flat_map(char::to_lowercase))
                    .collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<String>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------
// HTTP layer
// ---------------------------------------------------------------------------------------

/// A Moodle exception, serialized as the HTTP 200 error body.
#[derive(Debug)]
struct MoodleError {
    exception: &'static str,
    errorcode: String,
    message: String,
    debuginfo: Option<String>,
}

impl MoodleError {
    fn invalid_parameter(debuginfo: impl Into<String>) -> Self {
        Self {
            exception: "invalid_parameter_exception",
            errorcode: "invalidparameter".to_owned(),
            message: "Invalid parameter value detected".to_owned(),
            debuginfo: Some(debuginfo.into()),
        }
    }

    fn invalid_token() -> Self {
        Self {
            exception: "moodle_exception",
            errorcode: "invalidtoken".to_owned(),
            message: "Invalid token - token not found".to_owned(),
            debuginfo: None,
        }
    }

    fn moodle(errorcode: &str, message: impl Into<String>) -> Self {
        Self {
            exception: "moodle_exception",
            errorcode: errorcode.to_owned(),
            message: message.into(),
            debuginfo: None,
        }
    }

    /// The exception injected by `fail_next_with_exception`.
    fn injected(errorcode: &str) -> Self {
        match errorcode {
            "invalidtoken" => Self::invalid_token(),
            "invalidparameter" => Self::invalid_parameter("simulated failure"),
            "accessexception" => Self {
                exception: "webservice_access_exception",
                errorcode: errorcode.to_owned(),
                message: "Access control exception".to_owned(),
                debuginfo: None,
            },
            "dbwriteerror" => Self {
                exception: "dml_write_exception",
                errorcode: errorcode.to_owned(),
                message: "Error writing to database".to_owned(),
                debuginfo: None,
            },
            // Moodle shows "error/<code>" when the code has no language string.
            other => Self::moodle(other, format!("error/{other}")),
        }
    }

    fn to_json(&self) -> Value {
        let mut body = json!({
            "exception": self.exception,
            "errorcode": self.errorcode,
            "message": self.message,
        });
        if let (Some(info), Value::Object(obj)) = (&self.debuginfo, &mut body) {
            obj.insert("debuginfo".to_owned(), Value::String(info.clone()));
        }
        body
    }
}

type WsResult = Result<Value, MoodleError>;

/// Injected fault decided before the call is processed.
enum Fault {
    Unavailable(u32),
    Exception(String),
}

/// `GET|POST /webservice/rest/server.php`
async fn server_php(
    State(state): State<Shared>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let mut pairs = parse_urlencoded(query.as_deref().unwrap_or("").as_bytes());
    pairs.extend(parse_urlencoded(&body));
    let last = |name: &str| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let wsfunction = last("wsfunction").unwrap_or_default();

    let (latency, fault) = {
        let mut s = lock(&state);
        let fault = if s.fail_unavailable > 0 {
            s.fail_unavailable -= 1;
            Some(Fault::Unavailable(s.retry_after_secs))
        } else if s.fail_exception > 0 {
            s.fail_exception -= 1;
            Some(Fault::Exception(s.fail_errorcode.clone()))
        } else {
            None
        };
        (s.latency, fault)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    let (response, status, errorcode) = match fault {
        Some(Fault::Unavailable(secs)) => (
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, secs.to_string())],
                "Service Unavailable",
            )
                .into_response(),
            503,
            None,
        ),
        other => {
            let result = match other {
                Some(Fault::Exception(code)) => Err(MoodleError::injected(&code)),
                _ => {
                    let format = last("moodlewsrestformat");
                    let token = last("wstoken");
                    let mut s = lock(&state);
                    call(
                        &mut s,
                        format.as_deref(),
                        token.as_deref(),
                        &wsfunction,
                        &pairs,
                    )
                }
            };
            match result {
                Ok(value) => (Json(value).into_response(), 200, None),
                Err(e) => (Json(e.to_json()).into_response(), 200, Some(e.errorcode)),
            }
        }
    };
    tracing::debug!(%wsfunction, status, ?errorcode, "LMS simulator call");
    lock(&state).calls.push(CallLogEntry {
        wsfunction,
        status,
        exception: errorcode.is_some(),
        errorcode,
    });
    response
}

/// Checks format and token, decodes the arguments and dispatches to the function.
fn call(
    s: &mut LmsState,
    format: Option<&str>,
    token: Option<&str>,
    wsfunction: &str,
    pairs: &[(String, String)],
) -> WsResult {
    if format != Some("json") {
        return Err(MoodleError::invalid_parameter(format!(
            "moodlewsrestformat => only \"json\" is supported by this simulator, got {:?}",
            format.unwrap_or("")
        )));
    }
    if token != Some(s.token.as_str()) {
        return Err(MoodleError::invalid_token());
    }
    let args: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| k != "wstoken" && k != "wsfunction" && !k.starts_with("moodlews"))
        .cloned()
        .collect();
    let params = build_params(&args);
    match wsfunction {
        "core_user_create_users" => create_users(s, &params),
        "core_user_get_users_by_field" => get_users_by_field(s, &params),
        "core_user_get_users" => get_users(s, &params),
        "core_user_update_users" => update_users(s, &params),
        "core_course_get_courses_by_field" => get_courses_by_field(s, &params),
        "enrol_manual_enrol_users" => enrol_users(s, &params),
        "enrol_manual_unenrol_users" => unenrol_users(s, &params),
        "core_completion_get_course_completion_status" => completion_status(s, &params),
        "local_switchyard_get_course_completions" => switchyard_completions(s, &params),
        _ => Err(MoodleError {
            exception: "dml_missing_record_exception",
            errorcode: "invalidrecord".to_owned(),
            message: "Can't find data record in database table external_functions.".to_owned(),
            debuginfo: Some(format!(
                "SELECT * FROM {{external_functions}} WHERE name = ?\n[array (\n  0 => '{wsfunction}',\n)]"
            )),
        }),
    }
}

// ---------------------------------------------------------------------------------------
// Form decoding and PHP array notation
// ---------------------------------------------------------------------------------------

/// Decodes `application/x-www-form-urlencoded` data into ordered pairs (`+` is a space,
/// `%XX` escapes are decoded, invalid UTF-8 is replaced).
fn parse_urlencoded(input: &[u8]) -> Vec<(String, String)> {
    input
        .split(|&b| b == b'&')
        .filter(|part| !part.is_empty())
        .map(|part| match part.iter().position(|&b| b == b'=') {
            Some(i) => (percent_decode(&part[..i]), percent_decode(&part[i + 1..])),
            None => (percent_decode(part), String::new()),
        })
        .collect()
}

fn percent_decode(input: &[u8]) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < input.len() => {
                match (hex(input[i + 1]), hex(input[i + 2])) {
                    (Some(h), Some(l)) => {
                        // Two hex digits always fit in a byte.
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits `users[0][username]` into `["users", "0", "username"]` (`[]` gives `""`, meaning
/// "append"). A key with unbalanced brackets is taken literally, as one segment.
fn split_key(key: &str) -> Vec<String> {
    let Some(open) = key.find('[') else {
        return vec![key.to_owned()];
    };
    if open == 0 {
        return vec![key.to_owned()];
    }
    let mut segments = vec![key[..open].to_owned()];
    let mut rest = &key[open..];
    while let Some(inner) = rest.strip_prefix('[') {
        let Some(close) = inner.find(']') else {
            return vec![key.to_owned()];
        };
        segments.push(inner[..close].to_owned());
        rest = &inner[close + 1..];
    }
    if rest.is_empty() {
        segments
    } else {
        vec![key.to_owned()]
    }
}

/// An ordered PHP-style array under construction.
enum Node {
    Leaf(String),
    Map(Vec<(String, Node)>),
}

fn insert_path(entries: &mut Vec<(String, Node)>, path: &[String], value: String) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let key = if first.is_empty() {
        // PHP's `a[]=`: append after the largest integer key.
        entries
            .iter()
            .filter_map(|(k, _)| k.parse::<u64>().ok())
            .max()
            .map_or(0, |m| m + 1)
            .to_string()
    } else {
        first.clone()
    };
    let slot = match entries.iter().position(|(k, _)| *k == key) {
        Some(i) => i,
        None => {
            entries.push((key, Node::Map(Vec::new())));
            entries.len() - 1
        }
    };
    let node = &mut entries[slot].1;
    if rest.is_empty() {
        // Later values override earlier ones, as in PHP.
        *node = Node::Leaf(value);
        return;
    }
    if let Node::Leaf(_) = node {
        *node = Node::Map(Vec::new());
    }
    if let Node::Map(children) = node {
        insert_path(children, rest, value);
    }
}

fn is_index(key: &str) -> bool {
    !key.is_empty()
        && key.bytes().all(|b| b.is_ascii_digit())
        && (key == "0" || !key.starts_with('0'))
}

/// Nested maps whose keys are all integers become JSON arrays ordered by index.
fn node_to_value(node: Node) -> Value {
    match node {
        Node::Leaf(s) => Value::String(s),
        Node::Map(mut entries) => {
            if !entries.is_empty() && entries.iter().all(|(k, _)| is_index(k)) {
                entries.sort_by_key(|(k, _)| k.parse::<u64>().unwrap_or(u64::MAX));
                Value::Array(entries.into_iter().map(|(_, n)| node_to_value(n)).collect())
            } else {
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, n)| (k, node_to_value(n)))
                        .collect(),
                )
            }
        }
    }
}

/// Builds the nested argument object from flat PHP-notation pairs.
fn build_params(pairs: &[(String, String)]) -> Map<String, Value> {
    let mut root = Vec::new();
    for (key, value) in pairs {
        insert_path(&mut root, &split_key(key), value.clone());
    }
    root.into_iter()
        .map(|(k, n)| (k, node_to_value(n)))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Parameter validation (mirrors external_api::validate_parameters messages)
// ---------------------------------------------------------------------------------------

/// Wraps an inner validation message with the name of the structure it occurred in.
fn nested(ctx: &str, inner: String) -> String {
    format!("{ctx} => Invalid parameter value detected ({inner})")
}

fn check_keys(obj: &Map<String, Value>, allowed: &[&str]) -> Result<(), String> {
    let unexpected: Vec<&str> = obj
        .keys()
        .map(String::as_str)
        .filter(|k| !allowed.contains(k))
        .collect();
    if unexpected.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "Unexpected keys ({}) detected in parameter array.",
            unexpected.join(", ")
        ))
    }
}

fn opt_str<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!(
            "{key} => Invalid parameter value detected (Scalar type expected, array or object received.)"
        )),
    }
}

fn req_str<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a str, String> {
    opt_str(obj, key)?.ok_or_else(|| format!("Missing required key in single structure: {key}"))
}

fn type_error(key: &str, value: &str, kind: &str) -> String {
    format!(
        "{key} => Invalid parameter value detected (Invalid external api parameter: the value is \"{value}\", the server was expecting \"{kind}\" type)"
    )
}

fn opt_int(obj: &Map<String, Value>, key: &str) -> Result<Option<i64>, String> {
    match opt_str(obj, key)? {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| type_error(key, v, "int")),
    }
}

fn req_int(obj: &Map<String, Value>, key: &str) -> Result<i64, String> {
    opt_int(obj, key)?.ok_or_else(|| format!("Missing required key in single structure: {key}"))
}

/// A positive id (Moodle ids are never 0 or negative).
fn req_id(obj: &Map<String, Value>, key: &str) -> Result<u64, String> {
    let v = req_int(obj, key)?;
    u64::try_from(v)
        .ok()
        .filter(|&id| id > 0)
        .ok_or_else(|| type_error(key, &v.to_string(), "int"))
}

/// PHP `PARAM_BOOL`.
fn opt_bool(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>, String> {
    match opt_str(obj, key)? {
        None => Ok(None),
        Some(v) => match v.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(Some(true)),
            "0" | "false" | "no" | "off" | "" => Ok(Some(false)),
            _ => Err(type_error(key, v, "bool")),
        },
    }
}

/// An `external_multiple_structure` of `external_single_structure`s.
fn req_list<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
) -> Result<Vec<&'a Map<String, Value>>, String> {
    match obj.get(key) {
        None => Err(format!("Missing required key in single structure: {key}")),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::Object(o) => Ok(o),
                _ => Err(nested(key, "Only arrays accepted.".to_owned())),
            })
            .collect(),
        Some(other) => Err(nested(
            key,
            format!("Only arrays accepted. The bad value is: '{other}'"),
        )),
    }
}

/// An `external_multiple_structure` of scalars.
fn req_scalar_list<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Vec<&'a str>, String> {
    match obj.get(key) {
        None => Err(format!("Missing required key in single structure: {key}")),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.as_str()),
                _ => Err(nested(
                    key,
                    "Scalar type expected, array or object received.".to_owned(),
                )),
            })
            .collect(),
        Some(other) => Err(nested(
            key,
            format!("Only arrays accepted. The bad value is: '{other}'"),
        )),
    }
}

// ---------------------------------------------------------------------------------------
// Control API
// ---------------------------------------------------------------------------------------

/// `GET /_sim/state`
async fn control_state(State(state): State<Shared>) -> Response {
    let s = lock(&state);
    let idnumber_of_user = |id: u64| s.users.get(&id).map(|u| u.idnumber.clone());
    let idnumber_of_course = |id: u64| s.course(id).map(|c| c.idnumber.clone());
    let enrolments: Vec<Value> = s
        .enrolments
        .iter()
        .map(|e| {
            json!({
                "userid": e.userid,
                "courseid": e.courseid,
                "roleid": e.roleid,
                "timestart": e.timestart,
                "timeend": e.timeend,
                "user_idnumber": idnumber_of_user(e.userid),
                "course_idnumber": idnumber_of_course(e.courseid),
            })
        })
        .collect();
    let completions: Vec<Value> = s
        .completions
        .iter()
        .map(|c| {
            json!({
                "id": c.id,
                "userid": c.userid,
                "courseid": c.courseid,
                "timecompleted": c.timecompleted,
                "grade": c.grade,
                "passed": c.passed,
                "user_idnumber": idnumber_of_user(c.userid),
                "course_idnumber": idnumber_of_course(c.courseid),
            })
        })
        .collect();
    Json(json!({
        "users": s.users.values().collect::<Vec<_>>(),
        "courses": s.courses,
        "enrolments": enrolments,
        "completions": completions,
    }))
    .into_response()
}

/// A control request's body as `T`; the error is a 400 naming the expected shape.
fn control_body<T: serde::de::DeserializeOwned>(body: &Bytes, shape: &str) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("expected {shape}: {e}"))
}

/// `POST /_sim/users`: an account made by hand.
async fn control_add_user(State(state): State<Shared>, body: Bytes) -> Response {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct HandMade {
        username: String,
        #[serde(default)]
        idnumber: String,
        email: String,
        #[serde(default)]
        suspended: bool,
    }
    let user: HandMade =
        match control_body(&body, r#"{"username", "idnumber", "email", "suspended"}"#) {
            Ok(u) => u,
            Err(e) => return control_error(StatusCode::BAD_REQUEST, e),
        };
    if user.username.trim().is_empty() {
        return control_error(StatusCode::BAD_REQUEST, "username must not be empty");
    }
    let mut s = lock(&state);
    let username = user.username.to_lowercase();
    if !s.users_where("username", &username).is_empty() {
        return control_error(
            StatusCode::CONFLICT,
            format!("username {username} is taken"),
        );
    }
    let id = s.add_user(&username, &user.idnumber, &user.email, user.suspended);
    (StatusCode::CREATED, Json(s.users.get(&id).cloned())).into_response()
}

/// `POST /_sim/courses`
async fn control_add_course(State(state): State<Shared>, body: Bytes) -> Response {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NewCourse {
        idnumber: String,
        fullname: Option<String>,
    }
    let course: NewCourse = match control_body(&body, r#"{"idnumber", "fullname"}"#) {
        Ok(c) => c,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, e),
    };
    if course.idnumber.trim().is_empty() {
        return control_error(StatusCode::BAD_REQUEST, "idnumber must not be empty");
    }
    let mut s = lock(&state);
    if s.courses.iter().any(|c| c.idnumber == course.idnumber) {
        return control_error(
            StatusCode::CONFLICT,
            format!("a course with idnumber {} exists", course.idnumber),
        );
    }
    let id = s.courses.iter().map(|c| c.id).max().unwrap_or(FIRST_ID - 1) + 1;
    let created = LmsCourse {
        id,
        shortname: course.idnumber.clone(),
        fullname: course
            .fullname
            .unwrap_or_else(|| course_fullname(&course.idnumber)),
        idnumber: course.idnumber,
    };
    s.courses.push(created.clone());
    (StatusCode::CREATED, Json(created)).into_response()
}

/// `POST /_sim/completions`: a learner completes a course.
async fn control_complete(State(state): State<Shared>, body: Bytes) -> Response {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Completed {
        idnumber: String,
        course: String,
        grade: Option<f64>,
        passed: Option<bool>,
    }
    let done: Completed = match control_body(&body, r#"{"idnumber", "course", "grade", "passed"}"#)
    {
        Ok(c) => c,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, e),
    };
    if done.grade.is_some_and(|g| !(0.0..=100.0).contains(&g)) {
        return control_error(StatusCode::BAD_REQUEST, "grade must be 0 to 100");
    }
    let mut s = lock(&state);
    match s.mark_completed(&done.idnumber, &done.course, done.grade, done.passed) {
        Ok(id) => (StatusCode::CREATED, Json(json!({ "id": id }))).into_response(),
        Err(e) => control_error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// `GET /_sim/calls`
async fn control_calls(State(state): State<Shared>) -> Response {
    let calls: Vec<Value> = lock(&state)
        .calls
        .iter()
        .map(|c| {
            json!({
                "wsfunction": c.wsfunction,
                "status": c.status,
                "exception": c.exception,
                "errorcode": c.errorcode,
            })
        })
        .collect();
    Json(calls).into_response()
}

/// Validates one item of a list argument, prefixing errors with `list => `.
fn item<T>(list: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, MoodleError> {
    f().map_err(|e| MoodleError::invalid_parameter(nested(list, e)))
}

/// Moodle `PARAM_USERNAME` without extended characters: lowercase `[a-z0-9_.@-]`.
fn check_username(username: &str) -> Result<(), String> {
    let clean = !username.is_empty()
        && username
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.@-".contains(&b));
    if clean {
        Ok(())
    } else {
        Err(type_error("username", username, "username"))
    }
}

/// A loose version of Moodle's `validate_email`.
fn valid_email(email: &str) -> bool {
    match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !email.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

fn user_json(u: &LmsUser) -> Value {
    json!({
        "id": u.id,
        "username": u.username,
        "firstname": u.firstname,
        "lastname": u.lastname,
        "fullname": format!("{} {}", u.firstname, u.lastname),
        "email": u.email,
        "idnumber": u.idnumber,
        "suspended": u.suspended,
        "auth": u.auth,
    })
}

fn course_json(c: &LmsCourse) -> Value {
    json!({
        "id": c.id,
        "shortname": c.shortname,
        "fullname": c.fullname,
        "displayname": c.fullname,
        "idnumber": c.idnumber,
        "categoryid": 1,
        "visible": 1,
        "enablecompletion": 1,
    })
}

fn top_level(params: &Map<String, Value>, allowed: &[&str]) -> Result<(), MoodleError> {
    check_keys(params, allowed).map_err(MoodleError::invalid_parameter)
}

// ---------------------------------------------------------------------------------------
// Web service functions
// ---------------------------------------------------------------------------------------

/// `core_user_create_users`
fn create_users(s: &mut LmsState, params: &Map<String, Value>) -> WsResult {
    top_level(params, &["users"])?;
    let items = req_list(params, "users").map_err(MoodleError::invalid_parameter)?;
    let mut new_users = Vec::with_capacity(items.len());
    for u in items {
        let user = item("users", || {
            check_keys(u, CREATE_USER_KEYS)?;
            let username = req_str(u, "username")?;
            check_username(username)?;
            let firstname = req_str(u, "firstname")?;
            let lastname = req_str(u, "lastname")?;
            let email = req_str(u, "email")?;
            let auth = opt_str(u, "auth")?.unwrap_or("manual");
            let password = opt_str(u, "password")?.unwrap_or("");
            let createpassword = opt_bool(u, "createpassword")?.unwrap_or(false);
            let idnumber = opt_str(u, "idnumber")?.unwrap_or("");
            let department = opt_str(u, "department")?.unwrap_or("");
            let city = opt_str(u, "city")?.unwrap_or("");
            Ok((
                username,
                firstname,
                lastname,
                email,
                auth,
                password,
                createpassword,
                (idnumber, department, city),
            ))
        })?;
        let (
            username,
            firstname,
            lastname,
            email,
            auth,
            password,
            createpassword,
            (idnumber, department, city),
        ) = user;
        // Business rules: Moodle reports these with the bare message as debuginfo.
        for (field, value) in [
            ("username", username),
            ("firstname", firstname),
            ("lastname", lastname),
        ] {
            if value.trim().is_empty() {
                return Err(MoodleError::invalid_parameter(format!(
                    "The field {field} cannot be blank"
                )));
            }
        }
        let taken = !s.users_where("username", username).is_empty()
            || new_users.iter().any(|x: &LmsUser| x.username == username);
        if taken {
            return Err(MoodleError::invalid_parameter(format!(
                "Username already exists: {username}"
            )));
        }
        if !AUTH_PLUGINS.contains(&auth) {
            return Err(MoodleError::invalid_parameter(format!(
                "Invalid authentication type: {auth}"
            )));
        }
        if INTERNAL_AUTH.contains(&auth) && password.is_empty() && !createpassword {
            return Err(MoodleError::invalid_parameter(
                "Invalid password: you must provide a password, or set createpassword.",
            ));
        }
        if !valid_email(email) {
            return Err(MoodleError::invalid_parameter(format!(
                "Email address is invalid: {email}"
            )));
        }
        new_users.push(LmsUser {
            id: 0,
            username: username.to_owned(),
            firstname: firstname.to_owned(),
            lastname: lastname.to_owned(),
            email: email.to_owned(),
            idnumber: idnumber.to_owned(),
            suspended: false,
            auth: auth.to_owned(),
            department: department.to_owned(),
            city: city.to_owned(),
        });
    }
    let mut created = Vec::with_capacity(new_users.len());
    for mut user in new_users {
        user.id = s.next_user_id;
        s.next_user_id += 1;
        created.push(json!({ "id": user.id, "username": user.username }));
        let id = user.id;
        s.users.insert(id, user);
        s.index_user(id);
    }
    Ok(Value::Array(created))
}

/// `core_user_get_users_by_field`
fn get_users_by_field(s: &mut LmsState, params: &Map<String, Value>) -> WsResult {
    top_level(params, &["field", "values"])?;
    let field = req_str(params, "field").map_err(MoodleError::invalid_parameter)?;
    let values = req_scalar_list(params, "values").map_err(MoodleError::invalid_parameter)?;
    let hit = |u: &LmsUser| -> bool {
        values.iter().any(|v| match field {
            "id" => v.trim().parse::<u64>().is_ok_and(|id| id == u.id),
            "idnumber" => *v == u.idnumber,
            "username" => v.trim().to_lowercase() == u.username,
            "email" => v.trim().eq_ignore_ascii_case(&u.email),
            _ => false,
        })
    };
    if !matches!(field, "id" | "idnumber" | "username" | "email") {
        return Err(MoodleError::invalid_parameter(format!(
            "Field {field} is not valid"
        )));
    }
    // Through the index, as a database would; in id order, each once.
    let mut found: BTreeMap<u64, &LmsUser> = BTreeMap::new();
    for v in &values {
        let users = match field {
            "id" => (v.trim().parse::<u64>().ok())
                .and_then(|id| s.users.get(&id))
                .into_iter()
                .collect(),
            _ => s.users_where(field, v),
        };
        found.extend(users.into_iter().filter(|u| hit(u)).map(|u| (u.id, u)));
    }
    Ok(Value::Array(found.into_values().map(user_json).collect()))
}

/// `core_user_get_users`: users matching every criterion; `%` in a value
/// is SQL `LIKE`'s wildcard (case-insensitive), as Moodle allows for
/// names and email. No paging, as in Moodle.
fn get_users(s: &mut LmsState, params: &Map<String, Value>) -> WsResult {
    top_level(params, &["criteria"])?;
    let items = req_list(params, "criteria").map_err(MoodleError::invalid_parameter)?;
    let mut criteria = Vec::with_capacity(items.len());
    for c in items {
        let (key, value) = item("criteria", || {
            check_keys(c, &["key", "value"])?;
            Ok((
                req_str(c, "key")?.to_owned(),
                req_str(c, "value")?.to_owned(),
            ))
        })?;
        if !matches!(
            key.as_str(),
            "id" | "lastname" | "firstname" | "idnumber" | "username" | "email" | "auth"
        ) {
            return Err(MoodleError::invalid_parameter(format!(
                "The search key '{key}' is not supported, look at the web service documentation"
            )));
        }
        criteria.push((key, value));
    }
    let like = |text: &str, pattern: &str| -> bool {
        let (text, pattern) = (text.to_lowercase(), pattern.to_lowercase());
        let parts: Vec<&str> = pattern.split('%').collect();
        if parts.len() == 1 {
            return text == pattern;
        }
        let mut rest = text.as_str();
        for (n, part) in parts.iter().enumerate() {
            if n == 0 {
                match rest.strip_prefix(part) {
                    Some(r) => rest = r,
                    None => return false,
                }
            } else if n == parts.len() - 1 {
                return rest.ends_with(part);
            } else {
                match rest.find(part) {
                    Some(at) => rest = &rest[at + part.len()..],
                    None => return false,
                }
            }
        }
        true
    };
    let hit = |u: &LmsUser| {
        criteria.iter().all(|(key, value)| match key.as_str() {
            "id" => value.trim().parse::<u64>().is_ok_and(|id| id == u.id),
            "idnumber" => *value == u.idnumber,
            "username" => value.trim().to_lowercase() == u.username,
            "auth" => *value == u.auth,
            "firstname" => like(&u.firstname, value),
            "lastname" => like(&u.lastname, value),
            _ => like(&u.email, value),
        })
    };
    let users: Vec<Value> = s.users.values().filter(|u| hit(u)).map(user_json).collect();
    Ok(json!({ "users": users, "warnings": [] }))
}

/// `core_user_update_users`
fn update_users(s: &mut LmsState, params: &Map<String, Value>) -> WsResult {
    top_level(params, &["users"])?;
    let items = req_list(params, "users").map_err(MoodleError::invalid_parameter)?;
    struct Update {
        id: u64,
        username: Option<String>,
        firstname: Option<String>,
        lastname: Option<String>,
        email: Option<String>,
        idnumber: Option<String>,
        auth: Option<String>,
        suspended: Option<bool>,
        department: Option<String>,
        city: Option<String>,
    }
    let mut updates: Vec<Update> = Vec::with_capacity(items.len());
    for u in items {
        let update = item("users", || {
            check_keys(u, UPDATE_USER_KEYS)?;
            let owned = |k: &str| opt_str(u, k).map(|v| v.map(str::to_owned));
            let update = Update {
                id: req_id(u, "id")?,
                username: owned("username")?,
                firstname: owned("firstname")?,
                lastname: owned("lastname")?,
                email: owned("email")?,
                idnumber: owned("idnumber")?,
                auth: owned("auth")?,
                suspended: opt_bool(u, "suspended")?,
                department: owned("department")?,
                city: owned("city")?,
            };
            if let Some(username) = &update.username {
                check_username(username)?;
            }
            Ok(update)
        })?;
        if !s.users.contains_key(&update.id) {
            return Err(MoodleError::invalid_parameter(format!(
                "Invalid user ID: {}",
                update.id
            )));
        }
        if let Some(username) = &update.username {
            let taken = s
                .users
                .values()
                .any(|x| x.username == *username && x.id != update.id)
                || updates
                    .iter()
                    .any(|x| x.username.as_ref() == Some(username) && x.id != update.id);
            if taken {
                return Err(MoodleError::invalid_parameter(format!(
                    "Username already exists: {username}"
                )));
            }
        }
        for (field, value) in [
            ("firstname", &update.firstname),
            ("lastname", &update.lastname),
        ] {
            if value.as_ref().is_some_and(|v| v.trim().is_empty()) {
                return Err(MoodleError::invalid_parameter(format!(
                    "The field {field} cannot be blank"
                )));
            }
        }
        if let Some(email) = update.email.as_deref().filter(|e| !valid_email(e)) {
            return Err(MoodleError::invalid_parameter(format!(
                "Email address is invalid: {email}"
            )));
        }
        if let Some(auth) = update.auth.as_deref().filter(|a| !AUTH_PLUGINS.contains(a)) {
            return Err(MoodleError::invalid_parameter(format!(
                "Invalid authentication type: {auth}"
            )));
        }
        updates.push(update);
    }
    for update in updates {
        let id = update.id;
        let Some(user) = s.users.get_mut(&id) else {
            continue;
        };
        if let Some(v) = update.username {
            user.username = v;
        }
        if let Some(v) = update.firstname {
            user.firstname = v;
        }
        if let Some(v) = update.lastname {
            user.lastname = v;
        }
        if let Some(v) = update.email {
            user.email = v;
        }
        if let Some(v) = update.idnumber {
            user.idnumber = v;
        }
        if let Some(v) = update.auth {
            user.auth = v;
        }
        if let Some(v) = update.suspended {
            user.suspended = v;
        }
        if let Some(v) = update.department {
            user.department = v;
        }
        if let Some(v) = update.city {
            user.city = v;
        }
        s.index_user(id);
    }
    Ok(json!({ "warnings": [] }))
}

/// `core_course_get_courses_by_field`
fn get_courses_by_field(s: &mut LmsState, params: &Map<String, Value>) -> WsResult {
    top_level(params, &["field", "value"])?;
    let field = opt_str(params, "field")
        .map_err(MoodleError::invalid_parameter)?
        .unwrap_or("");
    let value = opt_str(params, "value")
        .map_err(MoodleError::invalid_parameter)?
        .unwrap_or("");
    let courses: Vec<Value> = match field {
        "" => s.courses.iter().map(course_json).collect(),
        "id" => {
            let id = value
                .trim()
                .parse::<u64>()
                .map_err(|_| MoodleError::invalid_parameter(type_error("value", value, "int")))?;
            s.courses
                .iter()
                .filter(|c| c.id == id)
                .map(course_json)
                .collect()
        }
        "shortname" => s
            .courses
            .iter()
            .filter(|c| c.shortname == value)
            .map(course_json)
            .collect(),
        "idnumber" => s
            .courses
            .iter()
            .filter(|c| c.idnumber == value)
            .map(course_json)
            .collect(),
        other => {
            return Err(MoodleError::invalid_parameter(format!(
                "Invalid field name: {other}"
            )));
        }
    };
    Ok(json!({ "courses": courses, "warnings": [] }))
}

/// `enrol_manual_enrol_users`
/// `enrol_manual_unenrol_users`: removes manual enrolments; unenrolling a
/// user who is not enrolled is not an error (as in Moodle).
fn unenrol_users(s: &mut LmsState, params: &Map<String, Value>) -> WsResult {
    top_level(params, &["enrolments"])?;
    let items = req_list(params, "enrolments").map_err(MoodleError::invalid_parameter)?;
    let mut batch = Vec::with_capacity(items.len());
    for e in items {
        let (userid, courseid) = item("enrolments", || {
            check_keys(e, &["userid", "courseid", "roleid"])?;
            Ok((req_id(e, "userid")?, req_id(e, "courseid")?))
        })?;
        if !s.users.contains_key(&userid) {
            return Err(MoodleError::invalid_parameter(format!(
                "Invalid user id: {userid}"
            )));
        }
        if s.course(courseid).is_none() {
            return Err(MoodleError::invalid_parameter(format!(
                "Invalid course id: {courseid}"
            )));
        }
        batch.push((userid, courseid));
    }
    s.remove_enrolments(&batch);
    Ok(Value::Null)
}

fn enrol_users(s: &mut LmsState, params: &Map<String, Value>) -> WsResult {
    top_level(params, &["enrolments"])?;
    let items = req_list(params, "enrolments").map_err(MoodleError::invalid_parameter)?;
    let mut batch = Vec::with_capacity(items.len());
    for e in items {
        let (roleid, userid, courseid, timestart, timeend) = item("enrolments", || {
            check_keys(e, ENROLMENT_KEYS)?;
            opt_bool(e, "suspend")?;
            Ok((
                req_id(e, "roleid")?,
                req_id(e, "userid")?,
                req_id(e, "courseid")?,
                opt_int(e, "timestart")?,
                opt_int(e, "timeend")?,
            ))
        })?;
        if !s.users.contains_key(&userid) {
            return Err(MoodleError::invalid_parameter(format!(
                "Invalid user id: {userid}"
            )));
        }
        if s.course(courseid).is_none() {
            return Err(MoodleError::invalid_parameter(format!(
                "Invalid course id: {courseid}"
            )));
        }
        if !ASSIGNABLE_ROLES.contains(&roleid) {
            return Err(MoodleError::moodle(
                "wsusercannotassign",
                format!(
                    "You don't have the permission to assign this role ({roleid}) to this user ({userid}) in this course({courseid})."
                ),
            ));
        }
        // Moodle treats 0 as "no limit".
        let time = |t: Option<i64>| t.filter(|&v| v != 0);
        batch.push(Enrolment {
            userid,
            courseid,
            roleid,
            timestart: time(timestart),
            timeend: time(timeend),
        });
    }
    for new in batch {
        match s.enrolment_mut(new.userid, new.courseid) {
            Some(existing) => {
                existing.roleid = new.roleid;
                if new.timestart.is_some() {
                    existing.timestart = new.timestart;
                }
                if new.timeend.is_some() {
                    existing.timeend = new.timeend;
                }
            }
            None => s.push_enrolment(new),
        }
    }
    Ok(Value::Null)
}

/// `core_completion_get_course_completion_status`
fn completion_status(s: &mut LmsState, params: &Map<String, Value>) -> WsResult {
    top_level(params, &["courseid", "userid"])?;
    let courseid = req_id(params, "courseid").map_err(MoodleError::invalid_parameter)?;
    let userid = req_id(params, "userid").map_err(MoodleError::invalid_parameter)?;
    if s.course(courseid).is_none() {
        return Err(MoodleError::invalid_parameter(format!(
            "Invalid course id: {courseid}"
        )));
    }
    if !s.users.contains_key(&userid) {
        return Err(MoodleError::invalid_parameter(format!(
            "Invalid user id: {userid}"
        )));
    }
    let completed = s
        .completions
        .iter()
        .any(|c| c.userid == userid && c.courseid == courseid);
    let enrolled = s
        .enrolments
        .iter()
        .any(|e| e.userid == userid && e.courseid == courseid);
    if !completed && !enrolled {
        return Err(MoodleError::moodle(
            "nottracked",
            "You are currently not being tracked by completion in this course",
        ));
    }
    Ok(json!({
        "completionstatus": { "completed": completed, "aggregation": 1, "completions": [] },
        "warnings": [],
    }))
}

/// A completion row as the companion local plugin reports it (by web
/// service and by webhook).
fn completion_json(s: &LmsState, c: &CompletionRow) -> Value {
    let useridnumber = s
        .users
        .get(&c.userid)
        .map(|u| u.idnumber.clone())
        .unwrap_or_default();
    let courseidnumber = s
        .course(c.courseid)
        .map(|k| k.idnumber.clone())
        .unwrap_or_default();
    json!({
        "id": c.id,
        "userid": c.userid,
        "useridnumber": useridnumber,
        "courseid": c.courseid,
        "courseidnumber": courseidnumber,
        "timecompleted": c.timecompleted,
        "grade": c.grade,
        "passed": c.passed,
    })
}

/// `local_switchyard_get_course_completions` (companion local plugin): completions with
/// `id > afterid`, ordered by id, at most `limitnum` (default 100, capped at 1000).
fn switchyard_completions(s: &mut LmsState, params: &Map<String, Value>) -> WsResult {
    top_level(params, &["afterid", "limitnum"])?;
    let afterid = opt_int(params, "afterid")
        .map_err(MoodleError::invalid_parameter)?
        .unwrap_or(0);
    let limitnum = opt_int(params, "limitnum")
        .map_err(MoodleError::invalid_parameter)?
        .unwrap_or(100);
    if afterid < 0 {
        return Err(MoodleError::invalid_parameter(type_error(
            "afterid",
            &afterid.to_string(),
            "int",
        )));
    }
    if limitnum < 1 {
        return Err(MoodleError::invalid_parameter(format!(
            "limitnum must be at least 1, got {limitnum}"
        )));
    }
    let limit = usize::try_from(limitnum.min(1000)).unwrap_or(1000);
    let afterid = afterid.unsigned_abs();
    let mut rows: Vec<&CompletionRow> = s.completions.iter().filter(|c| c.id > afterid).collect();
    rows.sort_by_key(|c| c.id);
    let more = rows.len() > limit;
    let completions: Vec<Value> = rows
        .into_iter()
        .take(limit)
        .map(|c| completion_json(s, c))
        .collect();
    Ok(json!({ "completions": completions, "more": more }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query: &str) -> Value {
        Value::Object(build_params(&parse_urlencoded(query.as_bytes())))
    }

    #[test]
    fn php_array_notation() {
        let p = params(
            "users%5B1%5D%5Busername%5D=b&users[0][username]=a+b&users[0][idnumber]=1%2B1&values[]=x&values[]=y&field=id",
        );
        assert_eq!(
            p,
            json!({
                "users": [{"username": "a b", "idnumber": "1+1"}, {"username": "b"}],
                "values": ["x", "y"],
                "field": "id",
            })
        );
        assert_eq!(params("a[x]=1&a[0]=2"), json!({"a": {"x": "1", "0": "2"}}));
        assert_eq!(params("a[b=1&c"), json!({"a[b": "1", "c": ""}));
        assert_eq!(percent_decode(b"%zz%4"), "%zz%4");
        assert_eq!(course_fullname("FORKLIFT-CERT"), "Forklift Cert");
    }
}
