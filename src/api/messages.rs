//! Staff write to the resident about their request: `POST /requests/{reference}/sms`
//! and `POST /requests/{reference}/email`. One path for both: the message goes through
//! the outbox (recorded and on the timeline whatever becomes of it) and is delivered
//! before the answer, which shows its status. What was sent and is still to be sent
//! to a resident: `GET /customers/{id}/messages`; what staff must look at (dead
//! letters, sends of unknown outcome): `GET /outbox/attention`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::AppState;
use super::auth::{Authorized, can};
use super::customers::PageParams;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Body, Params, RefPath};
use super::pagination::Paging;
use crate::domain::message::{Message, MessagePurpose};
use crate::domain::{Channel, Reference};
use crate::outbound::{OutboundError, OutboundMessage, Recipient, html_from_text};
use crate::store::requests::SpecialCategoryAccess;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SmsInput {
    /// At most 1,600 characters (ten SMS parts).
    pub body: String,
    /// `reply` by default: an answer about the request. `service_update`, `survey`
    /// and `marketing` need the resident's consent.
    #[serde(default = "reply")]
    pub purpose: MessagePurpose,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailInput {
    /// Default: `Re: <the request's summary> [SR-…]`.
    pub subject: Option<String>,
    /// Plain text, at most 100,000 characters; an HTML alternative is made from it.
    pub body: String,
    #[serde(default = "reply")]
    pub purpose: MessagePurpose,
}

fn reply() -> MessagePurpose {
    MessagePurpose::Reply
}

fn check_text(field: &str, text: &str, max: usize, newlines: bool) -> Result<(), ApiError> {
    if text.trim().is_empty()
        || text.chars().count() > max
        || text
            .chars()
            .any(|c| c.is_control() && !(newlines && (c == '\n' || c == '\r' || c == '\t')))
    {
        return Err(ApiError::invalid_field(
            field,
            format!("1 to {max} characters of text"),
        ));
    }
    Ok(())
}

/// Text the resident about this request (to their first phone number). The message
/// is recorded, and shown on the timeline, even when it cannot be sent.
#[utoipa::path(post, path = "/requests/{reference}/sms", tag = "requests",
    params(("reference" = String, Path, description = "e.g. SR-1000002")),
    request_body = SmsInput,
    responses((status = 201, body = Message), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn send_sms(
    State(state): State<AppState>,
    auth: Authorized<can::WriteRequest>,
    RefPath(reference): RefPath,
    Body(input): Body<SmsInput>,
) -> ApiResult<(StatusCode, Json<Message>)> {
    check_text("body", &input.body, 1600, true)?;
    let body = input.body.trim().to_string();
    send(
        state,
        auth,
        reference,
        Channel::Sms,
        |_| (None, body, None),
        input.purpose,
    )
    .await
}

/// Email the resident about this request (to their first address), in the request's
/// thread: their reply comes back to it.
#[utoipa::path(post, path = "/requests/{reference}/email", tag = "requests",
    params(("reference" = String, Path, description = "e.g. SR-1000002")),
    request_body = EmailInput,
    responses((status = 201, body = Message), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn send_email(
    State(state): State<AppState>,
    auth: Authorized<can::WriteRequest>,
    RefPath(reference): RefPath,
    Body(input): Body<EmailInput>,
) -> ApiResult<(StatusCode, Json<Message>)> {
    check_text("body", &input.body, 100_000, true)?;
    if let Some(subject) = &input.subject {
        check_text("subject", subject, 200, false)?;
    }
    let body = input.body.trim().to_string();
    let html = html_from_text(&body);
    send(
        state,
        auth,
        reference,
        Channel::Email,
        |summary| {
            let subject = input
                .subject
                .clone()
                .unwrap_or_else(|| format!("Re: {summary} [{reference}]"));
            (Some(subject), body, Some(html))
        },
        input.purpose,
    )
    .await
}

async fn send(
    state: AppState,
    auth: Authorized<can::WriteRequest>,
    reference: Reference,
    channel: Channel,
    content: impl FnOnce(&str) -> (Option<String>, String, Option<String>),
    purpose: MessagePurpose,
) -> ApiResult<(StatusCode, Json<Message>)> {
    let access = auth.special_category();
    let actor = auth.actor;
    let request = state.store.get_request(&actor, reference, access).await?;
    let customer_id = request
        .customer_id
        .clone()
        .ok_or_else(|| ApiError::invalid_field("reference", "this request has no customer yet"))?;
    let customer = state.store.get_customer(&actor, &customer_id).await?;
    let to = match channel {
        Channel::Sms => customer.details.phones.first().cloned().map(Recipient::Sms),
        _ => customer
            .details
            .emails
            .first()
            .cloned()
            .map(Recipient::Email),
    }
    .ok_or_else(|| {
        ApiError::invalid_field(
            "reference",
            format!(
                "the resident has no {}",
                if channel == Channel::Sms {
                    "phone number"
                } else {
                    "email address"
                }
            ),
        )
    })?;
    let (subject, body, html) = content(&request.summary);
    let message = state
        .outbound
        .send_now(
            &actor,
            &OutboundMessage {
                to,
                subject,
                body,
                html,
                purpose,
                request: Some((request.id.clone(), request.reference)),
                customer_id: Some(customer_id),
                occurrence: None,
            },
        )
        .await
        .map_err(|e| match e {
            OutboundError::ChannelOff(channel) => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("the {channel} channel is not configured for sending"),
            ),
            OutboundError::Store(e) => e.into(),
        })?;
    Ok((StatusCode::CREATED, Json(message)))
}

/// A customer's messages, newest first: reminders and notices still to come (with
/// when), what was sent and what became of it, and what they sent us.
#[utoipa::path(get, path = "/customers/{id}/messages", tag = "customers",
    params(("id" = String, Path, description = "Customer id"), PageParams),
    responses((status = 200, body = Vec<Message>)),
    security(("bearer" = [])))]
pub async fn of_customer(
    State(state): State<AppState>,
    auth: Authorized<can::ReadCustomer>,
    Path(id): Path<String>,
    Params(p): Params<PageParams>,
) -> ApiResult<Json<Vec<Message>>> {
    let paging = Paging::new(p.page, p.per_page)?;
    let special = auth.special_category() == SpecialCategoryAccess::Allowed;
    let messages = state
        .store
        .customer_messages(&auth.actor, &id, special, paging.limit(), paging.offset())
        .await?;
    Ok(Json(messages))
}

/// The outbox's dead letters (still failing after the last retry) and the sends
/// whose outcome is unknown (to be checked with the provider before any resend),
/// oldest first (supervisors and admins).
#[utoipa::path(get, path = "/outbox/attention", tag = "customers",
    responses((status = 200, body = Vec<Message>)),
    security(("bearer" = [])))]
pub async fn attention(
    State(state): State<AppState>,
    auth: Authorized<can::WatchOutbox>,
) -> ApiResult<Json<Vec<Message>>> {
    Ok(Json(state.store.outbox_attention(&auth.actor, 200).await?))
}
