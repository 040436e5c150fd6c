//! SIP over TCP and over TLS, accepted by us rather than by the stack, so that every
//! connection is bounded before it costs anything:
//!
//! - connections from outside the trunk networks are closed at accept;
//! - at most `max_connections` in all and `max_per_source` from one address (TCP and
//!   TLS together), counted from accept, so a TLS handshake left hanging holds a place
//!   no longer than `idle` (and at most 10 s);
//! - a connection that carries no dialog and has been silent for `idle` is shut
//!   down (a connection carrying a call may be silent for the whole call, and one a
//!   phone registered on is kept while the registration lasts: we cannot connect to a
//!   phone behind NAT, only answer it on the connection it opened).
//!
//! Accepted streams are handed to rsipstack's transport layer, which reads and writes
//! SIP on them. We keep a duplicate of each socket: shutting it down makes the stack's
//! reader see end-of-file, so it retires the connection even if the peer never closes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rsipstack::transaction::endpoint::{EndpointInnerRef, TransportEventInspector};
use rsipstack::transport::connection::TransportEvent;
use rsipstack::transport::tcp::TcpConnection;
use rsipstack::transport::tls::TlsConnection;
use rsipstack::transport::{SipAddr, SipConnection};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::admission::Trunks;

#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    pub max_connections: usize,
    pub max_per_source: usize,
    /// A connection with no dialog and no traffic for this long is closed.
    pub idle: Duration,
}

pub struct TcpConnections {
    limits: TcpLimits,
    trunks: Trunks,
    /// Advisors' phones may connect from anywhere (they authenticate by digest).
    phones_anywhere: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    per_source: HashMap<IpAddr, usize>,
    open: HashMap<SocketAddr, Open>,
}

struct Open {
    /// A duplicate of the connection's socket, to shut it down.
    socket: std::net::TcpStream,
    last_seen: Instant,
    dialogs: usize,
    /// A phone registered over this connection until then.
    registered_until: Option<Instant>,
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    NotTrunk,
    TotalLimit,
    SourceLimit,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::NotTrunk => "not_trunk",
            Refusal::TotalLimit => "total_limit",
            Refusal::SourceLimit => "source_limit",
        }
    }
}

