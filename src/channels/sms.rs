//! The SMS channel's business: a text Twilio has signed (or GOV.UK Notify has posted
//! with our bearer token, see [`crate::notify`]) becomes a contact through intake, keywords (STOP, START, HELP) change what we may send, and delivery reports
//! move a message's status forward. The HTTP side (`api::webhooks`) only carries the
//! request here and the answer back.
//!
//! A text joins a request by intake's rules: a reference in it that is the sender's
//! own; else the request of a text we sent them within `sms.reply_window_hours`; else
//! a new request, acknowledged by text through the outbox.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use contactd_sms::webhook::form_params;
use contactd_sms::{InboundSms, Keyword, StatusReport, WebhookError};

use super::{Hub, Lifecycle};
use crate::configuration::{Secret, Settings, SmsProvider};
use crate::domain::{Actor, Channel, LongText, PhoneNumber, Reference, ShortText, Timestamp};
use crate::intake::{InboundContact, Intake, Origin, ReceivedMessage, Sender, ThreadHints};
use crate::outbound::Recipient;
use crate::startup::StartupError;
use crate::store::Store;

/// The SMS channel as the webhooks reach it.
#[derive(Clone)]
pub struct SmsChannel {
    store: Store,
    intake: Intake,
    /// Present when Twilio carries the texts.
    twilio: Option<TwilioAccount>,
    reply_window: Duration,
    help: String,
}

/// What Twilio's webhooks are checked against.
#[derive(Clone)]
struct TwilioAccount {
    auth_token: Secret,
    account_sid: String,
    public_url: String,
}

/// A resident's text, whichever provider carried it.
struct Text<'a> {
    /// The provider's id for it: a retry of the same webhook is the same contact.
    id: &'a str,
    from: &'a str,
    to: &'a str,
    body: &'a str,
    media_urls: &'a [String],
}

/// Why a webhook was not acted on.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The form could not be read, or lacks what Twilio always sends.
    #[error("{0}")]
    Malformed(String),
    /// Not signed by Twilio with our token, or for another account.
    #[error("{0}")]
    Forbidden(String),
    /// Without the bearer token we gave Notify.
    #[error("{0}")]
    Unauthorised(String),
    /// Not stored (the database failed): Twilio retries, and the MessageSid makes
    /// the retry safe.
    #[error("not stored; retry")]
    Unavailable,
}

impl Lifecycle for SmsChannel {
    const NAME: &'static str = "sms";

    async fn start(
        hub: &Hub,
        settings: &Settings,
    ) -> Result<Result<Self, &'static str>, StartupError> {
        let s = &settings.sms;
        if !s.enabled() {
            return Ok(Err("no account configured"));
        }
        let twilio = match s.provider {
            SmsProvider::Twilio => {
                tracing::info!("sms: Twilio account {}", s.account_sid);
                Some(TwilioAccount {
                    auth_token: s.auth_token.clone(),
                    account_sid: s.account_sid.clone(),
                    public_url: settings
                        .http
                        .public_url
                        .as_str()
                        .trim_end_matches('/')
                        .to_string(),
                })
            }
            SmsProvider::Notify => {
                tracing::info!("sms: through GOV.UK Notify");
                None
            }
        };
        Ok(Ok(SmsChannel {
            store: hub.store.clone(),
            intake: hub.intake.clone(),
            twilio,
            reply_window: Duration::from_secs(u64::from(s.reply_window_hours) * 3600),
            help: s.help.clone(),
        }))
    }

    // Texts arrive over HTTP, which stops and drains by itself.
    fn stop_accepting(&self) {}

    fn drain(&self, _grace: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }
}

impl SmsChannel {
    /// Checks the signature over the URL Twilio called (`path_and_query` on our
    /// public URL) and parses the form.
    fn admit<T>(
        &self,
        path_and_query: &str,
        signature: Option<&str>,
        body: &[u8],
        parse: impl FnOnce(&[(String, String)]) -> Result<T, WebhookError>,
        account_of: impl Fn(&T) -> &str,
    ) -> Result<T, Refusal> {
        let Some(twilio) = &self.twilio else {
            return Err(Refusal::Forbidden(
                "texts come through GOV.UK Notify here, not Twilio".into(),
            ));
        };
        let params = form_params(body).map_err(|e| Refusal::Malformed(e.to_string()))?;
        let url = url::Url::parse(&format!("{}{path_and_query}", twilio.public_url))
            .map_err(|_| Refusal::Malformed("not a URL of ours".into()))?;
        contactd_sms::verify(twilio.auth_token.expose(), &url, &params, signature).map_err(
            |e| {
                tracing::warn!(error = %e, "refused a Twilio webhook");
                Refusal::Forbidden(e.to_string())
            },
        )?;
        let parsed = parse(&params).map_err(|e| Refusal::Malformed(e.to_string()))?;
        if account_of(&parsed) != twilio.account_sid {
            return Err(Refusal::Forbidden(
                "not this council's Twilio account".into(),
            ));
        }
        Ok(parsed)
    }

