//! A fault-injecting HTTP proxy for chaos tests: it stands between the
//! host and a simulator on loopback and, at a seeded random rate, answers
//! `503`, answers `429` with `Retry-After`, drops the connection before the
//! request reaches the simulator, drops it after the simulator applied the
//! request (the effect happened, the answer is lost), or delays the answer.
//!
//! A dropped connection is a real one: the service returns an error, hyper
//! closes the socket without writing a response, and the client sees the
//! connection end mid-exchange, as after a load balancer reset.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What the proxy did to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// `503 Service Unavailable`, the simulator never saw the request.
    Unavailable,
    /// `429 Too Many Requests` with `Retry-After: 1`.
    Throttled,
    /// The connection dropped before the request was forwarded.
    ResetBefore,
    /// The request was forwarded and applied; the connection dropped
    /// before the answer.
    ResetAfter,
    /// The answer was held back 50 to 400 ms.
    Delay,
}

impl Fault {
    /// Every fault, in the order the proxy draws them.
    pub const ALL: [Fault; 5] = [
        Fault::Unavailable,
        Fault::Throttled,
        Fault::ResetBefore,
        Fault::ResetAfter,
        Fault::Delay,
    ];

    /// Short name for reports.
    pub fn label(self) -> &'static str {
        match self {
            Fault::Unavailable => "503",
            Fault::Throttled => "429",
            Fault::ResetBefore => "reset-before",
            Fault::ResetAfter => "reset-after",
            Fault::Delay => "delay",
        }
    }
}

/// A request the proxy saw last, classified by the caller's `classify`.
#[derive(Debug, Clone)]
pub struct Seen {
    /// When it arrived.
    pub at: Instant,
    /// The class `classify` gave it (for example `lms-write`).
    pub class: &'static str,
}

/// Decides the class of a request from its method, path and query and body.
pub type Classify = fn(&str, &str, &[u8]) -> &'static str;

struct State {
    upstream: String,
    client: reqwest::Client,
    rng: Mutex<fastrand::Rng>,
    /// Faults per thousand requests; 0 forwards everything untouched.
    per_mille: Mutex<u32>,
    injected: Mutex<BTreeMap<Fault, usize>>,
    last: Mutex<Option<Seen>>,
    classify: Classify,
}

/// A running proxy; dropping it stops it.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Listen on `127.0.0.1:0` and forward to `upstream` (an origin such as
    /// `http://127.0.0.1:4711`), drawing faults from `seed`.
    pub async fn start(upstream: &str, seed: u64, classify: Classify) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder().no_proxy().build()?,
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            per_mille: Mutex::new(0),
            injected: Mutex::new(BTreeMap::new()),
            last: Mutex::new(None),
            classify,
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(state.clone(), req));
                    // A connection that ends in an injected reset is an
                    // error here by design.
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(FaultProxy { addr, state, task })
    }

    /// The proxy's origin, to configure in place of the simulator's.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Inject a fault into about `per_mille` of every thousand requests
    /// (0 turns faults off).
    pub fn set_rate(&self, per_mille: u32) {
        *lock(&self.state.per_mille) = per_mille.min(1000);
    }

    /// How many of each fault were injected so far.
    pub fn injected(&self) -> BTreeMap<Fault, usize> {
        lock(&self.state.injected).clone()
    }

    /// The last request seen, if any.
    pub fn last_seen(&self) -> Option<Seen> {
        lock(&self.state.last).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the fault proxy")
    }
}

impl std::error::Error for Dropped {}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Dropped> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(Body::new(body), 64 << 20)
        .await
        .map_err(|_| Dropped)?;
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let class = (state.classify)(parts.method.as_str(), target, &body);
    *lock(&state.last) = Some(Seen {
        at: Instant::now(),
        class,
    });
    let fault = {
        let mut rng = lock(&state.rng);
        let per_mille = *lock(&state.per_mille);
        (rng.u32(0..1000) < per_mille).then(|| Fault::ALL[rng.usize(0..Fault::ALL.len())])
    };
    if let Some(fault) = fault {
        *lock(&state.injected).entry(fault).or_default() += 1;
    }
    match fault {
        Some(Fault::Unavailable) => return Ok(status(StatusCode::SERVICE_UNAVAILABLE, None)),
        Some(Fault::Throttled) => return Ok(status(StatusCode::TOO_MANY_REQUESTS, Some("1"))),
        Some(Fault::ResetBefore) => return Err(Dropped),
        Some(Fault::Delay) => {
            let ms = lock(&state.rng).u64(50..400);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        Some(Fault::ResetAfter) | None => {}
    }
    let upstream = state.upstream.clone();
    let response = switchyard::conformance::proxy::relay(&state.client, &upstream, &parts, body)
        .await
        .ok_or(Dropped)?;
    if fault == Some(Fault::ResetAfter) {
        return Err(Dropped);
    }
    Ok(response)
}

fn status(code: StatusCode, retry_after: Option<&str>) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = code;
    if let Some(secs) = retry_after {
        response.headers_mut().insert(
            "retry-after",
            secs.parse().expect("a number is a header value"),
        );
    }
    response
}
