//! `/customers`: the central record — create, read, update (PATCH), search, consents,
//! history, contact history and merging duplicates.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::{Authorized, can};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Body, Params, parse_json};
use super::pagination::Paging;
use crate::domain::customer::{ConsentChange, Customer, CustomerDetails, HistoryEntry};
use crate::domain::request::Contact;
use crate::domain::{EmailAddress, PhoneNumber, Postcode};
use crate::store::customers::{CustomerQuery, UpdateError};
use crate::store::requests::SpecialCategoryAccess;

fn checked(details: CustomerDetails) -> ApiResult<CustomerDetails> {
    details
        .normalise()
        .map_err(|e| ApiError::invalid_field(e.field, e))
}

/// Create a customer record.
#[utoipa::path(post, path = "/customers", tag = "customers", request_body = CustomerDetails,
    responses((status = 201, body = Customer), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    auth: Authorized<can::WriteCustomer>,
    Body(details): Body<CustomerDetails>,
) -> ApiResult<(StatusCode, Json<Customer>)> {
    let actor = auth.actor;
    let details = checked(details)?;
    let customer = state.store.create_customer(&actor, &details).await?;
    Ok((StatusCode::CREATED, Json(customer)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CustomerSearch {
    /// The start of the given name, the family name or "given family".
    pub name: Option<String>,
    /// Any format: normalised to E.164 before matching.
    pub phone: Option<PhoneNumber>,
    pub email: Option<EmailAddress>,
    pub postcode: Option<Postcode>,
    pub page: Option<u32>,
    pub per_page: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct CustomerPage {
    pub items: Vec<Customer>,
    pub page: u32,
    pub per_page: u32,
}

/// Search the central record (at least one condition).
#[utoipa::path(get, path = "/customers", tag = "customers", params(CustomerSearch),
    responses((status = 200, body = CustomerPage), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn search(
    State(state): State<AppState>,
    auth: Authorized<can::ReadCustomer>,
    Params(q): Params<CustomerSearch>,
) -> ApiResult<Json<CustomerPage>> {
    let actor = auth.actor;
    let name = q
        .name
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    if let Some(n) = &name
        && n.chars().count() > 200
    {
        return Err(ApiError::invalid_field(
            "name",
            "must be at most 200 characters",
        ));
    }
    if name.is_none() && q.phone.is_none() && q.email.is_none() && q.postcode.is_none() {
        return Err(ApiError::invalid_field(
            "name",
            "give at least one of name, phone, email or postcode",
        ));
    }
    let paging = Paging::new(q.page, q.per_page)?;
    let query = CustomerQuery {
        name,
        phone: q.phone,
        email: q.email,
        postcode: q.postcode,
        limit: paging.limit(),
        offset: paging.offset(),
    };
    let items = state.store.search_customers(&actor, &query).await?;
    Ok(Json(CustomerPage {
        items,
        page: paging.page,
        per_page: paging.per_page,
    }))
}

/// Read one customer record.
#[utoipa::path(get, path = "/customers/{id}", tag = "customers",
    params(("id" = String, Path, description = "Customer id")),
    responses((status = 200, body = Customer), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    auth: Authorized<can::ReadCustomer>,
    Path(id): Path<String>,
) -> ApiResult<Json<Customer>> {
    let actor = auth.actor;
    Ok(Json(state.store.get_customer(&actor, &id).await?))
}

/// Change some fields of a record ("tell us once"): only the keys sent change, each
/// change is kept in the record's history.
#[utoipa::path(patch, path = "/customers/{id}", tag = "customers",
    params(("id" = String, Path, description = "Customer id")),
    request_body(content = Object, description = "Any subset of CustomerDetails' fields"),
    responses((status = 200, body = Customer), (status = 422, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    auth: Authorized<can::WriteCustomer>,
    Path(id): Path<String>,
    Body(patch): Body<serde_json::Map<String, Value>>,
) -> ApiResult<Json<Customer>> {
    let actor = auth.actor;
    if patch.is_empty() {
        return Err(ApiError::invalid_field(".", "the patch changes nothing"));
    }
    let result = state
        .store
        .update_customer(&actor, &id, |current| {
            let Value::Object(mut merged) = serde_json::to_value(&current).expect("serialises")
            else {
                unreachable!("details serialise to an object")
            };
            for (k, v) in patch {
                merged.insert(k, v);
            }
            let bytes = serde_json::to_vec(&merged).expect("serialises");
            checked(parse_json::<CustomerDetails>(&bytes)?)
        })
        .await;
    match result {
        Ok(c) => Ok(Json(c)),
        Err(UpdateError::Rejected(e)) => Err(e),
        Err(UpdateError::Store(e)) => Err(e.into()),
    }
}

/// Record a consent given or withdrawn (kept as history: when and how).
#[utoipa::path(post, path = "/customers/{id}/consents", tag = "customers",
    params(("id" = String, Path, description = "Customer id")),
    request_body = ConsentChange,
    responses((status = 200, body = Customer), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn record_consent(
    State(state): State<AppState>,
    auth: Authorized<can::WriteCustomer>,
    Path(id): Path<String>,
    Body(change): Body<ConsentChange>,
) -> ApiResult<Json<Customer>> {
    let actor = auth.actor;
    Ok(Json(
        state.store.record_consent(&actor, &id, &change).await?,
    ))
}

/// Every change to a record: who, when, old and new value.
#[utoipa::path(get, path = "/customers/{id}/history", tag = "customers",
    params(("id" = String, Path, description = "Customer id")),
    responses((status = 200, body = Vec<HistoryEntry>)),
    security(("bearer" = [])))]
pub async fn history(
    State(state): State<AppState>,
    auth: Authorized<can::ReadCustomer>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<HistoryEntry>>> {
    let actor = auth.actor;
    Ok(Json(state.store.customer_history(&actor, &id).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    pub page: Option<u32>,
    pub per_page: Option<u32>,
}

/// A resident's contact history across every channel, newest first.
#[utoipa::path(get, path = "/customers/{id}/contacts", tag = "customers",
    params(("id" = String, Path, description = "Customer id"), PageParams),
    responses((status = 200, body = Vec<Contact>)),
    security(("bearer" = [])))]
pub async fn contacts(
    State(state): State<AppState>,
    auth: Authorized<can::ReadCustomer>,
    Path(id): Path<String>,
    Params(p): Params<PageParams>,
) -> ApiResult<Json<Vec<Contact>>> {
    let access = auth.special_category();
    let actor = auth.actor;
    let paging = Paging::new(p.page, p.per_page)?;
    let contacts = state
        .store
        .customer_contacts(
            &actor,
            &id,
            access == SpecialCategoryAccess::Allowed,
            paging.limit(),
            paging.offset(),
        )
        .await?;
    Ok(Json(contacts))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeInput {
    /// The duplicate record, merged into the one in the path and kept pointing at it.
    pub duplicate_id: String,
}

/// Merge a duplicate record into this one (supervisors and admins).
#[utoipa::path(post, path = "/customers/{id}/merge", tag = "customers",
    params(("id" = String, Path, description = "The surviving customer's id")),
    request_body = MergeInput,
    responses((status = 200, body = Customer), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn merge(
    State(state): State<AppState>,
    auth: Authorized<can::MergeCustomers>,
    Path(id): Path<String>,
    Body(input): Body<MergeInput>,
) -> ApiResult<Json<Customer>> {
    let actor = auth.actor;
    Ok(Json(
        state
            .store
            .merge_customers(&actor, &id, &input.duplicate_id)
            .await?,
    ))
}
