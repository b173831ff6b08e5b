//! Sync state in sled, behind typed accessors.
//!
//! **Invariant:** only this module knows about sled. Keys are
//! `link \0 employee [\0 ...]`, values JSON; nothing here holds a secret.
//!
//! Trees:
//! - `snapshots`: the last employee record seen from the HRIS (to diff);
//! - `accounts`: HRIS id -> LMS user id and whether the account is active;
//! - `enrollments`: enrollments made (employee, course);
//! - `completions`: completions written to the HRIS (employee, course, attempt);
//! - `cursors`: where each link's listings resume;
//! - `dead_letters`: operations that were refused, with the reason;
//! - `connector_health`: per connector (key: connector name), the plugin
//!   faults in a row and the quarantine, if any, with the plugin's sha256 it
//!   applies to.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde::de::DeserializeOwned;

use crate::model::{Completion, Employee};

/// The LMS account of one employee.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    /// LMS user id returned by `upsert-user`.
    pub lms_user_id: String,
    /// False once suspended.
    pub active: bool,
}

/// An enrollment the host made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrollment {
    /// Due date sent with it.
    pub due: Option<String>,
    /// Rule that assigned it.
    pub rule: Option<String>,
}

/// A completion written to the HRIS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WrittenCompletion {
    /// Key it was written with.
    pub idempotency_key: String,
    /// What was written.
    pub completion: Completion,
}

/// An operation that was given up on, kept for an operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Operation (`upsert-user`, `enroll`, `push-completion`, ...).
    pub operation: String,
    /// HRIS employee id.
    pub employee_id: String,
    /// Idempotency key of the operation.
    pub idempotency_key: String,
    /// Why it was given up on.
    pub reason: String,
    /// RFC 3339 time.
    pub at: String,
}

/// How a connector's plugin has been doing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectorHealth {
    /// Plugin name.
    pub plugin: String,
    /// sha256 of the plugin file the counts are about.
    pub sha256: String,
    /// Calls that failed with a plugin fault, in a row.
    pub faults_in_a_row: u32,
    /// Set when the connector is quarantined.
    pub quarantine: Option<Quarantine>,
}

/// Why and since when a connector is quarantined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quarantine {
    /// The last fault's message.
    pub reason: String,
    /// Faults in a row that triggered it.
    pub faults: u32,
    /// RFC 3339 time.
    pub at: String,
}

/// Counts of what a link's state holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LinkCounts {
    /// Employees in the snapshot.
    pub employees: usize,
    /// LMS accounts, active or not.
    pub accounts: usize,
    /// Enrollments made.
    pub enrollments: usize,
    /// Completions written.
    pub completions: usize,
    /// Dead letters.
    pub dead_letters: usize,
}

/// The sled database.
#[derive(Clone)]
pub struct State {
    db: sled::Db,
    snapshots: sled::Tree,
    accounts: sled::Tree,
    enrollments: sled::Tree,
    completions: sled::Tree,
    cursors: sled::Tree,
    dead_letters: sled::Tree,
    connector_health: sled::Tree,
}

fn key(parts: &[&str]) -> Vec<u8> {
    parts.join("\0").into_bytes()
}

fn prefix(link: &str) -> Vec<u8> {
    let mut p = link.as_bytes().to_vec();
    p.push(0);
    p
}

