//! An LMS plugin whose `enroll` needs a resource its calls share: a group
//! standing for the course, found by name or created, then the user added
//! to it (as a SCIM connector maps courses to groups). The API is at the
//! config's `base_url`:
//!
//! - `GET {base_url}/groups?name=COURSE` -> `[{"id": "..."}]` (empty if none)
//! - `POST {base_url}/groups` `{"name": COURSE}` -> `{"id": "..."}`
//! - `POST {base_url}/groups/{id}/members` `{"user": USER}`
//!
//! With config `coordinate = "none"` it does the naive find-then-create,
//! which concurrent calls race; otherwise it uses the SDK's
//! `shared::get_or_create`, which takes the course's key in turn and
//! remembers the group's id.

use switchyard_sdk::http::Request;
use switchyard_sdk::{ConnectorError, Employee, LmsConnector, config, shared};

struct Groups;

fn find_or_create_group(base: &str, course: &str) -> Result<String, ConnectorError> {
    let found: Vec<serde_json::Value> = Request::get(format!("{base}/groups"))
        .query("name", course)
        .send()?
        .error_for_status()?
        .json()?;
    if let Some(id) = found.first().and_then(|g| g["id"].as_str()) {
        return Ok(id.to_owned());
    }
    let made: serde_json::Value = Request::post(format!("{base}/groups"))
        .json(&serde_json::json!({ "name": course }))?
        .send()?
        .error_for_status()?
        .json()?;
    made["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| ConnectorError::Rejected("the group has no id".into()))
}

impl LmsConnector for Groups {
    fn upsert_user(
        employee: Employee,
        _lms_user_id: Option<String>,
        _idempotency_key: String,
    ) -> Result<String, ConnectorError> {
        Ok(format!("user-{}", employee.id))
    }

    fn set_active(
        _lms_user_id: String,
        _active: bool,
        _idempotency_key: String,
    ) -> Result<(), ConnectorError> {
        Ok(())
    }

    fn enroll(
        lms_user_id: String,
        course_id: String,
        _due: Option<String>,
        _idempotency_key: String,
    ) -> Result<(), ConnectorError> {
        let base = config::require("base_url")?;
        let group = if config::get("coordinate").as_deref() == Some("none") {
            find_or_create_group(&base, &course_id)?
        } else {
            shared::get_or_create(&format!("group:{course_id}"), || {
                find_or_create_group(&base, &course_id)
            })?
        };
        Request::post(format!("{base}/groups/{group}/members"))
            .json(&serde_json::json!({ "user": lms_user_id }))?
            .send()?
            .error_for_status()?;
        Ok(())
    }
}

switchyard_sdk::export_lms!(Groups);
