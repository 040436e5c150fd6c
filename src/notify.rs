//! GOV.UK Notify as the hub uses it, for whichever channels are set to it
//! (`sms.provider`, `email.provider`): the sender the outbox hands a message to, and
//! the callbacks Notify posts back (delivery receipts; texts residents send to the
//! service's number, which go through the SMS channel like Twilio's).
//!
//! Notify holds the wording's frame (its templates); contactd composes the words and
//! fills a template's `((body))` (and an email's `((subject))`). Every template is
//! read from Notify at start, so a wrong id or a placeholder we cannot fill stops the
//! daemon rather than every message. Rate limits hold the whole provider, not one
//! message: a per-minute 429 for a minute, the daily one until midnight UTC (when
//! Notify's count starts again).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use contactd_notify::{
    ApiKey, InboundText, Notification, NotifyClient, Receipt, Recipient, SendError, bearer_matches,
};

use crate::channels::sms::{Refusal, SmsChannel};
use crate::configuration::{EmailProvider, Secret, Settings, SmsProvider};
use crate::domain::message::MessagePurpose;
use crate::domain::{Channel, Timestamp};
use crate::store::Store;
use crate::store::messages::Claimed;

/// What the outbox made of a send through Notify.
pub(crate) enum Sent {
    Accepted {
        id: String,
        status: &'static str,
        rank: i64,
    },
    /// Not accepted; Notify will never take it as it is (400, 403).
    Refused { code: i64, why: String },
    /// Not accepted; nothing goes to Notify before `until` (429).
    Held { until: Timestamp, why: String },
    /// Not sent; try again later.
    Retry(String),
    /// It may have been accepted: look it up by reference before any resend.
    Unknown(String),
}

/// Template ids for one channel.
#[derive(Debug, Clone)]
struct Templates {
    default: String,
    by_purpose: Vec<(MessagePurpose, String)>,
}

impl Templates {
    fn from_settings(map: &BTreeMap<String, String>) -> Option<Self> {
        let by_purpose = map
            .iter()
            .filter_map(|(kind, id)| Some((kind.parse::<MessagePurpose>().ok()?, id.clone())))
            .collect();
        Some(Templates {
            default: map.get("default")?.clone(),
            by_purpose,
        })
    }

    fn for_purpose(&self, p: MessagePurpose) -> &str {
        self.by_purpose
            .iter()
            .find(|(q, _)| *q == p)
            .map_or(&self.default, |(_, id)| id)
    }

    fn all(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.default).chain(self.by_purpose.iter().map(|(_, id)| id))
    }
}

/// The placeholders contactd fills, per channel.
const SMS_FIELDS: &[&str] = &["body"];
const EMAIL_FIELDS: &[&str] = &["subject", "body"];

pub struct NotifySender {
    client: NotifyClient,
    sms: Option<Templates>,
    email: Option<Templates>,
    /// Nothing is posted before this time (a 429), and why.
    held: Mutex<Option<(Timestamp, String)>>,
}

impl NotifySender {
    /// The sender, when a channel is set to Notify.
    pub fn new(settings: &Settings) -> Result<Option<Arc<Self>>, String> {
        let n = &settings.notify;
        let sms = settings.sms.provider == SmsProvider::Notify;
        let email = settings.email.provider == EmailProvider::Notify;
        if !sms && !email {
            return Ok(None);
        }
        let key = ApiKey::parse(n.api_key.expose()).map_err(|e| format!("notify.api_key: {e}"))?;
        let client = NotifyClient::new(&n.api_base, key, Duration::from_secs(n.timeout_seconds))
            .map_err(|e| format!("notify: {e}"))?;
        Ok(Some(Arc::new(NotifySender {
            client,
            sms: sms
                .then(|| Templates::from_settings(&n.sms_templates))
                .flatten(),
            email: email
                .then(|| Templates::from_settings(&n.email_templates))
                .flatten(),
            held: Mutex::new(None),
        })))
    }

    /// Reads every template from Notify: each must exist, be for its channel, and
    /// ask only for what contactd fills in.
    pub async fn check_templates(&self) -> Result<(), String> {
        for (channel, kind, templates, fields) in [
            ("sms", "sms", &self.sms, SMS_FIELDS),
            ("email", "email", &self.email, EMAIL_FIELDS),
        ] {
            let Some(templates) = templates else { continue };
            for id in templates.all() {
                let t = self
                    .client
                    .template(id)
                    .await
                    .map_err(|e| format!("notify.{channel}_templates: template {id}: {e}"))?;
                if t.kind != kind {
                    return Err(format!(
                        "notify.{channel}_templates: template {id} is for {}, not {kind}",
                        t.kind
                    ));
                }
                if let Some(p) = t
                    .placeholders()
                    .iter()
                    .find(|p| !fields.contains(&p.as_str()))
                {
                    return Err(format!(
                        "notify.{channel}_templates: template {id} asks for (({p})); contactd fills {}",
                        fields
                            .iter()
                            .map(|f| format!("(({f}))"))
                            .collect::<Vec<_>>()
                            .join(" and ")
                    ));
                }
            }
        }
        Ok(())
    }

