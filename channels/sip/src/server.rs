//! SIP signalling. Built on rsipstack's endpoint (transactions, retransmissions,
//! CANCEL matching) and dialog layer; what this module adds is the policy of a
//! contact centre's trunk:
//!
//! - INVITEs only from the configured trunk networks (403 otherwise, logged);
//! - 503 with Retry-After at the call limit or once shutdown has begun;
//! - 488 when the offer has no G.711 in common;
//! - 100, 180 for the ring time (a CANCEL then ends the call with 487), 200 with our
//!   answer; then the call runs until a BYE from either side, the maximum call
//!   length, or the end of the shutdown grace period;
//! - re-INVITEs (hold, resume) answered with a fresh answer, INFO keypad digits
//!   taken, OPTIONS (trunk keep-alives) answered in and out of dialogs.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rsipstack::EndpointBuilder;
use rsipstack::dialog::dialog::{Dialog, DialogState, TerminatedReason};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::sip::{Header, HeadersExt, Method, StatusCode};
use rsipstack::transaction::Endpoint;
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transport::{TcpListenerConnection, TransportLayer, udp::UdpConnection};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::call::{Call, CallEnded, CallHandler, CallInfo, CallerId};
use crate::config::{SipConfig, SipListen, SipTransport};
use crate::dtmf;
use crate::media::{self, MediaCommand, PortPool};
use crate::sdp::{self, SdpError};

#[derive(Debug, thiserror::Error)]
pub enum SipError {
    #[error("sip.listen: cannot listen on {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
    #[error("sip: {0}")]
    Stack(String),
}

/// Retry-After sent with 503, in seconds.
const RETRY_AFTER_SECONDS: &str = "30";

struct Shared {
    config: SipConfig,
    handler: Arc<dyn CallHandler>,
    dialogs: Arc<DialogLayer>,
    ports: PortPool,
    accepting: AtomicBool,
    active: AtomicUsize,
    /// Cancelled when the grace period is over: every call still up gets a BYE.
    end_all: CancellationToken,
    idle: Notify,
}

pub struct SipServer {
    shared: Arc<Shared>,
    stack: CancellationToken,
    listening: Vec<SipListen>,
    _endpoint: Endpoint,
}

