//! Intake: the one entry point through which every channel's contact enters the
//! record. A channel adapter parses its protocol into an [`InboundContact`] and calls
//! [`Intake::receive`]; it acknowledges its peer only after `receive` returns, by
//! which time the contact is committed.
//!
//! The rules, in order:
//! 1. Idempotence: (channel, external id) is claimed first; a redelivery returns the
//!    first delivery's outcome and creates nothing.
//! 2. Identity: the sender's E.164 number or normalised email address. One live record
//!    holding it: that resident. None: a new record. Several: nobody is guessed; the
//!    request is flagged for staff (`identity_review`).
//! 3. Request, in this order:
//!    - an explicit reference (keyed, in a text, an email's `[SR-…]` subject tag)
//!      attaches to that request (an unknown one is refused, so the channel can say so)
//!      — from a channel only when the sender owns it (their number or address is on
//!      the request's resident, or on a representative of theirs still in time) and
//!      the channel proved the sender's address;
//!    - then the thread ([`ThreadHints`]): a reply token of ours (the recipient
//!      address, a Message-ID we sent), a Message-ID we sent or one this sender sent
//!      before (proven senders only), or a text within the reply window of one we sent;
//!      a thread of ours joined from an address that is neither the resident's nor a
//!      representative's (someone copied in) flags the request for staff, and never
//!      changes whose request it is;
//!    - otherwise a new request for the contact's service, or the default service.
//!    - a reference or thread that was named but not honoured (someone else's, or an
//!      unproven sender's) opens a request of its own, flagged for staff to join
//!      them, so nobody can add to (or learn of) someone else's request by quoting
//!      its number.
//! 4. Acknowledgement: a new request is acknowledged on the channel it came by, when
//!    the channel says the contact may be answered (never automatic mail), at most
//!    `max_acknowledgements_per_day` to one address. The acknowledgement is written to
//!    the outbox in the same transaction as the contact, so it cannot be lost.
//!
//! A contact recorded by staff is audited as that staff member, may attach to a
//! special-category request only if they may read it, and has its own key space
//! (`staff/…`), so it can never claim a channel's id and pre-empt a real contact.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::configuration::{ServiceCode, Settings};
use crate::domain::message::{Direction, MessagePurpose, status};
use crate::domain::request::TimelineKind;
use crate::domain::{
    Actor, Channel, EmailAddress, IdentityMatch, LongText, PhoneNumber, Reference, ShortText,
    Timestamp,
};
use crate::outbound::{Outbound, OutboundMessage, Recipient};
use crate::store::audit::{self, Action, Entity};
use crate::store::messages::{self, NewMessage};
use crate::store::requests::{Event, Opening, SpecialCategoryAccess};
use crate::store::{Store, StoreError, contacts, customers, lock_key, requests, services};

/// Who sent a contact, as the channel adapter established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    Phone(PhoneNumber),
    Email(EmailAddress),
    /// Withheld or unparseable caller id: the contact is kept, the identity is not.
    Unknown(String),
}

impl Sender {
    fn as_text(&self) -> &str {
        match self {
            Sender::Phone(p) => p.as_str(),
            Sender::Email(e) => e.as_str(),
            Sender::Unknown(s) => s,
        }
    }
}

/// Who brought the contact in.
#[derive(Debug, Clone)]
pub enum Origin {
    /// The resident, through a channel adapter.
    Channel,
    /// A staff member recording it (`POST /contacts`).
    Staff {
        actor: Actor,
        access: SpecialCategoryAccess,
    },
}

/// A contact from a resident, parsed and bounded by its channel adapter.
#[derive(Debug, Clone)]
pub struct InboundContact {
    pub channel: Channel,
    pub origin: Origin,
    /// The channel's own id (MessageSid, Message-ID, the SIP dialog): the idempotence
    /// key. Staff contacts' keys are kept apart (see [`staff_key`]).
    pub external_id: ShortText,
    pub from: Sender,
    /// The council address it was sent to (number, mailbox).
    pub to: ShortText,
    pub received_at: Timestamp,
    pub content: LongText,
    /// A reference the resident gave explicitly (keyed, in a subject or text).
    pub reference: Option<Reference>,
    /// The service the resident chose (IVR menu, web form), if any.
    pub service: Option<ServiceCode>,
    /// What the channel knows of the conversation this contact continues.
    pub thread: ThreadHints,
    /// Where an acknowledgement of a new request would go; `None` when the contact
    /// must not be answered automatically (a call; automatic mail and bounces).
    pub acknowledge: Option<Recipient>,
    /// For a text channel's message: kept with the messages sent, so replies thread.
    pub message: Option<ReceivedMessage>,
    /// The contact exactly as it arrived (an email's raw message), kept with it.
    pub original: Option<crate::store::mail::Original>,
    /// Files the resident attached, kept with it.
    pub attachments: Vec<crate::store::attachments::NewAttachment>,
    /// The channel could not read the contact fully (it is kept as it arrived): a
    /// new request is flagged for staff.
    pub needs_review: bool,
}

