//! Twilio's webhooks: `POST /webhooks/twilio/sms` (a resident's text) and
//! `POST /webhooks/twilio/status` (delivery reports). HTTP only: the SMS channel
//! (`channels::sms`) checks the signature before anything else, stores the text
//! through intake and gives the TwiML answer; Twilio hears 200 only after the commit.

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
