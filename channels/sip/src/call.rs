//! A call as the daemon sees it: who is calling, their keypad, a way to speak to them,
//! and the end of the call.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::Frame;
use crate::g711::Codec;
use crate::media::MediaCommand;

/// The caller's identity as signalled (P-Asserted-Identity, else From).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerId {
    /// The user part as signalled, e.g. `+447700900123` or `07700900123`.
    Number(String),
    /// Anonymous, or Privacy: id.
    Withheld,
}

#[derive(Debug, Clone)]
pub struct CallInfo {
    /// Unique per dialog (Call-ID and both tags): the contact's idempotence key and
    /// the recording's link to it.
    pub key: String,
    /// The SIP Call-ID, for log lines.
    pub call_id: String,
    pub caller: CallerId,
    /// The number or user the caller dialled.
    pub called: String,
    pub codec: Codec,
    pub answered_at: SystemTime,
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallEnded {
    CallerHungUp,
    WeHungUp,
    MaxDuration,
    /// The caller sent no audio for `sip.media_timeout_seconds`.
    MediaTimeout,
    /// The session timer ran out: the caller's refresh never came, or ours failed.
    SessionExpired,
    Shutdown,
}

impl CallEnded {
    /// For metrics.
    pub fn label(self) -> &'static str {
        match self {
            CallEnded::CallerHungUp => "caller_hung_up",
            CallEnded::WeHungUp => "completed",
            CallEnded::MaxDuration => "max_duration",
            CallEnded::MediaTimeout => "media_timeout",
            CallEnded::SessionExpired => "session_expired",
            CallEnded::Shutdown => "shutdown",
        }
    }
}

/// How a bridge ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bridged {
    /// The caller's side ended (they hung up, or the call was ended).
    CallerLeft(CallEnded),
    /// The leg ended (the advisor hung up): the caller is still there.
    LegEnded,
    /// The advisor transferred the caller (a blind REFER) to this username or
    /// service; their leg is ended, the caller is still there.
    Transferred(String),
}

/// Receives both directions of a call's audio, one 20 ms frame at a time, in real
/// time: the caller's (left) and what the daemon sent (right).
pub trait FrameSink: Send + 'static {
    fn frame(&mut self, caller: &Frame, sent: &Frame);
}

/// The daemon's part of a call.
pub trait CallHandler: Send + Sync + 'static {
    /// Where to record this call; asked before its audio starts.
    fn recorder(&self, info: &CallInfo) -> Option<Box<dyn FrameSink>>;
    /// Runs the call (greeting, menus, routing). Called once the call is answered.
    fn handle(&self, call: Call) -> Pin<Box<dyn Future<Output = ()> + Send>>;
    /// Whether new calls can be taken now (asked before answering; no: 503).
    fn taking_calls(&self) -> bool {
        true
    }
}

pub struct Call {
    pub info: CallInfo,
    /// Whether the caller has put us on hold (a re-INVITE).
    pub(crate) held: tokio::sync::watch::Receiver<bool>,
    pub(crate) dialer: crate::leg::Dialer,
    /// Keys the caller pressed (RFC 4733 or SIP INFO). Behind a lock so that a
    /// bridge, which borrows the call shared, can pass them to the advisor.
    pub(crate) digits: tokio::sync::Mutex<mpsc::Receiver<char>>,
    pub(crate) media: mpsc::UnboundedSender<MediaCommand>,
    pub(crate) hangup: CancellationToken,
    pub(crate) ended: CancellationToken,
    pub(crate) reason: Arc<Mutex<Option<CallEnded>>>,
}

impl Call {
    fn end_reason(&self) -> CallEnded {
        self.reason
            .lock()
            .expect("not poisoned")
            .unwrap_or(CallEnded::CallerHungUp)
    }

    /// Plays `audio` (8 kHz linear) to the caller; returns when it has been sent.
    pub async fn play(&self, audio: Arc<[i16]>) -> Result<(), CallEnded> {
        let (done, finished) = oneshot::channel();
        if self.media.send(MediaCommand::Play(audio, done)).is_err() {
            return Err(self.end_reason());
        }
        tokio::select! {
            r = finished => r.map_err(|_| self.end_reason()),
            _ = self.ended.cancelled() => Err(self.end_reason()),
        }
    }

