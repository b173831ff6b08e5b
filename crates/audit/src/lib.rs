//! The audit trail's format: what a record holds, how records are chained
//! and sealed, and how a chain is verified. Storage is not here: the store
//! (`switchyard-store`) keeps sealed records, in the same transaction as the
//! state change they record where there is one.
//!
//! Each [`Record`] has a sequence number (1, 2, 3, ... with no gaps), a time
//! that never goes backwards, a kind (`user.created`, `http.request`, ...),
//! what it is about (link, employee, connector, course, idempotency key),
//! the cause, the actor for operator actions, non-personal details, and
//! `prev`: the hash of the record before it. A record's hash is the sha256
//! of its stored JSON bytes, so editing any byte of a record breaks the
//! chain at that record, and removing one breaks it at the next.
//!
//! **Personal data is kept apart from the chain.** Names, emails, scores,
//! vendor error texts and request paths go into a separate *personal
//! payload* ([`Event::personal`]). The chained record holds only a salted
//! digest of it, so erasing a subject (deleting the payloads, salt
//! included, so the digest reveals nothing) leaves every record's hash, and
//! with it the chain, as it was. Verification checks the digest of every
//! payload still present.
//!
//! **Retention** deletes records older than a cutoff and keeps an *anchor*:
//! the sequence number and hash of the last record removed. Verification
//! starts from the anchor.
//!
//! **Invariant:** this crate does no I/O; [`seal`] and [`Verifier`] are pure
//! functions of their inputs (and of the salt's randomness).
//!
//! # Layout
//!
//! - [`Kind`]: the catalogue of record kinds;
//! - [`Event`]: something to record, built by the code that knows it;
//! - [`seal`]: an event chained after a [`Head`] into a [`Sealed`] record;
//! - [`Verifier`]: checks stored records one by one from an anchor;
//! - [`Entry`], [`Filter`], [`Verification`], [`Pruned`]: what reads return.

pub mod kind;

pub use kind::Kind;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;

/// `prev` of the first record ever written.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit record, as chained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Sequence number, from 1, without gaps.
    pub seq: u64,
    /// RFC 3339 UTC time with milliseconds; never before the previous record's.
    pub at: String,
    /// What happened, e.g. `user.created`, `http.request`, `admin.dlq-replay`.
    pub kind: String,
    /// Link it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// HRIS employee id it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employee: Option<String>,
    /// Connector it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector: Option<String>,
    /// Course it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub course: Option<String>,
    /// Idempotency key of the operation (ties it to the outbox and `done`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Why: the rule, policy or event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// Who, for operator actions: `user@host via cli`, `token NAME from ADDR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Non-personal details.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub detail: Value,
    /// sha256 of the salted personal payload, if the record has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal: Option<String>,
    /// Hash of the previous record.
    pub prev: String,
}

/// Something to record. Build with [`Event::new`] and the setters.
#[derive(Debug, Clone, Default)]
pub struct Event {
    kind: String,
    link: Option<String>,
    employee: Option<String>,
    connector: Option<String>,
    course: Option<String>,
    key: Option<String>,
    cause: Option<String>,
    actor: Option<String>,
    detail: Value,
    personal: Option<Value>,
}

