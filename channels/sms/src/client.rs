//! Twilio's REST API for sending: `POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json`
//! with basic auth (account SID and auth token, or an API key and secret).
//!
//! Retries: 429 (Twilio's 20429, too many requests) and 503 (Twilio temporarily
//! unable to serve: try again) are retried with exponential backoff and jitter, a
//! bounded number of times, honouring Retry-After; a connection that could not be
//! made is retried too (nothing was sent). Any other 4xx is final. A timeout after the
//! request went out, and any other 5xx, is *not* retried: Twilio may have accepted
//! it, and a resident must not get the same text twice: the outbox asks Twilio's
//! message list ([`TwilioClient::find_sent`]) before anything is sent again.

use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::status::MessageStatus;

/// Twilio's code for "the recipient has replied STOP to this sender".
pub const OPTED_OUT: i64 = 21610;

#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.username)
    }
}

#[derive(Clone)]
pub struct TwilioClient {
    http: reqwest::Client,
    messages_url: Url,
    credentials: Credentials,
    max_attempts: u32,
    first_delay: Duration,
}

/// A message to send. Exactly one of `from` and `messaging_service_sid` is used.
#[derive(Debug, Clone)]
pub struct OutboundSms<'a> {
    pub to: &'a str,
    pub from: Option<&'a str>,
    pub messaging_service_sid: Option<&'a str>,
    pub body: &'a str,
    pub status_callback: Option<&'a str>,
    /// Seconds Twilio may keep trying to deliver.
    pub validity_period: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentSms {
    pub sid: String,
    pub status: MessageStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("the recipient has opted out of texts from this sender (Twilio 21610)")]
    OptedOut,
    #[error("Twilio refused the message: HTTP {status}, code {code:?}: {message}")]
    Rejected {
        status: u16,
        code: Option<i64>,
        message: String,
    },
    #[error("Twilio is unavailable after {attempts} attempt(s): {last}")]
    Unavailable { attempts: u32, last: String },
    #[error("no answer from Twilio; the message may or may not have been accepted: {0}")]
    Unknown(String),
}

#[derive(Deserialize)]
struct MessageResource {
    sid: String,
    status: String,
}

/// Messages looked at when reconciling a send: Twilio lists the newest first.
const LOOKUP_PAGE: usize = 50;

#[derive(Deserialize)]
struct MessagePage {
    messages: Vec<ListedMessage>,
}

#[derive(Deserialize)]
struct ListedMessage {
    sid: String,
    status: String,
    body: String,
    /// RFC 2822, e.g. `Wed, 18 Aug 2010 20:01:40 +0000`.
    date_created: String,
}

#[derive(Deserialize, Default)]
struct ErrorResource {
    code: Option<i64>,
    message: Option<String>,
}

impl TwilioClient {
    /// `api_base` is `https://api.twilio.com` in production (a test server in tests).
    pub fn new(
        api_base: &Url,
        account_sid: &str,
        credentials: Credentials,
    ) -> Result<Self, String> {
        let messages_url = api_base
            .join(&format!("/2010-04-01/Accounts/{account_sid}/Messages.json"))
            .map_err(|e| e.to_string())?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(TwilioClient {
            http,
            messages_url,
            credentials,
            max_attempts: 4,
            first_delay: Duration::from_millis(250),
        })
    }

    pub async fn send(&self, m: &OutboundSms<'_>) -> Result<SentSms, SendError> {
        let mut form: Vec<(&str, String)> =
            vec![("To", m.to.to_string()), ("Body", m.body.to_string())];
        match (m.messaging_service_sid, m.from) {
            (Some(service), _) => form.push(("MessagingServiceSid", service.to_string())),
            (None, Some(from)) => form.push(("From", from.to_string())),
            (None, None) => {}
        }
        if let Some(cb) = m.status_callback {
            form.push(("StatusCallback", cb.to_string()));
        }
        if let Some(v) = m.validity_period {
            form.push(("ValidityPeriod", v.to_string()));
        }
        let mut last = String::new();
        for attempt in 1..=self.max_attempts {
            let sent = self
                .http
                .post(self.messages_url.clone())
                .basic_auth(&self.credentials.username, Some(&self.credentials.password))
                .form(&form)
                .send()
                .await;
            let response = match sent {
                Ok(r) => r,
                Err(e) if e.is_connect() => {
                    last = e.to_string();
                    self.pause(attempt, None).await;
                    continue;
                }
                Err(e) => return Err(SendError::Unknown(e.to_string())),
            };
            let status = response.status();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let text = response.text().await.unwrap_or_default();
            if status.is_success() {
                let resource: MessageResource = serde_json::from_str(&text)
                    .map_err(|e| SendError::Unknown(format!("unreadable answer: {e}")))?;
                return Ok(SentSms {
                    sid: resource.sid,
                    status: MessageStatus::parse(&resource.status).unwrap_or(MessageStatus::Queued),
                });
            }
            let error: ErrorResource = serde_json::from_str(&text).unwrap_or_default();
            if status.is_server_error() && status.as_u16() != 503 {
                return Err(SendError::Unknown(format!(
                    "HTTP {status}: {}",
                    error.message.unwrap_or_default()
                )));
            }
            if status.as_u16() == 429 || status.as_u16() == 503 {
                last = format!("HTTP {status}: {}", error.message.unwrap_or_default());
                tracing::warn!(attempt, %status, "Twilio asked us to retry");
                if attempt < self.max_attempts {
                    self.pause(attempt, retry_after).await;
                }
                continue;
            }
            if error.code == Some(OPTED_OUT) {
                return Err(SendError::OptedOut);
            }
            return Err(SendError::Rejected {
                status: status.as_u16(),
                code: error.code,
                message: error.message.unwrap_or(text),
            });
        }
        Err(SendError::Unavailable {
            attempts: self.max_attempts,
            last,
        })
    }

