//! The email channel polling a real IMAP server (Dovecot): messages fetched by UID,
//! stored once however often they are seen, marked seen only after they are stored,
//! and senders proven only by the provider's own Authentication-Results.

mod common;

use common::dns::LocalDns;
use common::email::swaks;
use common::imap::{
    Dovecot, DovecotOptions, OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET, OAuthProvider, PASSWORD,
};
use common::tls::TestCertificates;
use common::{TestApp, spawn_app_with};
use contactd::configuration::{Backend, Secret};
use contactd::domain::Role;
use serde_json::Value;

on_both_backends!(
    fetched_mail_is_stored_once_and_only_then_marked_seen,
    the_same_message_by_smtp_and_imap_is_one_contact,
    fetched_mail_can_be_moved_and_needs_no_message_id,
    a_refused_sign_in_is_counted_for_alerting,
    xoauth2_tokens_are_refreshed_and_rotated_and_a_revoked_grant_raises_the_alert,
    imaps_with_the_councils_ca_and_a_real_uidvalidity_reset,
);

async fn imap_app(backend: Backend, dovecot: &Dovecot, dns: &LocalDns) -> TestApp {
    imap_app_with(backend, dovecot, dns, |_| {}).await
}

async fn imap_app_with(
    backend: Backend,
    dovecot: &Dovecot,
    dns: &LocalDns,
    adjust: impl FnOnce(&mut contactd::configuration::Settings),
) -> TestApp {
    spawn_app_with(backend, |s| {
        s.email.from = "Council <contact@council.example>".into();
        s.email.domains = vec!["council.example".into()];
        s.email.smtp_listen = "127.0.0.1:0".parse().unwrap();
        s.email.dns_resolver = dns.addr.to_string();
        s.email.imap_url = dovecot.url();
        s.email.imap_password = Secret::new(PASSWORD);
        s.email.imap_poll_seconds = 1;
        s.email.imap_trusted_authserv_id = "mx.provider.test".into();
        adjust(s);
    })
    .await
}

fn message(id: &str, from: &str, subject: &str, authentication: &str) -> String {
    format!(
        "{authentication}From: {from}\r\nTo: contact@council.example\r\nSubject: {subject}\r\n\
         Message-ID: <{id}>\r\nDate: Tue, 24 Nov 2026 09:00:00 +0000\r\n\r\n{subject}: details inside.\r\n"
    )
}

async fn requests(app: &TestApp) -> Vec<Value> {
    let (_, list) = app.get(Role::Agent, "/api/v1/requests").await;
    list["items"].as_array().unwrap().clone()
}

async fn fetched_mail_is_stored_once_and_only_then_marked_seen(backend: Backend) {
    let dovecot = Dovecot::start().await;
    let dns = LocalDns::start(&[]).await;
    // Two messages waiting before the daemon starts (three days offline, say).
    let proven = "Authentication-Results: mx.provider.test; spf=pass smtp.mailfrom=example.org; dmarc=pass header.from=example.org\r\n";
    dovecot
        .append(&message(
            "i1@example.org",
            "ann@example.org",
            "Bins",
            proven,
        ))
        .await;
    dovecot
        .append(&message("i2@example.org", "bob@example.net", "Lights", ""))
        .await;
    let app = imap_app(backend, &dovecot, &dns).await;
    app.until_count("contacts", 2).await;
    let flags = dovecot.flags().await;
    assert_eq!(flags.matches("\\\\Seen").count(), 2, "{flags}");

    // New mail while it runs: IDLE brings it in.
    dovecot
        .append(&message("i3@example.org", "cat@example.org", "Noise", ""))
        .await;
    app.until_count("contacts", 3).await;

    // The folder renumbered (a UIDVALIDITY reset), or a crash between committing and
    // flagging: everything is fetched again and none of it is stored twice.
    sqlx::query("UPDATE mailbox_positions SET uid_validity = 1, last_uid = 0")
        .execute(app.store.pool())
        .await
        .unwrap();
    dovecot
        .append(&message("i4@example.org", "dan@example.org", "Parking", ""))
        .await;
    app.until_count("contacts", 4).await;
    app.until_count("mailbox_positions WHERE last_uid = 4", 1)
        .await;
    assert_eq!(app.count("contacts").await, 4, "nothing twice");
    assert_eq!(requests(&app).await.len(), 4);

    // Ann's sender is proven by the provider's own verdict, so her subject tag joins
    // her request; Bob's tag, under a forged verdict below the provider's, does not.
    let anns = requests(&app)
        .await
        .into_iter()
        .find(|r| r["summary"].as_str().unwrap().starts_with("Subject: Bins"))
        .expect("Ann's request");
    let reference = anns["reference"].as_str().unwrap().to_string();
    let tagged = format!("Re: [{reference}]");
    dovecot
        .append(&message(
            "i5@example.org",
            "ann@example.org",
            &tagged,
            proven,
        ))
        .await;
    let forged = format!(
        "Authentication-Results: mx.provider.test; dmarc=fail header.from=example.org\r\n{proven}"
    );
    dovecot
        .append(&message(
            "i6@example.org",
            "ann@example.org",
            &tagged,
            &forged,
        ))
        .await;
    app.until_count("contacts", 6).await;
    let (_, timeline) = app
        .get(
            Role::Agent,
            &format!("/api/v1/requests/{reference}/timeline"),
        )
        .await;
    let contacts = timeline
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "contact")
        .count();
    assert_eq!(
        contacts, 2,
        "the proven reply joined, the forged one did not"
    );
    assert_eq!(
        app.count("service_requests WHERE identity_review = 1")
            .await,
        1,
        "the forged one is held for staff"
    );
    app.stop().await;
}

