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
use std::fmt;

use serde::{Deserialize, Serialize};
use switchyard_model::{Employee, EmployeeId, LinkName, LmsAccount, LmsUserId};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize)]
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
        /// `name` or `email`.
        field: &'static str,
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
#[derive(Debug, Clone, PartialEq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize)]
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

    /// What a sync does for each employee.
    pub fn bindings(&self) -> Bindings {
        Bindings(
            self.employees
                .iter()
                .map(|m| {
                    let resolution = match (m.outcome, &m.account, m.by) {
                        (Outcome::Bind, Some(account), Some(by)) => Resolution::Bind {
                            account: account.clone(),
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
                    (m.employee_id.clone(), resolution)
                })
                .collect(),
        )
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
    /// The resolution of `employee`; `None` when the report did not cover
    /// them (not in scope, or terminated, when it was made).
    pub fn of(&self, employee: &EmployeeId) -> Option<&Resolution> {
        self.0.get(employee)
    }
}

/// What matching needs of an employee: the rest of the record is dropped
/// as each page is read.
#[derive(Debug, Clone, PartialEq)]
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

/// An account as the matcher holds it: normalised keys once.
struct Held {
    account: LmsAccount,
    given: String,
    family: String,
}

/// The accounts, indexed by every key.
struct Index {
    held: Vec<Held>,
    by_id: HashMap<LmsUserId, usize>,
    by_hris: HashMap<String, Vec<usize>>,
    by_email: HashMap<String, Vec<usize>>,
    by_username: HashMap<String, Vec<usize>>,
    by_family: HashMap<String, Vec<usize>>,
    by_given: HashMap<String, Vec<usize>>,
}

impl Index {
    fn new(accounts: Vec<LmsAccount>) -> Index {
        let mut index = Index {
            held: Vec::with_capacity(accounts.len()),
            by_id: HashMap::new(),
            by_hris: HashMap::new(),
            by_email: HashMap::new(),
            by_username: HashMap::new(),
            by_family: HashMap::new(),
            by_given: HashMap::new(),
        };
        for account in accounts {
            let i = index.held.len();
            let put = |map: &mut HashMap<String, Vec<usize>>, key: Option<String>| {
                if let Some(key) = key.filter(|k| !k.is_empty()) {
                    map.entry(key).or_default().push(i);
                }
            };
            put(&mut index.by_hris, account.employee_id.clone());
            put(&mut index.by_email, account.email.as_deref().map(normalize));
            put(
                &mut index.by_username,
                account.username.as_deref().map(normalize),
            );
            let given = normalize(account.given_name.as_deref().unwrap_or(""));
            let family = normalize(account.family_name.as_deref().unwrap_or(""));
            put(&mut index.by_family, Some(family.clone()));
            put(&mut index.by_given, Some(given.clone()));
            index.by_id.insert(account.id.clone(), i);
            index.held.push(Held {
                account,
                given,
                family,
            });
        }
        index
    }

    /// The accounts `e` matches by `key`.
    fn lookup(&self, key: MatchKey, e: &Person) -> Vec<usize> {
        let email = e.email.as_deref().map(normalize).filter(|s| !s.is_empty());
        let found = |map: &HashMap<String, Vec<usize>>, k: &str| map.get(k).cloned();
        match key {
            MatchKey::HrisId => found(&self.by_hris, &e.id),
            MatchKey::Email => email.and_then(|m| found(&self.by_email, &m)),
            MatchKey::Username => email.map(|m| {
                let local = m.split('@').next().unwrap_or_default().to_owned();
                let mut all = found(&self.by_username, &m).unwrap_or_default();
                if local != m {
                    all.extend(found(&self.by_username, &local).unwrap_or_default());
                }
                all
            }),
        }
        .unwrap_or_default()
    }
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

/// The most similar accounts reported for one employee.
const MAX_SIMILAR: usize = 3;

/// Match `employees` (those in scope whom the link would provision)
/// against the LMS's `accounts`, given the accounts the host already bound
/// (`known`: employee → account) and the link's `matching`. Pure.
pub fn match_accounts(
    link: &LinkName,
    employees: &[Person],
    accounts: Vec<LmsAccount>,
    known: &HashMap<EmployeeId, LmsUserId>,
    matching: &Matching,
    enforced: bool,
) -> MatchReport {
    let index = Index::new(accounts);
    let decisions = &matching.decisions;
    let decided: BTreeSet<&LmsUserId> = decisions.bind.values().collect();
    let mut lines: Vec<EmployeeMatch> = Vec::with_capacity(employees.len());
    // Who claims each account, by index.
    let mut claims: HashMap<usize, Vec<usize>> = HashMap::new();
    for e in employees {
        let mut line = EmployeeMatch {
            employee_id: e.id.clone(),
            name: full_name(e.given_name.as_deref(), e.family_name.as_deref()),
            email: e.email.clone(),
            outcome: Outcome::New,
            account: None,
            by: None,
            account_active: None,
            problems: Vec::new(),
        };
        let at = lines.len();
        let mut bind = |line: &mut EmployeeMatch, i: Option<usize>, id: &LmsUserId, by| {
            line.outcome = Outcome::Bind;
            line.account = Some(id.clone());
            line.by = Some(by);
            if let Some(i) = i {
                line.account_active = Some(index.held[i].account.active);
                claims.entry(i).or_default().push(at);
            }
        };
        if let Some(id) = known.get(&e.id) {
            bind(
                &mut line,
                index.by_id.get(id).copied(),
                id,
                BoundBy::SyncState,
            );
        } else if let Some(id) = decisions.bind.get(&e.id) {
            match index.by_id.get(id) {
                Some(&i) => bind(&mut line, Some(i), id, BoundBy::Decision),
                None => line.problems.push(Problem::DecidedAccountMissing {
                    account: id.clone(),
                }),
            }
        } else if !decisions.never_employee.contains(&e.id) {
            // Every candidate, by key in order; an account decided for
            // someone else or ruled out is none.
            let mut found: Vec<(usize, BoundBy)> = Vec::new();
            let mut first: Option<MatchKey> = None;
            for &key in &matching.keys {
                for i in index.lookup(key, e) {
                    let id = &index.held[i].account.id;
                    if decided.contains(id) || decisions.forbids(&e.id, id) {
                        continue;
                    }
                    if !found.iter().any(|(j, _)| *j == i) {
                        first.get_or_insert(key);
                        found.push((i, key.into()));
                    }
                }
            }
            match found.as_slice() {
                [] => {}
                [(i, by)] => {
                    let id = index.held[*i].account.id.clone();
                    bind(&mut line, Some(*i), &id, *by);
                }
                several => {
                    line.problems.push(Problem::SeveralAccounts {
                        accounts: several
                            .iter()
                            .map(|(i, by)| (index.held[*i].account.id.clone(), *by))
                            .collect(),
                    });
                }
            }
        }
        lines.push(line);
    }
    // An account two employees match: a person picks (a bind decision);
    // a binding made by the host or by a decision stands.
    for (i, claimants) in &claims {
        if claimants.len() < 2 {
            continue;
        }
        let account = &index.held[*i].account.id;
        for &c in claimants {
            if matches!(lines[c].by, Some(BoundBy::SyncState | BoundBy::Decision)) {
                continue;
            }
            let others = claimants
                .iter()
                .filter(|&&o| o != c)
                .map(|&o| lines[o].employee_id.clone())
                .collect();
            lines[c].problems.push(Problem::SharedAccount {
                account: account.clone(),
                others,
            });
        }
    }
    // A bound account that holds another name or email.
    for (line, e) in lines.iter_mut().zip(employees) {
        let (Some(account), Some(by)) = (&line.account, line.by) else {
            continue;
        };
        if matches!(by, BoundBy::SyncState | BoundBy::Decision) || !line.problems.is_empty() {
            continue;
        }
        let Some(held) = index.by_id.get(account).map(|&i| &index.held[i]) else {
            continue;
        };
        let ours = normalize(&line.name);
        let theirs = format!("{} {}", held.given, held.family);
        let theirs = theirs.trim();
        if !ours.is_empty() && !theirs.is_empty() && !same(&ours, theirs, matching.tolerance) {
            line.problems.push(Problem::Differs {
                account: account.clone(),
                field: "name",
                employee: line.name.clone(),
                lms: full_name(
                    held.account.given_name.as_deref(),
                    held.account.family_name.as_deref(),
                ),
            });
        }
        if let (Some(ours), Some(theirs)) = (&e.email, &held.account.email)
            && !same(&normalize(ours), &normalize(theirs), matching.tolerance)
        {
            line.problems.push(Problem::Differs {
                account: account.clone(),
                field: "email",
                employee: ours.clone(),
                lms: theirs.clone(),
            });
        }
    }
    // A new account beside one with a similar name that nobody matches.
    for (line, e) in lines.iter_mut().zip(employees) {
        if line.account.is_some() || !line.problems.is_empty() || decisions.names_employee(&e.id) {
            continue;
        }
        let given = normalize(e.given_name.as_deref().unwrap_or(""));
        let family = normalize(e.family_name.as_deref().unwrap_or(""));
        let mut similar: Vec<usize> = Vec::new();
        let blocks = [
            (index.by_family.get(&family), true),
            (index.by_given.get(&given), false),
        ];
        'blocks: for (block, same_family) in blocks {
            for &i in block.into_iter().flatten() {
                let held = &index.held[i];
                let id = &held.account.id;
                if claims.contains_key(&i)
                    || decided.contains(id)
                    || decisions.forbids(&e.id, id)
                    || similar.contains(&i)
                {
                    continue;
                }
                let other = if same_family {
                    alike(&given, &held.given)
                } else {
                    alike(&family, &held.family)
                };
                if other {
                    similar.push(i);
                    if similar.len() == MAX_SIMILAR {
                        break 'blocks;
                    }
                }
            }
        }
        for i in similar {
            let held = &index.held[i].account;
            line.problems.push(Problem::SimilarAccount {
                account: held.id.clone(),
                name: full_name(held.given_name.as_deref(), held.family_name.as_deref()),
            });
        }
    }
    let mut summary = MatchSummary {
        employees: lines.len(),
        accounts: index.held.len(),
        ..MatchSummary::default()
    };
    for line in &mut lines {
        if !line.problems.is_empty() {
            line.outcome = Outcome::Decide;
        }
        match line.outcome {
            Outcome::Bind => summary.bound += 1,
            Outcome::New => summary.new_accounts += 1,
            Outcome::Decide => summary.to_decide += 1,
        }
    }
    lines.sort_by(|a, b| a.employee_id.cmp(&b.employee_id));
    let mut unmatched: Vec<UnmatchedAccount> = index
        .held
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !claims.contains_key(i))
        .map(|(_, h)| UnmatchedAccount {
            name: full_name(
                h.account.given_name.as_deref(),
                h.account.family_name.as_deref(),
            ),
            account: h.account.id,
            username: h.account.username,
            email: h.account.email,
            hris_id: h.account.employee_id,
            active: h.account.active,
        })
        .collect();
    unmatched.sort_by(|a, b| a.account.cmp(&b.account));
    summary.unmatched_accounts = unmatched.len();
    MatchReport {
        link: link.clone(),
        keys: matching.keys.clone(),
        tolerance: matching.tolerance,
        enforced,
        summary,
        employees: lines,
        unmatched_accounts: unmatched,
    }
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
/// run's listings). `unsupported` when the plugin cannot list.
async fn list_accounts(
    lms: &switchyard_runtime::Connector,
    listed: crate::paging::Listed<'_>,
) -> Result<Vec<LmsAccount>, MatchError> {
    let failed = |error| MatchError::Listing {
        operation: "list-accounts",
        connector: lms.name.to_string(),
        error,
    };
    let mut accounts = Vec::new();
    crate::paging::walk(
        "list-accounts",
        lms,
        async |cursor| {
            let page = lms.list_accounts(cursor).await?;
            Ok((page.accounts, page.next_cursor))
        },
        |page| accounts.extend(page),
        listed,
    )
    .await
    .map_err(failed)?;
    Ok(accounts)
}

/// The people a link would provision, by a full `fetch-employees`
/// listing (bounded like a run's), each page reduced as it is read.
async fn list_people(
    link: &crate::policy::LinkConfig,
    hris: &switchyard_runtime::Connector,
    listed: crate::paging::Listed<'_>,
) -> Result<Vec<Person>, MatchError> {
    let failed = |error| MatchError::Listing {
        operation: "fetch-employees",
        connector: hris.name.to_string(),
        error,
    };
    let mut people = Vec::new();
    crate::paging::employee_pages(
        hris,
        |page| {
            people.extend(
                page.into_iter()
                    .filter(|e| provisioned(link, e))
                    .map(|e| Person::from(link.fields.apply(e))),
            )
        },
        listed,
    )
    .await
    .map_err(failed)?;
    Ok(people)
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

/// `switchyard match`: list the HRIS (a full listing) and the LMS's
/// accounts, and match. Writes nothing to either system or the store.
pub async fn report(
    link_name: &LinkName,
    link: &crate::policy::LinkConfig,
    hris: &switchyard_runtime::Connector,
    lms: &switchyard_runtime::Connector,
    state: &dyn switchyard_store::Store,
    listed: crate::paging::Listed<'_>,
) -> Result<MatchReport, MatchError> {
    let employees = list_people(link, hris, listed).await?;
    let accounts = list_accounts(lms, listed).await?;
    let default = Matching::default();
    Ok(match_accounts(
        link_name,
        &employees,
        accounts,
        &known(link_name, state)?,
        link.matching.as_ref().unwrap_or(&default),
        link.matching.is_some(),
    ))
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
    let employees: Vec<Person> = state
        .snapshots(link_name)?
        .into_iter()
        .map(|s| s.employee)
        .filter(|e| provisioned(link, e))
        .map(Person::from)
        .collect();
    let accounts = list_accounts(lms, &crate::paging::unobserved).await?;
    let known = known(link_name, state)?;
    Ok(match_accounts(link_name, &employees, accounts, &known, matching, true).bindings())
}

#[cfg(test)]
mod tests {
    use super::*;

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
            [Problem::Differs { field: "email", .. }]
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
        let b = r.bindings();
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
            [Problem::Differs { field: "name", .. }]
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
