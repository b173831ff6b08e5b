//! SCIM 2.0 connector (LMS world, RFC 7643 and RFC 7644).
//!
//! Many learning systems (and identity layers in front of them) take
//! provisioning over SCIM: accounts are `User` resources, and this plugin
//! maps each course to a `Group` whose `displayName` is the course key, so
//! that an enrolment is a group membership. The bearer token is injected
//! by the host; this plugin never sees it.
//!
//! - Identity: the HRIS id is the user's `externalId`; `find-user`, and a
//!   create that meets `409 uniqueness` (a retry after a lost answer, or an
//!   account made by hand with the same `userName`), look the account up by
//!   it (then by `userName`) and adopt it. SCIM has nowhere to put an
//!   idempotency key, so every write is keyed by a natural key instead.
//! - Updates are `PATCH` `replace` of the attributes Switchyard owns (names,
//!   email, title, the enterprise extension's employee number, department
//!   and manager): what an administrator set elsewhere on the account is
//!   kept. Suspension is `active: false`.
//! - Groups are found by `displayName` or created, under the host's shared
//!   lock (contract 0.4.0), so that concurrent enrolments in a new course
//!   make one group; the group's id is remembered for later calls.
//!   Membership is `PATCH` `add` / `remove` of `members`, idempotent on the
//!   server side.
//! - Batches (contract 0.5.0): account writes and memberships go out in
//!   SCIM Bulk requests when the server's `ServiceProviderConfig` says it
//!   takes them, each operation with its own outcome; the accounts not yet
//!   bound are looked up in one filtered request first. `list-accounts`
//!   pages through `GET /Users` (`bulk.rs`).
//! - Completions: SCIM has none; `fetch-completions` keeps the SDK's
//!   default (`unsupported`), which the host skips with a note.
//!
//! Config keys: `base_url` (the SCIM base, e.g.
//! `https://lms.example/scim/v2`), `username_prefix` (default `hris-`),
//! `enterprise` (`false` leaves out the enterprise extension, for servers
//! that do not know it).

use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_sdk::http::{Request, Response};
use switchyard_sdk::{
    AccountPage, AccountWrite, AccountWritten, ConnectorError, Created, Employee, EmploymentStatus,
    EnrollmentWrite, ItemResult, LmsConnector, LmsUser, config, find_or_create, shared,
};

const SCIM_JSON: &str = "application/scim+json";
const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

mod bulk;

struct Scim;

fn base() -> Result<String, ConnectorError> {
    Ok(config::require("base_url")?
        .trim_end_matches('/')
        .to_owned())
}

fn username(employee_id: &str) -> String {
    let prefix = config::get("username_prefix").unwrap_or_else(|| "hris-".into());
    format!("{prefix}{employee_id}")
}

/// A SCIM filter value: a JSON string, so quotes and backslashes are escaped.
fn quoted(value: &str) -> String {
    Value::String(value.to_owned()).to_string()
}

#[derive(Deserialize)]
struct ListResponse {
    #[serde(rename = "totalResults", default)]
    total: usize,
    #[serde(rename = "Resources", default)]
    resources: Vec<Value>,
}

/// A user's primary email, else its first.
fn primary_email(user: &Value) -> Option<String> {
    let emails = user["emails"].as_array()?;
    emails
        .iter()
        .find(|m| m["primary"] == true)
        .or_else(|| emails.first())
        .and_then(|m| m["value"].as_str().map(str::to_owned))
}

/// The body of a `POST /Users` for `e`: its attributes, the schemas, and
/// active unless the employee is not working.
fn new_user(e: &Employee) -> Value {
    let mut user = attributes(e);
    user["schemas"] = json!(schemas());
    user["active"] = json!(matches!(
        e.status,
        EmploymentStatus::Active | EmploymentStatus::OnLeave
    ));
    user
}

/// The first resource of `GET {base}/{kind}?filter={filter}`.
fn find_one(kind: &str, filter: &str) -> Result<Option<Value>, ConnectorError> {
    let list: ListResponse = Request::get(format!("{}/{kind}", base()?))
        .query("filter", filter)
        .header("accept", SCIM_JSON)
        .send()?
        .error_for_status()?
        .json()?;
    Ok(list.resources.into_iter().next())
}

