//! The API as a whole: authentication and roles on every route, the audit log, the
//! OpenAPI document and the operations endpoints, on SQLite and PostgreSQL.

mod common;

use std::collections::BTreeSet;

use common::spawn_app;
use contactd::configuration::Backend;
use contactd::domain::Role;
use serde_json::{Value, json};

on_both_backends!(
    every_route_is_documented_and_routed,
    every_staff_route_needs_a_token,
    roles_are_enforced,
    reads_and_writes_are_audited_and_the_log_is_append_only,
    operations_endpoints,
    slow_and_idle_clients_cannot_hold_the_listener,
    metrics_can_require_a_token,
);

/// Every operation the API offers. A route added without its OpenAPI entry, or an
/// entry without its route, fails this test.
const OPERATIONS: &[(&str, &str)] = &[
    ("get", "/api/v1/audit"),
    ("post", "/api/v1/contacts"),
    ("get", "/api/v1/customers"),
    ("post", "/api/v1/customers"),
    ("get", "/api/v1/customers/{id}"),
    ("patch", "/api/v1/customers/{id}"),
    ("post", "/api/v1/customers/{id}/consents"),
    ("get", "/api/v1/customers/{id}/contacts"),
    ("get", "/api/v1/customers/{id}/history"),
    ("post", "/api/v1/customers/{id}/merge"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/api/v1/requests"),
    ("post", "/api/v1/requests"),
    ("get", "/api/v1/requests/{reference}"),
    ("post", "/api/v1/requests/{reference}/cancel"),
    ("put", "/api/v1/requests/{reference}/customer"),
    ("post", "/api/v1/requests/{reference}/notes"),
    ("post", "/api/v1/requests/{reference}/reopen"),
    ("get", "/api/v1/recordings/{id}/audio"),
    ("put", "/api/v1/recordings/{id}/legal-hold"),
    ("get", "/api/v1/requests/{reference}/recordings"),
    ("post", "/api/v1/requests/{reference}/sms"),
    ("post", "/api/v1/requests/{reference}/email"),
    ("post", "/api/v1/requests/{reference}/appointments"),
    ("get", "/api/v1/requests/{reference}/appointments"),
    ("patch", "/api/v1/appointments/{id}"),
    ("post", "/api/v1/appointments/{id}/cancel"),
    ("post", "/api/v1/customers/{id}/subscriptions"),
    ("get", "/api/v1/customers/{id}/subscriptions"),
    ("post", "/api/v1/subscriptions/{id}/renew"),
    ("post", "/api/v1/subscriptions/{id}/cancel"),
    ("get", "/api/v1/customers/{id}/messages"),
    ("get", "/api/v1/outbox/attention"),
    ("get", "/api/v1/requests/{reference}/attachments"),
    ("get", "/api/v1/attachments/{id}"),
    ("post", "/api/v1/requests/{reference}/status"),
    ("get", "/api/v1/requests/{reference}/timeline"),
    ("get", "/api/v1/services"),
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/readyz"),
    ("post", "/webhooks/twilio/sms"),
    ("post", "/webhooks/twilio/status"),
    ("post", "/webhooks/notify/status"),
    ("post", "/webhooks/notify/inbound"),
    ("get", "/api/v1/advisors"),
    ("post", "/api/v1/advisors"),
    ("post", "/api/v1/advisors/{id}/credential"),
    ("put", "/api/v1/advisors/{id}/state"),
    ("get", "/api/v1/events/calls"),
    ("get", "/api/v1/queues"),
    ("get", "/api/v1/callbacks"),
    ("post", "/api/v1/callbacks/{id}/close"),
];

async fn spec(app: &common::TestApp) -> Value {
    let r = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// (method, path template, needs a token) for every operation in the document.
fn operations(spec: &Value) -> Vec<(String, String, bool)> {
    let mut ops = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let secured = op
                .get("security")
                .is_some_and(|s| !s.as_array().unwrap().is_empty());
            ops.push((method.clone(), path.clone(), secured));
        }
    }
    ops
}

fn concrete(path: &str) -> String {
    path.replace("{id}", "no-such-customer")
        .replace("{reference}", "SR-1000002")
}

async fn call(
    app: &common::TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let mut req = app.client.request(
        method.to_uppercase().parse().unwrap(),
        app.url(&concrete(path)),
    );
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if method != "get" {
        req = req.json(&json!({}));
    }
    common::decode(req.send().await.unwrap()).await
}

