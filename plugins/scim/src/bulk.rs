//! Many accounts and memberships per request through SCIM Bulk (RFC 7644
//! §3.7), for contract 0.5.0's `batch-provisioning`, and the paged listing
//! of accounts.
//!
//! Bulk is optional for a SCIM server: the plugin reads the server's
//! `ServiceProviderConfig` once (remembered for the connector) and answers
//! `unsupported` when it says no, so that the host sends one operation per
//! request. Each operation of a Bulk request has its own status, so each
//! item gets its own outcome; no `failOnErrors` is sent, so one refused
//! operation does not stop the others.

use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_sdk::http::Request;
use switchyard_sdk::{
    AccountPage, AccountWrite, AccountWritten, ConnectorError, EnrollmentWrite, ItemResult,
    LmsAccount, shared,
};

use super::{
    ListResponse, PATCH_OP, SCIM_JSON, attributes, base, find_user_resource, group_of, id_of,
    new_user, primary_email, quoted, update_user,
};

const BULK_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";

/// Accounts per page of `list-accounts`.
const PAGE: usize = 200;

/// The most operations the server takes in one Bulk request; `None` when
/// it takes none. Read from `ServiceProviderConfig` once per connector.
fn bulk_limit() -> Result<Option<usize>, ConnectorError> {
    const MEMO: &str = "scim:bulk-max-operations";
    if let Some(max) = shared::recall(MEMO).and_then(|v| v.parse::<usize>().ok()) {
        return Ok((max > 0).then_some(max));
    }
    let config: Value = Request::get(format!("{}/ServiceProviderConfig", base()?))
        .header("accept", SCIM_JSON)
        .send()?
        .error_for_status()?
        .json()?;
    let bulk = &config["bulk"];
    let max = match bulk["supported"].as_bool() {
        Some(true) => bulk["maxOperations"]
            .as_u64()
            .map_or(usize::MAX, |m| m as usize),
        _ => 0,
    };
    shared::remember(MEMO, &max.to_string());
    Ok((max > 0).then_some(max))
}

fn no_bulk() -> ConnectorError {
    ConnectorError::Unsupported("the SCIM server takes no Bulk requests".into())
}

/// One operation's answer in a `BulkResponse`.
#[derive(Deserialize)]
struct BulkOutcome {
    #[serde(rename = "bulkId")]
    bulk_id: Option<String>,
    location: Option<String>,
    /// RFC 7644 writes it as a string; some servers send a number.
    status: Value,
    response: Option<Value>,
}

impl BulkOutcome {
    fn status(&self) -> u16 {
        match &self.status {
            Value::String(s) => s.parse().unwrap_or(0),
            Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()).unwrap_or(0),
            _ => 0,
        }
    }

    /// The created or changed resource's id: the last segment of its
    /// `location`, or the `id` of a returned resource.
    fn id(&self) -> Option<String> {
        self.location
            .as_deref()
            .and_then(|l| l.trim_end_matches('/').rsplit('/').next())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .or_else(|| {
                self.response
                    .as_ref()
                    .and_then(|r| r["id"].as_str().map(str::to_owned))
            })
    }

    /// The operation's failure as the host should act on it.
    fn error(&self) -> ConnectorError {
        let status = self.status();
        let detail = self
            .response
            .as_ref()
            .and_then(|r| r["detail"].as_str())
            .unwrap_or("no detail");
        let message = format!("SCIM Bulk operation answered {status}: {detail}");
        match status {
            401 | 403 => ConnectorError::Unauthorized(message),
            429 => ConnectorError::RateLimited(None),
            500.. | 0 => ConnectorError::Transient(message),
            _ => ConnectorError::Rejected(message),
        }
    }
}

/// One operation of a Bulk request.
struct Operation {
    method: &'static str,
    path: String,
    data: Value,
}

