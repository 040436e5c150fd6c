//! The voice channel's business: what happens on a call. The SIP crate answers and
//! carries the audio; here the caller hears the recording notice, keys a reference
//! or picks a service, and the call goes through intake like every other contact.
//!
//! - [`prompts`]: the recorded prompts (built in, or a directory of WAVs)
//! - [`ivr`]: the conversation: notice, reference or service menu, retries
//! - [`queue`]: after the menu, waiting for an advisor of the service (music on
//!   hold, one offer at a time, the bridge)

pub mod ivr;
pub mod prompts;
pub mod queue;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use std::time::Duration;

use contactd_sip::{
    Call, CallHandler, CallInfo, CallerId, FrameSink, SipConfig, SipListen, SipServer, SipStatus,
};
use tokio_util::task::TaskTracker;

use super::{Hub, Lifecycle};
use crate::configuration::{IvrSettings, Settings, WhenUnrecordable};
use crate::domain::{Channel, LongText, PhoneNumber, ShortText, Timestamp};
use crate::intake::{InboundContact, Intake, IntakeOutcome, Origin, Sender, ThreadHints};
use crate::outbound::Recipient;
use crate::recordings::{ActiveRecording, Recorder};
use crate::startup::StartupError;
use crate::store::Store;
use crate::store::callbacks::{CallbackKind, NewCallback};
use prompts::Prompts;
use queue::{Queues, Waited};

/// The voice channel as startup runs it: the SIP server, and the calls it hands over.
#[derive(Clone)]
pub struct VoiceChannel {
    server: Arc<SipServer>,
    calls: CallHandling,
    /// Stops the checks of advisors' phones.
    checks: tokio_util::sync::CancellationToken,
}

impl VoiceChannel {
    pub fn listening(&self) -> &[SipListen] {
        self.server.listening()
    }

    pub fn status(&self) -> SipStatus {
        self.server.status()
    }
}

impl Lifecycle for VoiceChannel {
    const NAME: &'static str = "sip";

    async fn start(
        hub: &Hub,
        settings: &Settings,
    ) -> Result<Result<Self, &'static str>, StartupError> {
        if !settings.sip.enabled() {
            return Ok(Err("no trunks configured"));
        }
        // A recordings directory that cannot be written is reported (not ready), not
        // fatal: calls are taken as `recordings.when_unavailable` says.
        if let Some(problem) = hub.recorder.check().await {
            tracing::error!(%problem, "recordings cannot be written");
        }
        let prompts = Prompts::load(&settings.ivr.prompts_dir)?;
        let music = prompts::music_on_hold(&settings.queues.music_on_hold)?;
        let queues = Queues::new(
            &settings.queues,
            hub.advisors.clone(),
            hub.store.clone(),
            music,
            prompts.clone(),
        );
        let calls = CallHandling::new(
            hub.store.clone(),
            hub.intake.clone(),
            hub.recorder.clone(),
            prompts,
            queues,
            settings.ivr.clone(),
            settings.recordings.when_unavailable,
        );
        let server = SipServer::start(
            sip_config(settings)?,
            Arc::new(calls.clone()),
            settings.sip.registrar.then(|| registrar(hub, settings)),
            hub.stopping.clone(),
        )
        .await?;
        for l in server.listening() {
            tracing::info!("sip listening on {:?} {}", l.transport, l.addr);
        }
        let checks = tokio_util::sync::CancellationToken::new();
        if settings.sip.registrar && settings.sip.phone_check_seconds > 0 {
            tokio::spawn(check_phones(
                hub.advisors.clone(),
                server.dialer(),
                Duration::from_secs(settings.sip.phone_check_seconds),
                checks.clone(),
            ));
        }
        Ok(Ok(VoiceChannel {
            server: Arc::new(server),
            calls,
            checks,
        }))
    }

    fn stop_accepting(&self) {
        self.checks.cancel();
        self.server.stop_accepting();
    }

    fn drain(&self, grace: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.server.shutdown(grace).await;
            self.calls.wait_for_calls().await;
            tracing::info!("calls ended and their recordings finished");
        })
    }
}