async fn the_same_message_by_smtp_and_imap_is_one_contact(backend: Backend) {
    let dovecot = Dovecot::start().await;
    let dns = LocalDns::start(&[]).await;
    let app = imap_app(backend, &dovecot, &dns).await;
    let (ok, transcript) = swaks(
        app.smtp.unwrap(),
        &[
            "--from",
            "eve@example.org",
            "--to",
            "contact@council.example",
            "--header",
            "Subject: Tree down",
            "--header",
            "Message-Id: <both@example.org>",
            "--body",
            "A tree is down on Oak Lane.",
        ],
    )
    .await;
    assert!(ok, "{transcript}");
    assert_eq!(app.count("contacts").await, 1);
    // The council's mailbox also received it (a copy routed to both).
    dovecot
        .append(&message(
            "both@example.org",
            "eve@example.org",
            "Tree down",
            "",
        ))
        .await;
    dovecot
        .append(&message(
            "after@example.org",
            "eve@example.org",
            "And another",
            "",
        ))
        .await;
    app.until_count("mailbox_positions WHERE last_uid = 2", 1)
        .await;
    assert_eq!(app.count("contacts").await, 2, "the copy was recognised");
    app.stop().await;
}

async fn fetched_mail_can_be_moved_and_needs_no_message_id(backend: Backend) {
    let dovecot = Dovecot::start().await;
    dovecot.create("Processed").await;
    let dns = LocalDns::start(&[]).await;
    // No Message-ID: the message is known by its bytes.
    let bare =
        "From: fay@example.org\r\nTo: contact@council.example\r\nSubject: No id\r\n\r\nHello.\r\n";
    dovecot.append(bare).await;
    dovecot.append(bare).await;
    let app = imap_app_with(backend, &dovecot, &dns, |s| {
        s.email.imap_move_to = "Processed".into();
    })
    .await;
    app.until_count("mailbox_positions WHERE last_uid = 2", 1)
        .await;
    assert_eq!(
        app.count("contacts").await,
        1,
        "the same bytes twice are one contact"
    );
    assert_eq!(dovecot.count("INBOX").await, 0, "moved out of the inbox");
    assert_eq!(dovecot.count("Processed").await, 2);
    app.stop().await;
}

async fn a_refused_sign_in_is_counted_for_alerting(backend: Backend) {
    let dovecot = Dovecot::start().await;
    let dns = LocalDns::start(&[]).await;
    let app = imap_app_with(backend, &dovecot, &dns, |s| {
        s.email.imap_password = Secret::new("expired-password");
    })
    .await;
    // The first attempt is at once: its refusal is on /metrics for the alert rule.
    app.until_metric("contactd_imap_signin_failures_total", |n| n >= 1.0)
        .await;
    app.until_metric("contactd_imap_signed_in", |v| v == 0.0)
        .await;
    app.stop().await;
}

