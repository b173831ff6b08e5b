//! An LMS connector built against the frozen contract 0.4.0
//! (`wit/since_v0.4.0`), as a plugin compiled before 0.5.0 would be: it
//! has no `batch-provisioning`. The host must load it, call its single
//! operations, and answer the batch calls `unsupported` without calling.
//!
//! Accounts live in the host's `shared` memory (0.4.0's import): an
//! account `lms-{id}` is remembered by `upsert-user` and found by
//! `find-user`; enrolments and suspensions are accepted; there are no
//! completions.

wit_bindgen::generate!({
    world: "lms-connector",
    path: "../../../wit/since_v0.4.0",
    generate_all,
});

use exports::switchyard::connector::{
    completion_source, enrollment, user_provisioning, webhook_source,
};
use switchyard::connector::shared;
use switchyard::connector::types::{
    CompletionPage, ConnectorError, Employee, LmsUser, WebhookEvent,
};

struct Old;

impl user_provisioning::Guest for Old {
    fn upsert_user(
        employee: Employee,
        lms_user_id: Option<String>,
        _key: String,
    ) -> Result<String, ConnectorError> {
        let id = lms_user_id.unwrap_or_else(|| format!("lms-{}", employee.id));
        shared::remember(&format!("account:{}", employee.id), &id);
        Ok(id)
    }

    fn set_active(_id: String, _active: bool, _key: String) -> Result<(), ConnectorError> {
        Ok(())
    }

    fn find_user(employee_id: String) -> Result<Option<LmsUser>, ConnectorError> {
        Ok(
            shared::recall(&format!("account:{employee_id}")).map(|id| LmsUser {
                id,
                active: true,
                email: None,
            }),
        )
    }
}

impl enrollment::Guest for Old {
    fn enroll(
        _user: String,
        _course: String,
        _due: Option<String>,
        _key: String,
    ) -> Result<(), ConnectorError> {
        Ok(())
    }

    fn unenroll(_user: String, _course: String, _key: String) -> Result<(), ConnectorError> {
        Ok(())
    }
}

impl completion_source::Guest for Old {
    fn fetch_completions(_cursor: Option<String>) -> Result<CompletionPage, ConnectorError> {
        Ok(CompletionPage {
            completions: Vec::new(),
            next_cursor: None,
            more: false,
        })
    }
}

impl webhook_source::Guest for Old {
    fn parse_webhook(
        _headers: Vec<(String, String)>,
        _body: Vec<u8>,
    ) -> Result<Vec<WebhookEvent>, ConnectorError> {
        Ok(Vec::new())
    }
}

export!(Old);
