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

use contactd_email::auth::from_authentication_results;
use contactd_email::imap::{
    Credential, FetchedMail, ImapConfig, ImapEvent, ImapObserver, MailboxStore, Position,
};
use contactd_email::oauth::{OAuthClient, OAuthClientConfig};
use contactd_email::{
    InboundEmail, MailHandler, NotStored, ReceivedMail, SenderCheck, SmtpLimits, SmtpServer,
    Verdict,
};
use tokio_util::sync::CancellationToken;

use super::{Hub, Lifecycle};
use crate::configuration::{EmailSettings, ImapMailbox, ImapSignIn, Settings};
use crate::domain::thread::ReplyTokens;
use crate::domain::{Channel, EmailAddress, LongText, Reference, ShortText, Timestamp};
use crate::intake::{InboundContact, Intake, Origin, ReceivedMessage, Sender, ThreadHints};
use crate::outbound::Recipient;
use crate::startup::StartupError;
use crate::store::Store;
use crate::store::attachments::NewAttachment;
use crate::store::mail::Original;

/// The email channel as startup runs it: the SMTP receiver and the IMAP poller (each
/// when configured), and what they hand mail to.
#[derive(Clone)]
pub struct EmailChannel {
    server: Option<Arc<SmtpServer>>,
    poller: Option<Arc<Poller>>,
}

/// The IMAP poller's task: stopped by its token, awaited at drain.
struct Poller {
    stop: CancellationToken,
    task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl EmailChannel {
    pub fn smtp_addr(&self) -> Option<std::net::SocketAddr> {
        self.server.as_ref().map(|s| s.local_addr())
    }
}

impl EmailChannel {
    /// Starts the IMAP poller for `mailbox`, reporting on /metrics as it goes.
    fn poll(
        mailbox: ImapMailbox,
        e: &EmailSettings,
        intake: Arc<MailIntake>,
    ) -> Result<Arc<Poller>, StartupError> {
        tracing::info!(host = %mailbox.host, folder = %mailbox.folder, "polling a mailbox by IMAP");
        let credential = match mailbox.sign_in {
            ImapSignIn::Password(p) => Credential::Password(p.expose().to_string()),
            ImapSignIn::AccessTokenFile(path) => Credential::OAuthTokenFile(path.into()),
            ImapSignIn::RefreshToken {
                token_url,
                client_id,
                client_secret,
                scope,
                refresh_token_file,
            } => {
                let client = OAuthClient::new(OAuthClientConfig {
                    token_url,
                    client_id,
                    client_secret: (!client_secret.is_empty())
                        .then(|| client_secret.expose().to_string()),
                    scope: (!scope.is_empty()).then_some(scope),
                    refresh_token_file: refresh_token_file.into(),
                })
                .map_err(|err| StartupError::Email(err.to_string()))?;
                // Unknown until the first refresh says otherwise.
                metrics::gauge!("contactd_imap_oauth_grant_valid").set(1.0);
                Credential::OAuth(Arc::new(client))
            }
        };
        let config = ImapConfig {
            tls: mailbox.tls,
            host: mailbox.host,
            port: mailbox.port,
            user: mailbox.user,
            folder: mailbox.folder,
            credential,
            move_to: (!e.imap_move_to.is_empty()).then(|| e.imap_move_to.clone()),
            poll: Duration::from_secs(e.imap_poll_seconds),
            ca_file: (!e.imap_ca_file.is_empty()).then(|| e.imap_ca_file.clone().into()),
        };
        let refreshed = matches!(config.credential, Credential::OAuth(_));
        let stop = CancellationToken::new();
        let observe: ImapObserver = Arc::new(move |event| {
            // The alerts: contactd_imap_signed_in at 0 with failures rising, and
            // contactd_imap_oauth_grant_valid at 0 (someone must authorise again).
            match event {
                ImapEvent::SignedIn => {
                    metrics::gauge!("contactd_imap_signed_in").set(1.0);
                    if refreshed {
                        metrics::gauge!("contactd_imap_oauth_grant_valid").set(1.0);
                    }
                }
                ImapEvent::SignInRefused => {
                    metrics::gauge!("contactd_imap_signed_in").set(0.0);
                    metrics::counter!("contactd_imap_signin_failures_total").increment(1);
                }
                ImapEvent::GrantRevoked => {
                    metrics::gauge!("contactd_imap_signed_in").set(0.0);
                    metrics::gauge!("contactd_imap_oauth_grant_valid").set(0.0);
                    metrics::counter!("contactd_imap_signin_failures_total").increment(1);
                }
                ImapEvent::Disconnected => metrics::gauge!("contactd_imap_signed_in").set(0.0),
                ImapEvent::Fetched => metrics::counter!("contactd_imap_fetched_total").increment(1),
            }
        });
        let task = tokio::spawn(contactd_email::imap::run(
            config,
            intake,
            observe,
            stop.clone(),
        ));
        Ok(Arc::new(Poller {
            stop,
            task: tokio::sync::Mutex::new(Some(task)),
        }))
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
            return Ok(Err(
                "no domains to receive mail for, and no mailbox to poll",
            ));
        }
        let fail = |err: crate::configuration::ConfigError| StartupError::Email(err.to_string());
        let (_, local, domain) = e.from_parts().expect("validated with the settings");
        let senders = SenderCheck::new(e.dns_resolver().map_err(fail)?, &domain)
            .map_err(StartupError::Email)?;
        let imap = e.imap().map_err(fail)?;
        let intake = Arc::new(MailIntake {
            senders,
            store: hub.store.clone(),
            intake: hub.intake.clone(),
            tokens: hub.outbound.tokens().clone(),
            accepted: e.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
            own_local: local.to_ascii_lowercase(),
            own_domain: domain.clone(),
            trusted_authserv_id: e.imap_trusted_authserv_id.clone(),
            imap_account: imap
                .as_ref()
                .map(|m| format!("{}@{}:{}", m.user, m.host, m.port))
                .unwrap_or_default(),
        });
        let server = if e.domains.is_empty() {
            None
        } else {
            let limits = SmtpLimits {
                max_message_bytes: e.max_message_bytes,
                max_recipients: e.max_recipients,
                max_connections: e.max_connections,
                max_per_source: e.max_connections_per_source,
                command_timeout: Duration::from_secs(e.command_timeout_seconds),
                session_timeout: Duration::from_secs(e.session_timeout_seconds),
            };
            let tls = if e.tls_certificate.is_empty() {
                None
            } else {
                Some(
                    contactd_email::smtp::tls_config(
                        std::path::Path::new(&e.tls_certificate),
                        std::path::Path::new(&e.tls_key),
                    )
                    .map_err(|err| StartupError::Email(format!("email.tls_certificate: {err}")))?,
                )
            };
            let server = SmtpServer::start(e.smtp_listen, domain, limits, intake.clone(), tls)
                .await
                .map_err(|source| StartupError::Listen {
                    what: "email.smtp_listen",
                    addr: e.smtp_listen,
                    source,
                })?;
            tracing::info!("smtp listening on {}", server.local_addr());
            Some(Arc::new(server))
        };
        let poller = match imap {
            None => None,
            Some(mailbox) => Some(Self::poll(mailbox, e, intake.clone())?),
        };
        Ok(Ok(EmailChannel { server, poller }))
    }

