"""{{name}}: a Switchyard HRIS connector, in Python (componentize-py).

A starting point for a JSON REST API: employees under /employees (paged,
filtered by updated_since for changes only), training records under
/employees/{id}/trainings. Replace the paths and fields with your
vendor's. The host calls these functions concurrently, each in a fresh
instance, retries what fails, and adds the credentials: this code never
sees them. Errors are raised as `Err(ConnectorError_...)`.
"""

import json
from email.utils import parsedate_to_datetime
from typing import List, Optional
from urllib.parse import quote

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import config, http
from wit_world.imports.types import (
    Completion,
    ConnectorError_InvalidConfig,
    ConnectorError_RateLimited,
    ConnectorError_Rejected,
    ConnectorError_Transient,
    ConnectorError_Unauthorized,
    ConnectorError_Unsupported,
    Employee,
    EmployeePage,
    EmploymentStatus,
    TrainingRecord,
)

STATUS = {
    "active": EmploymentStatus.ACTIVE,
    "leave": EmploymentStatus.ON_LEAVE,
    "pending": EmploymentStatus.PENDING,
    "terminated": EmploymentStatus.TERMINATED,
}


def base() -> str:
    url = config.get("base_url")
    if not url:
        raise Err(ConnectorError_InvalidConfig("missing config key `base_url`"))
    return url.rstrip("/")


def send(method: str, path: str, body=None, headers=()) -> http.Response:
    """One request through the host; an error status becomes the contract's error."""
    data = b"" if body is None else json.dumps(body).encode()
    all_headers = [("accept", "application/json"), *headers]
    if body is not None:
        all_headers.append(("content-type", "application/json"))
    try:
        response = http.send(http.Request(method, base() + path, all_headers, data))
    except Err as e:
        raise Err(ConnectorError_Transient(str(e.value)))
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


def to_employee(p: dict) -> Employee:
    status = p.get("status", "")
    return Employee(
        str(p["id"]), None, p.get("email"), p.get("first_name"), p.get("last_name"),
        STATUS.get(status, EmploymentStatus.INACTIVE), status, p.get("department"),
        p.get("job_title"), None, None, None, None, None, [],
    )


def listing(page: int, started: Optional[str], since: Optional[str]) -> EmployeePage:
    """Cursors: `page|N|STARTED|SINCE` during a listing, `since|STARTED`
    for the next run's changes only. STARTED is when the listing began by
    the server's clock (its Date header), never the newest change seen: a
    change made during the listing is seen by the next run, not skipped."""
    path = f"/employees?page={page}"
    if since:
        path += f"&updated_since={quote(since)}"
    response = send("GET", path)
    if started is None:
        date = dict(response.headers).get("date")
        if date:
            started = parsedate_to_datetime(date).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = json.loads(response.body)
    next_page = body.get("next_page")
    return EmployeePage(
        [to_employee(p) for p in body.get("employees", [])],
        f"page|{next_page}|{started or ''}|{since or ''}" if next_page else None,
        f"since|{started}" if next_page is None and started else None,
    )


class EmployeeSource(exports.EmployeeSource):
    def fetch_employees(self, cursor: Optional[str]) -> EmployeePage:
        if cursor is None:
            return listing(1, None, None)
        parts = cursor.split("|")
        if parts[0] == "since" and len(parts) == 2:
            return listing(1, None, parts[1])
        if parts[0] == "page" and len(parts) == 4 and parts[1].isdigit():
            return listing(int(parts[1]), parts[2] or None, parts[3] or None)
        raise Err(ConnectorError_InvalidConfig(f"unrecognised cursor `{cursor}`"))


class CompletionSink(exports.CompletionSink):
    def push_completion(self, completion: Completion, idempotency_key: str, supersedes: Optional[str]) -> None:
        # One record per employee and course: the API keys it by course, so
        # a replay or a newer attempt replaces it, never adds a second.
        send(
            "PUT",
            f"/employees/{quote(completion.employee_id)}/trainings/{quote(completion.course_id)}",
            {
                "completed": completion.completed_at[:10],
                "attempt": completion.attempt_id,
                "score": completion.score,
                "expires": completion.expires_at,
                "replaces": supersedes,
            },
            [("idempotency-key", idempotency_key)],
        )

    def list_training_records(self, employee_id: str) -> List[TrainingRecord]:
        trainings = json.loads(send("GET", f"/employees/{quote(employee_id)}/trainings").body)
        return [TrainingRecord(str(t["id"]), t["course"], t["completed"]) for t in trainings]


class WebhookSource(exports.WebhookSource):
    def parse_webhook(self, headers, body):
        raise Err(ConnectorError_Unsupported("this connector takes no webhooks"))
