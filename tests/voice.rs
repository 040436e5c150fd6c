//! The voice channel driven by sipp: calls keyed to a reference and routed by menu,
//! refusals (no common codec, CANCEL, unlisted trunk), recordings (stereo WAV, the
//! caller's tone left, the prompts right), expiry and legal hold, downloads.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{TestApp, sipp, spawn_app_with};
use contactd::configuration::Backend;
use contactd::domain::Role;
use contactd_sip::config::SipTransport;
use contactd_sip::g711::Codec;
use serde_json::{Value, json};
use sqlx::Row;

on_both_backends!(
    a_pcmu_call_keying_a_reference_is_recorded_on_that_request,
    a_pcma_call_pressing_star_and_a_service_opens_a_new_request,
    a_mistyped_reference_is_refused_and_asked_for_again,
    calls_are_refused_with_the_right_status,
    expired_recordings_are_swept_unless_on_legal_hold_and_downloads_are_guarded,
    mid_call_hold_resume_info_and_keep_alives,
    the_call_limit_and_the_maximum_call_length,
    shutdown_refuses_new_calls_and_ends_calls_after_the_grace_period,
);

async fn voice_app(backend: Backend, ring_ms: u64, trunk: &str) -> TestApp {
    voice_app_with(backend, ring_ms, trunk, |_| {}).await
}

async fn voice_app_with(
    backend: Backend,
    ring_ms: u64,
    trunk: &str,
    adjust: impl FnOnce(&mut contactd::configuration::Settings),
) -> TestApp {
    let trunk = trunk.to_string();
    spawn_app_with(backend, move |s| {
        common::listen_for_calls(s, &trunk);
        s.sip.ring_ms = ring_ms;
        s.ivr.digit_timeout_seconds = 4;
        adjust(s);
    })
    .await
}

/// One call from sipp over UDP.
async fn one_call(app: &TestApp, dir: &std::path::Path, scenario: &str) -> sipp::SippRun {
    sipp::run(dir, scenario, sip_addr(app, SipTransport::Udp), 1, "u1").await
}

