//! Subscriptions on a customer's record, and their renewal reminders:
//! `POST /customers/{id}/subscriptions` records one, `GET` lists them,
//! `POST /subscriptions/{id}/renew` moves the expiry (only the new expiry's reminders
//! send), `POST /subscriptions/{id}/cancel` stops its reminders.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::appointments::ScheduledReminder;
use super::auth::{Authorized, can};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::Body;
use crate::domain::Timestamp;
use crate::renewals::{NewSubscription, Recorded, RenewalError};
use crate::store::subscriptions::Subscription;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionInput {
    /// A kind configured under `[renewals.kinds]`, e.g. `garden_waste`.
    pub kind: String,
    pub description: Option<String>,
    /// RFC 3339, in the future.
    pub expires_at: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewalInput {
    /// The new expiry, RFC 3339, in the future.
    pub expires_at: String,
}

/// A subscription and the reminders queued for it by this change.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionOutput {
    #[serde(flatten)]
    pub subscription: Subscription,
    pub reminders: Vec<ScheduledReminder>,
}

impl From<Recorded> for SubscriptionOutput {
    fn from(r: Recorded) -> Self {
        SubscriptionOutput {
            subscription: r.subscription,
            reminders: r
                .reminders
                .into_iter()
                .map(|(message_id, due_at)| ScheduledReminder { message_id, due_at })
                .collect(),
        }
    }
}

impl From<RenewalError> for ApiError {
    fn from(e: RenewalError) -> Self {
        match e {
            RenewalError::Store(e) => e.into(),
            RenewalError::Invalid(why) => match why.split_once(": ") {
                Some((field, message)) => ApiError::invalid_field(field, message),
                None => ApiError::invalid_field("subscription", why),
            },
        }
    }
}

fn expiry(text: &str) -> Result<Timestamp, ApiError> {
    Timestamp::parse(text).map_err(|e| ApiError::invalid_field("expires_at", e))
}

/// Records a subscription; reminders already due are queued at once.
#[utoipa::path(post, path = "/customers/{id}/subscriptions", tag = "customers",
    params(("id" = String, Path)),
    request_body = SubscriptionInput,
    responses((status = 201, body = SubscriptionOutput), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn record(
    State(state): State<AppState>,
    auth: Authorized<can::WriteCustomer>,
    Path(id): Path<String>,
    Body(input): Body<SubscriptionInput>,
) -> ApiResult<(StatusCode, Json<SubscriptionOutput>)> {
    let new = NewSubscription {
        kind: input.kind.trim().to_string(),
        description: input
            .description
            .map(|d| d.trim().to_string())
            .filter(|d| !d.is_empty()),
        expires_at: expiry(&input.expires_at)?,
    };
    let recorded = state.renewals.record(&auth.actor, &id, &new).await?;
    Ok((StatusCode::CREATED, Json(recorded.into())))
}

/// A customer's subscriptions, active and cancelled.
#[utoipa::path(get, path = "/customers/{id}/subscriptions", tag = "customers",
    params(("id" = String, Path)),
    responses((status = 200, body = Vec<Subscription>)),
    security(("bearer" = [])))]
pub async fn of_customer(
    State(state): State<AppState>,
    auth: Authorized<can::ReadCustomer>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<Subscription>>> {
    Ok(Json(state.renewals.of_customer(&auth.actor, &id).await?))
}

/// Renews a subscription: a new expiry, whose reminders replace the old one's.
#[utoipa::path(post, path = "/subscriptions/{id}/renew", tag = "customers",
    params(("id" = String, Path)),
    request_body = RenewalInput,
    responses((status = 200, body = SubscriptionOutput), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn renew(
    State(state): State<AppState>,
    auth: Authorized<can::WriteCustomer>,
    Path(id): Path<String>,
    Body(input): Body<RenewalInput>,
) -> ApiResult<Json<SubscriptionOutput>> {
    let at = expiry(&input.expires_at)?;
    Ok(Json(
        state.renewals.renew(&auth.actor, &id, at).await?.into(),
    ))
}

/// Cancels a subscription and its reminders not yet sent.
#[utoipa::path(post, path = "/subscriptions/{id}/cancel", tag = "customers",
    params(("id" = String, Path)),
    responses((status = 200, body = Subscription), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    auth: Authorized<can::WriteCustomer>,
    Path(id): Path<String>,
) -> ApiResult<Json<Subscription>> {
    Ok(Json(state.renewals.cancel(&auth.actor, &id).await?))
}
