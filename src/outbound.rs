//! Everything the council sends, on every channel, goes through here: the outbox.
//!
//! A message is first written `pending` in the transaction that causes it ([`Outbound::queue`]:
//! an intake that opens a request, a staff reply), so it cannot be lost between the
//! cause and the send. The dispatcher ([`Outbound::dispatch`]) claims due messages
//! with a lease, sends each through its channel, and settles it: handed over, refused,
//! retried later with backoff (nothing left), or `unknown` (it may have gone — never
//! resent blind: a text is looked for in Twilio's message list first, and sent again
//! only if it is not there). A staff reply is delivered at once by the request that wrote it
//! ([`Outbound::send_now`]); the outbox is its safety net.
//!
//! The rules hold for every message: never to a number that has opted out, never
//! without the consent its purpose needs, always recorded and on the request's
//! timeline, whatever happened to it. Those statuses are the council's own
//! (`domain::message::status`); delivery statuses are the provider's.

use std::sync::Arc;
use std::time::Duration;

use contactd_email::{Address, MailSender, Mailbox, OutgoingMail, SendFailure};
use contactd_sms::{Credentials, OutboundSms, SendError, TwilioClient};
use sqlx::AnyConnection;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::configuration::{EmailProvider, Settings, SmsProvider};
use crate::domain::message::{Direction, Message, MessagePurpose, Occurrence, status};
use crate::domain::thread::ReplyTokens;
use crate::domain::{Actor, Channel, EmailAddress, PhoneNumber, QuietHours, Reference, Timestamp};
use crate::notify::{NotifySender, Sent};
use crate::scheduler::{Claim, Clock, ScheduleError, Scheduler};
use crate::store::messages::{self, Claimed, NewMessage};
use crate::store::{Store, StoreError};

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    Sms(PhoneNumber),
    Email(EmailAddress),
}

impl Recipient {
    pub fn channel(&self) -> Channel {
        match self {
            Recipient::Sms(_) => Channel::Sms,
            Recipient::Email(_) => Channel::Email,
        }
    }

    fn address(&self) -> &str {
        match self {
            Recipient::Sms(p) => p.as_str(),
            Recipient::Email(e) => e.as_str(),
        }
    }
}

/// A message the council wants to send.
#[derive(Debug, Clone)]
pub struct OutboundMessage {
    pub to: Recipient,
    /// Email only.
    pub subject: Option<String>,
    pub body: String,
    /// Email only: the HTML alternative.
    pub html: Option<String>,
    pub purpose: MessagePurpose,
    /// The request it is about: (id, reference).
    pub request: Option<(String, Reference)>,
    pub customer_id: Option<String>,
    /// A reminder: what it is of, and which occurrence.
    pub occurrence: Option<Occurrence>,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("the {0} channel is not configured for sending")]
    ChannelOff(Channel),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Clone)]
pub struct Outbound {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    sms: Option<SmsSender>,
    email: Option<EmailSender>,
    tokens: ReplyTokens,
    scheduler: Arc<dyn Scheduler>,
    clock: Arc<dyn Clock>,
    /// How long a claim lasts (`scheduler.lease_seconds`): longer than any send
    /// takes (Twilio's bounded retries, the relay's and Notify's timeouts), so a live
    /// dispatcher never loses its claim.
    lease: Duration,
    /// Rung after a commit that queued something, so it goes at once.
    wake: Notify,
}

struct SmsSender {
    via: SmsVia,
    quiet_hours: Option<QuietHours>,
    validity_period: u32,
}

/// The provider texts go through.
enum SmsVia {
    Twilio(Box<TwilioSms>),
    Notify(Arc<NotifySender>),
}

struct TwilioSms {
    client: TwilioClient,
    from: Option<String>,
    messaging_service_sid: Option<String>,
    status_callback: String,
}

struct EmailSender {
    via: EmailVia,
    quiet_hours: Option<QuietHours>,
    from: Mailbox,
    local: String,
    domain: String,
    plus_addressing: bool,
}

/// What mail goes through.
enum EmailVia {
    Relay(MailSender),
    Notify(Arc<NotifySender>),
}

