//! Appointments and their reminders, through the staff API, with the daemon on a
//! test clock: reminders are scheduled at the configured offsets (or the booking's
//! own times), moving an appointment sends only at the new times, cancelling sends
//! nothing, a resident without consent gets nothing, and a reminder that falls due
//! is texted (to a stand-in Twilio REST API) once.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::twilio::FakeTwilio;
use common::{TestApp, spawn_app_with_clock};
use contactd::configuration::Backend;
use contactd::domain::Role;
use contactd::domain::Timestamp;
use contactd::scheduler::{Clock, TestClock};
use serde_json::{Value, json};

on_both_backends!(
    reminders_follow_the_appointment_and_only_the_new_times_send,
    a_reminder_needs_consent_and_a_time_still_to_come,
    quiet_hours_hold_a_text_until_morning_unless_the_appointment_is_over_by_then,
    a_service_can_remind_at_offsets_of_its_own,
    a_text_held_up_past_its_validity_is_dropped,
);

async fn app(backend: Backend) -> (TestApp, FakeTwilio, Arc<TestClock>) {
    let fake = FakeTwilio::start().await;
    let clock = TestClock::new();
    let app = spawn_app_with_clock(backend, clock.clone(), |s| fake.configure(s)).await;
    (app, fake, clock)
}

/// A resident with a phone (and, if `consents`, consent to service messages) and a
/// request: its reference.
async fn resident(app: &TestApp, consents: bool) -> String {
    let customer = app
        .create_customer(json!({"given_name": "Jo", "phones": ["07700 900123"]}))
        .await;
    if consents {
        let (status, body) = app
            .post(
                Role::Agent,
                &format!(
                    "/api/v1/customers/{}/consents",
                    customer["id"].as_str().unwrap()
                ),
                json!({"purpose": "service_updates", "granted": true, "method": "phone"}),
            )
            .await;
        assert!((200..300).contains(&status), "{body}");
    }
    let (status, request) = app
        .post(
            Role::Agent,
            "/api/v1/requests",
            json!({"customer_id": customer["id"], "service": "waste", "summary": "Bulky waste collection"}),
        )
        .await;
    assert_eq!(status, 201, "{request}");
    request["reference"].as_str().unwrap().to_string()
}

fn at(clock: &TestClock, from_now: Duration) -> String {
    Timestamp::from_millis(clock.now().millis() + from_now.as_millis() as i64).to_string()
}

fn ago(clock: &TestClock, before_now: Duration) -> String {
    Timestamp::from_millis(clock.now().millis() - before_now.as_millis() as i64).to_string()
}

fn due_times(booked: &Value) -> Vec<i64> {
    booked["reminders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            Timestamp::parse(r["due_at"].as_str().unwrap())
                .unwrap()
                .millis()
        })
        .collect()
}

/// The bodies of the reminders the stand-in Twilio received (the resident, who
/// consented to service messages, was also told their request was opened).
fn reminders_texted(fake: &FakeTwilio) -> Vec<String> {
    fake.received()
        .into_iter()
        .filter_map(|m| m.into_iter().find(|(k, _)| k == "Body").map(|(_, v)| v))
        .filter(|b| b.starts_with("Reminder"))
        .collect()
}

const DAY: Duration = Duration::from_secs(86_400);
const HOUR: Duration = Duration::from_secs(3600);

