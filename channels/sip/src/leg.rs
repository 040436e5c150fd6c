//! Legs we place: a call from contactd to an advisor's registered phone, so that a
//! caller can be bridged to it. contactd stays in the media path (B2BUA): the leg has
//! RTP ports and a media clock of its own, like an incoming call, and a bridge joins
//! the two legs' audio inside the daemon, where the caller's recording sees both.
//!
//! A leg's media is latched to the phone's address (where its REGISTER came from):
//! a phone is authenticated, not trusted by network, so nothing else is heard on it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rsipstack::dialog::dialog::{DialogState, TerminatedReason};
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::sip::{Header, StatusCodeKind};
use rsipstack::transport::SipAddr;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::config::{SipTransport, TrunkNetwork};
use crate::media::{self, MediaCommand, MediaPolicy};
use crate::sdp;
use crate::server::Shared;

/// What an advisor's phone may send us within a leg: REFER too (a transfer), which
/// the trunk side never may.
const LEG_ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, REFER";

/// A registered phone to ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialTarget {
    /// The Contact it registered (the Request-URI of our INVITE).
    pub contact: String,
    /// Where its REGISTER really came from: where the INVITE goes.
    pub reach: SocketAddr,
    pub transport: SipTransport,
    /// Shown to the advisor: the caller's number, or `anonymous`.
    pub caller: String,
}

/// Why a leg did not come up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialFailure {
    /// The phone said no (486 Busy Here, 603 Decline, …): an advisor's choice.
    #[error("declined ({0})")]
    Declined(u16),
    /// It rang for the whole ring time (then CANCELed).
    #[error("not answered")]
    NoAnswer,
    /// No answer at all, a transport error, or an answer we cannot use.
    #[error("unreachable: {0}")]
    Unreachable(String),
}

/// A leg that answered. Ends when the phone hangs up, when [`Leg::hang_up`] is
/// called, or at shutdown; dropping it hangs up.
pub struct Leg {
    pub(crate) media: mpsc::UnboundedSender<MediaCommand>,
    /// Whether the phone has put the caller on hold (a re-INVITE).
    pub(crate) held: tokio::sync::watch::Receiver<bool>,
    /// Where the phone transferred the caller (a REFER), once it has.
    pub(crate) transfer: tokio::sync::watch::Receiver<Option<String>>,
    hangup: CancellationToken,
    ended: CancellationToken,
    /// The codec the phone chose.
    pub codec: crate::g711::Codec,
}

impl Leg {
    /// Ends the leg with a BYE (if it is still up) and waits until it has ended.
    pub async fn hang_up(&self) {
        self.hangup.cancel();
        self.ended.cancelled().await;
    }

    /// Waits until the leg has ended (the phone hung up, or we did).
    pub async fn ended(&self) {
        self.ended.cancelled().await;
    }

    pub fn is_up(&self) -> bool {
        !self.ended.is_cancelled()
    }
}

impl Drop for Leg {
    fn drop(&mut self) {
        self.hangup.cancel();
    }
}

/// Places legs; every [`crate::Call`] carries one.
#[derive(Clone)]
pub struct Dialer(pub(crate) Arc<Shared>);

impl Dialer {
    /// Whether a phone is there at `target` now: an OPTIONS request (RFC 3261 §11),
    /// any response within `patience` (even an error: something answered at that
    /// address and port), none meaning it is gone though its registration lasts.
    /// This is how a phone that was unplugged is never rung.
    pub async fn probe(&self, target: &DialTarget, patience: Duration) -> bool {
        use rsipstack::sip::{Method, SipMessage, Uri, typed};
        use rsipstack::transaction::key::{TransactionKey, TransactionRole};
        use rsipstack::transaction::transaction::Transaction;
        let shared = &self.0;
        let endpoint = &shared.dialogs.endpoint;
        let transport = target.transport.to_stack();
        let Some(ours) = shared
            .listening
            .get()
            .and_then(|l| l.iter().find(|l| l.transport == target.transport))
            .map(|l| l.addr)
        else {
            return false;
        };
        let request = (|| {
            let uri = Uri::try_from(target.contact.as_str()).ok()?;
            let via = endpoint
                .get_via(
                    Some(SipAddr {
                        r#type: Some(transport),
                        addr: ours.into(),
                    }),
                    None,
                )
                .ok()?;
            let from = typed::From {
                display_name: None,
                uri: Uri::try_from(format!("sip:contactd@{ours}").as_str()).ok()?,
                params: vec![rsipstack::transaction::make_tag().into()],
            };
            let to = typed::To {
                display_name: None,
                uri: uri.clone(),
                params: vec![],
            };
            let mut request = endpoint.make_request(Method::Options, uri, via, from, to, 1, None);
            request.headers.push(Header::ContentLength(0.into()));
            Some(request)
        })();
        let Some(request) = request else {
            return false;
        };
        let Ok(key) = TransactionKey::from_request(&request, TransactionRole::Client) else {
            return false;
        };
        let mut tx = Transaction::new_client(key, request, endpoint.clone(), None);
        tx.destination = Some(SipAddr {
            r#type: Some(transport),
            addr: target.reach.into(),
        });
        let answered = async {
            tx.send().await.ok()?;
            while let Some(message) = tx.receive().await {
                if let SipMessage::Response(_) = message {
                    return Some(());
                }
            }
            None
        };
        matches!(tokio::time::timeout(patience, answered).await, Ok(Some(())))
    }

