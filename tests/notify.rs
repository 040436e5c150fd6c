//! GOV.UK Notify as the SMS and email provider, against a stand-in Notify that checks
//! every token with Notify's own client library and every body against Notify's
//! schema: texts come in through Notify's callback and go through intake; what the
//! council sends goes out through Notify with a fixed reference; a send with no
//! answer is found by that reference and never sent twice; rate limits hold, 400 and
//! 403 are final; receipts need our token and only move a message forward; a message
//! Notify never reports on is asked about; a template the daemon cannot fill stops it
//! at start.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::notify::{
    CALLBACK_TOKEN, EMAIL_TEMPLATE, GREEDY_TEMPLATE, SMS_TEMPLATE, StandinNotify,
};
use common::{TestApp, TestDatabase, spawn_app_with_clock, test_settings};
use contactd::configuration::Backend;
use contactd::domain::Role;
use contactd::scheduler::{Clock, TestClock};
use serde_json::{Value, json};
use sqlx::Row;

on_both_backends!(
    texts_and_mail_go_through_notify_and_texts_come_back_through_it,
    a_send_with_no_answer_is_found_by_reference_and_not_sent_twice,
    rate_limits_hold_everything_and_refusals_are_final,
    receipts_need_our_token_and_only_move_a_message_forward,
    a_template_the_daemon_cannot_fill_stops_it_at_start,
);

async fn app(backend: Backend, email: bool) -> (TestApp, StandinNotify, Arc<TestClock>) {
    let notify = StandinNotify::start().await;
    let clock = TestClock::new();
    let app = spawn_app_with_clock(backend, clock.clone(), |s| {
        notify.configure(s, email);
        // Only the acknowledgement: one message per text.
        s.notices.opened = String::new();
    })
    .await;
    (app, notify, clock)
}

