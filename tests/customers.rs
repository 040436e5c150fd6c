//! The central customer record through the staff API, on SQLite and PostgreSQL.

mod common;

use common::spawn_app;
use contactd::configuration::Backend;
use contactd::domain::Role;
use serde_json::json;

on_both_backends!(
    record_is_normalised_and_searchable,
    one_update_changes_the_record_everywhere_with_history,
    consents_keep_when_and_how,
    merging_duplicates_moves_everything_with_an_audit_trail,
    bad_input_is_refused_naming_the_field_and_nothing_is_written,
    every_table_pointing_at_a_customer_is_handled_by_merge,
);

async fn record_is_normalised_and_searchable(backend: Backend) {
    let app = spawn_app(backend).await;
    let c = app
        .create_customer(json!({
            "title": "Ms", "given_name": "Josephine", "family_name": "Bloggs",
            "date_of_birth": "1970-01-31",
            "phones": ["07700 900123", "+44 7700 900123"],
            "emails": ["Jo.Bloggs@Example.ORG"],
            "addresses": [{"line1": "1 Albert Square", "town": "Manchester", "postcode": "m602la", "uprn": "77123456"}],
            "preferred_channel": "sms", "language": "Welsh",
            "accessibility_needs": "Large print letters",
            "representatives": [{"name": "Cllr Smith", "kind": "councillor", "services": ["waste", "highways"]},
                                {"name": "Sam Bloggs", "kind": "family_member", "phone": "07700900999", "valid_until": "2027-12-31"}]
        }))
        .await;
    assert_eq!(
        c["phones"],
        json!(["+447700900123"]),
        "normalised and de-duplicated"
    );
    assert_eq!(c["emails"], json!(["jo.bloggs@example.org"]));
    assert_eq!(c["addresses"][0]["postcode"], "M60 2LA");
    assert_eq!(
        c["representatives"][0]["services"],
        json!(["waste", "highways"])
    );
    assert_eq!(c["representatives"][1]["phone"], "+447700900999");
    let id = c["id"].as_str().unwrap();

    let (s, got) = app
        .get(Role::Agent, &format!("/api/v1/customers/{id}"))
        .await;
    assert_eq!(s, 200);
    assert_eq!(got, c);

    for query in [
        "phone=%2B447700900123",
        "phone=07700%20900123",
        "email=JO.BLOGGS%40example.org",
        "postcode=M60%202LA",
        "postcode=m602la",
        "name=jos",
        "name=bloggs",
        "name=Josephine%20B",
    ] {
        let (s, page) = app
            .get(Role::Agent, &format!("/api/v1/customers?{query}"))
            .await;
        assert_eq!(s, 200, "{query}: {page}");
        let ids: Vec<&str> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [id], "{query}");
    }
    let (_, none) = app.get(Role::Agent, "/api/v1/customers?name=%25").await;
    assert_eq!(
        none["items"].as_array().unwrap().len(),
        0,
        "LIKE wildcards are literal"
    );
    let (s, err) = app.get(Role::Agent, "/api/v1/customers").await;
    assert_eq!(
        (s, err["error"]["code"].as_str()),
        (422, Some("invalid_field"))
    );
    let (s, _) = app.get(Role::Agent, "/api/v1/customers/no-such-id").await;
    assert_eq!(s, 404);
    app.stop().await;
}