    /// Rings every one of `targets` (an advisor's phones) at once for at most `ring`;
    /// the first to answer is the leg. The others are CANCELed the moment it has, and
    /// one that answered as well is sent ACK and BYE (by the stack, whose abandoned
    /// INVITE ends a late 2xx that way), so a caller is bridged to one phone only.
    /// A global refusal (6xx) from any phone ends the offer; a 486 from one lets
    /// the others ring on. Failing all, the most telling failure: declined, else
    /// not answered, else unreachable.
    pub async fn ring(&self, targets: &[DialTarget], ring: Duration) -> Result<Leg, DialFailure> {
        use futures_util::stream::{FuturesUnordered, StreamExt};
        let mut branches: FuturesUnordered<_> =
            targets.iter().map(|t| self.dial(t, ring)).collect();
        let mut failed: Option<DialFailure> = None;
        while let Some(branch) = branches.next().await {
            let failure = match branch {
                // Returning drops the other branches: the stack CANCELs them.
                Ok(leg) => return Ok(leg),
                Err(DialFailure::Declined(code)) if code >= 600 => {
                    return Err(DialFailure::Declined(code));
                }
                Err(f) => f,
            };
            let rank = |f: &DialFailure| match f {
                DialFailure::Declined(_) => 2,
                DialFailure::NoAnswer => 1,
                DialFailure::Unreachable(_) => 0,
            };
            if failed
                .as_ref()
                .is_none_or(|worst| rank(&failure) > rank(worst))
            {
                failed = Some(failure);
            }
        }
        Err(failed.unwrap_or_else(|| DialFailure::Unreachable("no phone to ring".into())))
    }

