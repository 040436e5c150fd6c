//! Extractors that parse requests into domain types and turn every failure into an
//! [`ApiError`] naming the field, before a handler (and so the store) sees anything.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::domain::Reference;

/// A JSON body, deserialised with the path of any bad field reported.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the body is too large",
                )
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.body_text())
            }
        })?;
        parse_json(&bytes).map(Body)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data if path != "." => {
                ApiError::invalid_field(path, strip_position(&inner.to_string()))
            }
            serde_json::error::Category::Data => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                strip_position(&inner.to_string()),
            ),
            _ => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("malformed JSON: {inner}"),
            ),
        }
    })
}

/// serde_json appends " at line 1 column 42" to data errors; the field path says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Query parameters, deserialised with the name of any bad parameter reported.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Params)
            .map_err(|e| {
                let path = e.path().to_string();
                let message = e.into_inner().to_string();
                if path == "." {
                    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message)
                } else {
                    ApiError::invalid_field(path, message)
                }
            })
    }
}

/// A `{reference}` path segment: a mistyped reference is refused here, so it can never
/// be matched to somebody else's request.
pub struct RefPath(pub Reference);

impl<S: Send + Sync> FromRequestParts<S> for RefPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|e| {
                    ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", e.body_text())
                })?;
        Reference::parse(&raw).map(RefPath).map_err(|e| ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_reference",
            message: format!("{raw:?}: {e}"),
            field: Some("reference".into()),
        })
    }
}
