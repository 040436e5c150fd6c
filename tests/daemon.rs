//! The `contactd` binary as an operator runs it: configuration errors, staff and
//! token commands, `serve` with systemd notifications and a graceful SIGTERM.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use common::TestDatabase;
use common::daemon::{BIN, contactd, output, start, wait_for_log};
use contactd::configuration::Backend;

#[tokio::test]
async fn configuration_errors_stop_start_up_naming_the_key() {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let cases: &[(&str, &str, &str)] = &[
        ("CONTACTD__HTTP__LISTEN", "not-an-address", "http.listen"),
        ("CONTACTD__HTTP__LISTN", "127.0.0.1:1", "listn"),
        (
            "CONTACTD__DATABASE__URL",
            "mysql://localhost/x",
            "database.url",
        ),
        (
            "CONTACTD__SHUTDOWN__GRACE_SECONDS",
            "soon",
            "shutdown.grace_seconds",
        ),
        (
            "CONTACTD__INTAKE__DEFAULT_SERVICE",
            "parking",
            "intake.default_service",
        ),
        (
            "CONTACTD__SCHEDULER__REDIS_URL",
            "http://localhost",
            "scheduler.redis_url",
        ),
    ];
    for (key, value, named) in cases {
        for command in ["check-config", "serve"] {
            let (code, _, stderr) = output(contactd(&db, &[command]).env(key, value));
            assert_eq!(code, 1, "{command} with {key}={value}: {stderr}");
            let line = stderr.lines().last().unwrap_or_default();
            assert!(
                line.contains(named),
                "{command} with {key}={value}: {line:?} should name {named}"
            );
            assert!(line.starts_with("contactd: "), "one clear line: {stderr}");
        }
    }
    let (code, _, stderr) = output(&mut contactd(
        &db,
        &["check-config", "--config", "/nonexistent/contactd.toml"],
    ));
    assert_eq!(code, 1);
    assert!(stderr.contains("/nonexistent/contactd.toml"), "{stderr}");
}

#[tokio::test]
async fn environment_values_are_taken_as_the_text_written() {
    let db = TestDatabase::new(Backend::Sqlite).await;
    // A phone number, digits only, and `true` are text for string keys; numbers and
    // booleans given as text still read as numbers and booleans.
    let (code, _, stderr) = output(
        contactd(&db, &["check-config"])
            .env(
                "CONTACTD__SMS__ACCOUNT_SID",
                "AC0123456789abcdef0123456789abcdef",
            )
            .env("CONTACTD__SMS__AUTH_TOKEN", "0123456789")
            .env("CONTACTD__SMS__FROM", "+441610000000")
            .env("CONTACTD__SMS__API_KEY_SECRET", "true")
            .env("CONTACTD__SIP__MAX_CALLS", "50")
            .env("CONTACTD__SIP__OPTIONS_FROM_ANYWHERE", "true"),
    );
    assert_eq!(code, 0, "{stderr}");
    // A number key given words is named as the user wrote it.
    let (code, _, stderr) =
        output(contactd(&db, &["check-config"]).env("CONTACTD__SIP__MAX_CALLS", "lots"));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("CONTACTD__SIP__MAX_CALLS") || stderr.contains("sip.max_calls"),
        "{stderr}"
    );
    // And the daemon starts with them.
    let (code, _, stderr) = output(
        contactd(&db, &["migrate"])
            .env("CONTACTD__SMS__FROM", "+441610000000")
            .env(
                "CONTACTD__SMS__ACCOUNT_SID",
                "AC0123456789abcdef0123456789abcdef",
            )
            .env("CONTACTD__SMS__AUTH_TOKEN", "0123456789"),
    );
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test]
async fn unreachable_database_and_redis_are_named() {
    let db = TestDatabase::new(Backend::Sqlite).await;
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    let url = "postgres://contactd:secret@127.0.0.1:1/contactd";
    for command in ["check-config", "serve"] {
        let (code, _, stderr) = output(
            contactd(&db, &[command])
                .env("CONTACTD__DATABASE__URL", url)
                .env("CONTACTD__DATABASE__CONNECT_TIMEOUT_SECONDS", "2"),
        );
        assert_eq!(code, 1, "{stderr}");
        assert!(
            stderr.contains("database.url") && stderr.contains("127.0.0.1:1"),
            "{stderr}"
        );
        assert!(
            !stderr.contains("secret"),
            "the password is never printed: {stderr}"
        );
    }
    let (code, _, stderr) = output(
        contactd(&db, &["check-config"])
            .env("CONTACTD__SCHEDULER__REDIS_URL", "redis://127.0.0.1:1/0"),
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("scheduler.redis_url"), "{stderr}");
}

