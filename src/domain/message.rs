//! Messages sent and received on the text channels (SMS, email): what each may be
//! sent for, the statuses that are the council's own, and the stored record.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Timestamp, UnknownValue};

super::text_enum! {
    /// Why a message is sent, which decides what permission it needs.
    MessagePurpose {
        /// About the resident's own contact or request (an answer): needs only that
        /// the number has not opted out.
        Reply = "reply",
        /// The automatic "we have your message, your reference is …": like a reply,
        /// and never sent to mail that was itself automatic (loops).
        Acknowledgement = "acknowledgement",
        /// Unprompted news of a request: needs consent to service updates.
        ServiceUpdate = "service_update",
        /// An appointment or renewal reminder: a service message the resident asked
        /// to have, so it needs consent to service updates like the news of a request.
        Reminder = "reminder",
        /// Needs consent to satisfaction surveys.
        Survey = "survey",
        /// Needs consent to marketing.
        Marketing = "marketing",
    }
}

impl MessagePurpose {
    /// Sent on the council's initiative rather than in answer to the resident, so
    /// held back in quiet hours.
    pub fn unprompted(self) -> bool {
        !matches!(
            self,
            MessagePurpose::Reply | MessagePurpose::Acknowledgement
        )
    }

    /// The consent this purpose needs beyond the number not having opted out.
    pub fn consent(self) -> Option<super::ConsentPurpose> {
        match self {
            MessagePurpose::Reply | MessagePurpose::Acknowledgement => None,
            MessagePurpose::ServiceUpdate | MessagePurpose::Reminder => {
                Some(super::ConsentPurpose::ServiceUpdates)
            }
            MessagePurpose::Survey => Some(super::ConsentPurpose::SatisfactionSurveys),
            MessagePurpose::Marketing => Some(super::ConsentPurpose::Marketing),
        }
    }
}

/// What a reminder reminds the resident of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReminderOf {
    Appointment(String),
    Subscription(String),
}

/// One occurrence of a reminder: what it is of, and a key naming the occurrence
/// (unique among all messages, so the same reminder is never queued twice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    pub of: ReminderOf,
    pub key: String,
}

impl Occurrence {
    pub fn appointment_id(&self) -> Option<&str> {
        match &self.of {
            ReminderOf::Appointment(id) => Some(id),
            ReminderOf::Subscription(_) => None,
        }
    }

    pub fn subscription_id(&self) -> Option<&str> {
        match &self.of {
            ReminderOf::Subscription(id) => Some(id),
            ReminderOf::Appointment(_) => None,
        }
    }
}

super::text_enum! {
    /// Which way a message went.
    Direction {
        /// From the council to a resident.
        Out = "out",
        /// From a resident (also a contact, through intake).
        In = "in",
    }
}

/// Statuses that are the council's own decisions or the outbox's states, as opposed
/// to the provider's delivery statuses (which the channel crates define).
pub mod status {
    /// Written to the outbox, not yet sent.
    pub const PENDING: &str = "pending";
    /// Claimed by a dispatcher, being sent now.
    pub const DISPATCHING: &str = "dispatching";
    /// Never sent: the number opted out (STOP) or the address is suppressed.
    pub const SUPPRESSED: &str = "suppressed";
    /// Never sent: the purpose needs a consent the resident has not given.
    pub const NO_CONSENT: &str = "no_consent";
    /// Perhaps sent (no answer after the request left): checked, never resent blind.
    pub const UNKNOWN: &str = "unknown";
    /// Given up: refused, or still failing after the last retry.
    pub const FAILED: &str = "failed";
    /// A message from a resident.
    pub const RECEIVED: &str = "received";
    /// Not sent because its cause went away (an appointment moved or cancelled).
    pub const CANCELLED: &str = "cancelled";
    /// Not sent because it would have arrived too late to be of use (a reminder held
    /// by quiet hours past the start of its appointment).
    pub const EXPIRED: &str = "expired";
    /// Given up after the last retry of a send that kept failing for now (a relay or
    /// provider outage): a dead letter for staff.
    pub const DEAD: &str = "dead";
    /// A final status: later reports cannot move a message past it.
    pub const FINAL_RANK: i64 = 5;
}

/// A message as stored: sent or received, on any text channel.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Message {
    pub id: String,
    pub channel: super::Channel,
    pub direction: Direction,
    pub request_id: Option<String>,
    pub customer_id: Option<String>,
    /// The resident's end: the number or address sent to, or received from.
    pub to: String,
    pub subject: Option<String>,
    pub body: String,
    pub purpose: MessagePurpose,
    /// The provider's id once handed over (Twilio's MessageSid; an email's Message-ID).
    pub provider_sid: Option<String>,
    /// pending, dispatching; the provider's (queued, sent, delivered, undelivered,
    /// failed…); or, never sent: suppressed, no_consent; unknown; received.
    pub status: String,
    pub error_code: Option<i64>,
    /// Where the message stands, in the words staff use for every channel.
    pub state: MessageState,
    /// When the outbox will (next) try to send it, while it waits.
    pub due_at: Option<Timestamp>,
    /// Sends begun so far.
    pub attempts: i64,
    /// Why the last attempt did not go, if it did not.
    pub last_error: Option<String>,
    /// What it reminds of, for a reminder.
    pub appointment_id: Option<String>,
    pub subscription_id: Option<String>,
    pub sent_by: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

super::text_enum! {
    /// A message's status as staff read it, whichever the channel and provider.
    MessageState {
        /// Waiting in the outbox for its time.
        Scheduled = "scheduled",
        /// Being sent now.
        Sending = "sending",
        /// Handed to the provider or relay.
        Sent = "sent",
        /// The provider says it arrived.
        Delivered = "delivered",
        /// Refused, or undeliverable.
        Failed = "failed",
        /// Still failing after the last retry: staff decide what to do.
        Dead = "dead",
        /// It may have gone (no answer to the send): staff check before any resend.
        Reconcile = "reconcile",
        /// Never sent: opted out, or no consent for its purpose.
        Suppressed = "suppressed",
        /// Never sent: its cause went away, or it would have come too late.
        Cancelled = "cancelled",
        /// From the resident.
        Received = "received",
    }
}

impl MessageState {
    /// The state of a message with this council or provider status.
    pub fn of_status(status: &str) -> MessageState {
        match status {
            status::PENDING => MessageState::Scheduled,
            status::DISPATCHING => MessageState::Sending,
            status::SUPPRESSED | status::NO_CONSENT => MessageState::Suppressed,
            status::CANCELLED | status::EXPIRED => MessageState::Cancelled,
            status::UNKNOWN => MessageState::Reconcile,
            status::DEAD => MessageState::Dead,
            status::RECEIVED => MessageState::Received,
            "delivered" | "read" => MessageState::Delivered,
            "failed" | "undelivered" | "canceled" | "permanent-failure" | "temporary-failure"
            | "technical-failure" => MessageState::Failed,
            _ => MessageState::Sent,
        }
    }
}