async fn one_update_changes_the_record_everywhere_with_history(backend: Backend) {
    let app = spawn_app(backend).await;
    let c = app
        .create_customer(json!({"given_name": "Jo", "phones": ["07700 900123"],
            "addresses": [{"line1": "1 Old Road", "postcode": "M1 1AA"}]}))
        .await;
    let id = c["id"].as_str().unwrap();
    // The resident tells us once: a new number and a new address.
    let (s, updated) = app
        .patch(
            Role::Agent,
            &format!("/api/v1/customers/{id}"),
            json!({
                "phones": ["07700 900456"],
                "addresses": [{"line1": "2 New Street", "postcode": "M2 2BB"}]
            }),
        )
        .await;
    assert_eq!(s, 200, "{updated}");
    assert_eq!(updated["given_name"], "Jo", "fields not sent are unchanged");
    assert_eq!(updated["phones"], json!(["+447700900456"]));

    let (_, by_new) = app
        .get(Role::Agent, "/api/v1/customers?phone=07700900456")
        .await;
    assert_eq!(by_new["items"].as_array().unwrap().len(), 1);
    let (_, by_old) = app
        .get(Role::Agent, "/api/v1/customers?phone=07700900123")
        .await;
    assert_eq!(by_old["items"].as_array().unwrap().len(), 0);
    let (_, by_postcode) = app
        .get(Role::Agent, "/api/v1/customers?postcode=M2%202BB")
        .await;
    assert_eq!(by_postcode["items"].as_array().unwrap().len(), 1);

    // Intake now finds the resident by the new number.
    let (_, receipt) = app
        .post(
            Role::Agent,
            "/api/v1/contacts",
            json!({"channel": "sms", "external_id": "SM1",
            "from": "+447700900456", "to": "60000", "content": "Hello"}),
        )
        .await;
    assert_eq!(receipt["customer_id"], id);

    let (s, history) = app
        .get(Role::Agent, &format!("/api/v1/customers/{id}/history"))
        .await;
    assert_eq!(s, 200);
    let history = history.as_array().unwrap();
    assert_eq!(history[0]["field"], "created");
    let phones = history
        .iter()
        .find(|h| h["field"] == "phones")
        .expect("phones change kept");
    assert_eq!(phones["old_value"], json!(["+447700900123"]));
    assert_eq!(phones["new_value"], json!(["+447700900456"]));
    assert_eq!(phones["changed_by"], "staff:agent-user");
    assert!(history.iter().any(|h| h["field"] == "addresses"));
    assert!(
        !history.iter().any(|h| h["field"] == "given_name"),
        "unchanged fields leave no history"
    );

    let (s, _) = app
        .patch(
            Role::Agent,
            "/api/v1/customers/nobody",
            json!({"language": "Urdu"}),
        )
        .await;
    assert_eq!(s, 404);
    app.stop().await;
}

async fn consents_keep_when_and_how(backend: Backend) {
    let app = spawn_app(backend).await;
    let c = app.create_customer(json!({"given_name": "Jo"})).await;
    let path = format!("/api/v1/customers/{}/consents", c["id"].as_str().unwrap());
    let (s, after) = app
        .post(
            Role::Agent,
            &path,
            json!({"purpose": "satisfaction_surveys", "granted": true, "method": "phone"}),
        )
        .await;
    assert_eq!(s, 200, "{after}");
    assert_eq!(after["consents"][0]["granted"], true);
    let (s, _) = app
        .post(
            Role::Agent,
            &path,
            json!({"purpose": "satisfaction_surveys", "granted": false, "method": "email",
            "note": "Asked not to be surveyed"}),
        )
        .await;
    assert_eq!(s, 200);
    let (_, after) = app
        .post(
            Role::Agent,
            &path,
            json!({"purpose": "service_updates", "granted": true, "method": "sms"}),
        )
        .await;
    let consents = after["consents"].as_array().unwrap();
    assert_eq!(consents.len(), 2);
    let surveys = consents
        .iter()
        .find(|c| c["purpose"] == "satisfaction_surveys")
        .unwrap();
    assert_eq!(
        (surveys["granted"].as_bool(), surveys["method"].as_str()),
        (Some(false), Some("email"))
    );
    assert_eq!(surveys["recorded_by"], "staff:agent-user");
    assert!(surveys["at"].is_string());
    assert_eq!(
        app.count("consents").await,
        3,
        "withdrawn consents stay as history"
    );
    let (s, err) = app
        .post(
            Role::Agent,
            &path,
            json!({"purpose": "lottery", "granted": true, "method": "sms"}),
        )
        .await;
    assert_eq!((s, err["error"]["field"].as_str()), (422, Some("purpose")));
    app.stop().await;
}

