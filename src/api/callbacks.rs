//! Callbacks owed to callers who could not reach an advisor (a voicemail, or a wish
//! to be called back): `GET /callbacks` (open ones; `?all=true` for every one) and
//! `POST /callbacks/{id}/close` with what was done.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::{Authorized, can};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::Body;
use crate::store::callbacks::Callback;

#[derive(Debug, Deserialize, IntoParams)]
pub struct CallbackFilter {
    /// Closed ones too.
    #[serde(default)]
    pub all: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseInput {
    /// What was done, e.g. "called back, bin collection booked".
    pub outcome: String,
}

/// Callbacks, oldest first (the list is audited: each carries a resident's number).
#[utoipa::path(get, path = "/callbacks", tag = "requests",
    params(CallbackFilter),
    responses((status = 200, body = Vec<Callback>)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    auth: Authorized<can::WriteRequest>,
    Query(filter): Query<CallbackFilter>,
) -> ApiResult<Json<Vec<Callback>>> {
    Ok(Json(state.store.callbacks(&auth.actor, filter.all).await?))
}

/// Closes a callback with its outcome (a note on the request's timeline).
#[utoipa::path(post, path = "/callbacks/{id}/close", tag = "requests",
    params(("id" = String, Path)),
    request_body = CloseInput,
    responses((status = 200, body = Callback), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn close(
    State(state): State<AppState>,
    auth: Authorized<can::WriteRequest>,
    Path(id): Path<String>,
    Body(input): Body<CloseInput>,
) -> ApiResult<Json<Callback>> {
    let outcome = input.outcome.trim();
    if outcome.is_empty() || outcome.chars().count() > 1000 {
        return Err(ApiError::invalid_field("outcome", "1 to 1000 characters"));
    }
    Ok(Json(
        state
            .store
            .close_callback(&auth.actor, &id, outcome)
            .await?,
    ))
}
