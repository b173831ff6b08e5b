//! Write a Switchyard connector plugin.
//!
//! A connector plugin translates between one vendor's API and Switchyard's
//! canonical records, and nothing else: the host schedules, retries,
//! rate-limits, injects credentials, stores state and audits. A plugin author
//! implements one trait and invokes one macro:
//!
//! ```ignore
//! use switchyard_sdk::{ConnectorError, EmployeePage, HrisConnector, http};
//!
//! struct Acme;
//!
//! impl HrisConnector for Acme {
//!     fn fetch_employees(cursor: Option<String>) -> Result<EmployeePage, ConnectorError> {
//!         let base = switchyard_sdk::config::require("base_url")?;
//!         let page: Vec<AcmePerson> = http::Request::get(format!("{base}/people"))
//!             .send()?
//!             .error_for_status()?
//!             .json()?;
//!         // ... map to `Employee` records
//!         # todo!()
//!     }
//! }
//!
//! switchyard_sdk::export_hris!(Acme);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2`; the `.wasm` file
//! is a component the host loads from its plugin directory.
//!
//! Enable the feature of the role you implement: `hris` (an HR system of
//! record: [`HrisConnector`], [`export_hris!`]) or `lms` (a learning system:
//! [`LmsConnector`], [`export_lms!`]).
//!
//! # Layout
//!
//! - this file: the canonical records, the connector traits (including
//!   `parse_webhook`, which turns a [`Webhook`] the host has verified into
//!   [`WebhookEvent`]s), the export macros;
//! - [`http`]: requests through the host, JSON, and mapping HTTP failures to
//!   [`ConnectorError`];
//! - [`config`], [`log`]: the connector's non-secret settings and its log;
//! - `mock` (feature `mock`): a mock host, so that a plugin's unit tests run
//!   natively under `cargo test` (canned responses, config, captured logs
//!   and requests); `host.rs` is where the SDK picks the real host or it.
//!
//! The bindings generated from the WIT contract stay private (`__private`).

// Lets the generated code name this crate the same way from inside and outside.
extern crate self as switchyard_sdk;

mod host;
pub mod http;
#[cfg(all(any(test, feature = "mock"), not(target_arch = "wasm32")))]
pub mod mock;
pub mod time;

#[doc(hidden)]
pub mod __private {
    //! Generated bindings. Not part of the SDK's API; used by the export macros.
    pub use wit_bindgen;

    /// Types and imports shared by every world.
    pub mod base {
        wit_bindgen::generate!({
            world: "base",
            path: "../wit",
            generate_all,
        });
    }

    #[cfg(feature = "hris")]
    pub mod hris {
        wit_bindgen::generate!({
            world: "hris-connector",
            path: "../wit",
            with: {
                "switchyard:connector/types@0.5.0": crate::__private::base::switchyard::connector::types,
                "switchyard:connector/http@0.5.0": crate::__private::base::switchyard::connector::http,
                "switchyard:connector/log@0.5.0": crate::__private::base::switchyard::connector::log,
                "switchyard:connector/config@0.5.0": crate::__private::base::switchyard::connector::config,
                "switchyard:connector/shared@0.5.0": crate::__private::base::switchyard::connector::shared,
            },
            pub_export_macro: true,
            export_macro_name: "__export_hris_world",
            default_bindings_module: "switchyard_sdk::__private::hris",
            runtime_path: "switchyard_sdk::__private::wit_bindgen::rt",
        });
    }

    #[cfg(feature = "lms")]
    pub mod lms {
        wit_bindgen::generate!({
            world: "lms-connector",
            path: "../wit",
            with: {
                "switchyard:connector/types@0.5.0": crate::__private::base::switchyard::connector::types,
                "switchyard:connector/http@0.5.0": crate::__private::base::switchyard::connector::http,
                "switchyard:connector/log@0.5.0": crate::__private::base::switchyard::connector::log,
                "switchyard:connector/config@0.5.0": crate::__private::base::switchyard::connector::config,
                "switchyard:connector/shared@0.5.0": crate::__private::base::switchyard::connector::shared,
            },
            pub_export_macro: true,
            export_macro_name: "__export_lms_world",
            default_bindings_module: "switchyard_sdk::__private::lms",
            runtime_path: "switchyard_sdk::__private::wit_bindgen::rt",
        });
    }
}

use __private::base::switchyard::connector::types;

pub use types::{
    Completion, CompletionPage, CompletionStatus, ConnectorError, Employee, EmployeePage,
    EmploymentStatus, LmsUser, TrainingRecord, WebhookEvent,
};

