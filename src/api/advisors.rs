//! Advisors and their phones' credentials: `GET /advisors` (with the devices
//! registered now), `POST /advisors` (a new advisor; the phone password is in the
//! answer, this once), `POST /advisors/{id}/credential` (a new password, and
//! optionally a new digest algorithm), `PUT /advisors/{id}/state` (available or away;
//! available also ends a wrap-up early), `GET /queues` (each queue now: open, callers
//! waiting, longest wait, advisors by state), and `GET /events/calls`: the call event
//! feed (server-sent events) an advisor's screen or a supervisor's board follows.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;
use utoipa::ToSchema;

use super::AppState;
use super::auth::{Authorized, can};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::Body;
use crate::advisors::{
    AdvisorInput, AdvisorNow, ChosenState, QueueNow, SipUsername, WithPassword, parse_algorithm,
};
use crate::call_events::CallEvent;
use crate::configuration::ServiceCode;
use crate::store::advisors::Advisor;
use crate::store::audit::{Action, Entity};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAdvisorInput {
    pub name: String,
    /// 1–64 letters, digits, `.`, `_`, `-`: what the phone registers as.
    pub sip_username: String,
    /// Service codes whose queues the advisor answers.
    #[serde(default)]
    pub skills: Vec<String>,
    /// `SHA-256` (the default), or `MD5` for phones that know nothing newer.
    pub digest_algorithm: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialInput {
    /// Keep the current algorithm when absent.
    pub digest_algorithm: Option<String>,
}

/// An advisor and the password for their phones, shown only in this answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdvisorWithPassword {
    #[serde(flatten)]
    pub advisor: Advisor,
    pub sip_password: String,
}

impl From<WithPassword> for AdvisorWithPassword {
    fn from(w: WithPassword) -> Self {
        AdvisorWithPassword {
            advisor: w.advisor,
            sip_password: w.password,
        }
    }
}

fn algorithm(field: Option<&str>) -> Result<Option<contactd_sip::Algorithm>, ApiError> {
    field
        .map(|a| parse_algorithm(a).map_err(|e| ApiError::invalid_field("digest_algorithm", e)))
        .transpose()
}

/// Every advisor, with the phones registered now.
#[utoipa::path(get, path = "/advisors", tag = "advisors",
    responses((status = 200, body = Vec<AdvisorNow>)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _auth: Authorized<can::ManageAdvisors>,
) -> ApiResult<Json<Vec<AdvisorNow>>> {
    Ok(Json(state.advisors.list().await?))
}

/// A new advisor, with a password for their phones.
#[utoipa::path(post, path = "/advisors", tag = "advisors",
    request_body = NewAdvisorInput,
    responses((status = 201, body = AdvisorWithPassword), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    auth: Authorized<can::ManageAdvisors>,
    Body(input): Body<NewAdvisorInput>,
) -> ApiResult<(StatusCode, Json<AdvisorWithPassword>)> {
    let name = input.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::invalid_field("name", "1 to 200 characters"));
    }
    let sip_username = SipUsername::parse(&input.sip_username)
        .map_err(|e| ApiError::invalid_field("sip_username", e))?;
    let skills = input
        .skills
        .iter()
        .map(|s| ServiceCode::parse(s).map_err(|e| ApiError::invalid_field("skills", e)))
        .collect::<Result<Vec<_>, _>>()?;
    let new = AdvisorInput {
        name: name.to_string(),
        sip_username,
        skills,
        algorithm: algorithm(input.digest_algorithm.as_deref())?
            .unwrap_or(contactd_sip::Algorithm::Sha256),
    };
    let made = state.advisors.add(&auth.actor, &new).await?;
    Ok((StatusCode::CREATED, Json(made.into())))
}

/// A new password for an advisor's phones; the old one stops working at once.
#[utoipa::path(post, path = "/advisors/{id}/credential", tag = "advisors",
    params(("id" = String, Path)),
    request_body = CredentialInput,
    responses((status = 200, body = AdvisorWithPassword), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn rotate_credential(
    State(state): State<AppState>,
    auth: Authorized<can::ManageAdvisors>,
    Path(id): Path<String>,
    Body(input): Body<CredentialInput>,
) -> ApiResult<Json<AdvisorWithPassword>> {
    let algorithm = algorithm(input.digest_algorithm.as_deref())?;
    let rotated = state.advisors.rotate(&auth.actor, &id, algorithm).await?;
    Ok(Json(rotated.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StateInput {
    pub state: ChosenState,
}

/// Sets an advisor available (ending a wrap-up early) or away.
#[utoipa::path(put, path = "/advisors/{id}/state", tag = "advisors",
    params(("id" = String, Path)),
    request_body = StateInput,
    responses((status = 200, body = AdvisorNow), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_state(
    State(state): State<AppState>,
    _auth: Authorized<can::ManageAdvisors>,
    Path(id): Path<String>,
    Body(input): Body<StateInput>,
) -> ApiResult<Json<AdvisorNow>> {
    Ok(Json(state.advisors.set_state(&id, input.state).await?))
}

/// Every queue now, for a supervisor's board or an advisor's screen: only counts,
/// no caller is named.
#[utoipa::path(get, path = "/queues", tag = "advisors",
    responses((status = 200, body = Vec<QueueNow>)),
    security(("bearer" = [])))]
pub async fn queues(
    State(state): State<AppState>,
    _auth: Authorized<can::WatchCalls>,
) -> ApiResult<Json<Vec<QueueNow>>> {
    Ok(Json(state.advisors.board().await?))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct EventFilter {
    /// Only this advisor's calls (an advisor's own screen).
    pub advisor: Option<String>,
}

/// The feed of calls offered to, answered and ended by advisors, as server-sent
/// events (`event: offered|not_taken|answered|ended`, `data:` a CallEvent in JSON).
/// A subscriber that falls behind is sent `event: lagged` with how many it missed.
#[utoipa::path(get, path = "/events/calls", tag = "advisors",
    params(EventFilter),
    responses((status = 200, content_type = "text/event-stream", body = CallEvent)),
    security(("bearer" = [])))]
pub async fn call_events(
    State(state): State<AppState>,
    auth: Authorized<can::WatchCalls>,
    Query(filter): Query<EventFilter>,
) -> ApiResult<Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>>> {
    state
        .store
        .audit(
            &auth.actor,
            Action::Read,
            Entity::Advisor,
            filter.advisor.as_deref().unwrap_or("*"),
            Some("call event feed"),
        )
        .await?;
    let events = state.advisors.events().subscribe();
    // The feed ends when the daemon starts shutting down, so it never holds up the
    // HTTP listener's drain.
    let shutdown = state.shutdown.clone();
    let stream = futures_util::stream::unfold(
        (events, filter.advisor, shutdown),
        |(mut events, advisor, shutdown)| async move {
            loop {
                let next = tokio::select! {
                    e = events.recv() => e,
                    _ = shutdown.cancelled() => return None,
                };
                let event = match next {
                    Ok(e) if advisor.as_ref().is_some_and(|a| *a != e.advisor_id) => continue,
                    Ok(e) => {
                        let kind = serde_json::to_value(e.kind)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default();
                        Event::default()
                            .event(kind)
                            .json_data(&e)
                            .unwrap_or_else(|_| Event::default().comment("unencodable"))
                    }
                    Err(RecvError::Lagged(n)) => {
                        Event::default().event("lagged").data(n.to_string())
                    }
                    Err(RecvError::Closed) => return None,
                };
                return Some((Ok(event), (events, advisor, shutdown)));
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
