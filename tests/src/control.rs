//! What both simulators share: serving a router over HTTP/1 with faults
//! injected by their control API, and that API's fault routes.
//!
//! A fault is scripted, not drawn at random (the chaos tests' [`FaultProxy`]
//! draws them): `POST /_sim/faults` with a [`FaultRule`] answers the next
//! matching requests with a status (`503`, `429` with `Retry-After`, `401`,
//! `500` ...), holds them back, or drops the connection before the
//! simulator sees the request or after it applied it (the effect happened,
//! the answer is lost). The control routes themselves (`/_sim/...`) are
//! never faulted, never need credentials and are not in the request log.
//!
//! [`FaultProxy`]: crate::proxy::FaultProxy

use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::{Service as _, service_fn};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// Where the control API lives on both simulators.
pub const CONTROL_PREFIX: &str = "/_sim/";

/// When an injected reset drops the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reset {
    /// Before the simulator sees the request: nothing happened.
    Before,
    /// After the simulator applied the request: the answer is lost.
    After,
}

/// One scripted fault, as `POST /_sim/faults` takes it.
///
/// ```json
/// {"status": 429, "retry_after": 2, "times": 3, "path": "/api/v1/datasets"}
/// {"reset": "after", "path": "/webservice/rest/server.php"}
/// {"delay_ms": 1500}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// Answer with this status (400 to 599) instead of serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `Retry-After` seconds on that answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u32>,
    /// Hold the request back this long first (at most 60 000).
    #[serde(default)]
    pub delay_ms: u64,
    /// Drop the connection, before or after the request is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<Reset>,
    /// How many matching requests this applies to (1 to 10 000; default 1).
    #[serde(default = "one")]
    pub times: usize,
    /// Only requests whose path starts with this (default: every one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

fn one() -> usize {
    1
}

impl FaultRule {
    /// `times` requests get `status`, with `Retry-After: retry_after` if given.
    pub fn status(status: u16, retry_after: Option<u32>, times: usize) -> Self {
        FaultRule {
            status: Some(status),
            retry_after,
            delay_ms: 0,
            reset: None,
            times,
            path: None,
        }
    }

    /// The next request's connection is dropped `when`.
    pub fn reset(when: Reset) -> Self {
        FaultRule {
            status: None,
            retry_after: None,
            delay_ms: 0,
            reset: Some(when),
            times: 1,
            path: None,
        }
    }

    /// Only requests whose path starts with `prefix`.
    pub fn on_path(mut self, prefix: &str) -> Self {
        self.path = Some(prefix.to_owned());
        self
    }

    /// What is wrong with the rule, if anything.
    pub fn check(&self) -> Result<(), String> {
        if let Some(status) = self.status
            && !(400..=599).contains(&status)
        {
            return Err(format!(
                "status {status} is not an error status (400 to 599)"
            ));
        }
        if self.status.is_some() && self.reset.is_some() {
            return Err("a fault answers with a status or drops the connection, not both".into());
        }
        if self.retry_after.is_some() && self.status.is_none() {
            return Err("retry_after needs a status".into());
        }
        if self.status.is_none() && self.reset.is_none() && self.delay_ms == 0 {
            return Err("a fault needs a status, a reset or a delay_ms".into());
        }
        if self.delay_ms > 60_000 {
            return Err(format!("delay_ms {} is over 60000", self.delay_ms));
        }
        if !(1..=10_000).contains(&self.times) {
            return Err(format!("times {} is not 1 to 10000", self.times));
        }
        Ok(())
    }

    fn matches(&self, path: &str) -> bool {
        self.path.as_deref().is_none_or(|p| path.starts_with(p))
    }
}

/// The scripted faults of one simulator, oldest first.
#[derive(Debug, Default)]
pub struct Faults {
    inner: Mutex<FaultsInner>,
}

#[derive(Debug, Default)]
struct FaultsInner {
    pending: Vec<FaultRule>,
    injected: u64,
}

impl Faults {
    fn lock(&self) -> MutexGuard<'_, FaultsInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a rule after the pending ones; a bad rule is refused.
    pub fn push(&self, rule: FaultRule) -> Result<(), String> {
        rule.check()?;
        self.lock().pending.push(rule);
        Ok(())
    }

    /// Drops every pending rule.
    pub fn clear(&self) {
        self.lock().pending.clear();
    }

    /// The rules not used up yet (`times` is what remains of each).
    pub fn pending(&self) -> Vec<FaultRule> {
        self.lock().pending.clone()
    }

    /// How many requests got a fault so far.
    pub fn injected(&self) -> u64 {
        self.lock().injected
    }

    /// The fault for a request to `path`: the first pending rule that
    /// matches, used up by one.
    fn take(&self, path: &str) -> Option<FaultRule> {
        if path.starts_with(CONTROL_PREFIX) {
            return None;
        }
        let mut inner = self.lock();
        let index = inner.pending.iter().position(|r| r.matches(path))?;
        let rule = inner.pending[index].clone();
        inner.pending[index].times -= 1;
        if inner.pending[index].times == 0 {
            inner.pending.remove(index);
        }
        inner.injected += 1;
        Some(rule)
    }
}