/// Retries of a send that left nothing behind, then it is failed.
const MAX_ATTEMPTS: i64 = 8;
/// How often the dispatcher looks, when nothing wakes it.
const IDLE_POLL: Duration = Duration::from_secs(5);
/// Claims taken from the scheduler at a time.
const CLAIM_BATCH: usize = 32;
/// How often lapsed sends and claims are looked for, and the scheduler checked
/// against the database (more often if the lease is shorter).
const HOUSEKEEPING: Duration = Duration::from_secs(60);
/// A send of unknown outcome is asked about this long after it became unknown (or a
/// lease later, if that is sooner)…
const RECONCILE_AFTER: Duration = Duration::from_secs(60);
/// …and for this long; after that it waits for staff.
const RECONCILE_FOR: Duration = Duration::from_secs(86_400);
/// A message Notify accepted but has not settled is asked about after this long
/// without news (Notify sends no receipt for its own technical failures).
const POLL_UNSETTLED_AFTER: Duration = Duration::from_secs(3600);

impl Outbound {
    pub fn new(
        store: Store,
        settings: &Settings,
        tokens: ReplyTokens,
        scheduler: Arc<dyn Scheduler>,
        clock: Arc<dyn Clock>,
        notify: Option<Arc<NotifySender>>,
    ) -> Result<Self, String> {
        let s = &settings.sms;
        let sms = if !s.enabled() {
            None
        } else if let (SmsProvider::Notify, Some(n)) = (s.provider, &notify) {
            Some(SmsSender {
                via: SmsVia::Notify(n.clone()),
                quiet_hours: s.quiet_hours,
                validity_period: s.validity_period_seconds,
            })
        } else {
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
            let client = TwilioClient::new(&s.api_base, &s.account_sid, credentials)
                .map_err(|e| format!("sms.api_base: {e}"))?;
            let base = settings.http.public_url.as_str().trim_end_matches('/');
            Some(SmsSender {
                via: SmsVia::Twilio(Box::new(TwilioSms {
                    client,
                    from: (!s.from.is_empty()).then(|| s.from.clone()),
                    messaging_service_sid: (!s.messaging_service_sid.is_empty())
                        .then(|| s.messaging_service_sid.clone()),
                    status_callback: format!("{base}/webhooks/twilio/status"),
                })),
                quiet_hours: s.quiet_hours,
                validity_period: s.validity_period_seconds,
            })
        };
        let e = &settings.email;
        let email = match (e.sending(), e.from_parts()) {
            (true, Some((name, local, domain))) => {
                let address =
                    Address::new(&local, &domain).map_err(|x| format!("email.from: {x}"))?;
                let via = match (e.provider, &notify) {
                    (EmailProvider::Notify, Some(n)) => EmailVia::Notify(n.clone()),
                    _ => EmailVia::Relay(MailSender::new(
                        e.relay_url.expose(),
                        Duration::from_secs(e.relay_timeout_seconds),
                    )?),
                };
                Some(EmailSender {
                    quiet_hours: e.quiet_hours,
                    via,
                    from: Mailbox::new(name, address),
                    local,
                    domain,
                    plus_addressing: e.plus_addressing,
                })
            }
            _ => None,
        };
        Ok(Outbound {
            inner: Arc::new(Inner {
                store,
                sms,
                email,
                tokens,
                scheduler,
                clock,
                lease: Duration::from_secs(settings.scheduler.lease_seconds),
                wake: Notify::new(),
            }),
        })
    }

