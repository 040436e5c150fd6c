//! API errors: JSON with a stable machine code, a human message and, for bad input,
//! the field at fault. Clients branch on `code`, never on `message`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::intake::IntakeError;
use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

/// The body of every error response.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable: `unauthorized`, `forbidden`, `not_found`, `invalid_json`, `invalid_field`,
    /// `invalid_reference`, `unknown_reference`, `conflict`, `payload_too_large`,
    /// `unsupported_media_type`, `unavailable`, `internal`.
    pub code: String,
    pub message: String,
    /// The input field at fault, for `invalid_field` and friends.
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn invalid_field(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        let field = field.into();
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_field",
            message: format!("{field}: {message}"),
            field: Some(field),
        }
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required (Authorization: Bearer ...)",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                field: self.field,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                "www-authenticate",
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found("record"),
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            StoreError::Restricted => ApiError::forbidden(
                "this request holds special category data; your role may not read it",
            ),
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the record store is unavailable; nothing was changed, try again",
                )
            }
        }
    }
}

impl From<IntakeError> for ApiError {
    fn from(e: IntakeError) -> Self {
        match e {
            IntakeError::UnknownReference(r) => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "unknown_reference",
                message: format!("no request has the reference {r}"),
                field: Some("reference".into()),
            },
            IntakeError::UnknownService(s) => {
                ApiError::invalid_field("service", format!("{s} is not in the service catalogue"))
            }
            IntakeError::Store(e) => e.into(),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
