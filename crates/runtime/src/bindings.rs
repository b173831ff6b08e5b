//! Host bindings generated from `wit/`: the current contract (`hris`,
//! `lms`) and each older version the host still loads (`v0_1` to `v0_4`, each in a
//! file of its own), and the conversions between the generated records and
//! `switchyard-model`'s.

pub(crate) mod typecheck;
pub mod v0_1;
pub mod v0_2;
pub mod v0_3;
pub mod v0_4;

pub mod hris {
    wasmtime::component::bindgen!({
        world: "hris-connector",
        path: "../../wit",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}
pub mod lms {
    wasmtime::component::bindgen!({
        world: "lms-connector",
        path: "../../wit",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "switchyard:connector/types": super::hris::switchyard::connector::types,
            "switchyard:connector/http": super::hris::switchyard::connector::http,
            "switchyard:connector/log": super::hris::switchyard::connector::log,
            "switchyard:connector/config": super::hris::switchyard::connector::config,
            "switchyard:connector/shared": super::hris::switchyard::connector::shared,
        },
    });
}
pub use hris::switchyard::connector::types;

// ---- conversions between the generated bindings and `model` ----

use switchyard_model::{self as model, ConnectorError};
use types as wit;

impl From<wit::ConnectorError> for ConnectorError {
    fn from(e: wit::ConnectorError) -> Self {
        match e {
            wit::ConnectorError::Transient(m) => ConnectorError::Transient(m),
            wit::ConnectorError::RateLimited(s) => ConnectorError::RateLimited(s),
            wit::ConnectorError::Unauthorized(m) => ConnectorError::Unauthorized(m),
            wit::ConnectorError::InvalidConfig(m) => ConnectorError::InvalidConfig(m),
            wit::ConnectorError::Rejected(m) => ConnectorError::Rejected(m),
            wit::ConnectorError::Unsupported(m) => ConnectorError::Unsupported(m),
        }
    }
}

impl From<wit::EmploymentStatus> for model::EmploymentStatus {
    fn from(s: wit::EmploymentStatus) -> Self {
        match s {
            wit::EmploymentStatus::Pending => Self::Pending,
            wit::EmploymentStatus::Active => Self::Active,
            wit::EmploymentStatus::OnLeave => Self::OnLeave,
            wit::EmploymentStatus::Inactive => Self::Inactive,
            wit::EmploymentStatus::Terminated => Self::Terminated,
        }
    }
}

impl From<model::EmploymentStatus> for wit::EmploymentStatus {
    fn from(s: model::EmploymentStatus) -> Self {
        match s {
            model::EmploymentStatus::Pending => Self::Pending,
            model::EmploymentStatus::Active => Self::Active,
            model::EmploymentStatus::OnLeave => Self::OnLeave,
            model::EmploymentStatus::Inactive => Self::Inactive,
            model::EmploymentStatus::Terminated => Self::Terminated,
        }
    }
}

/// A record a plugin returned that breaks the contract's formats (a date
/// that is not `yyyy-mm-dd`, an instant that is not RFC 3339). The call
/// fails as a plugin fault naming the record and the field.
#[derive(Debug, thiserror::Error)]
#[error("{record} `{id}` has a {field} that breaks the contract: {error}")]
pub struct Malformed {
    record: &'static str,
    id: String,
    field: &'static str,
    error: model::DateError,
}

fn parse<T: std::str::FromStr<Err = model::DateError>>(
    text: &str,
    record: &'static str,
    id: &str,
    field: &'static str,
) -> Result<T, Malformed> {
    text.parse().map_err(|error| Malformed {
        record,
        id: id.to_owned(),
        field,
        error,
    })
}

fn parsed<T: std::str::FromStr<Err = model::DateError>>(
    text: Option<String>,
    record: &'static str,
    id: &str,
    field: &'static str,
) -> Result<Option<T>, Malformed> {
    text.map(|t| parse(&t, record, id, field)).transpose()
}

impl TryFrom<wit::Employee> for model::Employee {
    type Error = Malformed;

    fn try_from(e: wit::Employee) -> Result<Self, Malformed> {
        let date = |text, field| parsed(text, "employee", &e.id, field);
        let hire_date = date(e.hire_date, "hire-date")?;
        let termination_date = date(e.termination_date, "termination-date")?;
        let updated_at = parsed(e.updated_at, "employee", &e.id, "updated-at")?;
        Ok(model::Employee {
            id: e.id.into(),
            employee_number: e.employee_number,
            email: e.email,
            given_name: e.given_name,
            family_name: e.family_name,
            status: e.status.into(),
            raw_status: e.raw_status,
            department: e.department,
            job_title: e.job_title,
            location: e.location,
            manager_id: e.manager_id.map(Into::into),
            hire_date,
            termination_date,
            updated_at,
            custom: e.custom,
        })
    }
}

impl From<model::Employee> for wit::Employee {
    fn from(e: model::Employee) -> Self {
        wit::Employee {
            id: e.id.into(),
            employee_number: e.employee_number,
            email: e.email,
            given_name: e.given_name,
            family_name: e.family_name,
            status: e.status.into(),
            raw_status: e.raw_status,
            department: e.department,
            job_title: e.job_title,
            location: e.location,
            manager_id: e.manager_id.map(Into::into),
            hire_date: e.hire_date.map(|d| d.to_string()),
            termination_date: e.termination_date.map(|d| d.to_string()),
            updated_at: e.updated_at.map(|t| t.to_string()),
            custom: e.custom,
        }
    }
}

impl TryFrom<wit::EmployeePage> for model::EmployeePage {
    type Error = Malformed;