    /// The clock the outbox runs on.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    pub fn tokens(&self) -> &ReplyTokens {
        &self.inner.tokens
    }

    /// Whether messages to `channel` can be sent.
    pub fn can_send(&self, channel: Channel) -> bool {
        match channel {
            Channel::Sms => self.inner.sms.is_some(),
            Channel::Email => self.inner.email.is_some(),
            _ => false,
        }
    }

    /// Where a message to this resident goes: their preferred channel if it can be
    /// used, else a phone, else an email address.
    pub fn recipient_for(&self, d: &crate::domain::customer::CustomerDetails) -> Option<Recipient> {
        let sms = d
            .phones
            .first()
            .filter(|_| self.can_send(Channel::Sms))
            .map(|p| Recipient::Sms(p.clone()));
        let email = d
            .emails
            .first()
            .filter(|_| self.can_send(Channel::Email))
            .map(|e| Recipient::Email(e.clone()));
        match d.preferred_channel {
            Some(Channel::Email) => email.or(sms),
            _ => sms.or(email),
        }
    }

    /// Writes `m` into the outbox in the caller's transaction, held back at once if
    /// the rules forbid it. Ring [`Outbound::wake`] after the commit.
    pub async fn queue(
        &self,
        conn: &mut AnyConnection,
        actor: &Actor,
        m: &OutboundMessage,
        due: Timestamp,
    ) -> Result<String, OutboundError> {
        let channel = m.to.channel();
        if !self.can_send(channel) {
            return Err(OutboundError::ChannelOff(channel));
        }
        let held_back = match &m.to {
            Recipient::Sms(p) if messages::sms_suppressed(conn, p.as_str()).await? => {
                Some(status::SUPPRESSED)
            }
            _ => match (m.purpose.consent(), &m.customer_id) {
                (None, _) => None,
                (Some(c), Some(id)) if messages::consent_given(conn, id, c).await? => None,
                (Some(_), _) => Some(status::NO_CONSENT),
            },
        };
        let (message_id, thread_ids, thread_index) = match (&self.inner.email, &m.to) {
            (Some(email), Recipient::Email(_)) => {
                let token = m.request.as_ref().map(|(_, r)| self.inner.tokens.issue(*r));
                let unique = uuid::Uuid::now_v7().simple().to_string();
                let id = match token {
                    Some(t) => format!("<{t}.{unique}@{}>", email.domain),
                    None => format!("<{unique}@{}>", email.domain),
                };
                let (thread, index) = match &m.request {
                    Some((request_id, _)) => messages::thread_of(conn, request_id).await?,
                    None => (Vec::new(), None),
                };
                // One conversation per request, for Outlook too.
                let conversation = *uuid::Uuid::now_v7().as_bytes();
                let index =
                    contactd_email::thread_index::header_for_reply(index.as_deref(), conversation);
                (Some(id), thread, Some(index))
            }
            _ => (None, Vec::new(), None),
        };
        let (state, rank) = match held_back {
            Some(s) => (s, status::FINAL_RANK),
            None => (status::PENDING, 0),
        };
        let id = messages::insert(
            conn,
            actor,
            &NewMessage {
                channel,
                direction: Direction::Out,
                request_id: m.request.as_ref().map(|(id, _)| id.as_str()),
                customer_id: m.customer_id.as_deref(),
                contact_id: None,
                address: m.to.address(),
                subject: m.subject.as_deref(),
                body: &m.body,
                html: m.html.as_deref(),
                purpose: m.purpose,
                internet_message_id: message_id.as_deref(),
                thread_ids: &thread_ids,
                thread_index: thread_index.as_deref(),
                status: state,
                status_rank: rank,
                due_at: held_back.is_none().then_some(due),
                occurrence: m.occurrence.as_ref(),
            },
        )
        .await?;
        if let Some(why) = held_back {
            tracing::info!(message = %id, status = why, "message not sent");
            metrics::counter!("contactd_messages_sent_total", "channel" => channel.as_str(), "outcome" => why)
                .increment(1);
        }
        Ok(id)
    }

    /// After the commit that queued message `id`: hands its due time to the
    /// scheduler and wakes the dispatcher. Should the scheduler be unreachable, the
    /// dispatcher's check against the database finds the message within a minute.
    pub async fn scheduled(&self, id: &str, due: Timestamp) {
        if let Err(e) = self.inner.scheduler.schedule(id, due).await {
            tracing::warn!(message = %id, error = %e, "not yet scheduled; the next check will");
        }
        self.inner.wake.notify_one();
    }

    /// After the commit that cancelled message `id`: the scheduler forgets it (were
    /// it claimed meanwhile, its send is refused: it is no longer pending).
    pub async fn cancelled(&self, id: &str) {
        if let Err(e) = self.inner.scheduler.cancel(id).await {
            tracing::warn!(message = %id, error = %e, "a cancelled message is still scheduled; it will not be sent");
        }
    }

    /// Queues `m` and delivers it before returning (a staff member waits to see the
    /// outcome). Should this request die mid-way, the outbox still has it.
    pub async fn send_now(
        &self,
        actor: &Actor,
        m: &OutboundMessage,
    ) -> Result<Message, OutboundError> {
        let store = &self.inner.store;
        let mut tx = store.begin().await?;
        // Not due for the dispatcher until the lease would have run out: this request
        // sends it, unless it dies first.
        let due = Timestamp::from_millis(
            self.inner.clock.now().millis() + self.inner.lease.as_millis() as i64,
        );
        let id = self.queue(&mut tx, actor, m, due).await?;
        tx.commit().await?;
        self.scheduled(&id, due).await;
        if let Some(begun) = store
            .begin_send(&id, None, self.inner.clock.now(), self.inner.lease)
            .await?
            && let Some(again) = self.deliver(begun).await?
        {
            self.scheduled(&id, again).await;
        }
        Ok(store.message(&id).await?)
    }

    /// Sends due messages until `stop`; a send in progress finishes first.
    ///
    /// Each round: claim what is due from the scheduler, begin each send in the
    /// database under the claim's fence, renew the claim (a claim that is no longer
    /// ours is not sent), send, settle, ack. Housekeeping once a minute: lapsed
    /// sends marked `unknown`, lapsed claims reaped, and the scheduler checked
    /// against the database (rebuilt whole if it lost its state).
    pub async fn dispatch(self, stop: CancellationToken) {
        let store = &self.inner.store;
        let scheduler = &self.inner.scheduler;
        let clock = &self.inner.clock;
        // On the outbox's clock, so a test that moves it sees housekeeping happen.
        let mut next_housekeeping = clock.now();
        let mut complete = true;
        loop {
            // A Redis that restarted empty is rebuilt at once, not at the next round
            // of housekeeping: one EXISTS a round.
            if !complete && matches!(scheduler.lost_state().await, Ok(true)) {
                complete = true;
                next_housekeeping = clock.now();
            }
            if clock.now() >= next_housekeeping {
                next_housekeeping = Timestamp::from_millis(
                    clock.now().millis() + HOUSEKEEPING.min(self.inner.lease).as_millis() as i64,
                );
                match store.expire_message_leases(self.inner.clock.now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(
                        messages = n,
                        "sends interrupted by a stop are marked unknown for staff to check"
                    ),
                    Err(e) => tracing::error!(error = %e, "lapsed sends could not be marked"),
                }
                if let Err(e) = self.reconcile_unknown().await {
                    tracing::error!(error = %e, "messages of unknown outcome could not be checked");
                }
                if let Err(e) = self.poll_unsettled().await {
                    tracing::error!(error = %e, "messages sent through Notify could not be checked");
                }
                if let Err(e) = self.keep_scheduler(complete).await {
                    tracing::error!(error = %e, "the scheduler could not be brought up to date");
                } else {
                    complete = false;
                }
            }
            if let Err(e) = self.dispatch_due().await {
                tracing::error!(error = %e, "the outbox could not be worked");
                // Redis gone, say: look again soon, and check it then.
                next_housekeeping = clock.now();
            }
            let wait = match scheduler.next_due().await {
                Ok(Some(at)) => {
                    let ms = (at.millis() - self.inner.clock.now().millis()).max(0) as u64;
                    Duration::from_millis(ms).min(IDLE_POLL)
                }
                _ => IDLE_POLL,
            };
            let jumped = async {
                match self.inner.clock.jumps() {
                    Some(jumps) => jumps.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = jumped => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Sends whose outcome is unknown (timed out after the request left, or cut off by
    /// a stop), asked about at their provider: Twilio's message list (same number
    /// and body since the send began), Notify by the message's reference. Found: it
    /// was sent (no resend). Not there: it never left, so it is due again. The
    /// provider cannot say (an error; the relay never can): it stays for staff.
    /// Looked at from a minute after it became unknown (a provider's list needs a
    /// moment) for a day.
    async fn reconcile_unknown(&self) -> Result<(), StoreError> {
        let mut channels = Vec::new();
        if self.inner.sms.is_some() {
            channels.push(Channel::Sms);
        }
        if matches!(&self.inner.email, Some(e) if matches!(e.via, EmailVia::Notify(_))) {
            channels.push(Channel::Email);
        }
        if channels.is_empty() {
            return Ok(());
        }
        let store = &self.inner.store;
        let now = self.inner.clock.now().millis();
        let found = store
            .unknown_to_reconcile(
                &channels,
                Timestamp::from_millis(now - RECONCILE_FOR.as_millis() as i64),
                Timestamp::from_millis(
                    now - RECONCILE_AFTER.min(self.inner.lease).as_millis() as i64,
                ),
                self.inner.lease,
            )
            .await?;
        for u in found {
            let answer = match (&self.inner.sms, &self.inner.email, u.channel) {
                (Some(sms), _, Channel::Sms) => match &sms.via {
                    SmsVia::Twilio(t) => t
                        .client
                        .find_sent(&u.address, &u.body, u.began.millis())
                        .await
                        .map(|f| f.map(|f| (f.sid, f.status.as_str(), f.status.rank()))),
                    SmsVia::Notify(n) => n.find(&u.id).await,
                },
                (_, Some(email), Channel::Email) => match &email.via {
                    EmailVia::Notify(n) => n.find(&u.id).await,
                    EmailVia::Relay(_) => continue,
                },
                _ => continue,
            };
            match answer {
                Ok(Some((sid, status, rank))) => {
                    tracing::info!(message = %u.id, "a message of unknown outcome had reached its provider");
                    metrics::counter!("contactd_outbox_reconciled_total", "outcome" => "sent")
                        .increment(1);
                    store.message_handed_over(&u.id, &sid, status, rank).await?;
                }
                Ok(None) => {
                    tracing::info!(message = %u.id, "a message of unknown outcome never reached its provider; due again");
                    metrics::counter!("contactd_outbox_reconciled_total", "outcome" => "resent")
                        .increment(1);
                    let at = self.inner.clock.now();
                    if store.requeue_unknown(&u.id, at).await? {
                        self.scheduled(&u.id, at).await;
                    }
                }
                Err(why) => {
                    tracing::warn!(message = %u.id, error = %why, "the provider cannot say whether a message arrived; left for staff");
                }
            }
        }
        Ok(())
    }

    /// Messages Notify accepted that have had no news for an hour: asked about by
    /// id, since Notify sends no receipt for its own technical failures.
    async fn poll_unsettled(&self) -> Result<(), StoreError> {
        let mut through_notify = Vec::new();
        if let Some(SmsSender {
            via: SmsVia::Notify(n),
            ..
        }) = &self.inner.sms
        {
            through_notify.push((Channel::Sms, n));
        }
        if let Some(EmailSender {
            via: EmailVia::Notify(n),
            ..
        }) = &self.inner.email
        {
            through_notify.push((Channel::Email, n));
        }
        let store = &self.inner.store;
        let quiet_since = Timestamp::from_millis(
            self.inner.clock.now().millis() - POLL_UNSETTLED_AFTER.as_millis() as i64,
        );
        for (channel, notify) in through_notify {
            for sid in store.unsettled_sends(channel, quiet_since).await? {
                match notify.status_of(&sid).await {
                    Ok((status, rank)) => {
                        store.apply_message_status(&sid, status, rank, None).await?;
                        store.message_checked(&sid, self.inner.clock.now()).await?;
                    }
                    Err(why) => {
                        tracing::warn!(error = %why, "Notify cannot say how a message is doing");
                    }
                }
            }
        }
        Ok(())
    }

    /// The scheduler made to hold what the database has pending: everything at
    /// start and after it lost its state, else what is already due.
    async fn keep_scheduler(&self, complete: bool) -> Result<(), ScheduleError> {
        let scheduler = &self.inner.scheduler;
        let complete = complete || scheduler.lost_state().await?;
        if complete {
            tracing::info!("the scheduler is rebuilt from the database");
        }
        let by = (!complete).then(|| self.inner.clock.now());
        let entries = self.inner.store.pending_due(by).await?;
        scheduler.sync(entries, complete).await?;
        let reaped = scheduler.reap().await?;
        if reaped > 0 {
            tracing::warn!(claims = reaped, "claims that lapsed are due again");
        }
        Ok(())
    }

    async fn dispatch_due(&self) -> Result<(), ScheduleError> {
        loop {
            let claims = self
                .inner
                .scheduler
                .claim(CLAIM_BATCH, self.inner.lease)
                .await?;
            if claims.is_empty() {
                return Ok(());
            }
            metrics::counter!("contactd_outbox_claimed_total").increment(claims.len() as u64);
            // A batch's sends go side by side (a provider's answer takes a round
            // trip); each under its own claim and fence, and all finished before the
            // next claim, so a stop never leaves one behind.
            let mut sends = tokio::task::JoinSet::new();
            for claim in claims {
                let outbox = self.clone();
                sends.spawn(async move { outbox.deliver_claim(claim).await });
            }
            let mut failed = None;
            while let Some(done) = sends.join_next().await {
                match done {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => failed = Some(e),
                    // A send that panicked: its claim lapses and the database marks
                    // it for reconciliation, never a blind resend.
                    Err(e) => tracing::error!(error = %e, "a send failed unexpectedly"),
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
        }
    }

    /// One claimed message: the claim renewed (so it is still ours, for a whole
    /// lease), the send begun under its fence, sent, settled, acked.
    async fn deliver_claim(&self, claim: Claim) -> Result<(), ScheduleError> {
        let scheduler = &self.inner.scheduler;
        if !scheduler.renew(&claim, self.inner.lease).await? {
            // This instance stalled past its lease and someone else has it now.
            tracing::warn!(message = %claim.id, "claim lost before the send; left to its holder");
            metrics::counter!("contactd_outbox_fenced_total").increment(1);
            return Ok(());
        }
        let begun = self
            .inner
            .store
            .begin_send(
                &claim.id,
                Some(claim.fence),
                self.inner.clock.now(),
                self.inner.lease,
            )
            .await?;
        let Some(message) = begun else {
            // Sent, cancelled or begun already (a send that lapsed is reconciled by
            // the database, never resent), or a newer claim began it.
            scheduler.ack(&claim, None).await?;
            return Ok(());
        };
        let again = self.deliver(message).await?;
        scheduler.ack(&claim, again).await?;
        Ok(())
    }

    /// The rules again, at the moment of sending: a resident may have withdrawn
    /// consent, or a number opted out, since the message was scheduled (a reminder
    /// booked weeks ago). The status it is held back with, if it is.
    async fn held_back_now(&self, c: &Claimed) -> Result<Option<&'static str>, StoreError> {
        let mut conn = self.inner.store.pool().acquire().await?;
        if c.channel == Channel::Sms && messages::sms_suppressed(&mut conn, &c.address).await? {
            return Ok(Some(status::SUPPRESSED));
        }
        Ok(match (c.purpose.consent(), &c.customer_id) {
            (None, _) => None,
            (Some(p), Some(id)) if messages::consent_given(&mut conn, id, p).await? => None,
            (Some(_), _) => Some(status::NO_CONSENT),
        })
    }

    /// A text the council sends unprompted that is due longer ago than the SMS
    /// validity period (an outage held it up): it would arrive out of date, so it is
    /// dropped, as Twilio drops one it cannot deliver in that time.
    fn stale(&self, c: &Claimed) -> bool {
        let (Channel::Sms, Some(sms), Some(due)) = (c.channel, &self.inner.sms, c.due_at) else {
            return false;
        };
        c.purpose.unprompted()
            && self.inner.clock.now().millis() - due.millis()
                > i64::from(sms.validity_period) * 1000
    }

    /// When the quiet hours that hold this message back end, if they do now: only
    /// messages the council sends unprompted wait; answers to a resident do not.
    fn quiet_until(&self, c: &Claimed) -> Option<Timestamp> {
        if !c.purpose.unprompted() {
            return None;
        }
        let quiet = match c.channel {
            Channel::Sms => self.inner.sms.as_ref()?.quiet_hours?,
            Channel::Email => self.inner.email.as_ref()?.quiet_hours?,
            _ => return None,
        };
        quiet.ends_after(self.inner.clock.now())
    }

    /// Sends a begun message and settles it; when it is due again (a retry), if it is.
    async fn deliver(&self, c: Claimed) -> Result<Option<Timestamp>, StoreError> {
        let mut again = None;
        if let Some(held) = self.held_back_now(&c).await? {
            tracing::info!(message = %c.id, status = held, "message not sent: the resident's wishes changed");
            metrics::counter!("contactd_messages_sent_total", "channel" => c.channel.as_str(), "outcome" => held)
                .increment(1);
            self.inner
                .store
                .message_failed(&c.id, held, status::FINAL_RANK, None, None)
                .await?;
            return Ok(None);
        }
        if self.stale(&c) {
            tracing::info!(message = %c.id, "a text that could not go in time is dropped");
            metrics::counter!("contactd_messages_sent_total", "channel" => c.channel.as_str(), "outcome" => status::EXPIRED)
                .increment(1);
            self.inner
                .store
                .message_failed(
                    &c.id,
                    status::EXPIRED,
                    status::FINAL_RANK,
                    None,
                    Some("stale: due longer ago than the SMS validity period"),
                )
                .await?;
            return Ok(None);
        }
        if let Some(until) = self.quiet_until(&c) {
            let store = &self.inner.store;
            if let Some(start) = store.appointment_start_of(&c.id).await?
                && start <= until
            {
                tracing::info!(message = %c.id, "reminder not sent: quiet hours last past the appointment");
                metrics::counter!("contactd_messages_sent_total", "channel" => c.channel.as_str(), "outcome" => status::EXPIRED)
                    .increment(1);
                store
                    .message_failed(&c.id, status::EXPIRED, status::FINAL_RANK, None, None)
                    .await?;
                return Ok(None);
            }
            tracing::debug!(message = %c.id, until = %until, "held until quiet hours end");
            store.defer_message(&c.id, until).await?;
            return Ok(Some(until));
        }
        // The send is polled only while its lease lasts. A dispatcher that stalled
        // past it (stopped, starved) may find the message taken over by another
        // instance, which looked for it at the provider and, not finding it, sent it:
        // so the stale send makes no further progress, and the message is left to
        // lapse and be reconciled like any interrupted send.
        let clock = self.inner.clock.clone();
        let lease_until = c.lease_until;
        let mut send = std::pin::pin!(async {
            match c.channel {
                Channel::Sms => self.deliver_sms(&c).await,
                Channel::Email => self.deliver_email(&c).await,
                other => Delivery::Refused {
                    code: None,
                    why: format!("{other} messages cannot be sent"),
                },
            }
        });
        let within_lease = std::future::poll_fn(|cx| {
            if clock.now() >= lease_until {
                return std::task::Poll::Ready(None);
            }
            send.as_mut().poll(cx).map(Some)
        });
        let Some(outcome) = within_lease.await else {
            tracing::warn!(message = %c.id, "the send's lease ran out before it was made; left to be reconciled");
            metrics::counter!("contactd_outbox_fenced_total").increment(1);
            return Ok(None);
        };
        let channel = c.channel.as_str();
        let store = &self.inner.store;
        match outcome {
            Delivery::HandedOver {
                provider_id,
                status,
                rank,
            } => {
                metrics::counter!("contactd_messages_sent_total", "channel" => channel, "outcome" => "sent")
                    .increment(1);
                // Lateness of what was scheduled (a staff reply's "due" is its safety
                // net, not its time, so it is left out).
                if let Some(due) = c.due_at
                    && c.purpose.unprompted()
                {
                    let late = (self.inner.clock.now().millis() - due.millis()).max(0);
                    metrics::histogram!("contactd_outbox_lateness_seconds", "channel" => channel)
                        .record(late as f64 / 1000.0);
                }
                store
                    .message_handed_over(&c.id, &provider_id, status, rank)
                    .await?;
            }
            Delivery::Retry(why) if c.attempts < MAX_ATTEMPTS => {
                // 30 s, 1, 2, 4 … minutes: a relay or provider outage is ridden out.
                let backoff = 30_000i64 << (c.attempts - 1).clamp(0, 10);
                tracing::warn!(message = %c.id, attempt = c.attempts, error = %why, "send failed; will retry");
                let at = Timestamp::from_millis(self.inner.clock.now().millis() + backoff);
                store.retry_message_later(&c.id, at, &why).await?;
                again = Some(at);
            }
            Delivery::Hold { until, why } => {
                tracing::info!(message = %c.id, until = %until, reason = %why, "held by the provider's rate limit");
                store.defer_message(&c.id, until).await?;
                again = Some(until);
            }
            Delivery::Retry(why) => {
                tracing::warn!(message = %c.id, error = %why, "message not sent after the last retry");
                metrics::counter!("contactd_messages_sent_total", "channel" => channel, "outcome" => status::DEAD)
                    .increment(1);
                store
                    .message_failed(&c.id, status::DEAD, status::FINAL_RANK, None, Some(&why))
                    .await?;
            }
            Delivery::Refused { code, why } => {
                tracing::warn!(message = %c.id, ?code, error = %why, "the provider refused a message");
                metrics::counter!("contactd_messages_sent_total", "channel" => channel, "outcome" => "failed")
                    .increment(1);
                store
                    .message_failed(&c.id, status::FAILED, status::FINAL_RANK, code, Some(&why))
                    .await?;
            }
            Delivery::OptedOut { code } => {
                // Twilio knows of a STOP we missed: believe it.
                if let Ok(number) = PhoneNumber::parse(&c.address) {
                    store
                        .set_sms_suppressed(
                            &Actor::System,
                            &number,
                            true,
                            "Twilio 21610: recipient opted out",
                        )
                        .await?;
                }
                metrics::counter!("contactd_messages_sent_total", "channel" => channel, "outcome" => "opted_out")
                    .increment(1);
                store
                    .message_failed(
                        &c.id,
                        status::SUPPRESSED,
                        status::FINAL_RANK,
                        Some(code),
                        None,
                    )
                    .await?;
            }
            Delivery::Unknown(why) => {
                tracing::error!(message = %c.id, error = %why, "no answer to a send; kept as unknown");
                metrics::counter!("contactd_messages_sent_total", "channel" => channel, "outcome" => "unknown")
                    .increment(1);
                store.message_unknown(&c.id, &why).await?;
            }
        }
        Ok(again)
    }

    async fn deliver_sms(&self, c: &Claimed) -> Delivery {
        let Some(sender) = &self.inner.sms else {
            return Delivery::Retry("the SMS channel is not configured".into());
        };
        let sms = match &sender.via {
            SmsVia::Twilio(t) => t,
            SmsVia::Notify(n) => return self.deliver_notify(n, c).await,
        };
        let outbound = OutboundSms {
            to: &c.address,
            from: sms.from.as_deref(),
            messaging_service_sid: sms.messaging_service_sid.as_deref(),
            body: &c.body,
            status_callback: Some(&sms.status_callback),
            validity_period: Some(sender.validity_period),
        };
        match sms.client.send(&outbound).await {
            Ok(sent) => Delivery::HandedOver {
                provider_id: sent.sid,
                status: sent.status.as_str(),
                rank: sent.status.rank(),
            },
            Err(SendError::OptedOut) => Delivery::OptedOut {
                code: contactd_sms::client::OPTED_OUT,
            },
            Err(e @ SendError::Rejected { code, .. }) => Delivery::Refused {
                code,
                why: e.to_string(),
            },
            // The client already retried a few times within the request; the outbox
            // keeps trying later.
            Err(e @ SendError::Unavailable { .. }) => Delivery::Retry(e.to_string()),
            Err(SendError::Unknown(e)) => Delivery::Unknown(e),
        }
    }

    async fn deliver_email(&self, c: &Claimed) -> Delivery {
        let Some(email) = &self.inner.email else {
            return Delivery::Retry("sending email is not configured".into());
        };
        let relay = match &email.via {
            EmailVia::Relay(r) => r,
            EmailVia::Notify(n) => return self.deliver_notify(n, c).await,
        };
        let Ok(to) = c.address.parse::<Address>() else {
            return Delivery::Refused {
                code: None,
                why: format!("{} is not an address mail can be sent to", c.address),
            };
        };
        let token = c
            .request_id
            .as_ref()
            .and(c.internet_message_id.as_deref())
            .and_then(|id| self.inner.tokens.find_in(id))
            .map(|r| self.inner.tokens.issue(r));
        let reply_to = match (&token, email.plus_addressing) {
            (Some(t), true) => Address::new(format!("{}+{t}", email.local), &email.domain).ok(),
            _ => None,
        };
        let bounce_local = format!("{}+bounce-{}", email.local, c.id.replace('-', ""));
        let Ok(envelope_from) = Address::new(bounce_local, &email.domain) else {
            return Delivery::Refused {
                code: None,
                why: "the envelope sender cannot be formed".into(),
            };
        };
        let message_id = c
            .internet_message_id
            .clone()
            .unwrap_or_else(|| format!("<{}@{}>", c.id, email.domain));
        let mail = OutgoingMail {
            from: email.from.clone(),
            to,
            reply_to,
            envelope_from,
            subject: c.subject.clone().unwrap_or_default(),
            text: c.body.clone(),
            html: c.html.clone(),
            message_id: message_id.clone(),
            references: c.thread_ids.clone(),
            thread_index: c.thread_index.clone(),
            automatic: c.purpose == MessagePurpose::Acknowledgement,
        };
        match relay.send(&mail).await {
            Ok(()) => Delivery::HandedOver {
                provider_id: message_id,
                status: "sent",
                rank: 4,
            },
            Err(SendFailure::Transient(why)) => Delivery::Retry(why),
            Err(SendFailure::Refused(why)) => Delivery::Refused { code: None, why },
            Err(SendFailure::Unknown(why)) => Delivery::Unknown(why),
        }
    }
}

impl Outbound {
    /// A text or an email through GOV.UK Notify, its outbox id as the reference.
    async fn deliver_notify(&self, notify: &NotifySender, c: &Claimed) -> Delivery {
        let sent = notify.send(self.inner.clock.now(), c).await;
        match sent {
            Sent::Accepted { id, status, rank } => Delivery::HandedOver {
                provider_id: id,
                status,
                rank,
            },
            Sent::Refused { code, why } => Delivery::Refused {
                code: Some(code),
                why,
            },
            Sent::Held { until, why } => Delivery::Hold { until, why },
            Sent::Retry(why) => Delivery::Retry(why),
            Sent::Unknown(why) => Delivery::Unknown(why),
        }
    }
}

/// What a channel made of a send.
enum Delivery {
    HandedOver {
        provider_id: String,
        status: &'static str,
        rank: i64,
    },
    /// Nothing left; trying again later may work.
    Retry(String),
    /// Nothing left; the provider takes nothing more before `until` (a rate limit).
    /// Not counted as an attempt.
    Hold {
        until: Timestamp,
        why: String,
    },
    Refused {
        code: Option<i64>,
        why: String,
    },
    OptedOut {
        code: i64,
    },
    /// It may have gone.
    Unknown(String),
}

/// The HTML alternative of a plain-text message: the same words, escaped, one
/// paragraph per blank-line-separated block (one template gives both parts).
pub fn html_from_text(text: &str) -> String {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let paragraphs: Vec<String> = text
        .split("\n\n")
        .filter(|p| !p.trim().is_empty())
        .map(|p| format!("<p>{}</p>", escape(p.trim()).replace('\n', "<br>")))
        .collect();
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"></head><body>{}</body></html>",
        paragraphs.join("")
    )
}
