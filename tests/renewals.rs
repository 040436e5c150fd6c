//! Subscriptions and their renewal reminders, through the staff API, with the daemon
//! on a test clock: the renewal run (on its cron time in Europe/London) queues each
//! reminder once at its offset before the expiry, texted to a stand-in Twilio; a
//! subscription recorded late gets the latest reminder it missed at once; a renewal
//! replaces the old expiry's reminders; a cancelled one sends nothing more.

mod common;

use std::time::Duration;

use common::twilio::FakeTwilio;
use common::{TestApp, spawn_app_with_clock};
use contactd::configuration::Backend;
use contactd::domain::{Role, Timestamp};
use contactd::scheduler::{Clock, TestClock};
use serde_json::json;

on_both_backends!(renewal_reminders_go_once_at_their_offsets_and_follow_the_expiry);

const DAY: Duration = Duration::from_secs(86_400);

fn at(clock: &TestClock, from_now: Duration) -> Timestamp {
    Timestamp::from_millis(clock.now().millis() + from_now.as_millis() as i64)
}

async fn sent_reminders(app: &TestApp, n: i64) {
    app.until_count(
        "messages WHERE purpose = 'reminder' AND provider_sid IS NOT NULL",
        n,
    )
    .await;
}

async fn renewal_reminders_go_once_at_their_offsets_and_follow_the_expiry(backend: Backend) {
    let fake = FakeTwilio::start().await;
    let clock = TestClock::new();
    let app = spawn_app_with_clock(backend, clock.clone(), |s| fake.configure(s)).await;
    let customer = app
        .create_customer(json!({"given_name": "Jo", "phones": ["07700 900123"]}))
        .await;
    let id = customer["id"].as_str().unwrap();
    let (status, body) = app
        .post(
            Role::Agent,
            &format!("/api/v1/customers/{id}/consents"),
            json!({"purpose": "service_updates", "granted": true, "method": "phone"}),
        )
        .await;
    assert!((200..300).contains(&status), "{body}");

    // A kind nobody configured, or an expiry already past, is refused.
    let path = format!("/api/v1/customers/{id}/subscriptions");
    let (status, body) = app
        .post(
            Role::Agent,
            &path,
            json!({"kind": "dog_licence", "expires_at": at(&clock, 40 * DAY).to_string()}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = app
        .post(
            Role::Agent,
            &path,
            json!({"kind": "garden_waste", "expires_at": Timestamp::from_millis(clock.now().millis() - 1000).to_string()}),
        )
        .await;
    assert_eq!(status, 422);

    // Recorded 40 days before it ends: nothing falls due before the next run.
    let expires = at(&clock, 40 * DAY);
    let (status, garden) = app
        .post(
            Role::Agent,
            &path,
            json!({"kind": "garden_waste", "description": "Brown bin", "expires_at": expires.to_string()}),
        )
        .await;
    assert_eq!(status, 201, "{garden}");
    assert_eq!(garden["reminders"], json!([]));
    let garden_id = garden["id"].as_str().unwrap().to_string();

    // Eleven days on, the run (08:00 London each day) finds the 30-day reminder:
    // texted once, with the expiry as a resident reads it.
    clock.advance(11 * DAY);
    sent_reminders(&app, 1).await;
    let sent = fake.received();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let body = &sent[0].iter().find(|(k, _)| k == "Body").unwrap().1;
    let (date, _) = expires.in_london();
    assert!(
        body.contains("garden waste collection") && body.contains(&date),
        "{body}"
    );
    // Another run, on this instance or another, queues nothing again.
    assert_eq!(app.renewals.run().await.unwrap(), 0);

    // Renewed for a year: the old expiry's 7-day reminder never sends.
    let renewed = Timestamp::from_millis(expires.millis() + 365 * DAY.as_millis() as i64);
    let (status, body) = app
        .post(
            Role::Agent,
            &format!("/api/v1/subscriptions/{garden_id}/renew"),
            json!({"expires_at": renewed.to_string()}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reminders"], json!([]));
    clock.advance(25 * DAY);
    assert_eq!(app.renewals.run().await.unwrap(), 0);

    // A Blue Badge recorded 20 days before it expires: its 28-day reminder was
    // missed, so it goes at once; the 56-day one is long past and never goes.
    let (status, badge) = app
        .post(
            Role::Agent,
            &path,
            json!({"kind": "blue_badge", "expires_at": at(&clock, 20 * DAY).to_string()}),
        )
        .await;
    assert_eq!(status, 201, "{badge}");
    assert_eq!(badge["reminders"].as_array().unwrap().len(), 1, "{badge}");
    sent_reminders(&app, 2).await;
    assert_eq!(fake.received().len(), 2);

    // Cancelled: its reminders stop; cancelling twice is a conflict.
    let (status, body) = app
        .post(
            Role::Agent,
            &format!("/api/v1/subscriptions/{garden_id}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "cancelled");
    let (status, _) = app
        .post(
            Role::Agent,
            &format!("/api/v1/subscriptions/{garden_id}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = app
        .post(
            Role::Agent,
            &format!("/api/v1/subscriptions/{garden_id}/renew"),
            json!({"expires_at": renewed.to_string()}),
        )
        .await;
    assert_eq!(status, 409);
    clock.advance(400 * DAY);
    assert_eq!(app.renewals.run().await.unwrap(), 0);

    // The record lists both; reading it is audited like the rest of the record.
    let (status, list) = app.get(Role::Agent, &path).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(
        app.count("audit_log WHERE action = 'read' AND detail = 'subscriptions'")
            .await
            >= 1
    );
    assert_eq!(
        app.count("messages WHERE purpose = 'reminder'").await,
        2,
        "every reminder queued once"
    );
    app.stop().await;
}
