//! A stand-in GOV.UK Notify (`tests/peers/notify_standin.py`): checks every token with
//! Notify's own client library and every body against Notify's schema; faults are
//! scripted by the test.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const API_KEY: &str =
    "contactd_test-26785a09-ab16-4eb0-8407-a37497a57506-3d844edf-8d35-48ac-975b-e847b4f122b0";
pub const CALLBACK_TOKEN: &str = "a-callback-token-for-notify";
pub const SMS_TEMPLATE: &str = "f33517ff-2a88-4f6e-b855-c550268ce08a";
pub const REMINDER_TEMPLATE: &str = "7c5e2a3b-9d41-4b8e-8f06-1e2d3c4b5a69";
pub const EMAIL_TEMPLATE: &str = "0b4ea5f8-12c5-4b3e-9a8d-6c7e8f9a0b1c";
/// A template asking for something contactd does not fill.
pub const GREEDY_TEMPLATE: &str = "5d6e7f80-9a1b-4c2d-8e3f-405162738495";

pub struct StandinNotify {
    pub url: String,
    client: reqwest::Client,
    _child: Child,
}

impl StandinNotify {
    pub async fn start() -> StandinNotify {
        let templates = json!({
            SMS_TEMPLATE: {"type": "sms", "body": "((body))"},
            REMINDER_TEMPLATE: {"type": "sms", "body": "Reminder: ((body))"},
            EMAIL_TEMPLATE: {"type": "email", "subject": "((subject))", "body": "((body))"},
            GREEDY_TEMPLATE: {"type": "sms", "body": "Dear ((first_name)), ((body))"},
        });
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/notify_standin.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(API_KEY)
            .arg(templates.to_string())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the stand-in Notify starts (notifications-python-client is required: scripts/test installs it)")
            .unwrap()
            .expect("the stand-in Notify prints its port");
        StandinNotify {
            url: format!("http://127.0.0.1:{}", port.trim()),
            client: reqwest::Client::new(),
            _child: child,
        }
    }

    /// Texts (and, if `email`, mail) go through this Notify.
    pub fn configure(&self, s: &mut contactd::configuration::Settings, email: bool) {
        use contactd::configuration::{EmailProvider, Secret, SmsProvider};
        s.sms.provider = SmsProvider::Notify;
        s.notify.api_key = Secret::new(API_KEY);
        s.notify.api_base = url::Url::parse(&self.url).unwrap();
        s.notify.callback_token = Secret::new(CALLBACK_TOKEN);
        s.notify.timeout_seconds = 2;
        s.notify.sms_templates = [
            ("default".to_string(), SMS_TEMPLATE.to_string()),
            ("reminder".to_string(), REMINDER_TEMPLATE.to_string()),
        ]
        .into();
        if email {
            s.email.provider = EmailProvider::Notify;
            s.email.from = "Council <contact@council.example>".into();
            s.notify.email_templates = [("default".to_string(), EMAIL_TEMPLATE.to_string())].into();
        }
    }

    /// Faults for the next sends, in order.
    pub async fn script(&self, faults: &[&str]) {
        self.client
            .post(format!("{}/_script", self.url))
            .json(&faults)
            .send()
            .await
            .unwrap();
    }

    /// Changes a notification's status at Notify, without a callback.
    pub async fn set_status(&self, id: &str, status: &str) {
        self.client
            .post(format!("{}/_status", self.url))
            .json(&json!({"id": id, "status": status}))
            .send()
            .await
            .unwrap();
    }

    /// What the stand-in has seen: `accepted`, `posts`, `token_errors`, `schema_errors`.
    pub async fn state(&self) -> Value {
        self.client
            .get(format!("{}/_state", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The notifications accepted, after asserting that every token and body was good.
    pub async fn accepted(&self) -> Vec<Value> {
        let state = self.state().await;
        assert_eq!(
            state["token_errors"],
            json!([]),
            "every token passes Notify's check"
        );
        assert_eq!(
            state["schema_errors"],
            json!([]),
            "every body passes Notify's schema"
        );
        state["accepted"].as_array().unwrap().clone()
    }
}
