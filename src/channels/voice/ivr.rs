//! The conversation with a caller. The recording notice is played in full first (the
//! caller must hear it); then "key your reference and #, or * for a new request".
//! A mistyped reference (bad check digit) or one nobody has is said so and asked
//! again; after the configured attempts the call goes to the default service, so that
//! nobody is left in a loop.

use std::time::Duration;

use contactd_sip::Call;

use crate::configuration::{IvrSettings, ServiceCode};
use crate::domain::Reference;
use crate::store::Store;

use super::prompts::Prompts;

/// Where the caller asked to go.
#[derive(Debug, Default)]
pub struct Routing {
    pub reference: Option<Reference>,
    pub service: Option<ServiceCode>,
    /// The caller hung up before the conversation finished.
    pub hung_up: bool,
    /// The call could not be recorded (so the caller was not told it would be).
    pub unrecorded: bool,
    keyed: String,
}

impl Routing {
    /// The contact's content on the timeline.
    pub fn describe(&self) -> String {
        let mut s = String::from("Phone call");
        if let Some(r) = self.reference {
            s.push_str(&format!(": caller keyed reference {r}"));
        } else if let Some(svc) = &self.service {
            s.push_str(&format!(": caller chose {svc} from the menu"));
        } else if !self.keyed.is_empty() {
            s.push_str(&format!(": caller keyed {:?}, not recognised", self.keyed));
        }
        if self.hung_up {
            s.push_str(" (caller hung up before the end of the menu)");
        }
        if self.unrecorded {
            s.push_str(" (not recorded: the recorder was unavailable)");
        }
        s
    }

    fn hung_up(mut self) -> Self {
        self.hung_up = true;
        self
    }
}

/// The most keys a reference can take (`SR-` + up to 15 digits).
const MAX_KEYS: usize = 16;

pub async fn converse(
    call: &mut Call,
    prompts: &Prompts,
    ivr: &IvrSettings,
    store: &Store,
    recorded: bool,
) -> Routing {
    let mut routing = Routing {
        unrecorded: !recorded,
        ..Routing::default()
    };
    let timeout = Duration::from_secs(ivr.digit_timeout_seconds);
    // The caller is told the call is recorded only when it is.
    if recorded && call.play(prompts.recording_notice.clone()).await.is_err() {
        return routing.hung_up();
    }
    for _ in 0..ivr.attempts {
        let first = match ask(call, prompts.main_menu.clone(), timeout).await {
            Err(()) => return routing.hung_up(),
            Ok(None) => {
                if call.play(prompts.not_understood.clone()).await.is_err() {
                    return routing.hung_up();
                }
                continue;
            }
            Ok(Some(d)) => d,
        };
        if first == '*' {
            return match choose_service(call, prompts, ivr, timeout).await {
                Err(()) => routing.hung_up(),
                Ok(service) => {
                    routing.service = service;
                    routing
                }
            };
        }
        let mut keys = String::from(first);
        while !keys.ends_with('#') && keys.len() < MAX_KEYS {
            match call.next_digit(timeout).await {
                Err(_) => return routing.hung_up(),
                Ok(None) => break,
                Ok(Some(d)) => keys.push(d),
            }
        }
        let digits = keys.trim_end_matches('#').to_string();
        routing.keyed = digits.clone();
        let known = match Reference::parse(&digits) {
            Ok(r) => store.request_exists(r).await.unwrap_or(false).then_some(r),
            Err(_) => None,
        };
        if let Some(r) = known {
            routing.reference = Some(r);
            return routing;
        }
        call.forget_digits();
        if call
            .play(prompts.reference_not_recognised.clone())
            .await
            .is_err()
        {
            return routing.hung_up();
        }
    }
    routing
}

/// Plays a question the caller may interrupt with a key; then waits for one.
async fn ask(
    call: &mut Call,
    prompt: std::sync::Arc<[i16]>,
    timeout: Duration,
) -> Result<Option<char>, ()> {
    match call.play_interruptible(prompt).await {
        Err(_) => Err(()),
        Ok(Some(d)) => Ok(Some(d)),
        Ok(None) => call.next_digit(timeout).await.map_err(|_| ()),
    }
}

async fn choose_service(
    call: &mut Call,
    prompts: &Prompts,
    ivr: &IvrSettings,
    timeout: Duration,
) -> Result<Option<ServiceCode>, ()> {
    for _ in 0..ivr.attempts {
        if let Some(key) = ask(call, prompts.service_menu.clone(), timeout).await?
            && let Some(entry) = ivr.menu.iter().find(|e| e.key == key)
        {
            return Ok(Some(entry.service.clone()));
        }
        if call.play(prompts.not_understood.clone()).await.is_err() {
            return Err(());
        }
    }
    Ok(None)
}
