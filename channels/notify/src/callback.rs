//! What Notify posts to us: a delivery receipt for a notification we sent, and a text
//! a resident sent to the service's number. Each carries the bearer token the
//! council gave Notify; it is the only proof a callback is Notify's, so it is
//! compared in constant time before the body is read.

use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::status::NotifyStatus;

/// Callbacks are small JSON objects.
pub const MAX_CALLBACK_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CallbackError {
    #[error("the callback is not Notify's JSON: {0}")]
    Malformed(String),
    #[error("the callback is too long")]
    TooLong,
}

/// Whether an `Authorization` header carries `token` as a bearer token.
pub fn bearer_matches(header: Option<&str>, token: &str) -> bool {
    let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    !token.is_empty() && bool::from(given.trim().as_bytes().ct_eq(token.as_bytes()))
}

/// A delivery receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Notify's id for the notification.
    pub id: String,
    /// Ours, as we gave it.
    pub reference: Option<String>,
    pub status: NotifyStatus,
}

#[derive(Deserialize)]
struct ReceiptBody {
    id: String,
    #[serde(default)]
    reference: Option<String>,
    status: String,
}

impl Receipt {
    pub fn parse(body: &[u8]) -> Result<Self, CallbackError> {
        if body.len() > MAX_CALLBACK_BYTES {
            return Err(CallbackError::TooLong);
        }
        let b: ReceiptBody =
            serde_json::from_slice(body).map_err(|e| CallbackError::Malformed(e.to_string()))?;
        let status = NotifyStatus::parse(&b.status)
            .ok_or_else(|| CallbackError::Malformed(format!("status {:?}", b.status)))?;
        if b.id.is_empty() || b.id.len() > 64 {
            return Err(CallbackError::Malformed("id".into()));
        }
        Ok(Receipt {
            id: b.id,
            reference: b.reference.filter(|r| !r.is_empty() && r.len() <= 128),
            status,
        })
    }
}

/// A text a resident sent to the service's number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundText {
    pub id: String,
    /// As Notify gives it: international format, usually without the `+`.
    pub source_number: String,
    pub destination_number: String,
    pub message: String,
}

#[derive(Deserialize)]
struct InboundBody {
    id: String,
    source_number: String,
    #[serde(default)]
    destination_number: String,
    message: String,
}

/// The longest text a phone can send in one message (concatenated), with room.
const MAX_TEXT_CHARS: usize = 1600;

impl InboundText {
    pub fn parse(body: &[u8]) -> Result<Self, CallbackError> {
        if body.len() > MAX_CALLBACK_BYTES {
            return Err(CallbackError::TooLong);
        }
        let b: InboundBody =
            serde_json::from_slice(body).map_err(|e| CallbackError::Malformed(e.to_string()))?;
        if b.id.is_empty() || b.id.len() > 64 {
            return Err(CallbackError::Malformed("id".into()));
        }
        if b.source_number.is_empty() || b.source_number.len() > 32 {
            return Err(CallbackError::Malformed("source_number".into()));
        }
        if b.message.chars().count() > MAX_TEXT_CHARS {
            return Err(CallbackError::Malformed("message too long".into()));
        }
        Ok(InboundText {
            id: b.id,
            source_number: b.source_number,
            destination_number: b.destination_number.chars().take(32).collect(),
            message: b.message,
        })
    }

    /// The sender's number in E.164 (`447700900123` becomes `+447700900123`).
    pub fn sender_e164(&self) -> String {
        let n = self.source_number.trim();
        if n.starts_with('+') || n.starts_with('0') {
            n.to_string()
        } else {
            format!("+{n}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_token_as_a_bearer_passes() {
        assert!(bearer_matches(Some("Bearer s3cret-token"), "s3cret-token"));
        assert!(!bearer_matches(Some("Bearer s3cret-tokem"), "s3cret-token"));
        assert!(!bearer_matches(Some("s3cret-token"), "s3cret-token"));
        assert!(!bearer_matches(None, "s3cret-token"));
        assert!(!bearer_matches(Some("Bearer "), ""));
    }

    #[test]
    fn a_receipt_as_notify_documents_it() {
        let r = Receipt::parse(br#"{"id":"740e5834-3a29-46b4-9a6f-16142fde533a","reference":"m-1","to":"07700900123","status":"delivered","created_at":"2026-12-04T10:00:00.000000Z","completed_at":"2026-12-04T10:00:05.000000Z","sent_at":"2026-12-04T10:00:01.000000Z","notification_type":"sms","template_id":"f33517ff-2a88-4f6e-b855-c550268ce08a","template_version":1}"#).unwrap();
        assert_eq!(r.status, NotifyStatus::Delivered);
        assert_eq!(r.reference.as_deref(), Some("m-1"));
        assert!(Receipt::parse(br#"{"id":"x","status":"lost"}"#).is_err());
        assert!(Receipt::parse(b"not json").is_err());
    }

    #[test]
    fn a_received_text() {
        let t = InboundText::parse(br#"{"id":"b51f138b","source_number":"447700900111","destination_number":"07700900000","message":"Hello","date_received":"2026-12-04T10:00:00.000000Z"}"#).unwrap();
        assert_eq!(t.sender_e164(), "+447700900111");
        assert!(InboundText::parse(br#"{"id":"b","source_number":"","message":"x"}"#).is_err());
    }
}
