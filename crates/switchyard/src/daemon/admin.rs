//! The admin API: a separate listener, every route behind the bearer token
//! (`[daemon] admin_token`, compared in constant time). Described by the
//! OpenAPI document at `GET /openapi.json`; [`routes`] is the one list the
//! router is built from, and a test checks it against the document.
//!
//! Changes made through the API (trigger, replay, resume) are noted with
//! the token's fingerprint and the caller's address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Extension, Json, Router};
use serde_json::{Value, json};

use super::{DaemonEvent, Shared, note};
use crate::audit::Kind;
use crate::model::{ConnectorName, EmployeeId, LinkName};

type SharedState = Arc<Shared>;

/// Who called: the token's fingerprint and the remote address.
#[derive(Clone)]
struct Caller {
    token: String,
    remote: String,
}

/// An API error: a status and a message, as `{"error": "..."}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
    }
}

type ApiResult = Result<Response, ApiError>;

/// A path parameter; one that does not parse is a 400 with a JSON error,
/// like every other error of this API.
struct Path<T>(T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(ApiError(rejection.status(), rejection.body_text())),
        }
    }
}

/// Query parameters; ones that do not parse are a 400 with a JSON error.
struct Query<T>(T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(ApiError(rejection.status(), rejection.body_text())),
        }
    }
}

/// The token of an `Authorization` header value using the Bearer scheme,
/// whose name is case-insensitive (RFC 9110, section 11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Every route: method, path (OpenAPI syntax, which axum 0.8 shares) and
/// handler.
pub fn routes() -> Vec<(&'static str, &'static str, MethodRouter<SharedState>)> {
    vec![
        ("get", "/openapi.json", get(openapi)),
        ("get", "/metrics", get(metrics)),
        ("get", "/v1/health", get(health)),
        ("get", "/v1/ready", get(ready)),
        ("get", "/v1/plugins", get(plugins)),
        ("post", "/v1/plugins/{plugin}/approve", post(approve_plugin)),
        ("get", "/v1/connectors", get(connectors)),
        (
            "post",
            "/v1/connectors/{connector}/resume",
            post(resume_connector),
        ),
        ("get", "/v1/links", get(links)),
        ("get", "/v1/links/{link}", get(link)),
        ("post", "/v1/links/{link}/sync", post(trigger_sync)),
        ("get", "/v1/links/{link}/match", get(match_link)),
        ("get", "/v1/links/{link}/dead-letters", get(dead_letters)),
        (
            "post",
            "/v1/links/{link}/dead-letters/{id}/replay",
            post(replay_dead_letter),
        ),
        ("get", "/v1/audit", get(audit_records)),
        ("get", "/v1/audit/verify", get(audit_verify)),
        ("post", "/v1/audit/forget/{employee}", post(audit_forget)),
    ]
}

/// Filters of `GET /v1/audit` (as `switchyard audit search`), and how many
/// of the last matching records to return.
#[derive(serde::Deserialize)]
struct AuditQuery {
    link: Option<String>,
    employee: Option<String>,
    course: Option<String>,
    kind: Option<String>,
    since: Option<String>,
    until: Option<String>,
    last: Option<usize>,
}

/// Most records one `GET /v1/audit` returns.
const MAX_AUDIT_RECORDS: usize = 10_000;

async fn audit_records(
    State(shared): State<SharedState>,
    Query(q): Query<AuditQuery>,
) -> ApiResult {
    for (name, value) in [("since", &q.since), ("until", &q.until)] {
        if let Some(value) = value {
            crate::audit::check_time(value)
                .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("{name}: {e}")))?;
        }
    }
    let filter = crate::audit::Filter {
        link: q.link,
        employee: q.employee,
        course: q.course,
        kind: q.kind,
        since: q.since,
        until: q.until,
    };
    let last = q.last.unwrap_or(100).min(MAX_AUDIT_RECORDS);
    Ok(Json(shared.state.audit().read(&filter, Some(last))?).into_response())
}

async fn audit_verify(State(shared): State<SharedState>) -> ApiResult {
    Ok(Json(shared.state.audit().verify()?).into_response())
}

async fn audit_forget(
    State(shared): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(employee): Path<EmployeeId>,
) -> ApiResult {
    let actor = format!("admin token {} from {}", caller.token, caller.remote);
    let forgotten = shared.state.forget(&employee, &actor)?;
    Ok(Json(json!({ "employee": employee, "forgotten": forgotten })).into_response())
}

/// The admin router, with the bearer-token check on every route.
pub fn router(shared: Arc<Shared>) -> Router {
    let mut router = Router::new();
    for (_, path, handler) in routes() {
        router = router.route(path, handler);
    }
    router
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            require_token,
        ))
        .with_state(shared)
}

