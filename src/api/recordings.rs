//! Call recordings: list a request's, download one (quality staff and supervisors,
//! every access audited), place or lift a legal hold.

use axum::Json;
use axum::body::Body as ResponseBody;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;

use super::AppState;
use super::auth::{Authorized, can};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Body, RefPath};
use crate::domain::ShortText;
use crate::domain::recording::{Recording, RecordingStatus};

/// The recordings of a request's calls.
#[utoipa::path(get, path = "/requests/{reference}/recordings", tag = "recordings",
    params(("reference" = String, Path, description = "e.g. SR-1000002")),
    responses((status = 200, body = Vec<Recording>)),
    security(("bearer" = [])))]
pub async fn of_request(
    State(state): State<AppState>,
    auth: Authorized<can::ReadRequest>,
    RefPath(reference): RefPath,
) -> ApiResult<Json<Vec<Recording>>> {
    let access = auth.special_category();
    let actor = auth.actor;
    Ok(Json(
        state
            .store
            .recordings_of_request(&actor, reference, access)
            .await?,
    ))
}

/// Download a recording (stereo WAV: caller left, the daemon right). Each download is
/// written to the audit log.
#[utoipa::path(get, path = "/recordings/{id}/audio", tag = "recordings",
    params(("id" = String, Path, description = "Recording id")),
    responses((status = 200, content_type = "audio/wav", body = Vec<u8>), (status = 410, body = ErrorBody, description = "deleted at expiry")),
    security(("bearer" = [])))]
pub async fn download(
    State(state): State<AppState>,
    auth: Authorized<can::ListenToRecordings>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let access = auth.special_category();
    let actor = auth.actor;
    let recording = state
        .store
        .recording_for_download(&actor, &id, access)
        .await?;
    match recording.status {
        RecordingStatus::Complete => {}
        RecordingStatus::Purged => {
            return Err(ApiError::new(
                StatusCode::GONE,
                "gone",
                "this recording was deleted at the end of its retention period",
            ));
        }
        RecordingStatus::Lost => {
            return Err(ApiError::new(
                StatusCode::GONE,
                "gone",
                "this recording was lost (its row says why); there is no audio",
            ));
        }
        RecordingStatus::Recording => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "this call is still being recorded",
            ));
        }
    }
    let path = state
        .recordings
        .absolute(std::path::Path::new(&recording.path));
    let file = tokio::fs::File::open(&path).await.map_err(|e| {
        tracing::error!(recording = %id, error = %e, "recording file missing");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the recording file cannot be read",
        )
    })?;
    let stream = tokio_util::io::ReaderStream::new(file);
    Ok((
        [
            (header::CONTENT_TYPE, "audio/wav".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}.wav\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        ResponseBody::from_stream(stream),
    )
        .into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LegalHold {
    pub hold: bool,
    #[serde(default)]
    pub reason: Option<ShortText>,
}

/// Place or lift a legal hold: a held recording is kept past its expiry.
#[utoipa::path(put, path = "/recordings/{id}/legal-hold", tag = "recordings",
    params(("id" = String, Path, description = "Recording id")),
    request_body = LegalHold,
    responses((status = 200, body = Recording)),
    security(("bearer" = [])))]
pub async fn legal_hold(
    State(state): State<AppState>,
    auth: Authorized<can::HoldRecordings>,
    Path(id): Path<String>,
    Body(hold): Body<LegalHold>,
) -> ApiResult<Json<Recording>> {
    let actor = auth.actor;
    let reason = hold.reason.as_ref().map(ShortText::as_str);
    Ok(Json(
        state
            .store
            .set_legal_hold(&actor, &id, hold.hold, reason)
            .await?,
    ))
}