/// One verified webhook delivery, as the host hands it to
/// `parse_webhook`: the signature has been checked and the delivery is not a
/// replay.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// Request headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
}

impl Webhook {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, or `rejected` (the sender gets a 400).
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConnectorError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            ConnectorError::Rejected(format!("webhook body is not the expected JSON: {e}"))
        })
    }
}

impl ConnectorError {
    /// The error for an operation this connector does not implement.
    pub fn unsupported(operation: &str) -> Self {
        ConnectorError::Unsupported(format!("`{operation}` is not supported by this connector"))
    }
}

impl Employee {
    /// An employee with only an id and a status; fill in the rest field by field.
    pub fn new(id: impl Into<String>, status: EmploymentStatus) -> Self {
        Employee {
            id: id.into(),
            employee_number: None,
            email: None,
            given_name: None,
            family_name: None,
            status,
            raw_status: None,
            department: None,
            job_title: None,
            location: None,
            manager_id: None,
            hire_date: None,
            termination_date: None,
            updated_at: None,
            custom: Vec::new(),
        }
    }
}

/// An HR system of record: lists employees, records completions.
#[cfg(feature = "hris")]
pub trait HrisConnector {
    /// One page of employees. `cursor` is `None` for a full listing, a page's
    /// `next_cursor` for the page after it, or a `changes_cursor` from an
    /// earlier run to list only what changed since.
    fn fetch_employees(cursor: Option<String>) -> Result<EmployeePage, ConnectorError>;

    /// Write the employee's training record for `completion`. Delivery is
    /// at-least-once: a repeated `idempotency_key` must not write twice.
    /// `supersedes` names the key of an earlier completion of the same course
    /// that this one replaces (retake policy): update that record instead of
    /// adding one.
    fn push_completion(
        completion: Completion,
        idempotency_key: String,
        supersedes: Option<String>,
    ) -> Result<(), ConnectorError> {
        let _ = (completion, idempotency_key, supersedes);
        Err(ConnectorError::unsupported("push-completion"))
    }

    /// The training records the HRIS holds for `employee_id`, of the courses
    /// Switchyard writes (since contract 0.3.0). Reads only; the host's
    /// `reconcile` compares them with the LMS and reports a missing, stale
    /// or doubled record. The default: `unsupported` (reconcile then falls
    /// back to what the host remembers writing).
    fn list_training_records(employee_id: String) -> Result<Vec<TrainingRecord>, ConnectorError> {
        let _ = employee_id;
        Err(ConnectorError::unsupported("list-training-records"))
    }

    /// Translate a verified webhook delivery into events (since contract
    /// 0.2.0). Return `Ok(vec![])` for deliveries that carry nothing the host
    /// needs, `rejected` for a malformed body. The default: `unsupported`.
    fn parse_webhook(webhook: Webhook) -> Result<Vec<WebhookEvent>, ConnectorError> {
        let _ = webhook;
        Err(ConnectorError::unsupported("parse-webhook"))
    }
}

/// A learning system: accounts, enrollments, completions.
#[cfg(feature = "lms")]
pub trait LmsConnector {
    /// Create or update the account of `employee`; return its LMS user id.
    /// `lms_user_id` is the id the host recorded earlier, if any.
    fn upsert_user(
        employee: Employee,
        lms_user_id: Option<String>,
        idempotency_key: String,
    ) -> Result<String, ConnectorError> {
        let _ = (employee, lms_user_id, idempotency_key);
        Err(ConnectorError::unsupported("upsert-user"))
    }

    /// Reactivate (`active = true`) or suspend an account.
    fn set_active(
        lms_user_id: String,
        active: bool,
        idempotency_key: String,
    ) -> Result<(), ConnectorError> {
        let _ = (lms_user_id, active, idempotency_key);
        Err(ConnectorError::unsupported("set-active"))
    }

    /// The account whose identity is this HRIS employee id, if any.
    fn find_user(employee_id: String) -> Result<Option<LmsUser>, ConnectorError> {
        let _ = employee_id;
        Err(ConnectorError::unsupported("find-user"))
    }

    /// Enroll the user in a course (a course key from the rules), with an
    /// optional due date (yyyy-mm-dd). Enrolling twice is not an error.
    fn enroll(
        lms_user_id: String,
        course_id: String,
        due: Option<String>,
        idempotency_key: String,
    ) -> Result<(), ConnectorError> {
        let _ = (lms_user_id, course_id, due, idempotency_key);
        Err(ConnectorError::unsupported("enroll"))
    }