    fn stop_accepting(&self) {
        if let Some(server) = &self.server {
            server.stop_accepting();
        }
        if let Some(poller) = &self.poller {
            // It finishes the message in hand (stored and flagged), then stops.
            poller.stop.cancel();
        }
    }

    fn drain(&self, grace: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let smtp = async {
                if let Some(server) = &self.server {
                    server.shutdown(grace).await;
                }
            };
            let imap = async {
                if let Some(poller) = &self.poller
                    && let Some(task) = poller.task.lock().await.take()
                {
                    let _ = tokio::time::timeout(grace, task).await;
                }
            };
            tokio::join!(smtp, imap);
        })
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
    /// Whose Authentication-Results to believe for fetched mail.
    trusted_authserv_id: String,
    /// `user@host:port` of the polled mailbox: positions are kept per account.
    imap_account: String,
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

    /// Mail from the SMTP receiver: stored, then a bounce or a contact.
    async fn take(&self, mail: ReceivedMail) -> Result<(), NotStored> {
        let raw: Arc<[u8]> = mail.raw.into();
        let (parsed, read) = parse_bounded(raw.clone()).await;
        let original = Original {
            key: message_key(&parsed, &raw).as_str().to_string(),
            envelope: format!(
                "SMTP from {} (HELO {}): MAIL FROM:<{}> RCPT TO:<{}>",
                mail.peer.ip(),
                mail.helo,
                mail.mail_from.as_deref().unwrap_or_default(),
                mail.rcpt_to.join(">, <")
            ),
            raw: raw.clone(),
        };
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
            self.store
                .store_original(Channel::Email, &original)
                .await
                .map_err(|e| NotStored(e.to_string()))?;
            return self.bounce(&bounced, &parsed).await;
        }
        let verdict = self
            .senders
            .verify(&raw, mail.peer.ip(), &mail.helo, mail.mail_from.as_deref())
            .await;
        let arrival = Arrival {
            raw: &raw,
            parsed: &parsed,
            rcpt_to: &mail.rcpt_to,
            null_sender: mail.mail_from.is_none(),
            verdict,
            original,
            read,
        };
        self.receive(arrival).await
    }

    /// Mail the IMAP poller fetched: stored, a contact, then the folder's position.
    async fn take_fetched(&self, mail: FetchedMail) -> Result<(), NotStored> {
        let raw: Arc<[u8]> = mail.raw.into();
        let (parsed, read) = parse_bounded(raw.clone()).await;
        let original = Original {
            key: message_key(&parsed, &raw).as_str().to_string(),
            envelope: format!(
                "IMAP {}/{} UID {} (UIDVALIDITY {})",
                self.imap_account, mail.folder, mail.uid, mail.uid_validity
            ),
            raw: raw.clone(),
        };
        let from_domain = parsed
            .from
            .as_deref()
            .and_then(|f| f.rsplit_once('@'))
            .map(|(_, d)| d)
            .unwrap_or_default();
        let verdict = from_authentication_results(&raw, &self.trusted_authserv_id, from_domain);
        let to: Vec<String> = Vec::new();
        self.receive(Arrival {
            raw: &raw,
            parsed: &parsed,
            rcpt_to: &to,
            null_sender: false,
            verdict,
            original,
            read,
        })
        .await?;
        self.store
            .save_mailbox_position(&self.mailbox_key(&mail.folder), mail.uid_validity, mail.uid)
            .await
            .map_err(|e| NotStored(e.to_string()))
    }

    fn mailbox_key(&self, folder: &str) -> String {
        format!("{}/{folder}", self.imap_account)
    }

    async fn bounce(&self, ids: &[String], parsed: &InboundEmail) -> Result<(), NotStored> {
        for id in ids {
            let why = format!("bounced: {}", first_line(&parsed.text));
            let known = self
                .store
                .message_bounced(id, &why)
                .await
                .map_err(|e| NotStored(e.to_string()))?;
            if !known {
                tracing::warn!("a bounce names no message of ours");
            }
        }
        metrics::counter!("contactd_email_bounces_total").increment(1);
        Ok(())
    }

    async fn receive(&self, arrival: Arrival<'_>) -> Result<(), NotStored> {
        tracing::debug!(summary = %arrival.verdict.summary, "sender checks");
        metrics::counter!("contactd_email_senders_total",
            "proven" => if arrival.verdict.proven { "yes" } else { "no" })
        .increment(1);
        let contact = self.contact(&arrival);
        self.intake
            .receive(&contact)
            .await
            .map(|_| ())
            .map_err(|e| NotStored(e.to_string()))
    }

    fn contact(&self, arrival: &Arrival<'_>) -> InboundContact {
        let parsed = arrival.parsed;
        let proven = arrival.verdict.proven;
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
            .or(arrival.null_sender.then_some("null sender"))
            .or(ours.then_some("our own address"));
        if let Some(why) = automatic {
            tracing::info!(why, "automatic mail: stored, not acknowledged");
        }
        let key = message_key(parsed, arrival.raw);
        let recipients = arrival.rcpt_to.join(" ");
        let reply_token = self
            .tokens
            .find_in(&recipients)
            .or_else(|| self.tokens.find_in(&parsed.answers.join(" ")));
        let mut content = String::new();
        if !parsed.subject.is_empty() {
            content.push_str(&format!("Subject: {}\n\n", parsed.subject));
        }
        content.push_str(&parsed.text);
        if !parsed.quoted.is_empty() {
            content.push_str("\n\n[earlier messages quoted]\n");
            content.push_str(&parsed.quoted);
        }
        for a in &parsed.attachments {
            content.push_str(&format!(
                "\n[attached: {} ({}, {} bytes)]",
                a.name,
                a.content_type,
                a.bytes.len()
            ));
        }
        if parsed.attachments_skipped > 0 {
            content.push_str(&format!(
                "\n[{} more attachment(s) over the limits, kept in the original message]",
                parsed.attachments_skipped
            ));
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
                arrival
                    .rcpt_to
                    .first()
                    .map(String::as_str)
                    .unwrap_or("mailbox"),
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
                thread_index: parsed.thread_index.clone(),
            }),
            original: Some(arrival.original.clone()),
            attachments: parsed
                .attachments
                .iter()
                .map(|a| NewAttachment {
                    name: a.name.clone(),
                    content_type: a.content_type.clone(),
                    bytes: a.bytes.clone().into(),
                })
                .collect(),
            needs_review: !arrival.read,
        }
    }
}