    /// Sends one claimed message, its id in the outbox as the reference.
    pub(crate) async fn send(&self, now: Timestamp, c: &Claimed) -> Sent {
        let (channel, to, body, reference) = (
            c.channel,
            c.address.as_str(),
            c.body.as_str(),
            c.id.as_str(),
        );
        if let Some((until, why)) = self.held.lock().expect("not poisoned").clone()
            && until > now
        {
            return Sent::Held { until, why };
        }
        let (recipient, templates) = match channel {
            Channel::Sms => (Recipient::Sms(to.to_string()), &self.sms),
            Channel::Email => (Recipient::Email(to.to_string()), &self.email),
            other => return Sent::Retry(format!("Notify does not send {other}")),
        };
        let Some(templates) = templates else {
            return Sent::Retry(format!("{channel} is not sent through Notify"));
        };
        let mut personalisation = BTreeMap::from([("body", body)]);
        if channel == Channel::Email {
            personalisation.insert("subject", c.subject.as_deref().unwrap_or(""));
        }
        let n = Notification {
            to: recipient,
            template_id: templates.for_purpose(c.purpose),
            personalisation,
            reference,
        };
        match self.client.send(&n).await {
            Ok(a) => Sent::Accepted {
                id: a.id,
                status: a.status.as_str(),
                rank: a.status.rank(),
            },
            Err(e @ SendError::Rejected(_)) => Sent::Refused {
                code: 400,
                why: e.to_string(),
            },
            Err(SendError::Forbidden { message, clock }) => {
                if clock {
                    // Every message will fail until the host's clock is put right.
                    tracing::error!(
                        "Notify says this host's clock is more than 30 seconds out: nothing can be sent until it is corrected (check NTP)"
                    );
                    metrics::counter!("contactd_notify_auth_failures_total", "cause" => "clock")
                        .increment(1);
                } else {
                    tracing::error!(error = %message, "Notify refused our API key");
                    metrics::counter!("contactd_notify_auth_failures_total", "cause" => "key")
                        .increment(1);
                }
                Sent::Refused {
                    code: 403,
                    why: format!("Notify refused our token ({message})"),
                }
            }
            Err(e @ SendError::RateLimited { daily }) => {
                let until = if daily {
                    // Notify's daily count starts again at midnight UTC.
                    let day = 86_400_000;
                    Timestamp::from_millis((now.millis() / day + 1) * day)
                } else {
                    Timestamp::from_millis(now.millis() + 60_000)
                };
                tracing::warn!(until = %until, error = %e, "nothing more goes to Notify until then");
                metrics::counter!("contactd_notify_rate_limited_total", "limit" => if daily { "daily" } else { "minute" })
                    .increment(1);
                *self.held.lock().expect("not poisoned") = Some((until, e.to_string()));
                Sent::Held {
                    until,
                    why: e.to_string(),
                }
            }
            Err(e @ SendError::Unavailable(_)) => Sent::Retry(e.to_string()),
            Err(e @ SendError::Unknown(_)) => Sent::Unknown(e.to_string()),
        }
    }

    /// The notification sent with this reference (our message id), if Notify has
    /// one: (Notify's id, status, rank). `Err` when Notify cannot say.
    pub(crate) async fn find(
        &self,
        reference: &str,
    ) -> Result<Option<(String, &'static str, i64)>, String> {
        Ok(self
            .client
            .find_by_reference(reference)
            .await?
            .map(|a| (a.id, a.status.as_str(), a.status.rank())))
    }

    /// A notification's status now, by Notify's id: (status, rank).
    pub(crate) async fn status_of(&self, id: &str) -> Result<(&'static str, i64), String> {
        let a = self.client.notification(id).await?;
        Ok((a.status.as_str(), a.status.rank()))
    }
}

/// Notify's callbacks, as the webhooks reach them.
#[derive(Clone)]
pub struct NotifyCallbacks {
    store: Store,
    token: Secret,
    /// Texts residents send, when the SMS channel is Notify's.
    sms: Option<SmsChannel>,
}

impl NotifyCallbacks {
    /// Present when a channel is set to Notify.
    pub fn new(store: Store, settings: &Settings, sms: Option<SmsChannel>) -> Option<Self> {
        let sms_notify = settings.sms.provider == SmsProvider::Notify;
        (sms_notify || settings.email.provider == EmailProvider::Notify).then(|| NotifyCallbacks {
            store,
            token: settings.notify.callback_token.clone(),
            sms: sms.filter(|_| sms_notify),
        })
    }

    fn admit(&self, authorization: Option<&str>) -> Result<(), Refusal> {
        if bearer_matches(authorization, self.token.expose()) {
            Ok(())
        } else {
            tracing::warn!("refused a Notify callback without our bearer token");
            Err(Refusal::Unauthorised(
                "the bearer token is missing or wrong".into(),
            ))
        }
    }

    /// A delivery receipt: applied only if it moves the message forward.
    pub async fn receipt(&self, authorization: Option<&str>, body: &[u8]) -> Result<(), Refusal> {
        self.admit(authorization)?;
        let r = Receipt::parse(body).map_err(|e| Refusal::Malformed(e.to_string()))?;
        self.store
            .apply_message_status(&r.id, r.status.as_str(), r.status.rank(), None)
            .await
            .map(|_| ())
            .map_err(|e| {
                tracing::error!(error = %e, "could not apply a Notify receipt");
                Refusal::Unavailable
            })
    }

    /// A text a resident sent to the service's number.
    pub async fn text(&self, authorization: Option<&str>, body: &[u8]) -> Result<(), Refusal> {
        self.admit(authorization)?;
        let Some(sms) = &self.sms else {
            return Err(Refusal::Malformed(
                "texts are not received through Notify here".into(),
            ));
        };
        let t = InboundText::parse(body).map_err(|e| Refusal::Malformed(e.to_string()))?;
        sms.notify_text(&t).await
    }
}