    /// A resident's text. Returns the TwiML answer once the text is stored.
    pub async fn text(
        &self,
        path_and_query: &str,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<String, Refusal> {
        let sms = self.admit(path_and_query, signature, body, InboundSms::parse, |m| {
            &m.account_sid
        })?;
        let answer = self
            .receive(Text {
                id: &sms.message_sid,
                from: &sms.from,
                to: &sms.to,
                body: &sms.body,
                media_urls: &sms.media_urls,
            })
            .await?;
        Ok(contactd_sms::twiml::answer(answer))
    }

    /// A text Notify received for us (its bearer token already checked). Notify has
    /// no answer in its callback, so HELP is recorded but not answered here.
    pub async fn notify_text(&self, t: &contactd_notify::InboundText) -> Result<(), Refusal> {
        let from = t.sender_e164();
        self.receive(Text {
            id: &t.id,
            from: &from,
            to: &t.destination_number,
            body: &t.message,
            media_urls: &[],
        })
        .await
        .map(|_| ())
    }

    /// Stores a text through intake, or acts on a keyword. The answer to send back
    /// (HELP's), if any.
    async fn receive(&self, sms: Text<'_>) -> Result<Option<&str>, Refusal> {
        let sender = PhoneNumber::parse(sms.from).ok();
        if let Some(keyword) = Keyword::of(sms.body) {
            return self.keyword(&sms, keyword, sender).await;
        }
        let contact = self.contact(&sms, sender).map_err(|e| {
            tracing::error!(error = %e, "a text could not be read");
            Refusal::Malformed(e)
        })?;
        match self.intake.receive(&contact).await {
            Ok(_) => Ok(None),
            Err(e) => {
                tracing::error!(error = %e, message_sid = %sms.id, "could not store a text");
                Err(Refusal::Unavailable)
            }
        }
    }

    fn contact(
        &self,
        sms: &Text<'_>,
        sender: Option<PhoneNumber>,
    ) -> Result<InboundContact, String> {
        let mut content = sms.body.trim().to_string();
        for url in sms.media_urls {
            content.push_str(&format!("\n[media] {url}"));
        }
        Ok(InboundContact {
            channel: Channel::Sms,
            origin: Origin::Channel,
            external_id: ShortText::parse(sms.id).map_err(|e| e.to_string())?,
            from: match &sender {
                Some(p) => Sender::Phone(p.clone()),
                None => Sender::Unknown(sms.from.to_string()),
            },
            to: ShortText::truncate_from(sms.to)
                .unwrap_or_else(|| ShortText::parse("unknown").expect("valid")),
            received_at: Timestamp::now(),
            // A body of nothing but control characters cleans down to nothing.
            content: LongText::truncate_from(&content)
                .unwrap_or_else(|| LongText::parse("(empty text)").expect("valid")),
            reference: Reference::find_in(sms.body),
            service: None,
            thread: ThreadHints {
                // The provider vouches for the From it reports (Twilio signs it,
                // Notify's callback carries our token): as proven as a number gets.
                sender_proven: sender.is_some(),
                reply_window: Some(self.reply_window),
                ..ThreadHints::default()
            },
            acknowledge: sender.map(Recipient::Sms),
            message: Some(ReceivedMessage::default()),
            original: None,
            attachments: Vec::new(),
            needs_review: false,
        })
    }

    async fn keyword(
        &self,
        sms: &Text<'_>,
        keyword: Keyword,
        sender: Option<PhoneNumber>,
    ) -> Result<Option<&str>, Refusal> {
        let name = match keyword {
            Keyword::OptOut => "opt_out",
            Keyword::OptIn => "opt_in",
            Keyword::Help => "help",
        };
        let first_time = self
            .store
            .record_keyword(sms.id, sms.from, name)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "could not store a keyword message");
                Refusal::Unavailable
            })?;
        if let (true, Some(number)) = (first_time, &sender) {
            let change = match keyword {
                Keyword::OptOut => Some((true, format!("texted {:?}", sms.body.trim()))),
                Keyword::OptIn => Some((false, format!("texted {:?}", sms.body.trim()))),
                Keyword::Help => None,
            };
            if let Some((suppress, reason)) = change {
                self.store
                    .set_sms_suppressed(&Actor::Channel(Channel::Sms), number, suppress, &reason)
                    .await
                    .map_err(|e| {
                        tracing::error!(error = %e, "could not record an opt-out");
                        Refusal::Unavailable
                    })?;
            }
        }
        Ok(match keyword {
            Keyword::Help => Some(&self.help),
            // Twilio answers STOP and START itself (and so do carriers).
            _ => None,
        })
    }

    /// A delivery report for a text we sent: applied only if it moves it forward.
    pub async fn status_report(
        &self,
        path_and_query: &str,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<(), Refusal> {
        let report = self.admit(path_and_query, signature, body, StatusReport::parse, |r| {
            &r.account_sid
        })?;
        self.store
            .apply_message_status(
                &report.message_sid,
                report.status.as_str(),
                report.status.rank(),
                report.error_code,
            )
            .await
            .map(|_| ())
            .map_err(|e| {
                tracing::error!(error = %e, "could not apply a status report");
                Refusal::Unavailable
            })
    }
}
