//! The SMS channel against Twilio's protocol: webhooks signed by Twilio's own Python
//! SDK, a stand-in Twilio REST API, opt-out words, delivery status callbacks.

mod common;

use std::time::Duration;

use common::twilio::{
    self, ACCOUNT_SID, AUTH_TOKEN, COUNCIL_NUMBER, FakeTwilio, PUBLIC_URL, sdk_signature, sid,
};
use common::{TestApp, spawn_app_with};
use contactd::configuration::Backend;
use contactd::domain::Role;
use serde_json::{Value, json};

on_both_backends!(
    signed_texts_are_stored_once_and_unsigned_ones_refused,
    stop_suppresses_texts_until_start_and_keywords_open_nothing,
    twilio_is_retried_after_429_and_believed_about_opt_outs,
    status_callbacks_never_move_a_message_backwards,
    texts_join_the_senders_request_by_reference_or_reply,
    control_characters_and_staff_contacts_cannot_lose_a_text,
    a_text_of_unknown_outcome_is_looked_for_at_twilio_before_any_resend,
);

async fn sms_app(backend: Backend) -> (TestApp, FakeTwilio) {
    let fake = FakeTwilio::start().await;
    let app = spawn_app_with(backend, |s| {
        fake.configure(s);
        // These tests count the texts the SMS channel sends; the notice of a request
        // opened by staff (tests/notices.rs) would be one more.
        s.notices.opened = String::new();
    })
    .await;
    (app, fake)
}