    /// Withdraw the user from a course. Withdrawing twice is not an error.
    fn unenroll(
        lms_user_id: String,
        course_id: String,
        idempotency_key: String,
    ) -> Result<(), ConnectorError> {
        let _ = (lms_user_id, course_id, idempotency_key);
        Err(ConnectorError::unsupported("unenroll"))
    }

    /// Completions after `cursor` (`None`: from the beginning), oldest first.
    /// The default: `unsupported`; the host then provisions only and writes
    /// nothing back (each run's report says so).
    fn fetch_completions(cursor: Option<String>) -> Result<CompletionPage, ConnectorError> {
        let _ = cursor;
        Err(ConnectorError::unsupported("fetch-completions"))
    }

    /// Translate a verified webhook delivery into events (since contract
    /// 0.2.0). Return `Ok(vec![])` for deliveries that carry nothing the host
    /// needs, `rejected` for a malformed body. The default: `unsupported`.
    fn parse_webhook(webhook: Webhook) -> Result<Vec<WebhookEvent>, ConnectorError> {
        let _ = webhook;
        Err(ConnectorError::unsupported("parse-webhook"))
    }

    /// `upsert_user` for many employees in one call (contract 0.5.0), for
    /// an API that takes many records per request. Return one result per
    /// item, in the order given; an item's error is that item's alone
    /// (`rejected` dead-letters only it). An item without `lms_user_id`
    /// adopts the account the LMS already holds for the employee's id, as
    /// `upsert_user` does. The host sends at most 100 items. The default:
    /// `unsupported`, and the host calls `upsert_user` per item.
    fn upsert_users(
        items: Vec<AccountWrite>,
    ) -> Result<Vec<ItemResult<AccountWritten>>, ConnectorError> {
        let _ = items;
        Err(ConnectorError::unsupported("upsert-users"))
    }

    /// `enroll` for many enrolments in one call (contract 0.5.0), answered
    /// as `upsert_users` is. The default: `unsupported`, and the host calls
    /// `enroll` per item.
    fn enroll_all(items: Vec<EnrollmentWrite>) -> Result<Vec<ItemResult<()>>, ConnectorError> {
        let _ = items;
        Err(ConnectorError::unsupported("enroll-all"))
    }

    /// One page of the accounts the LMS holds (contract 0.5.0), with what
    /// identifies them, for matching employees to existing accounts.
    /// Reads only. The default: `unsupported`.
    fn list_accounts(cursor: Option<String>) -> Result<AccountPage, ConnectorError> {
        let _ = cursor;
        Err(ConnectorError::unsupported("list-accounts"))
    }
}

/// The outcome of one item of a batch call.
#[cfg(feature = "lms")]
pub type ItemResult<T> = Result<T, ConnectorError>;

#[cfg(feature = "lms")]
pub use __private::lms::exports::switchyard::connector::batch_provisioning::{
    AccountPage, AccountWrite, AccountWritten, EnrollmentWrite, LmsAccount,
};

/// Export a type implementing [`HrisConnector`] as this component's
/// `hris-connector` world. Invoke once, at the crate root.
#[cfg(feature = "hris")]
#[macro_export]
macro_rules! export_hris {
    ($connector:ident) => {
        impl $crate::__private::hris::exports::switchyard::connector::employee_source::Guest
            for $connector
        {
            fn fetch_employees(
                cursor: Option<String>,
            ) -> Result<$crate::EmployeePage, $crate::ConnectorError> {
                <$connector as $crate::HrisConnector>::fetch_employees(cursor)
            }
        }
        impl $crate::__private::hris::exports::switchyard::connector::completion_sink::Guest
            for $connector
        {
            fn push_completion(
                completion: $crate::Completion,
                idempotency_key: String,
                supersedes: Option<String>,
            ) -> Result<(), $crate::ConnectorError> {
                <$connector as $crate::HrisConnector>::push_completion(
                    completion,
                    idempotency_key,
                    supersedes,
                )
            }
            fn list_training_records(
                employee_id: String,
            ) -> Result<Vec<$crate::TrainingRecord>, $crate::ConnectorError> {
                <$connector as $crate::HrisConnector>::list_training_records(employee_id)
            }
        }
        impl $crate::__private::hris::exports::switchyard::connector::webhook_source::Guest
            for $connector
        {
            fn parse_webhook(
                headers: Vec<(String, String)>,
                body: Vec<u8>,
            ) -> Result<Vec<$crate::WebhookEvent>, $crate::ConnectorError> {
                <$connector as $crate::HrisConnector>::parse_webhook($crate::Webhook { headers, body })
            }
        }
        $crate::__private::hris::__export_hris_world!($connector with_types_in $crate::__private::hris);
    };
}