/// Thread hints a channel found in a contact; intake decides what they are worth.
#[derive(Debug, Clone, Default)]
pub struct ThreadHints {
    /// The sender's address is proven: the channel authenticated it (an email whose
    /// DMARC passed; a trunk's or Twilio's caller id). An unproven sender's explicit
    /// reference is never trusted; only a reply token joins its contact to a request.
    pub sender_proven: bool,
    /// A reply token of ours that verified (the channel checked its HMAC).
    pub reply_token: Option<Reference>,
    /// Message-IDs the contact answers: In-Reply-To, then References.
    pub answers: Vec<String>,
    /// SMS: a text within this long of one we sent joins that message's request.
    pub reply_window: Option<Duration>,
}

/// A received message's own details (its text is the contact's content).
#[derive(Debug, Clone, Default)]
pub struct ReceivedMessage {
    pub subject: Option<String>,
    /// An email's Message-ID, with its angle brackets.
    pub internet_message_id: Option<String>,
    /// Outlook's Thread-Index (base64), so our replies extend it.
    pub thread_index: Option<String>,
}

/// How new requests are acknowledged, per channel.
#[derive(Debug, Clone)]
pub struct Acknowledgements {
    pub sms_text: String,
    pub email_subject: String,
    pub email_text: String,
    pub max_per_address_per_day: u32,
}

impl Acknowledgements {
    pub fn from_settings(settings: &Settings) -> Self {
        Acknowledgements {
            sms_text: settings.sms.acknowledgement.clone(),
            email_subject: settings.email.acknowledgement_subject.clone(),
            email_text: settings.email.acknowledgement.clone(),
            max_per_address_per_day: settings.email.max_acknowledgements_per_day,
        }
    }
}

/// What intake did with a contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntakeOutcome {
    pub contact_id: String,
    pub request_id: String,
    pub reference: Reference,
    pub customer_id: Option<String>,
    pub identity: IdentityMatch,
    pub opened_request: bool,
    /// This delivery had been received before; nothing new was created.
    pub redelivery: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("no request has the reference {0}")]
    UnknownReference(Reference),
    #[error("{0} is not a service in the catalogue")]
    UnknownService(ServiceCode),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Intake as channels hold it. On PostgreSQL each contact is its own transaction
/// (many run at once). On SQLite, where one writer at a time commits and each commit
/// waits for the disk, the contacts waiting together are taken in one transaction
/// (group commit), each in its own savepoint, so one failing contact costs the others
/// nothing — and none is answered before the commit that holds it.
#[derive(Clone)]
pub struct Intake {
    core: Arc<Core>,
    batches: Option<mpsc::Sender<Job>>,
}

/// A contact waiting for the next group commit, and who to tell.
type Job = (InboundContact, oneshot::Sender<Result<Taken, IntakeError>>);

/// The most contacts in one group commit.
const MAX_BATCH: usize = 64;

struct Core {
    store: Store,
    default_service: ServiceCode,
    outbound: Outbound,
    acknowledgements: Acknowledgements,
}

/// A contact taken in, waiting for its transaction's commit.
struct Taken {
    outcome: IntakeOutcome,
    acknowledged: Option<(String, Timestamp)>,
}

