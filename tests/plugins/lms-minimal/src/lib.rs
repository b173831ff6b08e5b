//! An LMS plugin that implements only what it must: creating and updating
//! accounts, suspending them and enrolling. `find-user`, `unenroll`,
//! `fetch-completions` and `parse-webhook` keep the SDK's defaults
//! (`unsupported`). The host must run a link with it to the end: no
//! completions to write back, withdrawals skipped, each with a note.
//!
//! It keeps no state and calls nothing: every account it "creates" is
//! `minimal-<employee id>`.

use switchyard_sdk::{ConnectorError, Employee, LmsConnector};

struct Minimal;

impl LmsConnector for Minimal {
    fn upsert_user(
        employee: Employee,
        _lms_user_id: Option<String>,
        _idempotency_key: String,
    ) -> Result<String, ConnectorError> {
        Ok(format!("minimal-{}", employee.id))
    }

    fn set_active(
        _lms_user_id: String,
        _active: bool,
        _idempotency_key: String,
    ) -> Result<(), ConnectorError> {
        Ok(())
    }

    fn enroll(
        _lms_user_id: String,
        _course_id: String,
        _due: Option<String>,
        _idempotency_key: String,
    ) -> Result<(), ConnectorError> {
        Ok(())
    }
}

switchyard_sdk::export_lms!(Minimal);
