//! The voice channel's business: what happens on a call. The SIP crate answers and
//! carries the audio; here the caller hears the recording notice, keys a reference
//! or picks a service, and the call goes through intake like every other contact.
//!
//! - [`prompts`]: the recorded prompts (built in, or a directory of WAVs)
//! - [`ivr`]: the conversation: notice, reference or service menu, retries

pub mod ivr;
pub mod prompts;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use contactd_sip::{Call, CallHandler, CallInfo, CallerId, FrameSink};
use tokio_util::task::TaskTracker;

use crate::configuration::{IvrSettings, WhenUnrecordable};
use crate::domain::{Channel, LongText, PhoneNumber, ShortText, Timestamp};
use crate::intake::{InboundContact, Intake, Origin, Sender};
use crate::recordings::{ActiveRecording, Recorder};
use crate::store::Store;
use prompts::Prompts;

#[derive(Clone)]
pub struct VoiceChannel {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    intake: Intake,
    recorder: Recorder,
    prompts: Prompts,
    ivr: IvrSettings,
    when_unrecordable: WhenUnrecordable,
    /// Recordings started for calls whose handler has not yet picked them up.
    starting: Mutex<HashMap<String, ActiveRecording>>,
    calls: TaskTracker,
}

impl VoiceChannel {
    pub fn new(
        store: Store,
        intake: Intake,
        recorder: Recorder,
        prompts: Prompts,
        ivr: IvrSettings,
        when_unrecordable: WhenUnrecordable,
    ) -> Self {
        VoiceChannel {
            inner: Arc::new(Inner {
                store,
                intake,
                recorder,
                prompts,
                ivr,
                when_unrecordable,
                starting: Mutex::new(HashMap::new()),
                calls: TaskTracker::new(),
            }),
        }
    }

    /// Waits until every call's handler has finished (recordings finished and linked).
    pub async fn wait_for_calls(&self) {
        self.inner.calls.close();
        self.inner.calls.wait().await;
    }
}

impl CallHandler for VoiceChannel {
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
        let contact = InboundContact {
            channel: Channel::Phone,
            origin: Origin::Channel,
            external_id: external_id(&call.info.key),
            from: sender(&call.info.caller),
            to: ShortText::truncate_from(&call.info.called)
                .unwrap_or_else(|| ShortText::parse("unknown").expect("valid")),
            received_at: Timestamp::from_system_time(call.info.answered_at),
            content: LongText::truncate_from(&routing.describe()).expect("non-empty"),
            reference: routing.reference,
            service: routing.service.clone(),
        };
        match self.intake.receive(&contact).await {
            Ok(outcome) => {
                tracing::info!(%call_id, reference = %outcome.reference, "call logged");
                // A new request's reference is read back, digit by digit, before goodbye.
                let readback = outcome
                    .opened_request
                    .then(|| self.prompts.reference(outcome.reference));
                let told = match readback {
                    Some(audio) if !routing.hung_up => call.play(audio).await.is_ok(),
                    _ => true,
                };
                if !routing.hung_up && told && call.play(self.prompts.logged.clone()).await.is_ok()
                {
                    call.hang_up().await;
                }
            }
            Err(e) => {
                tracing::error!(%call_id, error = %e, "intake failed for a call");
                call.hang_up().await;
            }
        }
        call.ended().await;
        if let Some(r) = recording
            && let Err(e) = self.recorder.finish(r).await
        {
            tracing::error!(%call_id, error = %e, "cannot finish the recording");
        }
    }
}

/// A call's idempotence key, from its dialog key (Call-ID and tags); a long one is
/// hashed to fit, keeping it unique.
fn external_id(dialog_key: &str) -> ShortText {
    ShortText::key("", dialog_key)
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
