//! `/requests`: service requests by their resident-facing reference — open, read,
//! list, move through the life-cycle, notes, timeline, assigning a customer.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::{Authorized, can};
use super::error::{ApiResult, ErrorBody};
use super::extract::{Body, Params, RefPath};
use super::pagination::Paging;
use crate::configuration::ServiceCode;
use crate::domain::request::{NewRequest, NoteInput, ServiceRequest, StatusChange, TimelineEvent};
use crate::domain::{EmailAddress, LongText, PhoneNumber, RequestStatus};
use crate::store::requests::RequestQuery;

/// Open a request for a customer.
#[utoipa::path(post, path = "/requests", tag = "requests", request_body = NewRequest,
    responses((status = 201, body = ServiceRequest), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    auth: Authorized<can::WriteRequest>,
    Body(new): Body<NewRequest>,
) -> ApiResult<(StatusCode, Json<ServiceRequest>)> {
    let actor = auth.actor;
    let request = state.notices.open_request(&actor, &new).await?;
    Ok((StatusCode::CREATED, Json(request)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RequestFilter {
    pub status: Option<RequestStatus>,
    pub service: Option<ServiceCode>,
    pub customer_id: Option<String>,
    /// The customer's phone number, any format.
    pub phone: Option<PhoneNumber>,
    pub email: Option<EmailAddress>,
    pub page: Option<u32>,
    pub per_page: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct RequestPage {
    pub items: Vec<ServiceRequest>,
    /// How many requests match, over all pages.
    pub total: i64,
    pub page: u32,
    pub per_page: u32,
}

/// List requests, newest first.
#[utoipa::path(get, path = "/requests", tag = "requests", params(RequestFilter),
    responses((status = 200, body = RequestPage), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    auth: Authorized<can::ReadRequest>,
    Params(f): Params<RequestFilter>,
) -> ApiResult<Json<RequestPage>> {
    let access = auth.special_category();
    let actor = auth.actor;
    let paging = Paging::new(f.page, f.per_page)?;
    let q = RequestQuery {
        status: f.status,
        service: f.service,
        customer_id: f.customer_id,
        phone: f.phone,
        email: f.email,
        limit: paging.limit(),
        offset: paging.offset(),
    };
    let (items, total) = state.store.list_requests(&actor, &q, access).await?;
    Ok(Json(RequestPage {
        items,
        total,
        page: paging.page,
        per_page: paging.per_page,
    }))
}

/// Read a request by its reference (e.g. `SR-1000002`).
#[utoipa::path(get, path = "/requests/{reference}", tag = "requests",
    params(("reference" = String, Path, description = "e.g. SR-1000002")),
    responses((status = 200, body = ServiceRequest), (status = 422, body = ErrorBody, description = "mistyped reference"), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    auth: Authorized<can::ReadRequest>,
    RefPath(reference): RefPath,
) -> ApiResult<Json<ServiceRequest>> {
    let access = auth.special_category();
    let actor = auth.actor;
    Ok(Json(
        state.store.get_request(&actor, reference, access).await?,
    ))
}

/// Move a request along its life-cycle.
#[utoipa::path(post, path = "/requests/{reference}/status", tag = "requests",
    params(("reference" = String, Path, description = "e.g. SR-1000002")),
    request_body = StatusChange,
    responses((status = 200, body = ServiceRequest), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn change_status(
    State(state): State<AppState>,
    auth: Authorized<can::WriteRequest>,
    RefPath(reference): RefPath,
    Body(change): Body<StatusChange>,
) -> ApiResult<Json<ServiceRequest>> {
    let access = auth.special_category();
    let actor = auth.actor;
    let note = change.note.as_ref().map(LongText::as_str);
    Ok(Json(
        state
            .notices
            .change_status(&actor, reference, change.status, note, access)
            .await?,
    ))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonInput {
    #[serde(default)]
    pub reason: Option<LongText>,
}

/// Cancel a request.
#[utoipa::path(post, path = "/requests/{reference}/cancel", tag = "requests",
    params(("reference" = String, Path, description = "e.g. SR-1000002")),
    request_body = ReasonInput,
    responses((status = 200, body = ServiceRequest), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    auth: Authorized<can::WriteRequest>,
    RefPath(reference): RefPath,
    Body(input): Body<ReasonInput>,
) -> ApiResult<Json<ServiceRequest>> {
    move_to(state, auth, reference, RequestStatus::Cancelled, input).await
}

/// Reopen a resolved or cancelled request.
#[utoipa::path(post, path = "/requests/{reference}/reopen", tag = "requests",
    params(("reference" = String, Path, description = "e.g. SR-1000002")),
    request_body = ReasonInput,
    responses((status = 200, body = ServiceRequest), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn reopen(
    State(state): State<AppState>,
    auth: Authorized<can::WriteRequest>,
    RefPath(reference): RefPath,
    Body(input): Body<ReasonInput>,
) -> ApiResult<Json<ServiceRequest>> {
    move_to(state, auth, reference, RequestStatus::Open, input).await
}

async fn move_to(
    state: AppState,
    auth: Authorized<can::WriteRequest>,
    reference: crate::domain::Reference,
    to: RequestStatus,
    input: ReasonInput,
) -> ApiResult<Json<ServiceRequest>> {
    let access = auth.special_category();
    let actor = auth.actor;
    let note = input.reason.as_ref().map(LongText::as_str);
    Ok(Json(
        state
            .notices
            .change_status(&actor, reference, to, note, access)
            .await?,
    ))
}

/// Add a note to a request's timeline.
#[utoipa::path(post, path = "/requests/{reference}/notes", tag = "requests",
    params(("reference" = String, Path, description = "e.g. SR-1000002")),
    request_body = NoteInput,
    responses((status = 201, body = TimelineEvent)),
    security(("bearer" = [])))]
pub async fn add_note(
    State(state): State<AppState>,
    auth: Authorized<can::WriteRequest>,
    RefPath(reference): RefPath,
    Body(note): Body<NoteInput>,
) -> ApiResult<(StatusCode, Json<TimelineEvent>)> {
    let access = auth.special_category();
    let actor = auth.actor;
    let event = state
        .store
        .add_note(&actor, reference, note.body.as_str(), access)
        .await?;
    Ok((StatusCode::CREATED, Json(event)))
}

/// A request's timeline: opening, contacts, notes and status changes, oldest first.
#[utoipa::path(get, path = "/requests/{reference}/timeline", tag = "requests",
    params(("reference" = String, Path, description = "e.g. SR-1000002")),
    responses((status = 200, body = Vec<TimelineEvent>)),
    security(("bearer" = [])))]
pub async fn timeline(
    State(state): State<AppState>,
    auth: Authorized<can::ReadRequest>,
    RefPath(reference): RefPath,
) -> ApiResult<Json<Vec<TimelineEvent>>> {
    let access = auth.special_category();
    let actor = auth.actor;
    Ok(Json(state.store.timeline(&actor, reference, access).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignCustomer {
    pub customer_id: String,
}

/// Give a request the customer intake could not identify.
#[utoipa::path(put, path = "/requests/{reference}/customer", tag = "requests",
    params(("reference" = String, Path, description = "e.g. SR-1000002")),
    request_body = AssignCustomer,
    responses((status = 200, body = ServiceRequest)),
    security(("bearer" = [])))]
pub async fn assign_customer(
    State(state): State<AppState>,
    auth: Authorized<can::WriteRequest>,
    RefPath(reference): RefPath,
    Body(input): Body<AssignCustomer>,
) -> ApiResult<Json<ServiceRequest>> {
    let access = auth.special_category();
    let actor = auth.actor;
    Ok(Json(
        state
            .store
            .assign_customer(&actor, reference, &input.customer_id, access)
            .await?,
    ))
}