impl Intake {
    pub fn new(store: Store, settings: &Settings, outbound: Outbound) -> Self {
        let group_commit = store.backend() == crate::configuration::Backend::Sqlite;
        let core = Arc::new(Core {
            store,
            default_service: settings.intake.default_service.clone(),
            outbound,
            acknowledgements: Acknowledgements::from_settings(settings),
        });
        let batches = group_commit.then(|| {
            let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
            // The one writer gets a thread of its own: each of its statements is a
            // hand-off to SQLite's worker and back, and on the shared workers every
            // hand-off would wait behind SMTP sessions and sender checks.
            let core = core.clone();
            std::thread::Builder::new()
                .name("intake-commits".into())
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime.block_on(group_commits(core, rx)),
                        // Without it, contacts are taken one by one (see `receive`).
                        Err(e) => {
                            tracing::error!(error = %e, "intake's commit thread did not start")
                        }
                    }
                })
                .expect("a thread can be started at start-up");
            tx
        });
        Intake { core, batches }
    }

    pub async fn receive(&self, contact: &InboundContact) -> Result<IntakeOutcome, IntakeError> {
        let taken = match self.core.authorise(contact).await {
            Err(e) => Err(e),
            Ok(()) => match &self.batches {
                Some(batches) => {
                    let (tell, told) = oneshot::channel();
                    let batched = match batches.send((contact.clone(), tell)).await {
                        Ok(()) => told.await.ok(),
                        Err(_) => None,
                    };
                    match batched {
                        Some(outcome) => outcome,
                        // The group-commit task is gone (it never should be): the
                        // contact is taken on its own. Idempotence makes that safe
                        // even if its batch did commit.
                        None => {
                            tracing::error!(
                                "intake's group commit stopped; taking contacts one by one"
                            );
                            self.core.take_in(contact).await
                        }
                    }
                }
                None => self.core.take_in(contact).await,
            },
        };
        // After the commit, on the caller's task: the one SQLite writer never waits
        // on the scheduler.
        let outcome = match taken {
            Ok(taken) => Ok(self.core.committed(contact, taken).await),
            Err(e) => Err(e),
        };
        if let Err(IntakeError::Store(e)) = &outcome {
            // A contact that could not be stored: the night shift's first page.
            tracing::error!(channel = contact.channel.as_str(), error = %e, "intake failed");
            metrics::counter!("contactd_intake_failures_total", "channel" => contact.channel.as_str())
                .increment(1);
        }
        outcome
    }
}

/// SQLite's group commits: takes the contacts waiting, one transaction for all of
/// them, a savepoint for each. Ends when every `Intake` is gone.
async fn group_commits(core: Arc<Core>, mut jobs: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let results = core.take_in_batch(&batch).await;
        for ((_, tell), result) in batch.drain(..).zip(results) {
            let _ = tell.send(result);
        }
    }
}

impl Core {
    /// Staff are authorised before the write transaction: a refusal is audited in its own.
    async fn authorise(&self, contact: &InboundContact) -> Result<(), IntakeError> {
        if let (Origin::Staff { actor, access }, Some(reference)) =
            (&contact.origin, contact.reference)
        {
            match self.store.authorise_change(actor, reference, *access).await {
                Err(StoreError::NotFound) => return Err(IntakeError::UnknownReference(reference)),
                other => other?,
            }
        }
        Ok(())
    }

    /// One contact, one transaction.
    async fn take_in(&self, contact: &InboundContact) -> Result<Taken, IntakeError> {
        let mut tx = self.store.begin().await?;
        let taken = self.take_in_tx(&mut tx, contact).await?;
        tx.commit().await?;
        Ok(taken)
    }