/// The longest a message may take to parse. Parsing runs off the async workers, so a
/// message built to be slow to read holds up nobody else; past the limit it is kept
/// as it came and flagged for staff.
const PARSE_LIMIT: Duration = Duration::from_secs(10);

/// The message parsed, and whether it could be: unread (too slow, or the parser
/// failed) it is still stored as it came, and flagged.
async fn parse_bounded(raw: Arc<[u8]>) -> (InboundEmail, bool) {
    match bounded(PARSE_LIMIT, move || contactd_email::parse(&raw)).await {
        Some(parsed) => (parsed, true),
        None => (InboundEmail::unread(), false),
    }
}

/// Runs `work` on a blocking thread for at most `limit`; `None` if it ran over or
/// failed. A run that overruns is abandoned, not waited for.
async fn bounded<T: Send + 'static>(
    limit: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    match tokio::time::timeout(limit, tokio::task::spawn_blocking(work)).await {
        Ok(Ok(done)) => Some(done),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "a message could not be parsed; kept as it came");
            None
        }
        Err(_) => {
            tracing::warn!("a message took too long to parse; kept as it came");
            None
        }
    }
}

/// The same message by SMTP and by IMAP, or delivered twice, is one contact: keyed
/// by its Message-ID, or by its bytes when it has none.
fn message_key(parsed: &InboundEmail, raw: &[u8]) -> ShortText {
    match &parsed.message_id {
        Some(id) => ShortText::key("mid:", id),
        None => {
            use sha2::Digest;
            ShortText::key("sha256:", &hex::encode(sha2::Sha256::digest(raw)))
        }
    }
}