/// Every `every`, each registered phone is asked whether it is there (OPTIONS), so
/// that one gone since it registered ("ghost agents") is not rung; a phone gets
/// `PHONE_PATIENCE` to answer, and `PHONES_AT_ONCE` are asked at a time.
async fn check_phones(
    advisors: crate::advisors::Advisors,
    dialer: contactd_sip::Dialer,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    const PHONE_PATIENCE: Duration = Duration::from_secs(2);
    const PHONES_AT_ONCE: usize = 64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = advisors.check_phones(&dialer, PHONE_PATIENCE, PHONES_AT_ONCE) => {}
        }
    }
}

/// Advisors' phones register with the advisors' credentials and bindings.
fn registrar(
    hub: &Hub,
    settings: &Settings,
) -> (
    Arc<dyn contactd_sip::Registrar>,
    contactd_sip::RegistrarPolicy,
) {
    let s = &settings.sip;
    let policy = contactd_sip::RegistrarPolicy {
        realm: s.realm.clone(),
        min_expires: s.register_min_seconds,
        max_expires: s.register_max_seconds,
        failures_burst: s.auth_failures_per_source,
        failure_refill: Duration::from_secs(60),
        nonce_lifetime: Duration::from_secs(300),
        registers_per_second: s.registers_per_second,
    };
    (Arc::new(hub.advisors.clone()), policy)
}

fn sip_config(settings: &Settings) -> Result<SipConfig, contactd_sip::SipError> {
    let s = &settings.sip;
    let tls = match (&s.tls_certificate, &s.tls_key) {
        (Some(chain), Some(key)) => {
            let read = |path: &std::path::Path| {
                std::fs::read(path).map_err(|e| {
                    contactd_sip::SipError::Tls(format!("cannot read {}: {e}", path.display()))
                })
            };
            Some(
                contactd_sip::TlsIdentity::from_pem(&read(chain)?, &read(key)?)
                    .map_err(contactd_sip::SipError::Tls)?,
            )
        }
        _ => None,
    };
    Ok(SipConfig {
        listen: s.listen.iter().map(|l| l.0).collect(),
        trunks: s.trunks.iter().map(|t| t.0).collect(),
        rtp_ports: (s.rtp_ports.0, s.rtp_ports.1),
        media_ip: s.media_address,
        max_calls: s.max_calls,
        max_call_duration: Duration::from_secs(s.max_call_seconds),
        ring: Duration::from_millis(s.ring_ms),
        media_timeout: Duration::from_secs(s.media_timeout_seconds),
        ack_timeout: Duration::from_secs(s.ack_timeout_seconds),
        session_min_seconds: s.session_min_seconds,
        session_max_seconds: s.session_max_seconds,
        invites_per_second: s.invites_per_second,
        max_pending_per_source: s.max_pending_per_source,
        tcp: contactd_sip::TcpLimits {
            max_connections: s.max_tcp_connections,
            max_per_source: s.max_tcp_connections_per_source,
            idle: Duration::from_secs(s.tcp_idle_seconds),
        },
        options_from_anywhere: s.options_from_anywhere,
        tls,
    })
}

/// What the SIP server hands each answered call to.
#[derive(Clone)]
struct CallHandling {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    intake: Intake,
    recorder: Recorder,
    prompts: Prompts,
    queues: Queues,
    ivr: IvrSettings,
    when_unrecordable: WhenUnrecordable,
    /// Recordings started for calls whose handler has not yet picked them up.
    starting: Mutex<HashMap<String, ActiveRecording>>,
    calls: TaskTracker,
}

impl CallHandling {
    fn new(
        store: Store,
        intake: Intake,
        recorder: Recorder,
        prompts: Prompts,
        queues: Queues,
        ivr: IvrSettings,
        when_unrecordable: WhenUnrecordable,
    ) -> Self {
        CallHandling {
            inner: Arc::new(Inner {
                store,
                intake,
                recorder,
                prompts,
                queues,
                ivr,
                when_unrecordable,
                starting: Mutex::new(HashMap::new()),
                calls: TaskTracker::new(),
            }),
        }
    }