/// Waits (bounded) until `count` calls are up (their recordings registered).
async fn calls_up(app: &TestApp, count: i64) {
    for _ in 0..600 {
        if app.count("recordings").await >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{count} call(s) did not come up within 30 s");
}

/// Starts a caller who stays on the line until the daemon hangs up.
fn waiting_caller(app: &TestApp, dir: &std::path::Path) -> tokio::task::JoinHandle<sipp::SippRun> {
    let text = sipp::scenario("uac_wait.xml", &[]);
    let target = sip_addr(app, SipTransport::Udp);
    let dir = dir.to_path_buf();
    tokio::spawn(async move { sipp::run(&dir, &text, target, 1, "u1").await })
}

fn sip_addr(app: &TestApp, transport: SipTransport) -> SocketAddr {
    app.sip_addr(transport)
}

/// Waits (bounded) until the daemon has finished the recording of `call_count` calls.
async fn complete_recordings(app: &TestApp, count: i64) -> Vec<sqlx::any::AnyRow> {
    for _ in 0..600 {
        let rows = sqlx::query(
            "SELECT id, path, request_id, contact_id, duration_ms, started_at, ended_at, sha256 FROM recordings \
             WHERE status = 'complete' ORDER BY started_at",
        )
        .fetch_all(app.store.pool())
        .await
        .unwrap();
        if rows.len() as i64 >= count {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the recordings were not finished within 30 s");
}

fn recording_path(app: &TestApp, row: &sqlx::any::AnyRow) -> std::path::PathBuf {
    app.db
        .dir()
        .join("recordings")
        .join(row.try_get::<String, _>("path").unwrap())
}

/// The dominant frequency of a stretch of samples, by zero crossings.
fn frequency(samples: &[i16]) -> f64 {
    let crossings = samples
        .windows(2)
        .filter(|w| (w[0] < 0) != (w[1] < 0))
        .count();
    crossings as f64 / 2.0 / (samples.len() as f64 / 8000.0)
}

fn rms(samples: &[i16]) -> f64 {
    (samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len().max(1) as f64)
        .sqrt()
}

async fn a_pcmu_call_keying_a_reference_is_recorded_on_that_request(backend: Backend) {
    let app = voice_app(backend, 300, "127.0.0.1/32").await;
    let customer = app
        .create_customer(json!({"given_name": "Jo", "phones": ["07700 900123"]}))
        .await;
    let (_, request) = app
        .post(
            Role::Agent,
            "/api/v1/requests",
            json!({"customer_id": customer["id"], "service": "waste", "summary": "Missed bin"}),
        )
        .await;
    let reference = request["reference"].as_str().unwrap().to_string();
    let keys = format!("{}#", &reference[3..]);

    let dir = tempfile::tempdir().unwrap();
    let media = sipp::tone_file(dir.path(), Codec::Pcmu, 3);
    let text = sipp::call_scenario("07700900123", "0 8", &media, "0", &keys, None);
    let run = one_call(&app, dir.path(), &text).await;
    assert!(run.success, "sipp: {}", run.output);

    let rows = complete_recordings(&app, 1).await;
    let row = &rows[0];
    assert_eq!(
        row.try_get::<Option<String>, _>("request_id")
            .unwrap()
            .as_deref(),
        request["id"].as_str()
    );

    let (_, timeline) = app
        .get(
            Role::Agent,
            &format!("/api/v1/requests/{reference}/timeline"),
        )
        .await;
    let events = timeline.as_array().unwrap();
    let contact = events
        .iter()
        .find(|e| e["kind"] == "contact")
        .expect("the call is on the request");
    assert_eq!(contact["contact"]["channel"], "phone");
    assert_eq!(
        contact["contact"]["customer_id"], customer["id"],
        "caller matched by number"
    );
    assert!(
        contact["contact"]["content"]
            .as_str()
            .unwrap()
            .contains(&reference)
    );
    assert!(
        events.iter().any(|e| e["kind"] == "recording"),
        "{timeline}"
    );
    let (_, recordings) = app
        .get(
            Role::Quality,
            &format!("/api/v1/requests/{reference}/recordings"),
        )
        .await;
    assert_eq!(recordings.as_array().unwrap().len(), 1);

    // The file: stereo, 8 kHz, 16-bit; the caller's 440 Hz tone on the left while
    // they sent it, the daemon's speech on the right; as long as the call.
    let path = recording_path(&app, row);
    let mut wav = hound::WavReader::open(&path).unwrap();
    let spec = wav.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (2, 8000, 16)
    );
    let samples: Vec<i16> = wav.samples::<i16>().map(Result::unwrap).collect();
    let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
    let right: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
    let tone = &left[4000..20000]; // 0.5 s to 2.5 s after answer
    let f = frequency(tone);
    assert!((f - 440.0).abs() < 10.0, "left channel at {f} Hz");
    assert!(rms(tone) > 2000.0, "the tone is loud on the left");
    assert!(
        rms(&right[0..16000]) > 300.0,
        "the recording notice is on the right"
    );
    let recorded_ms = left.len() as i64 * 1000 / 8000;
    let call_ms =
        row.try_get::<i64, _>("ended_at").unwrap() - row.try_get::<i64, _>("started_at").unwrap();
    assert!(
        (recorded_ms - call_ms).abs() < 1000,
        "recorded {recorded_ms} ms of a {call_ms} ms call"
    );
    assert_eq!(row.try_get::<i64, _>("duration_ms").unwrap(), recorded_ms);
    assert!(
        recorded_ms > 7000,
        "tone, keys and goodbye: {recorded_ms} ms"
    );
    let sha = contactd_recordings::wav::hash_file(&path).unwrap();
    assert_eq!(row.try_get::<String, _>("sha256").unwrap(), sha);
    app.stop().await;
}

async fn a_pcma_call_pressing_star_and_a_service_opens_a_new_request(backend: Backend) {
    let fake = common::twilio::FakeTwilio::start().await;
    let app = voice_app_with(backend, 300, "127.0.0.1/32", |s| fake.configure(s)).await;
    let dir = tempfile::tempdir().unwrap();
    let media = sipp::tone_file(dir.path(), Codec::Pcma, 3);
    let text = sipp::call_scenario("07700900555", "8 0", &media, "8", "*1", None);
    // Over TCP this time: the trunk may use either.
    let run = sipp::run(
        dir.path(),
        &text,
        sip_addr(&app, SipTransport::Tcp),
        1,
        "t1",
    )
    .await;
    assert!(run.success, "sipp: {}", run.output);
    let rows = complete_recordings(&app, 1).await;

    let (_, found) = app
        .get(Role::Agent, "/api/v1/customers?phone=07700900555")
        .await;
    let customers = found["items"].as_array().unwrap();
    assert_eq!(customers.len(), 1, "a new caller gets a record");
    let (_, requests) = app
        .get(Role::Agent, "/api/v1/requests?phone=07700900555")
        .await;
    assert_eq!(requests["total"], 1);
    let request = &requests["items"][0];
    assert_eq!(request["service"], "waste", "menu key 1 is waste");
    assert_eq!(request["opened_via"], "phone");
    // The caller is on a mobile: the new reference is texted to them too.
    app.until_count(
        "messages WHERE purpose = 'acknowledgement' AND provider_sid IS NOT NULL",
        1,
    )
    .await;
    let texted = fake.received();
    assert_eq!(texted.len(), 1, "{texted:?}");
    let to = &texted[0].iter().find(|(k, _)| k == "To").unwrap().1;
    let body = &texted[0].iter().find(|(k, _)| k == "Body").unwrap().1;
    assert_eq!(to, "+447700900555");
    assert!(
        body.contains(request["reference"].as_str().unwrap()),
        "{body}"
    );
    assert_eq!(
        rows[0]
            .try_get::<Option<String>, _>("request_id")
            .unwrap()
            .as_deref(),
        request["id"].as_str()
    );
    let wav = hound::WavReader::open(recording_path(&app, &rows[0])).unwrap();
    let left: Vec<i16> = wav
        .into_samples::<i16>()
        .map(Result::unwrap)
        .step_by(2)
        .collect();
    let f = frequency(&left[4000..20000]);
    assert!(
        (f - 440.0).abs() < 10.0,
        "A-law decoded to a 440 Hz tone, got {f} Hz"
    );
    app.stop().await;
}

async fn calls_are_refused_with_the_right_status(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    // No codec in common: 488.
    let app = voice_app(backend, 300, "127.0.0.1/32").await;
    let text = sipp::scenario("uac_rejected.xml", &[("CODECS", "18"), ("STATUS", "488")]);
    let run = one_call(&app, dir.path(), &text).await;
    assert!(run.success, "488 expected: {}", run.output);
    // The caller gives up while it rings: 200 for the CANCEL, 487 for the INVITE.
    let app2 = voice_app(backend, 20_000, "127.0.0.1/32").await;
    let text = sipp::scenario("uac_cancel.xml", &[]);
    let run = one_call(&app2, dir.path(), &text).await;
    assert!(run.success, "CANCEL: {}", run.output);
    // Not a trunk: 403.
    let app3 = voice_app(backend, 300, "192.0.2.1/32").await;
    let text = sipp::scenario("uac_rejected.xml", &[("CODECS", "0"), ("STATUS", "403")]);
    let run = one_call(&app3, dir.path(), &text).await;
    assert!(run.success, "403 expected: {}", run.output);
    for a in [&app, &app2, &app3] {
        assert_eq!(a.count("contacts").await, 0, "refused calls leave nothing");
        assert_eq!(a.count("recordings").await, 0);
    }
    app.stop().await;
    app2.stop().await;
    app3.stop().await;
}

async fn expired_recordings_are_swept_unless_on_legal_hold_and_downloads_are_guarded(
    backend: Backend,
) {
    let app = voice_app(backend, 300, "127.0.0.1/32").await;
    let dir = tempfile::tempdir().unwrap();
    let media = sipp::tone_file(dir.path(), Codec::Pcmu, 3);
    let text = sipp::call_scenario("07700900777", "0", &media, "0", "*0", None);
    let run = sipp::run(
        dir.path(),
        &text,
        sip_addr(&app, SipTransport::Udp),
        2,
        "u1",
    )
    .await;
    assert!(run.success, "sipp: {}", run.output);
    let rows = complete_recordings(&app, 2).await;
    let ids: Vec<String> = rows.iter().map(|r| r.try_get("id").unwrap()).collect();
    let paths: Vec<_> = rows.iter().map(|r| recording_path(&app, r)).collect();
    let retention = rows[0].try_get::<i64, _>("started_at").unwrap();
    let _ = retention;

    // Downloads: agents may not; quality staff may, and each listen is audited.
    let url = app.url(&format!("/api/v1/recordings/{}/audio", ids[0]));
    let agent = app
        .client
        .get(&url)
        .bearer_auth(app.token(Role::Agent))
        .send()
        .await
        .unwrap();
    assert_eq!(agent.status(), 403);
    let quality = app
        .client
        .get(&url)
        .bearer_auth(app.token(Role::Quality))
        .send()
        .await
        .unwrap();
    assert_eq!(quality.status(), 200);
    assert_eq!(quality.headers()["content-type"], "audio/wav");
    let body = quality.bytes().await.unwrap();
    assert_eq!(body.as_ref(), std::fs::read(&paths[0]).unwrap().as_slice());
    let (_, audit) = app
        .get(
            Role::Admin,
            &format!("/api/v1/audit?entity=recording&entity_id={}", ids[0]),
        )
        .await;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "download" && e["actor"] == "staff:quality-user"),
        "{audit}"
    );

    // Both expire; one is put on legal hold.
    let (s, held) = app
        .put(
            Role::Supervisor,
            &format!("/api/v1/recordings/{}/legal-hold", ids[1]),
            json!({"hold": true, "reason": "Ombudsman case 42"}),
        )
        .await;
    assert_eq!(
        (s, held["legal_hold"].clone()),
        (200, Value::Bool(true)),
        "{held}"
    );
    let (s, _) = app
        .put(
            Role::Agent,
            &format!("/api/v1/recordings/{}/legal-hold", ids[1]),
            json!({"hold": false}),
        )
        .await;
    assert_eq!(s, 403);
    sqlx::query("UPDATE recordings SET expires_at = 0")
        .execute(app.store.pool())
        .await
        .unwrap();

    let report = app.recorder.sweep(false).await.unwrap();
    assert_eq!(report.purged, vec![ids[0].clone()]);
    assert_eq!(report.kept_on_hold, 1);
    assert!(!paths[0].exists(), "the expired recording's file is gone");
    assert!(paths[1].exists(), "the held one is kept");
    let purged = sqlx::query("SELECT status, purged_at FROM recordings WHERE id = $1")
        .bind(&ids[0])
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(
        purged.try_get::<String, _>("status").unwrap(),
        "purged",
        "the row records that it existed"
    );
    assert!(
        purged
            .try_get::<Option<i64>, _>("purged_at")
            .unwrap()
            .is_some()
    );
    let (_, audit) = app
        .get(
            Role::Admin,
            &format!("/api/v1/audit?entity=recording&entity_id={}", ids[0]),
        )
        .await;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "purge" && e["actor"] == "system"),
        "{audit}"
    );
    let gone = app
        .client
        .get(&url)
        .bearer_auth(app.token(Role::Quality))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 410);
    app.stop().await;
}

