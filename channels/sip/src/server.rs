//! SIP signalling. Built on rsipstack's endpoint (transactions, retransmissions,
//! CANCEL matching) and dialog layer; what this module adds is the policy of a
//! contact centre's trunk, every part of it decided on the real source address of the
//! packet or connection (never on Via, Contact or any other header):
//!
//! - every request from outside the trunk networks is refused with 403 (OPTIONS too,
//!   unless configured), and TCP connections from outside are closed at accept —
//!   except, when the daemon keeps a [`Registrar`], REGISTERs from advisors' phones,
//!   which are authenticated by digest wherever they come from;
//! - INVITEs are rate-limited per source and calls being set up are bounded per
//!   source (503 with Retry-After), as are calls in all;
//! - From, To and P-Asserted-Identity are read strictly (400 when they cannot be);
//! - 488 when the offer has no G.711 in common, disables its audio, or names an
//!   address family we do not serve;
//! - 100, 180 for the ring time (a CANCEL then ends the call with 487), 200 with our
//!   answer and a Contact on the transport the call came in on;
//! - a call exists only once the caller's ACK confirms it: only then does its media
//!   start, is it recorded and handed to the daemon; an INVITE never ACKed (Timer H)
//!   leaves nothing behind;
//! - then the call runs until a BYE from either side, the caller's silence
//!   (`media_timeout`), the maximum call length, or the end of the shutdown grace;
//! - re-INVITEs and UPDATEs (hold, resume, a new address, a session refresh)
//!   answered per RFC 3264 (an offerless one gets our current offer), session
//!   timers for callers that ask ([`crate::session_timer`]), INFO keypad digits
//!   taken, OPTIONS answered in and out of dialogs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rsipstack::EndpointBuilder;
use rsipstack::dialog::dialog::{Dialog, DialogState, TerminatedReason};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::sip::{Header, HeadersExt, Method, StatusCode};
use rsipstack::transaction::Endpoint;
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transport::{TransportLayer, udp::UdpConnection};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::admission::{PerSource, RateLimiter, Trunks};
use crate::call::{Call, CallEnded, CallHandler, CallInfo};
use crate::config::{SipConfig, SipListen, SipTransport, TrunkNetwork};
use crate::dtmf;
use crate::identity::CallIdentity;
use crate::media::{self, MediaCommand, MediaPolicy, PortPool};
use crate::registrar::{Registrar, RegistrarPolicy, RegistrarSide};
use crate::sdp::{self, SdpError};
use crate::session_timer::{self, Refresher, SessionTimer};
use crate::tcp::{TcpActivity, TcpConnections};

#[derive(Debug, thiserror::Error)]
pub enum SipError {
    #[error("sip.listen: cannot listen on {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
    #[error("sip: {0}")]
    Stack(String),
    #[error("sip.tls_certificate, sip.tls_key: {0}")]
    Tls(String),
}

/// Retry-After sent with 503, in seconds.
const RETRY_AFTER_SECONDS: &str = "30";

/// Beyond the stack's Timer H, how long we still wait for it to give up on an ACK.
const ACK_MARGIN: Duration = Duration::from_secs(2);

pub(crate) const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, REGISTER";

pub(crate) struct Shared {
    pub(crate) config: SipConfig,
    handler: Arc<dyn CallHandler>,
    pub(crate) dialogs: Arc<DialogLayer>,
    pub(crate) ports: PortPool,
    /// Where we listen (known once every listener is bound): the Contact of legs we place.
    pub(crate) listening: std::sync::OnceLock<Vec<SipListen>>,
    trunks: Trunks,
    invites: RateLimiter,
    /// Calls being set up, per source.
    pending: PerSource,
    tcp: Option<Arc<TcpConnections>>,
    /// Advisors' phones register here, when the daemon keeps their credentials.
    registrar: Option<RegistrarSide>,
    accepting: AtomicBool,
    /// The daemon's stop: new calls are refused from the instant it begins.
    stopping: CancellationToken,
    active: AtomicUsize,
    /// Cancelled when the grace period is over: every call still up gets a BYE.
    pub(crate) end_all: CancellationToken,
    idle: Notify,
}