async fn every_route_is_documented_and_routed(backend: Backend) {
    let app = spawn_app(backend).await;
    let spec = spec(&app).await;
    let documented: BTreeSet<(String, String)> = operations(&spec)
        .into_iter()
        .map(|(m, p, _)| (m, p))
        .collect();
    let expected: BTreeSet<(String, String)> = OPERATIONS
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, expected);
    for (method, path) in &expected {
        if path.starts_with("/api/v1/events/") {
            // A feed: its head shows it is routed; its body never ends.
            let r = app
                .client
                .get(app.url(path))
                .bearer_auth(app.token(Role::Admin))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{path}");
            continue;
        }
        let (status, body) = call(&app, method, path, Some(app.token(Role::Admin))).await;
        assert_ne!(status, 405, "{method} {path} is documented but not routed");
        assert_ne!(
            body["error"]["message"], "route not found",
            "{method} {path} is documented but not routed"
        );
    }
    let (status, body) = call(&app, "get", "/api/v1/nowhere", Some(app.token(Role::Admin))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    app.stop().await;
}

async fn every_staff_route_needs_a_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let spec = spec(&app).await;
    for (method, path, secured) in operations(&spec) {
        let (status, body) = call(&app, &method, &path, None).await;
        if secured {
            assert_eq!(status, 401, "{method} {path} without a token: {body}");
            assert_eq!(body["error"]["code"], "unauthorized");
            let (status, _) = call(&app, &method, &path, Some("cd_0000000000000000")).await;
            assert_eq!(status, 401, "{method} {path} with a made-up token");
        } else if path.starts_with("/webhooks/") {
            // Authenticated by Twilio's signature instead (tests/sms.rs); the SMS
            // channel is off in this daemon.
            assert_eq!(status, 404, "{method} {path}: {body}");
        } else {
            assert_eq!(
                status, 200,
                "{method} {path} is open for the platform: {body}"
            );
        }
    }
    // Nothing was written by any refused call.
    assert_eq!(app.count("customers").await, 0);
    assert_eq!(
        app.count("audit_log WHERE entity <> 'staff_user'").await,
        0,
        "nothing about residents audited"
    );
    app.stop().await;
}

async fn roles_are_enforced(backend: Backend) {
    let app = spawn_app(backend).await;
    let c = app.create_customer(json!({"given_name": "Jo"})).await;
    let id = c["id"].as_str().unwrap();
    let forbidden: &[(Role, &str, String)] = &[
        (Role::Quality, "post", "/api/v1/customers".into()),
        (Role::Quality, "get", format!("/api/v1/customers/{id}")),
        (Role::Quality, "patch", format!("/api/v1/customers/{id}")),
        (Role::Quality, "post", "/api/v1/contacts".into()),
        (Role::Quality, "post", "/api/v1/requests".into()),
        (Role::Agent, "post", format!("/api/v1/customers/{id}/merge")),
        (Role::Agent, "get", "/api/v1/audit".into()),
        (Role::Supervisor, "get", "/api/v1/audit".into()),
        (Role::Quality, "get", "/api/v1/audit".into()),
        (Role::Agent, "get", "/api/v1/advisors".into()),
        (Role::Agent, "post", "/api/v1/advisors".into()),
        (Role::Quality, "get", "/api/v1/events/calls".into()),
        (Role::Quality, "get", "/api/v1/callbacks".into()),
        (Role::Quality, "get", "/api/v1/queues".into()),
    ];
    for (role, method, path) in forbidden {
        let (status, body) = call(&app, method, path, Some(app.token(*role))).await;
        assert_eq!(status, 403, "{role} {method} {path}: {body}");
        assert_eq!(body["error"]["code"], "forbidden");
    }
    let (status, _) = app.get(Role::Quality, "/api/v1/requests").await;
    assert_eq!(status, 200, "quality staff read requests");
    let (status, _) = app.get(Role::Admin, "/api/v1/audit").await;
    assert_eq!(status, 200);
    assert_eq!(app.count("customers").await, 1);
    app.stop().await;
}

