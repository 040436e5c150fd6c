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
    answers: VecDeque<(u16, serde_json::Value)>,
    received: Vec<Vec<(String, String)>>,
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
                axum::routing::post(messages),
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
        self.inner.lock().unwrap().answers.push_back((status, body));
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
    let mut fake = inner.lock().unwrap();
    fake.received.push(form);
    let (status, json) = fake.answers.pop_front().unwrap_or_else(|| {
        (
            201,
            serde_json::json!({"sid": sid("SM"), "status": "queued"}),
        )
    });
    (StatusCode::from_u16(status).unwrap(), axum::Json(json))
}
