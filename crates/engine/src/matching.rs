//! Identity matching: which existing LMS account each employee is bound to,
//! by which key, and what a person must decide before the first sync.
//!
//! One pure function, [`match_accounts`], answers for the whole workforce
//! at once (two employees claiming one account is only visible that way).
//! `switchyard match` prints its [`MatchReport`]; a run of a link with a
//! `[links.NAME.matching]` section follows the same report
//! ([`Bindings`]), so what the report says is what the sync does.
//!
//! Names and emails are compared after normalisation: case, accents and
//! whitespace are not differences ("José  Núñez" is "jose nunez"). Beyond
//! that, `tolerance` is the number of single-character edits still taken
//! as the same value.

use std::collections::{BTreeMap, BTreeSet, HashMap};

mod matcher;
pub use matcher::{Matched, Matcher};
use std::fmt;

use serde::{Deserialize, Serialize};
use switchyard_model::{Employee, EmployeeId, LinkName, LmsUserId};

/// A key an employee is matched to an account by, in the order a link's
/// configuration gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchKey {
    /// The HRIS id stored on the LMS account (Moodle's `idnumber`, SCIM's
    /// `externalId`).
    HrisId,
    /// The work email, compared without case.
    Email,
    /// The account's username equals the work email or its local part.
    Username,
}

/// How a link matches (`[links.NAME.matching]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Matching {
    /// Keys, tried in order.
    pub keys: Vec<MatchKey>,
    /// Single-character edits by which a bound account's name or email may
    /// differ from the employee's before a person must look.
    pub tolerance: usize,
    /// What people decided.
    pub decisions: Decisions,
}

impl Default for Matching {
    /// What a sync without a matching section does: the plugin binds by
    /// the HRIS id.
    fn default() -> Matching {
        Matching {
            keys: vec![MatchKey::HrisId],
            tolerance: 0,
            decisions: Decisions::default(),
        }
    }
}

/// A link's decisions file: bind this employee to that account; never
/// bind that account (to anyone, or to one employee); never bind that
/// employee to an existing account.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decisions {
    /// Employee → the account they are bound to.
    pub bind: BTreeMap<EmployeeId, LmsUserId>,
    /// Accounts no employee is bound to.
    pub never_account: BTreeSet<LmsUserId>,
    /// Employees who get a new account whatever matches.
    pub never_employee: BTreeSet<EmployeeId>,
    /// (employee, account) pairs never bound.
    pub never_pair: BTreeSet<(EmployeeId, LmsUserId)>,
}

impl Decisions {
    fn forbids(&self, employee: &EmployeeId, account: &LmsUserId) -> bool {
        self.never_account.contains(account)
            || self
                .never_pair
                .contains(&(employee.clone(), account.clone()))
    }

    fn names_employee(&self, employee: &EmployeeId) -> bool {
        self.bind.contains_key(employee)
            || self.never_employee.contains(employee)
            || self.never_pair.iter().any(|(e, _)| e == employee)
    }
}

/// Why an employee is bound to an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BoundBy {
    /// A `bind` line of the decisions file.
    Decision,
    /// The host bound them in an earlier sync.
    SyncState,
    /// [`MatchKey::HrisId`].
    HrisId,
    /// [`MatchKey::Email`].
    Email,
    /// [`MatchKey::Username`].
    Username,
}

impl BoundBy {
    /// The name written in reports and audit records.
    pub fn name(self) -> &'static str {
        match self {
            BoundBy::Decision => "decision",
            BoundBy::SyncState => "sync-state",
            BoundBy::HrisId => "hris-id",
            BoundBy::Email => "email",
            BoundBy::Username => "username",
        }
    }
}

impl From<MatchKey> for BoundBy {
    fn from(k: MatchKey) -> BoundBy {
        match k {
            MatchKey::HrisId => BoundBy::HrisId,
            MatchKey::Email => BoundBy::Email,
            MatchKey::Username => BoundBy::Username,
        }
    }
}