impl Event {
    /// An event of `kind`.
    pub fn new(kind: Kind) -> Event {
        Event {
            kind: kind.as_str().to_owned(),
            ..Event::default()
        }
    }
    /// The link.
    pub fn link(mut self, link: impl Into<String>) -> Event {
        self.link = Some(link.into());
        self
    }
    /// The employee.
    pub fn employee(mut self, id: impl Into<String>) -> Event {
        self.employee = Some(id.into());
        self
    }
    /// The connector.
    pub fn connector(mut self, name: impl Into<String>) -> Event {
        self.connector = Some(name.into());
        self
    }
    /// The course.
    pub fn course(mut self, course: impl Into<String>) -> Event {
        self.course = Some(course.into());
        self
    }
    /// The idempotency key.
    pub fn key(mut self, key: impl Into<String>) -> Event {
        self.key = Some(key.into());
        self
    }
    /// The cause.
    pub fn cause(mut self, cause: impl Into<String>) -> Event {
        self.cause = Some(cause.into());
        self
    }
    /// The actor of an operator action.
    pub fn actor(mut self, actor: impl Into<String>) -> Event {
        self.actor = Some(actor.into());
        self
    }
    /// Non-personal details (a JSON object).
    pub fn detail(mut self, detail: Value) -> Event {
        self.detail = detail;
        self
    }
    /// Personal details and free text from outside (paths, vendor error
    /// messages): kept outside the chain, under a salted digest. When the
    /// event names an employee, `forget` erases them; otherwise retention
    /// does.
    pub fn personal(mut self, personal: Value) -> Event {
        self.personal = Some(personal);
        self
    }
    /// Add one non-personal detail to the details object.
    pub fn with_detail(mut self, name: &str, value: Value) -> Event {
        if !self.detail.is_object() {
            self.detail = Value::Object(Default::default());
        }
        if let Value::Object(map) = &mut self.detail {
            map.insert(name.to_owned(), value);
        }
        self
    }
}

/// A record read back, with its hash and its personal payload if present.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    /// The chained record.
    #[serde(flatten)]
    pub record: Record,
    /// Its hash (hex).
    pub hash: String,
    /// The personal payload; `null` with `erased: true` after `audit forget`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub personal_data: Option<Value>,
    /// The record had a personal payload and it was erased.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub erased: bool,
}

/// Which records to read.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Filter {
    /// Only this link.
    pub link: Option<String>,
    /// Only this employee.
    pub employee: Option<String>,
    /// Only this course.
    pub course: Option<String>,
    /// Only kinds equal to this or starting with `this.` (`user` matches
    /// `user.created`).
    pub kind: Option<String>,
    /// Only records at or after this RFC 3339 time.
    pub since: Option<String>,
    /// Only records before this RFC 3339 time.
    pub until: Option<String>,
}

impl Filter {
    /// Whether `r` is selected.
    pub fn matches(&self, r: &Record) -> bool {
        let eq = |want: &Option<String>, have: &Option<String>| {
            want.as_ref()
                .is_none_or(|w| have.as_deref() == Some(w.as_str()))
        };
        let kind = self.kind.as_ref().is_none_or(|k| {
            r.kind == *k || (r.kind.starts_with(k.as_str()) && r.kind[k.len()..].starts_with('.'))
        });
        eq(&self.link, &r.link)
            && eq(&self.employee, &r.employee)
            && eq(&self.course, &r.course)
            && kind
            && self
                .since
                .as_ref()
                .is_none_or(|s| time_key(&r.at) >= time_key(s))
            && self
                .until
                .as_ref()
                .is_none_or(|u| time_key(&r.at) < time_key(u))
    }
}

/// A filter time (`since`, `until`) that is neither an RFC 3339 time nor
/// a yyyy-mm-dd date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotATime(pub String);

