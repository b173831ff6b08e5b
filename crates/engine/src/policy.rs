//! A link's policy: which connectors it joins and the HR rules the engine
//! applies (assignment rules, lifecycle and retake policies, the
//! mass-deactivation guard, the field allowlist). The configuration file
//! (in the `switchyard` crate) is parsed into these types; the enums
//! deserialize from their kebab-case names there.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use switchyard_model::{ConnectorName, CourseId, EmploymentStatus};

use crate::fields::FieldAllowlist;

/// A link: one HRIS connector kept in sync with one LMS connector.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// The HRIS connector's name.
    pub hris: ConnectorName,
    /// The LMS connector's name.
    pub lms: ConnectorName,
    /// What a termination does to the LMS account.
    pub on_termination: TerminationPolicy,
    /// Which completion of a course is written to the HRIS.
    pub completion_policy: CompletionPolicy,
    /// What leave does to the LMS account.
    pub on_leave: LeavePolicy,
    /// What happens to courses the rules no longer require after a change.
    pub on_reassignment: ReassignmentPolicy,
    /// The most deactivations one run may make before it halts for an operator.
    pub max_deactivations: DeactivationLimit,
    /// Days before a completion expires that the course is assigned again.
    pub recertify_lead_days: u32,
    /// Employees provisioned concurrently.
    pub concurrency: usize,
    /// Assignment rules.
    pub rules: Vec<Rule>,
    /// The employee fields kept (`fields`, plus those the rules match on).
    pub fields: FieldAllowlist,
    /// A run lists every employee (not only changes) when the last full
    /// listing is older than this (`full_listing_every`, default 7 days):
    /// that is how employees gone from the HRIS are noticed for retention.
    pub full_listing_every: Duration,
    /// Which employees the link manages (`[links.NAME.scope]`); `None`:
    /// everyone.
    pub scope: Option<Scope>,
    /// How existing LMS accounts are matched (`[links.NAME.matching]`);
    /// `None`: the plugin binds by HRIS id and the run does not match.
    pub matching: Option<crate::matching::Matching>,
}

/// What leave does to the LMS account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeavePolicy {
    /// Keep access; no new assignments while on leave.
    Keep,
    /// Suspend the account until the employee returns.
    Suspend,
}

/// What happens to courses the rules no longer require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReassignmentPolicy {
    /// Keep the enrollment.
    Keep,
    /// Withdraw (unenroll) it.
    Withdraw,
}

/// A cap on deactivations in one run: a count, or a percentage of the
/// accounts the link manages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DeactivationLimit {
    /// At most this many.
    Count(usize),
    /// At most this percent of the link's accounts.
    Percent(f64),
}

impl DeactivationLimit {
    /// The cap for a link managing `accounts` accounts.
    pub fn allowed(&self, accounts: usize) -> usize {
        match *self {
            DeactivationLimit::Count(n) => n,
            // Rounded up, so a small link can still lose one account a run.
            DeactivationLimit::Percent(p) => ((accounts as f64) * p / 100.0).ceil() as usize,
        }
    }
}

impl std::fmt::Display for DeactivationLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeactivationLimit::Count(n) => write!(f, "{n}"),
            DeactivationLimit::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl<'de> Deserialize<'de> for DeactivationLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(usize),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Count(n) => Ok(DeactivationLimit::Count(n)),
            Raw::Text(t) => {
                let bad = || {
                    serde::de::Error::custom(format!(
                        "max_deactivations `{t}` must be a count (5) or a percentage (\"5%\")"
                    ))
                };
                match t.trim().strip_suffix('%') {
                    Some(p) => p
                        .trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|p| (0.0..=100.0).contains(p))
                        .map(DeactivationLimit::Percent)
                        .ok_or_else(bad),
                    None => t
                        .trim()
                        .parse()
                        .map(DeactivationLimit::Count)
                        .map_err(|_| bad()),
                }
            }
        }
    }
}

/// What happens to the LMS account of a terminated employee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TerminationPolicy {
    /// Suspend the LMS account (it is reactivated on rehire).
    Suspend,
    /// Keep access, stop new assignments.
    StopAssignments,
    /// Only record the termination.
    Record,
}