/// A message on its way to intake, from either path.
struct Arrival<'a> {
    raw: &'a [u8],
    parsed: &'a InboundEmail,
    /// SMTP's RCPT TO (empty for fetched mail).
    rcpt_to: &'a [String],
    /// SMTP's `MAIL FROM:<>`.
    null_sender: bool,
    verdict: Verdict,
    /// Stored with the contact, in its transaction.
    original: Original,
    /// Parsed within the time limit (else kept as it came, for staff).
    read: bool,
}

impl MailboxStore for MailIntake {
    fn position(
        &self,
        folder: &str,
    ) -> Pin<Box<dyn Future<Output = Result<Option<Position>, NotStored>> + Send + '_>> {
        let key = self.mailbox_key(folder);
        Box::pin(async move {
            self.store
                .mailbox_position(&key)
                .await
                .map(|p| {
                    p.map(|(uid_validity, last_uid)| Position {
                        uid_validity,
                        last_uid,
                    })
                })
                .map_err(|e| NotStored(e.to_string()))
        })
    }

    fn deliver(
        &self,
        mail: FetchedMail,
    ) -> Pin<Box<dyn Future<Output = Result<(), NotStored>> + Send + '_>> {
        Box::pin(self.take_fetched(mail))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parsing_that_overruns_its_limit_is_abandoned() {
        let (release, held) = std::sync::mpsc::channel::<()>();
        // Finishes only when released, which is after the limit has passed.
        let outcome = bounded(Duration::from_millis(10), move || held.recv().is_ok()).await;
        assert_eq!(outcome, None);
        let _ = release.send(());
    }

    #[tokio::test]
    async fn parsing_that_panics_is_contained() {
        let outcome: Option<()> = bounded(Duration::from_secs(60), || panic!("bad MIME")).await;
        assert_eq!(outcome, None);
        let (parsed, read) = parse_bounded(Arc::from(&b"Subject: x\r\n\r\nhello\r\n"[..])).await;
        assert!(read);
        assert_eq!(parsed.subject, "x");
    }
}
