//! What Twilio posts: an inbound message or a status report, as form parameters.
//! Parsed into plain values with every field bounded; anything else is refused.

use crate::status::MessageStatus;

/// The most form parameters a webhook may carry (Twilio sends a few dozen).
pub const MAX_PARAMS: usize = 200;
/// A concatenated SMS is at most 1,600 characters.
pub const MAX_BODY_CHARS: usize = 1600;
/// Twilio allows up to 10 media items per message.
pub const MAX_MEDIA: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("{0} is not valid")]
    Invalid(&'static str),
    #[error("too many parameters")]
    TooMany,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundSms {
    pub message_sid: String,
    pub account_sid: String,
    /// As Twilio gives it: E.164 for phone numbers.
    pub from: String,
    pub to: String,
    pub body: String,
    pub media_urls: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    pub message_sid: String,
    pub account_sid: String,
    pub status: MessageStatus,
    pub error_code: Option<i64>,
}

/// Decodes an `application/x-www-form-urlencoded` body, keeping repeated keys.
pub fn form_params(body: &[u8]) -> Result<Vec<(String, String)>, WebhookError> {
    let params: Vec<(String, String)> = url::form_urlencoded::parse(body)
        .take(MAX_PARAMS + 1)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if params.len() > MAX_PARAMS {
        return Err(WebhookError::TooMany);
    }
    Ok(params)
}

fn get<'a>(params: &'a [(String, String)], key: &'static str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn sid(
    params: &[(String, String)],
    key: &'static str,
    prefix: &[&str],
) -> Result<String, WebhookError> {
    let v = get(params, key).ok_or(WebhookError::Missing(key))?;
    let ok = v.len() == 34
        && prefix.iter().any(|p| v.starts_with(p))
        && v[2..].bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(v.to_string())
    } else {
        Err(WebhookError::Invalid(key))
    }
}

fn address(params: &[(String, String)], key: &'static str) -> Result<String, WebhookError> {
    let v = get(params, key).ok_or(WebhookError::Missing(key))?.trim();
    if v.is_empty() || v.len() > 64 || v.chars().any(char::is_control) {
        return Err(WebhookError::Invalid(key));
    }
    Ok(v.to_string())
}

impl InboundSms {
    pub fn parse(params: &[(String, String)]) -> Result<Self, WebhookError> {
        let body = get(params, "Body").unwrap_or_default();
        if body.chars().count() > MAX_BODY_CHARS {
            return Err(WebhookError::Invalid("Body"));
        }
        let num_media: usize = match get(params, "NumMedia") {
            Some(n) => n
                .trim()
                .parse()
                .map_err(|_| WebhookError::Invalid("NumMedia"))?,
            None => 0,
        };
        if num_media > MAX_MEDIA {
            return Err(WebhookError::Invalid("NumMedia"));
        }
        let media_urls = (0..num_media)
            .filter_map(|i| {
                params
                    .iter()
                    .find(|(k, _)| *k == format!("MediaUrl{i}"))
                    .map(|(_, v)| v.clone())
            })
            .filter(|u| u.len() <= 2048)
            .collect();
        Ok(InboundSms {
            message_sid: sid(params, "MessageSid", &["SM", "MM"])?,
            account_sid: sid(params, "AccountSid", &["AC"])?,
            from: address(params, "From")?,
            to: address(params, "To")?,
            body: body.to_string(),
            media_urls,
        })
    }
}

impl StatusReport {
    pub fn parse(params: &[(String, String)]) -> Result<Self, WebhookError> {
        let status = get(params, "MessageStatus")
            .or_else(|| get(params, "SmsStatus"))
            .ok_or(WebhookError::Missing("MessageStatus"))?;
        let error_code = match get(params, "ErrorCode").filter(|c| !c.is_empty()) {
            Some(c) => Some(
                c.trim()
                    .parse()
                    .map_err(|_| WebhookError::Invalid("ErrorCode"))?,
            ),
            None => None,
        };
        Ok(StatusReport {
            message_sid: sid(params, "MessageSid", &["SM", "MM"])?,
            account_sid: sid(params, "AccountSid", &["AC"])?,
            status: MessageStatus::parse(status).ok_or(WebhookError::Invalid("MessageStatus"))?,
            error_code,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const SM: &str = "SM0123456789abcdef0123456789abcdef";
    const AC: &str = "AC0123456789abcdef0123456789abcdef";

    #[test]
    fn inbound() {
        let m = InboundSms::parse(&p(&[
            ("MessageSid", SM),
            ("AccountSid", AC),
            ("From", "+447700900123"),
            ("To", "+441612345000"),
            ("Body", "Bin not collected"),
            ("NumMedia", "1"),
            ("MediaUrl0", "https://api.twilio.com/m/1"),
        ]))
        .unwrap();
        assert_eq!(m.body, "Bin not collected");
        assert_eq!(m.media_urls.len(), 1);
        assert_eq!(
            InboundSms::parse(&p(&[("AccountSid", AC)])),
            Err(WebhookError::Missing("MessageSid"))
        );
        assert_eq!(
            InboundSms::parse(&p(&[
                ("MessageSid", "SM1"),
                ("AccountSid", AC),
                ("From", "x"),
                ("To", "y")
            ])),
            Err(WebhookError::Invalid("MessageSid"))
        );
        let long = "x".repeat(1601);
        assert_eq!(
            InboundSms::parse(&p(&[
                ("MessageSid", SM),
                ("AccountSid", AC),
                ("From", "x"),
                ("To", "y"),
                ("Body", &long)
            ])),
            Err(WebhookError::Invalid("Body"))
        );
    }

    #[test]
    fn status() {
        let s = StatusReport::parse(&p(&[
            ("MessageSid", SM),
            ("AccountSid", AC),
            ("MessageStatus", "undelivered"),
            ("ErrorCode", "30003"),
        ]))
        .unwrap();
        assert_eq!(
            (s.status, s.error_code),
            (MessageStatus::Undelivered, Some(30003))
        );
        assert!(form_params("a=1&".repeat(300).as_bytes()).is_err());
    }
}