impl SipServer {
    pub async fn start(
        config: SipConfig,
        handler: Arc<dyn CallHandler>,
    ) -> Result<SipServer, SipError> {
        let stack = CancellationToken::new();
        let transports = TransportLayer::new(stack.clone());
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
        for l in config
            .listen
            .iter()
            .filter(|l| l.transport == SipTransport::Tcp)
        {
            let addr = tcp_address(l.addr, &listening)?;
            let conn =
                TcpListenerConnection::new(addr, None)
                    .await
                    .map_err(|e| SipError::Listen {
                        addr,
                        reason: e.to_string(),
                    })?;
            listening.push(SipListen {
                transport: SipTransport::Tcp,
                addr,
            });
            transports.add_transport(conn.into());
        }
        let endpoint = EndpointBuilder::new()
            .with_transport_layer(transports)
            .with_cancel_token(stack.clone())
            .with_user_agent("contactd")
            .build();
        let incoming = endpoint
            .incoming_transactions()
            .map_err(|e| SipError::Stack(e.to_string()))?;
        let inner = endpoint.inner.clone();
        tokio::spawn(async move {
            if let Err(e) = inner.serve().await {
                warn!(error = %e, "sip endpoint stopped");
            }
        });
        let shared = Arc::new(Shared {
            ports: PortPool::new(config.media_ip, config.rtp_ports),
            dialogs: Arc::new(DialogLayer::new(endpoint.inner.clone())),
            config,
            handler,
            accepting: AtomicBool::new(true),
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

    /// New calls get 503 from now on; calls in progress go on.
    pub fn stop_accepting(&self) {
        self.shared.accepting.store(false, Ordering::SeqCst);
    }

    /// Waits for calls in progress to end, at most `grace`; then ends the rest with
    /// BYE (their recordings finish as for any other end) and stops the stack.
    pub async fn shutdown(self, grace: std::time::Duration) {
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

/// A TCP listener on port 0 takes the port its UDP sibling on the same address got,
/// so a trunk reaches both transports on one port (rsipstack binds TCP lazily, so a
/// port picked by the kernel could not be learnt).
fn tcp_address(addr: SocketAddr, udp: &[SipListen]) -> Result<SocketAddr, SipError> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    if let Some(sibling) = udp.iter().find(|u| u.addr.ip() == addr.ip()) {
        return Ok(SocketAddr::new(addr.ip(), sibling.addr.port()));
    }
    let probe = std::net::TcpListener::bind(addr).map_err(|e| SipError::Listen {
        addr,
        reason: e.to_string(),
    })?;
    probe.local_addr().map_err(|e| SipError::Listen {
        addr,
        reason: e.to_string(),
    })
}

async fn accept_loop(
    shared: Arc<Shared>,
    mut incoming: rsipstack::transaction::TransactionReceiver,
) {
    while let Some(mut tx) = incoming.recv().await {
        let shared = shared.clone();
        let initial = tx
            .original
            .to_header()
            .ok()
            .and_then(|t| t.tag().ok().flatten())
            .is_none();
        match tx.original.method {
            Method::Invite if initial => {
                tokio::spawn(async move { shared.new_call(tx).await });
            }
            Method::Options if initial => {
                tokio::spawn(async move {
                    let allow = Header::Other(
                        "Allow".into(),
                        "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO".into(),
                    );
                    let accept = Header::Other("Accept".into(), "application/sdp".into());
                    let _ = tx
                        .reply_with(StatusCode::OK, vec![allow, accept], None)
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
                _ if tx.original.method == Method::Ack => {}
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
        self.0.idle.notify_waiters();
    }
}

impl Shared {
    fn admit(&self) -> Option<ActiveCall<'_>> {
        if !self.accepting.load(Ordering::SeqCst) {
            return None;
        }
        self.active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.config.max_calls).then_some(n + 1)
            })
            .ok()
            .map(|_| ActiveCall(self))
    }

    async fn new_call(self: Arc<Self>, mut tx: Transaction) {
        let call_id = tx.original.header_value("Call-ID").unwrap_or_default();
        let Some(source) = source_ip(&tx.original) else {
            warn!(%call_id, "INVITE with no usable Via: refused");
            let _ = tx.reply(StatusCode::BadRequest).await;
            return;
        };
        if !self.config.trunks.iter().any(|t| t.contains(source)) {
            warn!(%call_id, %source, "INVITE from outside the trunk networks: 403");
            let _ = tx.reply(StatusCode::Forbidden).await;
            return;
        }
        let Some(active) = self.admit() else {
            info!(%call_id, "at the call limit or shutting down: 503");
            let retry = Header::RetryAfter(RETRY_AFTER_SECONDS.into());
            let _ = tx
                .reply_with(StatusCode::ServiceUnavailable, vec![retry], None)
                .await;
            return;
        };
        let offer = String::from_utf8_lossy(&tx.original.body).into_owned();
        let negotiated = match sdp::negotiate(&offer) {
            Ok(n) => n,
            Err(e) => {
                info!(%call_id, error = %e, "no acceptable offer: 488");
                let warning = Header::Other("Warning".into(), format!("304 contactd \"{e}\""));
                let _ = tx
                    .reply_with(StatusCode::NotAcceptableHere, vec![warning], None)
                    .await;
                return;
            }
        };
        let (rtp, rtcp) = match self.ports.bind().await {
            Ok(pair) => pair,
            Err(e) => {
                warn!(%call_id, error = %e, "no RTP ports: 503");
                let retry = Header::RetryAfter(RETRY_AFTER_SECONDS.into());
                let _ = tx
                    .reply_with(StatusCode::ServiceUnavailable, vec![retry], None)
                    .await;
                return;
            }
        };
        let local_port = rtp.local_addr().map(|a| a.port()).unwrap_or_default();
        let caller = caller_id(&tx.original);
        let called = tx
            .original
            .header_value("To")
            .and_then(|v| uri_user(&v))
            .unwrap_or_default();

        let (state_tx, mut states) = self.dialogs.new_dialog_state_channel();
        let dialog = match self
            .dialogs
            .get_or_create_server_invite(&tx, state_tx, None, None)
        {
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
                        self.dialogs.remove_dialog(&dialog.id());
                        return;
                    }
                    _ => {}
                },
            }
        }
        let session_id: u64 = rand::random::<u32>().into();
        let mut version = 1u64;
        let answer = sdp::answer(
            &negotiated,
            self.config.media_ip,
            local_port,
            session_id,
            version,
        );
        let content_type = || Header::ContentType("application/sdp".into());
        if let Err(e) = dialog.accept(Some(vec![content_type()]), Some(answer.into_bytes())) {
            warn!(%call_id, error = %e, "cannot answer");
            self.dialogs.remove_dialog(&dialog.id());
            return;
        }
        info!(%call_id, ?caller, codec = negotiated.codec.name(), "call answered");

        let (commands, command_rx) = mpsc::unbounded_channel();
        let (digits, digit_rx) = mpsc::unbounded_channel();
        let info = CallInfo {
            call_id: call_id.clone(),
            caller,
            called,
            codec: negotiated.codec,
            answered_at: SystemTime::now(),
        };
        let sink = self.handler.recorder(&info);
        let stop_media = CancellationToken::new();
        let media = tokio::spawn(media::run(
            rtp,
            rtcp,
            negotiated.clone(),
            command_rx,
            digits.clone(),
            sink,
            stop_media.clone(),
        ));
        let hangup = CancellationToken::new();
        let ended = CancellationToken::new();
        let reason = Arc::new(Mutex::new(None));
        let call = Call {
            info,
            digits: digit_rx,
            media: commands.clone(),
            hangup: hangup.clone(),
            ended: ended.clone(),
            reason: reason.clone(),
        };
        tokio::spawn(self.handler.handle(call));

        let deadline = tokio::time::sleep(self.config.max_call_duration);
        tokio::pin!(deadline);
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
                        // A re-INVITE: hold, resume or a new address.
                        match sdp::negotiate(&String::from_utf8_lossy(&request.body)) {
                            Ok(n) => {
                                version += 1;
                                let answer = sdp::answer(&n, self.config.media_ip, local_port, session_id, version);
                                let _ = commands.send(MediaCommand::Renegotiated(n));
                                let _ = handle.respond(StatusCode::OK, Some(vec![content_type()]), Some(answer.into_bytes())).await;
                            }
                            Err(SdpError::NoAudio) if request.body.is_empty() => {
                                // No offer: offer what we have now.
                                version += 1;
                                let answer = sdp::answer(&negotiated, self.config.media_ip, local_port, session_id, version);
                                let _ = handle.respond(StatusCode::OK, Some(vec![content_type()]), Some(answer.into_bytes())).await;
                            }
                            Err(_) => {
                                let _ = handle.reply(StatusCode::NotAcceptableHere).await;
                            }
                        }
                    }
                    Some(DialogState::Info(_, request, handle)) => {
                        if let Some(d) = dtmf::info_digit(&String::from_utf8_lossy(&request.body)) {
                            let _ = digits.send(d);
                        }
                        let _ = handle.reply(StatusCode::OK).await;
                    }
                    Some(DialogState::Options(_, _, handle)) => {
                        let _ = handle.reply(StatusCode::OK).await;
                    }
                    Some(_) => {}
                },
                _ = hangup.cancelled() => {
                    let _ = dialog.bye().await;
                    break CallEnded::WeHungUp;
                }
                _ = &mut deadline => {
                    info!(%call_id, "maximum call length reached");
                    let _ = dialog.bye().await;
                    break CallEnded::MaxDuration;
                }
                _ = self.end_all.cancelled() => {
                    let _ = dialog.bye().await;
                    break CallEnded::Shutdown;
                }
            }
        };
        *reason.lock().expect("not poisoned") = Some(why);
        stop_media.cancel();
        let stats = media.await.unwrap_or_default();
        ended.cancel();
        self.dialogs.remove_dialog(&dialog.id());
        info!(%call_id, ?why, seconds = stats.ticks / 50, late = stats.late, missing = stats.missing, "call ended");
        drop(active);
    }
}