#[tokio::test]
async fn check_config_accepts_postgres_and_redis() {
    let db = TestDatabase::new(Backend::Postgres).await;
    let redis = std::env::var("CONTACTD_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let (code, stdout, stderr) =
        output(contactd(&db, &["check-config"]).env("CONTACTD__SCHEDULER__REDIS_URL", &redis));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("configuration OK"), "{stdout}");
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_then_exits_zero() {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let (code, _, stderr) = output(&mut contactd(
        &db,
        &["user", "add", "alice", "--role", "agent"],
    ));
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = output(&mut contactd(
        &db,
        &["user", "add", "alice", "--role", "agent"],
    ));
    assert_eq!(code, 1, "a second alice is refused: {stderr}");
    let (code, _, stderr) = output(&mut contactd(
        &db,
        &["user", "add", "bob", "--role", "janitor"],
    ));
    assert_ne!(code, 0, "unknown roles are refused: {stderr}");
    let (code, stdout, stderr) =
        output(&mut contactd(&db, &["token", "create", "--user", "alice"]));
    assert_eq!(code, 0, "{stderr}");
    let token = stdout.lines().last().unwrap().to_string();
    assert!(
        token.starts_with("cd_") && !token.contains(' '),
        "the token alone on the last line: {stdout:?}"
    );
    let (code, _, _) = output(&mut contactd(&db, &["token", "create", "--user", "nobody"]));
    assert_eq!(code, 1);

    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&socket_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut daemon = start(&db, &socket_path);
    let mut buf = [0u8; 512];
    let n = notify.recv(&mut buf).expect("READY=1 arrives");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));

    // An in-flight request: its handler is reading the body when the signal arrives.
    // `Expect: 100-continue` makes the server say so: it answers 100 when the handler
    // first asks for the body.
    let body = br#"{"given_name": "Jo", "phones": ["07700 900123"]}"#;
    let mut stream = TcpStream::connect(&daemon.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "POST /api/v1/customers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_for_log(&daemon, "shutting down");
    let n = notify.recv(&mut buf).expect("STOPPING=1 arrives");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    // No new connections are served once shutdown has begun (the accept loop sees the
    // signal at its next turn, so allow it a bounded number of turns).
    let client = reqwest::Client::new();
    let mut refused = false;
    for _ in 0..100 {
        let attempt = client
            .get(format!("http://{}/healthz", daemon.addr))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if attempt.is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "new connections are refused while draining");

    stream.write_all(body).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 201"),
        "the in-flight request completes: {response}"
    );

    let status = daemon.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    wait_for_log(&daemon, "shutdown complete");
}

#[test]
fn systemd_unit_notifies_and_is_hardened() {
    let unit = include_str!("../systemd/contactd.service");
    for directive in [
        "Type=notify",
        "WatchdogSec=",
        "User=contactd",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/contactd /var/lib/contactd/recordings",
        "PrivateTmp=yes",
        "ExecStart=/usr/local/bin/contactd serve",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(directive)),
            "{directive} missing"
        );
    }
    // systemd's own checker, where this machine has it, with the binary just built.
    if let Ok(out) = Command::new("systemd-analyze").arg("--version").output()
        && out.status.success()
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("contactd.service");
        std::fs::write(&path, unit.replace("/usr/local/bin/contactd", BIN)).unwrap();
        let verify = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        let complaints = String::from_utf8_lossy(&verify.stderr);
        assert!(
            verify.status.success() && complaints.trim().is_empty(),
            "{complaints}"
        );
    }
}

#[tokio::test]
async fn secrets_can_come_from_files() {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("database_url");
    std::fs::write(&secret, format!("{}\n", db.url)).unwrap();
    let (code, stdout, stderr) = output(
        contactd(&db, &["check-config"])
            .env_remove("CONTACTD__DATABASE__URL")
            .env("CONTACTD__DATABASE__URL_FILE", &secret),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(&db.url), "{stdout}");
    let (code, _, stderr) = output(
        contactd(&db, &["check-config"])
            .env("CONTACTD__DATABASE__URL_FILE", dir.path().join("missing")),
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("database.url") && stderr.contains("missing"),
        "{stderr}"
    );
}