/// Send `operations` in Bulk requests of at most `limit`; one outcome per
/// operation, in order (matched by `bulkId`). An operation the server did
/// not answer is `transient` (sent again later).
fn send(
    operations: &[Operation],
    limit: usize,
) -> Result<Vec<ItemResult<BulkOutcome>>, ConnectorError> {
    let mut outcomes = Vec::with_capacity(operations.len());
    for (chunk_start, chunk) in (0..)
        .step_by(limit.max(1))
        .zip(operations.chunks(limit.max(1)))
    {
        let request: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(k, op)| {
                json!({
                    "method": op.method,
                    "path": op.path,
                    "bulkId": format!("op{}", chunk_start + k),
                    "data": op.data,
                })
            })
            .collect();
        #[derive(Deserialize)]
        struct BulkResponse {
            #[serde(rename = "Operations", default)]
            operations: Vec<BulkOutcome>,
        }
        let answer: BulkResponse = Request::post(format!("{}/Bulk", base()?))
            .header("accept", SCIM_JSON)
            .json_as(
                &json!({ "schemas": [BULK_REQUEST], "Operations": request }),
                SCIM_JSON,
            )?
            .send()?
            .error_for_status()?
            .json()?;
        let mut answered: Vec<Option<BulkOutcome>> = chunk.iter().map(|_| None).collect();
        for (position, outcome) in answer.operations.into_iter().enumerate() {
            let k = outcome
                .bulk_id
                .as_deref()
                .and_then(|id| id.strip_prefix("op"))
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| n.checked_sub(chunk_start))
                .unwrap_or(position);
            if let Some(slot) = answered.get_mut(k) {
                *slot = Some(outcome);
            }
        }
        outcomes.extend(answered.into_iter().map(|a| {
            a.ok_or_else(|| {
                ConnectorError::Transient(
                    "the SCIM server did not answer this Bulk operation".into(),
                )
            })
        }));
    }
    Ok(outcomes)
}

/// The accounts whose `externalId` is one of `ids`, in one request:
/// (externalId, id, active).
fn held_accounts(ids: &[&str]) -> Result<Vec<(String, String, bool)>, ConnectorError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let filter = ids
        .iter()
        .map(|id| format!("externalId eq {}", quoted(id)))
        .collect::<Vec<_>>()
        .join(" or ");
    let list: ListResponse = Request::get(format!("{}/Users", base()?))
        .query("filter", &filter)
        .query("count", ids.len().to_string())
        .query("attributes", "id,externalId,active")
        .header("accept", SCIM_JSON)
        .send()?
        .error_for_status()?
        .json()?;
    Ok(list
        .resources
        .iter()
        .filter_map(|u| {
            Some((
                u["externalId"].as_str()?.to_owned(),
                u["id"].as_str()?.to_owned(),
                u["active"].as_bool().unwrap_or(true),
            ))
        })
        .collect())
}

