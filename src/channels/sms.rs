//! The SMS channel's business: a text Twilio has signed becomes a contact through
//! intake, keywords (STOP, START, HELP) change what we may send, and delivery reports
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
use crate::configuration::{Secret, Settings};
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
    auth_token: Secret,
    account_sid: String,
    public_url: String,
    reply_window: Duration,
    help: String,
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
        tracing::info!("sms: Twilio account {}", s.account_sid);
        Ok(Ok(SmsChannel {
            store: hub.store.clone(),
            intake: hub.intake.clone(),
            auth_token: s.auth_token.clone(),
            account_sid: s.account_sid.clone(),
            public_url: settings
                .http
                .public_url
                .as_str()
                .trim_end_matches('/')
                .to_string(),
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
        let params = form_params(body).map_err(|e| Refusal::Malformed(e.to_string()))?;
        let url = url::Url::parse(&format!("{}{path_and_query}", self.public_url))
            .map_err(|_| Refusal::Malformed("not a URL of ours".into()))?;
        contactd_sms::verify(self.auth_token.expose(), &url, &params, signature).map_err(|e| {
            tracing::warn!(error = %e, "refused a Twilio webhook");
            Refusal::Forbidden(e.to_string())
        })?;
        let parsed = parse(&params).map_err(|e| Refusal::Malformed(e.to_string()))?;
        if account_of(&parsed) != self.account_sid {
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
        let sender = PhoneNumber::parse(&sms.from).ok();
        if let Some(keyword) = Keyword::of(&sms.body) {
            return self.keyword(&sms, keyword, sender).await;
        }
        let contact = self.contact(&sms, sender).map_err(|e| {
            tracing::error!(error = %e, "a text could not be read");
            Refusal::Malformed(e)
        })?;
        match self.intake.receive(&contact).await {
            Ok(_) => Ok(contactd_sms::twiml::answer(None)),
            Err(e) => {
                tracing::error!(error = %e, message_sid = %sms.message_sid, "could not store a text");
                Err(Refusal::Unavailable)
            }
        }
    }

    fn contact(
        &self,
        sms: &InboundSms,
        sender: Option<PhoneNumber>,
    ) -> Result<InboundContact, String> {
        let mut content = sms.body.trim().to_string();
        for url in &sms.media_urls {
            content.push_str(&format!("\n[media] {url}"));
        }
        Ok(InboundContact {
            channel: Channel::Sms,
            origin: Origin::Channel,
            external_id: ShortText::parse(&sms.message_sid).map_err(|e| e.to_string())?,
            from: match &sender {
                Some(p) => Sender::Phone(p.clone()),
                None => Sender::Unknown(sms.from.clone()),
            },
            to: ShortText::truncate_from(&sms.to)
                .unwrap_or_else(|| ShortText::parse("unknown").expect("valid")),
            received_at: Timestamp::now(),
            // A body of nothing but control characters cleans down to nothing.
            content: LongText::truncate_from(&content)
                .unwrap_or_else(|| LongText::parse("(empty text)").expect("valid")),
            reference: Reference::find_in(&sms.body),
            service: None,
            thread: ThreadHints {
                // Twilio signed the From it reports: as proven as a number gets.
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
        sms: &InboundSms,
        keyword: Keyword,
        sender: Option<PhoneNumber>,
    ) -> Result<String, Refusal> {
        let name = match keyword {
            Keyword::OptOut => "opt_out",
            Keyword::OptIn => "opt_in",
            Keyword::Help => "help",
        };
        let first_time = self
            .store
            .record_keyword(&sms.message_sid, &sms.from, name)
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
        Ok(contactd_sms::twiml::answer(match keyword {
            Keyword::Help => Some(&self.help),
            // Twilio answers STOP and START itself (and so do carriers).
            _ => None,
        }))
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
