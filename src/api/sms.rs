//! `POST /requests/{reference}/sms`: staff text the resident about their request.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::AppState;
use super::auth::{Authorized, can};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Body, RefPath};
use crate::domain::PhoneNumber;
use crate::domain::message::{MessagePurpose, SmsMessage};
use crate::outbound::OutboundError;

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

fn reply() -> MessagePurpose {
    MessagePurpose::Reply
}

/// Text the resident about this request (to their first phone number). The message
/// is recorded, and shown on the timeline, even when it cannot be sent.
#[utoipa::path(post, path = "/requests/{reference}/sms", tag = "requests",
    params(("reference" = String, Path, description = "e.g. SR-1000002")),
    request_body = SmsInput,
    responses((status = 201, body = SmsMessage), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn send(
    State(state): State<AppState>,
    auth: Authorized<can::WriteRequest>,
    RefPath(reference): RefPath,
    Body(input): Body<SmsInput>,
) -> ApiResult<(StatusCode, Json<SmsMessage>)> {
    let access = auth.special_category();
    let actor = auth.actor;
    let text = input.body.trim();
    if text.is_empty()
        || text.chars().count() > 1600
        || text.chars().any(|c| c.is_control() && c != '\n')
    {
        return Err(ApiError::invalid_field(
            "body",
            "1 to 1,600 characters of text",
        ));
    }
    let request = state.store.get_request(&actor, reference, access).await?;
    let customer_id = request
        .customer_id
        .clone()
        .ok_or_else(|| ApiError::invalid_field("reference", "this request has no customer yet"))?;
    let customer = state.store.get_customer(&actor, &customer_id).await?;
    let to: PhoneNumber =
        customer.details.phones.first().cloned().ok_or_else(|| {
            ApiError::invalid_field("reference", "the resident has no phone number")
        })?;
    let message = state
        .outbound
        .send_sms(
            &actor,
            &to,
            text,
            input.purpose,
            Some(&request.id),
            Some(&customer_id),
        )
        .await
        .map_err(|e| match e {
            OutboundError::SmsOff => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "the SMS channel is not configured",
            ),
            OutboundError::Store(e) => e.into(),
        })?;
    Ok((StatusCode::CREATED, Json(message)))
}