async fn require_token(
    State(shared): State<SharedState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    // A client that keeps presenting wrong tokens is not looked at.
    if let Some(wait) = shared.rejections.throttled("admin", remote.ip()) {
        return crate::rejections::too_many(wait);
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    match presented {
        Some(token) if shared.admin_token_matches(token) => {
            request.extensions_mut().insert(Caller {
                token: shared.admin_token_fingerprint(),
                remote: remote.to_string(),
            });
            next.run(request).await
        }
        _ => {
            // Logged at most once in a while per address, summed in the
            // audit log (`requests.rejected`).
            shared
                .rejections
                .note("admin", Some(remote.ip()), "unauthorized", None);
            let mut response = ApiError(
                StatusCode::UNAUTHORIZED,
                "a valid bearer token is required".into(),
            )
            .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"switchyard-admin\""),
            );
            response
        }
    }
}

fn not_found(what: &str) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, what.to_owned())
}

async fn openapi() -> Json<Value> {
    Json(document())
}

async fn metrics(State(shared): State<SharedState>) -> Response {
    match shared.render_metrics() {
        Some(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        None => ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "another metrics recorder is installed in this process".into(),
        )
        .into_response(),
    }
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(shared): State<SharedState>) -> Response {
    let service = shared.service();
    let body = json!({
        "ready": shared.is_ready(),
        "paused_connectors": service.paused,
    });
    let status = if shared.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn plugins(State(shared): State<SharedState>) -> Json<Value> {
    Json(json!(shared.serving.load().plugins))
}

async fn connectors(State(shared): State<SharedState>) -> ApiResult {
    let service = shared.service();
    let mut out = Vec::new();
    for (name, config) in &shared.config.connectors {
        let health = shared.state.connector_health(name)?;
        let connector = service.connectors.get(name);
        let quarantine = health
            .as_ref()
            .filter(|h| connector.is_some_and(|c| c.plugin.sha256 == h.sha256))
            .and_then(|h| h.quarantine.clone());
        let status = match (connector, &quarantine) {
            (None, _) => "paused",
            (Some(_), Some(_)) => "quarantined",
            (Some(_), None) => "running",
        };
        out.push(json!({
            "name": name,
            "plugin": config.plugin,
            "status": status,
            "paused_reason": service.paused.get(name),
            "version": connector.map(|c| c.plugin.version().to_owned()),
            "sha256": connector.map(|c| c.plugin.sha256.clone()),
            "world": connector.map(|c| c.plugin.world.to_string()),
            "contract_version": connector.map(|c| c.plugin.contract_version.clone()),
            "faults_in_a_row": connector.map(|c| c.consecutive_faults()),
            "quarantine": quarantine,
        }));
    }
    Ok(Json(out).into_response())
}

fn link_json(shared: &Shared, name: &LinkName) -> Result<Value, ApiError> {
    let link = shared
        .config
        .links
        .get(name)
        .ok_or_else(|| not_found(&format!("no link named `{name}`")))?;
    let slot = shared.links.get(name);
    let next = slot
        .map(|s| s.next_run_ms.load(Ordering::SeqCst))
        .filter(|ms| *ms > 0);
    let last_run = shared.state.last_run(name)?;
    let status = shared.state.link_status(name)?;
    let state = shared.service().link_state(name)?;
    Ok(json!({
        "name": name,
        "hris": link.hris,
        "lms": link.lms,
        "schedule": shared.config.schedules.get(name).and_then(|s| s.schedule.as_ref()).map(|s| s.to_string()),
        "running": slot.is_some_and(|s| s.running.load(Ordering::SeqCst)),
        "next_run": next.map(rfc3339_ms),
        "last_run_finished": last_run.map(rfc3339_ms),
        "status": state.label(),
        "status_detail": state.to_string(),
        "halted": status.halted,
        "counts": shared.state.counts(name)?,
        "activity": shared.activity(name),
    }))
}

fn rfc3339_ms(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

async fn links(State(shared): State<SharedState>) -> ApiResult {
    let mut out = Vec::new();
    for name in shared.config.links.keys() {
        out.push(link_json(&shared, name)?);
    }
    Ok(Json(out).into_response())
}

async fn link(State(shared): State<SharedState>, Path(name): Path<LinkName>) -> ApiResult {
    Ok(Json(link_json(&shared, &name)?).into_response())
}

async fn trigger_sync(
    State(shared): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<LinkName>,
) -> ApiResult {
    if !shared.trigger(&name) {
        return Err(not_found(&format!("no link named `{name}`")));
    }
    let running = shared
        .links
        .get(&name)
        .is_some_and(|s| s.running.load(Ordering::SeqCst));
    note(
        shared.state.audit(),
        DaemonEvent::ManualTrigger {
            link: name.to_string(),
            token: caller.token.clone(),
            remote: caller.remote.clone(),
        },
    );
    note(
        shared.state.audit(),
        DaemonEvent::AdminAction {
            action: Kind::AdminTriggerSync,
            target: name.to_string(),
            token: caller.token,
            remote: caller.remote,
            outcome: if running {
                "queued after the run in progress".into()
            } else {
                "started".into()
            },
        },
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "link": name, "triggered": true, "after_run_in_progress": running })),
    )
        .into_response())
}