pub struct SipServer {
    shared: Arc<Shared>,
    stack: CancellationToken,
    listening: Vec<SipListen>,
    _endpoint: Endpoint,
}

/// The voice channel's load, for readiness checks.
#[derive(Clone)]
pub struct SipStatus(Arc<Shared>);

impl SipStatus {
    /// The first limit reached, if any: a daemon at its limit is not ready for more.
    pub fn limit_reached(&self) -> Option<SipLimit> {
        if self.0.active.load(Ordering::SeqCst) >= self.0.config.max_calls {
            return Some(SipLimit::Calls);
        }
        if self.0.tcp.as_ref().is_some_and(|t| t.at_limit()) {
            return Some(SipLimit::TcpConnections);
        }
        None
    }
}

/// A limit the voice channel has reached, for readiness checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SipLimit {
    Calls,
    TcpConnections,
}

impl SipServer {
    /// Places legs and checks phones outside any call.
    pub fn dialer(&self) -> crate::leg::Dialer {
        crate::leg::Dialer(self.shared.clone())
    }

    /// Starts the listeners. With a `registrar`, advisors' phones may register from
    /// anywhere (and connect over TCP from anywhere, within the per-source limits).
    /// Once `stopping` is cancelled (the daemon begins to stop) new calls get 503.
    pub async fn start(
        config: SipConfig,
        handler: Arc<dyn CallHandler>,
        registrar: Option<(Arc<dyn Registrar>, RegistrarPolicy)>,
        stopping: CancellationToken,
    ) -> Result<SipServer, SipError> {
        let stack = CancellationToken::new();
        let transports = TransportLayer::new(stack.clone());
        // Idle TCP connections are ours to close (only those without a dialog).
        transports.set_stream_idle_timeout(Duration::ZERO);
        let mut listening = Vec::new();
        for l in config
            .listen
            .iter()
            .filter(|l| l.transport == SipTransport::Udp)
        {
            let conn = UdpConnection::create_connection(l.addr, None, Some(stack.child_token()))
                .await
                .map_err(|e| SipError::Listen {
                    addr: l.addr,
                    reason: e.to_string(),
                })?;
            let addr = conn
                .get_addr()
                .get_socketaddr()
                .map_err(|e| SipError::Listen {
                    addr: l.addr,
                    reason: e.to_string(),
                })?;
            listening.push(SipListen {
                transport: SipTransport::Udp,
                addr,
            });
            transports.add_transport(conn.into());
        }
        let trunks = Trunks::new(config.trunks.clone());
        let tls = match (
            &config.tls,
            config
                .listen
                .iter()
                .any(|l| l.transport == SipTransport::Tls),
        ) {
            (_, false) => None,
            (None, true) => {
                return Err(SipError::Tls(
                    "a tls listener needs a certificate and key".into(),
                ));
            }
            (Some(identity), true) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
                identity.server_config().map_err(SipError::Tls)?,
            ))),
        };
        // TCP and TLS listeners, each with the acceptor its connections need.
        let mut stream_listeners = Vec::new();
        for l in config.listen.iter().filter(|l| l.transport.is_stream()) {
            let sibling = if l.transport == SipTransport::Tcp {
                &listening[..]
            } else {
                &[]
            };
            let listener = bind_tcp(l.addr, sibling).await?;
            let addr = listener.local_addr().map_err(|e| SipError::Listen {
                addr: l.addr,
                reason: e.to_string(),
            })?;
            listening.push(SipListen {
                transport: l.transport,
                addr,
            });
            let acceptor = (l.transport == SipTransport::Tls)
                .then(|| tls.clone())
                .flatten();
            stream_listeners.push((listener, acceptor));
        }
        let phones_anywhere = registrar.is_some();
        let tcp = (!stream_listeners.is_empty())
            .then(|| TcpConnections::new(config.tcp, trunks.clone(), phones_anywhere));
        let mut builder = EndpointBuilder::new();
        builder
            .with_option(rsipstack::transaction::endpoint::EndpointOption {
                t1x64: config.ack_timeout,
                ..Default::default()
            })
            .with_transport_layer(transports)
            .with_cancel_token(stack.clone())
            .with_user_agent("contactd");
        if let Some(tcp) = &tcp {
            builder.with_transport_inspector(Box::new(TcpActivity(tcp.clone())));
        }
        let endpoint = builder.build();
        let incoming = endpoint
            .incoming_transactions()
            .map_err(|e| SipError::Stack(e.to_string()))?;
        let inner = endpoint.inner.clone();
        tokio::spawn(async move {
            if let Err(e) = inner.serve().await {
                warn!(error = %e, "sip endpoint stopped");
            }
        });
        if let Some(tcp) = &tcp {
            for (listener, tls) in stream_listeners {
                tokio::spawn(tcp.clone().serve(
                    listener,
                    tls,
                    endpoint.inner.clone(),
                    stack.child_token(),
                ));
            }
        }
        let shared = Arc::new(Shared {
            ports: PortPool::new(config.media_ip, config.rtp_ports),
            dialogs: Arc::new(DialogLayer::new(endpoint.inner.clone())),
            listening: std::sync::OnceLock::from(listening.clone()),
            invites: RateLimiter::new(config.invites_per_second),
            pending: PerSource::new(config.max_pending_per_source),
            trunks,
            tcp,
            registrar: registrar.map(|(r, policy)| RegistrarSide::new(r, policy)),
            config,
            handler,
            accepting: AtomicBool::new(true),
            stopping,
            active: AtomicUsize::new(0),
            end_all: CancellationToken::new(),
            idle: Notify::new(),
        });
        tokio::spawn(accept_loop(shared.clone(), incoming));
        Ok(SipServer {
            shared,
            stack,
            listening,
            _endpoint: endpoint,
        })
    }

    pub fn listening(&self) -> &[SipListen] {
        &self.listening
    }

    pub fn active_calls(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }

    /// SIP over TCP connections open now.
    pub fn tcp_connections(&self) -> usize {
        self.shared.tcp.as_ref().map_or(0, |t| t.open())
    }

    /// A handle for readiness checks that outlives borrowing the server.
    pub fn status(&self) -> SipStatus {
        SipStatus(self.shared.clone())
    }

    /// New calls get 503 from now on; calls in progress go on.
    pub fn stop_accepting(&self) {
        self.shared.accepting.store(false, Ordering::SeqCst);
    }

    /// Waits for calls in progress to end, at most `grace`; then ends the rest with
    /// BYE (their recordings finish as for any other end) and stops the stack.
    pub async fn shutdown(&self, grace: std::time::Duration) {
        self.stop_accepting();
        let drained = async {
            while self.active_calls() > 0 {
                let idle = self.shared.idle.notified();
                if self.active_calls() == 0 {
                    break;
                }
                idle.await;
            }
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            info!(
                calls = self.active_calls(),
                "grace period over: ending calls in progress"
            );
            self.shared.end_all.cancel();
            while self.active_calls() > 0 {
                let idle = self.shared.idle.notified();
                if self.active_calls() == 0 {
                    break;
                }
                idle.await;
            }
        }
        self.stack.cancel();
    }
}

