//! The matching itself, over scratch space on disk: every account and
//! every employee's line lives in a [`Scratch`] database, not in memory,
//! so a report for a large workforce runs in bounded memory (the scratch
//! database's cache and one page at a time).
//!
//! The order of work: every account is indexed by its keys
//! ([`Matcher::add_accounts`]); each employee is matched as their page is
//! read ([`Matcher::add_people`]), claiming the account they match; then
//! [`Matcher::finish`] finds accounts claimed twice, accounts claimed by
//! nobody, names and emails that differ, and similar names beside a new
//! account.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use switchyard_model::{EmployeeId, LmsAccount, LmsUserId};
use switchyard_store::{Scratch, ScratchTree};

use super::{
    BoundBy, EmployeeMatch, Field, MatchKey, MatchSummary, Matching, Outcome, Person, Problem,
    UnmatchedAccount, alike, full_name, normalize, same,
};

/// The most similar accounts reported for one employee.
const MAX_SIMILAR: usize = 3;

/// Kinds of index entries (the first byte of a key in `keys`).
const HRIS: u8 = b'h';
const EMAIL: u8 = b'e';
const USERNAME: u8 = b'u';
/// Blocks of the similar-name search, of accounts nobody claimed.
const FAMILY: u8 = b'f';
const GIVEN: u8 = b'g';

/// An account as stored: with its normalised names.
#[derive(Serialize, Deserialize)]
struct Held {
    account: LmsAccount,
    given: String,
    family: String,
}

/// An employee's line as stored while matching goes on.
#[derive(Serialize, Deserialize)]
struct Stored {
    line: EmployeeMatch,
    person: Person,
    /// The account claimed (its index).
    claim: Option<u32>,
}

fn json<T: Serialize>(value: &T) -> anyhow::Result<Vec<u8>> {
    Ok(serde_json::to_vec(value)?)
}

fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> anyhow::Result<T> {
    Ok(serde_json::from_slice(bytes)?)
}

/// An index key: its kind, then the value.
fn index_key(kind: u8, value: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(value.len() + 1);
    key.push(kind);
    key.extend_from_slice(value.as_bytes());
    key
}

/// Index account `i` under `kind` and `value`: an entry's value is the
/// indexes of its accounts (one read per lookup, not a scan).
fn index(tree: &ScratchTree, kind: u8, value: &str, i: u32) -> anyhow::Result<()> {
    let key = index_key(kind, value);
    let mut all = tree.get(&key)?.unwrap_or_default();
    all.extend_from_slice(&i.to_be_bytes());
    tree.insert(&key, &all)
}