    fn try_from(p: wit::EmployeePage) -> Result<Self, Malformed> {
        Ok(model::EmployeePage {
            employees: p
                .employees
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
            next_cursor: p.next_cursor,
            changes_cursor: p.changes_cursor,
        })
    }
}

impl From<wit::CompletionStatus> for model::CompletionStatus {
    fn from(s: wit::CompletionStatus) -> Self {
        match s {
            wit::CompletionStatus::Completed => Self::Completed,
            wit::CompletionStatus::Passed => Self::Passed,
            wit::CompletionStatus::Failed => Self::Failed,
        }
    }
}

impl From<model::CompletionStatus> for wit::CompletionStatus {
    fn from(s: model::CompletionStatus) -> Self {
        match s {
            model::CompletionStatus::Completed => Self::Completed,
            model::CompletionStatus::Passed => Self::Passed,
            model::CompletionStatus::Failed => Self::Failed,
        }
    }
}

impl TryFrom<wit::Completion> for model::Completion {
    type Error = Malformed;

    fn try_from(c: wit::Completion) -> Result<Self, Malformed> {
        let completed_at = parse(&c.completed_at, "completion", &c.attempt_id, "completed-at")?;
        let expires_at = parsed(c.expires_at, "completion", &c.attempt_id, "expires-at")?;
        Ok(model::Completion {
            employee_id: c.employee_id.into(),
            course_id: c.course_id.into(),
            attempt_id: c.attempt_id,
            status: c.status.into(),
            completed_at,
            score: c.score,
            expires_at,
        })
    }
}

impl From<model::Completion> for wit::Completion {
    fn from(c: model::Completion) -> Self {
        wit::Completion {
            employee_id: c.employee_id.into(),
            course_id: c.course_id.into(),
            attempt_id: c.attempt_id,
            status: c.status.into(),
            completed_at: c.completed_at.to_string(),
            score: c.score,
            expires_at: c.expires_at.map(|t| t.to_string()),
        }
    }
}

impl TryFrom<wit::TrainingRecord> for model::TrainingRecord {
    type Error = Malformed;

    fn try_from(r: wit::TrainingRecord) -> Result<Self, Malformed> {
        let completed_on = parse(&r.completed_on, "training record", &r.id, "completed-on")?;
        Ok(model::TrainingRecord {
            id: r.id,
            course_id: r.course_id.into(),
            completed_on,
        })
    }
}

impl TryFrom<wit::WebhookEvent> for model::WebhookEvent {
    type Error = Malformed;

    fn try_from(e: wit::WebhookEvent) -> Result<Self, Malformed> {
        Ok(match e {
            wit::WebhookEvent::Completion(c) => Self::Completion(c.try_into()?),
            wit::WebhookEvent::EmployeeChanged(e) => Self::EmployeeChanged(e.try_into()?),
        })
    }
}

impl TryFrom<wit::CompletionPage> for model::CompletionPage {
    type Error = Malformed;

    fn try_from(p: wit::CompletionPage) -> Result<Self, Malformed> {
        Ok(model::CompletionPage {
            completions: p
                .completions
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
            next_cursor: p.next_cursor,
            more: p.more,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn employee(hire_date: &str) -> wit::Employee {
        wit::Employee {
            id: "7".into(),
            employee_number: None,
            email: None,
            given_name: None,
            family_name: None,
            status: wit::EmploymentStatus::Active,
            raw_status: None,
            department: None,
            job_title: None,
            location: None,
            manager_id: Some("3".into()),
            hire_date: Some(hire_date.into()),
            termination_date: None,
            updated_at: Some("2026-01-05T10:30:00+01:00".into()),
            custom: vec![],
        }
    }

    #[test]
    fn dates_are_parsed_at_the_boundary_and_written_back_as_they_came() {
        let e = model::Employee::try_from(employee("2020-02-01")).unwrap();
        assert_eq!(
            e.hire_date.map(|d| d.to_string()).as_deref(),
            Some("2020-02-01")
        );
        let back = wit::Employee::from(e);
        assert_eq!(back.hire_date.as_deref(), Some("2020-02-01"));
        assert_eq!(
            back.updated_at.as_deref(),
            Some("2026-01-05T10:30:00+01:00")
        );
        assert_eq!(back.manager_id.as_deref(), Some("3"));
    }

    #[test]
    fn a_malformed_date_names_the_record_and_the_field() {
        let error = model::Employee::try_from(employee("01/02/2020")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "employee `7` has a hire-date that breaks the contract: `01/02/2020` is not a date (yyyy-mm-dd)"
        );
        let completion = wit::Completion {
            employee_id: "7".into(),
            course_id: "C".into(),
            attempt_id: "a1".into(),
            status: wit::CompletionStatus::Passed,
            completed_at: "yesterday".into(),
            score: None,
            expires_at: None,
        };
        let error = model::Completion::try_from(completion).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("completion `a1` has a completed-at"),
            "{error}"
        );
    }
}
