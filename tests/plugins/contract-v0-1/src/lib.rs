//! An LMS connector built against the frozen contract 0.1.0
//! (`wit/since_v0.1.0`), as a plugin compiled before 0.2.0 would be. The
//! host must load it and call it, and answer a webhook for it with
//! `unsupported` (0.1.0 has no `webhook-source`).
//!
//! It holds no state: `fetch-completions` always lists one completion of
//! employee `1`, and every write succeeds.

wit_bindgen::generate!({
    world: "lms-connector",
    path: "../../../wit/since_v0.1.0",
    generate_all,
});

use exports::switchyard::connector::{completion_source, enrollment, user_provisioning};
use switchyard::connector::types::{
    Completion, CompletionPage, CompletionStatus, ConnectorError, Employee, LmsUser,
};

struct Old;

impl user_provisioning::Guest for Old {
    fn upsert_user(
        e: Employee,
        _id: Option<String>,
        _key: String,
    ) -> Result<String, ConnectorError> {
        Ok(format!("old-{}", e.id))
    }
    fn set_active(_id: String, _active: bool, _key: String) -> Result<(), ConnectorError> {
        Ok(())
    }
    fn find_user(_employee_id: String) -> Result<Option<LmsUser>, ConnectorError> {
        Ok(None)
    }
}

impl enrollment::Guest for Old {
    fn enroll(
        _id: String,
        _course: String,
        _due: Option<String>,
        _key: String,
    ) -> Result<(), ConnectorError> {
        Ok(())
    }
    fn unenroll(_id: String, _course: String, _key: String) -> Result<(), ConnectorError> {
        Ok(())
    }
}

impl completion_source::Guest for Old {
    fn fetch_completions(_cursor: Option<String>) -> Result<CompletionPage, ConnectorError> {
        Ok(CompletionPage {
            completions: vec![Completion {
                employee_id: "1".into(),
                course_id: "OLD-COURSE".into(),
                attempt_id: "1".into(),
                status: CompletionStatus::Passed,
                completed_at: "2026-01-01T00:00:00Z".into(),
                score: Some(90.0),
                expires_at: None,
            }],
            next_cursor: None,
            more: false,
        })
    }
}

export!(Old);