/// The control API's fault routes, to merge into a simulator's router:
/// `POST /_sim/faults` adds a rule, `GET` lists the pending ones and the
/// count injected, `DELETE` drops them.
pub fn fault_routes(faults: Arc<Faults>) -> Router {
    Router::new()
        .route(
            "/_sim/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .with_state(faults)
}

async fn list_faults(State(faults): State<Arc<Faults>>) -> Json<serde_json::Value> {
    Json(json!({ "pending": faults.pending(), "injected": faults.injected() }))
}

async fn add_fault(
    State(faults): State<Arc<Faults>>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    let rule: FaultRule = match serde_json::from_slice(&body) {
        Ok(rule) => rule,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, format!("not a fault rule: {e}")),
    };
    match faults.push(rule.clone()) {
        Ok(()) => (StatusCode::CREATED, Json(rule)).into_response(),
        Err(e) => control_error(StatusCode::BAD_REQUEST, e),
    }
}

async fn clear_faults(State(faults): State<Arc<Faults>>) -> StatusCode {
    faults.clear();
    StatusCode::NO_CONTENT
}

/// A control API error: `{"error": "..."}`.
pub fn control_error(status: StatusCode, message: impl Into<String>) -> axum::response::Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for Dropped {}

/// Serves `app` on `listener` until `shutdown` fires (or its sender is
/// dropped), applying `faults` to every request. Connections still open
/// when it stops are closed with it, as a stopped server's are.
pub fn serve(
    listener: TcpListener,
    app: Router,
    faults: Arc<Faults>,
    mut shutdown: oneshot::Receiver<()>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let stream = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "simulator accept failed");
                        continue;
                    }
                },
                // Reap finished connections so the set does not grow.
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            };
            let app = TowerToHyperService::new(app.clone());
            let faults = faults.clone();
            connections.spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let app = app.clone();
                    let faults = faults.clone();
                    async move { handle(&app, &faults, req).await }
                });
                // A connection that ends in an injected reset is an error
                // here by design.
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

async fn handle(
    app: &TowerToHyperService<Router>,
    faults: &Faults,
    req: Request<Incoming>,
) -> Result<Response<Body>, Dropped> {
    let fault = faults.take(req.uri().path());
    if let Some(rule) = &fault {
        if rule.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(rule.delay_ms)).await;
        }
        if let Some(status) = rule.status {
            return Ok(status_response(status, rule.retry_after));
        }
        if rule.reset == Some(Reset::Before) {
            return Err(Dropped);
        }
    }
    let response: Result<Response<Body>, Infallible> = app.call(req).await;
    let Ok(response) = response;
    if fault.is_some_and(|r| r.reset == Some(Reset::After)) {
        // Read the body so that the request is applied in full, then drop
        // the connection instead of answering.
        let _ = axum::body::to_bytes(response.into_body(), 64 << 20).await;
        return Err(Dropped);
    }
    Ok(response)
}

fn status_response(status: u16, retry_after: Option<u32>) -> Response<Body> {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut response = (
        code,
        Json(json!({ "error": format!("injected fault: {status}") })),
    )
        .into_response();
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from(secs));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_checked_matched_and_used_up_in_order() {
        let faults = Faults::default();
        assert!(faults.push(FaultRule::status(200, None, 1)).is_err());
        assert!(
            faults
                .push(FaultRule {
                    reset: Some(Reset::After),
                    ..FaultRule::status(503, None, 1)
                })
                .is_err()
        );
        faults
            .push(FaultRule::status(429, Some(2), 2).on_path("/api/v1/datasets"))
            .unwrap();
        faults.push(FaultRule::reset(Reset::Before)).unwrap();

        assert_eq!(
            faults.take("/_sim/state"),
            None,
            "control routes are exempt"
        );
        // The path-bound rule skips other paths; the catch-all takes them.
        assert_eq!(
            faults.take("/api/v1/employees/1").unwrap().reset,
            Some(Reset::Before)
        );
        assert_eq!(
            faults.take("/api/v1/datasets/employee").unwrap().status,
            Some(429)
        );
        assert_eq!(
            faults.take("/api/v1/datasets/employee").unwrap().status,
            Some(429)
        );
        assert_eq!(faults.take("/api/v1/datasets/employee"), None);
        assert_eq!(faults.injected(), 3);
        assert!(faults.pending().is_empty());
    }

    #[test]
    fn a_rule_from_json_rejects_unknown_fields() {
        let rule: FaultRule =
            serde_json::from_str(r#"{"status": 503, "retry_after": 1, "times": 4}"#).unwrap();
        assert_eq!(rule, FaultRule::status(503, Some(1), 4));
        assert!(serde_json::from_str::<FaultRule>(r#"{"stauts": 503}"#).is_err());
    }
}
