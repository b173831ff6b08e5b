//! An HRIS connector built against the frozen contract 0.2.0
//! (`wit/since_v0.2.0`), as a plugin compiled before 0.3.0 would be. The
//! host must load it, call it, take its webhooks, and answer
//! `list-training-records` (added in 0.3.0) with `unsupported` itself.
//!
//! It holds no state: `fetch-employees` lists one active employee `1`,
//! every completion is accepted, and a webhook carries nothing.

wit_bindgen::generate!({
    world: "hris-connector",
    path: "../../../wit/since_v0.2.0",
    generate_all,
});

use exports::switchyard::connector::{completion_sink, employee_source, webhook_source};
use switchyard::connector::types::{
    Completion, ConnectorError, Employee, EmployeePage, EmploymentStatus, WebhookEvent,
};

struct Old;

impl employee_source::Guest for Old {
    fn fetch_employees(_cursor: Option<String>) -> Result<EmployeePage, ConnectorError> {
        Ok(EmployeePage {
            employees: vec![Employee {
                id: "1".into(),
                employee_number: None,
                email: Some("one@example.com".into()),
                given_name: Some("Ada".into()),
                family_name: Some("One".into()),
                status: EmploymentStatus::Active,
                raw_status: None,
                department: None,
                job_title: None,
                location: None,
                manager_id: None,
                hire_date: None,
                termination_date: None,
                updated_at: None,
                custom: Vec::new(),
            }],
            next_cursor: None,
            changes_cursor: None,
        })
    }
}

impl completion_sink::Guest for Old {
    fn push_completion(
        _completion: Completion,
        _key: String,
        _supersedes: Option<String>,
    ) -> Result<(), ConnectorError> {
        Ok(())
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