/// The address the INVITE came from: the top Via's `received`, which the transport
/// adds whenever the packet's source differs from what the Via claims, else the
/// Via's own host.
fn source_ip(request: &rsipstack::sip::Request) -> Option<IpAddr> {
    let via = request.header_value("Via")?;
    let top = via.split(',').next()?.trim();
    let mut parts = top.split(';');
    let sent_by = parts.next()?.split_whitespace().nth(1)?;
    for param in parts {
        if let Some(v) = param.trim().strip_prefix("received=") {
            return v.trim_matches(['[', ']']).parse().ok();
        }
    }
    let host = if let Some(rest) = sent_by.strip_prefix('[') {
        rest.split(']').next()?
    } else {
        sent_by.split(':').next()?
    };
    host.parse().ok()
}

/// The caller's number from P-Asserted-Identity, else From; withheld when the caller
/// asked for privacy or is anonymous.
fn caller_id(request: &rsipstack::sip::Request) -> CallerId {
    let privacy = request
        .header_value("Privacy")
        .is_some_and(|p| p.split(';').any(|t| t.trim().eq_ignore_ascii_case("id")));
    let user = request
        .header_value("P-Asserted-Identity")
        .and_then(|v| uri_user(&v))
        .or_else(|| request.header_value("From").and_then(|v| uri_user(&v)));
    match user {
        Some(u) if !privacy && !u.eq_ignore_ascii_case("anonymous") && !u.is_empty() => {
            CallerId::Number(u)
        }
        _ => CallerId::Withheld,
    }
}

