//! Service requests through the staff API and intake, on SQLite and PostgreSQL.

mod common;

use common::spawn_app;
use contactd::configuration::Backend;
use contactd::domain::Role;
use serde_json::{Value, json};

on_both_backends!(
    customer_request_and_contacts_share_one_timeline,
    redelivered_contact_makes_one_request,
    simultaneous_deliveries_make_one_request,
    mistyped_or_unknown_reference_is_refused_and_nothing_written,
    status_life_cycle_and_retention_clock,
    special_category_requests_are_restricted,
    list_filters_and_pagination,
    notes_and_customer_assignment,
);

fn sms(external_id: &str, from: &str, content: &str) -> Value {
    json!({"channel": "sms", "external_id": external_id, "from": from,
           "to": "+441612345000", "content": content})
}

async fn customer_request_and_contacts_share_one_timeline(backend: Backend) {
    let app = spawn_app(backend).await;
    let customer = app
        .create_customer(
            json!({"given_name": "Jo", "family_name": "Bloggs", "phones": ["07700 900123"]}),
        )
        .await;
    let (status, request) = app
        .post(
            Role::Agent,
            "/api/v1/requests",
            json!({"customer_id": customer["id"], "service": "waste", "summary": "Missed bin collection"}),
        )
        .await;
    assert_eq!(status, 201, "{request}");
    let reference = request["reference"].as_str().unwrap().to_string();
    assert!(
        reference.starts_with("SR-") && reference.len() == 10,
        "{reference}"
    );
    assert_eq!(request["status"], "open");
    assert_eq!(request["customer_id"], customer["id"]);

    for (i, text) in ["Still not collected", "Thanks, collected now"]
        .iter()
        .enumerate()
    {
        let mut contact = sms(&format!("SM{i}"), "+447700900123", text);
        contact["reference"] = json!(reference);
        let (status, receipt) = app.post(Role::Agent, "/api/v1/contacts", contact).await;
        assert_eq!(status, 201, "{receipt}");
        assert_eq!(receipt["reference"], reference.as_str());
        assert_eq!(receipt["opened_request"], false);
        assert_eq!(receipt["identity"], "matched");
        assert_eq!(receipt["customer_id"], customer["id"]);
    }

    let (status, timeline) = app
        .get(
            Role::Agent,
            &format!("/api/v1/requests/{reference}/timeline"),
        )
        .await;
    assert_eq!(status, 200);
    let kinds: Vec<&str> = timeline
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["opened", "contact", "contact"]);
    let contents: Vec<&str> = timeline.as_array().unwrap()[1..]
        .iter()
        .map(|e| e["contact"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["Still not collected", "Thanks, collected now"]);

    // The customer's contact history across channels shows both, newest first.
    let (status, contacts) = app
        .get(
            Role::Agent,
            &format!(
                "/api/v1/customers/{}/contacts",
                customer["id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(contacts.as_array().unwrap().len(), 2);
    assert_eq!(contacts[0]["content"], "Thanks, collected now");
    app.stop().await;
}

async fn redelivered_contact_makes_one_request(backend: Backend) {
    let app = spawn_app(backend).await;
    let contact = sms("SMredeliver", "07700 900200", "Pothole on Albert Square");
    let (status, first) = app
        .post(Role::Agent, "/api/v1/contacts", contact.clone())
        .await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["opened_request"], true);
    assert_eq!(first["identity"], "created");
    let (status, again) = app.post(Role::Agent, "/api/v1/contacts", contact).await;
    assert_eq!(status, 200, "a redelivery answers with the first result");
    assert_eq!(again["redelivery"], true);
    for key in ["contact_id", "request_id", "reference", "customer_id"] {
        assert_eq!(first[key], again[key], "{key}");
    }
    assert_eq!(app.count("service_requests").await, 1);
    assert_eq!(app.count("contacts").await, 1);
    assert_eq!(app.count("customers").await, 1);
    app.stop().await;
}

async fn simultaneous_deliveries_make_one_request(backend: Backend) {
    let app = spawn_app(backend).await;
    let contact = sms("SMrace", "07700 900300", "Fly-tipping behind the library");
    let deliveries = (0..8).map(|_| app.post(Role::Agent, "/api/v1/contacts", contact.clone()));
    let results = futures::future::join_all(deliveries).await;
    let references: Vec<&Value> = results.iter().map(|(_, r)| &r["reference"]).collect();
    assert!(
        results.iter().all(|(s, _)| *s == 200 || *s == 201),
        "{results:?}"
    );
    assert!(
        references.iter().all(|r| *r == references[0]),
        "{references:?}"
    );
    assert_eq!(
        results
            .iter()
            .filter(|(_, r)| r["redelivery"] == false)
            .count(),
        1
    );
    assert_eq!(app.count("service_requests").await, 1);
    assert_eq!(app.count("contacts").await, 1);

    // Different contacts from the same new number at once: one customer record.
    let firsts = (0..6).map(|i| {
        app.post(
            Role::Agent,
            "/api/v1/contacts",
            sms(&format!("SMnew{i}"), "07700 900301", "Noise complaint"),
        )
    });
    let results = futures::future::join_all(firsts).await;
    assert!(results.iter().all(|(s, _)| *s == 201), "{results:?}");
    let customers: Vec<&Value> = results.iter().map(|(_, r)| &r["customer_id"]).collect();
    assert!(
        customers.iter().all(|c| *c == customers[0]),
        "{customers:?}"
    );
    app.stop().await;
}

async fn mistyped_or_unknown_reference_is_refused_and_nothing_written(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, first) = app
        .post(
            Role::Agent,
            "/api/v1/contacts",
            sms("SM1", "07700 900400", "Graffiti"),
        )
        .await;
    let reference = first["reference"].as_str().unwrap().to_string();
    // Swap two different adjacent digits: Damm's check digit catches every such slip.
    let mut typo: Vec<char> = reference.chars().collect();
    let i = (3..typo.len() - 1)
        .find(|&i| typo[i] != typo[i + 1])
        .unwrap();
    typo.swap(i, i + 1);
    let typo: String = typo.into_iter().collect();
    assert_ne!(typo, reference);

    let (status, error) = app
        .get(Role::Agent, &format!("/api/v1/requests/{typo}"))
        .await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"]["code"], "invalid_reference");

    let before = (
        app.count("contacts").await,
        app.count("customers").await,
        app.count("timeline_events").await,
    );
    let mut contact = sms("SM2", "07700 900499", "About my graffiti report");
    contact["reference"] = json!(typo);
    let (status, error) = app
        .post(Role::Agent, "/api/v1/contacts", contact.clone())
        .await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"]["field"], "reference");

    // A well-formed reference that no request has: refused, and the transaction
    // (which had already claimed the contact and created the sender's record) undone.
    let unknown = contactd::domain::Reference::from_number(999_999).to_string();
    contact["reference"] = json!(unknown);
    let (status, error) = app.post(Role::Agent, "/api/v1/contacts", contact).await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"]["code"], "unknown_reference");
    let after = (
        app.count("contacts").await,
        app.count("customers").await,
        app.count("timeline_events").await,
    );
    assert_eq!(before, after);

    let (status, _) = app
        .get(Role::Agent, &format!("/api/v1/requests/{unknown}"))
        .await;
    assert_eq!(status, 404);
    app.stop().await;
}

async fn status_life_cycle_and_retention_clock(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, receipt) = app
        .post(
            Role::Agent,
            "/api/v1/contacts",
            sms("SM1", "07700 900500", "Rats in the garden"),
        )
        .await;
    let r = receipt["reference"].as_str().unwrap();
    let status_path = format!("/api/v1/requests/{r}/status");

    let (s, req) = app
        .post(Role::Agent, &status_path, json!({"status": "in_progress"}))
        .await;
    assert_eq!((s, req["status"].as_str()), (200, Some("in_progress")));
    assert!(req["retain_until"].is_null());
    let (s, req) = app
        .post(
            Role::Agent,
            &status_path,
            json!({"status": "resolved", "note": "Treated"}),
        )
        .await;
    assert_eq!((s, req["status"].as_str()), (200, Some("resolved")));
    let closed = contactd::domain::Timestamp::parse(req["closed_at"].as_str().unwrap()).unwrap();
    let retain = contactd::domain::Timestamp::parse(req["retain_until"].as_str().unwrap()).unwrap();
    let days = (retain.millis() - closed.millis()) / 86_400_000;
    assert_eq!(days, req["retention_days"].as_i64().unwrap());
    assert!(
        days >= 7 * 365,
        "seven years after closure, got {days} days"
    );

    // A closed request only moves by being reopened.
    let (s, err) = app
        .post(Role::Agent, &status_path, json!({"status": "in_progress"}))
        .await;
    assert_eq!((s, err["error"]["code"].as_str()), (409, Some("conflict")));
    let (s, req) = app
        .post(
            Role::Agent,
            &format!("/api/v1/requests/{r}/reopen"),
            json!({"reason": "Rats back"}),
        )
        .await;
    assert_eq!((s, req["status"].as_str()), (200, Some("open")));
    assert!(req["retain_until"].is_null() && req["closed_at"].is_null());
    let (s, req) = app
        .post(
            Role::Agent,
            &format!("/api/v1/requests/{r}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!((s, req["status"].as_str()), (200, Some("cancelled")));
    let (s, _) = app
        .post(
            Role::Agent,
            &format!("/api/v1/requests/{r}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(s, 409, "cancelling twice is refused");
    let (s, _) = app
        .post(Role::Agent, &status_path, json!({"status": "closed"}))
        .await;
    assert_eq!(s, 422, "unknown status");

    let (_, timeline) = app
        .get(Role::Agent, &format!("/api/v1/requests/{r}/timeline"))
        .await;
    let changes: Vec<(String, String)> = timeline
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "status_change")
        .map(|e| {
            (
                e["from_status"].as_str().unwrap().into(),
                e["to_status"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected = [
        ("open", "in_progress"),
        ("in_progress", "resolved"),
        ("resolved", "open"),
        ("open", "cancelled"),
    ];
    assert_eq!(
        changes,
        expected.map(|(a, b)| (a.to_string(), b.to_string()))
    );
    app.stop().await;
}

async fn special_category_requests_are_restricted(backend: Backend) {
    let app = spawn_app(backend).await;
    let customer = app
        .create_customer(json!({"family_name": "Patel", "phones": ["07700 900600"]}))
        .await;
    let (s, req) = app
        .post(
            Role::Agent,
            "/api/v1/requests",
            json!({"customer_id": customer["id"], "service": "blue_badges",
            "summary": "Blue badge application: mobility assessment"}),
        )
        .await;
    assert_eq!(s, 201, "{req}");
    assert_eq!(
        req["special_category"], true,
        "blue badges always hold health data"
    );
    let r = req["reference"].as_str().unwrap();

    let (s, err) = app.get(Role::Agent, &format!("/api/v1/requests/{r}")).await;
    assert_eq!((s, err["error"]["code"].as_str()), (403, Some("forbidden")));
    let (s, _) = app
        .get(Role::Quality, &format!("/api/v1/requests/{r}/timeline"))
        .await;
    assert_eq!(s, 403);
    let (s, _) = app
        .post(
            Role::Agent,
            &format!("/api/v1/requests/{r}/notes"),
            json!({"body": "x"}),
        )
        .await;
    assert_eq!(s, 403);
    let (s, got) = app
        .get(Role::Supervisor, &format!("/api/v1/requests/{r}"))
        .await;
    assert_eq!((s, got["reference"].as_str()), (200, Some(r)));

    let (_, list) = app.get(Role::Agent, "/api/v1/requests").await;
    assert_eq!(
        list["total"], 0,
        "agents do not see special category requests listed"
    );
    let (_, list) = app.get(Role::Admin, "/api/v1/requests").await;
    assert_eq!(list["total"], 1);

    // The refused read is in the audit log too.
    let (_, audit) = app
        .get(
            Role::Admin,
            &format!(
                "/api/v1/audit?entity=request&entity_id={}",
                req["id"].as_str().unwrap()
            ),
        )
        .await;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == "staff:agent-user"
                && e["detail"].as_str().unwrap_or("").contains("refused")),
        "{audit}"
    );
    app.stop().await;
}

async fn list_filters_and_pagination(backend: Backend) {
    let app = spawn_app(backend).await;
    let jo = app
        .create_customer(
            json!({"given_name": "Jo", "phones": ["07700 900701"], "emails": ["jo@example.org"]}),
        )
        .await;
    let sam = app
        .create_customer(json!({"given_name": "Sam", "phones": ["07700 900702"]}))
        .await;
    for (who, service) in [
        (&jo, "waste"),
        (&jo, "highways"),
        (&jo, "waste"),
        (&sam, "waste"),
    ] {
        let (s, _) = app
            .post(
                Role::Agent,
                "/api/v1/requests",
                json!({"customer_id": who["id"], "service": service, "summary": "s"}),
            )
            .await;
        assert_eq!(s, 201);
    }
    let (_, page1) = app.get(Role::Agent, "/api/v1/requests?per_page=2").await;
    assert_eq!(
        (
            page1["total"].as_i64(),
            page1["items"].as_array().unwrap().len()
        ),
        (Some(4), 2)
    );
    let (_, page2) = app
        .get(Role::Agent, "/api/v1/requests?per_page=2&page=2")
        .await;
    assert_eq!(page2["items"].as_array().unwrap().len(), 2);
    assert_ne!(page1["items"][0]["id"], page2["items"][0]["id"]);

    let (_, by_phone) = app
        .get(Role::Agent, "/api/v1/requests?phone=07700%20900701")
        .await;
    assert_eq!(by_phone["total"], 3);
    let (_, by_phone) = app
        .get(
            Role::Agent,
            "/api/v1/requests?phone=%2B447700900701&service=waste",
        )
        .await;
    assert_eq!(by_phone["total"], 2);
    let (_, by_email) = app
        .get(Role::Agent, "/api/v1/requests?email=JO@example.org")
        .await;
    assert_eq!(by_email["total"], 3);
    let (_, by_customer) = app
        .get(
            Role::Agent,
            &format!(
                "/api/v1/requests?customer_id={}",
                sam["id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(by_customer["total"], 1);
    let (_, by_status) = app
        .get(Role::Agent, "/api/v1/requests?status=resolved")
        .await;
    assert_eq!(by_status["total"], 0);

    for bad in [
        "status=closed",
        "per_page=1000",
        "page=0",
        "phone=banana",
        "service=Not-A-Code",
        "colour=red",
    ] {
        let (s, err) = app
            .get(Role::Agent, &format!("/api/v1/requests?{bad}"))
            .await;
        assert!(s == 422 || s == 400, "{bad}: {s} {err}");
        assert!(err["error"]["message"].is_string(), "{bad}: {err}");
    }
    app.stop().await;
}

async fn notes_and_customer_assignment(backend: Backend) {
    let app = spawn_app(backend).await;
    // Two records share a household landline: intake must not pick one.
    let a = app
        .create_customer(json!({"given_name": "Ann", "phones": ["0161 496 0000"]}))
        .await;
    let _b = app
        .create_customer(json!({"given_name": "Bob", "phones": ["0161 496 0000"]}))
        .await;
    let contact = json!({"channel": "phone", "external_id": "call-1", "from": "01614960000", "to": "0161 234 5000",
        "content": "Caller asked about council tax"});
    let (s, receipt) = app.post(Role::Agent, "/api/v1/contacts", contact).await;
    assert_eq!(s, 201, "{receipt}");
    assert_eq!(receipt["identity"], "ambiguous");
    assert!(receipt["customer_id"].is_null());
    let r = receipt["reference"].as_str().unwrap();
    let (_, req) = app.get(Role::Agent, &format!("/api/v1/requests/{r}")).await;
    assert_eq!(req["identity_review"], true);

    let (s, req) = app
        .put(
            Role::Agent,
            &format!("/api/v1/requests/{r}/customer"),
            json!({"customer_id": a["id"]}),
        )
        .await;
    assert_eq!(s, 200, "{req}");
    assert_eq!(
        (req["customer_id"].clone(), req["identity_review"].clone()),
        (a["id"].clone(), json!(false))
    );

    let (s, note) = app
        .post(
            Role::Agent,
            &format!("/api/v1/requests/{r}/notes"),
            json!({"body": "Called back, resolved by phone"}),
        )
        .await;
    assert_eq!(s, 201, "{note}");
    assert_eq!(note["kind"], "note");
    assert_eq!(note["actor"], "staff:agent-user");
    let (s, _) = app
        .post(
            Role::Agent,
            &format!("/api/v1/requests/{r}/notes"),
            json!({"body": ""}),
        )
        .await;
    assert_eq!(s, 422, "empty notes are refused");

    // A withheld number is kept as a contact and flagged, never matched.
    let withheld = json!({"channel": "phone", "external_id": "call-2", "from": null, "to": "0161 234 5000",
        "content": "Anonymous report"});
    let (s, receipt) = app.post(Role::Agent, "/api/v1/contacts", withheld).await;
    assert_eq!(
        (s, receipt["identity"].as_str()),
        (201, Some("unidentified"))
    );
    app.stop().await;
}
