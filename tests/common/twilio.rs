//! Twilio's side of the SMS tests: signatures computed by Twilio's own Python SDK
//! (its RequestValidator, the independent oracle), and a stand-in for Twilio's REST
//! API that records what it is sent and answers as it is told.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;

pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const AUTH_TOKEN: &str = "test-auth-token-0123456789";
pub const PUBLIC_URL: &str = "https://contactd.example-council.gov.uk";
pub const COUNCIL_NUMBER: &str = "+441612345000";

/// X-Twilio-Signature for `url` and `params`, as Twilio's SDK computes it.
pub fn sdk_signature(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let script = r#"
import json, sys
from twilio.request_validator import RequestValidator
token, url, pairs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
params = {}
for k, v in pairs:
    params.setdefault(k, []).append(v)
class Multi(dict):
    def getall(self, k):
        return self[k]
print(RequestValidator(token).compute_signature(url, Multi(params)))
"#;
    let pairs = serde_json::to_string(params).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-c", script, token, url, &pairs])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "Twilio's Python SDK is required (pip install twilio; scripts/test installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A MessageSid-shaped id.
pub fn sid(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

#[derive(Default)]
struct Fake {
    /// The next answers, and whether Twilio keeps the message (false: it never
    /// arrived, whatever the answer says).
    answers: VecDeque<(u16, serde_json::Value, bool)>,
    received: Vec<Vec<(String, String)>>,
    /// Messages Twilio accepted, newest last, as its message list shows them.
    listed: Vec<serde_json::Value>,
}

/// Twilio's Messages endpoint, on a random port.
#[derive(Clone)]
pub struct FakeTwilio {
    pub url: String,
    inner: Arc<Mutex<Fake>>,
}

impl FakeTwilio {
    pub async fn start() -> FakeTwilio {
        let inner = Arc::new(Mutex::new(Fake::default()));
        let app = axum::Router::new()
            .route(
                "/2010-04-01/Accounts/{account}/Messages.json",
                axum::routing::post(messages).get(list),
            )
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeTwilio {
            url: format!("http://{addr}"),
            inner,
        }
    }

    /// Points the daemon's SMS channel at this stand-in, as the council's account.
    pub fn configure(&self, s: &mut contactd::configuration::Settings) {
        s.http.public_url = url::Url::parse(PUBLIC_URL).unwrap();
        s.sms.account_sid = ACCOUNT_SID.into();
        s.sms.auth_token = contactd::configuration::Secret::new(AUTH_TOKEN);
        s.sms.from = COUNCIL_NUMBER.into();
        s.sms.api_base = url::Url::parse(&self.url).unwrap();
    }

    /// Queues an answer for the next request (otherwise: 201 queued).
    pub fn answer(&self, status: u16, body: serde_json::Value) {
        self.inner
            .lock()
            .unwrap()
            .answers
            .push_back((status, body, true));
    }

    /// The next request gets `status` and `body`, but the message never reaches
    /// Twilio's list (it was lost before Twilio took it).
    pub fn answer_and_lose(&self, status: u16, body: serde_json::Value) {
        self.inner
            .lock()
            .unwrap()
            .answers
            .push_back((status, body, false));
    }

    /// The sids of the messages Twilio's list shows.
    pub fn listed_sids(&self) -> Vec<String> {
        self.inner
            .lock()
            .unwrap()
            .listed
            .iter()
            .map(|m| m["sid"].as_str().unwrap().to_string())
            .collect()
    }

    /// Every message request received, as form parameters.
    pub fn received(&self) -> Vec<Vec<(String, String)>> {
        self.inner.lock().unwrap().received.clone()
    }
}

async fn messages(
    State(inner): State<Arc<Mutex<Fake>>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    use base64::Engine;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT_SID}:{AUTH_TOKEN}"))
    );
    let authorised =
        headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str());
    if account != ACCOUNT_SID || !authorised {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"code": 20003, "message": "Authenticate"})),
        );
    }
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |k: &str| {
        form.iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (to, text) = (field("To"), field("Body"));
    let mut fake = inner.lock().unwrap();
    fake.received.push(form);
    let (status, json, kept) = fake.answers.pop_front().unwrap_or_else(|| {
        (
            201,
            serde_json::json!({"sid": sid("SM"), "status": "queued"}),
            true,
        )
    });
    if kept && (200..300).contains(&status) {
        let listed_sid = json["sid"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| sid("SM"));
        fake.listed.push(serde_json::json!({
            "sid": listed_sid, "to": to, "body": text, "status": "queued",
            "date_created": chrono::Utc::now().to_rfc2822(),
        }));
    }
    (StatusCode::from_u16(status).unwrap(), axum::Json(json))
}

/// Twilio's message list, newest first, filtered by `To`, one page of `PageSize`.
async fn list(
    State(inner): State<Arc<Mutex<Fake>>>,
    Path(account): Path<String>,
    axum::extract::Query(query): axum::extract::Query<Vec<(String, String)>>,
) -> impl IntoResponse {
    if account != ACCOUNT_SID {
        return (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({})));
    }
    let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let to = get("To");
    let size: usize = get("PageSize").and_then(|s| s.parse().ok()).unwrap_or(50);
    let fake = inner.lock().unwrap();
    let messages: Vec<_> = fake
        .listed
        .iter()
        .rev()
        .filter(|m| to.as_deref().is_none_or(|t| m["to"] == t))
        .take(size)
        .cloned()
        .collect();
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({ "messages": messages })),
    )
}
