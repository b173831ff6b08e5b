//! The daemon's HTTP listeners: axum's router served by hyper with the
//! limits a service open to the network needs, using hyper's own
//! mechanisms where it has them.
//!
//! - **Request head**: hyper's `header_read_timeout` closes a connection
//!   whose request head is not complete in time. hyper counts the wait for
//!   the next request on a kept-alive connection as reading its head, so
//!   the same timeout closes idle keep-alive connections.
//! - **Request body**: the body is wrapped in [`DeadlineBody`], which fails
//!   once `body_read_timeout` has passed since the head; the handler then
//!   answers 400 and the connection is closed.
//! - **Connections**: at most `max_connections` are served at once; a
//!   connection is accepted only when a permit is free, so more wait in the
//!   kernel's accept queue instead of using a file descriptor each.
//! - **Shutdown**: the listener stops accepting; each open connection is
//!   told to finish the request in progress and close (hyper's graceful
//!   shutdown); connections still open when the grace period ends are
//!   dropped.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt as _;

/// A listener's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// See `DaemonConfig::header_read_timeout`.
    pub header_read_timeout: Duration,
    /// See `DaemonConfig::body_read_timeout`.
    pub body_read_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// How long open connections may take to close at shutdown.
    pub grace: Duration,
}

/// Why a request body was cut off.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimedOut(Duration);

/// A request body that fails once its deadline has passed.
pub struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
}

impl DeadlineBody {
    fn new(inner: Incoming, limit: Duration) -> DeadlineBody {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(limit)),
            limit,
        }
    }
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(BodyTimedOut(self.limit).into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        hyper::body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> SizeHint {
        hyper::body::Body::size_hint(&self.inner)
    }
}

/// Raise the soft open-file limit to the hard limit; returns the limit in
/// force (`None` if it cannot be read).
pub fn raise_open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write the struct passed.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            // SAFETY: as above.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                limit = raised;
            }
        }
        Some(limit.rlim_cur)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Descriptors kept free of the listeners' connections: the state
/// database, plugins, outbound HTTP.
const RESERVED_FILES: u64 = 128;

/// The connection cap of each of `listeners` listeners: the configured one,
/// lowered so that all of them together stay below the open-file limit.
pub fn connection_cap(configured: usize, listeners: usize, open_files: Option<u64>) -> usize {
    let Some(limit) = open_files else {
        return configured;
    };
    let per_listener = limit.saturating_sub(RESERVED_FILES) / listeners.max(1) as u64;
    configured.min(usize::try_from(per_listener).unwrap_or(usize::MAX).max(1))
}

/// Serve `router` on `listener` until `shutdown` turns true, then close
/// connections as the module documentation says.
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    router: Router,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (closing, _) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // A permit first: beyond the cap, connections wait in the kernel.
        let permit = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break, // the semaphore is never closed
            },
        };
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors or a connection reset before it was
                // accepted: wait a little rather than spin.
                tracing::warn!(listener = name, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let mut closing = closing.subscribe();
        connections.spawn(async move {
            let _permit = permit;
            let service = router.map_request(move |request: axum::http::Request<Incoming>| {
                let mut request = request
                    .map(|body| Body::new(DeadlineBody::new(body, limits.body_read_timeout)));
                request
                    .extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(remote));
                request
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let connection =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(listener = name, %remote, "connection ended: {e}");
                    }
                    return;
                }
                _ = closing.wait_for(|c| *c) => {}
            }
            // Shutdown: finish the request in progress, then close.
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        });
        // Reap finished connection tasks as we go.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    closing.send_replace(true);
    let open = connections.len();
    if open > 0 {
        tracing::info!(listener = name, open, grace = ?limits.grace, "shutdown: closing open connections");
    }
    if tokio::time::timeout(limits.grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!(
            listener = name,
            open = connections.len(),
            "shutdown: connections still open at the end of the grace period are dropped"
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_below_the_open_file_limit() {
        assert_eq!(connection_cap(256, 2, None), 256);
        assert_eq!(connection_cap(256, 2, Some(65_536)), 256);
        assert_eq!(connection_cap(256, 2, Some(1024)), 256);
        assert_eq!(connection_cap(256, 2, Some(256)), 64);
        assert_eq!(connection_cap(256, 1, Some(100)), 1);
    }
}