/// The accounts indexed under `kind` and `value`.
fn lookup(tree: &ScratchTree, kind: u8, value: &str) -> anyhow::Result<Vec<u32>> {
    Ok(tree
        .get(&index_key(kind, value))?
        .unwrap_or_default()
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Matches employees to accounts; see the module documentation.
pub struct Matcher<'a> {
    matching: &'a Matching,
    known: &'a HashMap<EmployeeId, LmsUserId>,
    /// Accounts a `bind` decision gives someone.
    decided: BTreeSet<&'a LmsUserId>,
    /// Account index → [`Held`].
    accounts: ScratchTree,
    /// Account id → index.
    ids: ScratchTree,
    /// [`index_key`]s → the indexes of their accounts.
    keys: ScratchTree,
    /// Employee id → [`Stored`].
    lines: ScratchTree,
    /// Account index, employee id → nothing.
    claims: ScratchTree,
    next: u32,
    employees: usize,
    scratch: Scratch,
}

/// A finished match: the lines and unmatched accounts, on disk, read in
/// order.
pub struct Matched {
    /// Counts.
    pub summary: MatchSummary,
    lines: ScratchTree,
    unmatched: ScratchTree,
    _scratch: Scratch,
}

impl Matched {
    /// Every employee's line, by id.
    pub fn lines(&self) -> impl Iterator<Item = anyhow::Result<EmployeeMatch>> + use<> {
        self.lines
            .iter()
            .map(|entry| Ok(parse::<Stored>(&entry?.1)?.line))
    }

    /// Every account no employee matches, by id.
    pub fn unmatched(&self) -> impl Iterator<Item = anyhow::Result<UnmatchedAccount>> + use<> {
        self.unmatched.iter().map(|entry| parse(&entry?.1))
    }
}

impl<'a> Matcher<'a> {
    /// A matcher working in `scratch`, with the link's `matching` and the
    /// accounts the host has bound (`known`, employee → account).
    pub fn new(
        scratch: Scratch,
        matching: &'a Matching,
        known: &'a HashMap<EmployeeId, LmsUserId>,
    ) -> anyhow::Result<Matcher<'a>> {
        Ok(Matcher {
            matching,
            known,
            decided: matching.decisions.bind.values().collect(),
            accounts: scratch.tree("accounts")?,
            ids: scratch.tree("ids")?,
            keys: scratch.tree("keys")?,
            lines: scratch.tree("lines")?,
            claims: scratch.tree("claims")?,
            next: 0,
            employees: 0,
            scratch,
        })
    }

    /// Index a page of accounts. Every account comes before the first
    /// employee.
    pub fn add_accounts(&mut self, page: Vec<LmsAccount>) -> anyhow::Result<()> {
        for account in page {
            let i = self.next;
            self.next += 1;
            let put = |kind: u8, value: Option<String>| match value.filter(|v| !v.is_empty()) {
                Some(v) => index(&self.keys, kind, &v, i),
                None => Ok(()),
            };
            put(HRIS, account.employee_id.clone())?;
            put(EMAIL, account.email.as_deref().map(normalize))?;
            put(USERNAME, account.username.as_deref().map(normalize))?;
            let held = Held {
                given: normalize(account.given_name.as_deref().unwrap_or("")),
                family: normalize(account.family_name.as_deref().unwrap_or("")),
                account,
            };
            self.ids
                .insert(held.account.id.as_bytes(), &i.to_be_bytes())?;
            self.accounts.insert(&i.to_be_bytes(), &json(&held)?)?;
        }
        Ok(())
    }

    fn index_of(&self, id: &LmsUserId) -> anyhow::Result<Option<u32>> {
        Ok(self
            .ids
            .get(id.as_bytes())?
            .and_then(|b| <[u8; 4]>::try_from(b.as_slice()).ok())
            .map(u32::from_be_bytes))
    }

    fn held(&self, i: u32) -> anyhow::Result<Held> {
        match self.accounts.get(&i.to_be_bytes())? {
            Some(bytes) => parse(&bytes),
            None => anyhow::bail!("scratch space lost account {i}"),
        }
    }

    /// The accounts `e` matches by `key`.
    fn candidates(&self, key: MatchKey, e: &Person) -> anyhow::Result<Vec<u32>> {
        let email = e.email.as_deref().map(normalize).filter(|s| !s.is_empty());
        Ok(match (key, email) {
            (MatchKey::HrisId, _) => lookup(&self.keys, HRIS, &e.id)?,
            (MatchKey::Email, Some(m)) => lookup(&self.keys, EMAIL, &m)?,
            (MatchKey::Username, Some(m)) => {
                let mut all = lookup(&self.keys, USERNAME, &m)?;
                let local = m.split('@').next().unwrap_or_default();
                if local != m {
                    all.extend(lookup(&self.keys, USERNAME, local)?);
                }
                all
            }
            (_, None) => Vec::new(),
        })
    }

    /// Match a page of employees (those the link would provision).
    pub fn add_people(&mut self, page: Vec<Person>) -> anyhow::Result<()> {
        let decisions = &self.matching.decisions;
        for person in page {
            self.employees += 1;
            let mut line = EmployeeMatch {
                employee_id: person.id.clone(),
                name: full_name(person.given_name.as_deref(), person.family_name.as_deref()),
                email: person.email.clone(),
                outcome: Outcome::New,
                account: None,
                by: None,
                account_active: None,
                problems: Vec::new(),
            };
            let mut bound: Option<(Option<u32>, LmsUserId, BoundBy)> = None;
            if let Some(id) = self.known.get(&person.id) {
                bound = Some((self.index_of(id)?, id.clone(), BoundBy::SyncState));
            } else if let Some(id) = decisions.bind.get(&person.id) {
                match self.index_of(id)? {
                    Some(i) => bound = Some((Some(i), id.clone(), BoundBy::Decision)),
                    None => line.problems.push(Problem::DecidedAccountMissing {
                        account: id.clone(),
                    }),
                }
            } else if !decisions.never_employee.contains(&person.id) {
                // Every candidate, by key in order; an account decided
                // for someone else, or ruled out, is none.
                let mut found: Vec<(u32, BoundBy, LmsUserId)> = Vec::new();
                for &key in &self.matching.keys {
                    for i in self.candidates(key, &person)? {
                        if found.iter().any(|(j, ..)| *j == i) {
                            continue;
                        }
                        let id = self.held(i)?.account.id;
                        if self.decided.contains(&id) || decisions.forbids(&person.id, &id) {
                            continue;
                        }
                        found.push((i, key.into(), id));
                    }
                }
                match found.len() {
                    0 => {}
                    1 => {
                        let (i, by, id) = found.remove(0);
                        bound = Some((Some(i), id, by));
                    }
                    _ => line.problems.push(Problem::SeveralAccounts {
                        accounts: found.into_iter().map(|(_, by, id)| (id, by)).collect(),
                    }),
                }
            }
            let mut claim = None;
            if let Some((i, id, by)) = bound {
                line.outcome = Outcome::Bind;
                line.account = Some(id);
                line.by = Some(by);
                if let Some(i) = i {
                    line.account_active = Some(self.held(i)?.account.active);
                    let mut key = i.to_be_bytes().to_vec();
                    key.extend_from_slice(person.id.as_bytes());
                    self.claims.insert(&key, &[])?;
                    claim = Some(i);
                }
            }
            let stored = Stored {
                line,
                person,
                claim,
            };
            self.lines
                .insert(stored.person.id.as_bytes(), &json(&stored)?)?;
        }
        Ok(())
    }

    fn stored(&self, employee: &[u8]) -> anyhow::Result<Stored> {
        match self.lines.get(employee)? {
            Some(bytes) => parse(&bytes),
            None => anyhow::bail!("scratch space lost an employee's line"),
        }
    }

    /// The passes over everyone: shared accounts; unclaimed accounts
    /// (listed, and indexed for the similar-name search); differing names
    /// and emails; similar names; outcomes and counts.
    pub fn finish(self) -> anyhow::Result<Matched> {
        let unmatched = self.scratch.tree("unmatched")?;
        self.shared_accounts()?;
        // Claims are in account order, as accounts are: one merge finds
        // the accounts nobody claimed.
        let mut claimed = self.claims.iter().peekable();
        for entry in self.accounts.iter() {
            let (key, bytes) = entry?;
            let i = u32::from_be_bytes(<[u8; 4]>::try_from(key.as_slice())?);
            let mut is_claimed = false;
            loop {
                match claimed.peek() {
                    Some(Ok((claim, _))) => {
                        let of = u32::from_be_bytes(<[u8; 4]>::try_from(&claim[..4])?);
                        if of > i {
                            break;
                        }
                        is_claimed |= of == i;
                        claimed.next();
                    }
                    Some(Err(_)) => {
                        if let Some(Err(e)) = claimed.next() {
                            return Err(e);
                        }
                    }
                    None => break,
                }
            }
            if is_claimed {
                continue;
            }
            let held: Held = parse(&bytes)?;
            for (kind, value) in [(FAMILY, &held.family), (GIVEN, &held.given)] {
                if !value.is_empty() {
                    index(&self.keys, kind, value, i)?;
                }
            }
            let a = held.account;
            let row = UnmatchedAccount {
                name: full_name(a.given_name.as_deref(), a.family_name.as_deref()),
                account: a.id,
                username: a.username,
                email: a.email,
                hris_id: a.employee_id,
                active: a.active,
            };
            unmatched.insert(row.account.as_bytes(), &json(&row)?)?;
        }
        let mut summary = MatchSummary {
            employees: self.employees,
            accounts: self.next as usize,
            ..MatchSummary::default()
        };
        for entry in self.lines.iter() {
            let (key, bytes) = entry?;
            let mut stored: Stored = parse(&bytes)?;
            self.differences(&mut stored)?;
            self.similar(&mut stored)?;
            let line = &mut stored.line;
            if !line.problems.is_empty() {
                line.outcome = Outcome::Decide;
            }
            match line.outcome {
                Outcome::Bind => summary.bound += 1,
                Outcome::New => summary.new_accounts += 1,
                Outcome::Decide => summary.to_decide += 1,
            }
            self.lines.insert(&key, &json(&stored)?)?;
        }
        summary.unmatched_accounts = unmatched.iter().count();
        Ok(Matched {
            summary,
            lines: self.lines,
            unmatched,
            _scratch: self.scratch,
        })
    }

    /// An account two employees match: a person picks (a bind decision);
    /// a binding made by the host or by a decision stands.
    fn shared_accounts(&self) -> anyhow::Result<()> {
        let mut group: Vec<Vec<u8>> = Vec::new();
        let mut current: Option<[u8; 4]> = None;
        let mut claims = self.claims.iter();
        loop {
            let next = claims.next().transpose()?;
            let account = next
                .as_ref()
                .map(|(k, _)| <[u8; 4]>::try_from(&k[..4]))
                .transpose()?;
            if account != current {
                if group.len() > 1 {
                    self.mark_shared(&group)?;
                }
                group.clear();
                current = account;
            }
            match next {
                Some((key, _)) => group.push(key[4..].to_vec()),
                None => return Ok(()),
            }
        }
    }

    fn mark_shared(&self, claimants: &[Vec<u8>]) -> anyhow::Result<()> {
        for c in claimants {
            let mut stored = self.stored(c)?;
            if matches!(stored.line.by, Some(BoundBy::SyncState | BoundBy::Decision)) {
                continue;
            }
            let others = claimants
                .iter()
                .filter(|o| *o != c)
                .map(|o| EmployeeId::from(String::from_utf8_lossy(o).into_owned()))
                .collect();
            let Some(account) = stored.line.account.clone() else {
                continue;
            };
            stored
                .line
                .problems
                .push(Problem::SharedAccount { account, others });
            self.lines.insert(c, &json(&stored)?)?;
        }
        Ok(())
    }

    /// A bound account that holds another name or email.
    fn differences(&self, stored: &mut Stored) -> anyhow::Result<()> {
        let line = &mut stored.line;
        let (Some(account), Some(by), Some(i)) = (&line.account, line.by, stored.claim) else {
            return Ok(());
        };
        if matches!(by, BoundBy::SyncState | BoundBy::Decision) || !line.problems.is_empty() {
            return Ok(());
        }
        let held = self.held(i)?;
        let tolerance = self.matching.tolerance;
        let ours = normalize(&line.name);
        let theirs = format!("{} {}", held.given, held.family);
        let theirs = theirs.trim();
        if !ours.is_empty() && !theirs.is_empty() && !same(&ours, theirs, tolerance) {
            line.problems.push(Problem::Differs {
                account: account.clone(),
                field: Field::Name,
                employee: line.name.clone(),
                lms: full_name(
                    held.account.given_name.as_deref(),
                    held.account.family_name.as_deref(),
                ),
            });
        }
        if let (Some(ours), Some(theirs)) = (&stored.person.email, &held.account.email)
            && !same(&normalize(ours), &normalize(theirs), tolerance)
        {
            line.problems.push(Problem::Differs {
                account: account.clone(),
                field: Field::Email,
                employee: ours.clone(),
                lms: theirs.clone(),
            });
        }
        Ok(())
    }

    /// A new account beside one with a similar name that nobody matches:
    /// looked for among the unclaimed accounts with the same family name
    /// (and a similar given name), or the same given name (and a similar
    /// family name).
    fn similar(&self, stored: &mut Stored) -> anyhow::Result<()> {
        let decisions = &self.matching.decisions;
        let person = &stored.person;
        let line = &mut stored.line;
        if line.account.is_some()
            || !line.problems.is_empty()
            || decisions.names_employee(&person.id)
        {
            return Ok(());
        }
        let given = normalize(person.given_name.as_deref().unwrap_or(""));
        let family = normalize(person.family_name.as_deref().unwrap_or(""));
        let mut similar: Vec<u32> = Vec::new();
        'blocks: for (kind, value) in [(FAMILY, &family), (GIVEN, &given)] {
            if value.is_empty() {
                continue;
            }
            for i in lookup(&self.keys, kind, value)? {
                if similar.contains(&i) {
                    continue;
                }
                let held = self.held(i)?;
                let id = &held.account.id;
                if self.decided.contains(id) || decisions.forbids(&person.id, id) {
                    continue;
                }
                let other = if kind == FAMILY {
                    alike(&given, &held.given)
                } else {
                    alike(&family, &held.family)
                };
                if other {
                    similar.push(i);
                    line.problems.push(Problem::SimilarAccount {
                        account: held.account.id.clone(),
                        name: full_name(
                            held.account.given_name.as_deref(),
                            held.account.family_name.as_deref(),
                        ),
                    });
                    if similar.len() == MAX_SIMILAR {
                        break 'blocks;
                    }
                }
            }
        }
        Ok(())
    }
}
