//! Files residents attached: list a request's, download one (staff who handle
//! residents' records; every download audited). A file is served as a download, never
//! rendered by the browser: whatever a resident sent, it cannot run in a staff page.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::auth::{Authorized, can};
use super::error::ApiResult;
use super::extract::RefPath;
use crate::store::attachments::Attachment;

/// The files brought by a request's contacts.
#[utoipa::path(get, path = "/requests/{reference}/attachments", tag = "requests",
    params(("reference" = String, Path, description = "e.g. SR-1000002")),
    responses((status = 200, body = Vec<Attachment>)),
    security(("bearer" = [])))]
pub async fn of_request(
    State(state): State<AppState>,
    auth: Authorized<can::ReadRequest>,
    RefPath(reference): RefPath,
) -> ApiResult<Json<Vec<Attachment>>> {
    let access = auth.special_category();
    Ok(Json(
        state
            .store
            .attachments_of_request(&auth.actor, reference, access)
            .await?,
    ))
}

/// Download a file a resident attached. Each download is written to the audit log.
#[utoipa::path(get, path = "/attachments/{id}", tag = "requests",
    params(("id" = String, Path, description = "Attachment id")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>)),
    security(("bearer" = [])))]
pub async fn download(
    State(state): State<AppState>,
    auth: Authorized<can::ReadCustomer>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let access = auth.special_category();
    let (attachment, bytes, _) = state
        .store
        .attachment_for_download(&auth.actor, &id, access)
        .await?;
    // The name goes in RFC 6266's encoded form: no quoting tricks reach the header.
    let encoded: String = url::form_urlencoded::byte_serialize(attachment.name.as_bytes())
        .collect::<String>()
        .replace('+', "%20");
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename*=UTF-8''{encoded}"),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; sandbox".to_string(),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        bytes,
    )
        .into_response())
}