/// Binds a TCP listener. On port 0 it first tries the port its UDP sibling on the same
/// address got, so that a trunk reaches both transports on one port.
async fn bind_tcp(
    addr: SocketAddr,
    udp: &[SipListen],
) -> Result<tokio::net::TcpListener, SipError> {
    if addr.port() == 0
        && let Some(sibling) = udp
            .iter()
            .find(|u| u.transport == SipTransport::Udp && u.addr.ip() == addr.ip())
        && let Ok(l) =
            tokio::net::TcpListener::bind(SocketAddr::new(addr.ip(), sibling.addr.port())).await
    {
        return Ok(l);
    }
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| SipError::Listen {
            addr,
            reason: e.to_string(),
        })
}

/// The address the request really came from: the datagram's source, or the TCP
/// connection's peer, as the kernel reported it.
fn peer_of(tx: &Transaction) -> Option<SocketAddr> {
    tx.connection
        .as_ref()?
        .get_remote_addr()?
        .get_socketaddr()
        .ok()
}

async fn accept_loop(
    shared: Arc<Shared>,
    mut incoming: rsipstack::transaction::TransactionReceiver,
) {
    while let Some(mut tx) = incoming.recv().await {
        let Some(peer) = peer_of(&tx) else {
            debug!("a request with no known source: dropped");
            continue;
        };
        let network = shared.trunks.network_of(peer.ip());
        let method = tx.original.method;
        let initial = tx
            .original
            .to_header()
            .ok()
            .and_then(|t| t.tag().ok().flatten())
            .is_none();
        let allowed = network.is_some()
            || (method == Method::Options && initial && shared.config.options_from_anywhere)
            || (method == Method::Register && shared.registrar.is_some())
            // A phone answering a leg we placed speaks within that dialog (BYE, …): the
            // dialog's Call-ID and tags, ours random, are what admit it.
            || (!initial && shared.registrar.is_some() && shared.dialogs.match_dialog(&tx).is_some());
        if !allowed && method == Method::Ack {
            // Nothing is ever answered to an ACK.
            continue;
        }
        if !allowed {
            metrics::counter!("contactd_sip_refused_total", "reason" => "not_trunk").increment(1);
            debug!(source = %peer.ip(), %method, "request from outside the trunk networks: 403");
            tokio::spawn(async move {
                let _ = tx.reply(StatusCode::Forbidden).await;
            });
            continue;
        }
        let shared = shared.clone();
        match method {
            Method::Invite if initial => {
                let network = network.expect("checked above");
                tokio::spawn(async move { shared.new_call(tx, peer, network).await });
            }
            Method::Options if initial => {
                tokio::spawn(async move {
                    let allow = Header::Other("Allow".into(), ALLOW.into());
                    let accept = Header::Other("Accept".into(), "application/sdp".into());
                    let _ = tx
                        .reply_with(StatusCode::OK, vec![allow, accept], None)
                        .await;
                });
            }
            Method::Register if shared.registrar.is_some() => {
                tokio::spawn(async move {
                    if let Some(registrar) = &shared.registrar
                        && let Some(lasts) = registrar.answer(&mut tx, peer).await
                        && let Some(tcp) = &shared.tcp
                    {
                        tcp.registered(peer, lasts);
                    }
                });
            }
            // An ACK outside any dialog: nothing to do, nothing to answer.
            Method::Ack if initial => {}
            _ if initial => {
                // REGISTER, SUBSCRIBE, MESSAGE, …: nothing here creates state for them.
                tokio::spawn(async move {
                    let allow = Header::Other("Allow".into(), ALLOW.into());
                    let _ = tx
                        .reply_with(StatusCode::MethodNotAllowed, vec![allow], None)
                        .await;
                });
            }
            _ => match shared.dialogs.match_dialog(&tx) {
                Some(Dialog::Invite(mut dialog)) => {
                    tokio::spawn(async move {
                        if let Err(e) = dialog.handle(&mut tx).await {
                            debug!(error = %e, "in-dialog request");
                        }
                    });
                }
                // An ACK matching nothing is dropped: it is never answered.
                _ if method == Method::Ack => {}
                _ => {
                    tokio::spawn(async move {
                        let _ = tx.reply(StatusCode::CallTransactionDoesNotExist).await;
                    });
                }
            },
        }
    }
}