/// The link's identity-matching report (as `switchyard match`): reads
/// both systems, writes nothing. 200 whether or not something is to
/// decide (`summary.to_decide`).
async fn match_link(State(shared): State<SharedState>, Path(name): Path<LinkName>) -> ApiResult {
    if !shared.config.links.contains_key(&name) {
        return Err(not_found(&format!("no link named `{name}`")));
    }
    let service = shared.service();
    let link = name.to_string();
    let report = shared
        .on_own_thread(format!("switchyard-match-{name}"), async move || {
            service
                .match_link(&link, &crate::engine::paging::unobserved)
                .await
        })
        .await??;
    Ok(Json(report).into_response())
}

async fn dead_letters(State(shared): State<SharedState>, Path(name): Path<LinkName>) -> ApiResult {
    if !shared.config.links.contains_key(&name) {
        return Err(not_found(&format!("no link named `{name}`")));
    }
    Ok(Json(shared.state.dead_letters(&name)?).into_response())
}

async fn replay_dead_letter(
    State(shared): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path((name, id)): Path<(LinkName, u64)>,
) -> ApiResult {
    if !shared.config.links.contains_key(&name) {
        return Err(not_found(&format!("no link named `{name}`")));
    }
    if shared.state.dead_letter_by_id(&name, id)?.is_none() {
        return Err(not_found(&format!("link `{name}` has no dead letter {id}")));
    }
    let op = shared.state.replay_dead_letter(&name, id)?;
    shared.state.flush()?;
    shared.trigger(&name);
    note(
        shared.state.audit(),
        DaemonEvent::AdminAction {
            action: Kind::AdminReplayDeadLetter,
            target: format!("{name}/{id}"),
            token: caller.token,
            remote: caller.remote,
            outcome: format!(
                "{} for employee {} back in the outbox; run triggered",
                op.kind.name(),
                op.employee_id
            ),
        },
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "link": name, "id": id, "operation": op.kind.name(), "employee_id": op.employee_id, "triggered": true })),
    )
        .into_response())
}

/// `?sha256=`: approve only if this is the version held.
#[derive(serde::Deserialize)]
struct ApproveQuery {
    sha256: Option<String>,
}

async fn approve_plugin(
    State(shared): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(plugin): Path<String>,
    Query(q): Query<ApproveQuery>,
) -> ApiResult {
    use super::plugins::Approval;
    let by = format!("admin token {} from {}", caller.token, caller.remote);
    let approval = shared.approve(&plugin, q.sha256.as_deref(), &by)?;
    let (status, outcome) = match &approval {
        Approval::Approved(_) => (StatusCode::OK, "approved".to_owned()),
        Approval::NothingHeld => (
            StatusCode::NOT_FOUND,
            format!("no version of plugin `{plugin}` is held"),
        ),
        Approval::OtherVersionHeld(held) => (
            StatusCode::CONFLICT,
            format!("the version held is {held}, not the one named"),
        ),
    };
    note(
        shared.state.audit(),
        DaemonEvent::AdminAction {
            action: Kind::PluginApproved,
            target: plugin.clone(),
            token: caller.token,
            remote: caller.remote,
            outcome: outcome.clone(),
        },
    );
    if status != StatusCode::OK {
        return Err(ApiError(status, outcome));
    }
    let info = shared
        .serving
        .load()
        .plugins
        .iter()
        .find(|p| p.name == plugin)
        .cloned();
    Ok(Json(json!({ "plugin": plugin, "approved": true, "status": info })).into_response())
}