/// Export a type implementing [`LmsConnector`] as this component's
/// `lms-connector` world. Invoke once, at the crate root.
#[cfg(feature = "lms")]
#[macro_export]
macro_rules! export_lms {
    ($connector:ident) => {
        impl $crate::__private::lms::exports::switchyard::connector::user_provisioning::Guest
            for $connector
        {
            fn upsert_user(
                employee: $crate::Employee,
                lms_user_id: Option<String>,
                idempotency_key: String,
            ) -> Result<String, $crate::ConnectorError> {
                <$connector as $crate::LmsConnector>::upsert_user(
                    employee,
                    lms_user_id,
                    idempotency_key,
                )
            }
            fn set_active(
                lms_user_id: String,
                active: bool,
                idempotency_key: String,
            ) -> Result<(), $crate::ConnectorError> {
                <$connector as $crate::LmsConnector>::set_active(lms_user_id, active, idempotency_key)
            }
            fn find_user(
                employee_id: String,
            ) -> Result<Option<$crate::LmsUser>, $crate::ConnectorError> {
                <$connector as $crate::LmsConnector>::find_user(employee_id)
            }
        }
        impl $crate::__private::lms::exports::switchyard::connector::enrollment::Guest
            for $connector
        {
            fn enroll(
                lms_user_id: String,
                course_id: String,
                due: Option<String>,
                idempotency_key: String,
            ) -> Result<(), $crate::ConnectorError> {
                <$connector as $crate::LmsConnector>::enroll(
                    lms_user_id,
                    course_id,
                    due,
                    idempotency_key,
                )
            }
            fn unenroll(
                lms_user_id: String,
                course_id: String,
                idempotency_key: String,
            ) -> Result<(), $crate::ConnectorError> {
                <$connector as $crate::LmsConnector>::unenroll(lms_user_id, course_id, idempotency_key)
            }
        }
        impl $crate::__private::lms::exports::switchyard::connector::batch_provisioning::Guest
            for $connector
        {
            fn upsert_users(
                items: Vec<$crate::AccountWrite>,
            ) -> Result<Vec<$crate::ItemResult<$crate::AccountWritten>>, $crate::ConnectorError> {
                <$connector as $crate::LmsConnector>::upsert_users(items)
            }
            fn enroll_all(
                items: Vec<$crate::EnrollmentWrite>,
            ) -> Result<Vec<$crate::ItemResult<()>>, $crate::ConnectorError> {
                <$connector as $crate::LmsConnector>::enroll_all(items)
            }
            fn list_accounts(
                cursor: Option<String>,
            ) -> Result<$crate::AccountPage, $crate::ConnectorError> {
                <$connector as $crate::LmsConnector>::list_accounts(cursor)
            }
        }
        impl $crate::__private::lms::exports::switchyard::connector::completion_source::Guest
            for $connector
        {
            fn fetch_completions(
                cursor: Option<String>,
            ) -> Result<$crate::CompletionPage, $crate::ConnectorError> {
                <$connector as $crate::LmsConnector>::fetch_completions(cursor)
            }
        }
        impl $crate::__private::lms::exports::switchyard::connector::webhook_source::Guest
            for $connector
        {
            fn parse_webhook(
                headers: Vec<(String, String)>,
                body: Vec<u8>,
            ) -> Result<Vec<$crate::WebhookEvent>, $crate::ConnectorError> {
                <$connector as $crate::LmsConnector>::parse_webhook($crate::Webhook { headers, body })
            }
        }
        $crate::__private::lms::__export_lms_world!($connector with_types_in $crate::__private::lms);
    };
}

/// The connector's non-secret settings (the `config` table of its entry in
/// the host's configuration).
pub mod config {
    use crate::ConnectorError;

    /// The value of `key`, if set.
    pub fn get(key: &str) -> Option<String> {
        crate::host::config(key)
    }

    /// The value of `key`, or an `invalid-config` error naming it.
    pub fn require(key: &str) -> Result<String, ConnectorError> {
        get(key).ok_or_else(|| ConnectorError::InvalidConfig(format!("missing config key `{key}`")))
    }
}

