//! Advisors' phones register with the daemon: independent user agents (sipp with its
//! own MD5 digest; PJSIP with SHA-256) against the registrar, on both backends.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{TestApp, sipp};
use contactd::configuration::Backend;
use contactd::domain::Role;
use contactd::scheduler::TestClock;
use contactd_sip::config::SipTransport;
use serde_json::{Value, json};

async fn app(backend: Backend) -> (TestApp, Arc<TestClock>) {
    let clock = TestClock::new();
    let app = common::spawn_app_with_clock(backend, clock.clone(), |s| {
        common::listen_for_calls(s, "10.0.0.0/8");
        s.sip.registrar = true;
        s.sip.auth_failures_per_source = 3;
    })
    .await;
    (app, clock)
}

async fn add_advisor(app: &TestApp, username: &str, algorithm: &str) -> (String, String) {
    let (status, body) = app
        .post(
            Role::Supervisor,
            "/api/v1/advisors",
            json!({"name": format!("Advisor {username}"), "sip_username": username,
                   "skills": ["council_tax"], "digest_algorithm": algorithm}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["digest_algorithm"], algorithm);
    (
        body["id"].as_str().unwrap().to_string(),
        body["sip_password"].as_str().unwrap().to_string(),
    )
}

async fn devices(app: &TestApp, username: &str) -> Vec<Value> {
    let (status, body) = app.get(Role::Supervisor, "/api/v1/advisors").await;
    assert_eq!(status, 200, "{body}");
    let advisor = body
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["sip_username"] == username)
        .unwrap_or_else(|| panic!("{username} listed: {body}"));
    assert!(advisor.get("ha1").is_none() && advisor.get("sip_password").is_none());
    advisor["devices"].as_array().unwrap().clone()
}

/// sipp registers as `user`; `final_status` is what the authenticated REGISTER gets.
async fn sipp_register(
    app: &TestApp,
    from: &str,
    user: &str,
    password: &str,
    final_status: u16,
) -> sipp::SippRun {
    let dir = tempfile::tempdir().unwrap();
    let text = sipp::scenario(
        "uac_register.xml",
        &[
            ("USER", user),
            ("PASSWORD", password),
            ("EXPIRES", "120"),
            ("FINAL", &final_status.to_string()),
        ],
    );
    let target = app.sip_addr(SipTransport::Udp);
    sipp::run_from(from, dir.path(), &text, target, 1, "u1").await
}

fn pjsip_register(target: SocketAddr, user: &str, password: &str, transport: &str) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/pjsua_phone.py");
    let uri = match transport {
        "tcp" => format!("sip:{target};transport=tcp"),
        _ => format!("sip:{target}"),
    };
    let out = Command::new("python3")
        .arg(script)
        .args([&uri, user, password, transport, "300"])
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "PJSIP's phone gave no result (scripts/test installs pjsua2-python): {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

