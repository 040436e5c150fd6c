//! Providers' webhooks. Twilio's: `POST /webhooks/twilio/sms` (a resident's text) and
//! `POST /webhooks/twilio/status` (delivery reports); GOV.UK Notify's:
//! `POST /webhooks/notify/status` (delivery receipts) and `/webhooks/notify/inbound`
//! (a resident's text). HTTP only: the SMS channel (`channels::sms`) and
//! [`crate::notify`] check the signature or bearer token before anything else, store
//! the text through intake (and give Twilio its TwiML answer); the provider hears 200
//! only after the commit.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::channels::sms::{Refusal, SmsChannel};

fn plain(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.to_string(),
    )
        .into_response()
}

fn refused(r: Refusal) -> Response {
    let status = match r {
        Refusal::Malformed(_) => StatusCode::BAD_REQUEST,
        Refusal::Forbidden(_) => StatusCode::FORBIDDEN,
        Refusal::Unauthorised(_) => StatusCode::UNAUTHORIZED,
        Refusal::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    };
    plain(status, &r.to_string())
}

/// The channel (when it is on), and what Twilio signed: the URL it called and its
/// signature.
fn signed<'a>(
    state: &'a AppState,
    uri: &'a Uri,
    headers: &'a HeaderMap,
) -> Option<(&'a SmsChannel, &'a str, Option<&'a str>)> {
    let channel = state.sms.as_ref()?;
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok());
    Some((channel, path, signature))
}

fn sms_off() -> Response {
    plain(StatusCode::NOT_FOUND, "the SMS channel is not configured")
}

/// A resident's text.
#[utoipa::path(post, path = "/webhooks/twilio/sms", tag = "webhooks",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "Twilio's message parameters, signed"),
    responses((status = 200, content_type = "text/xml", body = String, description = "stored; TwiML"), (status = 403, description = "bad or missing signature"), (status = 400)))]
pub async fn inbound_sms(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((channel, path, signature)) = signed(&state, &uri, &headers) else {
        return sms_off();
    };
    match channel.text(path, signature, &body).await {
        Ok(twiml) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, contactd_sms::twiml::CONTENT_TYPE)],
            twiml,
        )
            .into_response(),
        Err(r) => refused(r),
    }
}

/// A delivery report for a text we sent.
#[utoipa::path(post, path = "/webhooks/twilio/status", tag = "webhooks",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "Twilio's status parameters, signed"),
    responses((status = 200, description = "applied, or ignored as stale"), (status = 403, description = "bad or missing signature"), (status = 400)))]
pub async fn status_callback(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((channel, path, signature)) = signed(&state, &uri, &headers) else {
        return sms_off();
    };
    match channel.status_report(path, signature, &body).await {
        Ok(()) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "").into_response(),
        Err(r) => refused(r),
    }
}

fn notify_off() -> Response {
    plain(StatusCode::NOT_FOUND, "GOV.UK Notify is not configured")
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

fn done(r: Result<(), Refusal>) -> Response {
    match r {
        Ok(()) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "").into_response(),
        Err(r) => refused(r),
    }
}

/// A delivery receipt from GOV.UK Notify.
#[utoipa::path(post, path = "/webhooks/notify/status", tag = "webhooks",
    request_body(content = String, content_type = "application/json", description = "Notify's delivery receipt; Authorization: Bearer {notify.callback_token}"),
    responses((status = 200, description = "applied, or ignored as stale"), (status = 401, description = "bad or missing bearer token"), (status = 400)))]
pub async fn notify_receipt(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(notify) = &state.notify else {
        return notify_off();
    };
    done(notify.receipt(authorization(&headers), &body).await)
}

/// A resident's text, received by GOV.UK Notify.
#[utoipa::path(post, path = "/webhooks/notify/inbound", tag = "webhooks",
    request_body(content = String, content_type = "application/json", description = "Notify's received text; Authorization: Bearer {notify.callback_token}"),
    responses((status = 200, description = "stored"), (status = 401, description = "bad or missing bearer token"), (status = 400), (status = 503, description = "not stored; Notify retries")))]
pub async fn notify_inbound(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(notify) = &state.notify else {
        return notify_off();
    };
    done(notify.text(authorization(&headers), &body).await)
}
