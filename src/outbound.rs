//! Messages the council sends. Every text goes through here, so the rules hold for
//! all of them: never to a number that has opted out (STOP), never without the
//! consent its purpose needs, always recorded, on the request's timeline when it is
//! about one, whatever happened to it.

use contactd_sms::{Credentials, MessageStatus, OutboundSms, SendError, TwilioClient};

use crate::configuration::Settings;
use crate::domain::message::{MessagePurpose, SmsMessage};
use crate::domain::{Actor, PhoneNumber};
use crate::store::sms::NewMessage;
use crate::store::{Store, StoreError};

#[derive(Clone)]
pub struct Outbound {
    store: Store,
    sms: Option<SmsSender>,
}

#[derive(Clone)]
struct SmsSender {
    client: TwilioClient,
    from: Option<String>,
    messaging_service_sid: Option<String>,
    status_callback: String,
    validity_period: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("the SMS channel is not configured")]
    SmsOff,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Status "pending": recorded, not yet answered by Twilio.
const PENDING: &str = "pending";

impl Outbound {
    pub fn new(store: Store, settings: &Settings) -> Result<Self, String> {
        let s = &settings.sms;
        let sms = if s.enabled() {
            let credentials = if s.api_key_sid.is_empty() {
                Credentials {
                    username: s.account_sid.clone(),
                    password: s.auth_token.expose().to_string(),
                }
            } else {
                Credentials {
                    username: s.api_key_sid.clone(),
                    password: s.api_key_secret.expose().to_string(),
                }
            };
            let client = TwilioClient::new(&s.api_base, &s.account_sid, credentials)?;
            let base = settings.http.public_url.as_str().trim_end_matches('/');
            Some(SmsSender {
                client,
                from: (!s.from.is_empty()).then(|| s.from.clone()),
                messaging_service_sid: (!s.messaging_service_sid.is_empty())
                    .then(|| s.messaging_service_sid.clone()),
                status_callback: format!("{base}/webhooks/twilio/status"),
                validity_period: s.validity_period_seconds,
            })
        } else {
            None
        };
        Ok(Outbound { store, sms })
    }

    pub async fn send_sms(
        &self,
        actor: &Actor,
        to: &PhoneNumber,
        body: &str,
        purpose: MessagePurpose,
        request_id: Option<&str>,
        customer_id: Option<&str>,
    ) -> Result<SmsMessage, OutboundError> {
        let sms = self.sms.as_ref().ok_or(OutboundError::SmsOff)?;
        let held_back = if self.store.sms_suppressed(to).await? {
            Some(MessageStatus::Suppressed)
        } else {
            match (purpose.consent(), customer_id) {
                (None, _) => None,
                (Some(c), Some(id)) if self.store.consent_given(id, c).await? => None,
                (Some(_), _) => Some(MessageStatus::NoConsent),
            }
        };
        let (status, rank) = match held_back {
            Some(s) => (s.as_str(), s.rank()),
            None => (PENDING, 0),
        };
        let message = self
            .store
            .record_message(
                actor,
                &NewMessage {
                    request_id,
                    customer_id,
                    to,
                    body,
                    purpose,
                    status,
                    status_rank: rank,
                },
            )
            .await?;
        if let Some(why) = held_back {
            tracing::info!(message = %message.id, status = why.as_str(), "text not sent");
            metrics::counter!("contactd_sms_sent_total", "outcome" => why.as_str()).increment(1);
            return Ok(message);
        }
        let outbound = OutboundSms {
            to: to.as_str(),
            from: sms.from.as_deref(),
            messaging_service_sid: sms.messaging_service_sid.as_deref(),
            body,
            status_callback: Some(&sms.status_callback),
            validity_period: Some(sms.validity_period),
        };
        let result = sms.client.send(&outbound).await;
        let outcome = match &result {
            Ok(_) => "sent",
            Err(SendError::OptedOut) => "opted_out",
            Err(_) => "failed",
        };
        metrics::counter!("contactd_sms_sent_total", "outcome" => outcome).increment(1);
        Ok(match result {
            Ok(sent) => {
                self.store
                    .message_handed_over(
                        &message.id,
                        &sent.sid,
                        sent.status.as_str(),
                        sent.status.rank(),
                    )
                    .await?
            }
            Err(SendError::OptedOut) => {
                // Twilio knows of a STOP we missed: believe it.
                self.store
                    .set_sms_suppressed(
                        &Actor::System,
                        to,
                        true,
                        "Twilio 21610: recipient opted out",
                    )
                    .await?;
                let s = MessageStatus::Suppressed;
                self.store
                    .message_failed(
                        &message.id,
                        s.as_str(),
                        s.rank(),
                        Some(contactd_sms::client::OPTED_OUT),
                    )
                    .await?
            }
            Err(SendError::Rejected { code, .. }) => {
                tracing::warn!(message = %message.id, ?code, "Twilio refused a text");
                let s = MessageStatus::Failed;
                self.store
                    .message_failed(&message.id, s.as_str(), s.rank(), code)
                    .await?
            }
            Err(e @ SendError::Unavailable { .. }) => {
                tracing::error!(message = %message.id, error = %e, "text not sent");
                let s = MessageStatus::Failed;
                self.store
                    .message_failed(&message.id, s.as_str(), s.rank(), None)
                    .await?
            }
            Err(SendError::Unknown(e)) => {
                // Perhaps sent: kept as "unknown" for someone to check, never resent blind.
                tracing::error!(message = %message.id, error = %e, "no answer from Twilio");
                self.store
                    .message_failed(&message.id, "unknown", 0, None)
                    .await?
            }
        })
    }
}