/// Which completion of a course wins when there are several attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CompletionPolicy {
    /// The most recent attempt.
    Latest,
    /// The attempt with the highest score.
    HighestScore,
    /// The first passed (or completed) attempt.
    FirstPass,
}

/// An assignment rule: employees matching `when` (and not `unless`) get `courses`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Name used in logs and the audit trail.
    #[serde(default)]
    pub name: Option<String>,
    /// Course keys assigned.
    pub courses: Vec<CourseId>,
    /// Conditions that must all hold (an empty table matches everyone).
    #[serde(default)]
    pub when: Conditions,
    /// Conditions that exclude an employee when any of them holds.
    #[serde(default)]
    pub unless: Option<Conditions>,
    /// Days from assignment to the due date.
    #[serde(default)]
    pub due_in_days: Option<u32>,
    /// Days a completion stays valid; sets the completion's expiry.
    #[serde(default)]
    pub recertify_every_days: Option<u32>,
}

/// Each present field is an any-of list; all present fields must match.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    /// Any of these departments.
    pub department: Option<Vec<String>>,
    /// Any of these locations.
    pub location: Option<Vec<String>>,
    /// Any of these job titles.
    pub job_title: Option<Vec<String>>,
    /// Any of these employment statuses.
    pub status: Option<Vec<EmploymentStatus>>,
    /// Custom HRIS fields: field name to any-of values.
    pub custom: Option<BTreeMap<String, Vec<String>>>,
    /// Any of these employment types, matched against the HRIS's own
    /// status wording (`raw-status`, each part of BambooHR's
    /// `Active / Full-Time`): `Full-Time`, `Part-Time`, `Contractor`.
    pub employment_type: Option<Vec<String>>,
    /// Any of these HRIS employee ids.
    pub ids: Option<Vec<String>>,
}

/// Which employees a link manages: a pilot on part of the workforce.
/// `include` works as a rule's `when` (every given field matches, each an
/// any-of list), `exclude` as its `unless` (any given field matches).
/// Employees out of scope are neither created nor enrolled and get no
/// completions written back; an account made while they were in scope is
/// left alone when the scope narrows, unless the run is asked to retire
/// it (`sync --retire-out-of-scope`), and is still suspended on
/// termination.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Who is in (absent: everyone).
    #[serde(default)]
    pub include: Option<Conditions>,
    /// Who is out, though included.
    #[serde(default)]
    pub exclude: Option<Conditions>,
}

impl Scope {
    /// Whether the link manages this employee.
    pub fn covers(&self, e: &switchyard_model::Employee) -> bool {
        self.include
            .as_ref()
            .is_none_or(|c| crate::rules::matches(c, e))
            && !self
                .exclude
                .as_ref()
                .is_some_and(|c| crate::rules::matches_any(c, e))
    }

    /// One line for `status` and logs: `department = Warehouse; excluding ids = 7`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(c) = &self.include {
            parts.push(describe(c));
        }
        if let Some(c) = &self.exclude {
            parts.push(format!("excluding {}", describe(c)));
        }
        parts.retain(|p| !p.is_empty() && p != "excluding ");
        if parts.is_empty() {
            "everyone".into()
        } else {
            parts.join("; ")
        }
    }
}

fn describe(c: &Conditions) -> String {
    let mut parts = Vec::new();
    let mut list = |name: &str, values: &Option<Vec<String>>| {
        if let Some(v) = values {
            parts.push(format!("{name} = {}", v.join(" | ")));
        }
    };
    list("department", &c.department);
    list("location", &c.location);
    list("job_title", &c.job_title);
    list("employment_type", &c.employment_type);
    list("ids", &c.ids);
    if let Some(statuses) = &c.status {
        let names: Vec<String> = statuses.iter().map(|s| format!("{s:?}")).collect();
        parts.push(format!("status = {}", names.join(" | ")));
    }
    if let Some(custom) = &c.custom {
        for (field, values) in custom {
            parts.push(format!("{field} = {}", values.join(" | ")));
        }
    }
    parts.join(", ")
}