/// Counts a call for as long as it lives.
struct ActiveCall<'a>(&'a Shared);

impl Drop for ActiveCall<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
        metrics::gauge!("contactd_calls_active").decrement(1.0);
        self.0.idle.notify_waiters();
    }
}

async fn reply_unavailable(tx: &mut Transaction) {
    let retry = Header::RetryAfter(RETRY_AFTER_SECONDS.into());
    let _ = tx
        .reply_with(StatusCode::ServiceUnavailable, vec![retry], None)
        .await;
}

fn refused(reason: &'static str) {
    metrics::counter!("contactd_calls_total", "outcome" => reason).increment(1);
}

impl Shared {
    fn admit(&self) -> Option<ActiveCall<'_>> {
        if !self.accepting.load(Ordering::SeqCst) || self.stopping.is_cancelled() {
            return None;
        }
        self.active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.config.max_calls).then_some(n + 1)
            })
            .ok()
            .map(|_| {
                metrics::gauge!("contactd_calls_active").increment(1.0);
                ActiveCall(self)
            })
    }

    /// Our Contact for a dialog: the address and transport the request arrived on, so
    /// the caller's ACK and BYE come back the same way (`;transport=tcp` on TCP).
    fn local_contact(tx: &Transaction) -> Option<rsipstack::sip::Uri> {
        let conn = tx.connection.as_ref()?;
        let local = conn.get_addr().clone();
        let mut params = Vec::new();
        if conn.transport() != rsipstack::sip::Transport::Udp {
            params.push(rsipstack::sip::Param::Transport(conn.transport()));
        }
        Some(rsipstack::sip::Uri {
            scheme: Some(rsipstack::sip::Scheme::Sip),
            auth: Some(rsipstack::sip::Auth {
                user: "contactd".into(),
                password: None,
            }),
            host_with_port: local.addr,
            params,
            ..Default::default()
        })
    }

    async fn new_call(
        self: Arc<Self>,
        mut tx: Transaction,
        peer: SocketAddr,
        network: TrunkNetwork,
    ) {
        let call_id = tx.original.header_value("Call-ID").unwrap_or_default();
        if !self.invites.allow(peer.ip(), Instant::now()) {
            debug!(source = %peer.ip(), "INVITE rate limit: 503");
            refused("rate_limited");
            return reply_unavailable(&mut tx).await;
        }
        let identity = match CallIdentity::parse(&tx.original, true) {
            Ok(i) => i,
            Err(e) => {
                info!(%call_id, error = %e, "INVITE with unreadable headers: 400");
                refused("bad_request");
                let warning = Header::Other("Warning".into(), format!("399 contactd \"{e}\""));
                let _ = tx
                    .reply_with(StatusCode::BadRequest, vec![warning], None)
                    .await;
                return;
            }
        };
        let Some(pending) = self.pending.try_take(peer.ip()) else {
            info!(source = %peer.ip(), "too many calls being set up from one source: 503");
            refused("pending_limit");
            return reply_unavailable(&mut tx).await;
        };
        if !self.handler.taking_calls() {
            info!(%call_id, "the daemon cannot take calls now: 503");
            refused("not_taking_calls");
            return reply_unavailable(&mut tx).await;
        }
        let Some(active) = self.admit() else {
            info!(%call_id, "at the call limit or shutting down: 503");
            refused("call_limit");
            return reply_unavailable(&mut tx).await;
        };
        let offer = String::from_utf8_lossy(&tx.original.body).into_owned();
        let negotiated = match sdp::negotiate(&offer).and_then(|n| match n.remote {
            Some(r) if r.is_ipv4() != self.config.media_ip.is_ipv4() => Err(SdpError::WrongFamily),
            _ => Ok(n),
        }) {
            Ok(n) => n,
            Err(e) => {
                info!(%call_id, error = %e, "no acceptable offer: 488");
                refused("not_acceptable");
                let code = if e == SdpError::WrongFamily { 301 } else { 304 };
                let warning = Header::Other("Warning".into(), format!("{code} contactd \"{e}\""));
                let _ = tx
                    .reply_with(StatusCode::NotAcceptableHere, vec![warning], None)
                    .await;
                return;
            }
        };
        let mut timer = match session_timer::negotiate(
            &tx.original,
            self.config.session_min_seconds,
            self.config.session_max_seconds,
        ) {
            Ok(t) => t,
            Err(too_small) => {
                info!(%call_id, "session interval too small: 422");
                refused("session_interval_too_small");
                let _ = tx
                    .reply_with(
                        StatusCode::SessionIntervalTooSmall,
                        vec![session_timer::min_se_header(too_small)],
                        None,
                    )
                    .await;
                return;
            }
        };
        let (rtp, rtcp) = match self.ports.bind().await {
            Ok(pair) => pair,
            Err(e) => {
                warn!(%call_id, error = %e, "no RTP ports: 503");
                refused("no_ports");
                return reply_unavailable(&mut tx).await;
            }
        };
        let local_port = rtp.local_addr().map(|a| a.port()).unwrap_or_default();
        let carried = match (&self.tcp, tx.connection.as_ref().map(|c| c.is_reliable())) {
            (Some(tcp), Some(true)) => Some(tcp.carry_dialog(peer)),
            _ => None,
        };

        let (state_tx, mut states) = self.dialogs.new_dialog_state_channel();
        let dialog = match self.dialogs.get_or_create_server_invite(
            &tx,
            state_tx,
            None,
            Self::local_contact(&tx),
        ) {
            Ok(d) => d,
            Err(e) => {
                warn!(%call_id, error = %e, "cannot create dialog");
                let _ = tx.reply(StatusCode::ServerInternalError).await;
                return;
            }
        };
        // 100 first, before anything slower can delay it (a slow answer to an INVITE
        // over UDP is retransmitted at us; the transaction absorbs the copies).
        let _ = tx.send_trying().await;
        let mut transaction_dialog = dialog.clone();
        tokio::spawn(async move {
            if let Err(e) = transaction_dialog.handle(&mut tx).await {
                debug!(error = %e, "INVITE transaction");
            }
        });
        let _ = dialog.ringing(None, None);
        let ring = tokio::time::sleep(self.config.ring);
        tokio::pin!(ring);
        loop {
            tokio::select! {
                _ = &mut ring => break,
                state = states.recv() => match state {
                    Some(DialogState::Terminated(..)) | None => {
                        info!(%call_id, "caller gave up before answer");
                        refused("cancelled");
                        self.dialogs.remove_dialog(&dialog.id());
                        return;
                    }
                    _ => {}
                },
            }
        }
        let mut sdp_session = sdp::SdpSession::new(
            self.config.media_ip,
            local_port,
            rand::random::<u32>().into(),
            negotiated.clone(),
        );
        let answer = sdp_session.describe();
        let content_type = || Header::ContentType("application/sdp".into());
        let mut headers = vec![content_type()];
        headers.extend(timer.iter().flat_map(SessionTimer::answer_headers));
        if let Err(e) = dialog.accept(Some(headers), Some(answer.into_bytes())) {
            warn!(%call_id, error = %e, "cannot answer");
            self.dialogs.remove_dialog(&dialog.id());
            return;
        }
        // Nothing of the call exists until the caller confirms it.
        let confirmed = tokio::time::timeout(self.config.ack_timeout + ACK_MARGIN, async {
            loop {
                match states.recv().await {
                    Some(DialogState::Confirmed(..)) => return true,
                    Some(DialogState::Terminated(..)) | None => return false,
                    Some(_) => {}
                }
            }
        })
        .await
        .unwrap_or(false);
        if !confirmed {
            info!(%call_id, "answered but never confirmed by ACK: forgotten");
            refused("never_confirmed");
            self.dialogs.remove_dialog(&dialog.id());
            return;
        }
        drop(pending);
        let answered_at = SystemTime::now();
        info!(%call_id, codec = negotiated.codec.name(), "call confirmed");

        let (commands, command_rx) = mpsc::unbounded_channel();
        let (digits, digit_rx) = mpsc::channel(crate::dtmf::KEYS_HELD);
        let info = CallInfo {
            key: dialog_key(&call_id, &identity.from_tag, &dialog.id().local_tag),
            call_id: call_id.clone(),
            caller: identity.caller,
            called: identity.called,
            codec: negotiated.codec,
            answered_at,
        };
        let sink = self.handler.recorder(&info);
        let stop_media = CancellationToken::new();
        let silent = CancellationToken::new();
        let media = tokio::spawn(media::run(
            (rtp, rtcp),
            negotiated.clone(),
            command_rx,
            digits.clone(),
            sink,
            stop_media.clone(),
            MediaPolicy {
                network,
                timeout: self.config.media_timeout,
                call_id: call_id.clone(),
                on_silence: silent.clone(),
            },
        ));
        let hangup = CancellationToken::new();
        let ended = CancellationToken::new();
        let reason = Arc::new(Mutex::new(None));
        let (held, held_rx) = tokio::sync::watch::channel(false);
        let call = Call {
            held: held_rx,
            dialer: crate::leg::Dialer(self.clone()),
            info,
            digits: tokio::sync::Mutex::new(digit_rx),
            media: commands.clone(),
            hangup: hangup.clone(),
            ended: ended.clone(),
            reason: reason.clone(),
        };
        tokio::spawn(self.handler.handle(call));

        let deadline = tokio::time::sleep(self.config.max_call_duration);
        tokio::pin!(deadline);
        // The session timer: when the caller's refresh is due (or ours), and the
        // outcome of a refresh we sent.
        let refresh_due =
            tokio::time::sleep(timer.map_or(self.config.max_call_duration, |t| t.next_due()));
        tokio::pin!(refresh_due);
        let (refreshed_tx, mut refreshed) = mpsc::channel::<bool>(1);
        let mut refreshing = false;
        let why = loop {
            tokio::select! {
                state = states.recv() => match state {
                    Some(DialogState::Terminated(_, r)) => {
                        break match r {
                            TerminatedReason::UasBye => CallEnded::WeHungUp,
                            _ => CallEnded::CallerHungUp,
                        };
                    }
                    None => break CallEnded::CallerHungUp,
                    Some(DialogState::Updated(_, request, handle)) => {
                        // A re-INVITE or UPDATE: hold, resume, a new address, or only
                        // a session refresh (RFC 3311 and 4028).
                        let asked = match session_timer::negotiate(&request, self.config.session_min_seconds, self.config.session_max_seconds) {
                            Ok(t) => t,
                            Err(too_small) => {
                                let _ = handle.respond(StatusCode::SessionIntervalTooSmall, Some(vec![session_timer::min_se_header(too_small)]), None).await;
                                continue;
                            }
                        };
                        let body = match sdp_session.mid_dialog(&request.body, request.method == Method::Update) {
                            Ok(done) => {
                                if let Some(n) = done.changed {
                                    held.send_replace(n.holds());
                                    let _ = commands.send(MediaCommand::Renegotiated(n));
                                }
                                done.body
                            }
                            Err(_) => {
                                let _ = handle.reply(StatusCode::NotAcceptableHere).await;
                                continue;
                            }
                        };
                        // Any refresh restarts the interval; one that asks anew
                        // (another interval or refresher) is agreed anew.
                        if asked.is_some() {
                            timer = asked;
                        }
                        let mut headers: Vec<Header> = timer.iter().flat_map(SessionTimer::answer_headers).collect();
                        if body.is_some() {
                            headers.push(content_type());
                        }
                        let _ = handle.respond(StatusCode::OK, Some(headers), body.map(String::into_bytes)).await;
                        if let Some(t) = timer {
                            refresh_due.as_mut().reset(tokio::time::Instant::now() + t.next_due());
                        }
                    }
                    Some(DialogState::Info(_, request, handle)) => {
                        if let Some(d) = dtmf::info_digit(&String::from_utf8_lossy(&request.body)) {
                            let _ = digits.try_send(d);
                        }
                        let _ = handle.reply(StatusCode::OK).await;
                    }
                    Some(DialogState::Options(_, _, handle)) => {
                        let _ = handle.reply(StatusCode::OK).await;
                    }
                    Some(
                        DialogState::Refer(_, _, handle)
                        | DialogState::Message(_, _, handle)
                        | DialogState::Notify(_, _, handle)
                        | DialogState::Publish(_, _, handle),
                    ) => {
                        let _ = handle.reply(StatusCode::MethodNotAllowed).await;
                    }
                    Some(_) => {}
                },
                _ = hangup.cancelled() => {
                    say_bye(&dialog).await;
                    break CallEnded::WeHungUp;
                }
                _ = silent.cancelled() => {
                    say_bye(&dialog).await;
                    break CallEnded::MediaTimeout;
                }
                () = &mut refresh_due, if timer.is_some() && !refreshing => {
                    let Some(t) = timer else { continue };
                    if t.refresher == Refresher::Caller {
                        info!(%call_id, "the caller's session refresh never came: ending the call");
                        say_bye(&dialog).await;
                        break CallEnded::SessionExpired;
                    }
                    // Our turn: UPDATE if the caller allows it, else a re-INVITE
                    // offering what we have now. Sent beside this loop, so the
                    // caller's own requests are answered meanwhile.
                    refreshing = true;
                    let body = (!t.caller_allows_update).then(|| sdp_session.describe());
                    let dialog = dialog.clone();
                    let done = refreshed_tx.clone();
                    tokio::spawn(async move {
                        let mut headers = t.refresh_headers();
                        let sent = match body {
                            None => dialog.update(Some(headers), None).await,
                            Some(offer) => {
                                headers.push(content_type());
                                dialog.reinvite(Some(headers), Some(offer.into_bytes())).await
                            }
                        };
                        let ok = matches!(sent, Ok(Some(r)) if r.status_code.kind() == rsipstack::sip::StatusCodeKind::Successful);
                        let _ = done.send(ok).await;
                    });
                }
                Some(ok) = refreshed.recv() => {
                    refreshing = false;
                    if !ok {
                        info!(%call_id, "our session refresh failed: ending the call");
                        say_bye(&dialog).await;
                        break CallEnded::SessionExpired;
                    }
                    if let Some(t) = timer {
                        refresh_due.as_mut().reset(tokio::time::Instant::now() + t.next_due());
                    }
                }
                _ = &mut deadline => {
                    info!(%call_id, "maximum call length reached");
                    say_bye(&dialog).await;
                    break CallEnded::MaxDuration;
                }
                _ = self.end_all.cancelled() => {
                    say_bye(&dialog).await;
                    break CallEnded::Shutdown;
                }
            }
        };
        *reason.lock().expect("not poisoned") = Some(why);
        stop_media.cancel();
        let stats = media.await.unwrap_or_default();
        ended.cancel();
        self.dialogs.remove_dialog(&dialog.id());
        drop(carried);
        metrics::counter!("contactd_calls_total", "outcome" => why.label()).increment(1);
        info!(%call_id, ?why, seconds = stats.ticks / 50, late = stats.late, missing = stats.missing, wrong_source = stats.wrong_source, "call ended");
        drop(active);
    }
}

/// How long the answer to a BYE is waited for (it is retransmitted meanwhile):
/// a peer that has vanished, often the reason its call is being ended, would
/// otherwise hold the end of the call — and an advisor bridged to it — for the whole
/// transaction timeout (32 s).
pub(crate) const BYE_PATIENCE: Duration = Duration::from_secs(5);

/// Ends a caller's dialog with BYE, waiting at most [`BYE_PATIENCE`] for its answer.
async fn say_bye(dialog: &rsipstack::dialog::invite_dialog::InviteDialog) {
    let _ = tokio::time::timeout(BYE_PATIENCE, dialog.bye()).await;
}

/// One dialog's key: the Call-ID with both tags. Another caller reusing a Call-ID
/// is another dialog (our tag is fresh for each), so never taken for a repeat.
fn dialog_key(call_id: &str, from_tag: &str, local_tag: &str) -> String {
    format!("{call_id};from-tag={from_tag};to-tag={local_tag}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_dialog_has_its_own_key() {
        let a = dialog_key("abc", "1", "x");
        let b = dialog_key("abc", "1", "y");
        assert_ne!(a, b);
    }
}