async fn mid_call_hold_resume_info_and_keep_alives(backend: Backend) {
    let app = voice_app(backend, 300, "127.0.0.1/32").await;
    let dir = tempfile::tempdir().unwrap();
    let target = sip_addr(&app, SipTransport::Udp);
    let run = sipp::run(
        dir.path(),
        &sipp::scenario("uac_options.xml", &[]),
        target,
        1,
        "u1",
    )
    .await;
    assert!(run.success, "OPTIONS: {}", run.output);
    let run = sipp::run(
        dir.path(),
        &sipp::scenario("uac_dialog.xml", &[]),
        target,
        1,
        "u1",
    )
    .await;
    assert!(run.success, "hold, resume, INFO: {}", run.output);
    complete_recordings(&app, 1).await;
    let (_, requests) = app
        .get(Role::Agent, "/api/v1/requests?phone=07700900444")
        .await;
    assert_eq!(requests["total"], 1, "{requests}");
    assert_eq!(
        requests["items"][0]["service"], "waste",
        "* then 1 keyed by SIP INFO"
    );
    app.stop().await;
}

async fn the_call_limit_and_the_maximum_call_length(backend: Backend) {
    let app = voice_app_with(backend, 300, "127.0.0.1/32", |s| {
        s.sip.max_calls = 1;
        s.sip.max_call_seconds = 5;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let first = waiting_caller(&app, dir.path());
    calls_up(&app, 1).await;
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(
        ready.status(),
        503,
        "at the call limit the daemon is not ready"
    );
    let busy = sipp::scenario("uac_rejected.xml", &[("CODECS", "0"), ("STATUS", "503")]);
    let run = one_call(&app, dir.path(), &busy).await;
    assert!(
        run.success,
        "a second call at the limit gets 503: {}",
        run.output
    );
    let run = first.await.unwrap();
    assert!(
        run.success,
        "the first call is ended by the daemon at its maximum length: {}",
        run.output
    );
    let rows = complete_recordings(&app, 1).await;
    let ms = rows[0].try_get::<i64, _>("duration_ms").unwrap();
    assert!(
        (4500..7000).contains(&ms),
        "cut off after 5 s, recorded {ms} ms"
    );
    app.stop().await;
}

async fn shutdown_refuses_new_calls_and_ends_calls_after_the_grace_period(backend: Backend) {
    let app = voice_app_with(backend, 300, "127.0.0.1/32", |s| {
        s.shutdown.grace_seconds = 3
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let first = waiting_caller(&app, dir.path());
    calls_up(&app, 1).await;
    let db_url = app.db.url.clone();
    app.begin_shutdown();
    let busy = sipp::scenario("uac_rejected.xml", &[("CODECS", "0"), ("STATUS", "503")]);
    let run = one_call(&app, dir.path(), &busy).await;
    assert!(
        run.success,
        "new calls get 503 while shutting down: {}",
        run.output
    );
    let run = first.await.unwrap();
    assert!(
        run.success,
        "the call in progress gets a BYE at the end of the grace period: {}",
        run.output
    );
    // The daemon stops only once the call's recording is finished.
    let mut app = app;
    app.wait_stopped().await;
    use sqlx::Connection;
    let mut conn = sqlx::AnyConnection::connect(&db_url).await.unwrap();
    let row = sqlx::query("SELECT status, path FROM recordings")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(row.try_get::<String, _>("status").unwrap(), "complete");
    let path = app
        .db
        .dir()
        .join("recordings")
        .join(row.try_get::<String, _>("path").unwrap());
    assert!(hound::WavReader::open(&path).is_ok());
    conn.close().await.unwrap();
}

async fn a_mistyped_reference_is_refused_and_asked_for_again(backend: Backend) {
    let app = voice_app(backend, 300, "127.0.0.1/32").await;
    let customer = app
        .create_customer(json!({"given_name": "Sam", "phones": ["07700 900666"]}))
        .await;
    let (_, request) = app
        .post(
            Role::Agent,
            "/api/v1/requests",
            json!({"customer_id": customer["id"], "service": "highways", "summary": "Pothole"}),
        )
        .await;
    let reference = request["reference"].as_str().unwrap().to_string();
    let digits: Vec<char> = reference[3..].chars().collect();
    let i = (0..digits.len() - 1)
        .find(|&i| digits[i] != digits[i + 1])
        .unwrap();
    let mut typo = digits.clone();
    typo.swap(i, i + 1);
    let typo: String = typo.into_iter().collect::<String>() + "#";
    let right: String = digits.into_iter().collect::<String>() + "#";

    let dir = tempfile::tempdir().unwrap();
    let media = sipp::tone_file(dir.path(), Codec::Pcmu, 3);
    let text = sipp::call_scenario("07700900666", "0", &media, "0", &typo, Some((&right, 6000)));
    let run = one_call(&app, dir.path(), &text).await;
    assert!(run.success, "sipp: {}", run.output);
    complete_recordings(&app, 1).await;

    let (_, timeline) = app
        .get(
            Role::Agent,
            &format!("/api/v1/requests/{reference}/timeline"),
        )
        .await;
    let contact = timeline
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "contact")
        .expect("attached after the retry");
    assert!(
        contact["contact"]["content"]
            .as_str()
            .unwrap()
            .contains(&reference),
        "{contact}"
    );
    let (_, all) = app.get(Role::Agent, "/api/v1/requests").await;
    assert_eq!(
        all["total"], 1,
        "the mistyped reference matched nobody and opened nothing"
    );
    app.stop().await;
}
