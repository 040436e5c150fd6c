//! Notify's REST API, as contactd uses it: send a text or an email from a template,
//! find a notification by our reference or by its id, read a template.
//!
//! What an answer means for a resend is decided here, once: an answer Notify gave
//! (400, 403, 429) means it did not accept the notification; no answer, or a 5xx,
//! may follow an acceptance, so the caller must look the reference up before any
//! resend. Requests to send pass a token bucket first (3,000 a minute, bursts of at
//! most 1,000), so contactd stays inside Notify's rate limit however much is due.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

use crate::key::ApiKey;
use crate::status::NotifyStatus;
use crate::token::token;

/// Who a notification goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// A phone number as Notify takes it (UK or international).
    Sms(String),
    Email(String),
}

/// One notification: a template and what fills it in, with our fixed reference.
#[derive(Debug, Clone)]
pub struct Notification<'a> {
    pub to: Recipient,
    pub template_id: &'a str,
    pub personalisation: BTreeMap<&'a str, &'a str>,
    /// Ours, stored before the request, so a lost answer can be looked up.
    pub reference: &'a str,
}

/// What Notify says of a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub id: String,
    pub status: NotifyStatus,
}

/// A template as Notify holds it.
#[derive(Debug, Clone, Deserialize)]
pub struct Template {
    pub id: String,
    /// `sms`, `email` or `letter`.
    #[serde(rename = "type")]
    pub kind: String,
    pub body: String,
    pub subject: Option<String>,
}

impl Template {
    /// The `((placeholders))` in the subject and body, as Notify marks them (an
    /// optional one, `((name??text))`, by its name).
    pub fn placeholders(&self) -> Vec<String> {
        let mut found = Vec::new();
        for text in [self.subject.as_deref().unwrap_or(""), &self.body] {
            let mut rest = text;
            while let Some(start) = rest.find("((") {
                let after = &rest[start + 2..];
                let Some(end) = after.find("))") else { break };
                let name = after[..end].split("??").next().unwrap_or("").trim();
                if !name.is_empty() && !found.iter().any(|f| f == name) {
                    found.push(name.to_string());
                }
                rest = &after[end + 2..];
            }
        }
        found
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// 400: Notify will never accept it as it is (a bad number, a missing field).
    #[error("Notify refused the notification ({0})")]
    Rejected(String),
    /// 403: our token was refused. `clock` when Notify says our clock is out.
    #[error("Notify refused our token ({message})")]
    Forbidden { message: String, clock: bool },
    /// 429: too many this minute, or (`daily`) the service's limit for today.
    #[error("Notify's {} limit was reached", if *.daily { "daily" } else { "per-minute" })]
    RateLimited { daily: bool },
    /// The request did not reach Notify: nothing was sent.
    #[error("Notify could not be reached ({0})")]
    Unavailable(String),
    /// No answer, or a server error: it may have been accepted.
    #[error("Notify gave no answer ({0})")]
    Unknown(String),
}

pub struct NotifyClient {
    http: reqwest::Client,
    base: Url,
    key: ApiKey,
    throttle: Mutex<Bucket>,
}

/// Notify's documented rate limit, and the burst we allow ourselves within it.
const PER_MINUTE: f64 = 3000.0;
const BURST: f64 = 1000.0;

/// A token bucket on the monotonic clock.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Takes a token at `now`; if there is none, how long until there is.
    fn take(&mut self, now: Instant) -> Option<Duration> {
        let refill = now.duration_since(self.at).as_secs_f64() * PER_MINUTE / 60.0;
        self.tokens = (self.tokens + refill).min(BURST);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            None
        } else {
            Some(Duration::from_secs_f64(
                (1.0 - self.tokens) * 60.0 / PER_MINUTE,
            ))
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorItem>,
}

#[derive(Deserialize)]
struct ErrorItem {
    #[serde(default)]
    error: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct NotificationBody {
    id: String,
    #[serde(default)]
    status: Option<String>,
}

#[derive(Deserialize)]
struct NotificationList {
    notifications: Vec<NotificationBody>,
}

/// Answers are small; anything longer is not Notify's.
const MAX_ANSWER: usize = 256 * 1024;

impl NotifyClient {
    pub fn new(base: &Url, key: ApiKey, timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("contactd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(NotifyClient {
            http,
            base: base.clone(),
            key,
            throttle: Mutex::new(Bucket {
                tokens: BURST,
                at: Instant::now(),
            }),
        })
    }

    fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        let base = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base}{path}"));
        url
    }

    fn bearer(&self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        format!("Bearer {}", token(&self.key, now))
    }

    /// Sends `n`. Waits for the throttle first.
    pub async fn send(&self, n: &Notification<'_>) -> Result<Accepted, SendError> {
        loop {
            let wait = self.throttle.lock().await.take(Instant::now());
            match wait {
                None => break,
                Some(d) => tokio::time::sleep(d).await,
            }
        }
        let (path, mut body) = match &n.to {
            Recipient::Sms(number) => (
                "/v2/notifications/sms",
                serde_json::json!({"phone_number": number}),
            ),
            Recipient::Email(address) => (
                "/v2/notifications/email",
                serde_json::json!({"email_address": address}),
            ),
        };
        body["template_id"] = n.template_id.into();
        body["personalisation"] = serde_json::to_value(&n.personalisation).expect("strings");
        body["reference"] = n.reference.into();
        let answer = self
            .http
            .post(self.url(path))
            .header("Authorization", self.bearer())
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    SendError::Unavailable(e.to_string())
                } else {
                    SendError::Unknown(e.to_string())
                }
            })?;
        let status = answer.status().as_u16();
        let bytes = read_bounded(answer)
            .await
            .map_err(|e| SendError::Unknown(format!("{status}, then {e}")))?;
        match status {
            200 | 201 => {
                let n: NotificationBody = serde_json::from_slice(&bytes).map_err(|e| {
                    SendError::Unknown(format!("{status} with an answer we cannot read: {e}"))
                })?;
                Ok(Accepted {
                    id: n.id,
                    status: NotifyStatus::Created,
                })
            }
            400 => Err(SendError::Rejected(error_message(&bytes))),
            403 => {
                let message = error_message(&bytes);
                let clock = message.to_ascii_lowercase().contains("clock");
                Err(SendError::Forbidden { message, clock })
            }
            429 => {
                let errors = serde_json::from_slice::<ErrorBody>(&bytes)
                    .map(|b| b.errors)
                    .unwrap_or_default();
                // "TooManyRequestsError: Exceeded send limits (…) for today" against
                // "RateLimitError: Exceeded rate limit for key type … per 60 seconds".
                let daily = errors
                    .iter()
                    .any(|e| e.error == "TooManyRequestsError" || e.message.contains("for today"));
                Err(SendError::RateLimited { daily })
            }
            s if s >= 500 => Err(SendError::Unknown(format!(
                "{s}: {}",
                error_message(&bytes)
            ))),
            s => Err(SendError::Rejected(format!(
                "{s}: {}",
                error_message(&bytes)
            ))),
        }
    }

    /// The notification we sent with `reference`, if Notify has one. `Err` when
    /// Notify cannot say.
    pub async fn find_by_reference(&self, reference: &str) -> Result<Option<Accepted>, String> {
        let mut url = self.url("/v2/notifications");
        url.query_pairs_mut().append_pair("reference", reference);
        let bytes = self.get(url).await?;
        let list: NotificationList =
            serde_json::from_slice(&bytes).map_err(|e| format!("an answer we cannot read: {e}"))?;
        match list.notifications.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(accepted(one)?)),
            _ => Err(format!(
                "{} notifications carry one reference",
                list.notifications.len()
            )),
        }
    }

    /// A notification by Notify's id.
    pub async fn notification(&self, id: &str) -> Result<Accepted, String> {
        if !crate::key::is_notify_id(id) {
            return Err("not a Notify id".into());
        }
        let bytes = self
            .get(self.url(&format!("/v2/notifications/{id}")))
            .await?;
        let n: NotificationBody =
            serde_json::from_slice(&bytes).map_err(|e| format!("an answer we cannot read: {e}"))?;
        accepted(&n)
    }

    /// A template by its id.
    pub async fn template(&self, id: &str) -> Result<Template, String> {
        if !crate::key::is_notify_id(id) {
            return Err(format!("{id:?} is not a template id (a UUID)"));
        }
        let bytes = self.get(self.url(&format!("/v2/template/{id}"))).await?;
        serde_json::from_slice(&bytes).map_err(|e| format!("an answer we cannot read: {e}"))
    }

    async fn get(&self, url: Url) -> Result<Vec<u8>, String> {
        let answer = self
            .http
            .get(url)
            .header("Authorization", self.bearer())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = answer.status().as_u16();
        let bytes = read_bounded(answer).await?;
        if status != 200 {
            return Err(format!("{status}: {}", error_message(&bytes)));
        }
        Ok(bytes)
    }
}

fn accepted(n: &NotificationBody) -> Result<Accepted, String> {
    let status = n.status.as_deref().unwrap_or("created");
    Ok(Accepted {
        id: n.id.clone(),
        status: NotifyStatus::parse(status).ok_or_else(|| format!("status {status:?}"))?,
    })
}

async fn read_bounded(mut answer: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    while let Some(chunk) = answer.chunk().await.map_err(|e| e.to_string())? {
        if bytes.len() + chunk.len() > MAX_ANSWER {
            return Err("an answer too long to be Notify's".into());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Notify's own words for an error, short.
fn error_message(bytes: &[u8]) -> String {
    let words = serde_json::from_slice::<ErrorBody>(bytes)
        .ok()
        .and_then(|b| b.errors.into_iter().next())
        .map(|e| format!("{}: {}", e.error, e.message))
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned());
    words.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut b = Bucket {
            tokens: BURST,
            at: start,
        };
        for _ in 0..1000 {
            assert_eq!(b.take(start), None);
        }
        let wait = b.take(start).expect("the burst is spent");
        assert!(wait <= Duration::from_millis(20), "{wait:?}");
        // A second later, fifty more.
        let later = start + Duration::from_secs(1);
        for _ in 0..50 {
            assert_eq!(b.take(later), None);
        }
        assert!(b.take(later).is_some());
    }

    #[test]
    fn placeholders_as_notify_marks_them() {
        let t = Template {
            id: String::new(),
            kind: "email".into(),
            subject: Some("((subject))".into()),
            body: "Dear ((name??friend)), ((body)) ((body))".into(),
        };
        assert_eq!(t.placeholders(), vec!["subject", "name", "body"]);
    }
}
