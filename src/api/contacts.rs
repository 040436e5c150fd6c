//! `POST /contacts`: a contact recorded by staff (a walk-in, a letter, a call taken on
//! another system) goes through the same intake as every channel.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::auth::{Authorized, can};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::Body;
use crate::configuration::ServiceCode;
use crate::domain::{
    Channel, EmailAddress, IdentityMatch, LongText, PhoneNumber, Reference, ShortText, Timestamp,
};
use crate::intake::{InboundContact, IntakeOutcome, Origin, Sender, ThreadHints, staff_key};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactInput {
    pub channel: Channel,
    /// The id the contact has in its source system; sending it twice records it once.
    pub external_id: ShortText,
    /// The resident's phone number or email address; null when withheld.
    pub from: Option<String>,
    pub to: ShortText,
    /// When the resident made contact; now if not given.
    #[serde(default)]
    pub received_at: Option<Timestamp>,
    pub content: LongText,
    /// Attach to this request (refused if mistyped or unknown).
    #[serde(default)]
    pub reference: Option<Reference>,
    /// For a new request: the service; the default service if not given.
    #[serde(default)]
    pub service: Option<ServiceCode>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ContactReceipt {
    pub contact_id: String,
    pub request_id: String,
    pub reference: Reference,
    pub customer_id: Option<String>,
    pub identity: IdentityMatch,
    pub opened_request: bool,
    /// This contact had been recorded before; the first recording's result is returned.
    pub redelivery: bool,
}

impl From<IntakeOutcome> for ContactReceipt {
    fn from(o: IntakeOutcome) -> Self {
        ContactReceipt {
            contact_id: o.contact_id,
            request_id: o.request_id,
            reference: o.reference,
            customer_id: o.customer_id,
            identity: o.identity,
            opened_request: o.opened_request,
            redelivery: o.redelivery,
        }
    }
}

/// Parses the sender for the channel: a phone number for calls and texts, an email
/// address for email, either for the rest.
fn sender(channel: Channel, from: Option<&str>) -> ApiResult<Sender> {
    let Some(from) = from.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(Sender::Unknown("withheld".into()));
    };
    let phone = || PhoneNumber::parse(from).map(Sender::Phone);
    let email = || EmailAddress::parse(from).map(Sender::Email);
    let parsed = match channel {
        Channel::Phone | Channel::Sms => phone().map_err(|e| e.to_string()),
        Channel::Email => email().map_err(|e| e.to_string()),
        _ => phone()
            .or_else(|_| email())
            .map_err(|_| "neither a phone number nor an email address".to_string()),
    };
    parsed.map_err(|m| ApiError::invalid_field("from", m))
}

/// Record a resident's contact: opens a request or attaches to the referenced one.
#[utoipa::path(post, path = "/contacts", tag = "contacts", request_body = ContactInput,
    responses(
        (status = 201, body = ContactReceipt, description = "recorded"),
        (status = 200, body = ContactReceipt, description = "already recorded; the first result"),
        (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn record(
    State(state): State<AppState>,
    auth: Authorized<can::RecordContact>,
    Body(input): Body<ContactInput>,
) -> ApiResult<(StatusCode, Json<ContactReceipt>)> {
    let contact = InboundContact {
        channel: input.channel,
        origin: Origin::Staff {
            access: auth.special_category(),
            actor: auth.actor,
        },
        from: sender(input.channel, input.from.as_deref())?,
        external_id: staff_key(&input.external_id),
        to: input.to,
        received_at: input.received_at.unwrap_or_else(Timestamp::now),
        content: input.content,
        reference: input.reference,
        service: input.service,
        thread: ThreadHints::default(),
        acknowledge: None,
        message: None,
        original: None,
        attachments: Vec::new(),
        needs_review: false,
    };
    let outcome = state.intake.receive(&contact).await?;
    let status = if outcome.redelivery {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(outcome.into())))
}
