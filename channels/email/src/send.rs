//! Sending mail through the council's relay (lettre: pooled SMTP, rustls).
//!
//! The hub hands over plain values ([`OutgoingMail`]); this builds the MIME message
//! (plain text with an HTML alternative, the thread headers, `Auto-Submitted` on
//! automatic mail) and submits it with a per-message envelope sender (VERP), so a
//! bounce names the message it is about. The outcome says whether a retry is safe.

use std::time::Duration;

use lettre::address::Envelope;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, header};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// A message to send, with everything already decided by the hub.
#[derive(Debug, Clone)]
pub struct OutgoingMail {
    pub from: Mailbox,
    pub to: Address,
    pub reply_to: Option<Address>,
    /// Bounces come back here (`…+bounce-<id>@…`).
    pub envelope_from: Address,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    /// With its angle brackets: `<…@…>`.
    pub message_id: String,
    /// The Message-IDs this answers, oldest first; the last is In-Reply-To.
    pub references: Vec<String>,
    /// Outlook's Thread-Index (base64), so Outlook threads our reply with the rest.
    pub thread_index: Option<String>,
    /// Sent by the daemon itself (acknowledgements, reminders): `Auto-Submitted:
    /// auto-replied`, so well-behaved responders do not answer it.
    pub automatic: bool,
}

/// What became of a submission.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendFailure {
    /// Nothing was accepted and trying again may work (4xx, no connection).
    #[error("the relay could not take it now: {0}")]
    Transient(String),
    /// The relay refused it (5xx, or a message that cannot be built); do not retry.
    #[error("the relay refused it: {0}")]
    Refused(String),
    /// The connection failed after the message may have gone: never resend blind.
    #[error("no answer after the message was sent: {0}")]
    Unknown(String),
}

#[derive(Clone)]
pub struct MailSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

/// References beyond this many are dropped (the oldest are kept first and the newest
/// last, as RFC 5322 §3.6.4 suggests when trimming).
const MAX_REFERENCES: usize = 20;

impl MailSender {
    /// `relay` is `smtp://[user:pass@]host[:port]` (STARTTLS when offered, or
    /// `?tls=required`) or `smtps://…` (TLS from the start).
    pub fn new(relay: &str, timeout: Duration) -> Result<Self, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(relay)
            .map_err(|e| format!("relay_url: {e}"))?
            .timeout(Some(timeout))
            .build();
        Ok(MailSender { transport })
    }

    pub async fn send(&self, mail: &OutgoingMail) -> Result<(), SendFailure> {
        let message = build(mail).map_err(SendFailure::Refused)?;
        let envelope = Envelope::new(Some(mail.envelope_from.clone()), vec![mail.to.clone()])
            .map_err(|e| SendFailure::Refused(e.to_string()))?;
        match self
            .transport
            .send_raw(&envelope, &message.formatted())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(SendFailure::Refused(e.to_string())),
            Err(e) if e.is_transient() => Err(SendFailure::Transient(e.to_string())),
            // lettre names the phase only in its Display: "Connection error" is a
            // failure to connect (nothing was sent); TLS fails before MAIL FROM.
            Err(e) if e.to_string().starts_with("Connection error") || e.is_tls() => {
                Err(SendFailure::Transient(e.to_string()))
            }
            Err(e) => Err(SendFailure::Unknown(e.to_string())),
        }
    }
}

/// Builds the MIME message.
pub fn build(mail: &OutgoingMail) -> Result<Message, String> {
    let mut builder = Message::builder()
        .from(mail.from.clone())
        .to(Mailbox::new(None, mail.to.clone()))
        .subject(mail.subject.clone())
        .message_id(Some(mail.message_id.clone()))
        .date_now();
    if let Some(reply_to) = &mail.reply_to {
        builder = builder.reply_to(Mailbox::new(None, reply_to.clone()));
    }
    let references: Vec<&String> = trimmed(&mail.references);
    if let Some(last) = references.last() {
        builder = builder.in_reply_to((*last).clone());
        builder = builder.references(
            references
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    if let Some(index) = &mail.thread_index {
        builder = builder.raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Thread-Index"),
            index.clone(),
        ));
    }
    if mail.automatic {
        builder = builder.raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-replied".to_string(),
        ));
    }
    let built = match &mail.html {
        Some(html) => builder.multipart(MultiPart::alternative_plain_html(
            mail.text.clone(),
            html.clone(),
        )),
        None => builder
            .header(header::ContentType::TEXT_PLAIN)
            .body(mail.text.clone()),
    };
    built.map_err(|e| e.to_string())
}

fn trimmed(references: &[String]) -> Vec<&String> {
    if references.len() <= MAX_REFERENCES {
        return references.iter().collect();
    }
    let mut kept: Vec<&String> = references.iter().take(1).collect();
    kept.extend(&references[references.len() - (MAX_REFERENCES - 1)..]);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail() -> OutgoingMail {
        OutgoingMail {
            from: "Council <contact@council.example>".parse().unwrap(),
            to: "ann@example.org".parse().unwrap(),
            reply_to: Some("contact+r1-abc@council.example".parse().unwrap()),
            envelope_from: "contact+bounce-1@council.example".parse().unwrap(),
            subject: "Your reference SR-1000002".into(),
            text: "Thank you.".into(),
            html: Some("<p>Thank you.</p>".into()),
            message_id: "<r1-abc.1@council.example>".into(),
            references: vec!["<a@x>".into(), "<b@y>".into()],
            thread_index: Some("AQHZ".into()),
            automatic: true,
        }
    }

    #[test]
    fn carries_the_thread_and_marks_automatic_mail() {
        let text = String::from_utf8(build(&mail()).unwrap().formatted()).unwrap();
        assert!(text.contains("In-Reply-To: <b@y>"), "{text}");
        assert!(text.contains("References: <a@x> <b@y>"), "{text}");
        assert!(text.contains("Auto-Submitted: auto-replied"), "{text}");
        assert!(
            text.contains("Message-ID: <r1-abc.1@council.example>"),
            "{text}"
        );
        assert!(text.contains("multipart/alternative"), "{text}");
    }

    #[test]
    fn keeps_the_first_and_the_latest_references() {
        let refs: Vec<String> = (0..30).map(|i| format!("<{i}@x>")).collect();
        let kept = trimmed(&refs);
        assert_eq!(kept.len(), MAX_REFERENCES);
        assert_eq!(kept[0], "<0@x>");
        assert_eq!(kept.last().unwrap().as_str(), "<29@x>");
    }
}