/// `upsert-users`: the accounts not yet bound looked up in one request,
/// then one Bulk request of updates (`PATCH`) and creates (`POST`).
pub(crate) fn upsert_users(
    items: Vec<AccountWrite>,
) -> Result<Vec<ItemResult<AccountWritten>>, ConnectorError> {
    let limit = bulk_limit()?.ok_or_else(no_bulk)?;
    let unbound: Vec<&str> = items
        .iter()
        .filter(|i| i.lms_user_id.is_none())
        .map(|i| i.employee.id.as_str())
        .collect();
    let held = held_accounts(&unbound)?;
    // Per item: the account it updates (id, active, adopted), or none.
    let targets: Vec<Option<(String, bool, bool)>> = items
        .iter()
        .map(|item| match &item.lms_user_id {
            Some(id) => Some((id.clone(), true, false)),
            None => held
                .iter()
                .find(|(external, ..)| *external == item.employee.id)
                .map(|(_, id, active)| (id.clone(), *active, true)),
        })
        .collect();
    let operations: Vec<Operation> = items
        .iter()
        .zip(&targets)
        .map(|(item, target)| match target {
            Some((id, ..)) => Operation {
                method: "PATCH",
                path: format!("/Users/{id}"),
                data: json!({
                    "schemas": [PATCH_OP],
                    "Operations": [{ "op": "replace", "value": attributes(&item.employee) }],
                }),
            },
            None => Operation {
                method: "POST",
                path: "/Users".into(),
                data: new_user(&item.employee),
            },
        })
        .collect();
    let outcomes = send(&operations, limit)?;
    Ok(items
        .iter()
        .zip(targets)
        .zip(outcomes)
        .map(|((item, target), outcome)| {
            let outcome = outcome?;
            let ok = (200..300).contains(&outcome.status());
            match target {
                Some((id, active, adopted)) if ok => Ok(AccountWritten {
                    id,
                    created: false,
                    active: if adopted { active } else { true },
                }),
                Some(_) => Err(outcome.error()),
                None if ok => Ok(AccountWritten {
                    id: outcome.id().ok_or_else(|| {
                        ConnectorError::Transient("a created account without a location".into())
                    })?,
                    created: true,
                    active: true,
                }),
                // A create that met an account with the same userName (one
                // made by hand, or by an attempt whose answer was lost):
                // adopt it, as `upsert-user` does.
                None if outcome.status() == 409 => {
                    let found =
                        find_user_resource(&item.employee.id)?.ok_or_else(|| outcome.error())?;
                    let id = id_of(&found)?;
                    update_user(&id, &item.employee)?;
                    Ok(AccountWritten {
                        id,
                        created: false,
                        active: found["active"].as_bool().unwrap_or(true),
                    })
                }
                None => Err(outcome.error()),
            }
        })
        .collect())
}

/// `enroll-all`: one Bulk request adding each member to its course's group.
pub(crate) fn enroll_all(
    items: Vec<EnrollmentWrite>,
) -> Result<Vec<ItemResult<()>>, ConnectorError> {
    let limit = bulk_limit()?.ok_or_else(no_bulk)?;
    let mut operations = Vec::with_capacity(items.len());
    for item in &items {
        let group = group_of(&item.course_id)?;
        operations.push(Operation {
            method: "PATCH",
            path: format!("/Groups/{group}"),
            data: json!({
                "schemas": [PATCH_OP],
                "Operations": [{
                    "op": "add",
                    "path": "members",
                    "value": [{ "value": item.lms_user_id }],
                }],
            }),
        });
    }
    Ok(send(&operations, limit)?
        .into_iter()
        .map(|outcome| {
            let outcome = outcome?;
            match (200..300).contains(&outcome.status()) {
                true => Ok(()),
                false => Err(outcome.error()),
            }
        })
        .collect())
}

/// `list-accounts`: one page of `GET /Users` (index paging; the cursor is
/// the next `startIndex`).
pub(crate) fn list_accounts(cursor: Option<String>) -> Result<AccountPage, ConnectorError> {
    let start: usize = match &cursor {
        None => 1,
        Some(c) => c.parse().map_err(|_| {
            ConnectorError::InvalidConfig(format!("unrecognised account cursor `{c}`"))
        })?,
    };
    let list: ListResponse = Request::get(format!("{}/Users", base()?))
        .query("startIndex", start.to_string())
        .query("count", PAGE.to_string())
        .query("attributes", "id,externalId,userName,emails,name,active")
        .header("accept", SCIM_JSON)
        .send()?
        .error_for_status()?
        .json()?;
    let got = list.resources.len();
    let accounts = list
        .resources
        .iter()
        .map(|u| {
            let text = |v: &Value| v.as_str().map(str::to_owned);
            Ok(LmsAccount {
                id: id_of(u)?,
                employee_id: text(&u["externalId"]),
                username: text(&u["userName"]),
                email: primary_email(u),
                given_name: text(&u["name"]["givenName"]),
                family_name: text(&u["name"]["familyName"]),
                active: u["active"].as_bool().unwrap_or(true),
            })
        })
        .collect::<Result<Vec<_>, ConnectorError>>()?;
    let next = start + got;
    Ok(AccountPage {
        accounts,
        next_cursor: (got > 0 && next <= list.total).then(|| next.to_string()),
    })
}
