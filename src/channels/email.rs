//! The email channel's business: mail the SMTP receiver took is stored as it arrived,
//! then becomes a contact through intake, with the thread hints it carries; the
//! sender hears 250 only after both are committed.
//!
//! - A bounce (null sender, or a delivery report) to one of our VERP addresses
//!   (`local+bounce-<message>@domain`) marks that message failed; it is never a
//!   contact, so it can never open or reopen a request.
//! - Automatic mail (RFC 3834 and list conventions, our own address) is stored but
//!   never acknowledged, so an auto-responder cannot ping-pong with us.
//! - The sender's address is proven only when DMARC passes (SPF and DKIM checked
//!   here). An unproven sender joins a request only through the reply token (in the
//!   recipient address, or a Message-ID of ours); its `[SR-…]` subject tag, or a
//!   thread header naming someone else's message, is flagged for staff.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use contactd_email::{
    InboundEmail, MailHandler, NotStored, ReceivedMail, SenderCheck, SmtpLimits, SmtpServer,
};

use super::{Hub, Lifecycle};
use crate::configuration::Settings;
use crate::domain::thread::ReplyTokens;
use crate::domain::{Channel, EmailAddress, LongText, Reference, ShortText, Timestamp};
use crate::intake::{InboundContact, Intake, Origin, ReceivedMessage, Sender, ThreadHints};
use crate::outbound::Recipient;
use crate::startup::StartupError;
use crate::store::Store;
use crate::store::mail::RawMail;

/// The email channel as startup runs it: the SMTP receiver and what it hands mail to.
#[derive(Clone)]
pub struct EmailChannel {
    server: Arc<SmtpServer>,
}

impl EmailChannel {
    pub fn smtp_addr(&self) -> std::net::SocketAddr {
        self.server.local_addr()
    }
}

impl Lifecycle for EmailChannel {
    const NAME: &'static str = "email";

    async fn start(
        hub: &Hub,
        settings: &Settings,
    ) -> Result<Result<Self, &'static str>, StartupError> {
        let e = &settings.email;
        if !e.receiving() {
            return Ok(Err("no domains to receive mail for"));
        }
        let (_, local, domain) = e.from_parts().expect("validated with the settings");
        let resolver = e
            .dns_resolver()
            .map_err(|err| StartupError::Email(err.to_string()))?;
        let senders = SenderCheck::new(resolver, &domain).map_err(StartupError::Email)?;
        let intake = MailIntake {
            senders,
            store: hub.store.clone(),
            intake: hub.intake.clone(),
            tokens: hub.outbound.tokens().clone(),
            accepted: e.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
            own_local: local.to_ascii_lowercase(),
            own_domain: domain.clone(),
        };
        let limits = SmtpLimits {
            max_message_bytes: e.max_message_bytes,
            max_recipients: e.max_recipients,
            max_connections: e.max_connections,
            max_per_source: e.max_connections_per_source,
            command_timeout: Duration::from_secs(e.command_timeout_seconds),
            session_timeout: Duration::from_secs(e.session_timeout_seconds),
        };
        let server = SmtpServer::start(e.smtp_listen, domain, limits, Arc::new(intake))
            .await
            .map_err(|source| StartupError::Listen {
                what: "email.smtp_listen",
                addr: e.smtp_listen,
                source,
            })?;
        tracing::info!("smtp listening on {}", server.local_addr());
        Ok(Ok(EmailChannel {
            server: Arc::new(server),
        }))
    }

    fn stop_accepting(&self) {
        self.server.stop_accepting();
    }

    fn drain(&self, grace: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.server.shutdown(grace))
    }
}

/// What the SMTP receiver hands each message to.
struct MailIntake {
    senders: SenderCheck,
    store: Store,
    intake: Intake,
    tokens: ReplyTokens,
    /// Domains and whole addresses, lower case.
    accepted: Vec<String>,
    own_local: String,
    own_domain: String,
}

impl MailHandler for MailIntake {
    fn accepts(&self, recipient: &str) -> bool {
        let recipient = recipient.to_ascii_lowercase();
        let Some((local, domain)) = recipient.rsplit_once('@') else {
            return false;
        };
        // Bounces come back to our VERP addresses, whatever `domains` says.
        if domain == self.own_domain && self.bounce_of(local).is_some() {
            return true;
        }
        self.accepted.iter().any(|a| a == domain || *a == recipient)
    }

    fn deliver(
        &self,
        mail: ReceivedMail,
    ) -> Pin<Box<dyn Future<Output = Result<(), NotStored>> + Send + '_>> {
        Box::pin(self.take(mail))
    }
}

impl MailIntake {
    /// The message id in a VERP local part `local+bounce-<id>`.
    fn bounce_of(&self, local: &str) -> Option<String> {
        let rest = local
            .strip_prefix(&self.own_local)?
            .strip_prefix("+bounce-")?;
        uuid::Uuid::parse_str(rest).ok().map(|u| u.to_string())
    }