/// Notify posts a text a resident sent; the status code.
async fn text_in(app: &TestApp, token: &str, id: &str, from: &str, message: &str) -> u16 {
    app.client
        .post(app.url("/webhooks/notify/inbound"))
        .header("Authorization", format!("Bearer {token}"))
        .json(
            &json!({"id": id, "source_number": from, "destination_number": "07700900000",
                      "message": message, "date_received": "2026-12-04T10:00:00.000000Z"}),
        )
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Notify posts a delivery receipt; the status code.
async fn receipt(app: &TestApp, token: Option<&str>, body: Value) -> u16 {
    let mut r = app
        .client
        .post(app.url("/webhooks/notify/status"))
        .json(&body);
    if let Some(t) = token {
        r = r.header("Authorization", format!("Bearer {t}"));
    }
    r.send().await.unwrap().status().as_u16()
}

async fn sent_to(app: &TestApp, number: &str) -> (String, String) {
    let row =
        sqlx::query("SELECT id, status FROM messages WHERE direction = 'out' AND address = $1")
            .bind(number)
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    (row.get("id"), row.get("status"))
}

async fn texts_and_mail_go_through_notify_and_texts_come_back_through_it(backend: Backend) {
    let (app, notify, _clock) = app(backend, true).await;
    // A stranger without our token is refused and nothing is stored.
    assert_eq!(
        text_in(&app, "guess", "t-0", "447700900123", "Hello").await,
        401
    );
    assert_eq!(app.count("contacts").await, 0);

    assert_eq!(
        text_in(
            &app,
            CALLBACK_TOKEN,
            "t-1",
            "447700900123",
            "My bin was missed"
        )
        .await,
        200
    );
    // Notify retries a callback it did not hear answered: the same contact.
    assert_eq!(
        text_in(
            &app,
            CALLBACK_TOKEN,
            "t-1",
            "447700900123",
            "My bin was missed"
        )
        .await,
        200
    );
    assert_eq!(app.count("contacts").await, 1);
    app.until_count(
        "messages WHERE direction = 'out' AND provider_sid IS NOT NULL",
        1,
    )
    .await;
    let reference: String = sqlx::query("SELECT reference FROM service_requests")
        .fetch_one(app.store.pool())
        .await
        .unwrap()
        .get("reference");
    let (message_id, status) = sent_to(&app, "+447700900123").await;
    assert_eq!(status, "created");
    let accepted = notify.accepted().await;
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    let text = &accepted[0];
    assert_eq!(text["type"], "sms");
    assert_eq!(text["phone_number"], "+447700900123");
    assert_eq!(text["template"]["id"], SMS_TEMPLATE);
    assert_eq!(
        text["reference"],
        message_id.as_str(),
        "our fixed reference"
    );
    assert!(
        text["body"].as_str().unwrap().contains(&reference),
        "{text}"
    );

    // Mail too: a staff-opened request tells a resident who prefers email.
    let customer = app
        .create_customer(json!({"given_name": "Ann", "emails": ["ann@example.org"],
                                "preferred_channel": "email"}))
        .await;
    let id = customer["id"].as_str().unwrap();
    let (status, body) = app
        .post(
            Role::Agent,
            &format!("/api/v1/customers/{id}/consents"),
            json!({"purpose": "service_updates", "granted": true, "method": "email"}),
        )
        .await;
    assert!((200..300).contains(&status), "{body}");
    let (status, request) = app
        .post(
            Role::Agent,
            "/api/v1/requests",
            json!({"customer_id": id, "service": "waste", "summary": "Garden waste"}),
        )
        .await;
    assert_eq!(status, 201, "{request}");
    let ann_reference = request["reference"].as_str().unwrap();
    let (status, body) = app
        .post(
            Role::Agent,
            &format!("/api/v1/requests/{ann_reference}/email"),
            json!({"body": "We will collect on Monday."}),
        )
        .await;
    assert!((200..300).contains(&status), "{body}");
    app.until_count(
        "messages WHERE direction = 'out' AND channel = 'email' AND provider_sid IS NOT NULL",
        1,
    )
    .await;
    let accepted = notify.accepted().await;
    let mail = accepted
        .iter()
        .find(|n| n["type"] == "email")
        .expect("a mail");
    assert_eq!(mail["email_address"], "ann@example.org");
    assert_eq!(mail["template"]["id"], EMAIL_TEMPLATE);
    assert!(
        mail["personalisation"]["subject"]
            .as_str()
            .unwrap()
            .contains(ann_reference),
        "{mail}"
    );
    assert_eq!(
        mail["personalisation"]["body"],
        "We will collect on Monday."
    );
    app.stop().await;
}

async fn a_send_with_no_answer_is_found_by_reference_and_not_sent_twice(backend: Backend) {
    let (app, notify, clock) = app(backend, false).await;
    // Notify accepts both, then one answers 500 and the other nothing in time.
    notify.script(&["500_after_accept", "hang"]).await;
    for (id, from) in [("t-1", "447700900001"), ("t-2", "447700900002")] {
        assert_eq!(
            text_in(&app, CALLBACK_TOKEN, id, from, "Pothole").await,
            200
        );
    }
    app.until_count("messages WHERE direction = 'out' AND status = 'unknown'", 2)
        .await;
    // A few minutes on, the outbox asks Notify by reference: both are there.
    clock.advance(Duration::from_secs(150));
    app.until_count(
        "messages WHERE direction = 'out' AND status = 'created' AND provider_sid IS NOT NULL",
        2,
    )
    .await;
    // And much later, nothing more was posted: each reference once.
    clock.advance(Duration::from_secs(86_400));
    assert_eq!(
        text_in(&app, CALLBACK_TOKEN, "t-3", "447700900003", "Fly-tipping").await,
        200
    );
    app.until_count(
        "messages WHERE direction = 'out' AND provider_sid IS NOT NULL",
        3,
    )
    .await;
    let state = notify.state().await;
    assert_eq!(state["posts"].as_array().unwrap().len(), 3, "{state}");
    let accepted = notify.accepted().await;
    for n in &accepted {
        let sid: String = sqlx::query("SELECT provider_sid FROM messages WHERE id = $1")
            .bind(n["reference"].as_str().unwrap())
            .fetch_one(app.store.pool())
            .await
            .unwrap()
            .get("provider_sid");
        assert_eq!(sid, n["id"].as_str().unwrap(), "recorded under Notify's id");
    }
    app.stop().await;
}

async fn rate_limits_hold_everything_and_refusals_are_final(backend: Backend) {
    let (app, notify, clock) = app(backend, false).await;
    let now = clock.now().millis();
    // Too many this minute: held a minute, the attempt not counted.
    notify.script(&["429_minute"]).await;
    assert_eq!(
        text_in(&app, CALLBACK_TOKEN, "t-1", "447700900001", "One").await,
        200
    );
    app.until_count(
        // (The test clock runs on between moves: a minute from the send.)
        &format!(
            "messages WHERE direction = 'out' AND status = 'pending' AND attempts = 0 \
             AND next_attempt_at BETWEEN {} AND {}",
            now + 60_000,
            now + 90_000
        ),
        1,
    )
    .await;
    clock.advance(Duration::from_secs(61));
    app.until_count(
        "messages WHERE direction = 'out' AND provider_sid IS NOT NULL",
        1,
    )
    .await;

    // The day's limit: held until midnight UTC, when Notify's count starts again.
    notify.script(&["429_daily"]).await;
    let now = clock.now().millis();
    let midnight = (now / 86_400_000 + 1) * 86_400_000;
    assert_eq!(
        text_in(&app, CALLBACK_TOKEN, "t-2", "447700900002", "Two").await,
        200
    );
    app.until_count(
        &format!("messages WHERE direction = 'out' AND status = 'pending' AND next_attempt_at = {midnight}"),
        1,
    )
    .await;
    // Meanwhile nothing else is posted either: the whole provider waits.
    assert_eq!(
        text_in(&app, CALLBACK_TOKEN, "t-3", "447700900003", "Three").await,
        200
    );
    app.until_count(
        &format!("messages WHERE direction = 'out' AND status = 'pending' AND next_attempt_at = {midnight}"),
        2,
    )
    .await;
    clock.advance(Duration::from_millis(
        (midnight - clock.now().millis()) as u64,
    ));
    app.until_count(
        "messages WHERE direction = 'out' AND provider_sid IS NOT NULL",
        3,
    )
    .await;

    // Our clock out, and a recipient Notify will not take: failed, never retried.
    notify.script(&["403_clock", "400"]).await;
    assert_eq!(
        text_in(&app, CALLBACK_TOKEN, "t-4", "447700900004", "Four").await,
        200
    );
    app.until_count(
        "messages WHERE direction = 'out' AND status = 'failed' AND error_code = 403",
        1,
    )
    .await;
    assert_eq!(
        text_in(&app, CALLBACK_TOKEN, "t-5", "447700900005", "Five").await,
        200
    );
    app.until_count(
        "messages WHERE direction = 'out' AND status = 'failed' AND error_code = 400",
        1,
    )
    .await;
    app.until_metric(
        "contactd_notify_auth_failures_total{cause=\"clock\"}",
        |v| v >= 1.0,
    )
    .await;
    clock.advance(Duration::from_secs(86_400));
    assert_eq!(
        text_in(&app, CALLBACK_TOKEN, "t-6", "447700900006", "Six").await,
        200
    );
    app.until_count(
        "messages WHERE direction = 'out' AND provider_sid IS NOT NULL",
        4,
    )
    .await;
    let state = notify.state().await;
    let posts = state["posts"].as_array().unwrap();
    // 1: 429 + sent; 2: 429 + sent; 3: sent; 4: 403; 5: 400; 6: sent.
    assert_eq!(posts.len(), 8, "{state}");
    assert_eq!(notify.accepted().await.len(), 4);
    app.stop().await;
}

async fn receipts_need_our_token_and_only_move_a_message_forward(backend: Backend) {
    let (app, notify, clock) = app(backend, false).await;
    assert_eq!(
        text_in(&app, CALLBACK_TOKEN, "t-1", "447700900001", "One").await,
        200
    );
    assert_eq!(
        text_in(&app, CALLBACK_TOKEN, "t-2", "447700900002", "Two").await,
        200
    );
    app.until_count(
        "messages WHERE direction = 'out' AND provider_sid IS NOT NULL",
        2,
    )
    .await;
    let accepted = notify.accepted().await;
    let of = |reference: &str| {
        accepted
            .iter()
            .find(|n| n["reference"] == reference)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (first, _) = sent_to(&app, "+447700900001").await;
    let (second, _) = sent_to(&app, "+447700900002").await;
    let report = |status: &str| {
        json!({"id": of(&first), "reference": first, "to": "+447700900001", "status": status,
               "created_at": "2026-12-04T10:00:00.000000Z", "completed_at": null,
               "sent_at": "2026-12-04T10:00:01.000000Z", "notification_type": "sms",
               "template_id": SMS_TEMPLATE, "template_version": 1})
    };
    assert_eq!(receipt(&app, None, report("delivered")).await, 401);
    assert_eq!(
        receipt(
            &app,
            Some("a-callback-token-for-notifz"),
            report("delivered")
        )
        .await,
        401
    );
    assert_eq!(sent_to(&app, "+447700900001").await.1, "created");
    assert_eq!(
        receipt(&app, Some(CALLBACK_TOKEN), report("delivered")).await,
        200
    );
    assert_eq!(
        receipt(&app, Some(CALLBACK_TOKEN), report("delivered")).await,
        200
    );
    // Late news of an earlier step changes nothing.
    assert_eq!(
        receipt(&app, Some(CALLBACK_TOKEN), report("sending")).await,
        200
    );
    assert_eq!(sent_to(&app, "+447700900001").await.1, "delivered");
    assert_eq!(
        receipt(
            &app,
            Some(CALLBACK_TOKEN),
            json!({"id": of(&first), "status": "lost"})
        )
        .await,
        400
    );

    // Notify fails the other itself and sends no receipt: an hour on, it is asked.
    notify.set_status(&of(&second), "technical-failure").await;
    clock.advance(Duration::from_secs(3700));
    app.until_count("messages WHERE status = 'technical-failure'", 1)
        .await;
    app.stop().await;
}

async fn a_template_the_daemon_cannot_fill_stops_it_at_start(backend: Backend) {
    let notify = StandinNotify::start().await;
    for (template, expected) in [
        (GREEDY_TEMPLATE, "((first_name))"),
        (
            "11111111-2222-4333-8444-555555555555",
            "11111111-2222-4333-8444-555555555555",
        ),
        (EMAIL_TEMPLATE, "is for email, not sms"),
    ] {
        let db = TestDatabase::new(backend).await;
        let mut settings = test_settings(&db);
        notify.configure(&mut settings, false);
        settings
            .notify
            .sms_templates
            .insert("reminder".into(), template.into());
        let failed = contactd::startup::Application::build_with_clock(
            settings,
            Arc::new(contactd::scheduler::SystemClock),
        )
        .await;
        let Err(e) = failed else {
            panic!("the daemon started with template {template}");
        };
        assert!(e.to_string().contains(expected), "{e}");
    }
}