#[tokio::test]
async fn recordings_sweep_from_the_command_line() {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let (code, _, stderr) = output(&mut contactd(&db, &["migrate"]));
    assert_eq!(code, 0, "{stderr}");
    // One finished recording, expired, as the daemon would have left it.
    let settings = {
        let mut s = contactd::configuration::Settings::load(None).unwrap();
        s.database.url = contactd::configuration::DatabaseUrl::parse(&db.url).unwrap();
        s
    };
    let store = contactd::store::Store::connect(&settings.database)
        .await
        .unwrap();
    let recorder =
        contactd::recordings::Recorder::new(store.clone(), db.dir().join("recordings"), 365);
    let id = expired_recording(&recorder, &store, "call-1").await;
    let file_of = |id: &str| {
        let day = time::OffsetDateTime::now_utc().date();
        db.dir().join("recordings").join(format!(
            "{:04}/{:02}/{:02}/{id}.wav",
            day.year(),
            day.month() as u8,
            day.day()
        ))
    };
    let file = || file_of(&id);
    assert!(file().exists());

    let (code, stdout, stderr) = output(&mut contactd(&db, &["recordings", "sweep", "--dry-run"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(&format!("would delete {id}")), "{stdout}");
    assert!(file().exists(), "a dry run deletes nothing");
    let (code, stdout, stderr) = output(&mut contactd(&db, &["recordings", "sweep"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(&format!("deleted {id}")), "{stdout}");
    assert!(!file().exists());

    // A second expired recording whose file is not where it should be (a directory
    // unmounted, say): an error, and never marked purged.
    let missing = expired_recording(&recorder, &store, "call-2").await;
    std::fs::remove_file(file_of(&missing)).unwrap();
    let (code, stdout, stderr) = output(&mut contactd(&db, &["recordings", "sweep"]));
    assert_eq!(code, 1, "a missing file is an error: {stdout}");
    assert!(
        stdout.contains(&format!("could not delete {missing}")),
        "{stdout}"
    );
    assert!(!stdout.contains(&format!("deleted {missing}")), "{stdout}");
    assert!(stderr.contains("could not be deleted"), "{stderr}");
    let status: String = sqlx::Row::get(
        &sqlx::query("SELECT status FROM recordings WHERE id = $1")
            .bind(&missing)
            .fetch_one(store.pool())
            .await
            .unwrap(),
        "status",
    );
    assert_eq!(status, "complete", "not marked purged");
    store.close().await;
}

/// A finished recording of a call now, made expired, as the daemon would leave it.
async fn expired_recording(
    recorder: &contactd::recordings::Recorder,
    store: &contactd::store::Store,
    call: &str,
) -> String {
    let recording = recorder.begin(call, std::time::SystemTime::now()).unwrap();
    recorder.register(&recording).await.unwrap();
    let id = recording.id.clone();
    recorder.finish(recording, &[]).await.unwrap();
    sqlx::query("UPDATE recordings SET expires_at = 0 WHERE id = $1")
        .bind(&id)
        .execute(store.pool())
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn logs_hold_no_personal_data_and_files_are_private() {
    use common::raw_sip::{self, ConfirmedCall};
    use std::os::unix::fs::PermissionsExt;
    let db = TestDatabase::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let _notify = UnixDatagram::bind(&socket_path).unwrap();
    let mut daemon = start(&db, &socket_path);
    let sip: std::net::SocketAddr = daemon.sip_udp.clone().expect("sip on").parse().unwrap();

    // A call from a resident's number that keys digits, then hangs up.
    let call = ConfirmedCall::place(sip, "07700900123").await;
    let (mut seq, ts) = (1u16, 1000u32);
    for event in [7u8, 4] {
        for p in raw_sip::key_press(event, &mut seq, ts + u32::from(event) * 800, 42) {
            call.media.send_to(&p, call.daemon_media).await.unwrap();
        }
    }
    call.hang_up().await;
    wait_for_log(&daemon, "call ended");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(daemon.child.wait().unwrap().code(), Some(0));
    let lines: Vec<String> = daemon.log.try_iter().collect();
    for line in &lines {
        assert!(
            !line.contains("7700900123"),
            "a caller's number in the log: {line}"
        );
        assert!(
            !line.contains("INVITE sip:") && !line.contains("raw_message"),
            "a SIP message in the log: {line}"
        );
    }

    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let data = db.dir().join("data");
    assert_eq!(mode(&data), 0o700, "data_dir");
    assert_eq!(mode(&db.dir().join("contactd.db")), 0o600, "the database");
    let recordings = db.dir().join("recordings");
    assert_eq!(mode(&recordings), 0o700, "recordings dir");
    let mut files = Vec::new();
    let mut stack = vec![recordings.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                assert_eq!(mode(&e.path()), 0o700, "{}", e.path().display());
                stack.push(e.path());
            } else {
                files.push(e.path());
            }
        }
    }
    assert!(!files.is_empty(), "the call was recorded");
    for f in files {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
}

#[tokio::test]
async fn tokens_expire_and_can_be_revoked_and_users_disabled() {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let (code, _, stderr) = output(&mut contactd(
        &db,
        &["user", "add", "sam", "--role", "agent"],
    ));
    assert_eq!(code, 0, "{stderr}");
    let token = |args: &[&str]| {
        let mut all = vec!["token", "create", "--user", "sam"];
        all.extend_from_slice(args);
        let (code, stdout, stderr) = output(&mut contactd(&db, &all));
        assert_eq!(code, 0, "{stderr}");
        stdout.lines().last().unwrap().to_string()
    };
    let (code, _, stderr) = output(&mut contactd(
        &db,
        &["token", "create", "--user", "sam", "--expires-in", "soon"],
    ));
    assert_ne!(
        code, 0,
        "a lifetime that is no lifetime is refused: {stderr}"
    );
    let short = token(&["--expires-in", "1h"]);
    let forever = token(&["--expires-in", "never"]);
    let default = token(&[]);

    let settings = {
        let mut s = contactd::configuration::Settings::load(None).unwrap();
        s.database.url = contactd::configuration::DatabaseUrl::parse(&db.url).unwrap();
        s
    };
    let store = contactd::store::Store::connect(&settings.database)
        .await
        .unwrap();
    let live = |t: String| {
        let store = store.clone();
        async move { store.authenticate(&t).await.unwrap().is_some() }
    };
    assert!(
        live(short.clone()).await && live(forever.clone()).await && live(default.clone()).await
    );
    let expiries: Vec<Option<i64>> =
        sqlx::query("SELECT expires_at FROM api_tokens ORDER BY created_at")
            .fetch_all(store.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| sqlx::Row::get(r, "expires_at"))
            .collect();
    assert!(
        expiries[0].is_some() && expiries[1].is_none() && expiries[2].is_some(),
        "{expiries:?}"
    );
    // The clock moves past the short token's expiry (the test moves it, not waits).
    sqlx::query("UPDATE api_tokens SET expires_at = 1 WHERE expires_at = $1")
        .bind(expiries[0].unwrap())
        .execute(store.pool())
        .await
        .unwrap();
    assert!(!live(short).await, "an expired token authenticates nobody");

    let (code, _, stderr) = output(&mut contactd(&db, &["token", "revoke", &default]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !live(default.clone()).await,
        "a revoked token authenticates nobody"
    );
    let (code, _, _) = output(&mut contactd(&db, &["token", "revoke", &default]));
    assert_eq!(code, 1, "revoking twice says so");

    let (code, _, stderr) = output(&mut contactd(&db, &["user", "disable", "sam"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !live(forever.clone()).await,
        "a disabled user's tokens stop working"
    );
    let (code, _, _) = output(&mut contactd(&db, &["token", "create", "--user", "sam"]));
    assert_eq!(code, 1, "no new tokens for a disabled user");
    let (code, _, stderr) = output(&mut contactd(&db, &["user", "enable", "sam"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(live(forever.clone()).await);
    let (code, stdout, stderr) = output(&mut contactd(&db, &["token", "revoke", "--user", "sam"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("revoked 2 token"),
        "the expired one and the last live one: {stdout}"
    );
    assert!(!live(forever).await);
    let (code, _, _) = output(&mut contactd(&db, &["user", "disable", "nobody"]));
    assert_eq!(code, 1);
    let audited: i64 = sqlx::Row::get(
        &sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM audit_log WHERE entity = 'staff_user'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap(),
        "n",
    );
    assert!(
        audited >= 7,
        "every token and user change is audited ({audited})"
    );
    store.close().await;
}