    /// Waits until every call's handler has finished (recordings finished and linked).
    async fn wait_for_calls(&self) {
        self.inner.calls.close();
        self.inner.calls.wait().await;
    }
}

impl CallHandler for CallHandling {
    fn recorder(&self, info: &CallInfo) -> Option<Box<dyn FrameSink>> {
        let key = external_id(&info.key);
        match self.inner.recorder.begin(key.as_str(), info.answered_at) {
            Ok(recording) => {
                let sink = self.inner.recorder.sink(&recording);
                self.inner
                    .starting
                    .lock()
                    .expect("not poisoned")
                    .insert(info.key.clone(), recording);
                Some(sink)
            }
            Err(e) => {
                tracing::error!(call_id = %info.call_id, error = %e, "cannot record this call");
                None
            }
        }
    }

    fn taking_calls(&self) -> bool {
        self.inner.when_unrecordable == WhenUnrecordable::Unrecorded
            || self.inner.recorder.health().problem().is_none()
    }

    fn handle(&self, call: Call) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let inner = self.inner.clone();
        Box::pin(
            self.inner
                .calls
                .track_future(async move { inner.run(call).await }),
        )
    }
}

impl Inner {
    async fn run(&self, mut call: Call) {
        let call_id = call.info.call_id.clone();
        let recording = self
            .starting
            .lock()
            .expect("not poisoned")
            .remove(&call.info.key);
        if let Some(r) = &recording
            && let Err(e) = self.recorder.register(r).await
        {
            tracing::error!(%call_id, error = %e, "cannot register the recording");
        }

        let routing = ivr::converse(
            &mut call,
            &self.prompts,
            &self.ivr,
            &self.store,
            recording.is_some(),
        )
        .await;
        let from = sender(&call.info.caller);
        // A caller on a mobile gets the new request's reference by text as well as
        // read back (through the outbox, after intake commits).
        let acknowledge = match &from {
            Sender::Phone(p) if p.is_uk_mobile() => Some(Recipient::Sms(p.clone())),
            _ => None,
        };
        let contact = InboundContact {
            channel: Channel::Phone,
            origin: Origin::Channel,
            external_id: external_id(&call.info.key),
            from,
            to: ShortText::truncate_from(&call.info.called)
                .unwrap_or_else(|| ShortText::parse("unknown").expect("valid")),
            received_at: Timestamp::from_system_time(call.info.answered_at),
            content: LongText::truncate_from(&routing.describe()).expect("non-empty"),
            reference: routing.reference,
            service: routing.service.clone(),
            thread: ThreadHints {
                // The caller id came from a trunk, trusted by its source address.
                sender_proven: true,
                ..ThreadHints::default()
            },
            acknowledge,
            message: None,
            original: None,
            attachments: Vec::new(),
            needs_review: false,
        };
        let mut contact_id = None;
        match self.intake.receive(&contact).await {
            Ok(outcome) => {
                contact_id = Some(outcome.contact_id.clone());
                tracing::info!(%call_id, reference = %outcome.reference, "call logged");
                let recording_id = recording.as_ref().map(|r| r.id.as_str());
                self.after_logging(&mut call, &routing, &outcome, recording_id)
                    .await;
            }
            Err(e) => {
                tracing::error!(%call_id, error = %e, "intake failed for a call");
                call.hang_up().await;
            }
        }
        call.ended().await;
        // The legs with advisors go into the recording's own metadata.
        let legs = match &contact_id {
            Some(id) => self.store.legs_of_call(id).await.unwrap_or_else(|e| {
                tracing::error!(%call_id, error = %e, "the call's legs cannot be read for its recording");
                Vec::new()
            }),
            None => Vec::new(),
        };
        if let Some(r) = recording
            && let Err(e) = self.recorder.finish(r, &legs).await
        {
            tracing::error!(%call_id, error = %e, "cannot finish the recording");
        }
    }
}

