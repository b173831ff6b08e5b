"""A Switchyard LMS connector for SCIM 2.0, in Python (componentize-py).

A starting point for an LMS that takes SCIM 2.0 (RFC 7644), the
provisioning standard most learning systems speak; for another API,
replace the requests and keep the shape. It behaves as the Rust plugin
plugins/scim in Switchyard's repository, against the same contract (world
lms-connector):

- accounts are SCIM Users whose externalId is the HRIS id; a create that
  meets 409 uniqueness (a retry after a lost answer) looks the account up
  by that natural key and adopts it: SCIM has nowhere to put an
  idempotency key;
- updates PATCH-replace the attributes Switchyard owns; suspension is
  active: false;
- each course is a Group named after its key, found or created once under
  the host's shared lock (the calls run concurrently, each in a fresh
  instance) and remembered; an enrolment is a PATCH add of a member.

The host injects the bearer token: this code never sees it. Errors are
raised as `Err(ConnectorError_...)`. Build (with `wit/` the contract):

    componentize-py -d wit -w lms-connector componentize app -o plugin.wasm
"""

import json
from typing import Optional
from urllib.parse import quote

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import config, http, log, shared
from wit_world.imports.types import (
    ConnectorError_InvalidConfig,
    ConnectorError_RateLimited,
    ConnectorError_Rejected,
    ConnectorError_Transient,
    ConnectorError_Unauthorized,
    ConnectorError_Unsupported,
    CompletionPage,
    Employee,
    EmploymentStatus,
    LmsUser,
)

SCIM_JSON = "application/scim+json"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def base() -> str:
    url = config.get("base_url")
    if not url:
        raise Err(ConnectorError_InvalidConfig("missing config key `base_url`"))
    return url.rstrip("/")


def username(employee_id: str) -> str:
    return (config.get("username_prefix") or "hris-") + employee_id


def send(method: str, path: str, body=None) -> http.Response:
    """One request through the host; HTTP errors become the contract's."""
    data = b"" if body is None else json.dumps(body).encode()
    headers = [("accept", SCIM_JSON)]
    if body is not None:
        headers.append(("content-type", SCIM_JSON))
    try:
        response = http.send(http.Request(method, base() + path, headers, data))
    except Err as e:
        # No answer: refused by the host, a transport error, a timeout.
        raise Err(ConnectorError_Transient(str(e.value)))
    return response


def check(response: http.Response) -> http.Response:
    status = response.status
    if 200 <= status < 300:
        return response
    detail = f"HTTP {status}: {response.body[:200].decode(errors='replace')}"
    if status in (429, 503):
        retry = dict(response.headers).get("retry-after", "")
        raise Err(ConnectorError_RateLimited(int(retry) if retry.isdigit() else None))
    if status in (401, 403):
        raise Err(ConnectorError_Unauthorized(detail))
    if status == 408 or status >= 500:
        raise Err(ConnectorError_Transient(detail))
    raise Err(ConnectorError_Rejected(detail))


def body_of(response: http.Response):
    try:
        return json.loads(response.body or b"{}")
    except ValueError:
        raise Err(ConnectorError_Rejected("the SCIM server answered something that is not JSON"))


def find_one(kind: str, attribute: str, value: str):
    """The first resource whose attribute equals value, or None."""
    scim_filter = f"{attribute} eq {json.dumps(value)}"
    response = check(send("GET", f"/{kind}?filter={quote(scim_filter)}"))
    resources = body_of(response).get("Resources") or []
    return resources[0] if resources else None


def find_user_resource(employee_id: str):
    return find_one("Users", "externalId", employee_id) or find_one(
        "Users", "userName", username(employee_id)
    )


def attributes(e: Employee) -> dict:
    user = {
        "userName": username(e.id),
        "externalId": e.id,
        "name": {k: v for k, v in (("givenName", e.given_name), ("familyName", e.family_name)) if v},
        "displayName": " ".join(p for p in (e.given_name, e.family_name) if p),
    }
    if e.job_title:
        user["title"] = e.job_title
    if e.email:
        user["emails"] = [{"value": e.email, "type": "work", "primary": True}]
    return user