async fn merging_duplicates_moves_everything_with_an_audit_trail(backend: Backend) {
    let app = spawn_app(backend).await;
    let keep = app
        .create_customer(
            json!({"given_name": "Jo", "family_name": "Bloggs", "phones": ["07700 900111"]}),
        )
        .await;
    let dup = app
        .create_customer(
            json!({"given_name": "Joanne", "family_name": "Bloggs", "phones": ["07700 900222"],
            "emails": ["jo@example.org"], "date_of_birth": "1980-05-01"}),
        )
        .await;
    let (keep_id, dup_id) = (keep["id"].as_str().unwrap(), dup["id"].as_str().unwrap());
    let (_, receipt) = app
        .post(
            Role::Agent,
            "/api/v1/contacts",
            json!({"channel": "sms", "external_id": "SM-dup",
            "from": "07700 900222", "to": "60000", "content": "Bulky waste collection"}),
        )
        .await;
    assert_eq!(receipt["customer_id"], dup_id);

    let (s, _) = app
        .post(
            Role::Agent,
            &format!("/api/v1/customers/{keep_id}/merge"),
            json!({"duplicate_id": dup_id}),
        )
        .await;
    assert_eq!(s, 403, "agents may not merge records");
    let (s, merged) = app
        .post(
            Role::Supervisor,
            &format!("/api/v1/customers/{keep_id}/merge"),
            json!({"duplicate_id": dup_id}),
        )
        .await;
    assert_eq!(s, 200, "{merged}");
    assert_eq!(
        merged["given_name"], "Jo",
        "the survivor keeps its own fields"
    );
    assert_eq!(
        merged["date_of_birth"], "1980-05-01",
        "and gains what it lacked"
    );
    assert_eq!(merged["phones"], json!(["+447700900111", "+447700900222"]));
    assert_eq!(merged["emails"], json!(["jo@example.org"]));

    let (_, gone) = app
        .get(Role::Agent, &format!("/api/v1/customers/{dup_id}"))
        .await;
    assert_eq!(gone["merged_into"], keep_id);
    let (_, found) = app.get(Role::Agent, "/api/v1/customers?name=bloggs").await;
    assert_eq!(
        found["items"].as_array().unwrap().len(),
        1,
        "merged records leave search"
    );
    let (_, requests) = app
        .get(
            Role::Agent,
            &format!("/api/v1/requests?customer_id={keep_id}"),
        )
        .await;
    assert_eq!(requests["total"], 1, "the duplicate's request moved");
    let (_, contacts) = app
        .get(
            Role::Agent,
            &format!("/api/v1/customers/{keep_id}/contacts"),
        )
        .await;
    assert_eq!(contacts.as_array().unwrap().len(), 1);

    // Intake now matches the duplicate's number to the survivor.
    let (_, receipt) = app
        .post(
            Role::Agent,
            "/api/v1/contacts",
            json!({"channel": "sms", "external_id": "SM-after",
            "from": "07700 900222", "to": "60000", "content": "Another"}),
        )
        .await;
    assert_eq!(
        (
            receipt["customer_id"].as_str(),
            receipt["identity"].as_str()
        ),
        (Some(keep_id), Some("matched"))
    );

    let (_, audit) = app
        .get(
            Role::Admin,
            &format!("/api/v1/audit?entity=customer&entity_id={dup_id}"),
        )
        .await;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "merge" && e["actor"] == "staff:supervisor-user")
    );
    let (_, history) = app
        .get(Role::Agent, &format!("/api/v1/customers/{keep_id}/history"))
        .await;
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["field"] == "merged_from" && h["new_value"] == dup_id)
    );

    let (s, _) = app
        .post(
            Role::Supervisor,
            &format!("/api/v1/customers/{keep_id}/merge"),
            json!({"duplicate_id": dup_id}),
        )
        .await;
    assert_eq!(s, 409, "a record is merged once");
    let (s, _) = app
        .post(
            Role::Supervisor,
            &format!("/api/v1/customers/{keep_id}/merge"),
            json!({"duplicate_id": keep_id}),
        )
        .await;
    assert_eq!(s, 409);
    app.stop().await;
}

