//! Twilio's webhooks: `POST /webhooks/twilio/sms` (a resident's text) and
//! `POST /webhooks/twilio/status` (delivery reports). Each is checked against its
//! `X-Twilio-Signature` before anything else; a bad or missing signature is 403 and
//! nothing is stored. A text is committed through intake before Twilio hears 200.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use contactd_sms::webhook::form_params;
use contactd_sms::{InboundSms, Keyword, StatusReport};

use super::AppState;
use crate::configuration::{Secret, SmsSettings};
use crate::domain::message::MessagePurpose;
use crate::domain::{Actor, Channel, LongText, PhoneNumber, Reference, ShortText, Timestamp};
use crate::intake::{InboundContact, Origin, Sender};

/// What the webhooks need to know of the SMS configuration.
#[derive(Clone)]
pub struct SmsWebhooks {
    auth_token: Secret,
    account_sid: String,
    public_url: String,
    reply_window_hours: u32,
    acknowledgement: String,
    help: String,
}

impl SmsWebhooks {
    pub fn new(s: &SmsSettings, public_url: &url::Url) -> Option<Self> {
        s.enabled().then(|| SmsWebhooks {
            auth_token: s.auth_token.clone(),
            account_sid: s.account_sid.clone(),
            public_url: public_url.as_str().trim_end_matches('/').to_string(),
            reply_window_hours: s.reply_window_hours,
            acknowledgement: s.acknowledgement.clone(),
            help: s.help.clone(),
        })
    }

    /// Parses the form and checks the signature over the URL Twilio called.
    fn authenticate(
        &self,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Vec<(String, String)>, (StatusCode, String)> {
        let params = form_params(body).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let url = url::Url::parse(&format!("{}{path}", self.public_url)).map_err(|_| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "public_url is not a URL".to_string(),
            )
        })?;
        let signature = headers
            .get("x-twilio-signature")
            .and_then(|v| v.to_str().ok());
        contactd_sms::verify(self.auth_token.expose(), &url, &params, signature).map_err(|e| {
            tracing::warn!(error = %e, "refused a Twilio webhook");
            (StatusCode::FORBIDDEN, e.to_string())
        })?;
        Ok(params)
    }
}

/// What every webhook checks before acting on it: the SMS channel is on, the
/// signature is Twilio's, the parameters parse, and the account is the council's.
fn admit<T>(
    state: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    parse: impl FnOnce(&[(String, String)]) -> Result<T, contactd_sms::WebhookError>,
    account_of: impl Fn(&T) -> &str,
) -> Result<(SmsWebhooks, T), (StatusCode, String)> {
    let hooks = state.sms.clone().ok_or((
        StatusCode::NOT_FOUND,
        "the SMS channel is not configured".to_string(),
    ))?;
    let params = hooks.authenticate(uri, headers, body)?;
    let parsed = parse(&params).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    if account_of(&parsed) != hooks.account_sid {
        return Err((
            StatusCode::FORBIDDEN,
            "not this council's Twilio account".to_string(),
        ));
    }
    Ok((hooks, parsed))
}

fn plain(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.to_string(),
    )
        .into_response()
}

/// TwiML: empty, or one reply message.
fn twiml(reply: Option<&str>) -> Response {
    let body = match reply {
        Some(text) => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>{}</Message></Response>",
            xml_escape(text)
        ),
        None => "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>".to_string(),
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/xml")], body).into_response()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
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
    let (hooks, sms) = match admit(&state, &uri, &headers, &body, InboundSms::parse, |m| {
        &m.account_sid
    }) {
        Ok(admitted) => admitted,
        Err((status, why)) => return plain(status, &why),
    };
    let sender = PhoneNumber::parse(&sms.from);
    if let Some(keyword) = Keyword::of(&sms.body) {
        return handle_keyword(&state, &hooks, &sms, keyword, sender.ok()).await;
    }
    match receive(&state, &hooks, &sms, sender.ok()).await {
        Ok(()) => twiml(None),
        Err(e) => {
            tracing::error!(error = %e, message_sid = %sms.message_sid, "could not store a text");
            // Not 200: Twilio retries, and the MessageSid makes the retry safe.
            plain(StatusCode::SERVICE_UNAVAILABLE, "not stored; retry")
        }
    }
}

