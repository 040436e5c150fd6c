//! `GET /audit`: the audit log, for admins only.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;

use super::AppState;
use super::auth::{Authorized, can};
use super::error::{ApiResult, ErrorBody};
use super::extract::Params;
use super::pagination::Paging;
use crate::store::audit::{self, AuditEntry, AuditQuery};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    /// `customer` or `request`.
    pub entity: Option<String>,
    pub entity_id: Option<String>,
    /// e.g. `staff:alice`, `channel:sms`.
    pub actor: Option<String>,
    pub page: Option<u32>,
    pub per_page: Option<u32>,
}

/// Read the audit log, newest first.
#[utoipa::path(get, path = "/audit", tag = "audit", params(AuditFilter),
    responses((status = 200, body = Vec<AuditEntry>), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _auth: Authorized<can::ReadAudit>,
    Params(f): Params<AuditFilter>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    let paging = Paging::new(f.page, f.per_page)?;
    let q = AuditQuery {
        entity: f.entity,
        entity_id: f.entity_id,
        actor: f.actor,
        limit: paging.limit(),
        offset: paging.offset(),
    };
    let mut conn = state
        .store
        .pool()
        .acquire()
        .await
        .map_err(crate::store::StoreError::from)?;
    Ok(Json(audit::search(&mut conn, &q).await?))
}