async fn bad_input_is_refused_naming_the_field_and_nothing_is_written(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.token(Role::Agent).to_string();
    let url = app.url("/api/v1/customers");
    let send = |body: String, content_type: &'static str| {
        let (client, url, token) = (app.client.clone(), url.clone(), token.clone());
        async move {
            common::decode(
                client
                    .post(url)
                    .bearer_auth(token)
                    .header("content-type", content_type)
                    .body(body)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let cases: Vec<(String, &str, u16, &str, Option<&str>)> = vec![
        (
            "{\"given_name\": \"Jo\"".into(),
            "application/json",
            400,
            "invalid_json",
            None,
        ),
        (
            "not json".into(),
            "application/json",
            400,
            "invalid_json",
            None,
        ),
        (
            "{\"given_name\": \"Jo\"}".into(),
            "text/plain",
            415,
            "unsupported_media_type",
            None,
        ),
        (
            r#"{"phones": ["07700 900123", "call me"]}"#.into(),
            "application/json",
            422,
            "invalid_field",
            Some("phones[1]"),
        ),
        (
            r#"{"emails": ["jo@"]}"#.into(),
            "application/json",
            422,
            "invalid_field",
            Some("emails[0]"),
        ),
        (
            r#"{"addresses": [{"line1": "1 Road", "postcode": "NOPE"}]}"#.into(),
            "application/json",
            422,
            "invalid_field",
            Some("addresses[0].postcode"),
        ),
        (
            r#"{"date_of_birth": "1970-02-31"}"#.into(),
            "application/json",
            422,
            "invalid_field",
            Some("date_of_birth"),
        ),
        (
            r#"{"given_name": "   "}"#.into(),
            "application/json",
            422,
            "invalid_field",
            Some("given_name"),
        ),
        (
            format!(r#"{{"family_name": "{}"}}"#, "x".repeat(201)),
            "application/json",
            422,
            "invalid_field",
            Some("family_name"),
        ),
        (
            r#"{"favourite_colour": "red"}"#.into(),
            "application/json",
            422,
            "invalid_field",
            None,
        ),
        (
            r#"{"preferred_channel": "pigeon"}"#.into(),
            "application/json",
            422,
            "invalid_field",
            Some("preferred_channel"),
        ),
        (
            r#"{"representatives": [{"name": "X", "kind": "landlord"}]}"#.into(),
            "application/json",
            422,
            "invalid_field",
            Some("representatives[0].kind"),
        ),
        (
            format!(
                r#"{{"phones": [{}]}}"#,
                (0..25)
                    .map(|i| format!("\"07700 9001{i:02}\""))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            "application/json",
            422,
            "invalid_field",
            Some("phones"),
        ),
        (
            format!(r#"{{"accessibility_needs": "{}"}}"#, "x".repeat(70_000)),
            "application/json",
            413,
            "payload_too_large",
            None,
        ),
    ];
    for (body, content_type, status, code, field) in cases {
        let shown: String = body.chars().take(60).collect();
        let (s, err) = send(body, content_type).await;
        assert_eq!(s, status, "{shown}: {err}");
        assert_eq!(err["error"]["code"], code, "{shown}: {err}");
        assert!(!err["error"]["message"].as_str().unwrap().is_empty());
        if let Some(field) = field {
            assert_eq!(err["error"]["field"], field, "{shown}: {err}");
        }
    }
    assert_eq!(app.count("customers").await, 0);
    assert_eq!(app.count("customer_history").await, 0);
    assert_eq!(
        app.count("audit_log WHERE entity <> 'staff_user'").await,
        0,
        "nothing about residents audited"
    );

    // A bad PATCH leaves the record, its history and the audit log as they were.
    let c = app
        .create_customer(json!({"given_name": "Jo", "phones": ["07700 900123"]}))
        .await;
    let before = (
        app.count("customer_history").await,
        app.count("audit_log").await,
    );
    let (s, err) = app
        .patch(
            Role::Agent,
            &format!("/api/v1/customers/{}", c["id"].as_str().unwrap()),
            json!({"given_name": "Joanna", "phones": ["banana"]}),
        )
        .await;
    assert_eq!(
        (s, err["error"]["field"].as_str()),
        (422, Some("phones[0]"))
    );
    let (_, again) = app
        .get(
            Role::Agent,
            &format!("/api/v1/customers/{}", c["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(again["given_name"], "Jo");
    assert_eq!(app.count("customer_history").await, before.0);
    assert_eq!(
        app.count("audit_log").await,
        before.1 + 1,
        "only the read just made"
    );
    app.stop().await;
}

/// Every table with a `customer_id` column is either moved on merge or deliberately
/// kept with the merged-away record: a table added later without a decision fails.
async fn every_table_pointing_at_a_customer_is_handled_by_merge(backend: Backend) {
    use contactd::store::customers::{KEPT_ON_MERGE, MOVED_ON_MERGE};
    use sqlx::Row;
    let app = spawn_app(backend).await;
    let tables: Vec<String> = match backend {
        Backend::Sqlite => {
            let names: Vec<String> = sqlx::query(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx%'",
            )
            .fetch_all(app.store.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>("name"))
            .collect();
            let mut with_customer = Vec::new();
            for name in names {
                let cols = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT name FROM pragma_table_info('{name}')"
                )))
                .fetch_all(app.store.pool())
                .await
                .unwrap();
                if cols
                    .iter()
                    .any(|c| c.get::<String, _>("name") == "customer_id")
                {
                    with_customer.push(name);
                }
            }
            with_customer
        }
        Backend::Postgres => sqlx::query(
            "SELECT CAST(table_name AS TEXT) AS t FROM information_schema.columns \
             WHERE column_name = 'customer_id' AND table_schema = 'public'",
        )
        .fetch_all(app.store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("t"))
        .collect(),
    };
    assert!(!tables.is_empty());
    for table in &tables {
        assert!(
            MOVED_ON_MERGE.contains(&table.as_str()) || KEPT_ON_MERGE.contains(&table.as_str()),
            "{table} has a customer_id but merge neither moves nor keeps it"
        );
    }
    for table in MOVED_ON_MERGE.iter().chain(KEPT_ON_MERGE.iter()) {
        assert!(
            tables.iter().any(|t| t == table),
            "{table} is listed but has no customer_id"
        );
    }
}