/// The user part of the first sip:, sips: or tel: URI in a header value.
fn uri_user(value: &str) -> Option<String> {
    let lower = value.to_ascii_lowercase();
    let (start, scheme_len) = ["sips:", "sip:", "tel:"]
        .iter()
        .filter_map(|s| lower.find(s).map(|i| (i, s.len())))
        .min_by_key(|(i, _)| *i)?;
    let rest = &value[start + scheme_len..];
    let end = rest.find(['@', ';', '>', ' ', ',']).unwrap_or(rest.len());
    let user = &rest[..end];
    if !lower[start..].contains('@') && !lower[start..].starts_with("tel:") {
        return None;
    }
    (user.len() <= 64).then(|| user.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite(extra: &str, via: &str) -> rsipstack::sip::Request {
        let text = format!(
            "INVITE sip:1000@127.0.0.1 SIP/2.0\r\nVia: {via}\r\n\
             From: \"Jo\" <sip:07700900123@192.0.2.9>;tag=1\r\nTo: <sip:1000@127.0.0.1>\r\n\
             Call-ID: abc\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        rsipstack::sip::Request::try_from(text.as_str()).unwrap()
    }

    const VIA: &str = "SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK1";

    #[test]
    fn caller_identity() {
        assert_eq!(
            caller_id(&invite("", VIA)),
            CallerId::Number("07700900123".into())
        );
        let pai = "P-Asserted-Identity: <sip:+447700900999@trunk.example>\r\n";
        assert_eq!(
            caller_id(&invite(pai, VIA)),
            CallerId::Number("+447700900999".into())
        );
        let private = format!("{pai}Privacy: id\r\n");
        assert_eq!(caller_id(&invite(&private, VIA)), CallerId::Withheld);
        let text = "INVITE sip:1000@h SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK1\r\n\
            From: \"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=1\r\nTo: <sip:1000@h>\r\n\
            Call-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let anonymous = rsipstack::sip::Request::try_from(text).unwrap();
        assert_eq!(caller_id(&anonymous), CallerId::Withheld);
    }

    #[test]
    fn the_source_is_the_received_address_when_the_via_lies() {
        assert_eq!(
            source_ip(&invite("", VIA)),
            Some("192.0.2.9".parse().unwrap())
        );
        let lying = "SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK1;received=203.0.113.5;rport=5060";
        assert_eq!(
            source_ip(&invite("", lying)),
            Some("203.0.113.5".parse().unwrap())
        );
        assert_eq!(
            source_ip(&invite("", "SIP/2.0/UDP trunk.example;branch=z9hG4bK1")),
            None
        );
    }

    #[test]
    fn user_parts() {
        assert_eq!(
            uri_user("\"Jo\" <sip:+447700900123@trunk.example;user=phone>").as_deref(),
            Some("+447700900123")
        );
        assert_eq!(
            uri_user("<tel:+447700900123>").as_deref(),
            Some("+447700900123")
        );
        assert_eq!(
            uri_user("sipp <sip:sipp@127.0.0.1:5061>;tag=1").as_deref(),
            Some("sipp")
        );
        assert_eq!(uri_user("<sip:trunk.example>"), None);
    }
}