    /// Asks Twilio whether a text to `to` with exactly `body` was accepted at or after
    /// `since` (Unix milliseconds): the answer to a send that timed out, before
    /// anything is sent again. `Ok(None)` only when Twilio's newest messages to that
    /// number cover `since` and none matches; any doubt is an error.
    pub async fn find_sent(
        &self,
        to: &str,
        body: &str,
        since_millis: i64,
    ) -> Result<Option<SentSms>, String> {
        let mut url = self.messages_url.clone();
        url.query_pairs_mut()
            .append_pair("To", to)
            .append_pair("PageSize", &LOOKUP_PAGE.to_string());
        let response = self
            .http
            .get(url)
            .basic_auth(&self.credentials.username, Some(&self.credentials.password))
            .send()
            .await
            .map_err(|e| format!("Twilio's message list: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("Twilio's message list: HTTP {}", response.status()));
        }
        let text = response
            .text()
            .await
            .map_err(|e| format!("Twilio's message list: {e}"))?;
        let page: MessagePage = serde_json::from_str(&text)
            .map_err(|e| format!("Twilio's message list is unreadable: {e}"))?;
        let mut oldest = i64::MAX;
        for m in &page.messages {
            let created = chrono::DateTime::parse_from_rfc2822(&m.date_created)
                .map_err(|e| format!("Twilio's date_created is unreadable: {e}"))?
                .timestamp_millis();
            oldest = oldest.min(created);
            // A minute's grace for clocks that disagree.
            if created + 60_000 >= since_millis && m.body == body {
                return Ok(Some(SentSms {
                    sid: m.sid.clone(),
                    status: MessageStatus::parse(&m.status).unwrap_or(MessageStatus::Queued),
                }));
            }
        }
        // A full page whose oldest entry is still after `since` may not reach back
        // far enough: Twilio cannot say from this page.
        if page.messages.len() >= LOOKUP_PAGE && oldest > since_millis - 60_000 {
            return Err(
                "too many texts to this number since; Twilio's list does not reach back".into(),
            );
        }
        Ok(None)
    }

    /// Exponential backoff with full jitter, at most 30 s; Retry-After when longer.
    async fn pause(&self, attempt: u32, retry_after: Option<Duration>) {
        let ceiling = self
            .first_delay
            .saturating_mul(1 << (attempt - 1).min(10))
            .min(Duration::from_secs(30));
        let jittered = ceiling.mul_f64(0.5 + rand::random::<f64>() / 2.0);
        let wait = retry_after
            .map(|r| r.min(Duration::from_secs(30)))
            .unwrap_or_default()
            .max(jittered);
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One HTTP exchange: returns the request's head and body, answers `reply`.
    async fn one_exchange(listener: tokio::net::TcpListener, reply: String) -> String {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 16 * 1024];
        let mut got = 0;
        loop {
            let n = socket.read(&mut buf[got..]).await.unwrap();
            got += n;
            let text = String::from_utf8_lossy(&buf[..got]).to_string();
            if let Some(head_end) = text.find("\r\n\r\n") {
                let len: usize = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if got >= head_end + 4 + len || n == 0 {
                    socket.write_all(reply.as_bytes()).await.unwrap();
                    return text;
                }
            }
        }
    }

    #[tokio::test]
    async fn api_key_basic_auth_and_the_message_fields() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let json = r#"{"sid": "SM0123456789abcdef0123456789abcdef", "status": "accepted"}"#;
        let reply = format!(
            "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
            json.len()
        );
        let server = tokio::spawn(one_exchange(listener, reply));
        let client = TwilioClient::new(
            &base,
            "AC0123456789abcdef0123456789abcdef",
            Credentials {
                username: "SKkey".into(),
                password: "secret".into(),
            },
        )
        .unwrap();
        let sent = client
            .send(&OutboundSms {
                to: "+447700900123",
                from: None,
                messaging_service_sid: Some("MG0123456789abcdef0123456789abcdef"),
                body: "Hello & goodbye",
                status_callback: Some("https://council.example/webhooks/twilio/status"),
                validity_period: Some(600),
            })
            .await;
        let request = server.await.unwrap();
        assert_eq!(sent.unwrap().status, MessageStatus::Accepted);
        assert!(
            request.starts_with(
                "POST /2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json "
            ),
            "{request}"
        );
        // base64("SKkey:secret")
        assert!(
            request.contains("authorization: Basic U0trZXk6c2VjcmV0"),
            "{request}"
        );
        for field in [
            "To=%2B447700900123",
            "MessagingServiceSid=MG0123456789abcdef0123456789abcdef",
            "Body=Hello+%26+goodbye",
            "ValidityPeriod=600",
            "StatusCallback=https%3A%2F%2Fcouncil.example%2Fwebhooks%2Ftwilio%2Fstatus",
        ] {
            assert!(request.contains(field), "{field} in {request}");
        }
        assert!(
            !request.contains("From="),
            "a messaging service replaces From"
        );
    }
}
