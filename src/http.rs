//! The HTTP listener, bounded before a request is read: at most `max_connections`
//! open in all and `max_connections_per_source` from one address (more are closed at
//! accept), and a client must send its request headers within
//! `header_read_timeout_seconds` (also the limit for an idle keep-alive connection),
//! so slow or silent clients cannot hold the listener. On shutdown, connections are
//! drained gracefully: in-flight requests finish, idle connections close.
//!
//! This replaces `axum::serve`, which sets no header-read timeout and no limits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub max_per_source: usize,
    pub header_read_timeout: Duration,
}

/// Open connections, in all and per source, against their limits; shared with
/// `/readyz`.
pub struct HttpConnections {
    limits: HttpLimits,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_source: HashMap<IpAddr, usize>,
}

impl HttpConnections {
    pub fn new(limits: HttpLimits) -> Arc<Self> {
        Arc::new(HttpConnections {
            limits,
            open: Mutex::new(Open::default()),
        })
    }

    pub fn at_limit(&self) -> bool {
        self.open.lock().expect("not poisoned").total >= self.limits.max_connections
    }

    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot> {
        let mut open = self.open.lock().expect("not poisoned");
        if open.total >= self.limits.max_connections {
            return None;
        }
        let n = open.per_source.entry(ip).or_insert(0);
        if *n >= self.limits.max_per_source {
            return None;
        }
        *n += 1;
        open.total += 1;
        metrics::gauge!("contactd_http_connections").set(open.total as f64);
        Some(ConnectionSlot {
            owner: self.clone(),
            ip,
        })
    }
}

/// A connection's place, given back when it closes.
struct ConnectionSlot {
    owner: Arc<HttpConnections>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().expect("not poisoned");
        if let Some(n) = open.per_source.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.per_source.remove(&self.ip);
            }
        }
        open.total -= 1;
        metrics::gauge!("contactd_http_connections").set(open.total as f64);
    }
}

/// Serves `router` on `listener` until `stop`, then drains for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    connections: Arc<HttpConnections>,
    stop: CancellationToken,
    grace: Duration,
) {
    let header_read_timeout = connections.limits.header_read_timeout;
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(header_read_timeout);
    let graceful = GracefulShutdown::new();
    // After the grace period, connections still open are cut.
    let cut = CancellationToken::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, or a connection reset before accept: wait a
                    // moment rather than spin, and go on.
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = connections.admit(peer.ip()) else {
            metrics::counter!("contactd_http_connections_refused_total").increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = hyper::service::service_fn({
            let router = router.clone();
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(request.map(axum::body::Body::new))
            }
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        let cut = cut.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = connection => {}
                _ = cut.cancelled() => {}
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        cut.cancel();
        tracing::warn!(
            grace_seconds = grace.as_secs(),
            "grace period over; closing remaining connections"
        );
    } else {
        tracing::info!("in-flight requests finished");
    }
}