impl TcpConnections {
    pub fn new(limits: TcpLimits, trunks: Trunks, phones_anywhere: bool) -> Arc<Self> {
        Arc::new(TcpConnections {
            limits,
            trunks,
            phones_anywhere,
            state: Mutex::new(State::default()),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.state.lock().expect("not poisoned").open.len()
    }

    pub fn at_limit(&self) -> bool {
        self.open() >= self.limits.max_connections
    }

    fn admit(&self, peer: SocketAddr, socket: std::net::TcpStream) -> Result<(), Refusal> {
        if !self.phones_anywhere && !self.trunks.contains(peer.ip()) {
            return Err(Refusal::NotTrunk);
        }
        let mut state = self.state.lock().expect("not poisoned");
        if state.open.len() >= self.limits.max_connections {
            return Err(Refusal::TotalLimit);
        }
        let from_source = state.per_source.entry(peer.ip()).or_insert(0);
        if *from_source >= self.limits.max_per_source {
            return Err(Refusal::SourceLimit);
        }
        *from_source += 1;
        state.open.insert(
            peer,
            Open {
                socket,
                last_seen: Instant::now(),
                dialogs: 0,
                registered_until: None,
            },
        );
        metrics::gauge!("contactd_sip_tcp_connections").set(state.open.len() as f64);
        Ok(())
    }

    fn closed(&self, peer: SocketAddr) {
        let mut state = self.state.lock().expect("not poisoned");
        if state.open.remove(&peer).is_some()
            && let Some(n) = state.per_source.get_mut(&peer.ip())
        {
            *n -= 1;
            if *n == 0 {
                state.per_source.remove(&peer.ip());
            }
        }
        metrics::gauge!("contactd_sip_tcp_connections").set(state.open.len() as f64);
    }

    fn touch(&self, peer: SocketAddr) {
        let mut state = self.state.lock().expect("not poisoned");
        if let Some(open) = state.open.get_mut(&peer) {
            open.last_seen = Instant::now();
        }
    }

    /// A phone registered over the connection from `peer` for `lasts` (zero: it
    /// signed off); the connection is not idle while that holds.
    pub fn registered(&self, peer: SocketAddr, lasts: Duration) {
        let mut state = self.state.lock().expect("not poisoned");
        if let Some(open) = state.open.get_mut(&peer) {
            open.registered_until = (!lasts.is_zero()).then(|| Instant::now() + lasts);
        }
    }

    /// Marks a dialog on the connection from `peer` for as long as the guard lives:
    /// such a connection is never closed for being idle.
    pub fn carry_dialog(self: &Arc<Self>, peer: SocketAddr) -> DialogOnConnection {
        let mut state = self.state.lock().expect("not poisoned");
        let carried = match state.open.get_mut(&peer) {
            Some(open) => {
                open.dialogs += 1;
                true
            }
            None => false,
        };
        DialogOnConnection {
            owner: carried.then(|| (self.clone(), peer)),
        }
    }

    /// Shuts down connections that carry no dialog and have been idle too long.
    fn close_idle(&self, now: Instant) {
        let state = self.state.lock().expect("not poisoned");
        for (peer, open) in &state.open {
            let registered = open.registered_until.is_some_and(|until| now < until);
            if open.dialogs == 0
                && !registered
                && now.duration_since(open.last_seen) >= self.limits.idle
            {
                debug!(%peer, "idle SIP TCP connection closed");
                metrics::counter!("contactd_sip_tcp_idle_closed_total").increment(1);
                let _ = open.socket.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// The longest a TLS handshake may take.
    fn handshake_limit(&self) -> Duration {
        self.limits.idle.min(Duration::from_secs(10))
    }

    /// Accepts connections until `stop`; each admitted one is served by the stack,
    /// after a TLS handshake when `tls` is given.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        endpoint: EndpointInnerRef,
        stop: CancellationToken,
    ) {
        let transport = match tls {
            Some(_) => rsipstack::sip::Transport::Tls,
            None => rsipstack::sip::Transport::Tcp,
        };
        let local = match listener.local_addr() {
            Ok(a) => SipAddr {
                r#type: Some(transport),
                addr: a.into(),
            },
            Err(e) => {
                warn!(error = %e, "sip tcp listener has no address");
                return;
            }
        };
        let sweep_every = (self.limits.idle / 4).max(Duration::from_millis(100));
        let mut sweep = tokio::time::interval(sweep_every);
        loop {
            let (stream, peer) = tokio::select! {
                _ = stop.cancelled() => return,
                _ = sweep.tick() => {
                    self.close_idle(Instant::now());
                    continue;
                }
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors or a connection reset before accept: keep going.
                        warn!(error = %e, "sip tcp accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Some(copy) = duplicate(&stream) else {
                continue;
            };
            if let Err(why) = self.admit(peer, copy) {
                metrics::counter!("contactd_sip_tcp_refused_total", "reason" => why.label())
                    .increment(1);
                debug!(%peer, reason = why.label(), "sip tcp connection refused");
                continue;
            }
            let Some(acceptor) = &tls else {
                match TcpConnection::from_stream(stream, local.clone(), Some(stop.child_token())) {
                    Ok(conn) => endpoint
                        .transport_layer
                        .add_connection(SipConnection::Tcp(conn)),
                    Err(e) => {
                        debug!(%peer, error = %e, "sip tcp connection lost at accept");
                        self.closed(peer);
                    }
                }
                continue;
            };
            // The handshake runs on its own, so one slow peer never holds up accept.
            tokio::spawn(self.clone().handshake(
                acceptor.clone(),
                stream,
                peer,
                local.clone(),
                endpoint.clone(),
                stop.child_token(),
            ));
        }
    }

    /// Completes a TLS handshake within the limit and hands the connection to the
    /// stack; a failed or slow one gives its place back.
    async fn handshake(
        self: Arc<Self>,
        acceptor: TlsAcceptor,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        local: SipAddr,
        endpoint: EndpointInnerRef,
        stop: CancellationToken,
    ) {
        let done = tokio::select! {
            _ = stop.cancelled() => None,
            done = tokio::time::timeout(self.handshake_limit(), acceptor.accept(stream)) => Some(done),
        };
        let stream = match done {
            Some(Ok(Ok(stream))) => stream,
            Some(Ok(Err(e))) => {
                metrics::counter!("contactd_sip_tls_handshakes_failed_total", "reason" => "refused")
                    .increment(1);
                debug!(%peer, error = %e, "sip tls handshake failed");
                return self.closed(peer);
            }
            Some(Err(_)) => {
                metrics::counter!("contactd_sip_tls_handshakes_failed_total", "reason" => "timeout")
                    .increment(1);
                debug!(%peer, "sip tls handshake too slow");
                return self.closed(peer);
            }
            None => return self.closed(peer),
        };
        let remote = SipAddr {
            r#type: Some(rsipstack::sip::Transport::Tls),
            addr: peer.into(),
        };
        match TlsConnection::from_server_stream(stream, local, remote, Some(stop)).await {
            Ok(conn) => endpoint
                .transport_layer
                .add_connection(SipConnection::Tls(conn)),
            Err(e) => {
                debug!(%peer, error = %e, "sip tls connection lost after the handshake");
                self.closed(peer);
            }
        }
    }
}

fn duplicate(stream: &tokio::net::TcpStream) -> Option<std::net::TcpStream> {
    use std::os::fd::AsFd;
    let fd = stream.as_fd().try_clone_to_owned().ok()?;
    Some(std::net::TcpStream::from(fd))
}

/// A dialog carried on a TCP connection; dropped when the call ends.
pub struct DialogOnConnection {
    owner: Option<(Arc<TcpConnections>, SocketAddr)>,
}

impl Drop for DialogOnConnection {
    fn drop(&mut self) {
        if let Some((owner, peer)) = self.owner.take() {
            let mut state = owner.state.lock().expect("not poisoned");
            if let Some(open) = state.open.get_mut(&peer) {
                open.dialogs = open.dialogs.saturating_sub(1);
                open.last_seen = Instant::now();
            }
        }
    }
}

/// Sees the stack's transport events: traffic keeps a connection alive, and a closed
/// connection gives its place back.
pub struct TcpActivity(pub Arc<TcpConnections>);

#[async_trait::async_trait]
impl TransportEventInspector for TcpActivity {
    async fn handle(&self, event: TransportEvent) -> Option<TransportEvent> {
        match &event {
            TransportEvent::Incoming(_, SipConnection::Tcp(_) | SipConnection::Tls(_), from) => {
                if let Ok(peer) = from.get_socketaddr() {
                    self.0.touch(peer);
                }
            }
            TransportEvent::Closed(conn @ (SipConnection::Tcp(_) | SipConnection::Tls(_))) => {
                if let Some(peer) = conn.get_remote_addr().and_then(|a| a.get_socketaddr().ok()) {
                    self.0.closed(peer);
                }
            }
            _ => {}
        }
        Some(event)
    }
}