    /// Several contacts, one transaction, a savepoint each.
    async fn take_in_batch(&self, jobs: &[Job]) -> Vec<Result<Taken, IntakeError>> {
        let failed = |e: &StoreError| {
            jobs.iter()
                .map(|_| Err(StoreError::Failed(e.to_string()).into()))
                .collect()
        };
        let mut tx = match self.store.begin().await {
            Ok(tx) => tx,
            Err(e) => return failed(&e),
        };
        let mut taken = Vec::with_capacity(jobs.len());
        for (contact, _) in jobs {
            let result = async {
                sqlx::query("SAVEPOINT contact")
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from)?;
                let t = self.take_in_tx(&mut tx, contact).await;
                let end = if t.is_ok() {
                    "RELEASE SAVEPOINT contact"
                } else {
                    "ROLLBACK TO SAVEPOINT contact"
                };
                sqlx::query(end)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from)?;
                if t.is_err() {
                    sqlx::query("RELEASE SAVEPOINT contact")
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::from)?;
                }
                t
            }
            .await;
            taken.push(result);
        }
        if let Err(e) = tx.commit().await {
            return failed(&e);
        }
        taken
    }

    /// After the commit: an acknowledgement scheduled, the count kept.
    async fn committed(&self, contact: &InboundContact, taken: Taken) -> IntakeOutcome {
        if let Some((message, due)) = &taken.acknowledged {
            self.outbound.scheduled(message, *due).await;
        }
        let outcome = if taken.outcome.redelivery {
            "redelivery"
        } else if taken.outcome.opened_request {
            "opened"
        } else {
            "attached"
        };
        metrics::counter!("contactd_intake_contacts_total", "channel" => contact.channel.as_str(), "outcome" => outcome)
            .increment(1);
        taken.outcome
    }

    /// Everything between begin and commit, in the caller's transaction.
    async fn take_in_tx(
        &self,
        tx: &mut sqlx::AnyConnection,
        contact: &InboundContact,
    ) -> Result<Taken, IntakeError> {
        let actor = match &contact.origin {
            Origin::Channel => Actor::Channel(contact.channel),
            Origin::Staff { actor, .. } => actor.clone(),
        };
        let arrival = contacts::Arrival {
            channel: contact.channel,
            external_id: contact.external_id.as_str(),
            from: contact.from.as_text(),
            to: contact.to.as_str(),
            received_at: contact.received_at,
            content: contact.content.as_str(),
        };
        let Some(contact_id) = contacts::claim(tx, &arrival).await? else {
            return Ok(Taken {
                outcome: self.redelivered(tx, contact).await?,
                acknowledged: None,
            });
        };
        if let Some(original) = &contact.original {
            crate::store::mail::insert_original(tx, contact.channel, Some(&contact_id), original)
                .await?;
        }
        for attachment in &contact.attachments {
            crate::store::attachments::insert(tx, &contact_id, attachment).await?;
        }

        let (customer_id, identity, candidates) = self.identify(tx, &actor, &contact.from).await?;
        let mut audit = audit::Batch::new(&actor);
        if let (IdentityMatch::Created, Some(id)) = (identity, &customer_id) {
            audit.add(
                Action::Create,
                Entity::Customer,
                id,
                Some(contact.from.as_text()),
            );
        }

        let routed = self.route(tx, contact).await?;
        let (request, opened) = match routed.request_id {
            Some(id) => {
                if routed.stranger {
                    metrics::counter!("contactd_intake_stranger_replies_total", "channel" => contact.channel.as_str())
                        .increment(1);
                    requests::hold_for_review(tx, &id).await?;
                }
                (requests::read(tx, &id).await?, false)
            }
            None => {
                let code = contact.service.as_ref().unwrap_or(&self.default_service);
                let service = services::active_service(tx, code)
                    .await?
                    .ok_or_else(|| IntakeError::UnknownService(code.clone()))?;
                let summary = summary_of(contact);
                let request = requests::open(
                    tx,
                    &actor,
                    &Opening {
                        customer_id: customer_id.as_deref(),
                        service: &service,
                        summary: &summary,
                        special_category: false,
                        identity_review: customer_id.is_none()
                            || routed.not_honoured
                            || contact.needs_review,
                        opened_via: contact.channel,
                    },
                )
                .await?;
                audit.add(Action::Create, Entity::Request, &request.id, None);
                (request, true)
            }
        };

        contacts::settle(
            tx,
            &contact_id,
            customer_id.as_deref(),
            &request.id,
            identity,
            &candidates,
        )
        .await?;
        requests::append(
            tx,
            &request.id,
            &Event {
                kind: TimelineKind::Contact,
                actor: &actor,
                contact_id: Some(&contact_id),
                body: None,
                from: None,
                to: None,
                message_id: None,
            },
        )
        .await?;
        if let Some(m) = &contact.message {
            messages::insert(
                tx,
                &actor,
                &NewMessage {
                    channel: contact.channel,
                    direction: Direction::In,
                    request_id: Some(&request.id),
                    customer_id: customer_id.as_deref(),
                    contact_id: Some(&contact_id),
                    address: contact.from.as_text(),
                    subject: m.subject.as_deref(),
                    body: contact.content.as_str(),
                    html: None,
                    purpose: MessagePurpose::Reply,
                    internet_message_id: m.internet_message_id.as_deref(),
                    thread_ids: &contact.thread.answers,
                    thread_index: m.thread_index.as_deref(),
                    status: status::RECEIVED,
                    status_rank: status::FINAL_RANK,
                    due_at: None,
                    occurrence: None,
                },
            )
            .await?;
        }
        let acknowledged = match (&contact.acknowledge, opened) {
            (Some(to), true) => {
                self.acknowledge(tx, &actor, contact, to, &request, customer_id.as_deref())
                    .await?
            }
            _ => None,
        };
        let detail = format!("contact {contact_id}");
        audit.add(Action::Intake, Entity::Request, &request.id, Some(&detail));
        audit.write(tx).await?;
        Ok(Taken {
            outcome: IntakeOutcome {
                contact_id,
                request_id: request.id,
                reference: request.reference,
                customer_id,
                identity,
                opened_request: opened,
                redelivery: false,
            },
            acknowledged,
        })
    }

    /// Which existing request the contact joins, if any (see the rules above).
    async fn route(
        &self,
        tx: &mut sqlx::AnyConnection,
        contact: &InboundContact,
    ) -> Result<Routed, IntakeError> {
        let from = contact.from.as_text();
        let hints = &contact.thread;
        let mut not_honoured = false;
        if let Some(reference) = contact.reference {
            let found = match requests::lock(tx, reference).await {
                Ok(id) => Some(id),
                Err(StoreError::NotFound) => match &contact.origin {
                    Origin::Staff { .. } => return Err(IntakeError::UnknownReference(reference)),
                    // A resident's mistyped or invented number: like someone else's,
                    // it is not honoured, and the thread may still place the contact.
                    Origin::Channel => None,
                },
                Err(e) => return Err(e.into()),
            };
            // Staff were authorised before the transaction; a resident must own the
            // request, with an address the channel proved.
            let theirs = match (&found, &contact.origin) {
                (None, _) => false,
                (Some(_), Origin::Staff { .. }) => true,
                (Some(id), Origin::Channel) => {
                    hints.sender_proven
                        && requests::sender_owns(tx, id, from, Timestamp::now()).await?
                }
            };
            if let (true, Some(id)) = (theirs, found) {
                return Ok(Routed::join(id));
            }
            metrics::counter!("contactd_intake_foreign_references_total", "channel" => contact.channel.as_str())
                .increment(1);
            not_honoured = true;
        }
        if let Some(reference) = hints.reply_token {
            // The token is ours and unforgeable: whoever holds it was sent it (or
            // shown it: a stranger's contact joins, and staff are asked to look).
            match requests::lock(tx, reference).await {
                Ok(id) => return Routed::thread(tx, id, from).await,
                Err(StoreError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        for m in messages::by_internet_ids(tx, &hints.answers).await? {
            let ours = m.direction == Direction::Out;
            let sender_own = m.address == from && hints.sender_proven;
            if ours {
                return Routed::thread(tx, m.request_id, from).await;
            }
            if sender_own {
                return Ok(Routed::join(m.request_id));
            }
            // Someone else's message, or an unproven sender's claim to their own.
            not_honoured = true;
        }
        if let Some(window) = hints.reply_window {
            let since =
                Timestamp::from_millis(Timestamp::now().millis() - window.as_millis() as i64);
            if let Some(id) =
                messages::recent_outbound_request(tx, contact.channel, from, since).await?
            {
                return Ok(Routed::join(id));
            }
        }
        Ok(Routed {
            request_id: None,
            not_honoured,
            stranger: false,
        })
    }

    /// Queues the acknowledgement of a new request, unless the sender has had their
    /// share today. Returns whether one was queued.
    async fn acknowledge(
        &self,
        tx: &mut sqlx::AnyConnection,
        actor: &Actor,
        contact: &InboundContact,
        to: &Recipient,
        request: &crate::domain::request::ServiceRequest,
        customer_id: Option<&str>,
    ) -> Result<Option<(String, Timestamp)>, IntakeError> {
        if !self.outbound.can_send(to.channel()) {
            return Ok(None);
        }
        let acks = &self.acknowledgements;
        let reference = request.reference.to_string();
        let (subject, body) = match to {
            Recipient::Sms(_) => (None, acks.sms_text.replace("{reference}", &reference)),
            Recipient::Email(address) => {
                let day_ago = Timestamp::from_millis(Timestamp::now().millis() - 86_400_000);
                let sent = messages::acknowledgements_since(tx, address.as_str(), day_ago).await?;
                if sent >= i64::from(acks.max_per_address_per_day) {
                    tracing::info!(
                        reference = %request.reference,
                        "acknowledgement not sent: this address has had its share today"
                    );
                    return Ok(None);
                }
                let theirs = contact
                    .message
                    .as_ref()
                    .and_then(|m| m.subject.as_deref())
                    .unwrap_or_default();
                let subject = acks
                    .email_subject
                    .replace("{reference}", &reference)
                    .replace("{subject}", theirs);
                (
                    Some(subject),
                    acks.email_text.replace("{reference}", &reference),
                )
            }
        };
        let html = subject
            .as_ref()
            .map(|_| crate::outbound::html_from_text(&body));
        let due = Timestamp::now();
        let id = self
            .outbound
            .queue(
                tx,
                actor,
                &OutboundMessage {
                    to: to.clone(),
                    subject,
                    body,
                    html,
                    purpose: MessagePurpose::Acknowledgement,
                    request: Some((request.id.clone(), request.reference)),
                    customer_id: customer_id.map(str::to_string),
                    occurrence: None,
                },
                due,
            )
            .await
            .map_err(|e| match e {
                crate::outbound::OutboundError::Store(e) => IntakeError::Store(e),
                other => IntakeError::Store(StoreError::Failed(other.to_string())),
            })?;
        Ok(Some((id, due)))
    }

    /// The first delivery's outcome, for a redelivered contact (read in the same
    /// transaction: in a group commit, the first delivery may be in it too).
    async fn redelivered(
        &self,
        tx: &mut sqlx::AnyConnection,
        contact: &InboundContact,
    ) -> Result<IntakeOutcome, IntakeError> {
        let first = contacts::find_by_external(tx, contact.channel, contact.external_id.as_str())
            .await?
            .ok_or(StoreError::NotFound)?;
        let request_id = first.request_id.ok_or(StoreError::NotFound)?;
        let request = requests::read(tx, &request_id).await?;
        Ok(IntakeOutcome {
            contact_id: first.id,
            request_id,
            reference: request.reference,
            customer_id: first.customer_id,
            identity: first.identity,
            opened_request: false,
            redelivery: true,
        })
    }

    async fn identify(
        &self,
        tx: &mut sqlx::AnyConnection,
        actor: &Actor,
        from: &Sender,
    ) -> Result<(Option<String>, IdentityMatch, Vec<String>), IntakeError> {
        let ids = match from {
            Sender::Phone(p) => {
                lock_key(tx, self.store.backend(), p.as_str()).await?;
                customers::ids_by_phone(tx, p).await?
            }
            Sender::Email(e) => {
                lock_key(tx, self.store.backend(), e.as_str()).await?;
                customers::ids_by_email(tx, e).await?
            }
            Sender::Unknown(_) => return Ok((None, IdentityMatch::Unidentified, Vec::new())),
        };
        Ok(match ids.len() {
            0 => {
                let mut details = crate::domain::customer::CustomerDetails::default();
                match from {
                    Sender::Phone(p) => details.phones.push(p.clone()),
                    Sender::Email(e) => details.emails.push(e.clone()),
                    Sender::Unknown(_) => unreachable!("handled above"),
                }
                // Audited by the caller, with the rest of the contact.
                let id = customers::insert(tx, actor, &details).await?;
                (Some(id), IdentityMatch::Created, Vec::new())
            }
            1 => (ids.into_iter().next(), IdentityMatch::Matched, Vec::new()),
            _ => (None, IdentityMatch::Ambiguous, ids),
        })
    }
}

/// Where intake's routing landed.
struct Routed {
    request_id: Option<String>,
    /// A reference or thread was named but not honoured: flag the new request.
    not_honoured: bool,
    /// Joined by a thread of ours, from an address that is not the resident's nor a
    /// representative's (someone copied in, a forward): flag the request for staff.
    stranger: bool,
}

impl Routed {
    fn join(request_id: String) -> Self {
        Routed {
            request_id: Some(request_id),
            not_honoured: false,
            stranger: false,
        }
    }

    /// Joins by a thread of ours: whoever holds it was sent it, or was shown it.
    async fn thread(
        tx: &mut sqlx::AnyConnection,
        request_id: String,
        from: &str,
    ) -> Result<Self, IntakeError> {
        let stranger = !requests::sender_owns(tx, &request_id, from, Timestamp::now()).await?;
        Ok(Routed {
            stranger,
            ..Routed::join(request_id)
        })
    }
}

/// The idempotence key of a contact recorded by staff: its own key space, so that no
/// staff entry can take a channel's id (a MessageSid, a call) before the real contact.
pub fn staff_key(external_id: &ShortText) -> ShortText {
    ShortText::key("staff/", external_id.as_str())
}

/// A new request's summary: the contact's first non-empty line, cut to fit.
fn summary_of(contact: &InboundContact) -> ShortText {
    let first = contact
        .content
        .as_str()
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    ShortText::truncate_from(first)
        .unwrap_or_else(|| ShortText::from_stored(format!("{} contact", contact.channel)))
}
