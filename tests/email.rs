//! The email channel over real SMTP: swaks sends into the daemon's receiver, the
//! daemon's mail goes out through a real SMTP server (aiosmtpd) standing in for the
//! council's relay.

mod common;

use common::dns::LocalDns;
use common::email::{Received, SmtpSink, swaks};
use std::sync::Arc;
use std::time::Duration;

use common::{TestApp, spawn_app_with_clock};
use contactd::configuration::{Backend, Secret};
use contactd::domain::Role;
use contactd::scheduler::{Clock, SystemClock, TestClock};
use serde_json::{Value, json};

on_both_backends!(
    a_new_email_opens_a_request_and_replies_thread_back,
    subject_tags_join_only_for_proven_owners_and_the_rest_are_flagged,
    automatic_mail_is_stored_but_never_answered,
    a_bounce_marks_the_sent_message_failed,
    oversized_unknown_and_unstorable_mail_is_refused_and_nothing_half_stored,
    staff_replies_thread_into_the_residents_mail,
    starttls_is_offered_with_a_certificate,
    attachments_are_kept_and_every_download_audited,
    a_relay_that_refuses_for_now_is_tried_again,
    a_relay_that_keeps_refusing_leaves_a_dead_letter_for_staff,
    a_dkim_signature_alone_proves_a_sender,
    a_mistyped_reference_still_follows_the_reply_token,
    floods_from_one_source_and_too_many_recipients_are_refused,
    copied_in_strangers_are_flagged_and_replies_to_a_bulk_mail_stay_apart,
);

const COUNCIL: &str = "contact@council.example";
/// A conversation index as Outlook starts one: 0x01, a time, a GUID.
const OUTLOOK_INDEX: &str = "AdnI2Z3H8n0zKxQ4Rk2mYQmDHGVfvw==";

/// The DNS the tests' senders have: example.org publishes SPF for this machine and a
/// DMARC policy, so its mail passes DMARC; strict.example publishes SPF that allows
/// nobody, so its mail fails; the rest publish nothing.
const DNS: &[(&str, &str)] = &[
    ("example.org", "v=spf1 ip4:127.0.0.1 -all"),
    ("_dmarc.example.org", "v=DMARC1; p=reject"),
    ("strict.example", "v=spf1 -all"),
    ("_dmarc.strict.example", "v=DMARC1; p=reject"),
];

async fn email_app(
    backend: Backend,
    adjust: impl FnOnce(&mut contactd::configuration::Settings),
) -> (TestApp, SmtpSink, LocalDns) {
    let sink = SmtpSink::start().await;
    let dns = LocalDns::start(DNS).await;
    let app = email_app_with(backend, &sink, &dns, adjust).await;
    (app, sink, dns)
}

/// The daemon receiving for council.example, sending through `relay`, asking `dns`.
async fn email_app_with(
    backend: Backend,
    relay: &SmtpSink,
    dns: &LocalDns,
    adjust: impl FnOnce(&mut contactd::configuration::Settings),
) -> TestApp {
    email_app_on(backend, Arc::new(SystemClock), relay, dns, adjust).await
}

/// `email_app_with`, the outbox on `clock`.
async fn email_app_on(
    backend: Backend,
    clock: Arc<dyn Clock>,
    relay: &SmtpSink,
    dns: &LocalDns,
    adjust: impl FnOnce(&mut contactd::configuration::Settings),
) -> TestApp {
    let url = relay.url();
    spawn_app_with_clock(backend, clock, |s| {
        s.email.dns_resolver = dns.addr.to_string();
        s.email.smtp_listen = "127.0.0.1:0".parse().unwrap();
        s.email.domains = vec!["council.example".into()];
        s.email.from = format!("Council <{COUNCIL}>");
        s.email.relay_url = Secret::new(url);
        adjust(s);
    })
    .await
}

/// Sends one message with swaks; asserts the daemon answered 250.
async fn send(app: &TestApp, from: &str, to: &str, headers: &[(&str, &str)], body: &str) {
    let (ok, transcript) = send_raw(app, from, to, headers, body).await;
    assert!(ok, "swaks failed:\n{transcript}");
}