/// What the first sync does for an employee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Bound to an existing account.
    Bind,
    /// A new account is made.
    New,
    /// Held until a person decides (the sync dead-letters the account
    /// write with the problem).
    Decide,
}

/// Something a person must decide on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "problem", rename_all = "kebab-case")]
pub enum Problem {
    /// Other employees match the same account.
    SharedAccount {
        /// The account.
        account: LmsUserId,
        /// The other employees who match it.
        others: Vec<EmployeeId>,
    },
    /// The employee matches more than one account (by one key or by
    /// different keys).
    SeveralAccounts {
        /// Each account and the key it matched by.
        accounts: Vec<(LmsUserId, BoundBy)>,
    },
    /// The account the employee matches holds another name or email.
    Differs {
        /// The account.
        account: LmsUserId,
        /// Which.
        field: Field,
        /// The employee's value (HRIS).
        employee: String,
        /// The account's value (LMS).
        lms: String,
    },
    /// A new account would be made although an account with a similar
    /// name exists.
    SimilarAccount {
        /// The account.
        account: LmsUserId,
        /// Its name.
        name: String,
    },
    /// A `bind` decision names an account the LMS does not hold.
    DecidedAccountMissing {
        /// The account.
        account: LmsUserId,
    },
}

/// A field compared between an employee and their account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Field {
    /// Given and family name.
    Name,
    /// Email.
    Email,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Name => "name",
            Field::Email => "email",
        })
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::SharedAccount { account, others } => {
                let others: Vec<&str> = others.iter().map(|e| &**e).collect();
                write!(
                    f,
                    "account {account} also matches employee {}",
                    others.join(", ")
                )
            }
            Problem::SeveralAccounts { accounts } => {
                let list: Vec<String> = accounts
                    .iter()
                    .map(|(a, by)| format!("{a} (by {})", by.name()))
                    .collect();
                write!(f, "matches several accounts: {}", list.join(", "))
            }
            Problem::Differs {
                account,
                field,
                employee,
                lms,
            } => write!(
                f,
                "account {account} has {field} `{lms}`, the HRIS has `{employee}`"
            ),
            Problem::SimilarAccount { account, name } => write!(
                f,
                "a new account would be made, but account {account} is named `{name}`"
            ),
            Problem::DecidedAccountMissing { account } => {
                write!(f, "decided account {account} is not in the LMS")
            }
        }
    }
}

/// One employee's line of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmployeeMatch {
    /// HRIS id.
    pub employee_id: EmployeeId,
    /// Given and family name.
    pub name: String,
    /// Work email.
    pub email: Option<String>,
    /// What the first sync does.
    pub outcome: Outcome,
    /// The account bound to (or the one matched, when undecided).
    pub account: Option<LmsUserId>,
    /// By which key or decision.
    pub by: Option<BoundBy>,
    /// Whether that account is active in the LMS.
    pub account_active: Option<bool>,
    /// What a person must decide on; empty unless `outcome` is `decide`.
    pub problems: Vec<Problem>,
}

/// An LMS account no employee matches; left alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnmatchedAccount {
    /// LMS user id.
    pub account: LmsUserId,
    /// Username.
    pub username: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// Name.
    pub name: String,
    /// The HRIS id it holds, if any.
    pub hris_id: Option<String>,
    /// Suspended or not.
    pub active: bool,
}

/// Counts of a report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MatchSummary {
    /// Employees matched (in scope, not terminated).
    pub employees: usize,
    /// Bound to an existing account.
    pub bound: usize,
    /// Getting a new account.
    pub new_accounts: usize,
    /// Waiting for a decision.
    pub to_decide: usize,
    /// LMS accounts read.
    pub accounts: usize,
    /// Accounts no employee matches.
    pub unmatched_accounts: usize,
}