async fn a_phone_registers_with_md5_and_is_unreachable_once_it_expires(backend: Backend) {
    let (app, clock) = app(backend).await;
    let (_, password) = add_advisor(&app, "alice", "MD5").await;
    let run = sipp_register(&app, "127.0.0.1", "alice", &password, 200).await;
    assert!(
        run.success,
        "sipp registers with its MD5 digest: {}",
        run.output
    );
    let bound = devices(&app, "alice").await;
    assert_eq!(bound.len(), 1, "{bound:?}");
    assert!(
        bound[0]["contact"]
            .as_str()
            .unwrap()
            .starts_with("sip:alice@127.0.0.1:")
    );
    assert!(
        bound[0]["source"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(bound[0]["transport"], "udp");
    assert_eq!(bound[0]["user_agent"], "sipp phone");
    // The registration asked for 120 s: past it, the phone is no longer reachable.
    clock.advance(Duration::from_secs(121));
    assert!(devices(&app, "alice").await.is_empty());
    app.stop().await;
}

async fn a_softphone_registers_with_sha256_over_udp_and_tcp(backend: Backend) {
    let (app, _clock) = app(backend).await;
    let (_, password) = add_advisor(&app, "bob", "SHA-256").await;
    let udp = pjsip_register(app.sip_addr(SipTransport::Udp), "bob", &password, "udp");
    assert_eq!(udp["status"], 200, "{udp}");
    // PJSIP reports the expiry less its own refresh margin.
    let expires = udp["expires"].as_u64().unwrap();
    assert!((240..=300).contains(&expires), "{udp}");
    let tcp = pjsip_register(app.sip_addr(SipTransport::Tcp), "bob", &password, "tcp");
    assert_eq!(tcp["status"], 200, "{tcp}");
    let bound = devices(&app, "bob").await;
    assert_eq!(bound.len(), 2, "two devices of one advisor: {bound:?}");
    let mut transports: Vec<&str> = bound
        .iter()
        .map(|d| d["transport"].as_str().unwrap())
        .collect();
    transports.sort();
    assert_eq!(transports, ["tcp", "udp"]);
    // A wrong password from PJSIP: 403, and the bindings stay as they were.
    let wrong = pjsip_register(app.sip_addr(SipTransport::Udp), "bob", "not-it", "udp");
    assert_eq!(wrong["status"], 403, "{wrong}");
    assert_eq!(devices(&app, "bob").await.len(), 2);
    app.stop().await;
}

async fn wrong_passwords_get_403_and_the_source_is_locked_out(backend: Backend) {
    let (app, _clock) = app(backend).await;
    let (id, password) = add_advisor(&app, "carol", "MD5").await;
    // The limit is 3 wrong answers per source: each is 401, then 403.
    for _ in 0..3 {
        let run = sipp_register(&app, "127.0.0.3", "carol", "guess", 403).await;
        assert!(run.success, "401 then 403: {}", run.output);
    }
    // Now even the right password from that source is refused…
    let dir = tempfile::tempdir().unwrap();
    let locked = sipp::scenario("uac_register_locked.xml", &[("USER", "carol")]);
    let run = sipp::run_from(
        "127.0.0.3",
        dir.path(),
        &locked,
        app.sip_addr(SipTransport::Udp),
        1,
        "u1",
    )
    .await;
    assert!(
        run.success,
        "a locked-out source gets 403 at once: {}",
        run.output
    );
    // …while another source is not affected.
    let run = sipp_register(&app, "127.0.0.4", "carol", &password, 200).await;
    assert!(run.success, "{}", run.output);
    // (The metrics recorder is one per test process: other tests count too.)
    assert!(app.metric("contactd_sip_auth_failures_total").await >= Some(3.0));
    // An unknown username is challenged with the default algorithm (SHA-256, which
    // sipp cannot answer: PJSIP here) and fails like a wrong password.
    let unknown = pjsip_register(app.sip_addr(SipTransport::Udp), "nobody", "guess", "udp");
    assert_eq!(unknown["status"], 403, "{unknown}");

    // Rotation: the old password stops working at once, the new one works.
    let (status, rotated) = app
        .post(
            Role::Admin,
            &format!("/api/v1/advisors/{id}/credential"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new_password = rotated["sip_password"].as_str().unwrap();
    assert_ne!(new_password, password);
    let run = sipp_register(&app, "127.0.0.6", "carol", &password, 403).await;
    assert!(run.success, "the old password: {}", run.output);
    let run = sipp_register(&app, "127.0.0.6", "carol", new_password, 200).await;
    assert!(run.success, "the new password: {}", run.output);
    // Every change to an advisor's credential is in the audit log.
    let (_, audit) = app
        .get(
            Role::Admin,
            &format!("/api/v1/audit?entity=advisor&entity_id={id}"),
        )
        .await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .or(audit.as_array())
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"create") && actions.contains(&"update"),
        "{audit}"
    );
    app.stop().await;
}

async fn only_supervisors_and_admins_manage_advisors_and_input_is_checked(backend: Backend) {
    let (app, _clock) = app(backend).await;
    for role in [Role::Agent, Role::Quality] {
        let (status, _) = app.get(role, "/api/v1/advisors").await;
        assert_eq!(status, 403);
        let (status, _) = app
            .post(
                role,
                "/api/v1/advisors",
                json!({"name": "x", "sip_username": "x"}),
            )
            .await;
        assert_eq!(status, 403);
    }
    for (body, field) in [
        (json!({"name": "", "sip_username": "dave"}), "name"),
        (
            json!({"name": "Dave", "sip_username": "dave smith"}),
            "sip_username",
        ),
        (
            json!({"name": "Dave", "sip_username": "dave\"x"}),
            "sip_username",
        ),
        (
            json!({"name": "Dave", "sip_username": "dave", "digest_algorithm": "SHA-1"}),
            "digest_algorithm",
        ),
    ] {
        let (status, answer) = app.post(Role::Admin, "/api/v1/advisors", body).await;
        assert_eq!(status, 422, "{answer}");
        assert!(answer.to_string().contains(field), "{answer}");
    }
    add_advisor(&app, "dave", "SHA-256").await;
    let (status, _) = app
        .post(
            Role::Admin,
            "/api/v1/advisors",
            json!({"name": "Other", "sip_username": "dave"}),
        )
        .await;
    assert_eq!(status, 409, "a username is one advisor's");
    app.stop().await;
}

async fn strangers_may_register_but_never_call_in(backend: Backend) {
    // With the registrar on, a REGISTER from anywhere is challenged (not refused by
    // address), but everything else from outside the trunks is still 403.
    let (app, _clock) = app(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let options = sipp::scenario("uac_options.xml", &[])
        .replace("<recv response=\"200\"/>", "<recv response=\"403\"/>");
    let run = sipp::run(
        dir.path(),
        &options,
        app.sip_addr(SipTransport::Udp),
        1,
        "u1",
    )
    .await;
    assert!(
        run.success,
        "OPTIONS from outside the trunks: {}",
        run.output
    );
    app.stop().await;
}

on_both_backends!(
    a_phone_registers_with_md5_and_is_unreachable_once_it_expires,
    a_softphone_registers_with_sha256_over_udp_and_tcp,
    wrong_passwords_get_403_and_the_source_is_locked_out,
    only_supervisors_and_admins_manage_advisors_and_input_is_checked,
    strangers_may_register_but_never_call_in,
);