async fn send_raw(
    app: &TestApp,
    from: &str,
    to: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (bool, String) {
    let mut args: Vec<String> = vec![
        "--from".into(),
        from.into(),
        "--to".into(),
        to.into(),
        "--body".into(),
        body.into(),
    ];
    for (k, v) in headers {
        args.push("--header".into());
        args.push(format!("{k}: {v}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    swaks(app.smtp.expect("email is on"), &args).await
}

async fn requests(app: &TestApp) -> Vec<Value> {
    let (_, list) = app.get(Role::Agent, "/api/v1/requests").await;
    list["items"].as_array().unwrap().clone()
}

async fn contacts_on(app: &TestApp, reference: &str) -> usize {
    let (_, timeline) = app
        .get(
            Role::Agent,
            &format!("/api/v1/requests/{reference}/timeline"),
        )
        .await;
    timeline
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "contact")
        .count()
}

/// The reply token the acknowledgement carries in its Reply-To plus-address.
fn reply_address(ack: &Received) -> String {
    let reply_to = ack.header("Reply-To").expect("a Reply-To");
    reply_to.trim_matches(['<', '>']).to_string()
}

async fn a_new_email_opens_a_request_and_replies_thread_back(backend: Backend) {
    let (app, mut sink, _dns) = email_app(backend, |_| {}).await;
    send(
        &app,
        "ann@example.org",
        COUNCIL,
        &[
            ("Subject", "Bins not collected"),
            ("Message-Id", "<first@example.org>"),
        ],
        "Our bins were missed on Tuesday.",
    )
    .await;
    let opened = requests(&app).await;
    assert_eq!(opened.len(), 1);
    let reference = opened[0]["reference"].as_str().unwrap().to_string();
    assert_eq!(
        opened[0]["identity_review"], false,
        "a new resident, not a doubt"
    );

    // The acknowledgement arrives through the relay, in the resident's thread.
    let ack = sink.next().await;
    assert_eq!(ack.rcpt_tos, vec!["ann@example.org"]);
    assert!(
        ack.header("Subject").unwrap().contains(&reference),
        "{}",
        ack.data
    );
    assert_eq!(
        ack.header("Auto-Submitted").as_deref(),
        Some("auto-replied")
    );
    assert_eq!(
        ack.header("In-Reply-To").as_deref(),
        Some("<first@example.org>")
    );
    assert!(ack.data.contains("multipart/alternative"), "text and HTML");
    assert!(
        ack.mail_from.starts_with("contact+bounce-") && ack.mail_from.ends_with("@council.example"),
        "a VERP envelope sender: {}",
        ack.mail_from
    );
    let ack_id = ack.header("Message-ID").expect("a Message-ID");
    let reply_to = reply_address(&ack);
    assert!(reply_to.starts_with("contact+r"), "{reply_to}");

    // A reply by its thread headers joins the request (and is not acknowledged).
    send(
        &app,
        "ann@example.org",
        COUNCIL,
        &[
            ("Subject", &format!("Re: Your reference {reference}")),
            ("Message-Id", "<second@example.org>"),
            ("In-Reply-To", &ack_id),
            ("References", &format!("<first@example.org> {ack_id}")),
        ],
        "Thanks. Still waiting.",
    )
    .await;
    // A reply to the reply-token address with no thread headers joins it too.
    send(
        &app,
        "ann@example.org",
        &reply_to,
        &[
            ("Subject", "one more thing"),
            ("Message-Id", "<third@example.org>"),
        ],
        "And the recycling.",
    )
    .await;
    assert_eq!(requests(&app).await.len(), 1, "both replies joined");
    assert_eq!(contacts_on(&app, &reference).await, 3);

    // The same message delivered twice is one contact.
    send(
        &app,
        "ann@example.org",
        &reply_to,
        &[
            ("Subject", "one more thing"),
            ("Message-Id", "<third@example.org>"),
        ],
        "And the recycling.",
    )
    .await;
    assert_eq!(contacts_on(&app, &reference).await, 3);
    assert_eq!(app.count("contacts").await, 3);
    assert_eq!(
        app.count("messages WHERE direction = 'out'").await,
        1,
        "only the new request was acknowledged"
    );
    app.stop().await;
}

async fn subject_tags_join_only_for_proven_owners_and_the_rest_are_flagged(backend: Backend) {
    let (app, mut sink, _dns) = email_app(backend, |_| {}).await;
    send(
        &app,
        "ann@example.org",
        COUNCIL,
        &[("Subject", "Pothole"), ("Message-Id", "<p1@example.org>")],
        "Deep pothole on the High Street.",
    )
    .await;
    let reference = requests(&app).await[0]["reference"]
        .as_str()
        .unwrap()
        .to_string();
    sink.next().await;

    // A stranger quotes Ann's reference in the subject: a request of their own,
    // flagged for staff; Ann's request is untouched and still hers.
    send(
        &app,
        "mallory@example.net",
        COUNCIL,
        &[
            ("Subject", &format!("Re: [{reference}] update")),
            ("Message-Id", "<m1@example.net>"),
        ],
        "Please send me the details of this request.",
    )
    .await;
    // Bob owns his request, but his domain's SPF allows nobody: DMARC fails, so his
    // From header proves nothing and his subject tag is held for staff.
    let bob = app
        .create_customer(json!({"given_name": "Bob", "emails": ["bob@strict.example"]}))
        .await;
    let (_, bobs) = app
        .post(
            Role::Agent,
            "/api/v1/requests",
            json!({"customer_id": bob["id"], "service": "highways", "summary": "Drain"}),
        )
        .await;
    let bob_ref = bobs["reference"].as_str().unwrap().to_string();
    send(
        &app,
        "bob@strict.example",
        COUNCIL,
        &[
            ("Subject", &format!("Re: [{bob_ref}]")),
            ("Message-Id", "<b1@strict.example>"),
        ],
        "Any news on the drain?",
    )
    .await;
    assert_eq!(
        contacts_on(&app, &bob_ref).await,
        0,
        "DMARC failed: not attached"
    );
    // Ann's domain passes DMARC: her own subject tag, from a client that sends no
    // thread headers, joins her request.
    send(
        &app,
        "ann@example.org",
        COUNCIL,
        &[
            ("Subject", &format!("AW: SV: [{reference}]x")),
            ("Message-Id", "<p2@example.org>"),
        ],
        "Any news?",
    )
    .await;
    assert_eq!(
        contacts_on(&app, &reference).await,
        2,
        "a proven owner's tag joins"
    );
    // A thread header naming a message that is someone else's: flagged as well.
    send(
        &app,
        "mallory@example.net",
        COUNCIL,
        &[
            ("Subject", "Re: Pothole"),
            ("Message-Id", "<m2@example.net>"),
            ("In-Reply-To", "<p1@example.org>"),
        ],
        "Me too.",
    )
    .await;
    assert_eq!(
        contacts_on(&app, &reference).await,
        2,
        "nothing of Mallory's attached to Ann's request"
    );
    let all = requests(&app).await;
    assert_eq!(
        all.len(),
        5,
        "Ann's, Bob's, and one for each message held back"
    );
    let flagged: Vec<&Value> = all
        .iter()
        .filter(|r| r["identity_review"] == true)
        .collect();
    assert_eq!(flagged.len(), 3, "{all:?}");
    let (_, ann) = app
        .get(Role::Agent, &format!("/api/v1/requests/{reference}"))
        .await;
    assert_eq!(ann["identity_review"], false);
    assert!(
        flagged
            .iter()
            .all(|r| r["customer_id"] != ann["customer_id"]),
        "a quoted reference never changes whose request it is: {all:?}"
    );
    app.stop().await;
}

async fn automatic_mail_is_stored_but_never_answered(backend: Backend) {
    let (app, mut sink, _dns) =
        email_app(backend, |s| s.email.max_acknowledgements_per_day = 2).await;
    // An out-of-office, a list message and a mailer-daemon: stored, never answered.
    send(
        &app,
        "away@example.org",
        COUNCIL,
        &[
            ("Subject", "Out of office"),
            ("Auto-Submitted", "auto-replied"),
        ],
        "I am away until Monday.",
    )
    .await;
    send(
        &app,
        "news@lists.example.org",
        COUNCIL,
        &[
            ("Subject", "Newsletter"),
            ("List-Id", "<news.lists.example.org>"),
        ],
        "This month's news.",
    )
    .await;
    send(
        &app,
        "MAILER-DAEMON@mx.example.org",
        COUNCIL,
        &[("Subject", "Undeliverable")],
        "failed",
    )
    .await;
    // Outlook marks ordinary mail with X-Auto-Response-Suppress: that is a person.
    send(
        &app,
        "cat@example.org",
        COUNCIL,
        &[
            ("Subject", "Noise at night"),
            ("X-Auto-Response-Suppress", "All"),
            ("Auto-Submitted", "no"),
        ],
        "Loud music every night.",
    )
    .await;
    assert_eq!(app.count("contacts").await, 4, "all four stored");
    let first = sink.next().await;
    assert_eq!(
        first.rcpt_tos,
        vec!["cat@example.org"],
        "only the person was answered"
    );

    // An auto-responder without the headers, ping-ponging: answered at most twice a day.
    for i in 0..4 {
        let subject = format!("Auto: thank you {i}");
        send(
            &app,
            "noreply@shop.example",
            COUNCIL,
            &[("Subject", &subject)],
            "Thanks for your mail.",
        )
        .await;
    }
    assert_eq!(
        app.count("messages WHERE direction = 'out' AND address = 'noreply@shop.example'")
            .await,
        2
    );
    assert_eq!(
        app.count("contacts").await,
        8,
        "every message is still kept"
    );
    app.stop().await;
}

async fn a_bounce_marks_the_sent_message_failed(backend: Backend) {
    let (app, mut sink, _dns) = email_app(backend, |_| {}).await;
    send(
        &app,
        "gone@example.org",
        COUNCIL,
        &[("Subject", "Hello")],
        "Hi",
    )
    .await;
    let reference = requests(&app).await[0]["reference"]
        .as_str()
        .unwrap()
        .to_string();
    let ack = sink.next().await;
    let (ok, transcript) = send_raw(
        &app,
        "<>",
        &ack.mail_from,
        &[
            (
                "From",
                "Mail Delivery System <MAILER-DAEMON@mx.example.org>",
            ),
            ("Subject", "Undelivered Mail Returned to Sender"),
            (
                "Content-Type",
                "multipart/report; report-type=delivery-status; boundary=\"b\"",
            ),
        ],
        "This is a MIME-encapsulated message.\n--b\nContent-Type: text/plain\n\n550 5.1.1 <gone@example.org>: user unknown\n--b--\n",
    )
    .await;
    assert!(ok, "{transcript}");
    let (_, timeline) = app
        .get(
            Role::Agent,
            &format!("/api/v1/requests/{reference}/timeline"),
        )
        .await;
    let message = timeline
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "message")
        .unwrap()["message"]
        .clone();
    assert_eq!(message["status"], "failed", "{message}");
    assert_eq!(requests(&app).await.len(), 1, "a bounce opens nothing");
    assert_eq!(app.count("contacts").await, 1);
    assert_eq!(app.count("contact_originals").await, 2, "but it is kept");
    app.stop().await;
}

async fn oversized_unknown_and_unstorable_mail_is_refused_and_nothing_half_stored(
    backend: Backend,
) {
    let (app, _sink, _dns) = email_app(backend, |s| s.email.max_message_bytes = 20_000).await;
    let big = "x".repeat(30_000);
    let (ok, transcript) = send_raw(
        &app,
        "ann@example.org",
        COUNCIL,
        &[("Subject", "big")],
        &big,
    )
    .await;
    assert!(!ok && transcript.contains("552"), "{transcript}");
    let (ok, transcript) = send_raw(
        &app,
        "ann@example.org",
        "someone@elsewhere.example",
        &[],
        "hi",
    )
    .await;
    assert!(!ok && transcript.contains("550"), "{transcript}");
    assert_eq!(app.count("contact_originals").await, 0);
    assert_eq!(app.count("contacts").await, 0);

    // The store fails: 451, and the sender's retry is stored once.
    let pool = app.store.pool();
    sqlx::query("ALTER TABLE contacts RENAME TO contacts_away")
        .execute(pool)
        .await
        .unwrap();
    let headers = [
        ("Subject", "Retry me"),
        ("Message-Id", "<retry@example.org>"),
    ];
    let (ok, transcript) = send_raw(&app, "ann@example.org", COUNCIL, &headers, "Hello").await;
    assert!(!ok && transcript.contains("451"), "{transcript}");
    sqlx::query("ALTER TABLE contacts_away RENAME TO contacts")
        .execute(pool)
        .await
        .unwrap();
    send(&app, "ann@example.org", COUNCIL, &headers, "Hello").await;
    send(&app, "ann@example.org", COUNCIL, &headers, "Hello").await;
    assert_eq!(app.count("contacts").await, 1);
    assert_eq!(app.count("contact_originals").await, 1);
    app.stop().await;
}

async fn staff_replies_thread_into_the_residents_mail(backend: Backend) {
    let (app, mut sink, _dns) = email_app(backend, |_| {}).await;
    send(
        &app,
        "dan@example.org",
        COUNCIL,
        &[
            ("Subject", "Blue badge renewal"),
            ("Message-Id", "<dan1@example.org>"),
            ("Thread-Index", OUTLOOK_INDEX),
        ],
        "When does my badge expire?",
    )
    .await;
    let reference = requests(&app).await[0]["reference"]
        .as_str()
        .unwrap()
        .to_string();
    let ack = sink.next().await;
    let (status, message) = app
        .post(
            Role::Agent,
            &format!("/api/v1/requests/{reference}/email"),
            json!({"body": "Your badge expires in March.\n\nRegards,\nThe contact centre"}),
        )
        .await;
    assert_eq!(status, 201, "{message}");
    assert_eq!(message["status"], "sent", "{message}");
    assert_eq!(message["channel"], "email");
    let reply = sink.next().await;
    assert_eq!(reply.rcpt_tos, vec!["dan@example.org"]);
    assert!(reply.header("Subject").unwrap().contains(&reference));
    assert_eq!(reply.header("Auto-Submitted"), None, "a person wrote it");
    let references = reply.header("References").unwrap();
    assert!(references.contains("<dan1@example.org>"), "{references}");
    // Outlook threads by Thread-Index: ours extends Dan's, a 5-byte block per reply.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let dans = b64.decode(OUTLOOK_INDEX).unwrap();
    let ours = b64.decode(reply.header("Thread-Index").unwrap()).unwrap();
    assert_eq!(&ours[..22], &dans[..], "the same conversation");
    assert_eq!(
        ours.len(),
        22 + 2 * 5,
        "after the acknowledgement's block, the reply's"
    );
    assert!(
        references.contains(&ack.header("Message-ID").unwrap()),
        "{references}"
    );

    // Dan answers the staff reply: it joins.
    let reply_id = reply.header("Message-ID").unwrap();
    send(
        &app,
        "dan@example.org",
        COUNCIL,
        &[("Subject", "Re: badge"), ("In-Reply-To", &reply_id)],
        "Thank you!",
    )
    .await;
    assert_eq!(contacts_on(&app, &reference).await, 2);
    app.stop().await;
}

async fn starttls_is_offered_with_a_certificate(backend: Backend) {
    let certificates = common::tls::TestCertificates::new();
    let (cert, key) = (&certificates.certificate, &certificates.key);
    let (app, _sink, _dns) = email_app(backend, |s| {
        s.email.tls_certificate = cert.display().to_string();
        s.email.tls_key = key.display().to_string();
    })
    .await;
    // --tls: swaks insists on STARTTLS, and fails if it is not offered or fails.
    let (ok, transcript) = swaks(
        app.smtp.unwrap(),
        &[
            "--tls",
            "--from",
            "ann@example.org",
            "--to",
            COUNCIL,
            "--header",
            "Subject: Over TLS",
            "--body",
            "Private.",
        ],
    )
    .await;
    assert!(ok, "{transcript}");
    assert_eq!(app.count("contacts").await, 1);
    // Commands pipelined behind STARTTLS, before the handshake, are thrown away.
    let mut raw = tokio::net::TcpStream::connect(app.smtp.unwrap())
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raw.write_all(b"EHLO x\r\nSTARTTLS\r\nMAIL FROM:<injected@example.org>\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains("220 2.0.0") {
        let n = raw.read(&mut buf).await.unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(
        !String::from_utf8_lossy(&seen).contains("2.1.0"),
        "the injected MAIL was not answered"
    );
    app.stop().await;
}

async fn attachments_are_kept_and_every_download_audited(backend: Backend) {
    let (app, _sink, _dns) = email_app(backend, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let photo = dir.path().join("fly tipping.jpg");
    let bytes: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&photo, &bytes).unwrap();
    let attach = format!("@{}", photo.display());
    let (ok, transcript) = swaks(
        app.smtp.unwrap(),
        &[
            "--from",
            "ann@example.org",
            "--to",
            COUNCIL,
            "--header",
            "Subject: Rubbish dumped",
            "--body",
            "Photo attached.",
            "--attach-type",
            "image/jpeg",
            "--attach",
            &attach,
        ],
    )
    .await;
    assert!(ok, "{transcript}");
    let reference = requests(&app).await[0]["reference"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, list) = app
        .get(
            Role::Agent,
            &format!("/api/v1/requests/{reference}/attachments"),
        )
        .await;
    assert_eq!(status, 200, "{list}");
    let files = list.as_array().unwrap();
    assert_eq!(files.len(), 1, "{list}");
    assert_eq!(files[0]["name"], "fly tipping.jpg");
    assert_eq!(files[0]["content_type"], "image/jpeg");
    assert_eq!(files[0]["size_bytes"], 20_000);
    let id = files[0]["id"].as_str().unwrap();

    let download = |role: Role| {
        let app = &app;
        async move {
            app.client
                .get(app.url(&format!("/api/v1/attachments/{id}")))
                .bearer_auth(app.token(role))
                .send()
                .await
                .unwrap()
        }
    };
    let got = download(Role::Agent).await;
    assert_eq!(got.status(), 200);
    assert_eq!(
        got.headers()["content-type"],
        "application/octet-stream",
        "never rendered"
    );
    assert_eq!(got.headers()["x-content-type-options"], "nosniff");
    assert!(
        got.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("fly%20tipping.jpg")
    );
    assert_eq!(got.bytes().await.unwrap().to_vec(), bytes);
    assert_eq!(
        download(Role::Quality).await.status(),
        403,
        "quality staff review calls, not files"
    );
    assert_eq!(
        app.count("audit_log WHERE entity = 'attachment' AND action = 'download'")
            .await,
        1,
        "the download is on record"
    );
    // The same file again (another message) is stored once.
    let (ok, _) = swaks(
        app.smtp.unwrap(),
        &[
            "--from",
            "ann@example.org",
            "--to",
            COUNCIL,
            "--header",
            "Subject: Again",
            "--body",
            "Same photo.",
            "--attach-type",
            "image/jpeg",
            "--attach",
            &attach,
        ],
    )
    .await;
    assert!(ok);
    assert_eq!(app.count("attachments").await, 2);
    assert_eq!(app.count("attachment_blobs").await, 1);
    app.stop().await;
}

async fn a_relay_that_refuses_for_now_is_tried_again(backend: Backend) {
    let mut relay = SmtpSink::refusing(1).await;
    let dns = LocalDns::start(DNS).await;
    let clock = TestClock::new();
    let app = email_app_on(backend, clock.clone(), &relay, &dns, |_| {}).await;
    send(
        &app,
        "ann@example.org",
        COUNCIL,
        &[("Subject", "Hello")],
        "Hi",
    )
    .await;
    // The relay says 451: nothing left, so the acknowledgement waits to be tried again.
    let refused = relay.next_event().await;
    assert!(refused.get("refused").is_some(), "{refused}");
    app.until_count(
        "messages WHERE direction = 'out' AND status = 'pending' AND attempts = 1",
        1,
    )
    .await;
    // Its time comes (the clock moved past the first backoff): the second attempt
    // is delivered.
    clock.advance(Duration::from_secs(31));
    let ack = relay.next().await;
    assert_eq!(ack.rcpt_tos, vec!["ann@example.org"]);
    app.until_count("messages WHERE direction = 'out' AND status = 'sent'", 1)
        .await;
    app.stop().await;
}

async fn a_relay_that_keeps_refusing_leaves_a_dead_letter_for_staff(backend: Backend) {
    let relay = SmtpSink::refusing(100).await;
    let dns = LocalDns::start(DNS).await;
    let clock = TestClock::new();
    let app = email_app_on(backend, clock.clone(), &relay, &dns, |_| {}).await;
    send(
        &app,
        "ann@example.org",
        COUNCIL,
        &[("Subject", "Hello")],
        "Hi",
    )
    .await;
    // Eight tries, each after its backoff (30 s, 1, 2 … 64 minutes), all refused.
    for attempt in 1..=8u32 {
        app.until_count(
            &format!(
                "messages WHERE direction = 'out' AND attempts = {attempt} AND status IN ('pending', 'dead')"
            ),
            1,
        )
        .await;
        clock.advance(Duration::from_secs((30u64 << (attempt - 1)) + 1));
    }
    app.until_count("messages WHERE direction = 'out' AND status = 'dead'", 1)
        .await;

    // A dead letter for supervisors, with why; not for agents.
    let (status, attention) = app.get(Role::Supervisor, "/api/v1/outbox/attention").await;
    assert_eq!(status, 200, "{attention}");
    let items = attention.as_array().unwrap();
    assert_eq!(items.len(), 1, "{attention}");
    assert_eq!(items[0]["state"], "dead");
    assert_eq!(items[0]["attempts"], 8);
    assert!(items[0]["last_error"].as_str().is_some(), "{attention}");
    let (status, _) = app.get(Role::Agent, "/api/v1/outbox/attention").await;
    assert_eq!(status, 403);

    // On the resident's record: what they sent, and what became of our answer.
    let (_, found) = app
        .get(Role::Agent, "/api/v1/customers?email=ann@example.org")
        .await;
    let id = found["items"][0]["id"].as_str().unwrap().to_string();
    let (status, messages) = app
        .get(Role::Agent, &format!("/api/v1/customers/{id}/messages"))
        .await;
    assert_eq!(status, 200, "{messages}");
    let states: Vec<&str> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["dead", "received"], "{messages}");
    app.stop().await;
}

/// Signs `message` with DKIM as `d=strict.example; s=s1` using dkimpy, a signer
/// nobody here wrote.
fn dkim_sign(key: &std::path::Path, message: &str) -> String {
    let script = "import dkim, sys\n\
        key = open(sys.argv[1], 'rb').read()\n\
        msg = sys.stdin.buffer.read()\n\
        sig = dkim.sign(msg, b's1', b'strict.example', key, include_headers=[b'from', b'to', b'subject', b'message-id'])\n\
        sys.stdout.buffer.write(sig + msg)\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(message.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dkimpy is required (scripts/test installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn a_dkim_signature_alone_proves_a_sender(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("dkim.pem");
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    openssl(&["genrsa", "-out", key.to_str().unwrap(), "1024"]);
    use base64::Engine;
    let public = base64::engine::general_purpose::STANDARD.encode(openssl(&[
        "rsa",
        "-in",
        key.to_str().unwrap(),
        "-pubout",
        "-outform",
        "DER",
    ]));
    let dkim_record = format!("v=DKIM1; k=rsa; p={public}");
    // strict.example's SPF allows nobody: only its DKIM signature can prove Bob.
    let dns = LocalDns::start(&[
        ("strict.example", "v=spf1 -all"),
        ("_dmarc.strict.example", "v=DMARC1; p=reject"),
        ("s1._domainkey.strict.example", &dkim_record),
    ])
    .await;
    let sink = SmtpSink::start().await;
    let app = email_app_with(backend, &sink, &dns, |_| {}).await;
    let bob = app
        .create_customer(json!({"given_name": "Bob", "emails": ["bob@strict.example"]}))
        .await;
    let (_, opened) = app
        .post(
            Role::Agent,
            "/api/v1/requests",
            json!({"customer_id": bob["id"], "service": "highways", "summary": "Drain"}),
        )
        .await;
    let reference = opened["reference"].as_str().unwrap().to_string();
    let message = |id: &str, subject: &str| {
        format!(
            "From: bob@strict.example\r\nTo: {COUNCIL}\r\nSubject: {subject}\r\nMessage-ID: <{id}@strict.example>\r\n\r\nStill blocked.\r\n"
        )
    };
    // Sends a signed message as it is, with Bob's envelope sender.
    let send_signed = |signed: String| {
        let (app, dir) = (&app, &dir);
        async move {
            let data = dir.path().join("signed.eml");
            std::fs::write(&data, signed).unwrap();
            let at_data = format!("@{}", data.display());
            let args = [
                "--from",
                "bob@strict.example",
                "--to",
                COUNCIL,
                "--data",
                &at_data,
            ];
            let (ok, transcript) = swaks(app.smtp.unwrap(), &args).await;
            assert!(ok, "{transcript}");
        }
    };
    send_signed(dkim_sign(
        &key,
        &message("d1", &format!("Re: [{reference}]")),
    ))
    .await;
    assert_eq!(
        contacts_on(&app, &reference).await,
        1,
        "DKIM proved Bob: his tag joins"
    );

    // The same signature over a subject changed in transit: it no longer verifies.
    let tampered = dkim_sign(&key, &message("d2", &format!("Re: [{reference}]"))).replacen(
        &format!("Subject: Re: [{reference}]"),
        &format!("Subject: Fwd: [{reference}]"),
        1,
    );
    send_signed(tampered).await;
    assert_eq!(
        contacts_on(&app, &reference).await,
        1,
        "a broken signature proves nothing"
    );
    assert_eq!(
        app.count("service_requests WHERE identity_review = 1")
            .await,
        1
    );
    app.stop().await;
}

async fn a_mistyped_reference_still_follows_the_reply_token(backend: Backend) {
    let (app, mut sink, _dns) = email_app(backend, |_| {}).await;
    send(
        &app,
        "ann@example.org",
        COUNCIL,
        &[("Subject", "Bins")],
        "Missed.",
    )
    .await;
    let reference = requests(&app).await[0]["reference"]
        .as_str()
        .unwrap()
        .to_string();
    let ack = sink.next().await;
    // A reference that names no request, in a reply to our reply-token address.
    let nowhere = contactd::domain::Reference::from_number(1_999_999).to_string();
    send(
        &app,
        "ann@example.org",
        &reply_address(&ack),
        &[("Subject", &format!("Re: [{nowhere}]"))],
        "Any news?",
    )
    .await;
    assert_eq!(requests(&app).await.len(), 1, "the token placed it");
    assert_eq!(contacts_on(&app, &reference).await, 2);
    app.stop().await;
}

async fn floods_from_one_source_and_too_many_recipients_are_refused(backend: Backend) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let (app, _sink, _dns) = email_app(backend, |s| {
        s.email.max_connections_per_source = 2;
        s.email.max_recipients = 2;
    })
    .await;
    let smtp = app.smtp.unwrap();
    let greeting = |stream: tokio::net::TcpStream| async move {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        (reader, line)
    };
    let (mut first, line) = greeting(tokio::net::TcpStream::connect(smtp).await.unwrap()).await;
    assert!(line.starts_with("220"), "{line}");
    let (_second, line) = greeting(tokio::net::TcpStream::connect(smtp).await.unwrap()).await;
    assert!(line.starts_with("220"), "{line}");
    let (_third, line) = greeting(tokio::net::TcpStream::connect(smtp).await.unwrap()).await;
    assert!(
        line.starts_with("421"),
        "a third connection from one source: {line}"
    );

    // On an admitted connection, a third recipient is refused for now (452).
    let mut say = async |command: &str| {
        first.get_mut().write_all(command.as_bytes()).await.unwrap();
        loop {
            let mut line = String::new();
            first.read_line(&mut line).await.unwrap();
            if line.as_bytes().get(3) != Some(&b'-') {
                return line;
            }
        }
    };
    assert!(say("EHLO flood.test\r\n").await.starts_with("250"));
    assert!(
        say("MAIL FROM:<ann@example.org>\r\n")
            .await
            .starts_with("250")
    );
    assert!(
        say("RCPT TO:<a@council.example>\r\n")
            .await
            .starts_with("250")
    );
    assert!(
        say("RCPT TO:<b@council.example>\r\n")
            .await
            .starts_with("250")
    );
    assert!(
        say("RCPT TO:<c@council.example>\r\n")
            .await
            .starts_with("452")
    );
    assert_eq!(app.count("contacts").await, 0, "nothing stored for either");
    app.stop().await;
}

async fn copied_in_strangers_are_flagged_and_replies_to_a_bulk_mail_stay_apart(backend: Backend) {
    let (app, mut sink, _dns) = email_app(backend, |_| {}).await;
    send(
        &app,
        "ann@example.org",
        COUNCIL,
        &[("Subject", "Fly-tipping on Mill Lane")],
        "A sofa was dumped.",
    )
    .await;
    let anns = requests(&app).await[0].clone();
    let reference = anns["reference"].as_str().unwrap().to_string();
    assert_eq!(anns["identity_review"], false, "{anns}");
    let ack = sink.next().await;
    let ours = ack.header("Message-ID").expect("a Message-ID");

    // Ann replied to all, copying in her neighbour; he answers our message. The thread
    // is ours, so his contact joins Ann's request, but it stays Ann's, and staff are
    // asked to look at who joined.
    send(
        &app,
        "bob@example.org",
        COUNCIL,
        &[
            ("Subject", "Re: Fly-tipping on Mill Lane"),
            ("In-Reply-To", &ours),
        ],
        "It is still there, and a fridge now too.",
    )
    .await;
    let all = requests(&app).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["customer_id"], anns["customer_id"], "still Ann's");
    assert_eq!(all[0]["identity_review"], true, "held for staff to look at");
    assert_eq!(contacts_on(&app, &reference).await, 2);

    // Two residents answer the same bulk mail the council sent from elsewhere: two
    // requests, neither in the other's, and neither held (each is the resident's own).
    for (who, what) in [
        ("cat@example.org", "Count me in"),
        ("dan@example.org", "Not for me"),
    ] {
        send(
            &app,
            who,
            COUNCIL,
            &[
                ("Subject", "Re: Garden waste 2027: renew now"),
                ("In-Reply-To", "<newsletter-2026-11@lists.council.example>"),
                ("References", "<newsletter-2026-11@lists.council.example>"),
            ],
            what,
        )
        .await;
    }
    let all = requests(&app).await;
    assert_eq!(all.len(), 3, "{all:?}");
    let renewals: Vec<&Value> = all
        .iter()
        .filter(|r| r["reference"] != reference.as_str())
        .collect();
    assert_ne!(renewals[0]["customer_id"], renewals[1]["customer_id"]);
    for r in renewals {
        assert_eq!(r["identity_review"], false, "{r}");
        assert_eq!(contacts_on(&app, r["reference"].as_str().unwrap()).await, 1);
    }
    app.stop().await;
}