    /// Rings `target` for at most `ring`; the answered leg, or why not.
    pub async fn dial(&self, target: &DialTarget, ring: Duration) -> Result<Leg, DialFailure> {
        let shared = &self.0;
        let unreachable = |e: &dyn std::fmt::Display| DialFailure::Unreachable(e.to_string());
        let ports = shared.ports.bind().await.map_err(|e| unreachable(&e))?;
        let local_port = ports.0.local_addr().map_err(|e| unreachable(&e))?.port();
        let transport = target.transport.to_stack();
        let ours = shared
            .listening
            .get()
            .and_then(|l| l.iter().find(|l| l.transport == target.transport))
            .map(|l| l.addr)
            .ok_or_else(|| DialFailure::Unreachable("no listener on that transport".into()))?;
        let uri = |s: &str| rsipstack::sip::Uri::try_from(s).map_err(|e| unreachable(&e));
        let caller_user: String = target
            .caller
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '+')
            .take(32)
            .collect();
        let caller_user = if caller_user.is_empty() {
            "anonymous".to_string()
        } else {
            caller_user
        };
        let session_id: u64 = rand::random::<u32>().into();
        let option = InviteOption {
            caller: uri(&format!("sip:{caller_user}@{ours}"))?,
            callee: uri(&target.contact)?,
            destination: Some(SipAddr {
                r#type: Some(transport),
                addr: target.reach.into(),
            }),
            contact: uri(&format!("sip:contactd@{ours}"))?,
            content_type: Some("application/sdp".into()),
            offer: Some(sdp::offer(shared.config.media_ip, local_port, session_id).into_bytes()),
            headers: Some(vec![Header::Other("Allow".into(), LEG_ALLOW.into())]),
            ..Default::default()
        };
        let (state_tx, mut states) = shared.dialogs.new_dialog_state_channel();
        let answered =
            match tokio::time::timeout(ring, shared.dialogs.do_invite(option, state_tx)).await {
                // The ring time is over: dropping the INVITE's future CANCELs it.
                Err(_) => return Err(DialFailure::NoAnswer),
                Ok(Err(e)) => return Err(unreachable(&e)),
                Ok(Ok((dialog, Some(response))))
                    if response.status_code.kind() == StatusCodeKind::Successful =>
                {
                    (dialog, response)
                }
                Ok(Ok((_, Some(response)))) => {
                    let code = response.status_code.code();
                    return Err(match code {
                        486 | 600 | 603 => DialFailure::Declined(code),
                        _ => DialFailure::Unreachable(code.to_string()),
                    });
                }
                Ok(Ok((_, None))) => return Err(DialFailure::Unreachable("no answer".into())),
            };
        let (dialog, response) = answered;
        let negotiated = match sdp::negotiate(&String::from_utf8_lossy(&response.body)) {
            Ok(n) => n,
            Err(e) => {
                info!(error = %e, "an advisor's phone answered with no usable SDP: hung up");
                let _ = dialog.bye().await;
                shared.dialogs.remove_dialog(&dialog.id());
                return Err(unreachable(&e));
            }
        };
        let network = TrunkNetwork::parse(&target.reach.ip().to_string())
            .map_err(|e| DialFailure::Unreachable(e.to_string()))?;
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (digits, _digits_rx) = mpsc::channel(crate::dtmf::KEYS_HELD);
        let stop_media = CancellationToken::new();
        let silent = CancellationToken::new();
        let codec = negotiated.codec;
        let negotiated_now = negotiated.clone();
        let media = tokio::spawn(media::run(
            ports,
            negotiated,
            command_rx,
            digits,
            None,
            stop_media.clone(),
            MediaPolicy {
                network,
                timeout: shared.config.media_timeout,
                call_id: dialog.id().call_id.clone(),
                on_silence: silent.clone(),
            },
        ));
        let hangup = CancellationToken::new();
        let ended = CancellationToken::new();
        let (held, held_rx) = tokio::sync::watch::channel(false);
        let (transfer, transfer_rx) = tokio::sync::watch::channel(None);
        let leg = Leg {
            held: held_rx,
            transfer: transfer_rx,
            media: commands.clone(),
            hangup: hangup.clone(),
            ended: ended.clone(),
            codec,
        };
        let shared = shared.clone();
        let media_ip = shared.config.media_ip;
        tokio::spawn(async move {
            let mut sdp_session =
                sdp::SdpSession::new(media_ip, local_port, session_id, negotiated_now);
            let (why, send_bye) = loop {
                tokio::select! {
                    state = states.recv() => match state {
                        Some(DialogState::Terminated(_, reason)) => break (format!("{reason:?}"), false),
                        None => break ("gone".to_string(), false),
                        Some(DialogState::Updated(_, request, handle)) => {
                            // Hold and resume from the phone (RFC 3264), by re-INVITE or
                            // UPDATE (RFC 3311): answered with our side.
                            match sdp_session.mid_dialog(&request.body, request.method == rsipstack::sip::Method::Update) {
                                Ok(done) => {
                                    if let Some(n) = done.changed {
                                        held.send_replace(n.holds());
                                        let _ = commands.send(MediaCommand::Renegotiated(n));
                                    }
                                    let headers = done.body.is_some().then(|| vec![Header::ContentType("application/sdp".into())]);
                                    let _ = handle
                                        .respond(rsipstack::sip::StatusCode::OK, headers, done.body.map(String::into_bytes))
                                        .await;
                                }
                                Err(_) => {
                                    let _ = handle.reply(rsipstack::sip::StatusCode::NotAcceptableHere).await;
                                }
                            }
                        }
                        Some(DialogState::Options(_, _, handle)) => {
                            let _ = handle.reply(rsipstack::sip::StatusCode::OK).await;
                        }
                        Some(DialogState::Refer(_, request, handle)) => {
                            // A blind transfer (RFC 3515): the caller is ours to move, so
                            // it is accepted and reported done at once; the daemon then
                            // ends this leg and offers the caller to the target. Nothing
                            // of it is ever relayed to the caller's side.
                            match crate::identity::refer_target(&request) {
                                Ok(target) if transfer.borrow().is_none() => {
                                    let _ = handle.reply(rsipstack::sip::StatusCode::Accepted).await;
                                    let _ = dialog
                                        .notify_refer(rsipstack::sip::StatusCode::OK, "terminated;reason=noresource")
                                        .await;
                                    transfer.send_replace(Some(target));
                                }
                                Ok(_) => {
                                    let _ = handle.reply(rsipstack::sip::StatusCode::RequestPending).await;
                                }
                                Err(_) => {
                                    let _ = handle.reply(rsipstack::sip::StatusCode::BadRequest).await;
                                }
                            }
                        }
                        Some(
                            DialogState::Message(_, _, handle)
                            | DialogState::Notify(_, _, handle)
                            | DialogState::Info(_, _, handle)
                            | DialogState::Publish(_, _, handle),
                        ) => {
                            let _ = handle.reply(rsipstack::sip::StatusCode::MethodNotAllowed).await;
                        }
                        Some(_) => {}
                    },
                    _ = hangup.cancelled() => {
                        break (format!("{:?}", TerminatedReason::UacBye), true);
                    }
                    _ = silent.cancelled() => {
                        break ("media timeout".into(), true);
                    }
                    _ = shared.end_all.cancelled() => {
                        break ("shutdown".into(), true);
                    }
                }
            };
            // The leg is over for the call at once: the caller must not wait on a
            // BYE to a phone that may be gone (its retransmissions last 32 s).
            stop_media.cancel();
            let _ = media.await;
            ended.cancel();
            if send_bye {
                let _ = tokio::time::timeout(crate::server::BYE_PATIENCE, dialog.bye()).await;
            }
            shared.dialogs.remove_dialog(&dialog.id());
            debug!(why, "advisor leg ended");
        });
        Ok(leg)
    }
}
