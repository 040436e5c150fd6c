//! Text messages the council sends, and what each may be sent for.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Timestamp, UnknownValue};

super::text_enum! {
    /// Why a message is sent, which decides what permission it needs.
    MessagePurpose {
        /// About the resident's own contact or request (an acknowledgement, an
        /// answer): needs only that the number has not opted out.
        Reply = "reply",
        /// Unprompted news of a request: needs consent to service updates.
        ServiceUpdate = "service_update",
        /// Needs consent to satisfaction surveys.
        Survey = "survey",
        /// Needs consent to marketing.
        Marketing = "marketing",
    }
}

impl MessagePurpose {
    /// The consent this purpose needs beyond the number not having opted out.
    pub fn consent(self) -> Option<super::ConsentPurpose> {
        match self {
            MessagePurpose::Reply => None,
            MessagePurpose::ServiceUpdate => Some(super::ConsentPurpose::ServiceUpdates),
            MessagePurpose::Survey => Some(super::ConsentPurpose::SatisfactionSurveys),
            MessagePurpose::Marketing => Some(super::ConsentPurpose::Marketing),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SmsMessage {
    pub id: String,
    pub request_id: Option<String>,
    pub customer_id: Option<String>,
    pub to: String,
    pub body: String,
    pub purpose: MessagePurpose,
    /// Twilio's MessageSid once handed over.
    pub provider_sid: Option<String>,
    /// queued, sending, sent, delivered, undelivered, failed; or, never sent:
    /// suppressed (the number opted out) and no_consent.
    pub status: String,
    pub error_code: Option<i64>,
    pub sent_by: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}