def patch(path: str, operations: list) -> None:
    check(send("PATCH", path, {"schemas": [PATCH_OP], "Operations": operations}))


def group_of(course: str) -> str:
    key = f"group:{course}"
    remembered = shared.recall(key)
    if remembered:
        return remembered
    shared.lock(key)
    try:
        remembered = shared.recall(key)
        if remembered:
            return remembered
        group = find_one("Groups", "displayName", course)
        if group is None:
            group = body_of(check(send("POST", "/Groups", {"schemas": [GROUP], "displayName": course})))
        shared.remember(key, group["id"])
        return group["id"]
    finally:
        shared.unlock(key)


class UserProvisioning(exports.UserProvisioning):
    def find_user(self, employee_id: str) -> Optional[LmsUser]:
        user = find_user_resource(employee_id)
        if user is None:
            return None
        emails = user.get("emails") or []
        primary = next((m for m in emails if m.get("primary")), emails[0] if emails else None)
        return LmsUser(user["id"], bool(user.get("active", True)), primary and primary.get("value"))

    def upsert_user(self, employee: Employee, lms_user_id: Optional[str], idempotency_key: str) -> str:
        if lms_user_id is None:
            found = find_user_resource(employee.id)
            if found is None:
                user = attributes(employee)
                user["schemas"] = [USER]
                user["active"] = employee.status in (EmploymentStatus.ACTIVE, EmploymentStatus.ON_LEAVE)
                response = send("POST", "/Users", user)
                if response.status == 409:
                    # Made by an attempt whose answer was lost: adopt it.
                    found = find_user_resource(employee.id)
                    if found is None:
                        raise Err(ConnectorError_Transient("409 from the server, but no account by externalId"))
                else:
                    log.log(log.Level.INFO, f"created the account of {employee.id}")
                    return body_of(check(response))["id"]
            lms_user_id = found["id"]
        patch(f"/Users/{lms_user_id}", [{"op": "replace", "value": attributes(employee)}])
        return lms_user_id

    def set_active(self, lms_user_id: str, active: bool, idempotency_key: str) -> None:
        patch(f"/Users/{lms_user_id}", [{"op": "replace", "path": "active", "value": active}])


class Enrollment(exports.Enrollment):
    def enroll(self, lms_user_id: str, course_id: str, due: Optional[str], idempotency_key: str) -> None:
        group = group_of(course_id)
        patch(f"/Groups/{group}", [{"op": "add", "path": "members", "value": [{"value": lms_user_id}]}])

    def unenroll(self, lms_user_id: str, course_id: str, idempotency_key: str) -> None:
        group = shared.recall(f"group:{course_id}")
        if group is None:
            found = find_one("Groups", "displayName", course_id)
            if found is None:
                return
            group = found["id"]
        patch(f"/Groups/{group}", [{"op": "remove", "path": f"members[value eq {json.dumps(lms_user_id)}]"}])


class BatchProvisioning(exports.BatchProvisioning):
    """Optional (contract 0.5.0): SCIM's Bulk endpoint is optional on servers,
    so this connector sends one operation per call and the host falls back
    to `upsert_user` and `enroll`."""

    def upsert_users(self, items):
        raise Err(ConnectorError_Unsupported("one account per request"))

    def enroll_all(self, items):
        raise Err(ConnectorError_Unsupported("one enrolment per request"))

    def list_accounts(self, cursor: Optional[str]):
        raise Err(ConnectorError_Unsupported("not implemented"))


class CompletionSource(exports.CompletionSource):
    def fetch_completions(self, cursor: Optional[str]) -> CompletionPage:
        raise Err(ConnectorError_Unsupported("SCIM has no completions"))


class WebhookSource(exports.WebhookSource):
    def parse_webhook(self, headers, body):
        raise Err(ConnectorError_Unsupported("this connector takes no webhooks"))
