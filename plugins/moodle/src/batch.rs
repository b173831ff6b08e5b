//! Many accounts and enrolments per web-service call (contract 0.5.0's
//! `batch-provisioning`).
//!
//! Moodle's `core_user_create_users`, `core_user_update_users` and
//! `enrol_manual_enrol_users` take many records, but each call is one
//! transaction: a single bad record fails the whole call with an
//! exception and nothing is written. So a batch refused as a whole is sent
//! again one record per call, and only the records Moodle refuses on their
//! own come back as refused: a bad item costs itself, not its batch.

use std::collections::BTreeMap;

use switchyard_sdk::{
    AccountPage, AccountWrite, AccountWritten, ConnectorError, EnrollmentWrite, ItemResult,
    LmsAccount, config, shared,
};

use super::{
    User, call, course_id, decode, end_of_day, held_accounts, new_user_params, param,
    parse_user_id, profile,
};

/// `upsert-users`: look up the accounts not yet bound in one call, update
/// the known ones in one call and create the rest in one call.
pub(crate) fn upsert_users(
    items: Vec<AccountWrite>,
) -> Result<Vec<ItemResult<AccountWritten>>, ConnectorError> {
    let mut results: Vec<Option<ItemResult<AccountWritten>>> = vec![None; items.len()];
    // Accounts the LMS holds for the items without one, by HRIS id.
    let unbound: Vec<&str> = items
        .iter()
        .filter(|i| i.lms_user_id.is_none())
        .map(|i| i.employee.id.as_str())
        .collect();
    let held = held_accounts(&unbound)?;

    let mut updates = Vec::new(); // (item, user id, active)
    let mut creates = Vec::new(); // item
    for (n, item) in items.iter().enumerate() {
        match (&item.lms_user_id, held.get(item.employee.id.as_str())) {
            (Some(id), _) => match parse_user_id(id) {
                Ok(id) => updates.push((n, id, true)),
                Err(e) => results[n] = Some(Err(e)),
            },
            (None, Some(user)) => updates.push((n, user.id, !user.suspended)),
            (None, None) => creates.push(n),
        }
    }

    let update_params = |(n, id, _): &(usize, u64, bool), k: usize| {
        let prefix = format!("users[{k}]");
        let mut params = vec![param(&format!("{prefix}[id]"), id)];
        params.extend(profile(&items[*n].employee, &prefix)?);
        Ok(params)
    };
    let outcomes = in_one_call("core_user_update_users", &updates, update_params, |_, n| {
        Ok(vec![(); n])
    });
    for ((n, id, active), outcome) in updates.iter().zip(outcomes) {
        let adopted = items[*n].lms_user_id.is_none();
        results[*n] = Some(outcome.map(|()| AccountWritten {
            id: id.to_string(),
            created: false,
            active: if adopted { *active } else { true },
        }));
    }

    let create_params =
        |n: &usize, k: usize| new_user_params(&items[*n].employee, &format!("users[{k}]"));
    let created_ids = |answer: serde_json::Value, _| -> Result<Vec<u64>, ConnectorError> {
        let users: Vec<User> = decode("core_user_create_users", answer)?;
        Ok(users.into_iter().map(|u| u.id).collect())
    };
    let outcomes = in_one_call(
        "core_user_create_users",
        &creates,
        create_params,
        created_ids,
    );
    for (n, outcome) in creates.iter().zip(outcomes) {
        results[*n] = Some(outcome.map(|id| AccountWritten {
            id: id.to_string(),
            created: true,
            active: true,
        }));
    }
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(ConnectorError::Transient("not sent".into()))))
        .collect())
}

/// `enroll-all`: one `enrol_manual_enrol_users` call for the batch.
pub(crate) fn enroll_all(
    items: Vec<EnrollmentWrite>,
) -> Result<Vec<ItemResult<()>>, ConnectorError> {
    let role = config::get("role_id").unwrap_or_else(|| "5".into());
    let due_as_timeend = config::get("due_as_timeend").is_none_or(|v| v != "false");
    // Each course key is looked up once per batch.
    let mut courses: BTreeMap<&str, Result<u64, ConnectorError>> = BTreeMap::new();
    let mut results: Vec<Option<ItemResult<()>>> = vec![None; items.len()];
    let mut rows = Vec::new(); // (item, user, course, timeend)
    for (n, item) in items.iter().enumerate() {
        let course = match courses.get(item.course_id.as_str()) {
            Some(found) => found.clone(),
            None => {
                let found = remembered_course_id(&item.course_id);
                // A failure of the lookup itself (not "no such course") is
                // the whole call's: the host retries the batch.
                if let Err(
                    e @ (ConnectorError::Transient(_)
                    | ConnectorError::RateLimited(_)
                    | ConnectorError::Unauthorized(_)
                    | ConnectorError::InvalidConfig(_)),
                ) = &found
                {
                    return Err(e.clone());
                }
                courses.insert(item.course_id.as_str(), found.clone());
                found
            }
        };
        let row = (|| {
            let user = parse_user_id(&item.lms_user_id)?;
            let course = course?;
            let timeend = match (&item.due, due_as_timeend) {
                (Some(due), true) => Some(end_of_day(due)?),
                _ => None,
            };
            Ok((n, user, course, timeend))
        })();
        match row {
            Ok(row) => rows.push(row),
            Err(e) => results[n] = Some(Err(e)),
        }
    }
    let enrol_params = |(_, user, course, timeend): &(usize, u64, u64, Option<i64>), k: usize| {
        let prefix = format!("enrolments[{k}]");
        let mut params = vec![
            param(&format!("{prefix}[roleid]"), &role),
            param(&format!("{prefix}[userid]"), user),
            param(&format!("{prefix}[courseid]"), course),
        ];
        if let Some(t) = timeend {
            params.push(param(&format!("{prefix}[timeend]"), t));
        }
        Ok(params)
    };
    let outcomes = in_one_call("enrol_manual_enrol_users", &rows, enrol_params, |_, n| {
        Ok(vec![(); n])
    });
    for ((n, ..), outcome) in rows.iter().zip(outcomes) {
        results[*n] = Some(outcome);
    }
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(ConnectorError::Transient("not sent".into()))))
        .collect())
}

