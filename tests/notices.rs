//! What residents are told when staff open their request or it is resolved,
//! cancelled or reopened: texted (to a stand-in Twilio) on their preferred channel
//! with the service's own words or the defaults, only with consent to service
//! messages, written to the outbox with the change itself.

mod common;

use common::twilio::FakeTwilio;
use common::{TestApp, spawn_app_with};
use contactd::configuration::Backend;
use contactd::domain::Role;
use serde_json::{Value, json};

on_both_backends!(
    residents_hear_of_their_requests_opening_and_closing,
    without_consent_nothing_is_sent_and_the_change_still_stands,
);

async fn app(backend: Backend) -> (TestApp, FakeTwilio) {
    let fake = FakeTwilio::start().await;
    let app = spawn_app_with(backend, |s| {
        fake.configure(s);
        // Highways has words of its own for a resolution, and says nothing when a
        // request is reopened.
        let highways = s
            .services
            .iter_mut()
            .find(|s| s.code.as_str() == "highways")
            .unwrap();
        highways.notices.resolved = Some("The pothole {reference} is fixed.".into());
        highways.notices.reopened = Some(String::new());
    })
    .await;
    (app, fake)
}

async fn resident(app: &TestApp, consents: bool) -> Value {
    let customer = app
        .create_customer(json!({"given_name": "Jo", "phones": ["07700 900123"]}))
        .await;
    let (status, body) = app
        .post(
            Role::Agent,
            &format!(
                "/api/v1/customers/{}/consents",
                customer["id"].as_str().unwrap()
            ),
            json!({"purpose": "service_updates", "granted": consents, "method": "phone"}),
        )
        .await;
    assert!((200..300).contains(&status), "{body}");
    customer
}

async fn open(app: &TestApp, customer: &Value, service: &str) -> String {
    let (status, request) = app
        .post(
            Role::Agent,
            "/api/v1/requests",
            json!({"customer_id": customer["id"], "service": service, "summary": "Pothole outside 12 Mill Lane"}),
        )
        .await;
    assert_eq!(status, 201, "{request}");
    request["reference"].as_str().unwrap().to_string()
}

async fn act(app: &TestApp, reference: &str, what: &str, body: Value) {
    let (status, out) = app
        .post(
            Role::Agent,
            &format!("/api/v1/requests/{reference}/{what}"),
            body,
        )
        .await;
    assert_eq!(status, 200, "{out}");
}

fn texts(fake: &FakeTwilio) -> Vec<String> {
    fake.received()
        .into_iter()
        .filter_map(|m| m.into_iter().find(|(k, _)| k == "Body").map(|(_, v)| v))
        .collect()
}

async fn until_texts(app: &TestApp, n: i64) {
    app.until_count(
        "messages WHERE purpose = 'service_update' AND provider_sid IS NOT NULL",
        n,
    )
    .await;
}

async fn residents_hear_of_their_requests_opening_and_closing(backend: Backend) {
    let (app, fake) = app(backend).await;
    let customer = resident(&app, true).await;

    // Opened by staff: the resident is told the reference.
    let waste = open(&app, &customer, "waste").await;
    until_texts(&app, 1).await;
    assert!(texts(&fake)[0].contains(&waste), "{:?}", texts(&fake));

    // Work on it says nothing; resolving, reopening and cancelling do.
    act(&app, &waste, "status", json!({"status": "in_progress"})).await;
    act(&app, &waste, "status", json!({"status": "resolved"})).await;
    until_texts(&app, 2).await;
    act(&app, &waste, "reopen", json!({})).await;
    until_texts(&app, 3).await;
    act(&app, &waste, "cancel", json!({"reason": "Duplicate"})).await;
    until_texts(&app, 4).await;
    let sent = texts(&fake);
    assert_eq!(sent.len(), 4, "{sent:?}");
    assert!(sent[1].contains("has been resolved") && sent[1].contains(&waste));
    assert!(sent[2].contains("reopened"));
    assert!(sent[3].contains("closed without further action"));

    // A service's own words replace the defaults; an empty text sends nothing.
    let pothole = open(&app, &customer, "highways").await;
    until_texts(&app, 5).await;
    act(&app, &pothole, "status", json!({"status": "resolved"})).await;
    until_texts(&app, 6).await;
    assert_eq!(texts(&fake)[5], format!("The pothole {pothole} is fixed."));
    act(&app, &pothole, "reopen", json!({})).await;
    // Each notice is on the request's timeline with the change that caused it.
    let (_, timeline) = app
        .get(Role::Agent, &format!("/api/v1/requests/{waste}/timeline"))
        .await;
    let kinds: Vec<&str> = timeline
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "message").count(),
        4,
        "{kinds:?}"
    );
    assert_eq!(
        app.count("messages WHERE purpose = 'service_update'").await,
        6,
        "the reopened pothole sent nothing"
    );
    app.stop().await;
}

async fn without_consent_nothing_is_sent_and_the_change_still_stands(backend: Backend) {
    let (app, fake) = app(backend).await;
    let customer = resident(&app, false).await;
    let reference = open(&app, &customer, "waste").await;
    act(&app, &reference, "status", json!({"status": "resolved"})).await;
    app.until_count(
        "messages WHERE purpose = 'service_update' AND status = 'no_consent'",
        2,
    )
    .await;
    let (_, request) = app
        .get(Role::Agent, &format!("/api/v1/requests/{reference}"))
        .await;
    assert_eq!(request["status"], "resolved");
    assert!(texts(&fake).is_empty(), "{:?}", texts(&fake));
    app.stop().await;
}