    async fn take(&self, mail: ReceivedMail) -> Result<(), NotStored> {
        let parsed = contactd_email::parse(&mail.raw);
        let not_stored = |e: &dyn std::fmt::Display| NotStored(e.to_string());
        // The message as it came, before anything is made of it.
        self.store
            .store_inbound_mail(&RawMail {
                message_id: parsed.message_id.as_deref(),
                mail_from: mail.mail_from.as_deref(),
                rcpt_to: &mail.rcpt_to,
                peer: &mail.peer.ip().to_string(),
                raw: &mail.raw,
            })
            .await
            .map_err(|e| not_stored(&e))?;
        let bounced: Vec<String> = mail
            .rcpt_to
            .iter()
            .filter_map(|r| {
                let (local, domain) = r.rsplit_once('@')?;
                (domain.eq_ignore_ascii_case(&self.own_domain))
                    .then(|| self.bounce_of(&local.to_ascii_lowercase()))?
            })
            .collect();
        if !bounced.is_empty() {
            for id in &bounced {
                let why = format!("bounced: {}", first_line(&parsed.text));
                if !self
                    .store
                    .message_bounced(id, &why)
                    .await
                    .map_err(|e| not_stored(&e))?
                {
                    tracing::warn!("a bounce names no message of ours");
                }
            }
            metrics::counter!("contactd_email_bounces_total").increment(1);
            return Ok(());
        }
        let verdict = self
            .senders
            .verify(
                &mail.raw,
                mail.peer.ip(),
                &mail.helo,
                mail.mail_from.as_deref(),
            )
            .await;
        tracing::debug!(summary = %verdict.summary, "sender checks");
        metrics::counter!("contactd_email_senders_total",
            "proven" => if verdict.proven { "yes" } else { "no" })
        .increment(1);
        let contact = self.contact(&mail, &parsed, verdict.proven);
        self.intake
            .receive(&contact)
            .await
            .map(|_| ())
            .map_err(|e| not_stored(&e))
    }

    fn contact(&self, mail: &ReceivedMail, parsed: &InboundEmail, proven: bool) -> InboundContact {
        let sender = parsed
            .from
            .as_deref()
            .and_then(|f| EmailAddress::parse(f).ok());
        let ours = sender.as_ref().is_some_and(|s| {
            s.as_str().rsplit_once('@').is_some_and(|(l, d)| {
                d == self.own_domain && l.split('+').next() == Some(self.own_local.as_str())
            })
        });
        let automatic = parsed
            .automatic
            .or(mail.mail_from.is_none().then_some("null sender"))
            .or(ours.then_some("our own address"));
        if let Some(why) = automatic {
            tracing::info!(why, "automatic mail: stored, not acknowledged");
        }
        // The same message by SMTP and by IMAP is one contact: keyed by its
        // Message-ID, or by its bytes when it has none.
        let key = match &parsed.message_id {
            Some(id) => ShortText::key("mid:", id),
            None => {
                use sha2::Digest;
                ShortText::key("sha256:", &hex::encode(sha2::Sha256::digest(&mail.raw)))
            }
        };
        let recipients = mail.rcpt_to.join(" ");
        let reply_token = self
            .tokens
            .find_in(&recipients)
            .or_else(|| self.tokens.find_in(&parsed.answers.join(" ")));
        let mut content = String::new();
        if !parsed.subject.is_empty() {
            content.push_str(&format!("Subject: {}\n\n", parsed.subject));
        }
        content.push_str(&parsed.text);
        if parsed.attachments > 0 {
            content.push_str(&format!("\n\n[{} attachment(s)]", parsed.attachments));
        }
        InboundContact {
            channel: Channel::Email,
            origin: Origin::Channel,
            external_id: key,
            from: match &sender {
                Some(s) => Sender::Email(s.clone()),
                None => Sender::Unknown(
                    parsed
                        .from
                        .clone()
                        .unwrap_or_else(|| "no sender".into())
                        .chars()
                        .take(200)
                        .collect(),
                ),
            },
            to: ShortText::truncate_from(
                mail.rcpt_to.first().map(String::as_str).unwrap_or_default(),
            )
            .unwrap_or_else(|| ShortText::parse("unknown").expect("valid")),
            received_at: Timestamp::now(),
            content: LongText::truncate_from(&content)
                .unwrap_or_else(|| LongText::parse("(empty message)").expect("valid")),
            reference: contactd_email::subject::tag(&parsed.subject)
                .and_then(|t| Reference::parse(t).ok()),
            service: None,
            thread: ThreadHints {
                // A From header proves nothing; a DMARC pass does.
                sender_proven: proven && sender.is_some(),
                reply_token,
                answers: parsed.answers.clone(),
                reply_window: None,
            },
            acknowledge: match (&sender, automatic) {
                (Some(s), None) => Some(Recipient::Email(s.clone())),
                _ => None,
            },
            message: Some(ReceivedMessage {
                subject: (!parsed.subject.is_empty()).then(|| parsed.subject.clone()),
                internet_message_id: parsed.message_id.clone(),
            }),
        }
    }
}

fn first_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no reason given")
        .chars()
        .take(200)
        .collect()
}