impl Inner {
    /// After intake: the new reference read back, then an advisor (if the service
    /// has a queue), a voicemail when none answers, or goodbye.
    async fn after_logging(
        &self,
        call: &mut Call,
        routing: &ivr::Routing,
        outcome: &IntakeOutcome,
        recording_id: Option<&str>,
    ) {
        if routing.hung_up {
            return;
        }
        // A new request's reference is read back, digit by digit.
        if outcome.opened_request
            && call
                .play(self.prompts.reference(outcome.reference))
                .await
                .is_err()
        {
            return;
        }
        if let Some(service) = routing.service.as_ref().filter(|s| self.queues.serves(s)) {
            let number = phone_number(&call.info.caller);
            let who = queue::Caller {
                contact_id: &outcome.contact_id,
                reference: outcome.reference.to_string(),
                customer_id: outcome.customer_id.as_deref(),
                number: number.as_deref(),
                entered: self.queues.entered(number.as_deref()).await,
            };
            match self.queues.wait(call, service, &who).await {
                Waited::CallerLeft => return,
                Waited::AdvisorHungUp => {}
                Waited::NoAdvisor => {
                    return self.voicemail(call, outcome, recording_id, &who).await;
                }
                Waited::Closed => {
                    if call.play(self.prompts.closed.clone()).await.is_err() {
                        return;
                    }
                    return self.voicemail(call, outcome, recording_id, &who).await;
                }
            }
        }
        if call.play(self.prompts.logged.clone()).await.is_ok() {
            call.hang_up().await;
        }
    }

    /// No advisor: the caller leaves a message after the tone (it is in the call's
    /// recording; the callback points at where), or presses 1 to be called back on
    /// their number. Either way staff owe them a callback, on the request.
    async fn voicemail(
        &self,
        call: &mut Call,
        outcome: &IntakeOutcome,
        recording_id: Option<&str>,
        who: &queue::Caller<'_>,
    ) {
        let number = who.number;
        call.forget_digits();
        let kind = match call
            .play_interruptible(self.prompts.voicemail.clone())
            .await
        {
            Err(_) => return,
            Ok(Some('1')) if number.is_some() => CallbackKind::Callback,
            Ok(_) => CallbackKind::Voicemail,
        };
        let offset = |call: &Call| {
            std::time::SystemTime::now()
                .duration_since(call.info.answered_at)
                .map_or(0, |d| d.as_millis() as i64)
        };
        let (voicemail_ms, goodbye) = match kind {
            CallbackKind::Callback => (None, self.prompts.callback_booked.clone()),
            CallbackKind::Voicemail => {
                let _ = call.play(queue::beep()).await;
                let from = offset(call);
                // Until they hang up, press #, or reach the limit.
                let until = tokio::time::Instant::now() + self.queues.voicemail_limit();
                loop {
                    let left = until.saturating_duration_since(tokio::time::Instant::now());
                    match call.next_digit(left).await {
                        Ok(Some(d)) if d != '#' => continue,
                        _ => break,
                    }
                }
                (
                    Some((from, offset(call))),
                    self.prompts.voicemail_saved.clone(),
                )
            }
        };
        let recorded = self
            .store
            .record_callback(&NewCallback {
                kind,
                request_id: &outcome.request_id,
                contact_id: &outcome.contact_id,
                number,
                recording_id,
                voicemail_ms,
                queued_at: who.entered,
            })
            .await;
        if let Err(e) = recorded {
            tracing::error!(call_id = %call.info.call_id, error = %e, "a callback could not be stored");
        }
        if call.play(goodbye).await.is_ok() {
            call.hang_up().await;
        }
    }
}

/// A call's idempotence key, from its dialog key (Call-ID and tags); a long one is
/// hashed to fit, keeping it unique.
fn external_id(dialog_key: &str) -> ShortText {
    ShortText::key("", dialog_key)
}

/// The caller's number in E.164, when they gave one that parses.
fn phone_number(caller: &CallerId) -> Option<String> {
    match sender(caller) {
        Sender::Phone(p) => Some(p.as_str().to_string()),
        _ => None,
    }
}

fn sender(caller: &CallerId) -> Sender {
    match caller {
        CallerId::Number(n) => match PhoneNumber::parse(n) {
            Ok(p) => Sender::Phone(p),
            Err(_) => Sender::Unknown(n.chars().take(64).collect()),
        },
        CallerId::Withheld => Sender::Unknown("withheld".into()),
    }
}
