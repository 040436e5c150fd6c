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
//! 3. Request: an explicit reference attaches to that request (an unknown one is
//!    refused, so the channel can say so) — from a channel only when the sender owns it
//!    (their number or address is on the request's resident, or on a representative of
//!    theirs still in time); a reference that is not the sender's opens a request of
//!    its own, flagged for staff to join them, so nobody can add to (or learn of)
//!    someone else's request by keying its number. Otherwise a new request is opened
//!    for the contact's service, or the default service.
//!
//! A contact recorded by staff is audited as that staff member, may attach to a
//! special-category request only if they may read it, and has its own key space
//! (`staff/…`), so it can never claim a channel's id and pre-empt a real contact.

use crate::configuration::ServiceCode;
use crate::domain::request::TimelineKind;
use crate::domain::{
    Actor, Channel, EmailAddress, IdentityMatch, LongText, PhoneNumber, Reference, ShortText,
    Timestamp,
};
use crate::store::audit::{self, Action, Entity};
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

#[derive(Clone)]
pub struct Intake {
    store: Store,
    default_service: ServiceCode,
}

impl Intake {
    pub fn new(store: Store, default_service: ServiceCode) -> Self {
        Intake {
            store,
            default_service,
        }
    }

    pub async fn receive(&self, contact: &InboundContact) -> Result<IntakeOutcome, IntakeError> {
        let outcome = self.take_in(contact).await;
        if let Err(IntakeError::Store(e)) = &outcome {
            // A contact that could not be stored: the night shift's first page.
            tracing::error!(channel = contact.channel.as_str(), error = %e, "intake failed");
            metrics::counter!("contactd_intake_failures_total", "channel" => contact.channel.as_str())
                .increment(1);
        }
        outcome
    }

    async fn take_in(&self, contact: &InboundContact) -> Result<IntakeOutcome, IntakeError> {
        let actor = match &contact.origin {
            Origin::Channel => Actor::Channel(contact.channel),
            Origin::Staff { actor, .. } => actor.clone(),
        };
        if let (Origin::Staff { actor, access }, Some(reference)) =
            (&contact.origin, contact.reference)
        {
            // Before the write transaction: a refusal is audited in its own.
            match self.store.authorise_change(actor, reference, *access).await {
                Err(StoreError::NotFound) => return Err(IntakeError::UnknownReference(reference)),
                other => other?,
            }
        }
        let mut tx = self.store.begin().await?;
        let arrival = contacts::Arrival {
            channel: contact.channel,
            external_id: contact.external_id.as_str(),
            from: contact.from.as_text(),
            to: contact.to.as_str(),
            received_at: contact.received_at,
            content: contact.content.as_str(),
        };
        let Some(contact_id) = contacts::claim(&mut tx, &arrival).await? else {
            drop(tx);
            return self.redelivered(contact).await;
        };

        let (customer_id, identity, candidates) =
            self.identify(&mut tx, &actor, &contact.from).await?;

        let owned = match contact.reference {
            None => None,
            Some(reference) => {
                let id = match requests::lock(&mut tx, reference).await {
                    Ok(id) => id,
                    Err(StoreError::NotFound) => {
                        return Err(IntakeError::UnknownReference(reference));
                    }
                    Err(e) => return Err(e.into()),
                };
                // Staff were authorised above; a resident must own the request.
                let theirs = match &contact.origin {
                    Origin::Staff { .. } => true,
                    Origin::Channel => {
                        let from = contact.from.as_text();
                        requests::sender_owns(&mut tx, &id, from, Timestamp::now()).await?
                    }
                };
                if !theirs {
                    metrics::counter!("contactd_intake_foreign_references_total", "channel" => contact.channel.as_str())
                        .increment(1);
                }
                theirs.then_some(id)
            }
        };
        // A reference given but not the sender's: a request of its own, for staff to join.
        let foreign_reference = contact.reference.is_some() && owned.is_none();
        let (request, opened) = match owned {
            Some(id) => (requests::read(&mut tx, &id).await?, false),
            None => {
                let code = contact.service.as_ref().unwrap_or(&self.default_service);
                let service = services::active_service(&mut tx, code)
                    .await?
                    .ok_or_else(|| IntakeError::UnknownService(code.clone()))?;
                let summary = summary_of(contact);
                let request = requests::open(
                    &mut tx,
                    &actor,
                    &Opening {
                        customer_id: customer_id.as_deref(),
                        service: &service,
                        summary: &summary,
                        special_category: false,
                        identity_review: customer_id.is_none() || foreign_reference,
                        opened_via: contact.channel,
                    },
                )
                .await?;
                audit::record(
                    &mut tx,
                    &actor,
                    Action::Create,
                    Entity::Request,
                    &request.id,
                    None,
                )
                .await?;
                (request, true)
            }
        };

        contacts::settle(
            &mut tx,
            &contact_id,
            customer_id.as_deref(),
            &request.id,
            identity,
            &candidates,
        )
        .await?;
        requests::append(
            &mut tx,
            &request.id,
            &Event {
                kind: TimelineKind::Contact,
                actor: &actor,
                contact_id: Some(&contact_id),
                body: None,
                from: None,
                to: None,
            },
        )
        .await?;
        let detail = format!("contact {contact_id}");
        audit::record(
            &mut tx,
            &actor,
            Action::Intake,
            Entity::Request,
            &request.id,
            Some(&detail),
        )
        .await?;
        tx.commit().await?;
        metrics::counter!("contactd_intake_contacts_total", "channel" => contact.channel.as_str(),
            "outcome" => if opened { "opened" } else { "attached" })
        .increment(1);
        Ok(IntakeOutcome {
            contact_id,
            request_id: request.id,
            reference: request.reference,
            customer_id,
            identity,
            opened_request: opened,
            redelivery: false,
        })
    }

    /// The first delivery's outcome, for a redelivered contact.
    async fn redelivered(&self, contact: &InboundContact) -> Result<IntakeOutcome, IntakeError> {
        let mut conn = self
            .store
            .pool()
            .acquire()
            .await
            .map_err(StoreError::from)?;
        let first =
            contacts::find_by_external(&mut conn, contact.channel, contact.external_id.as_str())
                .await?
                .ok_or(StoreError::NotFound)?;
        let request_id = first.request_id.ok_or(StoreError::NotFound)?;
        let request = requests::read(&mut conn, &request_id).await?;
        metrics::counter!("contactd_intake_contacts_total", "channel" => contact.channel.as_str(),
            "outcome" => "redelivery")
        .increment(1);
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
        let (key, ids) = match from {
            Sender::Phone(p) => {
                lock_key(tx, self.store.backend(), p.as_str()).await?;
                (p.as_str(), customers::ids_by_phone(tx, p).await?)
            }
            Sender::Email(e) => {
                lock_key(tx, self.store.backend(), e.as_str()).await?;
                (e.as_str(), customers::ids_by_email(tx, e).await?)
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
                let id = customers::insert(tx, actor, &details).await?;
                audit::record(tx, actor, Action::Create, Entity::Customer, &id, Some(key)).await?;
                (Some(id), IdentityMatch::Created, Vec::new())
            }
            1 => (ids.into_iter().next(), IdentityMatch::Matched, Vec::new()),
            _ => (None, IdentityMatch::Ambiguous, ids),
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
