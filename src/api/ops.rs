//! Operations: liveness, readiness, Prometheus metrics, the OpenAPI document and the
//! service catalogue. Health and metrics need no token (they are for the platform, and
//! the embedded defaults bind loopback only); the catalogue does.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::auth::{Authorized, can};
use super::error::{ApiError, ApiResult};
use crate::store::services::Service;

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The daemon can serve: its database (and Redis, when configured) answer, and it is
/// not shutting down.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let unavailable = |why| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health { status: why }),
        )
    };
    if state.shutdown.is_cancelled() {
        return unavailable("shutting down");
    }
    if let Some(problem) = state.recorder.problem() {
        tracing::warn!(%problem, "readiness: recordings cannot be written");
        return unavailable("recordings cannot be written");
    }
    if state.http_connections.at_limit() {
        return unavailable("http connection limit reached");
    }
    match state.sip.as_ref().and_then(|s| s.limit_reached()) {
        Some(contactd_sip::SipLimit::Calls) => return unavailable("call limit reached"),
        Some(contactd_sip::SipLimit::TcpConnections) => {
            return unavailable("sip tcp connection limit reached");
        }
        None => {}
    }
    if let Err(e) = state.store.ping().await {
        tracing::warn!(error = %e, "readiness: database unreachable");
        return unavailable("database unreachable");
    }
    if let Some(redis) = &state.redis
        && let Err(e) = redis.ping().await
    {
        tracing::warn!(error = %e, "readiness: redis unreachable");
        return unavailable("redis unreachable");
    }
    (StatusCode::OK, Json(Health { status: "ok" }))
}

/// Prometheus metrics in the text exposition format. With `http.metrics_token` set,
/// only a scraper presenting it (`Authorization: Bearer …`) gets them.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "text/plain", body = String),
        (status = 401, description = "http.metrics_token is set and was not presented")))]
pub async fn metrics(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    if let Some(expected) = &state.metrics_token {
        let presented = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        // Digests compared, so the comparison's time says nothing about the token.
        use sha2::Digest;
        if sha2::Sha256::digest(presented.as_bytes()) != sha2::Sha256::digest(expected.as_bytes()) {
            return super::error::ApiError::unauthorized().into_response();
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations",
    responses((status = 200, content_type = "application/json", body = Object)))]
pub async fn openapi(
    Extension(doc): Extension<Arc<utoipa::openapi::OpenApi>>,
) -> impl IntoResponse {
    Json(doc.as_ref().clone())
}

/// The service catalogue.
#[utoipa::path(get, path = "/api/v1/services", tag = "operations",
    responses((status = 200, body = Vec<Service>)),
    security(("bearer" = [])))]
pub async fn services(
    State(state): State<AppState>,
    _auth: Authorized<can::ReadCatalogue>,
) -> ApiResult<Json<Vec<Service>>> {
    Ok(Json(state.store.services().await.map_err(ApiError::from)?))
}
