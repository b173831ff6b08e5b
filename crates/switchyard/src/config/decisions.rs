//! A link's matching section (`[links.NAME.matching]`) and the decisions
//! file it names: what people decided after reading `switchyard match`.
//!
//! ```toml
//! [[bind]]                # bind this employee to that account
//! employee = "1042"
//! account = "311"
//! note = "same person, married name"
//!
//! [[never]]               # never bind this account to anyone
//! account = "57"
//!
//! [[never]]               # never bind this employee to that account
//! employee = "1043"
//! account = "58"
//!
//! [[never]]               # this employee gets a new account
//! employee = "1044"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;
use switchyard_engine::matching::{Decisions, MatchKey, Matching};
use toml::Spanned;

use super::ConfigError;

/// `[links.NAME.matching]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMatching {
    keys: Option<Spanned<Vec<MatchKey>>>,
    #[serde(default)]
    tolerance: usize,
    decisions: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDecisions {
    #[serde(default)]
    bind: Vec<Spanned<Bind>>,
    #[serde(default)]
    never: Vec<Spanned<Never>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Bind {
    employee: String,
    account: String,
    #[allow(dead_code)] // for people; read and ignored
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Never {
    employee: Option<String>,
    account: Option<String>,
    #[allow(dead_code)] // for people; read and ignored
    note: Option<String>,
}

impl RawMatching {
    /// Check the section (errors `at` its place in the configuration) and
    /// read the decisions file, relative to `base`.
    pub(super) fn check(
        self,
        base: &Path,
        at: impl Fn(usize, String) -> ConfigError,
    ) -> Result<Matching, ConfigError> {
        let keys = match self.keys {
            None => Matching::default().keys,
            Some(keys) => {
                let span = keys.span().start;
                let keys = keys.into_inner();
                if keys.is_empty() {
                    return Err(at(span, "matching: `keys` needs at least one key".into()));
                }
                for (i, k) in keys.iter().enumerate() {
                    if keys[..i].contains(k) {
                        return Err(at(span, format!("matching: key `{k:?}` is listed twice")));
                    }
                }
                keys
            }
        };
        let decisions = match self.decisions {
            None => Decisions::default(),
            Some(file) => read(&base.join(file))?,
        };
        Ok(Matching {
            keys,
            tolerance: self.tolerance,
            decisions,
        })
    }
}

/// Read and check a decisions file.
pub fn read(path: &Path) -> Result<Decisions, ConfigError> {
    let error = |line: usize, message: String| ConfigError {
        file: PathBuf::from(path),
        line,
        message,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| error(1, format!("cannot read the decisions file: {e}")))?;
    let at = |offset: usize, message: String| error(super::file::line_of(&text, offset), message);
    let raw: RawDecisions = toml::from_str(&text).map_err(|e| {
        at(
            e.span().map_or(0, |s| s.start),
            e.message().trim().to_owned(),
        )
    })?;
    let mut decisions = Decisions::default();
    for bind in raw.bind {
        let span = bind.span().start;
        let Bind {
            employee, account, ..
        } = bind.into_inner();
        if employee.trim().is_empty() || account.trim().is_empty() {
            return Err(at(
                span,
                "bind: `employee` and `account` must not be empty".into(),
            ));
        }
        if let Some(other) = decisions.bind.get(employee.as_str()) {
            return Err(at(
                span,
                format!("bind: employee {employee} is already bound to account {other}"),
            ));
        }
        if let Some((e, _)) = decisions.bind.iter().find(|(_, a)| ***a == *account) {
            return Err(at(
                span,
                format!("bind: account {account} is already bound to employee {e}"),
            ));
        }
        decisions.bind.insert(employee.into(), account.into());
    }
    for never in raw.never {
        let span = never.span().start;
        let never = never.into_inner();
        let clash = |employee: &str| {
            at(
                span,
                format!("never: employee {employee} also has a `bind` decision"),
            )
        };
        match (never.employee, never.account) {
            (None, None) => {
                return Err(at(
                    span,
                    "never: name an `employee`, an `account`, or both".into(),
                ));
            }
            (Some(employee), None) => {
                if decisions.bind.contains_key(employee.as_str()) {
                    return Err(clash(&employee));
                }
                decisions.never_employee.insert(employee.into());
            }
            (None, Some(account)) => {
                if let Some((e, _)) = decisions.bind.iter().find(|(_, a)| ***a == *account) {
                    return Err(at(
                        span,
                        format!(
                            "never: account {account} is bound to employee {e} by a `bind` decision"
                        ),
                    ));
                }
                decisions.never_account.insert(account.into());
            }
            (Some(employee), Some(account)) => {
                if decisions
                    .bind
                    .get(employee.as_str())
                    .is_some_and(|a| **a == *account)
                {
                    return Err(clash(&employee));
                }
                decisions
                    .never_pair
                    .insert((employee.into(), account.into()));
            }
        }
    }
    Ok(decisions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_text(text: &str) -> Result<Decisions, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.toml");
        std::fs::write(&path, text).unwrap();
        read(&path)
    }

    #[test]
    fn a_decisions_file_reads_and_contradictions_name_their_line() {
        let d = read_text(
            "[[bind]]\nemployee = \"1\"\naccount = \"10\"\n\n[[never]]\naccount = \"11\"\n\n[[never]]\nemployee = \"2\"\n\n[[never]]\nemployee = \"3\"\naccount = \"12\"\n",
        )
        .unwrap();
        assert_eq!(d.bind.get("1").map(|a| &**a), Some("10"));
        assert!(d.never_account.contains("11"));
        assert!(d.never_employee.contains("2"));
        assert!(d.never_pair.contains(&("3".into(), "12".into())));

        let e = read_text("[[bind]]\nemployee = \"1\"\naccount = \"10\"\n\n[[bind]]\nemployee = \"2\"\naccount = \"10\"\n").unwrap_err();
        assert_eq!(e.line, 5, "{e}");
        assert!(
            e.message
                .contains("account 10 is already bound to employee 1"),
            "{e}"
        );
        let e = read_text("[[never]]\nnote = \"?\"\n").unwrap_err();
        assert!(e.message.contains("name an `employee`"), "{e}");
        let e = read_text("[[bind]]\nemployee = \"1\"\nacount = \"10\"\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        let e = read_text(
            "[[bind]]\nemployee = \"1\"\naccount = \"10\"\n[[never]]\nemployee = \"1\"\n",
        )
        .unwrap_err();
        assert!(e.message.contains("also has a `bind`"), "{e}");
    }
}