fn text(from: &str, body: &str) -> Vec<(String, String)> {
    [
        ("MessageSid", sid("SM").as_str()),
        ("AccountSid", ACCOUNT_SID),
        ("From", from),
        ("To", COUNCIL_NUMBER),
        ("Body", body),
        ("NumMedia", "0"),
        ("SmsStatus", "received"),
        ("ApiVersion", "2010-04-01"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn pairs(params: &[(String, String)]) -> Vec<(&str, &str)> {
    params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// Posts form `params` to `path`, signed over `signed_url` (None: no signature).
async fn post_signed(
    app: &TestApp,
    path: &str,
    params: &[(String, String)],
    signed_url: Option<&str>,
) -> (u16, String) {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let mut req = app
        .client
        .post(app.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(url) = signed_url {
        req = req.header(
            "X-Twilio-Signature",
            sdk_signature(AUTH_TOKEN, url, &pairs(params)),
        );
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn send_text(app: &TestApp, params: &[(String, String)]) -> (u16, String) {
    let url = format!("{PUBLIC_URL}/webhooks/twilio/sms");
    post_signed(app, "/webhooks/twilio/sms", params, Some(&url)).await
}

/// Waits (bounded) until the stand-in Twilio has received `n` messages.
async fn twilio_received(fake: &FakeTwilio, n: usize) -> Vec<Vec<(String, String)>> {
    for _ in 0..400 {
        let got = fake.received();
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("Twilio did not receive {n} message(s)");
}

fn field<'a>(form: &'a [(String, String)], key: &str) -> &'a str {
    form.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_default()
}

/// A resident with this phone number and an open waste request: (customer, request).
async fn resident_with_request(app: &TestApp, phone: &str) -> (Value, Value) {
    let customer = app
        .create_customer(json!({"given_name": "Jo", "phones": [phone]}))
        .await;
    let (status, request) = app
        .post(
            Role::Agent,
            "/api/v1/requests",
            json!({"customer_id": customer["id"], "service": "waste", "summary": "Bins"}),
        )
        .await;
    assert_eq!(status, 201, "{request}");
    (customer, request)
}

async fn signed_texts_are_stored_once_and_unsigned_ones_refused(backend: Backend) {
    let (app, fake) = sms_app(backend).await;
    let first = text("+447700900123", "My bin was not collected on Tuesday");
    let (status, body) = send_text(&app, &first).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<Response/>"), "{body}");
    assert_eq!(app.count("contacts").await, 1);
    let (_, requests) = app
        .get(Role::Agent, "/api/v1/requests?phone=07700900123")
        .await;
    assert_eq!(requests["total"], 1);
    let reference = requests["items"][0]["reference"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(requests["items"][0]["opened_via"], "sms");

    // The acknowledgement, with the reference, goes out through Twilio.
    let sent = twilio_received(&fake, 1).await;
    assert_eq!(field(&sent[0], "To"), "+447700900123");
    assert_eq!(field(&sent[0], "From"), COUNCIL_NUMBER);
    assert!(
        field(&sent[0], "Body").contains(&reference),
        "{:?}",
        sent[0]
    );
    assert_eq!(
        field(&sent[0], "StatusCallback"),
        format!("{PUBLIC_URL}/webhooks/twilio/status")
    );

    // Twilio retries: the same MessageSid is one contact.
    let (status, _) = send_text(&app, &first).await;
    assert_eq!(status, 200);
    assert_eq!(app.count("contacts").await, 1);

    // Tampered, signed for another URL, unsigned: 403, nothing stored.
    let mut tampered = text("+447700900123", "Original");
    let signature = sdk_signature(
        AUTH_TOKEN,
        &format!("{PUBLIC_URL}/webhooks/twilio/sms"),
        &pairs(&tampered),
    );
    tampered.iter_mut().find(|(k, _)| k == "Body").unwrap().1 = "Changed in transit".into();
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&tampered)
        .finish();
    let r = app
        .client
        .post(app.url("/webhooks/twilio/sms"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("X-Twilio-Signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let (status, _) = post_signed(
        &app,
        "/webhooks/twilio/sms",
        &text("+447700900123", "x"),
        Some("https://attacker.example/webhooks/twilio/sms"),
    )
    .await;
    assert_eq!(status, 403, "signed for another URL");
    let (status, _) = post_signed(
        &app,
        "/webhooks/twilio/sms",
        &text("+447700900123", "x"),
        None,
    )
    .await;
    assert_eq!(status, 403, "unsigned");
    assert_eq!(app.count("contacts").await, 1, "nothing refused was stored");

    // Twilio may sign the URL with the default port.
    let with_port = text("+447700900124", "Signed with :443");
    let (status, _) = post_signed(
        &app,
        "/webhooks/twilio/sms",
        &with_port,
        Some("https://contactd.example-council.gov.uk:443/webhooks/twilio/sms"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(app.count("contacts").await, 2);

    // Malformed but properly signed: 400, nothing stored.
    let mut broken = text("+447700900125", "no sid");
    broken.retain(|(k, _)| k != "MessageSid");
    let (status, _) = post_signed(
        &app,
        "/webhooks/twilio/sms",
        &broken,
        Some(&format!("{PUBLIC_URL}/webhooks/twilio/sms")),
    )
    .await;
    assert_eq!(status, 400);
    let huge = vec![("Body".to_string(), "x".repeat(100_000))];
    let (status, _) = post_signed(&app, "/webhooks/twilio/sms", &huge, None).await;
    assert_eq!(
        status, 413,
        "oversized bodies are refused before anything else"
    );
    assert_eq!(app.count("contacts").await, 2);
    app.stop().await;
}

async fn stop_suppresses_texts_until_start_and_keywords_open_nothing(backend: Backend) {
    let (app, fake) = sms_app(backend).await;
    let (customer, request) = resident_with_request(&app, "07700 900200").await;
    let reference = request["reference"].as_str().unwrap().to_string();
    let sms_path = format!("/api/v1/requests/{reference}/sms");

    for (word, expect) in [("Stop", ""), ("HELP", "call 0161 234 5000")] {
        let (status, body) = send_text(&app, &text("+447700900200", word)).await;
        assert_eq!(status, 200);
        assert!(body.contains(expect), "{word}: {body}");
    }
    assert_eq!(
        app.count("service_requests").await,
        1,
        "keywords never open a request"
    );
    assert_eq!(app.count("contacts").await, 0);

    let (status, message) = app
        .post(
            Role::Agent,
            &sms_path,
            json!({"body": "Your bin will be collected tomorrow."}),
        )
        .await;
    assert_eq!(status, 201, "{message}");
    assert_eq!(message["status"], "suppressed", "not sent after STOP");
    assert!(fake.received().is_empty());
    let (_, history) = app
        .get(
            Role::Agent,
            &format!(
                "/api/v1/customers/{}/history",
                customer["id"].as_str().unwrap()
            ),
        )
        .await;
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["field"] == "sms_opt_out" && h["new_value"]["suppressed"] == true),
        "{history}"
    );

    let (_, record) = app
        .get(
            Role::Agent,
            &format!("/api/v1/customers/{}", customer["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(
        record["sms_opted_out"],
        json!(["+447700900200"]),
        "staff see the opt-out on the record"
    );
    let (status, _) = send_text(&app, &text("+447700900200", "start")).await;
    assert_eq!(status, 200);
    let (_, message) = app
        .post(
            Role::Agent,
            &sms_path,
            json!({"body": "Your bin will be collected tomorrow."}),
        )
        .await;
    assert_eq!(message["status"], "queued", "{message}");
    assert_eq!(twilio_received(&fake, 1).await.len(), 1);

    // Purposes beyond a reply need consent.
    let (_, survey) = app
        .post(
            Role::Agent,
            &sms_path,
            json!({"body": "How did we do?", "purpose": "survey"}),
        )
        .await;
    assert_eq!(survey["status"], "no_consent");
    assert_eq!(fake.received().len(), 1);
    let (_, timeline) = app
        .get(
            Role::Agent,
            &format!("/api/v1/requests/{reference}/timeline"),
        )
        .await;
    let statuses: Vec<&str> = timeline
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "message")
        .map(|e| e["message"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["suppressed", "queued", "no_consent"],
        "every message is on the timeline"
    );
    app.stop().await;
}

async fn twilio_is_retried_after_429_and_believed_about_opt_outs(backend: Backend) {
    let (app, fake) = sms_app(backend).await;
    let (_, request) = resident_with_request(&app, "07700 900300").await;
    let sms_path = format!(
        "/api/v1/requests/{}/sms",
        request["reference"].as_str().unwrap()
    );

    fake.answer(
        429,
        json!({"code": 20429, "message": "Too Many Requests", "status": 429}),
    );
    let (status, message) = app
        .post(Role::Agent, &sms_path, json!({"body": "Hello"}))
        .await;
    assert_eq!(status, 201, "{message}");
    assert_eq!(message["status"], "queued");
    assert!(message["provider_sid"].as_str().unwrap().starts_with("SM"));
    assert_eq!(fake.received().len(), 2, "one retry after the 429");
    assert_eq!(
        app.count("messages WHERE direction = 'out'").await,
        1,
        "and one message"
    );

    fake.answer(
        400,
        json!({"code": 21211, "message": "Invalid 'To' Phone Number", "status": 400}),
    );
    let (_, message) = app
        .post(Role::Agent, &sms_path, json!({"body": "Hello again"}))
        .await;
    assert_eq!(
        (message["status"].as_str(), message["error_code"].as_i64()),
        (Some("failed"), Some(21211))
    );
    assert_eq!(fake.received().len(), 3, "a 4xx is not retried");

    // A 500 may come after Twilio accepted the text: never retried blind, it waits
    // for the outbox to look for it in Twilio's message list.
    fake.answer(
        500,
        json!({"code": 20500, "message": "Internal Server Error", "status": 500}),
    );
    let (_, message) = app
        .post(Role::Agent, &sms_path, json!({"body": "Hello, perhaps"}))
        .await;
    assert_eq!(message["status"], "unknown", "{message}");
    assert_eq!(fake.received().len(), 4, "a 500 is not retried");

    fake.answer(400, json!({"code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400}));
    let (_, message) = app
        .post(Role::Agent, &sms_path, json!({"body": "Hello once more"}))
        .await;
    assert_eq!(message["status"], "suppressed");
    let (_, message) = app
        .post(Role::Agent, &sms_path, json!({"body": "And again"}))
        .await;
    assert_eq!(
        message["status"], "suppressed",
        "Twilio's word on the opt-out is kept"
    );
    assert_eq!(
        fake.received().len(),
        5,
        "the suppressed number is not tried again"
    );
    app.stop().await;
}

async fn status_callbacks_never_move_a_message_backwards(backend: Backend) {
    let (app, fake) = sms_app(backend).await;
    let (_, request) = resident_with_request(&app, "07700 900400").await;
    let reference = request["reference"].as_str().unwrap().to_string();
    let (_, message) = app
        .post(
            Role::Agent,
            &format!("/api/v1/requests/{reference}/sms"),
            json!({"body": "Hello"}),
        )
        .await;
    let message_sid = message["provider_sid"].as_str().unwrap().to_string();
    let url = format!("{PUBLIC_URL}/webhooks/twilio/status");
    for status in ["delivered", "sent", "queued", "delivered", "sending"] {
        let params: Vec<(String, String)> = [
            ("MessageSid", message_sid.as_str()),
            ("AccountSid", ACCOUNT_SID),
            ("MessageStatus", status),
            ("To", "+447700900400"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let (code, body) = post_signed(&app, "/webhooks/twilio/status", &params, Some(&url)).await;
        assert_eq!(code, 200, "{status}: {body}");
    }
    let unsigned: Vec<(String, String)> = vec![
        ("MessageSid".into(), message_sid.clone()),
        ("AccountSid".into(), ACCOUNT_SID.into()),
        ("MessageStatus".into(), "failed".into()),
    ];
    let (code, _) = post_signed(&app, "/webhooks/twilio/status", &unsigned, None).await;
    assert_eq!(code, 403);
    let (_, timeline) = app
        .get(
            Role::Agent,
            &format!("/api/v1/requests/{reference}/timeline"),
        )
        .await;
    let shown: Vec<&Value> = timeline
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "message")
        .collect();
    assert_eq!(shown.len(), 1);
    assert_eq!(
        shown[0]["message"]["status"], "delivered",
        "the final status stands"
    );

    // A report that overtakes Twilio's answer to the send is kept and applied.
    let early_sid = twilio::sid("SM");
    let report: Vec<(String, String)> = [
        ("MessageSid", early_sid.as_str()),
        ("AccountSid", ACCOUNT_SID),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "30003"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (code, _) = post_signed(&app, "/webhooks/twilio/status", &report, Some(&url)).await;
    assert_eq!(code, 200);
    fake.answer(201, json!({"sid": early_sid, "status": "queued"}));
    let (_, message) = app
        .post(
            Role::Agent,
            &format!("/api/v1/requests/{reference}/sms"),
            json!({"body": "Again"}),
        )
        .await;
    assert_eq!(
        (message["status"].as_str(), message["error_code"].as_i64()),
        (Some("undelivered"), Some(30003)),
        "{message}"
    );
    app.stop().await;
}

async fn total_requests(app: &TestApp) -> i64 {
    app.get(Role::Agent, "/api/v1/requests").await.1["total"]
        .as_i64()
        .unwrap()
}

async fn texts_join_the_senders_request_by_reference_or_reply(backend: Backend) {
    let (app, _fake) = sms_app(backend).await;
    let a = app
        .create_customer(json!({"given_name": "Ann", "phones": ["07700 900501"]}))
        .await;
    let b = app
        .create_customer(json!({"given_name": "Bob", "phones": ["07700 900502"]}))
        .await;
    let open = |c: Value| {
        let app = &app;
        async move {
            let (_, r) = app
                .post(
                    Role::Agent,
                    "/api/v1/requests",
                    json!({"customer_id": c["id"], "service": "highways", "summary": "Pothole"}),
                )
                .await;
            r["reference"].as_str().unwrap().to_string()
        }
    };
    let ann_ref = open(a.clone()).await;
    let bob_ref = open(b.clone()).await;

    // Ann quotes her own reference: attached.
    let (status, _) = send_text(
        &app,
        &text("+447700900501", &format!("Any news on {ann_ref}?")),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(total_requests(&app).await, 2);
    let (_, timeline) = app
        .get(Role::Agent, &format!("/api/v1/requests/{ann_ref}/timeline"))
        .await;
    assert!(
        timeline
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "contact")
    );

    // Ann quotes Bob's reference: not attached to Bob's request.
    send_text(
        &app,
        &text("+447700900501", &format!("What about {bob_ref}?")),
    )
    .await;
    let (_, timeline) = app
        .get(Role::Agent, &format!("/api/v1/requests/{bob_ref}/timeline"))
        .await;
    assert!(
        !timeline
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "contact"),
        "someone else's reference attaches nothing"
    );
    assert_eq!(
        total_requests(&app).await,
        3,
        "it opened a request of Ann's instead"
    );

    // Bob answers a text we sent him about his request: it joins that request.
    app.post(
        Role::Agent,
        &format!("/api/v1/requests/{bob_ref}/sms"),
        json!({"body": "Inspected today."}),
    )
    .await;
    send_text(&app, &text("+447700900502", "Thanks, that was quick")).await;
    let (_, timeline) = app
        .get(Role::Agent, &format!("/api/v1/requests/{bob_ref}/timeline"))
        .await;
    assert!(
        timeline
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "contact"),
        "{timeline}"
    );
    assert_eq!(total_requests(&app).await, 3);
    app.stop().await;
}

async fn control_characters_and_staff_contacts_cannot_lose_a_text(backend: Backend) {
    let (app, _fake) = sms_app(backend).await;
    // A signed text of nothing but control characters is stored, as an empty text.
    let (status, body) = send_text(&app, &text("+447700900123", "\u{1}\u{2}\u{7f}\u{1b}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.count("contacts").await, 1);

    // Staff record a contact with a MessageSid Twilio has not delivered yet.
    let real = text("+447700900456", "Fly-tipping on Mill Lane");
    let message_sid = field(&real, "MessageSid").to_string();
    let (status, receipt) = app
        .post(
            Role::Agent,
            "/api/v1/contacts",
            json!({"channel": "sms", "external_id": message_sid, "from": "+447700900456",
                   "to": COUNCIL_NUMBER, "content": "noted by phone"}),
        )
        .await;
    assert_eq!(status, 201, "{receipt}");
    // The real text still arrives, as a contact of its own.
    let (status, body) = send_text(&app, &real).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        app.count("contacts").await,
        3,
        "the text was taken for a redelivery"
    );
    // The staff contact is audited as the staff member who recorded it.
    let row = sqlx::query(sqlx::AssertSqlSafe(
        "SELECT actor FROM audit_log WHERE entity_id = $1 AND action = 'intake'".to_string(),
    ))
    .bind(receipt["request_id"].as_str().unwrap())
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    let actor: String = sqlx::Row::get(&row, "actor");
    assert_eq!(actor, "staff:agent-user");

    // A special-category request takes no staff contact from a role that may not read it.
    let customer = app
        .create_customer(json!({"given_name": "Al", "phones": ["07700 900789"]}))
        .await;
    let (status, badge) = app
        .post(
            Role::Supervisor,
            "/api/v1/requests",
            json!({"customer_id": customer["id"], "service": "blue_badges", "summary": "Renewal"}),
        )
        .await;
    assert_eq!(status, 201, "{badge}");
    let before = app.count("contacts").await;
    let (status, refused) = app
        .post(
            Role::Agent,
            "/api/v1/contacts",
            json!({"channel": "phone", "external_id": "walk-in-1", "from": "07700 900789",
                   "to": "front desk", "content": "asked about the badge", "reference": badge["reference"]}),
        )
        .await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(app.count("contacts").await, before, "nothing half-written");
}

async fn a_text_of_unknown_outcome_is_looked_for_at_twilio_before_any_resend(backend: Backend) {
    let fake = FakeTwilio::start().await;
    let clock = contactd::scheduler::TestClock::new();
    let app = common::spawn_app_with_clock(backend, clock.clone(), |s| {
        fake.configure(s);
        s.notices.opened = String::new();
    })
    .await;
    let (_, request) = resident_with_request(&app, "07700 900400").await;
    let sms_path = format!(
        "/api/v1/requests/{}/sms",
        request["reference"].as_str().unwrap()
    );
    // Twilio takes the first text, but its answer cannot be read: it may have gone.
    fake.answer(201, json!("<html>gateway</html>"));
    let (status, first) = app
        .post(Role::Agent, &sms_path, json!({"body": "First"}))
        .await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["state"], "reconcile", "{first}");
    // The second is lost before Twilio has it; the answer is as unreadable.
    fake.answer_and_lose(201, json!("<html>gateway</html>"));
    let (_, second) = app
        .post(Role::Agent, &sms_path, json!({"body": "Second"}))
        .await;
    assert_eq!(second["state"], "reconcile", "{second}");
    assert_eq!(fake.received().len(), 2);

    // A couple of minutes on, the outbox asks Twilio's list: the first is there
    // (never sent again), the second is not (sent again, once).
    clock.advance(std::time::Duration::from_secs(150));
    app.until_count(
        "messages WHERE direction = 'out' AND provider_sid IS NOT NULL",
        2,
    )
    .await;
    let bodies: Vec<String> = fake
        .received()
        .into_iter()
        .filter_map(|m| m.into_iter().find(|(k, _)| k == "Body").map(|(_, v)| v))
        .collect();
    assert_eq!(bodies, ["First", "Second", "Second"]);
    let (_, found) = app
        .get(
            Role::Agent,
            &format!(
                "/api/v1/customers/{}/messages",
                request["customer_id"].as_str().unwrap()
            ),
        )
        .await;
    let first_now = found
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == first["id"])
        .unwrap();
    assert_eq!(first_now["state"], "sent", "{first_now}");
    assert_eq!(
        first_now["provider_sid"].as_str().unwrap(),
        fake.listed_sids()[0]
    );
    app.stop().await;
}
