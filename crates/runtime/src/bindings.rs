//! Host bindings generated from `wit/`: the current contract (`hris`,
//! `lms`) and each older version the host still loads (`v0_1`, in a file of
//! its own), and the conversions between the generated records and
//! `switchyard-model`'s.

pub mod v0_1;

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

impl From<wit::Employee> for model::Employee {
    fn from(e: wit::Employee) -> Self {
        model::Employee {
            id: e.id,
            employee_number: e.employee_number,
            email: e.email,
            given_name: e.given_name,
            family_name: e.family_name,
            status: e.status.into(),
            raw_status: e.raw_status,
            department: e.department,
            job_title: e.job_title,
            location: e.location,
            manager_id: e.manager_id,
            hire_date: e.hire_date,
            termination_date: e.termination_date,
            updated_at: e.updated_at,
            custom: e.custom,
        }
    }
}

impl From<model::Employee> for wit::Employee {
    fn from(e: model::Employee) -> Self {
        wit::Employee {
            id: e.id,
            employee_number: e.employee_number,
            email: e.email,
            given_name: e.given_name,
            family_name: e.family_name,
            status: e.status.into(),
            raw_status: e.raw_status,
            department: e.department,
            job_title: e.job_title,
            location: e.location,
            manager_id: e.manager_id,
            hire_date: e.hire_date,
            termination_date: e.termination_date,
            updated_at: e.updated_at,
            custom: e.custom,
        }
    }
}

impl From<wit::EmployeePage> for model::EmployeePage {
    fn from(p: wit::EmployeePage) -> Self {
        model::EmployeePage {
            employees: p.employees.into_iter().map(Into::into).collect(),
            next_cursor: p.next_cursor,
            changes_cursor: p.changes_cursor,
        }
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

impl From<wit::Completion> for model::Completion {
    fn from(c: wit::Completion) -> Self {
        model::Completion {
            employee_id: c.employee_id,
            course_id: c.course_id,
            attempt_id: c.attempt_id,
            status: c.status.into(),
            completed_at: c.completed_at,
            score: c.score,
            expires_at: c.expires_at,
        }
    }
}

impl From<model::Completion> for wit::Completion {
    fn from(c: model::Completion) -> Self {
        wit::Completion {
            employee_id: c.employee_id,
            course_id: c.course_id,
            attempt_id: c.attempt_id,
            status: c.status.into(),
            completed_at: c.completed_at,
            score: c.score,
            expires_at: c.expires_at,
        }
    }
}

impl From<wit::WebhookEvent> for model::WebhookEvent {
    fn from(e: wit::WebhookEvent) -> Self {
        match e {
            wit::WebhookEvent::Completion(c) => Self::Completion(c.into()),
            wit::WebhookEvent::EmployeeChanged(e) => Self::EmployeeChanged(e.into()),
        }
    }
}

impl From<wit::CompletionPage> for model::CompletionPage {
    fn from(p: wit::CompletionPage) -> Self {
        model::CompletionPage {
            completions: p.completions.into_iter().map(Into::into).collect(),
            next_cursor: p.next_cursor,
            more: p.more,
        }
    }
}