/// What `switchyard match` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatchReport {
    /// The link.
    pub link: LinkName,
    /// The keys, in order.
    pub keys: Vec<MatchKey>,
    /// Edits tolerated in a name or email.
    pub tolerance: usize,
    /// Whether the link's sync follows this report (it has a matching
    /// section); otherwise the plugin binds by HRIS id.
    pub enforced: bool,
    /// Counts.
    pub summary: MatchSummary,
    /// One line per employee, by id.
    pub employees: Vec<EmployeeMatch>,
    /// Accounts no employee matches, by id.
    pub unmatched_accounts: Vec<UnmatchedAccount>,
}

impl MatchReport {
    /// Whether a person must decide anything.
    pub fn needs_decisions(&self) -> bool {
        self.summary.to_decide > 0
    }
}

/// What a sync does for an employee the host has no account for.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// Bind to this account.
    Bind {
        /// The account.
        account: LmsUserId,
        /// Why.
        by: BoundBy,
        /// Whether it is active in the LMS.
        active: bool,
    },
    /// Make a new account (the plugin may still adopt one that holds the
    /// employee's HRIS id).
    New,
    /// Do not write; a person must decide (the problems, as text).
    Decide(String),
}

/// Each employee's [`Resolution`], for a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bindings(HashMap<EmployeeId, Resolution>);

impl Bindings {
    /// What a sync does for each employee of a report who has no account
    /// yet (the others are not looked up).
    pub fn of_lines(
        lines: impl Iterator<Item = anyhow::Result<EmployeeMatch>>,
    ) -> anyhow::Result<Bindings> {
        let mut map = HashMap::new();
        for m in lines {
            let m = m?;
            let resolution = match (m.outcome, m.account, m.by) {
                (_, _, Some(BoundBy::SyncState)) => continue,
                (Outcome::Bind, Some(account), Some(by)) => Resolution::Bind {
                    account,
                    by,
                    active: m.account_active.unwrap_or(true),
                },
                (Outcome::Decide, ..) => Resolution::Decide(
                    m.problems
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
                _ => Resolution::New,
            };
            map.insert(m.employee_id, resolution);
        }
        Ok(Bindings(map))
    }

    /// The resolution of `employee`; `None` when the report did not cover
    /// them (not in scope, or terminated, when it was made).
    pub fn of(&self, employee: &EmployeeId) -> Option<&Resolution> {
        self.0.get(employee)
    }
}

/// What matching needs of an employee: the rest of the record is dropped
/// as each page is read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Person {
    /// HRIS id.
    pub id: EmployeeId,
    /// Given name.
    pub given_name: Option<String>,
    /// Family name.
    pub family_name: Option<String>,
    /// Work email.
    pub email: Option<String>,
}

impl From<Employee> for Person {
    fn from(e: Employee) -> Person {
        Person {
            id: e.id,
            given_name: e.given_name,
            family_name: e.family_name,
            email: e.email,
        }
    }
}