/// A course's Moodle id by its `idnumber`, remembered for the connector's
/// later calls (`shared`): a course keeps its id, and a course deleted and
/// made again under the same idnumber is refused by Moodle ("Invalid course
/// id"), a dead letter that replays once the host restarts.
fn remembered_course_id(key: &str) -> Result<u64, ConnectorError> {
    let memo = format!("course-id:{key}");
    if let Some(id) = shared::recall(&memo).and_then(|v| v.parse().ok()) {
        return Ok(id);
    }
    let id = course_id(key)?;
    shared::remember(&memo, &id.to_string());
    Ok(id)
}

/// Send `rows` in one call of `function` (each row's parameters made by
/// `params` for its index in the call); one outcome per row, in order.
/// `answer` turns the call's result into one value per row (it is told
/// how many rows were sent). A call refused as a whole (`rejected`: one
/// bad row fails Moodle's transaction) is split in halves and each half
/// sent again, down to single rows, so that only the bad rows are refused
/// and one bad row among 100 costs about 14 more calls, not 100; any other
/// error is every row's.
fn in_one_call<R, T: Clone>(
    function: &str,
    rows: &[R],
    params: impl Fn(&R, usize) -> Result<Vec<(String, String)>, ConnectorError>,
    answer: impl Fn(serde_json::Value, usize) -> Result<Vec<T>, ConnectorError>,
) -> Vec<ItemResult<T>> {
    let mut outcomes: Vec<Option<ItemResult<T>>> = vec![None; rows.len()];
    // Rows whose parameters cannot be made are refused without a call.
    let mut sendable = Vec::new();
    for (n, row) in rows.iter().enumerate() {
        match params(row, 0) {
            Ok(_) => sendable.push(n),
            Err(e) => outcomes[n] = Some(Err(e)),
        }
    }
    let send = |part: &[usize]| -> Result<Vec<T>, ConnectorError> {
        let mut all = Vec::new();
        for (k, n) in part.iter().enumerate() {
            all.extend(params(&rows[*n], k)?);
        }
        let values = answer(call(function, &all)?, part.len())?;
        if values.len() != part.len() {
            return Err(ConnectorError::Transient(format!(
                "{function} answered {} records for {}",
                values.len(),
                part.len()
            )));
        }
        Ok(values)
    };
    let mut parts = vec![sendable];
    while let Some(part) = parts.pop() {
        if part.is_empty() {
            continue;
        }
        match send(&part) {
            Ok(values) => {
                for (n, v) in part.iter().zip(values) {
                    outcomes[*n] = Some(Ok(v));
                }
            }
            Err(ConnectorError::Rejected(_)) if part.len() > 1 => {
                let (a, b) = part.split_at(part.len() / 2);
                parts.push(b.to_vec());
                parts.push(a.to_vec());
            }
            Err(e) => {
                for n in &part {
                    outcomes[*n] = Some(Err(e.clone()));
                }
            }
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(ConnectorError::Transient("not sent".into()))))
        .collect()
}

/// The first characters of the email addresses `list-accounts` pages by:
/// letters and digits, then the other characters an address may start
/// with (`%` and `_` are `LIKE` wildcards in Moodle and cannot be asked for
/// alone).
const EMAIL_STARTS: &str = "abcdefghijklmnopqrstuvwxyz0123456789!#$&'*+-/=?^`{|}~";

/// Accounts in one `list-accounts` page unless the connector's
/// `accounts_per_page` setting says otherwise (the host's `max_records`
/// is 10,000 by default).
const ACCOUNTS_PER_PAGE: usize = 5_000;