impl State {
    /// Open (or create) the database in `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<State> {
        let db = sled::open(dir)
            .with_context(|| format!("failed to open the state database in {}", dir.display()))?;
        let tree = |name: &str| {
            db.open_tree(name)
                .with_context(|| format!("failed to open state tree `{name}`"))
        };
        Ok(State {
            snapshots: tree("snapshots")?,
            accounts: tree("accounts")?,
            enrollments: tree("enrollments")?,
            completions: tree("completions")?,
            cursors: tree("cursors")?,
            dead_letters: tree("dead_letters")?,
            connector_health: tree("connector_health")?,
            db,
        })
    }

    fn get<T: DeserializeOwned>(tree: &sled::Tree, key: &[u8]) -> anyhow::Result<Option<T>> {
        match tree.get(key).context("failed to read state")? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .context("corrupt state record"),
        }
    }

    fn put<T: Serialize>(tree: &sled::Tree, key: &[u8], value: &T) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec(value).context("failed to encode state record")?;
        tree.insert(key, bytes).context("failed to write state")?;
        Ok(())
    }

    /// The last snapshot of an employee.
    pub fn snapshot(&self, link: &str, employee: &str) -> anyhow::Result<Option<Employee>> {
        Self::get(&self.snapshots, &key(&[link, employee]))
    }

    /// Record the latest snapshot of an employee.
    pub fn put_snapshot(&self, link: &str, employee: &Employee) -> anyhow::Result<()> {
        Self::put(&self.snapshots, &key(&[link, &employee.id]), employee)
    }

    /// The LMS account of an employee.
    pub fn account(&self, link: &str, employee: &str) -> anyhow::Result<Option<Account>> {
        Self::get(&self.accounts, &key(&[link, employee]))
    }

    /// Record the LMS account of an employee.
    pub fn put_account(&self, link: &str, employee: &str, account: &Account) -> anyhow::Result<()> {
        Self::put(&self.accounts, &key(&[link, employee]), account)
    }

    /// Whether the host enrolled the employee in the course.
    pub fn enrollment(
        &self,
        link: &str,
        employee: &str,
        course: &str,
    ) -> anyhow::Result<Option<Enrollment>> {
        Self::get(&self.enrollments, &key(&[link, employee, course]))
    }

    /// Record an enrollment.
    pub fn put_enrollment(
        &self,
        link: &str,
        employee: &str,
        course: &str,
        enrollment: &Enrollment,
    ) -> anyhow::Result<()> {
        Self::put(&self.enrollments, &key(&[link, employee, course]), enrollment)
    }

    /// Whether this attempt's completion was written.
    pub fn completion_written(&self, link: &str, c: &Completion) -> anyhow::Result<bool> {
        let k = key(&[link, &c.employee_id, &c.course_id, &c.attempt_id]);
        self.completions.contains_key(k).context("failed to read state")
    }

    /// Record a written completion.
    pub fn put_completion(&self, link: &str, written: &WrittenCompletion) -> anyhow::Result<()> {
        let c = &written.completion;
        Self::put(
            &self.completions,
            &key(&[link, &c.employee_id, &c.course_id, &c.attempt_id]),
            written,
        )
    }

    /// Written completions of a link.
    pub fn completions(&self, link: &str) -> anyhow::Result<Vec<WrittenCompletion>> {
        self.completions
            .scan_prefix(prefix(link))
            .map(|r| {
                let (_, v) = r.context("failed to read state")?;
                serde_json::from_slice(&v).context("corrupt state record")
            })
            .collect()
    }

    /// A cursor (`employees` or `completions`) of a link.
    pub fn cursor(&self, link: &str, name: &str) -> anyhow::Result<Option<String>> {
        Self::get(&self.cursors, &key(&[link, name]))
    }

    /// Advance a cursor.
    pub fn put_cursor(&self, link: &str, name: &str, cursor: &str) -> anyhow::Result<()> {
        Self::put(&self.cursors, &key(&[link, name]), &cursor)
    }

    /// Forget a cursor (the next listing starts from the beginning).
    pub fn delete_cursor(&self, link: &str, name: &str) -> anyhow::Result<()> {
        self.cursors.remove(key(&[link, name])).context("failed to write state")?;
        Ok(())
    }

    /// Keep a refused operation for an operator.
    pub fn put_dead_letter(&self, link: &str, letter: &DeadLetter) -> anyhow::Result<()> {
        let id = self.db.generate_id().context("failed to allocate an id")?;
        let mut k = prefix(link);
        k.extend_from_slice(&id.to_be_bytes());
        Self::put(&self.dead_letters, &k, letter)
    }

    /// Dead letters of a link, oldest first.
    pub fn dead_letters(&self, link: &str) -> anyhow::Result<Vec<DeadLetter>> {
        self.dead_letters
            .scan_prefix(prefix(link))
            .map(|r| {
                let (_, v) = r.context("failed to read state")?;
                serde_json::from_slice(&v).context("corrupt state record")
            })
            .collect()
    }

    /// A connector's health record.
    pub fn connector_health(&self, connector: &str) -> anyhow::Result<Option<ConnectorHealth>> {
        Self::get(&self.connector_health, connector.as_bytes())
    }

    /// Record a connector's health.
    pub fn put_connector_health(&self, connector: &str, health: &ConnectorHealth) -> anyhow::Result<()> {
        Self::put(&self.connector_health, connector.as_bytes(), health)
    }

    /// Lift a connector's quarantine and reset its fault count. Returns the
    /// quarantine that was lifted, if there was one.
    pub fn resume_connector(&self, connector: &str) -> anyhow::Result<Option<Quarantine>> {
        let Some(mut health) = self.connector_health(connector)? else {
            return Ok(None);
        };
        let lifted = health.quarantine.take();
        health.faults_in_a_row = 0;
        self.put_connector_health(connector, &health)?;
        Ok(lifted)
    }

    /// Quarantined connectors, by name.
    pub fn quarantined(&self) -> anyhow::Result<Vec<(String, ConnectorHealth)>> {
        let mut out = Vec::new();
        for entry in self.connector_health.iter() {
            let (k, v) = entry.context("failed to read state")?;
            let health: ConnectorHealth = serde_json::from_slice(&v).context("corrupt state record")?;
            if health.quarantine.is_some() {
                out.push((String::from_utf8_lossy(&k).into_owned(), health));
            }
        }
        Ok(out)
    }

    /// What the state holds for a link.
    pub fn counts(&self, link: &str) -> LinkCounts {
        let count = |tree: &sled::Tree| tree.scan_prefix(prefix(link)).count();
        LinkCounts {
            employees: count(&self.snapshots),
            accounts: count(&self.accounts),
            enrollments: count(&self.enrollments),
            completions: count(&self.completions),
            dead_letters: count(&self.dead_letters),
        }
    }

    /// Make everything written so far durable.
    pub fn flush(&self) -> anyhow::Result<()> {
        self.db.flush().context("failed to flush the state database")?;
        Ok(())
    }
}
