//! The conformance runner's proxy: the plugin's requests go through it to
//! the system under test, so that the runner can count them, answer one
//! with an error status, or drop the connection after the system applied
//! it (the answer lost, as after a load balancer reset).

use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What the proxy does to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status (and `Retry-After`), not forwarding.
    Status(u16, Option<u32>),
    /// Drop the connection without forwarding.
    ResetBefore,
    /// Forward, let the system apply it, then drop the connection.
    ResetAfter,
}

#[derive(Default)]
struct State {
    /// Requests forwarded or faulted so far.
    seen: usize,
    /// `(request number, fault)`: the fault for the request with that number.
    planned: Option<(usize, Fault)>,
    /// How many planned faults were applied.
    applied: usize,
}

/// A running proxy; dropping it stops it.
pub struct Proxy {
    url: String,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the conformance runner")
    }
}

impl std::error::Error for Dropped {}

impl Proxy {
    /// Listen on `127.0.0.1:0` and forward to `upstream` (its path prefix
    /// kept: the proxy's `/x` is `upstream/x`).
    pub async fn start(upstream: &str) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let upstream = upstream.trim_end_matches('/').to_owned();
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                let client = client.clone();
                let upstream = upstream.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| {
                        forward(state.clone(), client.clone(), upstream.clone(), req)
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(Proxy { url, state, task })
    }

    /// The proxy's origin, configured as the plugin's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Requests seen so far.
    pub fn seen(&self) -> usize {
        lock(&self.state).seen
    }

    /// Apply `fault` to the `nth` request from now (1 is the next one).
    pub fn plan(&self, nth: usize, fault: Fault) {
        let mut state = lock(&self.state);
        let at = state.seen + nth.max(1);
        state.planned = Some((at, fault));
    }

    /// Drop a planned fault that was not applied; how many were applied.
    pub fn settle(&self) -> usize {
        let mut state = lock(&self.state);
        state.planned = None;
        state.applied
    }
}

async fn forward(
    state: Arc<Mutex<State>>,
    client: reqwest::Client,
    upstream: String,
    req: Request<Incoming>,
) -> Result<Response<Body>, Dropped> {
    let fault = {
        let mut state = lock(&state);
        state.seen += 1;
        let seen = state.seen;
        match state.planned {
            Some((at, fault)) if at == seen => {
                state.planned = None;
                state.applied += 1;
                Some(fault)
            }
            _ => None,
        }
    };
    match fault {
        Some(Fault::Status(status, retry_after)) => {
            let mut response = Response::new(Body::from(format!(
                "{{\"error\": \"status {status} from the conformance runner\"}}"
            )));
            *response.status_mut() =
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            response
                .headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            if let Some(secs) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", HeaderValue::from(secs));
            }
            return Ok(response);
        }
        Some(Fault::ResetBefore) => return Err(Dropped),
        Some(Fault::ResetAfter) | None => {}
    }
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(Body::new(body), 64 << 20)
        .await
        .map_err(|_| Dropped)?;
    let response = relay(&client, &upstream, &parts, body)
        .await
        .ok_or(Dropped)?;
    if fault == Some(Fault::ResetAfter) {
        return Err(Dropped);
    }
    Ok(response)
}

/// Send a request received as `parts` and `body` on to `upstream` (its
/// path prefix kept) and return the answer, read in full; `None` when no
/// answer came. Hop-by-hop headers are not copied. The test kit's fault
/// proxy forwards with it too.
pub async fn relay(
    client: &reqwest::Client,
    upstream: &str,
    parts: &axum::http::request::Parts,
    body: axum::body::Bytes,
) -> Option<Response<Body>> {
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut request = client
        .request(parts.method.clone(), format!("{upstream}{target}"))
        .body(body);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" && name != "connection" {
            request = request.header(name, value);
        }
    }
    let answer = request.send().await.ok()?;
    let status = answer.status();
    let headers = answer.headers().clone();
    let bytes = answer.bytes().await.ok()?;
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    for (name, value) in &headers {
        if name != "content-length" && name != "transfer-encoding" && name != "connection" {
            response.headers_mut().append(name, value.clone());
        }
    }
    Some(response)
}