/// `list-accounts`: Moodle has no paged listing of users, so a page is
/// one `core_user_get_users` call for the accounts whose email starts with
/// one character (`a%`: `LIKE`, without case; Moodle requires an email),
/// sorted by id, and a slice of it when more than `accounts_per_page`
/// start with that character (the next page asks again and takes the
/// next slice). The cursor is `character index:offset`.
pub(crate) fn list_accounts(cursor: Option<String>) -> Result<AccountPage, ConnectorError> {
    const F: &str = "core_user_get_users";
    let (at, offset): (usize, usize) = match &cursor {
        None => (0, 0),
        Some(c) => c
            .split_once(':')
            .and_then(|(a, o)| Some((a.parse().ok()?, o.parse().ok()?)))
            .filter(|&(a, _)| a < EMAIL_STARTS.len())
            .ok_or_else(|| {
                ConnectorError::InvalidConfig(format!("unrecognised account cursor `{c}`"))
            })?,
    };
    let per_page = match config::get("accounts_per_page") {
        None => ACCOUNTS_PER_PAGE,
        Some(v) => v.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
            ConnectorError::InvalidConfig(format!(
                "accounts_per_page `{v}` is not a positive number"
            ))
        })?,
    };
    let start = &EMAIL_STARTS[at..=at];
    #[derive(serde::Deserialize)]
    struct Users {
        users: Vec<User>,
    }
    let mut found: Users = decode(
        F,
        call(
            F,
            &[
                param("criteria[0][key]", "email"),
                param("criteria[0][value]", format!("{start}%")),
            ],
        )?,
    )?;
    found.users.sort_by_key(|u| u.id);
    let total = found.users.len();
    let next_cursor = if offset + per_page < total {
        Some(format!("{at}:{}", offset + per_page))
    } else if at + 1 < EMAIL_STARTS.len() {
        Some(format!("{}:0", at + 1))
    } else {
        None
    };
    let text = |v: Option<String>| v.filter(|s| !s.is_empty());
    Ok(AccountPage {
        accounts: found
            .users
            .into_iter()
            .skip(offset)
            .take(per_page)
            .map(|u| LmsAccount {
                id: u.id.to_string(),
                employee_id: text(u.idnumber),
                username: text(u.username),
                email: text(u.email),
                given_name: text(u.firstname),
                family_name: text(u.lastname),
                active: !u.suspended,
            })
            .collect(),
        next_cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::mock::{MockHost, MockResponse};

    fn user(id: u64, email: &str) -> serde_json::Value {
        serde_json::json!({
            "id": id, "username": format!("u{id}"), "email": email,
            "firstname": "A", "lastname": "B", "idnumber": "", "suspended": false,
        })
    }

    #[test]
    fn accounts_are_listed_by_first_letter_of_the_email_in_slices() {
        let url = "https://lms.example/webservice/rest/server.php*";
        let a_users = serde_json::json!({ "users": [
            user(9, "ann@x.example"), user(3, "al@x.example"), user(5, "amy@x.example"),
        ]});
        let host = MockHost::new()
            .config("base_url", "https://lms.example")
            .config("accounts_per_page", "2")
            .on("POST", url, MockResponse::json(200, a_users.clone()))
            .on("POST", url, MockResponse::json(200, a_users))
            .on(
                "POST",
                url,
                MockResponse::json(200, serde_json::json!({ "users": [] })),
            );
        let _installed = host.install();
        let first = list_accounts(None).unwrap();
        let ids: Vec<&str> = first.accounts.iter().map(|a| &*a.id).collect();
        assert_eq!(ids, ["3", "5"], "sorted by id, a slice of two");
        assert_eq!(first.next_cursor.as_deref(), Some("0:2"));
        let second = list_accounts(first.next_cursor).unwrap();
        let ids: Vec<&str> = second.accounts.iter().map(|a| &*a.id).collect();
        assert_eq!(ids, ["9"]);
        assert_eq!(second.next_cursor.as_deref(), Some("1:0"), "then `b%`");
        let body = |n: usize| String::from_utf8_lossy(&host.requests()[n].body).into_owned();
        assert!(
            body(0).contains("criteria%5B0%5D%5Bvalue%5D=a%25"),
            "{}",
            body(0)
        );
        let b = list_accounts(second.next_cursor).unwrap();
        assert!(b.accounts.is_empty());
        assert!(body(2).contains("=b%25"), "{}", body(2));
        // The last character ends the listing; a cursor from elsewhere is refused.
        let last = format!("{}:0", EMAIL_STARTS.len() - 1);
        let host = MockHost::new()
            .config("base_url", "https://lms.example")
            .on(
                "POST",
                url,
                MockResponse::json(200, serde_json::json!({ "users": [] })),
            );
        let _installed = host.install();
        assert_eq!(list_accounts(Some(last)).unwrap().next_cursor, None);
        assert!(matches!(
            list_accounts(Some("99:0".into())),
            Err(ConnectorError::InvalidConfig(_))
        ));
    }
}