async fn handle_keyword(
    state: &AppState,
    hooks: &SmsWebhooks,
    sms: &InboundSms,
    keyword: Keyword,
    sender: Option<PhoneNumber>,
) -> Response {
    let name = match keyword {
        Keyword::OptOut => "opt_out",
        Keyword::OptIn => "opt_in",
        Keyword::Help => "help",
    };
    let first_time = match state
        .store
        .record_keyword(&sms.message_sid, &sms.from, name)
        .await
    {
        Ok(new) => new,
        Err(e) => {
            tracing::error!(error = %e, "could not store a keyword message");
            return plain(StatusCode::SERVICE_UNAVAILABLE, "not stored; retry");
        }
    };
    if let (true, Some(number)) = (first_time, &sender) {
        let change = match keyword {
            Keyword::OptOut => Some((true, format!("texted {:?}", sms.body.trim()))),
            Keyword::OptIn => Some((false, format!("texted {:?}", sms.body.trim()))),
            Keyword::Help => None,
        };
        if let Some((suppress, reason)) = change
            && let Err(e) = state
                .store
                .set_sms_suppressed(&Actor::Channel(Channel::Sms), number, suppress, &reason)
                .await
        {
            tracing::error!(error = %e, "could not record an opt-out");
            return plain(StatusCode::SERVICE_UNAVAILABLE, "not stored; retry");
        }
    }
    match keyword {
        Keyword::Help => twiml(Some(&hooks.help)),
        // Twilio answers STOP and START itself (and so do carriers).
        _ => twiml(None),
    }
}

async fn receive(
    state: &AppState,
    hooks: &SmsWebhooks,
    sms: &InboundSms,
    sender: Option<PhoneNumber>,
) -> Result<(), String> {
    // Which request: a reference in the text that is the sender's own; else the
    // request of a text we sent them lately; else a new one.
    let mut reference = None;
    if let (Some(r), Some(number)) = (Reference::find_in(&sms.body), &sender)
        && state
            .store
            .request_belongs_to(r, number)
            .await
            .map_err(|e| e.to_string())?
    {
        reference = Some(r);
    }
    if reference.is_none()
        && let Some(number) = &sender
    {
        let since = Timestamp::now().plus_days(0).millis()
            - i64::from(hooks.reply_window_hours) * 3_600_000;
        reference = state
            .store
            .recent_message_request(number, Timestamp::from_millis(since))
            .await
            .map_err(|e| e.to_string())?;
    }
    let mut content = sms.body.trim().to_string();
    for url in &sms.media_urls {
        content.push_str(&format!("\n[media] {url}"));
    }
    if content.is_empty() {
        content = "(empty text)".into();
    }
    let contact = InboundContact {
        channel: Channel::Sms,
        origin: Origin::Channel,
        external_id: ShortText::parse(&sms.message_sid).map_err(|e| e.to_string())?,
        from: match &sender {
            Some(p) => Sender::Phone(p.clone()),
            None => Sender::Unknown(sms.from.clone()),
        },
        to: ShortText::truncate_from(&sms.to)
            .unwrap_or_else(|| ShortText::parse("unknown").expect("valid")),
        received_at: Timestamp::now(),
        // A body of nothing but control characters cleans down to nothing.
        content: LongText::truncate_from(&content)
            .unwrap_or_else(|| LongText::parse("(empty text)").expect("valid")),
        reference,
        service: None,
    };
    let outcome = state
        .intake
        .receive(&contact)
        .await
        .map_err(|e| e.to_string())?;
    if outcome.opened_request
        && !outcome.redelivery
        && let Some(number) = sender
    {
        // The acknowledgement goes after the commit and after Twilio has its 200.
        let outbound = state.outbound.clone();
        let text = hooks
            .acknowledgement
            .replace("{reference}", &outcome.reference.to_string());
        tokio::spawn(async move {
            let actor = Actor::Channel(Channel::Sms);
            let customer = outcome.customer_id.as_deref();
            if let Err(e) = outbound
                .send_sms(
                    &actor,
                    &number,
                    &text,
                    MessagePurpose::Reply,
                    Some(&outcome.request_id),
                    customer,
                )
                .await
            {
                tracing::error!(error = %e, "could not send an acknowledgement");
            }
        });
    }
    Ok(())
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
    let (_, report) = match admit(&state, &uri, &headers, &body, StatusReport::parse, |r| {
        &r.account_sid
    }) {
        Ok(admitted) => admitted,
        Err((status, why)) => return plain(status, &why),
    };
    match state
        .store
        .apply_message_status(
            &report.message_sid,
            report.status.as_str(),
            report.status.rank(),
            report.error_code,
        )
        .await
    {
        Ok(_) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "could not apply a status report");
            plain(StatusCode::SERVICE_UNAVAILABLE, "not stored; retry")
        }
    }
}