async fn xoauth2_tokens_are_refreshed_and_rotated_and_a_revoked_grant_raises_the_alert(
    backend: Backend,
) {
    let provider = OAuthProvider::start("R-first").await;
    let dovecot = Dovecot::start_with(DovecotOptions {
        oauth_introspection_url: Some(provider.url("/introspect")),
        ..DovecotOptions::default()
    })
    .await;
    let dns = LocalDns::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let refresh_file = dir.path().join("refresh-token");
    std::fs::write(&refresh_file, "R-first\n").unwrap();
    let app = imap_app_with(backend, &dovecot, &dns, |s| {
        s.email.imap_password = Secret::new("");
        s.email.imap_oauth_token_url = provider.url("/token");
        s.email.imap_oauth_client_id = OAUTH_CLIENT_ID.into();
        s.email.imap_oauth_client_secret = Secret::new(OAUTH_CLIENT_SECRET);
        s.email.imap_oauth_refresh_token_file = refresh_file.display().to_string();
    })
    .await;
    let saved = || std::fs::read_to_string(&refresh_file).unwrap();

    // Signed in with a refreshed access token; the rotated refresh token is saved
    // (the first one is already dead at the provider).
    dovecot
        .append(&message("o1@example.org", "ann@example.org", "Bins", ""))
        .await;
    app.until_count("contacts", 1).await;
    assert_eq!(provider.refreshes().await, 1);
    let rotated = saved();
    assert!(
        rotated.starts_with("R-") && rotated.trim() != "R-first",
        "{rotated}"
    );
    app.until_metric("contactd_imap_oauth_grant_valid", |v| v == 1.0)
        .await;

    // The access token expires mid-session and the provider ends the session: the
    // poller reconnects, its held token is refused, it refreshes with the rotated
    // refresh token and carries on.
    provider.expire_access_tokens().await;
    dovecot.kick().await;
    dovecot
        .append(&message("o2@example.org", "bob@example.org", "Lights", ""))
        .await;
    app.until_count("contacts", 2).await;
    assert_eq!(provider.refreshes().await, 2);
    assert_ne!(saved(), rotated, "the second rotation is saved too");

    // The grant is revoked (a password change, an admin): invalid_grant raises the
    // alert at once, and nothing is fetched.
    provider.revoke().await;
    dovecot.kick().await;
    app.until_metric("contactd_imap_oauth_grant_valid", |v| v == 0.0)
        .await;
    app.until_metric("contactd_imap_signed_in", |v| v == 0.0)
        .await;
    assert_eq!(app.count("contacts").await, 2);
    app.stop().await;
}

async fn imaps_with_the_councils_ca_and_a_real_uidvalidity_reset(backend: Backend) {
    let certificates = TestCertificates::new();
    let dovecot = Dovecot::start_with(DovecotOptions {
        tls: Some((certificates.certificate.clone(), certificates.key.clone())),
        ..DovecotOptions::default()
    })
    .await;
    let dns = LocalDns::start(&[]).await;
    dovecot.create("Council").await;
    dovecot
        .append_to(
            "Council",
            &message("v1@example.org", "ann@example.org", "Bins", ""),
        )
        .await;
    dovecot
        .append_to(
            "Council",
            &message("v2@example.org", "bob@example.org", "Lights", ""),
        )
        .await;
    let app = imap_app_with(backend, &dovecot, &dns, |s| {
        s.email.imap_url = dovecot.tls_url("Council");
        s.email.imap_ca_file = certificates.ca.display().to_string();
    })
    .await;
    app.until_count("contacts", 2).await;
    let before = dovecot.uid_validity("Council").await;

    // The folder is deleted and made again (a migration, a restore): new UIDVALIDITY,
    // UIDs from 1 again. One old message comes back, two are new; the new ones have
    // UIDs at or below the old position, so only a poller that notices the reset
    // finds them, and only one that recognises messages stores the old one once.
    dovecot.delete("Council").await;
    dovecot.create("Council").await;
    dovecot
        .append_to(
            "Council",
            &message("v1@example.org", "ann@example.org", "Bins", ""),
        )
        .await;
    dovecot
        .append_to(
            "Council",
            &message("v3@example.org", "cat@example.org", "Noise", ""),
        )
        .await;
    dovecot
        .append_to(
            "Council",
            &message("v4@example.org", "dan@example.org", "Parking", ""),
        )
        .await;
    assert_ne!(dovecot.uid_validity("Council").await, before);
    app.until_count("contacts", 4).await;
    app.until_count("mailbox_positions WHERE last_uid = 3", 1)
        .await;
    assert_eq!(app.count("contacts").await, 4, "the old message not twice");
    app.stop().await;
}