impl std::fmt::Display for NotATime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` is neither an RFC 3339 time nor a yyyy-mm-dd date",
            self.0
        )
    }
}

impl std::error::Error for NotATime {}

/// Check a filter time: an RFC 3339 time or a yyyy-mm-dd date. (A time
/// that does not parse would otherwise select as the Unix epoch.)
pub fn check_time(text: &str) -> Result<(), NotATime> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    if time::OffsetDateTime::parse(text, &Rfc3339).is_ok()
        || time::Date::parse(text, &format).is_ok()
    {
        Ok(())
    } else {
        Err(NotATime(text.to_owned()))
    }
}

/// Comparable form of an RFC 3339 time (or a yyyy-mm-dd date): Unix
/// nanoseconds, 0 if it does not parse.
pub fn time_key(text: &str) -> i128 {
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return t.unix_timestamp_nanos();
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, &format)
        .map(|d| d.midnight().assume_utc().unix_timestamp_nanos())
        .unwrap_or(0)
}

/// The result of `verify`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verification {
    /// Records checked.
    pub records: u64,
    /// Where the chain starts (after pruning: the last pruned record).
    pub anchor: Head,
    /// The last record.
    pub head: Head,
    /// Personal payloads checked against their digests.
    pub personal_checked: u64,
    /// Records whose personal payload was erased.
    pub erased: u64,
    /// The first break, if any.
    pub broken: Option<Break>,
}

/// Where and why the chain is broken.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Break {
    /// Sequence number of the first bad record.
    pub seq: u64,
    /// What is wrong.
    pub reason: String,
}

/// A position in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Sequence number (0: nothing yet).
    pub seq: u64,
    /// Hash of that record (hex); [`GENESIS`] for seq 0.
    pub hash: String,
    /// Its time, Unix milliseconds (to keep time monotonic).
    #[serde(default)]
    pub at_ms: u64,
}

impl std::fmt::Display for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

/// What retention removed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Pruned {
    /// Audit records removed.
    pub records: u64,
    /// Last sequence number removed.
    pub through: u64,
}

/// A record sealed into the chain, ready for the store to write.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// Its sequence number.
    pub seq: u64,
    /// The stored value: sha256 of the record's JSON, then the JSON.
    pub value: Vec<u8>,
    /// Its personal payload, if it has one.
    pub personal: Option<Personal>,
    /// The chain head once this record is written.
    pub head: Head,
}

/// A record's personal payload: 16 bytes of salt, then JSON.
#[derive(Debug, Clone)]
pub struct Personal {
    /// The employee it is about (erasure finds it by this), if any.
    pub subject: Option<String>,
    /// Salt ++ JSON.
    pub payload: Vec<u8>,
}

/// Chain `event` after `head`, at `now_ms` (or the head's time, if later:
/// time never goes backwards in the chain).
pub fn seal(head: &Head, event: Event, now_ms: u64) -> anyhow::Result<Sealed> {
    let seq = head.seq + 1;
    let at_ms = now_ms.max(head.at_ms);
    let mut personal = None;
    if let Some(p) = event.personal.filter(|p| !p.is_null()) {
        let mut payload = random_salt()?.to_vec();
        payload.extend(serde_json::to_vec(&p).context("failed to encode an audit payload")?);
        personal = Some((digest_hex(&payload), payload));
    }
    let record = Record {
        seq,
        at: rfc3339_ms(at_ms),
        kind: event.kind,
        link: event.link,
        employee: event.employee,
        connector: event.connector,
        course: event.course,
        key: event.key,
        cause: event.cause,
        actor: event.actor,
        detail: event.detail,
        personal: personal.as_ref().map(|(d, _)| d.clone()),
        prev: head.hash.clone(),
    };
    let json = serde_json::to_vec(&record).context("failed to encode an audit record")?;
    let hash = Sha256::digest(&json);
    let mut value = hash.to_vec();
    value.extend_from_slice(&json);
    Ok(Sealed {
        seq,
        value,
        personal: personal.map(|(_, payload)| Personal {
            subject: record.employee.clone(),
            payload,
        }),
        head: Head {
            seq,
            hash: hex::encode(hash),
            at_ms,
        },
    })
}

/// Split a stored value into the hash it claims and the record's JSON.
pub fn split_record(value: &[u8]) -> anyhow::Result<(&[u8], &[u8])> {
    if value.len() < 32 {
        bail!("audit record too short");
    }
    Ok(value.split_at(32))
}

/// Read a stored value: its hash (hex) and the record.
pub fn open_record(value: &[u8]) -> anyhow::Result<(String, Record)> {
    let (hash, json) = split_record(value)?;
    let record: Record = serde_json::from_slice(json).context("corrupt audit record")?;
    Ok((hex::encode(hash), record))
}

/// The position of a stored record, as a head.
pub fn head_of(hash: String, record: &Record) -> Head {
    Head {
        seq: record.seq,
        hash,
        at_ms: u64::try_from(time_key(&record.at) / 1_000_000).unwrap_or(0),
    }
}

/// Read a personal payload: the JSON after the salt (`None` if unreadable).
pub fn open_payload(payload: &[u8]) -> Option<Value> {
    payload
        .get(16..)
        .and_then(|json| serde_json::from_slice(json).ok())
}

/// Checks a chain record by record, from an anchor; stops at the first
/// break.
pub struct Verifier {
    v: Verification,
    prev: String,
    expected: u64,
}

impl Verifier {
    /// Start at `anchor` (genesis, or the last record pruned).
    pub fn new(anchor: Head) -> Verifier {
        Verifier {
            prev: anchor.hash.clone(),
            expected: anchor.seq + 1,
            v: Verification {
                records: 0,
                anchor: anchor.clone(),
                head: anchor,
                personal_checked: 0,
                erased: 0,
                broken: None,
            },
        }
    }

    /// Check the next stored record, stored under `seq` with `value`;
    /// `payload` is its personal payload as stored (`None`: absent, i.e.
    /// erased). Returns false once the chain is broken.
    pub fn check(&mut self, seq: u64, value: &[u8], payload: Option<&[u8]>) -> bool {
        if let Err(reason) = self.step(seq, value, payload) {
            self.v.broken = Some(Break { seq, reason });
            return false;
        }
        true
    }

    fn step(&mut self, seq: u64, value: &[u8], payload: Option<&[u8]>) -> Result<(), String> {
        let expected = self.expected;
        if seq != expected {
            return Err(if seq > expected {
                format!("records {expected}..{} are missing", seq - 1)
            } else {
                format!("record {seq} is out of order (expected {expected})")
            });
        }
        let (stored_hash, json) =
            split_record(value).map_err(|_| "record is truncated".to_owned())?;
        if Sha256::digest(json).as_slice() != stored_hash {
            return Err("record content does not match its hash (edited)".into());
        }
        let record: Record =
            serde_json::from_slice(json).map_err(|e| format!("record does not parse: {e}"))?;
        if record.seq != seq {
            return Err(format!(
                "record claims seq {} but is stored as {seq}",
                record.seq
            ));
        }
        if record.prev != self.prev {
            return Err(format!(
                "prev {} does not match the hash {} of record {}",
                record.prev,
                self.prev,
                seq - 1
            ));
        }
        if let Some(digest) = &record.personal {
            match payload {
                Some(payload) if digest_hex(payload) != *digest => {
                    return Err("personal payload does not match its digest (edited)".into());
                }
                Some(_) => self.v.personal_checked += 1,
                None => self.v.erased += 1,
            }
        }
        self.prev = hex::encode(stored_hash);
        self.expected = seq + 1;
        self.v.records += 1;
        self.v.head = head_of(self.prev.clone(), &record);
        Ok(())
    }

    /// What was found.
    pub fn finish(self) -> Verification {
        self.v
    }
}

/// RFC 3339 UTC with milliseconds, from Unix milliseconds.
pub fn rfc3339_ms(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&format).unwrap_or_default()
}

fn digest_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// 16 random bytes from the operating system's generator.
fn random_salt() -> anyhow::Result<[u8; 16]> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt)
        .map_err(|e| anyhow::anyhow!("no randomness for an audit salt: {e}"))?;
    Ok(salt)
}

/// The actor of a command-line action: the OS user and host.
pub fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown user".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{user}@{host} via cli")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(n: u64) -> Vec<Sealed> {
        let mut head = Head {
            seq: 0,
            hash: GENESIS.into(),
            at_ms: 0,
        };
        let mut out = Vec::new();
        for i in 0..n {
            let event = Event::new(Kind::UserCreated)
                .employee(i.to_string())
                .personal(json!({"email": format!("{i}@x")}));
            let sealed = seal(&head, event, 1_000 + i).unwrap();
            head = sealed.head.clone();
            out.push(sealed);
        }
        out
    }

    fn verify(records: &[Sealed], erased: &[u64]) -> Verification {
        let mut v = Verifier::new(Head {
            seq: 0,
            hash: GENESIS.into(),
            at_ms: 0,
        });
        for r in records {
            let payload = r
                .personal
                .as_ref()
                .filter(|_| !erased.contains(&r.seq))
                .map(|p| p.payload.as_slice());
            if !v.check(r.seq, &r.value, payload) {
                break;
            }
        }
        v.finish()
    }

    #[test]
    fn a_sealed_chain_verifies_and_keeps_personal_data_out_of_the_record() {
        let records = chain(4);
        let v = verify(&records, &[]);
        assert_eq!(
            (v.records, v.head.seq, v.personal_checked, v.broken),
            (4, 4, 4, None)
        );
        let (_, record) = open_record(&records[1].value).unwrap();
        assert_eq!(record.prev, records[0].head.hash);
        assert!(!String::from_utf8_lossy(&records[1].value).contains("1@x"));
        assert_eq!(
            open_payload(&records[1].personal.as_ref().unwrap().payload),
            Some(json!({"email": "1@x"}))
        );
    }

    #[test]
    fn erasure_keeps_the_chain_and_edits_or_gaps_break_it() {
        let records = chain(4);
        let v = verify(&records, &[2]);
        assert_eq!((v.broken, v.erased, v.personal_checked), (None, 1, 3));

        let mut edited = records.clone();
        let text = String::from_utf8(edited[2].value[32..].to_vec())
            .unwrap()
            .replace("user.created", "user.updated");
        edited[2].value.truncate(32);
        edited[2].value.extend(text.into_bytes());
        assert_eq!(verify(&edited, &[]).broken.unwrap().seq, 3);

        let mut gap = records.clone();
        gap.remove(1);
        let broken = verify(&gap, &[]).broken.unwrap();
        assert_eq!(
            (broken.seq, broken.reason.as_str()),
            (3, "records 2..2 are missing")
        );

        let mut payload = records;
        payload[0].personal.as_mut().unwrap().payload.push(b' ');
        assert!(
            verify(&payload, &[])
                .broken
                .unwrap()
                .reason
                .contains("personal payload")
        );
    }

    #[test]
    fn time_never_goes_backwards() {
        let first = seal(
            &Head {
                seq: 0,
                hash: GENESIS.into(),
                at_ms: 0,
            },
            Event::new(Kind::RunStarted),
            5_000,
        )
        .unwrap();
        let second = seal(&first.head, Event::new(Kind::RunFinished), 1_000).unwrap();
        assert_eq!(second.head.at_ms, 5_000);
        assert_eq!(
            open_record(&second.value).unwrap().1.at,
            "1970-01-01T00:00:05.000Z"
        );
    }

    #[test]
    fn filters_match_kind_prefixes_and_times() {
        let (_, r) = open_record(
            &seal(
                &Head {
                    seq: 0,
                    hash: GENESIS.into(),
                    at_ms: 0,
                },
                Event::new(Kind::UserCreated).link("a"),
                86_400_000,
            )
            .unwrap()
            .value,
        )
        .unwrap();
        let f = |kind: &str| {
            Filter {
                kind: Some(kind.into()),
                ..Filter::default()
            }
            .matches(&r)
        };
        assert!(f("user") && f("user.created") && !f("use") && !f("users"));
        assert!(
            Filter {
                since: Some("1970-01-02".into()),
                ..Filter::default()
            }
            .matches(&r)
        );
        assert!(
            !Filter {
                until: Some("1970-01-02".into()),
                ..Filter::default()
            }
            .matches(&r)
        );
        assert!(
            !Filter {
                link: Some("b".into()),
                ..Filter::default()
            }
            .matches(&r)
        );
    }
}
