//! An HRIS connector built against the frozen contract 0.3.0
//! (`wit/since_v0.3.0`), as a plugin compiled before 0.4.0 would be: it
//! does not import `shared`. The host must load it and call every
//! operation, `list-training-records` included.
//!
//! It holds no state: `fetch-employees` lists one active employee `1`,
//! every completion is accepted, a webhook carries nothing, and the
//! employee has one training record.

wit_bindgen::generate!({
    world: "hris-connector",
    path: "../../../wit/since_v0.3.0",
    generate_all,
});

use exports::switchyard::connector::{completion_sink, employee_source, webhook_source};
use switchyard::connector::types::{
    Completion, ConnectorError, Employee, EmployeePage, EmploymentStatus, TrainingRecord,
    WebhookEvent,
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

    fn list_training_records(employee_id: String) -> Result<Vec<TrainingRecord>, ConnectorError> {
        Ok(vec![TrainingRecord {
            id: format!("record-of-{employee_id}"),
            course_id: "OLD-COURSE".into(),
            completed_on: "2026-01-02".into(),
        }])
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