async fn reminders_follow_the_appointment_and_only_the_new_times_send(backend: Backend) {
    let (app, fake, clock) = app(backend).await;
    let reference = resident(&app, true).await;
    let starts = at(&clock, 3 * DAY);
    let (status, booked) = app
        .post(
            Role::Agent,
            &format!("/api/v1/requests/{reference}/appointments"),
            json!({"starts_at": starts, "place": "Outside 12 Mill Lane"}),
        )
        .await;
    assert_eq!(status, 201, "{booked}");
    // The configured offsets: two days and two hours before.
    let start = Timestamp::parse(&starts).unwrap().millis();
    assert_eq!(
        due_times(&booked),
        [start - 2 * 86_400_000, start - 2 * 3_600_000]
    );
    let id = booked["id"].as_str().unwrap().to_string();
    assert_eq!(
        app.count("messages WHERE purpose = 'reminder' AND status = 'pending'")
            .await,
        2
    );
    // Staff see them on the resident's record as scheduled, with when.
    let (_, request) = app
        .get(Role::Agent, &format!("/api/v1/requests/{reference}"))
        .await;
    let (status, messages) = app
        .get(
            Role::Agent,
            &format!(
                "/api/v1/customers/{}/messages",
                request["customer_id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(status, 200, "{messages}");
    let mut upcoming: Vec<i64> = messages
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["purpose"] == "reminder" && m["state"] == "scheduled")
        .map(|m| {
            Timestamp::parse(m["due_at"].as_str().unwrap())
                .unwrap()
                .millis()
        })
        .collect();
    upcoming.sort_unstable();
    assert_eq!(upcoming, due_times(&booked), "{messages}");

    // Moved a day later: the old reminders are cancelled, the new ones scheduled.
    let moved = at(&clock, 4 * DAY);
    let (status, again) = app
        .patch(
            Role::Agent,
            &format!("/api/v1/appointments/{id}"),
            json!({"starts_at": moved, "place": "Outside 12 Mill Lane", "reminders": [{"minutes_before": 1440}]}),
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["version"], 2);
    let new_start = Timestamp::parse(&moved).unwrap().millis();
    assert_eq!(due_times(&again), [new_start - 86_400_000]);
    assert_eq!(
        app.count("messages WHERE purpose = 'reminder' AND status = 'cancelled'")
            .await,
        2
    );

    // The old first reminder's time passes: nothing is sent.
    clock.advance(DAY + HOUR);
    // The new one's time passes: it is texted, once.
    clock.advance(2 * DAY);
    app.until_count(
        "messages WHERE purpose = 'reminder' AND provider_sid IS NOT NULL",
        1,
    )
    .await;
    let sent = reminders_texted(&fake);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let body = &sent[0];
    assert!(
        body.contains(&reference) && body.contains("Outside 12 Mill Lane"),
        "{body}"
    );

    // The timeline says what happened; a cancelled appointment cannot be moved.
    let (_, timeline) = app
        .get(
            Role::Agent,
            &format!("/api/v1/requests/{reference}/timeline"),
        )
        .await;
    let notes: Vec<&str> = timeline
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["body"].as_str())
        .filter(|b| b.starts_with("Appointment"))
        .collect();
    assert_eq!(notes.len(), 2, "{notes:?}");
    let (status, cancelled) = app
        .post(
            Role::Agent,
            &format!("/api/v1/appointments/{id}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    // The resident, who agreed to service messages, is told.
    app.until_count(
        "messages WHERE purpose = 'service_update' AND body LIKE 'The council has cancelled%' AND provider_sid IS NOT NULL",
        1,
    )
    .await;
    let (status, _) = app
        .post(
            Role::Agent,
            &format!("/api/v1/appointments/{id}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = app
        .patch(
            Role::Agent,
            &format!("/api/v1/appointments/{id}"),
            json!({"starts_at": at(&clock, 5 * DAY), "place": "Depot"}),
        )
        .await;
    assert_eq!(status, 409);
    let (_, list) = app
        .get(
            Role::Agent,
            &format!("/api/v1/requests/{reference}/appointments"),
        )
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    app.stop().await;
}

async fn a_reminder_needs_consent_and_a_time_still_to_come(backend: Backend) {
    let (app, fake, clock) = app(backend).await;
    // Without consent to service messages: recorded, held back, never sent.
    let reference = resident(&app, false).await;
    let (status, booked) = app
        .post(
            Role::Agent,
            &format!("/api/v1/requests/{reference}/appointments"),
            json!({"starts_at": at(&clock, 2 * HOUR), "place": "Register office",
                   "reminders": [{"minutes_before": 60}, {"at": ago(&clock, HOUR)}]}),
        )
        .await;
    assert_eq!(status, 201, "{booked}");
    // The time already past is no reminder; the other is held back.
    assert_eq!(due_times(&booked).len(), 1);
    assert_eq!(
        app.count("messages WHERE purpose = 'reminder' AND status = 'no_consent'")
            .await,
        1
    );
    clock.advance(2 * HOUR);
    assert!(fake.received().is_empty());

    // Hostile or mistaken input gets a clear error and nothing written.
    for bad in [
        json!({"starts_at": "tomorrow", "place": "Depot"}),
        json!({"starts_at": ago(&clock, HOUR), "place": "Depot"}),
        json!({"starts_at": at(&clock, DAY), "place": ""}),
        json!({"starts_at": at(&clock, DAY), "place": "x".repeat(201)}),
    ] {
        let (status, body) = app
            .post(
                Role::Agent,
                &format!("/api/v1/requests/{reference}/appointments"),
                bad,
            )
            .await;
        assert_eq!(status, 422, "{body}");
    }
    assert_eq!(app.count("appointments").await, 1);
    let (status, _) = app
        .post(Role::Agent, "/api/v1/appointments/nope/cancel", json!({}))
        .await;
    assert_eq!(status, 404);

    // Consent given at booking and withdrawn before the reminder is due: the rules
    // are checked again at the send, and it is held back.
    let reference = resident(&app, true).await;
    let (status, booked) = app
        .post(
            Role::Agent,
            &format!("/api/v1/requests/{reference}/appointments"),
            json!({"starts_at": at(&clock, DAY), "place": "Depot", "reminders": [{"minutes_before": 60}]}),
        )
        .await;
    assert_eq!(status, 201, "{booked}");
    let (_, request) = app
        .get(Role::Agent, &format!("/api/v1/requests/{reference}"))
        .await;
    let (status, body) = app
        .post(
            Role::Agent,
            &format!(
                "/api/v1/customers/{}/consents",
                request["customer_id"].as_str().unwrap()
            ),
            json!({"purpose": "service_updates", "granted": false, "method": "phone"}),
        )
        .await;
    assert!((200..300).contains(&status), "{body}");
    clock.advance(DAY);
    app.until_count(
        "messages WHERE purpose = 'reminder' AND status = 'no_consent'",
        2,
    )
    .await;
    assert!(
        reminders_texted(&fake).is_empty(),
        "nothing sent against the resident's wishes"
    );
    app.stop().await;
}

/// `hh:mm` Europe/London on the day after the test clock's today.
fn tomorrow_in_london(clock: &TestClock, hh: u32, mm: u32) -> Timestamp {
    use chrono::TimeZone;
    let today = chrono_tz::Europe::London
        .timestamp_millis_opt(clock.now().millis())
        .unwrap()
        .date_naive();
    let wall = (today + chrono::Duration::days(1))
        .and_hms_opt(hh, mm, 0)
        .unwrap();
    let t = chrono_tz::Europe::London
        .from_local_datetime(&wall)
        .earliest()
        .unwrap();
    Timestamp::from_millis(t.timestamp_millis())
}

fn advance_to(clock: &TestClock, to: Timestamp) {
    let by = to.millis() - clock.now().millis();
    assert!(by >= 0, "the test clock only goes forward");
    clock.advance(Duration::from_millis(by as u64));
}

async fn quiet_hours_hold_a_text_until_morning_unless_the_appointment_is_over_by_then(
    backend: Backend,
) {
    let fake = FakeTwilio::start().await;
    let clock = TestClock::new();
    let app = spawn_app_with_clock(backend, clock.clone(), |s| {
        fake.configure(s);
        s.sms.quiet_hours = Some(contactd::domain::QuietHours::parse("21:00-08:00").unwrap());
    })
    .await;
    let reference = resident(&app, true).await;
    // The evening before: 20:00 London.
    advance_to(&clock, tomorrow_in_london(&clock, 20, 0));
    let book = |starts: Timestamp, remind: String| {
        json!({"starts_at": starts.to_string(), "place": "Register office",
               "reminders": [{"at": remind}]})
    };
    let morning = tomorrow_in_london(&clock, 8, 0);
    // A 10:00 appointment reminded at 22:00: held until 08:00.
    let (status, late) = app
        .post(
            Role::Agent,
            &format!("/api/v1/requests/{reference}/appointments"),
            book(tomorrow_in_london(&clock, 10, 0), at(&clock, 2 * HOUR)),
        )
        .await;
    assert_eq!(status, 201, "{late}");
    // A 07:30 appointment reminded at 06:00: 08:00 would be too late; never sent.
    let (status, early) = app
        .post(
            Role::Agent,
            &format!("/api/v1/requests/{reference}/appointments"),
            book(tomorrow_in_london(&clock, 7, 30), at(&clock, 10 * HOUR)),
        )
        .await;
    assert_eq!(status, 201, "{early}");

    clock.advance(2 * HOUR + Duration::from_secs(60));
    app.until_count(
        &format!(
            "messages WHERE purpose = 'reminder' AND status = 'pending' AND next_attempt_at = {}",
            morning.millis()
        ),
        1,
    )
    .await;
    advance_to(&clock, Timestamp::from_millis(morning.millis() - 3_600_000));
    app.until_count(
        "messages WHERE purpose = 'reminder' AND status = 'expired'",
        1,
    )
    .await;
    assert!(reminders_texted(&fake).is_empty(), "nothing in quiet hours");

    advance_to(&clock, morning);
    sent_at_last(&app).await;
    let sent = reminders_texted(&fake);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].contains("10:00am"), "{}", sent[0]);
    app.stop().await;
}

async fn sent_at_last(app: &TestApp) {
    app.until_count(
        "messages WHERE purpose = 'reminder' AND provider_sid IS NOT NULL",
        1,
    )
    .await;
}

async fn a_service_can_remind_at_offsets_of_its_own(backend: Backend) {
    let fake = FakeTwilio::start().await;
    let clock = TestClock::new();
    let app = spawn_app_with_clock(backend, clock.clone(), |s| {
        fake.configure(s);
        let waste = s
            .services
            .iter_mut()
            .find(|s| s.code.as_str() == "waste")
            .unwrap();
        waste.appointment_offsets_minutes = Some(vec![1440, 30]);
    })
    .await;
    let reference = resident(&app, true).await;
    let starts = at(&clock, 3 * DAY);
    let (status, booked) = app
        .post(
            Role::Agent,
            &format!("/api/v1/requests/{reference}/appointments"),
            json!({"starts_at": starts, "place": "Depot"}),
        )
        .await;
    assert_eq!(status, 201, "{booked}");
    let start = Timestamp::parse(&starts).unwrap().millis();
    assert_eq!(
        due_times(&booked),
        [start - 86_400_000, start - 30 * 60_000]
    );
    app.stop().await;
}

async fn a_text_held_up_past_its_validity_is_dropped(backend: Backend) {
    let (app, fake, clock) = app(backend).await;
    let reference = resident(&app, true).await;
    let (status, booked) = app
        .post(
            Role::Agent,
            &format!("/api/v1/requests/{reference}/appointments"),
            json!({"starts_at": at(&clock, 10 * HOUR), "place": "Depot",
                   "reminders": [{"minutes_before": 540}]}),
        )
        .await;
    assert_eq!(status, 201, "{booked}");
    // The daemon comes back six hours on (the clock jumps): the reminder was due
    // five hours ago, past the four-hour validity period, and is not sent.
    clock.advance(6 * HOUR);
    app.until_count(
        "messages WHERE purpose = 'reminder' AND status = 'expired'",
        1,
    )
    .await;
    assert!(reminders_texted(&fake).is_empty());
    app.stop().await;
}
