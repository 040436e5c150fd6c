//! Service requests, the contacts attached to them and their timelines.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::text::{LongText, ShortText};
use super::{Channel, IdentityMatch, Reference, RequestStatus, Timestamp};
use crate::configuration::ServiceCode;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ServiceRequest {
    pub id: String,
    pub reference: Reference,
    pub customer_id: Option<String>,
    pub service: ServiceCode,
    pub status: RequestStatus,
    pub summary: String,
    /// Holds special category (health) data: readable by supervisors and admins only.
    pub special_category: bool,
    /// Intake could not tell which resident this is (several records matched, or the
    /// number was withheld): staff must assign the customer.
    pub identity_review: bool,
    pub opened_via: Channel,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub closed_at: Option<Timestamp>,
    pub retention_days: i64,
    /// When the request may be deleted: closure + the service's retention period.
    pub retain_until: Option<Timestamp>,
}

/// A new request opened by staff.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRequest {
    pub customer_id: String,
    pub service: ServiceCode,
    pub summary: ShortText,
    /// Forced on for services that always hold special category data.
    #[serde(default)]
    pub special_category: bool,
    #[serde(default = "default_opened_via")]
    pub opened_via: Channel,
}

fn default_opened_via() -> Channel {
    Channel::Phone
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimelineKind {
    Opened,
    Contact,
    Note,
    StatusChange,
    CustomerAssigned,
    /// A call's recording, linked to the call's contact.
    Recording,
    /// A text message sent about the request.
    Message,
    /// A caller who could not reach an advisor left a voicemail or asked to be
    /// called back; the body says which.
    Callback,
}

impl TimelineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TimelineKind::Opened => "opened",
            TimelineKind::Contact => "contact",
            TimelineKind::Note => "note",
            TimelineKind::StatusChange => "status_change",
            TimelineKind::CustomerAssigned => "customer_assigned",
            TimelineKind::Recording => "recording",
            TimelineKind::Message => "message",
            TimelineKind::Callback => "callback",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            TimelineKind::Opened,
            TimelineKind::Contact,
            TimelineKind::Note,
            TimelineKind::StatusChange,
            TimelineKind::CustomerAssigned,
            TimelineKind::Recording,
            TimelineKind::Message,
            TimelineKind::Callback,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TimelineEvent {
    pub id: String,
    pub kind: TimelineKind,
    pub at: Timestamp,
    pub actor: String,
    pub body: Option<String>,
    pub from_status: Option<RequestStatus>,
    pub to_status: Option<RequestStatus>,
    pub contact: Option<Contact>,
    /// For `message` events: the message and its delivery status now.
    pub message: Option<crate::domain::message::Message>,
}

/// One inbound contact from a resident, as stored.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Contact {
    pub id: String,
    pub channel: Channel,
    pub external_id: String,
    pub from: String,
    pub to: String,
    pub received_at: Timestamp,
    pub content: String,
    pub customer_id: Option<String>,
    pub request_id: Option<String>,
    pub identity: IdentityMatch,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    pub status: RequestStatus,
    #[serde(default)]
    pub note: Option<LongText>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteInput {
    pub body: LongText,
}