    /// Plays `audio` unless the caller presses a key first; returns that key.
    pub async fn play_interruptible(
        &mut self,
        audio: Arc<[i16]>,
    ) -> Result<Option<char>, CallEnded> {
        let (done, finished) = oneshot::channel();
        if self.media.send(MediaCommand::Play(audio, done)).is_err() {
            return Err(self.end_reason());
        }
        tokio::select! {
            r = finished => r.map(|_| None).map_err(|_| self.end_reason()),
            d = self.digits.get_mut().recv() => {
                let _ = self.media.send(MediaCommand::StopPlaying);
                d.map(Some).ok_or_else(|| self.end_reason())
            }
            _ = self.ended.cancelled() => Err(self.end_reason()),
        }
    }

    /// The next key pressed, or `None` after `timeout`.
    pub async fn next_digit(&mut self, timeout: Duration) -> Result<Option<char>, CallEnded> {
        tokio::select! {
            d = self.digits.get_mut().recv() => d.map(Some).ok_or_else(|| self.end_reason()),
            _ = tokio::time::sleep(timeout) => Ok(None),
            _ = self.ended.cancelled() => Err(self.end_reason()),
        }
    }

    /// Throws away keys pressed so far (before asking a new question).
    pub fn forget_digits(&mut self) {
        while self.digits.get_mut().try_recv().is_ok() {}
    }

    /// Rings an advisor's phones, all at once, for at most `ring` (the caller hears
    /// what is playing); the first to answer is the leg (see [`crate::Dialer::ring`]).
    pub async fn dial(
        &self,
        phones: &[crate::leg::DialTarget],
        ring: Duration,
    ) -> Result<crate::leg::Leg, crate::leg::DialFailure> {
        self.dialer.ring(phones, ring).await
    }

    /// Joins the caller and `leg` until one of them hangs up; the caller's recording
    /// goes on with the leg's audio as the daemon's side. Whatever was playing to the
    /// caller stops. While either side holds the other (a re-INVITE), the one held
    /// hears `music`, continuing where it left off. Keys the caller presses while
    /// they talk are sent on to the advisor's phone (see [`crate::dtmf::KeyPress`]).
    pub async fn bridge(&self, leg: &crate::leg::Leg, music: Arc<[i16]>) -> Bridged {
        let mut caller_held = self.held.clone();
        let mut leg_held = leg.held.clone();
        let mut transfer = leg.transfer.clone();
        let mut digits = self.digits.lock().await;
        // Keys pressed while waiting were not meant for the advisor.
        while digits.try_recv().is_ok() {}
        let _ = self.media.send(MediaCommand::StopPlaying);
        let outcome = loop {
            let by_caller = *caller_held.borrow_and_update();
            let by_leg = *leg_held.borrow_and_update();
            if by_caller || by_leg {
                let _ = self.media.send(MediaCommand::Unbridge);
                let _ = leg.media.send(MediaCommand::Unbridge);
                // The held side hears the music; the side that holds hears nothing.
                let (listener, holder) = if by_leg {
                    (&self.media, &leg.media)
                } else {
                    (&leg.media, &self.media)
                };
                let _ = listener.send(MediaCommand::PlayLoop(music.clone()));
                let _ = holder.send(MediaCommand::StopPlaying);
            } else {
                let (caller_end, leg_end) = crate::media::BridgeEnd::pair();
                let _ = self.media.send(MediaCommand::Bridge(caller_end));
                let _ = leg.media.send(MediaCommand::Bridge(leg_end));
            }
            // Until a hold changes who hears what, or the bridge ends.
            let ended = loop {
                tokio::select! {
                    _ = self.ended.cancelled() => break Some(Bridged::CallerLeft(self.end_reason())),
                    _ = leg.ended() => break Some(Bridged::LegEnded),
                    Ok(()) = transfer.changed() => {
                        if let Some(target) = transfer.borrow_and_update().clone() {
                            break Some(Bridged::Transferred(target));
                        }
                    }
                    _ = caller_held.changed() => break None,
                    _ = leg_held.changed() => break None,
                    Some(d) = digits.recv() => {
                        if !(by_caller || by_leg) {
                            let _ = leg.media.send(MediaCommand::SendDigit(d));
                        }
                    }
                }
            };
            if let Some(outcome) = ended {
                break outcome;
            }
        };
        for media in [&self.media, &leg.media] {
            let _ = media.send(MediaCommand::Unbridge);
            let _ = media.send(MediaCommand::StopPlaying);
        }
        outcome
    }

    /// Ends the call with a BYE and waits until it has ended.
    pub async fn hang_up(&self) -> CallEnded {
        self.hangup.cancel();
        self.ended().await
    }

    /// Waits for the end of the call: after this, no more audio reaches the recorder.
    pub async fn ended(&self) -> CallEnded {
        self.ended.cancelled().await;
        self.end_reason()
    }
}