fn id_of(resource: &Value) -> Result<String, ConnectorError> {
    resource["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| ConnectorError::Rejected("a SCIM resource without an id".into()))
}

fn find_user_resource(employee_id: &str) -> Result<Option<Value>, ConnectorError> {
    if let Some(user) = find_one("Users", &format!("externalId eq {}", quoted(employee_id)))? {
        return Ok(Some(user));
    }
    find_one(
        "Users",
        &format!("userName eq {}", quoted(&username(employee_id))),
    )
}

/// The attributes Switchyard owns on an account.
fn attributes(e: &Employee) -> Value {
    let display_name = [e.given_name.as_deref(), e.family_name.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let mut user = json!({
        "userName": username(&e.id),
        "externalId": e.id,
        "name": { "givenName": e.given_name, "familyName": e.family_name },
        "displayName": display_name,
        "title": e.job_title,
    });
    if let Some(email) = &e.email {
        user["emails"] = json!([{ "value": email, "type": "work", "primary": true }]);
    }
    if config::get("enterprise").as_deref() != Some("false") {
        let mut enterprise = json!({
            "employeeNumber": e.employee_number,
            "department": e.department,
        });
        if let Some(manager) = &e.manager_id {
            enterprise["manager"] = json!({ "value": manager });
        }
        user[ENTERPRISE] = enterprise;
    }
    strip_nulls(&mut user);
    user
}

/// SCIM servers treat `null` differently; absent is the same everywhere.
fn strip_nulls(value: &mut Value) {
    if let Value::Object(map) = value {
        map.retain(|_, v| !v.is_null());
        map.values_mut().for_each(strip_nulls);
    }
}

fn schemas() -> Vec<&'static str> {
    if config::get("enterprise").as_deref() == Some("false") {
        vec![USER_SCHEMA]
    } else {
        vec![USER_SCHEMA, ENTERPRISE]
    }
}

fn patch(path: &str, operations: Value) -> Result<Response, ConnectorError> {
    Request::patch(format!("{}/{path}", base()?))
        .header("accept", SCIM_JSON)
        .json_as(
            &json!({ "schemas": [PATCH_OP], "Operations": operations }),
            SCIM_JSON,
        )?
        .send()?
        .error_for_status()
}

fn update_user(id: &str, e: &Employee) -> Result<(), ConnectorError> {
    patch(
        &format!("Users/{id}"),
        json!([{ "op": "replace", "value": attributes(e) }]),
    )?;
    Ok(())
}

/// The id of the group standing for `course`, made if there is none.
fn group_of(course: &str) -> Result<String, ConnectorError> {
    shared::get_or_create(&format!("group:{course}"), || {
        if let Some(group) = find_one("Groups", &format!("displayName eq {}", quoted(course)))? {
            return id_of(&group);
        }
        let created: Value = Request::post(format!("{}/Groups", base()?))
            .header("accept", SCIM_JSON)
            .json_as(
                &json!({ "schemas": [GROUP_SCHEMA], "displayName": course }),
                SCIM_JSON,
            )?
            .send()?
            .error_for_status()?
            .json()?;
        id_of(&created)
    })
}

impl LmsConnector for Scim {
    fn upsert_users(
        items: Vec<AccountWrite>,
    ) -> Result<Vec<ItemResult<AccountWritten>>, ConnectorError> {
        bulk::upsert_users(items)
    }

    fn enroll_all(items: Vec<EnrollmentWrite>) -> Result<Vec<ItemResult<()>>, ConnectorError> {
        bulk::enroll_all(items)
    }

    fn list_accounts(cursor: Option<String>) -> Result<AccountPage, ConnectorError> {
        bulk::list_accounts(cursor)
    }

    fn find_user(employee_id: String) -> Result<Option<LmsUser>, ConnectorError> {
        let Some(user) = find_user_resource(&employee_id)? else {
            return Ok(None);
        };
        Ok(Some(LmsUser {
            id: id_of(&user)?,
            active: user["active"].as_bool().unwrap_or(true),
            email: primary_email(&user),
        }))
    }

    fn upsert_user(
        employee: Employee,
        lms_user_id: Option<String>,
        _idempotency_key: String,
    ) -> Result<String, ConnectorError> {
        if let Some(id) = lms_user_id {
            update_user(&id, &employee)?;
            return Ok(id);
        }
        let found = || {
            find_user_resource(&employee.id)?
                .map(|u| id_of(&u))
                .transpose()
        };
        let id = find_or_create(found, || {
            let response = Request::post(format!("{}/Users", base()?))
                .header("accept", SCIM_JSON)
                .json_as(&new_user(&employee), SCIM_JSON)?
                .send()?;
            if response.status == 409 {
                return Err(Created::Conflict(response.text()));
            }
            let created: Value = response.error_for_status()?.json()?;
            Ok(id_of(&created)?)
        })?;
        // An account found rather than made (a retry, one made by hand)
        // gets this employee's attributes too.
        update_user(&id, &employee)?;
        Ok(id)
    }

    fn set_active(
        lms_user_id: String,
        active: bool,
        _idempotency_key: String,
    ) -> Result<(), ConnectorError> {
        patch(
            &format!("Users/{lms_user_id}"),
            json!([{ "op": "replace", "path": "active", "value": active }]),
        )?;
        Ok(())
    }

    fn enroll(
        lms_user_id: String,
        course_id: String,
        _due: Option<String>,
        _idempotency_key: String,
    ) -> Result<(), ConnectorError> {
        let group = group_of(&course_id)?;
        patch(
            &format!("Groups/{group}"),
            json!([{ "op": "add", "path": "members", "value": [{ "value": lms_user_id }] }]),
        )?;
        Ok(())
    }

    fn unenroll(
        lms_user_id: String,
        course_id: String,
        _idempotency_key: String,
    ) -> Result<(), ConnectorError> {
        let group = match shared::recall(&format!("group:{course_id}")) {
            Some(id) => id,
            None => match find_one("Groups", &format!("displayName eq {}", quoted(&course_id)))? {
                Some(group) => id_of(&group)?,
                // No group: nobody is enrolled.
                None => return Ok(()),
            },
        };
        patch(
            &format!("Groups/{group}"),
            json!([{
                "op": "remove",
                "path": format!("members[value eq {}]", quoted(&lms_user_id)),
            }]),
        )?;
        Ok(())
    }
}

switchyard_sdk::export_lms!(Scim);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::mock::{MockHost, MockResponse};

    fn ann() -> Employee {
        let mut e = Employee::new("7", EmploymentStatus::Active);
        e.given_name = Some("Ann".into());
        e.family_name = Some("O\"Brien".into());
        e.email = Some("ann@acme.example".into());
        e
    }

    #[test]
    fn a_create_that_meets_uniqueness_adopts_the_account_by_its_external_id() {
        let base = "https://lms.example/scim/v2";
        let host = MockHost::new()
            .config("base_url", base)
            // Not there yet (the first lookups), then there after the 409.
            .on(
                "GET",
                &format!("{base}/Users*"),
                MockResponse::json(200, json!({ "Resources": [] })),
            )
            .on(
                "GET",
                &format!("{base}/Users*"),
                MockResponse::json(200, json!({ "Resources": [] })),
            )
            .on(
                "GET",
                &format!("{base}/Users*"),
                MockResponse::json(
                    200,
                    json!({ "Resources": [{ "id": "u-1", "active": true }] }),
                ),
            )
            .on(
                "POST",
                &format!("{base}/Users"),
                MockResponse::json(409, json!({ "scimType": "uniqueness" })),
            )
            .on(
                "PATCH",
                &format!("{base}/Users/u-1"),
                MockResponse::status(204),
            );
        let _installed = host.install();
        let id = Scim::upsert_user(ann(), None, "key".into()).unwrap();
        assert_eq!(id, "u-1");
        let requests = host.requests();
        let post = requests.iter().find(|r| r.method == "POST").unwrap();
        assert_eq!(post.header("content-type"), Some(SCIM_JSON));
        let body = post.json();
        assert_eq!(body["externalId"], "7");
        assert_eq!(body["userName"], "hris-7");
        assert_eq!(body["active"], true);
        assert!(body.get("title").is_none(), "no nulls sent");
        // The lookup escapes the filter value.
        assert!(
            requests[0].url.contains("externalId+eq+%227%22")
                || requests[0].url.contains("externalId%20eq%20%227%22"),
            "{}",
            requests[0].url
        );
        // The adopted account gets this employee's attributes.
        let last = requests.last().unwrap();
        assert_eq!(last.method, "PATCH");
        assert_eq!(
            last.json()["Operations"][0]["value"]["name"]["familyName"],
            "O\"Brien"
        );
    }

    #[test]
    fn a_server_without_bulk_gets_single_operations_and_is_asked_once() {
        let base = "https://lms.example/scim/v2";
        let host = MockHost::new().config("base_url", base).on(
            "GET",
            &format!("{base}/ServiceProviderConfig"),
            MockResponse::json(200, json!({ "bulk": { "supported": false } })),
        );
        let _installed = host.install();
        let item = || AccountWrite {
            employee: ann(),
            lms_user_id: None,
            idempotency_key: "key".into(),
        };
        for _ in 0..2 {
            match Scim::upsert_users(vec![item()]) {
                Err(ConnectorError::Unsupported(m)) => assert!(m.contains("Bulk"), "{m}"),
                other => panic!("{other:?}"),
            }
        }
        let requests = host.requests();
        assert_eq!(requests.len(), 1, "the answer is remembered: {requests:?}");
    }

    #[test]
    fn an_enrolment_finds_or_makes_the_course_group_once_and_adds_the_member() {
        let base = "https://lms.example/scim/v2";
        let host = MockHost::new()
            .config("base_url", base)
            .on(
                "GET",
                &format!("{base}/Groups*"),
                MockResponse::json(200, json!({ "Resources": [] })),
            )
            .on(
                "POST",
                &format!("{base}/Groups"),
                MockResponse::json(201, json!({ "id": "g-9", "displayName": "SAFETY" })),
            )
            .on(
                "PATCH",
                &format!("{base}/Groups/g-9"),
                MockResponse::status(204),
            );
        let _installed = host.install();
        Scim::enroll("u-1".into(), "SAFETY".into(), None, "k1".into()).unwrap();
        Scim::enroll("u-2".into(), "SAFETY".into(), None, "k2".into()).unwrap();
        let posts = host
            .requests()
            .iter()
            .filter(|r| r.method == "POST")
            .count();
        assert_eq!(posts, 1, "the group is made once and remembered");
        assert_eq!(host.locked(), ["group:SAFETY"]);
        assert!(host.held().is_empty());
        let patch = host.requests().last().unwrap().json();
        assert_eq!(patch["Operations"][0]["op"], "add");
        assert_eq!(patch["Operations"][0]["value"][0]["value"], "u-2");
    }
}