/// Lower case, accents folded, whitespace collapsed.
pub fn normalize(s: &str) -> String {
    deunicode::deunicode(s)
        .to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn full_name(given: Option<&str>, family: Option<&str>) -> String {
    [given, family]
        .into_iter()
        .flatten()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether two normalised names are the same within `tolerance` edits.
fn same(a: &str, b: &str, tolerance: usize) -> bool {
    a == b || strsim::levenshtein(a, b) <= tolerance
}

/// Whether two normalised name parts are alike: a typo, a short form.
fn alike(a: &str, b: &str) -> bool {
    !a.is_empty()
        && !b.is_empty()
        && (a == b || strsim::levenshtein(a, b) <= 1 || strsim::jaro_winkler(a, b) >= 0.88)
}

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MatchError {
    /// A listing failed (the plugin's error, or a bound it broke).
    #[error("{operation} on connector `{connector}` failed: {error}")]
    Listing {
        /// `fetch-employees` or `list-accounts`.
        operation: &'static str,
        /// The connector.
        connector: String,
        /// What it said.
        error: switchyard_model::ConnectorError,
    },
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// Every account the LMS holds, through `list-accounts` (bounded like a
/// run's listings), into `matcher`. `unsupported` when the plugin cannot
/// list.
async fn read_accounts(
    lms: &switchyard_runtime::Connector,
    matcher: &mut Matcher<'_>,
) -> Result<(), MatchError> {
    crate::paging::walk(
        "list-accounts",
        lms,
        async |cursor| {
            let page = lms.list_accounts(cursor).await?;
            Ok((page.accounts, page.next_cursor))
        },
        |page| matcher.add_accounts(page),
    )
    .await?
    .map_err(|error| MatchError::Listing {
        operation: "list-accounts",
        connector: lms.name.to_string(),
        error,
    })
}

/// The people a link would provision, by a full `fetch-employees`
/// listing (bounded like a run's), matched page by page.
async fn read_people(
    link: &crate::policy::LinkConfig,
    hris: &switchyard_runtime::Connector,
    matcher: &mut Matcher<'_>,
) -> Result<(), MatchError> {
    crate::paging::walk(
        "fetch-employees",
        hris,
        async |cursor| {
            let page = hris.fetch_employees(cursor).await?;
            Ok((page.employees, page.next_cursor))
        },
        |page| {
            matcher.add_people(
                page.into_iter()
                    .filter(|e| provisioned(link, e))
                    .map(|e| Person::from(link.fields.apply(e)))
                    .collect(),
            )
        },
    )
    .await?
    .map_err(|error| MatchError::Listing {
        operation: "fetch-employees",
        connector: hris.name.to_string(),
        error,
    })
}

/// Whom a link would provision: in scope and not terminated.
pub fn provisioned(link: &crate::policy::LinkConfig, e: &Employee) -> bool {
    e.status != switchyard_model::EmploymentStatus::Terminated
        && link.scope.as_ref().is_none_or(|s| s.covers(e))
}

/// The accounts the host has bound, by employee.
fn known(
    link_name: &LinkName,
    state: &dyn switchyard_store::Store,
) -> anyhow::Result<HashMap<EmployeeId, LmsUserId>> {
    Ok(state
        .accounts(link_name)?
        .into_iter()
        .map(|(e, a)| (e, a.lms_user_id))
        .collect())
}

/// A finished report: what it was made with, and its lines on disk.
pub struct MatchRun {
    /// The link.
    pub link: LinkName,
    /// The keys, in order.
    pub keys: Vec<MatchKey>,
    /// Edits tolerated in a name or email.
    pub tolerance: usize,
    /// Whether the link's sync follows the report.
    pub enforced: bool,
    /// The lines.
    pub matched: Matched,
}

impl MatchRun {
    /// Whether a person must decide anything.
    pub fn needs_decisions(&self) -> bool {
        self.matched.summary.to_decide > 0
    }

    /// The whole report in memory (the admin API's answer).
    pub fn collect(&self) -> anyhow::Result<MatchReport> {
        Ok(MatchReport {
            link: self.link.clone(),
            keys: self.keys.clone(),
            tolerance: self.tolerance,
            enforced: self.enforced,
            summary: self.matched.summary.clone(),
            employees: self.matched.lines().collect::<anyhow::Result<_>>()?,
            unmatched_accounts: self.matched.unmatched().collect::<anyhow::Result<_>>()?,
        })
    }

    /// The report as [`MatchReport`]'s JSON, written line by line as it
    /// is read from disk.
    pub fn write_json(&self, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
        let field = |out: &mut dyn std::io::Write, name: &str, value: serde_json::Value| {
            write!(out, "\"{name}\": {value},\n")
        };
        writeln!(out, "{{")?;
        field(out, "link", serde_json::to_value(&self.link)?)?;
        field(out, "keys", serde_json::to_value(&self.keys)?)?;
        field(out, "tolerance", self.tolerance.into())?;
        field(out, "enforced", self.enforced.into())?;
        field(out, "summary", serde_json::to_value(&self.matched.summary)?)?;
        write!(out, "\"employees\": [")?;
        for (n, line) in self.matched.lines().enumerate() {
            let sep = if n == 0 { "\n  " } else { ",\n  " };
            write!(out, "{sep}{}", serde_json::to_string(&line?)?)?;
        }
        write!(out, "\n],\n\"unmatched_accounts\": [")?;
        for (n, account) in self.matched.unmatched().enumerate() {
            let sep = if n == 0 { "\n  " } else { ",\n  " };
            write!(out, "{sep}{}", serde_json::to_string(&account?)?)?;
        }
        writeln!(out, "\n]\n}}")?;
        Ok(())
    }
}

/// `switchyard match`: list the LMS's accounts and the HRIS (a full
/// listing) and match, in scratch space beside the store. Writes nothing
/// to either system or the store.
pub async fn report(
    link_name: &LinkName,
    link: &crate::policy::LinkConfig,
    hris: &switchyard_runtime::Connector,
    lms: &switchyard_runtime::Connector,
    state: &dyn switchyard_store::Store,
) -> Result<MatchRun, MatchError> {
    let default = Matching::default();
    let matching = link.matching.as_ref().unwrap_or(&default);
    let known = known(link_name, state)?;
    let mut matcher = Matcher::new(state.scratch()?, matching, &known)?;
    read_accounts(lms, &mut matcher).await?;
    read_people(link, hris, &mut matcher).await?;
    Ok(MatchRun {
        link: link_name.clone(),
        keys: matching.keys.clone(),
        tolerance: matching.tolerance,
        enforced: link.matching.is_some(),
        matched: matcher.finish()?,
    })
}

/// A run's bindings: the employees the host knows (their snapshots) that
/// the link would provision, matched against the LMS's accounts now.
pub async fn bindings(
    link_name: &LinkName,
    link: &crate::policy::LinkConfig,
    matching: &Matching,
    lms: &switchyard_runtime::Connector,
    state: &dyn switchyard_store::Store,
) -> Result<Bindings, MatchError> {
    let known = known(link_name, state)?;
    let mut matcher = Matcher::new(state.scratch()?, matching, &known)?;
    read_accounts(lms, &mut matcher).await?;
    let people: Vec<Person> = state
        .snapshots(link_name)?
        .into_iter()
        .map(|s| s.employee)
        .filter(|e| provisioned(link, e))
        .map(Person::from)
        .collect();
    matcher.add_people(people)?;
    Ok(Bindings::of_lines(matcher.finish()?.lines())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_model::LmsAccount;

    fn employee(id: &str, given: &str, family: &str, email: &str) -> Person {
        Person {
            id: id.into(),
            given_name: Some(given.into()),
            family_name: Some(family.into()),
            email: Some(email.into()),
        }
    }

    fn account(
        id: &str,
        hris: &str,
        username: &str,
        email: &str,
        name: (&str, &str),
    ) -> LmsAccount {
        LmsAccount {
            id: id.into(),
            employee_id: Some(hris.into()).filter(|s: &String| !s.is_empty()),
            username: Some(username.into()),
            email: Some(email.into()),
            given_name: Some(name.0.into()),
            family_name: Some(name.1.into()),
            active: true,
        }
    }

    fn keys() -> Matching {
        Matching {
            keys: vec![MatchKey::HrisId, MatchKey::Email, MatchKey::Username],
            ..Matching::default()
        }
    }

    fn match_accounts(
        link: &LinkName,
        employees: &[Person],
        accounts: Vec<LmsAccount>,
        known: &HashMap<EmployeeId, LmsUserId>,
        matching: &Matching,
        enforced: bool,
    ) -> MatchReport {
        let dir = tempfile::tempdir().unwrap();
        let scratch = switchyard_store::Scratch::open_in(dir.path()).unwrap();
        let mut matcher = Matcher::new(scratch, matching, known).unwrap();
        matcher.add_accounts(accounts).unwrap();
        matcher.add_people(employees.to_vec()).unwrap();
        MatchRun {
            link: link.clone(),
            keys: matching.keys.clone(),
            tolerance: matching.tolerance,
            enforced,
            matched: matcher.finish().unwrap(),
        }
        .collect()
        .unwrap()
    }

    fn run(employees: &[Person], accounts: Vec<LmsAccount>, matching: &Matching) -> MatchReport {
        match_accounts(
            &"main".into(),
            employees,
            accounts,
            &HashMap::new(),
            matching,
            true,
        )
    }

    fn line<'a>(r: &'a MatchReport, id: &str) -> &'a EmployeeMatch {
        r.employees.iter().find(|m| *m.employee_id == *id).unwrap()
    }

    #[test]
    fn keys_in_order_case_accents_and_whitespace_are_no_difference() {
        let employees = [
            employee("1", "José", "Núñez", "Jose.Nunez@Example.com"),
            employee("2", "Ann", "Lee", "ann@example.com"),
            employee("3", "Bo", "Kim", "bo.kim@example.com"),
            employee("4", "New", "Person", "new@example.com"),
        ];
        let accounts = vec![
            account(
                "10",
                "1",
                "jn",
                "jose.nunez@example.com",
                ("jose ", "NUNEZ"),
            ),
            account("11", "", "ann", "ANN@example.com", ("Ann", "Lee")),
            account("12", "", "bo.kim", "old@example.com", ("Bo", "Kim")),
            account("13", "", "orphan", "orphan@example.com", ("Or", "Phan")),
        ];
        let r = run(&employees, accounts, &keys());
        assert_eq!(
            (line(&r, "1").outcome, line(&r, "1").by),
            (Outcome::Bind, Some(BoundBy::HrisId))
        );
        assert!(line(&r, "1").problems.is_empty(), "{:?}", line(&r, "1"));
        assert_eq!(line(&r, "2").by, Some(BoundBy::Email));
        assert_eq!(line(&r, "2").account.as_deref(), Some("11"));
        // Matched by username, but the email differs: a person looks.
        let bo = line(&r, "3");
        assert_eq!(
            (bo.outcome, bo.by),
            (Outcome::Decide, Some(BoundBy::Username))
        );
        assert!(matches!(
            bo.problems[..],
            [Problem::Differs {
                field: Field::Email,
                ..
            }]
        ));
        assert_eq!(line(&r, "4").outcome, Outcome::New);
        let unmatched: Vec<&str> = r.unmatched_accounts.iter().map(|a| &*a.account).collect();
        assert_eq!(unmatched, ["13"]);
        assert_eq!(
            (r.summary.bound, r.summary.new_accounts, r.summary.to_decide),
            (2, 1, 1)
        );
    }

    #[test]
    fn a_shared_account_several_matches_and_a_similar_name_need_a_decision() {
        let employees = [
            employee("1", "Kim", "Park", "team@example.com"),
            employee("2", "Lee", "Park", "team@example.com"),
            employee("3", "Max", "Roe", "max@example.com"),
            employee("4", "Jon", "Smith", "jon.smith@example.com"),
        ];
        let accounts = vec![
            account("20", "", "team", "team@example.com", ("Team", "Park")),
            account("21", "3", "max1", "x@example.com", ("Max", "Roe")),
            account("22", "", "max2", "max@example.com", ("Max", "Roe")),
            account(
                "23",
                "",
                "jsmith",
                "john.smith@example.com",
                ("John", "Smith"),
            ),
        ];
        let r = run(&employees, accounts.clone(), &keys());
        for id in ["1", "2"] {
            assert!(
                matches!(&line(&r, id).problems[..], [Problem::SharedAccount { account, .. }] if **account == *"20"),
                "{:?}",
                line(&r, id)
            );
        }
        assert!(matches!(
            &line(&r, "3").problems[..],
            [Problem::SeveralAccounts { accounts }] if accounts.len() == 2
        ));
        assert!(matches!(
            &line(&r, "4").problems[..],
            [Problem::SimilarAccount { account, .. }] if **account == *"23"
        ));
        assert!(r.needs_decisions());

        // Decided: 1 gets the shared account (2 a new one), 3 the one with
        // its HRIS id, 4 a new account beside John Smith's.
        let mut decided = keys();
        decided.decisions.bind.insert("1".into(), "20".into());
        decided.decisions.bind.insert("3".into(), "21".into());
        decided.decisions.never_employee.insert("4".into());
        let r = run(&employees, accounts, &decided);
        assert!(!r.needs_decisions(), "{:#?}", r.employees);
        assert_eq!(line(&r, "1").by, Some(BoundBy::Decision));
        assert_eq!(line(&r, "2").outcome, Outcome::New);
        assert_eq!(line(&r, "3").account.as_deref(), Some("21"));
        assert_eq!(line(&r, "4").outcome, Outcome::New);
        let b = Bindings::of_lines(r.employees.iter().cloned().map(Ok)).unwrap();
        assert_eq!(
            b.of(&"1".into()),
            Some(&Resolution::Bind {
                account: "20".into(),
                by: BoundBy::Decision,
                active: true
            })
        );
        assert_eq!(b.of(&"2".into()), Some(&Resolution::New));
    }

    #[test]
    fn tolerance_and_never_decisions() {
        let employees = [employee("1", "Katherine", "Ng", "k.ng@example.com")];
        let accounts = vec![account(
            "30",
            "1",
            "kng",
            "k.ng@example.com",
            ("Katharine", "Ng"),
        )];
        let strict = run(&employees, accounts.clone(), &keys());
        assert!(matches!(
            &line(&strict, "1").problems[..],
            [Problem::Differs {
                field: Field::Name,
                ..
            }]
        ));
        let tolerant = Matching {
            tolerance: 1,
            ..keys()
        };
        assert_eq!(
            line(&run(&employees, accounts.clone(), &tolerant), "1").outcome,
            Outcome::Bind
        );
        // An account ruled out is neither bound nor offered as similar.
        let mut never = keys();
        never.decisions.never_account.insert("30".into());
        let r = run(&employees, accounts, &never);
        assert_eq!(line(&r, "1").outcome, Outcome::New);
        assert!(line(&r, "1").problems.is_empty());
        assert_eq!(r.unmatched_accounts.len(), 1);
    }

    #[test]
    fn a_binding_the_host_made_stands_and_a_missing_decided_account_is_a_problem() {
        let employees = [
            employee("1", "A", "B", "a@example.com"),
            employee("2", "C", "D", "a@example.com"),
            employee("3", "E", "F", "e@example.com"),
        ];
        let accounts = vec![account("40", "", "a", "a@example.com", ("A", "B"))];
        let known = HashMap::from([(EmployeeId::from("1"), LmsUserId::from("40"))]);
        let mut matching = keys();
        matching.decisions.bind.insert("3".into(), "99".into());
        let r = match_accounts(
            &"main".into(),
            &employees,
            accounts,
            &known,
            &matching,
            true,
        );
        assert_eq!(line(&r, "1").by, Some(BoundBy::SyncState));
        assert!(line(&r, "1").problems.is_empty());
        assert!(
            matches!(&line(&r, "2").problems[..], [Problem::SharedAccount { others, .. }] if others[0] == *"1")
        );
        assert!(matches!(
            &line(&r, "3").problems[..],
            [Problem::DecidedAccountMissing { .. }]
        ));
    }
}