/// Coordination between this connector's concurrent calls (contract 0.4.0).
///
/// The host runs a connector's calls concurrently, each in a fresh
/// instance: a plugin's memory does not outlive a call, and two calls that
/// find-then-create a resource they share (an LMS group standing for a
/// course) can both find nothing and both create it. Take the resource's
/// key with [`lock`] (or use [`get_or_create`]), and keep its id with
/// [`remember`] for the calls after. Locks and values are per connector and
/// in memory: a host restart starts empty, so the work under a lock must
/// still look before it creates.
pub mod shared {
    use crate::ConnectorError;

    /// A key held until dropped (or the end of the call).
    #[must_use = "the key is let go when this is dropped"]
    pub struct Held {
        key: String,
    }

    impl Drop for Held {
        fn drop(&mut self) {
            crate::host::unlock(&self.key);
        }
    }

    /// Wait until no other call of this connector holds `key`, then hold
    /// it until the returned [`Held`] is dropped. `transient` when the wait
    /// outlasts the call's deadline (the host retries the operation later).
    pub fn lock(key: &str) -> Result<Held, ConnectorError> {
        crate::host::lock(key)?;
        Ok(Held {
            key: key.to_owned(),
        })
    }

    /// What an earlier call of this connector remembered under `key`.
    pub fn recall(key: &str) -> Option<String> {
        crate::host::recall(key)
    }

    /// Remember `value` (up to 4 KiB) under `key` for this connector's
    /// later calls.
    pub fn remember(key: &str, value: &str) {
        crate::host::remember(key, value);
    }

    /// The value remembered under `key`, or, with `key` locked so that no
    /// other call does the same at once, the one `find_or_create` returns,
    /// remembered. `find_or_create` must itself look before it creates: the
    /// memory is empty after a restart, and the resource may exist already.
    ///
    /// ```ignore
    /// let group = shared::get_or_create(&format!("group:{course}"), || {
    ///     match find_group(&course)? {
    ///         Some(id) => Ok(id),
    ///         None => create_group(&course),
    ///     }
    /// })?;
    /// ```
    pub fn get_or_create(
        key: &str,
        find_or_create: impl FnOnce() -> Result<String, ConnectorError>,
    ) -> Result<String, ConnectorError> {
        if let Some(value) = recall(key) {
            return Ok(value);
        }
        let _held = lock(key)?;
        // Another call may have made it while this one waited.
        if let Some(value) = recall(key) {
            return Ok(value);
        }
        let value = find_or_create()?;
        remember(key, &value);
        Ok(value)
    }
}

/// Idempotent creation on an API with nowhere to put an idempotency key
/// (SCIM, most REST APIs): look the record up by its natural key (the HRIS
/// id stored on it, a username, an external id) before creating it, and
/// when the create meets "already exists" (a retry after a lost answer, a
/// call that raced this one), look again and use what is there.
///
/// `find` returns the record's id if it exists; `create` creates it and
/// returns its id, or `Err(Conflict)` when the API says it exists.
pub fn find_or_create<E>(
    find: impl Fn() -> Result<Option<String>, ConnectorError>,
    create: impl FnOnce() -> Result<String, Created<E>>,
) -> Result<String, ConnectorError> {
    if let Some(id) = find()? {
        return Ok(id);
    }
    match create() {
        Ok(id) => Ok(id),
        Err(Created::Failed(e)) => Err(e),
        Err(Created::Conflict(_)) => find()?.ok_or_else(|| {
            ConnectorError::Transient(
                "the API said the record exists but a lookup by its natural key found none; retry"
                    .into(),
            )
        }),
    }
}

/// How a create in [`find_or_create`] failed.
#[derive(Debug)]
pub enum Created<E> {
    /// The API says the record exists (409, "username taken"): carries
    /// whatever the plugin wants to keep (the response, a message).
    Conflict(E),
    /// Any other failure, returned as is.
    Failed(ConnectorError),
}

impl<E> From<ConnectorError> for Created<E> {
    fn from(e: ConnectorError) -> Self {
        Created::Failed(e)
    }
}

/// Log lines, attributed by the host to this connector.
pub mod log {
    /// Debug detail.
    pub fn debug(message: &str) {
        crate::host::log("debug", message);
    }
    /// Normal operation.
    pub fn info(message: &str) {
        crate::host::log("info", message);
    }
    /// Something unexpected that the connector worked around.
    pub fn warn(message: &str) {
        crate::host::log("warn", message);
    }
    /// Something failed.
    pub fn error(message: &str) {
        crate::host::log("error", message);
    }
}