async fn reads_and_writes_are_audited_and_the_log_is_append_only(backend: Backend) {
    let app = spawn_app(backend).await;
    let c = app
        .create_customer(json!({"given_name": "Jo", "phones": ["07700 900123"]}))
        .await;
    let id = c["id"].as_str().unwrap();
    let (s, _) = app
        .get(Role::Agent, &format!("/api/v1/customers/{id}"))
        .await;
    assert_eq!(s, 200);
    let (_, receipt) = app
        .post(
            Role::Agent,
            "/api/v1/contacts",
            json!({"channel": "sms", "external_id": "SM1",
            "from": "07700 900123", "to": "60000", "content": "Hi"}),
        )
        .await;
    let reference = receipt["reference"].as_str().unwrap();
    let (s, req) = app
        .get(Role::Quality, &format!("/api/v1/requests/{reference}"))
        .await;
    assert_eq!(s, 200);

    let (s, entries) = app
        .get(
            Role::Admin,
            &format!("/api/v1/audit?entity=customer&entity_id={id}"),
        )
        .await;
    assert_eq!(s, 200);
    let entries = entries.as_array().unwrap();
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert!(
        actions.contains(&("create", "staff:agent-user")),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("read", "staff:agent-user")),
        "{actions:?}"
    );
    let read = entries.iter().find(|e| e["action"] == "read").unwrap();
    assert_eq!(read["source"], "127.0.0.1");
    assert_eq!(read["actor_role"], "agent");
    assert!(read["at"].is_string());

    let (_, entries) = app
        .get(
            Role::Admin,
            &format!(
                "/api/v1/audit?entity=request&entity_id={}",
                req["id"].as_str().unwrap()
            ),
        )
        .await;
    let actions: BTreeSet<(String, String)> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().into(),
                e["actor"].as_str().unwrap().into(),
            )
        })
        .collect();
    // A contact recorded by staff is on record as theirs, not the channel's.
    for expected in [
        ("create", "staff:agent-user"),
        ("intake", "staff:agent-user"),
        ("read", "staff:quality-user"),
    ] {
        assert!(
            actions.contains(&(expected.0.into(), expected.1.into())),
            "{expected:?} in {actions:?}"
        );
    }

    // Not even a direct SQL statement may rewrite or remove the audit log.
    let n = app.count("audit_log").await;
    assert!(
        sqlx::query("UPDATE audit_log SET actor = 'someone else'")
            .execute(app.store.pool())
            .await
            .is_err()
    );
    assert!(
        sqlx::query("DELETE FROM audit_log")
            .execute(app.store.pool())
            .await
            .is_err()
    );
    assert_eq!(app.count("audit_log").await, n);
    app.stop().await;
}

async fn operations_endpoints(backend: Backend) {
    let app = spawn_app(backend).await;
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (_, services) = app.get(Role::Agent, "/api/v1/services").await;
    let codes: Vec<&str> = services
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes.len(), 9, "{codes:?}");
    for code in [
        "waste",
        "highways",
        "blue_badges",
        "foi_sar",
        "customer_services",
    ] {
        assert!(codes.contains(&code), "{code}");
    }
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("contactd_http_requests_total"),
        "{metrics}"
    );
    assert!(metrics.contains("route=\"/api/v1/services\""), "{metrics}");
    // What a night shift pages on is there from the start, with its limits beside it.
    for name in [
        "contactd_calls_active",
        "contactd_calls_total",
        "contactd_calls_limit",
        "contactd_rtp_packets_received_total",
        "contactd_rtp_packets_lost_total",
        "contactd_rtp_packets_dropped_total{reason=\"wrong_source\"}",
        "contactd_recordings_written_total",
        "contactd_recordings_failed_total",
        "contactd_recordings_repaired_total",
        "contactd_recordings_swept_total",
        "contactd_recordings_sweep_errors_total",
        "contactd_intake_failures_total",
        "contactd_http_connections",
        "contactd_http_connections_limit",
        "contactd_sip_tcp_connections",
        "contactd_sip_tcp_connections_limit",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    app.stop().await;
}

/// Slowloris: clients that open connections and send headers a byte at a time (or
/// never) are cut after the header-read timeout, and no source holds more than its
/// share of connections meanwhile; readiness says when the listener is full.
async fn slow_and_idle_clients_cannot_hold_the_listener(backend: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = common::spawn_app_with(backend, |s| {
        s.http.max_connections = 4;
        s.http.max_connections_per_source = 3;
        s.http.header_read_timeout_seconds = 1;
    })
    .await;
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut c = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(c);
    }
    // A fourth from the same source is closed at once.
    let mut fourth = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let _ = fourth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), fourth.read(&mut buf))
        .await
        .expect("the refused connection is closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf[..n]));
    // Another source gets the last place, and is told the listener is full.
    let other = reqwest::Client::builder()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .build()
        .unwrap();
    let r = other.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    drop(other);
    // The slow clients are cut after the header-read timeout.
    for mut c in slow {
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(10), c.read_to_end(&mut rest))
                .await;
        assert!(
            read.is_ok(),
            "a client that never finished its headers is still connected"
        );
        assert!(
            !String::from_utf8_lossy(&rest).contains("200 OK"),
            "a request without its end was served"
        );
    }
    // And the listener serves again.
    let mut ready = false;
    for _ in 0..100 {
        let r = app.client.get(app.url("/readyz")).send().await.unwrap();
        if r.status() == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ready, "the listener did not recover");
}

async fn metrics_can_require_a_token(backend: Backend) {
    let app = common::spawn_app_with(backend, |s| {
        s.http.metrics_token = contactd::configuration::Secret::new("scrape-secret");
    })
    .await;
    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("scrape-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("contactd_"));
}