async fn resume_connector(
    State(shared): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<ConnectorName>,
) -> ApiResult {
    if !shared.config.connectors.contains_key(&name) {
        return Err(not_found(&format!("no connector named `{name}`")));
    }
    let service = shared.service();
    let lifted = service.resume(&name)?;
    shared.state.flush()?;
    note(
        shared.state.audit(),
        DaemonEvent::AdminAction {
            action: Kind::AdminResumeConnector,
            target: name.to_string(),
            token: caller.token,
            remote: caller.remote,
            outcome: if lifted.is_some() {
                "quarantine lifted".into()
            } else {
                "was not quarantined".into()
            },
        },
    );
    Ok(
        Json(json!({ "connector": name, "resumed": lifted.is_some(), "quarantine": lifted }))
            .into_response(),
    )
}

/// The OpenAPI 3.1 document of the admin API.
pub fn document() -> Value {
    let error = json!({ "$ref": "#/components/responses/Error" });
    let unauthorized = json!({ "$ref": "#/components/responses/Unauthorized" });
    let ok = |description: &str, schema: Value| json!({ "description": description, "content": { "application/json": { "schema": schema } } });
    let link_param =
        json!({ "name": "link", "in": "path", "required": true, "schema": { "type": "string" } });
    let connector_param = json!({ "name": "connector", "in": "path", "required": true, "schema": { "type": "string" } });
    let id_param = json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "integer", "format": "int64", "minimum": 0 } });
    let object = json!({ "type": "object" });
    let array = json!({ "type": "array", "items": { "type": "object" } });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Switchyard admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Operate a running `switchyard run`: status of plugins, connectors and links, manual syncs, dead letters, quarantine. Every route needs `Authorization: Bearer <admin_token>`."
        },
        "security": [{ "bearer": [] }],
        "paths": {
            "/openapi.json": { "get": { "operationId": "openapi", "summary": "This document", "responses": { "200": ok("The OpenAPI document", object.clone()), "401": unauthorized } } },
            "/metrics": { "get": { "operationId": "metrics", "summary": "Prometheus metrics (text exposition format 0.0.4)", "responses": {
                "200": { "description": "Metrics", "content": { "text/plain": { "schema": { "type": "string" } } } },
                "401": unauthorized, "503": error } } },
            "/v1/health": { "get": { "operationId": "health", "summary": "Liveness: the process answers", "responses": { "200": ok("Alive", object.clone()), "401": unauthorized } } },
            "/v1/ready": { "get": { "operationId": "ready", "summary": "Readiness: plugins scanned and schedulers running; lists paused connectors", "responses": {
                "200": ok("Ready", object.clone()), "401": unauthorized, "503": ok("Not ready (starting or shutting down)", object.clone()) } } },
            "/v1/plugins": { "get": { "operationId": "listPlugins", "summary": "Plugins: serving version (sha256, world, contract version, signer), held version and what more it needs, last refusal, removal", "responses": {
                "200": ok("Plugins", array.clone()), "401": unauthorized } } },
            "/v1/plugins/{plugin}/approve": { "post": { "operationId": "approvePlugin", "summary": "Approve the held version of a plugin (one that needs more than the approved version); with ?sha256= only if that version is held", "parameters": [
                { "name": "plugin", "in": "path", "required": true, "schema": { "type": "string" } },
                { "name": "sha256", "in": "query", "required": false, "schema": { "type": "string" } }], "responses": {
                "400": error, "200": ok("Approved: the version serves now", object.clone()), "401": unauthorized, "404": error, "409": error, "500": error } } },
            "/v1/connectors": { "get": { "operationId": "listConnectors", "summary": "Connectors: plugin version and sha256, status (running, paused, quarantined), faults in a row", "responses": {
                "200": ok("Connectors", array.clone()), "401": unauthorized, "500": error } } },
            "/v1/connectors/{connector}/resume": { "post": { "operationId": "resumeConnector", "summary": "Lift a connector's quarantine", "parameters": [connector_param], "responses": {
                "400": error, "200": ok("Resumed (or was not quarantined)", object.clone()), "401": unauthorized, "404": error, "500": error } } },
            "/v1/links": { "get": { "operationId": "listLinks", "summary": "Links: schedule, running, next run, last run, counts, last error", "responses": {
                "200": ok("Links", array.clone()), "401": unauthorized, "500": error } } },
            "/v1/links/{link}": { "get": { "operationId": "getLink", "summary": "One link", "parameters": [link_param.clone()], "responses": {
                "400": error, "200": ok("The link", object.clone()), "401": unauthorized, "404": error, "500": error } } },
            "/v1/links/{link}/sync": { "post": { "operationId": "triggerSync", "summary": "Run the link now (after the run in progress, if any; triggers coalesce)", "parameters": [link_param.clone()], "responses": {
                "400": error, "202": ok("Triggered", object.clone()), "401": unauthorized, "404": error } } },
            "/v1/links/{link}/match": { "get": { "operationId": "matchLink", "summary": "Identity-matching report (as `switchyard match`): the LMS account each employee would be bound to and by which key, what a person must decide, accounts matching no employee. Reads both systems, writes nothing", "parameters": [link_param.clone()], "responses": {
                "200": ok("The report; `summary.to_decide` counts what needs a decision", object.clone()), "400": error, "401": unauthorized, "404": error, "500": error } } },
            "/v1/links/{link}/dead-letters": { "get": { "operationId": "listDeadLetters", "summary": "Dead letters of a link, oldest first", "parameters": [link_param.clone()], "responses": {
                "400": error, "200": ok("Dead letters", array.clone()), "401": unauthorized, "404": error, "500": error } } },
            "/v1/links/{link}/dead-letters/{id}/replay": { "post": { "operationId": "replayDeadLetter", "summary": "Put a dead letter back in the outbox and trigger a run", "parameters": [link_param, id_param], "responses": {
                "400": error, "202": ok("Replayed", object.clone()), "401": unauthorized, "404": error, "500": error } } },
            "/v1/audit": { "get": { "operationId": "readAudit", "summary": "The last `last` (default 100, at most 10000) audit records matching the filters, oldest first, with their hashes and personal payloads (as `switchyard audit search`)", "parameters": [
                    { "name": "link", "in": "query", "schema": { "type": "string" } },
                    { "name": "employee", "in": "query", "schema": { "type": "string" } },
                    { "name": "course", "in": "query", "schema": { "type": "string" } },
                    { "name": "kind", "in": "query", "description": "a kind or a prefix: `user` matches `user.created`", "schema": { "type": "string" } },
                    { "name": "since", "in": "query", "description": "RFC 3339 time or yyyy-mm-dd", "schema": { "type": "string" } },
                    { "name": "until", "in": "query", "description": "RFC 3339 time or yyyy-mm-dd", "schema": { "type": "string" } },
                    { "name": "last", "in": "query", "schema": { "type": "integer", "minimum": 0, "maximum": 10000 } }
                ], "responses": {
                "400": error, "200": ok("Audit records", array), "401": unauthorized, "500": error } } },
            "/v1/audit/verify": { "get": { "operationId": "verifyAudit", "summary": "Check the hash chain from its anchor to its head; `broken` names the first bad record", "responses": {
                "200": ok("Verification", object.clone()), "401": unauthorized, "500": error } } },
            "/v1/audit/forget/{employee}": { "post": { "operationId": "forgetEmployee", "summary": "Subject erasure (as `switchyard audit forget`), recorded with the token's fingerprint", "parameters": [{ "name": "employee", "in": "path", "required": true, "schema": { "type": "string" } }], "responses": {
                "400": error, "200": ok("What was erased", object), "401": unauthorized, "500": error } } }
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "responses": {
                "Error": { "description": "Error", "content": { "application/json": { "schema": { "type": "object", "properties": { "error": { "type": "string" } }, "required": ["error"] } } } },
                "Unauthorized": { "description": "Missing or wrong bearer token", "content": { "application/json": { "schema": { "type": "object", "properties": { "error": { "type": "string" } } } } } }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    #[test]
    fn the_openapi_document_describes_exactly_the_routes_served() {
        let doc = super::document();
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                documented.insert((method.clone(), path.clone()));
            }
        }
        let served: BTreeSet<(String, String)> = super::routes()
            .into_iter()
            .map(|(m, p, _)| (m.to_owned(), p.to_owned()))
            .collect();
        assert_eq!(served, documented);
        // Path parameters are declared.
        for (path, item) in doc["paths"].as_object().unwrap() {
            let declared: BTreeSet<String> = item
                .as_object()
                .unwrap()
                .values()
                .flat_map(|op| op["parameters"].as_array().cloned().unwrap_or_default())
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap().to_owned())
                .collect();
            let in_path: BTreeSet<String> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .map(str::to_owned)
                .collect();
            assert_eq!(declared, in_path, "{path}");
            // A parameter that does not parse is a documented 400.
            for op in item.as_object().unwrap().values() {
                if op["parameters"].as_array().is_some_and(|p| !p.is_empty()) {
                    assert!(op["responses"]["400"].is_object(), "{path}: no 400");
                }
            }
        }
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(super::bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(super::bearer_token("bearer abc"), Some("abc"));
        assert_eq!(super::bearer_token("BEARER  abc "), Some("abc"));
        assert_eq!(super::bearer_token("Basic abc"), None);
        assert_eq!(super::bearer_token("Bearer"), None);
        assert_eq!(super::bearer_token("Bearer "), None);
        assert_eq!(super::bearer_token("Bearerabc"), None);
    }
}
