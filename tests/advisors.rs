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
use contactd::domain::{Role, Timestamp};
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
    add_advisor_for(app, username, algorithm, "council_tax").await
}

async fn add_advisor_for(
    app: &TestApp,
    username: &str,
    algorithm: &str,
    skill: &str,
) -> (String, String) {
    let (status, body) = app
        .post(
            Role::Supervisor,
            "/api/v1/advisors",
            json!({"name": format!("Advisor {username}"), "sip_username": username,
                   "skills": [skill], "digest_algorithm": algorithm}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["digest_algorithm"], algorithm);
    (
        body["id"].as_str().unwrap().to_string(),
        body["sip_password"].as_str().unwrap().to_string(),
    )
}

/// `count` REGISTERs for `user` without credentials, sent back to back from `from`;
/// the status of every answer that came (none is left unanswered for long).
async fn register_burst(app: &TestApp, from: &str, user: &str, count: usize) -> Vec<u16> {
    let target = app.sip_addr(SipTransport::Udp);
    let peer = common::raw_sip::UdpPeer::bind(from, target).await;
    let local = peer.local();
    for n in 0..count {
        let register = format!(
            "REGISTER sip:{target} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK-flood-{n}\r\n\
             From: <sip:{user}@{target}>;tag=f{n}\r\n\
             To: <sip:{user}@{target}>\r\n\
             Call-ID: flood-{n}-{local}\r\n\
             CSeq: 1 REGISTER\r\n\
             Contact: <sip:{user}@{local}>\r\n\
             Expires: 600\r\n\
             Max-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n"
        );
        peer.send(&register).await;
    }
    let mut statuses = Vec::new();
    while statuses.len() < count {
        let Some(m) = peer.recv(Duration::from_secs(5)).await else {
            break;
        };
        if m.starts_with("SIP/2.0 1") {
            continue;
        }
        if m.starts_with("SIP/2.0 503") {
            assert!(m.contains("Retry-After: "), "{m}");
        }
        statuses.push(common::raw_sip::status(&m));
    }
    statuses
}

/// A flood of REGISTERs: from one address, those beyond its rate get 503 with
/// Retry-After (its first are challenged); from forty addresses at once, what
/// arrives is answered and the daemon keeps serving; a phone then registers as usual.
async fn register_floods_get_503_and_phones_still_register(backend: Backend) {
    let (app, _clock) = app(backend).await;
    let (_, password) = add_advisor(&app, "mia", "MD5").await;
    let one = register_burst(&app, "127.0.0.20", "mia", 100).await;
    assert_eq!(one.len(), 100, "every REGISTER answered: {one:?}");
    let challenged = one.iter().filter(|s| **s == 401).count();
    let busy = one.iter().filter(|s| **s == 503).count();
    assert!(
        challenged >= 20 && busy >= 30 && challenged + busy == 100,
        "a burst of twice sip.registers_per_second, then 503: {challenged} challenged, {busy} busy"
    );
    let floods = (0..40).map(|n| {
        let app = &app;
        async move { register_burst(app, &format!("127.0.1.{}", n + 1), "mia", 15).await }
    });
    let answered: usize = futures_util::future::join_all(floods)
        .await
        .iter()
        .map(|statuses| {
            assert!(
                statuses.iter().all(|s| *s == 401 || *s == 503),
                "{statuses:?}"
            );
            statuses.len()
        })
        .sum();
    // (600 datagrams at once overflow the kernel's socket buffers: over UDP a flood
    // loses some on the way, whoever answers it.)
    assert!(answered > 0, "the flood is answered");
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let run = sipp_register(&app, "127.0.0.21", "mia", &password, 200).await;
    assert!(
        run.success,
        "a phone registers after the flood: {}",
        run.output
    );
    app.stop().await;
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

/// A daemon whose waste service has a queue, calls accepted from 127.0.0.1.
async fn queue_app(backend: Backend) -> TestApp {
    queue_app_with(backend, |_| {}).await
}

/// A daemon with a waste queue, advisors' phones registering, then `adjust`ed.
async fn queue_app_with(
    backend: Backend,
    adjust: impl FnOnce(&mut contactd::configuration::Settings),
) -> TestApp {
    queue_app_on(backend, Arc::new(contactd::scheduler::SystemClock), adjust).await
}

/// `queue_app_with`, on `clock`.
async fn queue_app_on(
    backend: Backend,
    clock: Arc<dyn contactd::scheduler::Clock>,
    adjust: impl FnOnce(&mut contactd::configuration::Settings),
) -> TestApp {
    common::spawn_app_with_clock(backend, clock, |s| {
        common::listen_for_calls(s, "127.0.0.1/32");
        s.sip.registrar = true;
        s.sip.ring_ms = 200;
        s.ivr.digit_timeout_seconds = 4;
        s.queues.ring_seconds = 10;
        s.queues.wrap_up_seconds = 0;
        s.queues.services.insert(
            "waste".into(),
            contactd::configuration::ServiceQueue {
                max_wait_seconds: 30,
                max_length: 10,
                priority_seconds: 0,
                hours: None,
            },
        );
        adjust(s);
    })
    .await
}

/// How a test phone takes its first call (see tests/peers/pjsua_phone.py): `answer`,
/// `decline`, `ignore`, `hold` or `transfer:TARGET`; how long it talks, the one codec
/// it offers, and the tone it sends.
struct Behaviour<'a> {
    mode: &'a str,
    talk_seconds: u32,
    codec: &'a str,
    tone_hz: f64,
}

/// Where a test phone registers: the daemon's address and transport, and over TLS
/// the only CA certificate the phone trusts.
struct RegistrarAt<'a> {
    addr: SocketAddr,
    transport: SipTransport,
    trusting: Option<&'a Path>,
}

/// An advisor's PJSIP phone that answers the first call (see tests/peers/pjsua_phone.py).
struct AnsweringPhone {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl AnsweringPhone {
    async fn register(
        target: SocketAddr,
        user: &str,
        password: &str,
        dir: &Path,
        talk_seconds: u32,
        codec: &str,
    ) -> AnsweringPhone {
        let how = Behaviour {
            mode: "answer",
            talk_seconds,
            codec,
            tone_hz: 1000.0,
        };
        Self::take_calls(how, target, user, password, dir).await
    }

    /// A phone that takes its first call as `how` says.
    async fn take_calls(
        how: Behaviour<'_>,
        target: SocketAddr,
        user: &str,
        password: &str,
        dir: &Path,
    ) -> AnsweringPhone {
        let registrar = RegistrarAt {
            addr: target,
            transport: SipTransport::Udp,
            trusting: None,
        };
        Self::take_calls_at(how, registrar, user, password, dir).await
    }

    /// The same, registering at `registrar` over its transport.
    async fn take_calls_at(
        how: Behaviour<'_>,
        registrar: RegistrarAt<'_>,
        user: &str,
        password: &str,
        dir: &Path,
    ) -> AnsweringPhone {
        let Behaviour {
            mode,
            talk_seconds,
            codec,
            tone_hz,
        } = how;
        use tokio::io::AsyncBufReadExt;
        let tone = dir.join("advisor-tone.wav");
        write_tone(&tone, tone_hz, 20);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/pjsua_phone.py");
        let target = registrar.addr;
        let uri = match registrar.transport {
            SipTransport::Udp => format!("sip:{target}"),
            stream => format!("sip:{target};transport={}", stream.as_str()),
        };
        let mut command = tokio::process::Command::new("python3");
        if let Some(ca) = registrar.trusting {
            command.env("PHONE_TLS_CA", ca);
        }
        let mut child = command
            .arg(script)
            // Three hours (the registrar cuts it to its maximum): a test that moves
            // its clock on two hours keeps the phone registered.
            .args([
                &uri,
                user,
                password,
                registrar.transport.as_str(),
                "10800",
                mode,
            ])
            .arg(&tone)
            .arg(dir.join("advisor-heard.wav"))
            .args([&talk_seconds.to_string(), codec])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs");
        let stdout = child.stdout.take().unwrap();
        let mut phone = AnsweringPhone {
            child,
            lines: tokio::io::BufReader::new(stdout).lines(),
        };
        let registered = phone.next("registered").await;
        assert_eq!(registered["status"], 200, "{registered}");
        phone
    }

    /// The next line the phone prints about `event`.
    async fn next(&mut self, event: &str) -> Value {
        let read = async {
            while let Some(line) = self.lines.next_line().await.unwrap() {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["event"] == event
                {
                    return v;
                }
            }
            panic!("the phone ended without {event} (scripts/test installs pjsua2-python)");
        };
        tokio::time::timeout(Duration::from_secs(150), read)
            .await
            .expect("the phone reports in time")
    }
}

/// Follows `GET /api/v1/events/calls` for `advisor` as an agent would, collecting
/// `(event, data)` until an `ended`.
async fn follow_call_events(
    app: &TestApp,
    advisor: &str,
) -> tokio::task::JoinHandle<Vec<(String, Value)>> {
    let mut feed = app
        .client
        .get(app.url(&format!("/api/v1/events/calls?advisor={advisor}")))
        .bearer_auth(app.token(Role::Agent))
        .send()
        .await
        .unwrap();
    assert_eq!(feed.status(), 200);
    assert_eq!(
        feed.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    tokio::spawn(async move {
        let mut text = String::new();
        let mut events = Vec::new();
        while let Some(chunk) = feed.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(|v| v.trim().to_string())
                };
                if let (Some(kind), Some(data)) = (field("event:"), field("data:")) {
                    let done = kind == "ended";
                    events.push((kind, serde_json::from_str(&data).unwrap()));
                    if done {
                        return events;
                    }
                }
            }
        }
        events
    })
}

/// The call's one recording, once complete: its id, the caller's side (left) and
/// the daemon's (right).
async fn the_recording(app: &TestApp) -> (String, Vec<i16>, Vec<i16>) {
    use sqlx::Row;
    app.until_count("recordings WHERE status = 'complete'", 1)
        .await;
    assert_eq!(
        app.count("recordings").await,
        1,
        "one recording for the whole call"
    );
    let row = sqlx::query("SELECT id, path FROM recordings")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    let path = app
        .db
        .dir()
        .join("recordings")
        .join(row.try_get::<String, _>("path").unwrap());
    let samples: Vec<i16> = hound::WavReader::open(&path)
        .unwrap()
        .into_samples::<i16>()
        .map(Result::unwrap)
        .collect();
    (
        row.try_get("id").unwrap(),
        samples.iter().step_by(2).copied().collect(),
        samples.iter().skip(1).step_by(2).copied().collect(),
    )
}

/// The JSON in the only recording's metadata (a RIFF `LIST`/`INFO` chunk's `ICMT`),
/// read by walking the file's chunks.
async fn recording_metadata(app: &TestApp) -> Value {
    use sqlx::Row;
    app.until_count("recordings WHERE status = 'complete'", 1)
        .await;
    let path: String = sqlx::query("SELECT path FROM recordings")
        .fetch_one(app.store.pool())
        .await
        .unwrap()
        .try_get("path")
        .unwrap();
    let bytes = std::fs::read(app.db.dir().join("recordings").join(path)).unwrap();
    assert_eq!(&bytes[..4], b"RIFF");
    assert_eq!(
        u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize,
        bytes.len() - 8
    );
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        let body = &bytes[at + 8..at + 8 + len];
        if id == b"LIST" && &body[..4] == b"INFO" && &body[4..8] == b"ICMT" {
            let text_len = u32::from_le_bytes(body[8..12].try_into().unwrap()) as usize;
            let text = &body[12..12 + text_len];
            return serde_json::from_slice(text.strip_suffix(b"\0").unwrap()).unwrap();
        }
        at += 8 + len + len % 2;
    }
    panic!("no LIST/INFO comment in the recording");
}

/// The legs of the only call, as quality staff read them with its recording
/// (`GET /api/v1/requests/{reference}/recordings`): (advisor id, outcome, answered,
/// transferred to).
async fn legs_of_the_call(app: &TestApp) -> Vec<(String, String, bool, Option<String>)> {
    use sqlx::Row;
    app.until_count("recordings WHERE status = 'complete'", 1)
        .await;
    let reference: String = sqlx::query(
        "SELECT r.reference FROM service_requests r JOIN recordings c ON c.request_id = r.id",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap()
    .try_get("reference")
    .unwrap();
    let (status, recordings) = app
        .get(
            Role::Quality,
            &format!("/api/v1/requests/{reference}/recordings"),
        )
        .await;
    assert_eq!(status, 200, "{recordings}");
    recordings[0]["legs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["advisor_id"].as_str().unwrap().to_string(),
                l["outcome"].as_str().unwrap().to_string(),
                !l["answered_at"].is_null() && !l["ended_at"].is_null(),
                l["transferred_to"].as_str().map(str::to_string),
            )
        })
        .collect()
}

/// Waits (bounded) until the only advisor is on a call.
async fn until_the_advisor_is_on_a_call(app: &TestApp) {
    let mut answered = false;
    for _ in 0..600 {
        let (_, list) = app.get(Role::Supervisor, "/api/v1/advisors").await;
        if list[0]["state"] == "on_call" {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answered, "the advisor answered");
}

fn write_tone(path: &Path, hz: f64, seconds: u32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..8000 * seconds {
        let s = (2.0 * std::f64::consts::PI * hz * f64::from(i) / 8000.0).sin() * 8000.0;
        w.write_sample(s as i16).unwrap();
    }
    w.finalize().unwrap();
}

/// The share of a stretch's energy at `hz` (Goertzel), 0 to about 1.
fn share_at(samples: &[i16], rate: f64, hz: f64) -> f64 {
    let n = samples.len() as f64;
    let k = (0.5 + n * hz / rate).floor();
    let w = 2.0 * std::f64::consts::PI * k / n;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    let energy: f64 = samples.iter().map(|&x| f64::from(x).powi(2)).sum();
    if energy == 0.0 {
        0.0
    } else {
        2.0 * power / (n * energy)
    }
}

/// Whether some half-second of `samples` is mostly a `hz` tone.
fn has_tone(samples: &[i16], rate: u32, hz: f64) -> bool {
    let window = rate as usize / 2;
    samples
        .chunks(window)
        .filter(|c| c.len() == window)
        .any(|c| share_at(c, f64::from(rate), hz) > 0.5)
}

async fn a_caller_reaches_the_advisor_of_their_service_and_each_hears_the_other(backend: Backend) {
    let app = queue_app(backend).await;
    let (advisor, password) = add_advisor_for(&app, "erin", "SHA-256", "waste").await;
    let dir = tempfile::tempdir().unwrap();
    // The advisor's phone takes PCMA only; the caller sends PCMU: the daemon transcodes.
    let mut phone = AnsweringPhone::register(
        app.sip_addr(SipTransport::Udp),
        "erin",
        &password,
        dir.path(),
        4,
        "PCMA",
    )
    .await;
    // An advisor's screen follows the call event feed.
    let feed = follow_call_events(&app, &advisor).await;
    let media = sipp::tone_file(dir.path(), contactd_sip::g711::Codec::Pcmu, 40);
    let text = sipp::call_scenario("07700900123", "0", &media, "0", "*1", None);
    let run = sipp::run(dir.path(), &text, app.sip_addr(SipTransport::Udp), 1, "u1").await;
    assert!(
        run.success,
        "the caller is bridged, then told goodbye: {}",
        run.output
    );
    let events = tokio::time::timeout(Duration::from_secs(30), feed)
        .await
        .expect("the feed shows the call's end")
        .unwrap();
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["offered", "answered", "ended"]);
    let reference = events[0].1["reference"].as_str().unwrap();
    assert!(reference.starts_with("SR-"), "{:?}", events[0].1);
    assert!(
        events[0].1["customer_id"].is_string(),
        "the caller's record, to show"
    );
    assert_eq!(events[2].1["advisor_id"], advisor.as_str());
    let call = phone.next("call").await;
    assert_eq!(call["answered"], true, "{call}");
    assert_eq!(call["codec"], "PCMA", "{call}");
    assert!(
        call["from"].as_str().unwrap().contains("07700900123"),
        "the advisor sees who is calling: {call}"
    );
    let _ = phone.child.wait().await;

    // The advisor heard the caller's 440 Hz tone.
    // (PJSIP records at its conference bridge's rate.)
    let wav = hound::WavReader::open(dir.path().join("advisor-heard.wav")).unwrap();
    let rate = wav.spec().sample_rate;
    let heard: Vec<i16> = wav.into_samples::<i16>().map(Result::unwrap).collect();
    assert!(
        has_tone(&heard, rate, 440.0),
        "the advisor hears the caller"
    );
    assert!(!has_tone(&heard, rate, 1000.0), "and not their own voice");

    // The call's one recording: the caller on the left, the advisor on the right.
    let (_, left, right) = the_recording(&app).await;
    assert!(has_tone(&left, 8000, 440.0), "the caller on the left");
    assert!(has_tone(&right, 8000, 1000.0), "the advisor on the right");
    assert!(
        !has_tone(&left, 8000, 1000.0),
        "the advisor never on the caller's side"
    );

    // After the call (no wrap-up here) the advisor is available again.
    let (_, list) = app.get(Role::Supervisor, "/api/v1/advisors").await;
    let erin = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == advisor.as_str())
        .unwrap();
    assert_eq!(erin["state"], "available", "{erin}");
    app.stop().await;
}

async fn an_advisor_who_declines_or_does_not_answer_is_passed_and_the_next_answers(
    backend: Backend,
) {
    let app = common::spawn_app_with(backend, |s| {
        common::listen_for_calls(s, "127.0.0.1/32");
        s.sip.registrar = true;
        s.sip.ring_ms = 200;
        s.ivr.digit_timeout_seconds = 4;
        s.queues.ring_seconds = 3;
        s.queues.wrap_up_seconds = 300;
        // Away at the first offer left to ring (3 by default; counted in the unit
        // tests of advisors::Presence).
        s.queues.unanswered_before_away = 1;
        s.queues.services.insert(
            "waste".into(),
            contactd::configuration::ServiceQueue {
                max_wait_seconds: 40,
                max_length: 10,
                priority_seconds: 0,
                hours: None,
            },
        );
    })
    .await;
    let udp = app.sip_addr(SipTransport::Udp);
    let dir = tempfile::tempdir().unwrap();
    // Never seen before, all three are equally idle: they are offered in name order.
    let mut phones = Vec::new();
    let mut ids = Vec::new();
    for (name, mode) in [("frank", "decline"), ("gina", "ignore"), ("hal", "answer")] {
        let (id, password) = add_advisor_for(&app, name, "SHA-256", "waste").await;
        let own = dir.path().join(name);
        std::fs::create_dir(&own).unwrap();
        phones.push(
            AnsweringPhone::take_calls(
                Behaviour {
                    mode,
                    talk_seconds: 2,
                    codec: "PCMU",
                    tone_hz: 1000.0,
                },
                udp,
                name,
                &password,
                &own,
            )
            .await,
        );
        ids.push(id);
    }
    let media = sipp::tone_file(dir.path(), contactd_sip::g711::Codec::Pcmu, 40);
    let text = sipp::call_scenario("07700900124", "0", &media, "0", "*1", None);
    let run = sipp::run(dir.path(), &text, udp, 1, "u1").await;
    assert!(run.success, "{}", run.output);
    let mut reports = Vec::new();
    for phone in &mut phones {
        reports.push(phone.next("call").await);
    }
    assert_eq!(
        reports[0]["answered"], false,
        "frank declined: {}",
        reports[0]
    );
    assert_eq!(
        reports[1]["answered"], false,
        "gina let it ring: {}",
        reports[1]
    );
    assert_eq!(reports[2]["answered"], true, "hal answered: {}", reports[2]);
    let (_, list) = app.get(Role::Supervisor, "/api/v1/advisors").await;
    let state = |id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == id)
            .unwrap()["state"]
            .clone()
    };
    assert_eq!(
        state(&ids[0]),
        "available",
        "a decline is the advisor's choice"
    );
    assert_eq!(
        state(&ids[1]),
        "away",
        "an unanswered phone: not at their desk"
    );
    assert_eq!(
        state(&ids[2]),
        "wrap_up",
        "hal's wrap-up began when his leg ended"
    );
    // He ends it early.
    let (status, back) = app
        .put(
            Role::Supervisor,
            &format!("/api/v1/advisors/{}/state", ids[2]),
            json!({"state": "available"}),
        )
        .await;
    assert_eq!(status, 200, "{back}");
    assert_eq!(back["state"], "available");
    // The call record keeps every leg, in order: who was rung, how it went.
    let legs = legs_of_the_call(&app).await;
    let expected = [
        (ids[0].clone(), "declined".to_string(), false, None),
        (ids[1].clone(), "no_answer".to_string(), false, None),
        (ids[2].clone(), "ended".to_string(), true, None),
    ];
    assert_eq!(legs, expected);
    // Staff bring the away advisor back.
    let (status, back) = app
        .put(
            Role::Supervisor,
            &format!("/api/v1/advisors/{}/state", ids[1]),
            json!({"state": "available"}),
        )
        .await;
    assert_eq!(status, 200, "{back}");
    assert_eq!(back["state"], "available");
    app.stop().await;
}

/// With no advisor to answer within the queue's wait, a caller leaves a voicemail
/// (or, pressing 1, asks to be called back): a callback on the request that staff
/// see and close; a voicemail points at its stretch of the call's recording.
async fn no_advisor_means_a_voicemail_or_a_callback_that_staff_close(backend: Backend) {
    let app = common::spawn_app_with(backend, |s| {
        common::listen_for_calls(s, "127.0.0.1/32");
        s.sip.registrar = true;
        s.sip.ring_ms = 200;
        s.ivr.digit_timeout_seconds = 4;
        s.queues.voicemail_seconds = 3;
        s.queues.services.insert(
            "waste".into(),
            contactd::configuration::ServiceQueue {
                max_wait_seconds: 2,
                max_length: 10,
                priority_seconds: 0,
                hours: None,
            },
        );
    })
    .await;
    let udp = app.sip_addr(SipTransport::Udp);
    let dir = tempfile::tempdir().unwrap();
    let media = sipp::tone_file(dir.path(), contactd_sip::g711::Codec::Pcmu, 40);
    let text = sipp::call_scenario("07700900125", "0", &media, "0", "*1", None);
    let run = sipp::run(dir.path(), &text, udp, 1, "u1").await;
    assert!(run.success, "{}", run.output);

    let (status, open) = app.get(Role::Agent, "/api/v1/callbacks").await;
    assert_eq!(status, 200, "{open}");
    let open = open.as_array().unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    let voicemail = &open[0];
    assert_eq!(voicemail["kind"], "voicemail");
    assert_eq!(voicemail["number"], "+447700900125");
    let from = voicemail["voicemail_from_ms"].as_i64().unwrap();
    let to = voicemail["voicemail_to_ms"].as_i64().unwrap();
    assert!((2500..=4000).contains(&(to - from)), "{voicemail}");
    // The message is in the call's recording, on the caller's side, where it says.
    let (recording_id, left, _) = the_recording(&app).await;
    assert_eq!(voicemail["recording_id"], recording_id.as_str());
    let at = |ms: i64| (ms as usize * 8).min(left.len());
    assert!(
        has_tone(&left[at(from)..at(to)], 8000, 440.0),
        "the caller's message is in the recording between the offsets"
    );
    // On the request's timeline.
    let reference = voicemail["reference"].as_str().unwrap();
    let (_, timeline) = app
        .get(
            Role::Agent,
            &format!("/api/v1/requests/{reference}/timeline"),
        )
        .await;
    assert!(
        timeline
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "callback"),
        "{timeline}"
    );
    // Staff close it with what they did; it is closed once.
    let id = voicemail["id"].as_str().unwrap();
    let path = format!("/api/v1/callbacks/{id}/close");
    let (status, _) = app.post(Role::Agent, &path, json!({"outcome": ""})).await;
    assert_eq!(status, 422);
    let (status, closed) = app
        .post(
            Role::Agent,
            &path,
            json!({"outcome": "called back, collection booked"}),
        )
        .await;
    assert_eq!(status, 200, "{closed}");
    let (status, _) = app
        .post(Role::Agent, &path, json!({"outcome": "again"}))
        .await;
    assert_eq!(status, 409);
    let (_, open) = app.get(Role::Agent, "/api/v1/callbacks").await;
    assert!(open.as_array().unwrap().is_empty());
    let (_, all) = app.get(Role::Agent, "/api/v1/callbacks?all=true").await;
    assert_eq!(all[0]["status"], "closed");
    assert_eq!(all[0]["closed_by"], "staff:agent-user");
    let (status, _) = app.get(Role::Quality, "/api/v1/callbacks").await;
    assert_eq!(
        status, 403,
        "quality staff review calls; they do not call back"
    );

    // Pressing 1 during the message instead: a callback on the caller's number.
    let text = sipp::call_scenario(
        "07700900126",
        "0",
        &media,
        "0",
        "*1",
        Some(("11111111", 13_500)),
    );
    let run = sipp::run(dir.path(), &text, udp, 1, "u1").await;
    assert!(run.success, "{}", run.output);
    let (_, open) = app.get(Role::Agent, "/api/v1/callbacks").await;
    let open = open.as_array().unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["kind"], "callback");
    assert_eq!(open[0]["number"], "+447700900126");
    assert!(open[0]["voicemail_from_ms"].is_null());
    let queued_at = open[0]["queued_at"].clone();
    let booked = Timestamp::parse(open[0]["created_at"].as_str().unwrap()).unwrap();

    // They ring back before anyone has called them: their wait still counts from
    // when they first joined the queue (and again nobody answers).
    let text = sipp::call_scenario("07700900126", "0", &media, "0", "*1", None);
    let run = sipp::run(dir.path(), &text, udp, 1, "u1").await;
    assert!(run.success, "{}", run.output);
    let (_, open) = app.get(Role::Agent, "/api/v1/callbacks").await;
    let open = open.as_array().unwrap();
    assert_eq!(open.len(), 2, "{open:?}");
    let again = open.iter().find(|c| c["kind"] == "voicemail").unwrap();
    assert_eq!(again["queued_at"], queued_at, "{open:?}");
    let left = Timestamp::parse(again["created_at"].as_str().unwrap()).unwrap();
    assert!(left.millis() - booked.millis() > 5_000, "{open:?}");
    app.stop().await;
}

/// The advisor puts the caller on hold (a re-INVITE, sendonly) and takes them off:
/// meanwhile the caller hears the music on hold, on the right of the one recording,
/// and the conversation carries on after.
async fn an_advisor_holding_the_caller_plays_them_music(backend: Backend) {
    let app = queue_app(backend).await;
    let (_, password) = add_advisor_for(&app, "ida", "SHA-256", "waste").await;
    let dir = tempfile::tempdir().unwrap();
    let udp = app.sip_addr(SipTransport::Udp);
    let mut phone = AnsweringPhone::take_calls(
        Behaviour {
            mode: "hold",
            talk_seconds: 7,
            codec: "PCMU",
            tone_hz: 1000.0,
        },
        udp,
        "ida",
        &password,
        dir.path(),
    )
    .await;
    let media = sipp::tone_file(dir.path(), contactd_sip::g711::Codec::Pcmu, 40);
    let text = sipp::call_scenario("07700900127", "0", &media, "0", "*1", None);
    let run = sipp::run(dir.path(), &text, udp, 1, "u1").await;
    assert!(run.success, "{}", run.output);
    let call = phone.next("call").await;
    assert_eq!(call["answered"], true, "{call}");
    let (_, _, right) = the_recording(&app).await;
    // Where the advisor is heard: before the hold, and after it.
    let advisor_at: Vec<usize> = right
        .chunks(2000)
        .enumerate()
        .filter(|(_, c)| c.len() == 2000 && share_at(c, 8000.0, 1000.0) > 0.5)
        .map(|(i, _)| i)
        .collect();
    let (first, last) = (advisor_at[0], *advisor_at.last().unwrap());
    let gap = (first..=last)
        .find(|i| !advisor_at.contains(i))
        .expect("a hold in between");
    assert!(
        advisor_at.iter().any(|&i| i > gap),
        "the advisor is heard again after the hold"
    );
    // In the gap: the music (its notes), not the advisor.
    let music = right[gap * 2000..]
        .chunks(2000)
        .take_while(|c| share_at(c, 8000.0, 1000.0) < 0.5)
        .filter(|c| {
            [261.63, 329.63, 392.0, 523.25, 349.23]
                .iter()
                .any(|hz| share_at(c, 8000.0, *hz) > 0.3)
        })
        .count();
    assert!(
        music >= 6,
        "at least a second and a half of music on hold, found {music} quarter-seconds"
    );
    app.stop().await;
}

/// An advisor transfers the caller blindly (REFER) to another advisor: the REFER is
/// accepted (202, NOTIFY 200), the first leg ends, the second advisor answers, and
/// the call's one recording carries on with each advisor in turn on the right.
async fn a_blind_transfer_reaches_the_second_advisor_and_the_recording_carries_on(
    backend: Backend,
) {
    let app = queue_app(backend).await;
    let udp = app.sip_addr(SipTransport::Udp);
    let dir = tempfile::tempdir().unwrap();
    let (jack, jack_password) = add_advisor_for(&app, "jack", "SHA-256", "waste").await;
    // Kate answers other things: she is reached by name only.
    let (kate, kate_password) = add_advisor_for(&app, "kate", "SHA-256", "highways").await;
    let (jack_dir, kate_dir) = (dir.path().join("jack"), dir.path().join("kate"));
    std::fs::create_dir(&jack_dir).unwrap();
    std::fs::create_dir(&kate_dir).unwrap();
    let mut first = AnsweringPhone::take_calls(
        Behaviour {
            mode: "transfer:kate",
            talk_seconds: 10,
            codec: "PCMU",
            tone_hz: 1000.0,
        },
        udp,
        "jack",
        &jack_password,
        &jack_dir,
    )
    .await;
    let mut second = AnsweringPhone::take_calls(
        Behaviour {
            mode: "answer",
            talk_seconds: 3,
            codec: "PCMA",
            tone_hz: 1500.0,
        },
        udp,
        "kate",
        &kate_password,
        &kate_dir,
    )
    .await;
    let feed = follow_call_events(&app, &kate).await;
    let media = sipp::tone_file(dir.path(), contactd_sip::g711::Codec::Pcmu, 40);
    let text = sipp::call_scenario("07700900128", "0", &media, "0", "*1", None);
    let run = sipp::run(dir.path(), &text, udp, 1, "u1").await;
    assert!(run.success, "{}", run.output);
    assert_eq!(first.next("call").await["answered"], true);
    assert_eq!(second.next("call").await["answered"], true);
    let events = tokio::time::timeout(Duration::from_secs(30), feed)
        .await
        .unwrap()
        .unwrap();
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["offered", "answered", "ended"], "kate's screen");

    // One recording across the transfer.
    let (_, _, right) = the_recording(&app).await;
    let heard_at = |hz: f64| {
        right
            .chunks(4000)
            .position(|c| c.len() == 4000 && share_at(c, 8000.0, hz) > 0.5)
            .unwrap_or_else(|| panic!("{hz} Hz on the right"))
    };
    assert!(
        heard_at(1000.0) < heard_at(1500.0),
        "jack first, then kate, in the same recording"
    );
    assert_eq!(
        legs_of_the_call(&app).await,
        [
            (
                jack.clone(),
                "transferred".to_string(),
                true,
                Some("kate".to_string())
            ),
            (kate.clone(), "ended".to_string(), true, None),
        ],
        "both legs, with the transfer, on the call's record"
    );
    // And in the recording file's own metadata, timed from its start.
    let metadata = recording_metadata(&app).await;
    let legs = metadata["legs"].as_array().unwrap();
    let in_file: Vec<(&str, &str, Option<&str>)> = legs
        .iter()
        .map(|l| {
            (
                l["advisor_id"].as_str().unwrap(),
                l["outcome"].as_str().unwrap(),
                l["transferred_to"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        in_file,
        [
            (jack.as_str(), "transferred", Some("kate")),
            (kate.as_str(), "ended", None)
        ],
        "{metadata}"
    );
    let ms = |l: &Value, k: &str| l[k].as_i64().unwrap();
    assert!(
        ms(&legs[0], "offered_ms") <= ms(&legs[0], "answered_ms")
            && ms(&legs[0], "ended_ms") <= ms(&legs[1], "answered_ms")
            && ms(&legs[1], "answered_ms") <= ms(&legs[1], "ended_ms"),
        "in order, within the recording: {metadata}"
    );
    let (_, list) = app.get(Role::Supervisor, "/api/v1/advisors").await;
    for id in [&jack, &kate] {
        let a = list
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == id.as_str())
            .unwrap();
        assert_eq!(a["state"], "available", "{a}");
    }
    app.stop().await;
}

/// A daemon with a waste queue whose legs fall silent after `media_timeout` seconds.
async fn queue_app_timing_out(backend: Backend, media_timeout: u64) -> TestApp {
    queue_app_with(backend, move |s| {
        s.sip.media_timeout_seconds = media_timeout;
        s.queues.ring_seconds = 15;
    })
    .await
}

/// The advisor's phone vanishes mid-call (killed: no BYE, no more RTP): its leg is
/// ended after the media timeout and the caller, still there, is told goodbye.
async fn an_advisor_phone_that_vanishes_is_ended_after_the_media_timeout(backend: Backend) {
    let app = queue_app_timing_out(backend, 3).await;
    let (advisor, password) = add_advisor_for(&app, "lena", "SHA-256", "waste").await;
    let dir = tempfile::tempdir().unwrap();
    let udp = app.sip_addr(SipTransport::Udp);
    let mut phone = AnsweringPhone::register(udp, "lena", &password, dir.path(), 60, "PCMU").await;
    let feed = follow_call_events(&app, &advisor).await;
    let media = sipp::tone_file(dir.path(), contactd_sip::g711::Codec::Pcmu, 40);
    let text = sipp::call_scenario("07700900129", "0", &media, "0", "*1", None);
    let caller = {
        let dir = dir.path().to_path_buf();
        tokio::spawn(async move { sipp::run(&dir, &text, udp, 1, "u1").await })
    };
    // Once the advisor's screen shows the call answered, the phone dies.
    until_the_advisor_is_on_a_call(&app).await;
    phone.child.start_kill().unwrap();
    let run = caller.await.unwrap();
    assert!(run.success, "the caller is told goodbye: {}", run.output);
    let events = tokio::time::timeout(Duration::from_secs(30), feed)
        .await
        .unwrap()
        .unwrap();
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["offered", "answered", "ended"]);
    let (_, list) = app.get(Role::Supervisor, "/api/v1/advisors").await;
    assert_eq!(
        list[0]["state"], "available",
        "the advisor is not left on a call"
    );
    app.stop().await;
}

/// Shutting down with a bridged call: it may go on for the grace period, then both
/// legs are ended and its recording finished.
async fn shutdown_ends_both_legs_of_a_bridged_call_after_the_grace(backend: Backend) {
    let app = queue_app_timing_out(backend, 30).await;
    let (advisor, password) = add_advisor_for(&app, "mo", "SHA-256", "waste").await;
    let dir = tempfile::tempdir().unwrap();
    let udp = app.sip_addr(SipTransport::Udp);
    let mut phone = AnsweringPhone::register(udp, "mo", &password, dir.path(), 60, "PCMU").await;
    let feed = follow_call_events(&app, &advisor).await;
    let media = sipp::tone_file(dir.path(), contactd_sip::g711::Codec::Pcmu, 40);
    let text = sipp::call_scenario("07700900130", "0", &media, "0", "*1", None);
    let caller = {
        let dir = dir.path().to_path_buf();
        tokio::spawn(async move { sipp::run(&dir, &text, udp, 1, "u1").await })
    };
    until_the_advisor_is_on_a_call(&app).await;
    app.begin_shutdown();
    // The grace (5 s in tests) passes; then the caller gets a BYE and so does the phone.
    let run = caller.await.unwrap();
    assert!(
        run.success,
        "the caller's leg is ended with a BYE: {}",
        run.output
    );
    let call = phone.next("call").await;
    assert_eq!(call["answered"], true);
    let events = tokio::time::timeout(Duration::from_secs(30), feed)
        .await
        .unwrap()
        .unwrap();
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        ["offered", "answered"],
        "the feed closes as the daemon starts shutting down"
    );
    // The daemon then stops: its drain waits for the call's recording to be finished.
    app.stop().await;
}

/// A window of opening hours two hours from now (Europe/London), on that day: the
/// queue is closed now and open once the test's clock has moved on two hours.
fn hours_opening_in_two_hours() -> contactd::domain::OpeningHours {
    use chrono::{Datelike, Timelike};
    let then =
        (chrono::Utc::now() + chrono::Duration::hours(2)).with_timezone(&chrono_tz::Europe::London);
    let minute = then.hour() * 60 + then.minute();
    let (open, close) = (minute.saturating_sub(30), (minute + 30).min(23 * 60 + 59));
    let day = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
        [then.weekday().num_days_from_monday() as usize];
    let text = format!(
        "{day} {:02}:{:02}-{:02}:{:02}",
        open / 60,
        open % 60,
        close / 60,
        close % 60
    );
    contactd::domain::OpeningHours::parse(&text).unwrap()
}

/// Outside the queue's opening hours (Europe/London) nobody waits: the caller is told
/// so and leaves a voicemail; once open (the clock two hours on), the same call
/// reaches the advisor.
async fn outside_opening_hours_the_caller_is_told_and_may_leave_a_voicemail(backend: Backend) {
    let clock = TestClock::new();
    let app = common::spawn_app_with_clock(backend, clock.clone(), |s| {
        common::listen_for_calls(s, "127.0.0.1/32");
        s.sip.registrar = true;
        s.sip.ring_ms = 200;
        s.ivr.digit_timeout_seconds = 4;
        s.sip.register_max_seconds = 10800;
        s.queues.voicemail_seconds = 3;
        s.queues.wrap_up_seconds = 0;
        s.queues.services.insert(
            "waste".into(),
            contactd::configuration::ServiceQueue {
                max_wait_seconds: 30,
                max_length: 10,
                priority_seconds: 0,
                hours: Some(hours_opening_in_two_hours()),
            },
        );
    })
    .await;
    let (_, password) = add_advisor_for(&app, "olive", "SHA-256", "waste").await;
    let dir = tempfile::tempdir().unwrap();
    let udp = app.sip_addr(SipTransport::Udp);
    let mut phone = AnsweringPhone::register(udp, "olive", &password, dir.path(), 2, "PCMU").await;
    let media = sipp::tone_file(dir.path(), contactd_sip::g711::Codec::Pcmu, 40);
    let text = sipp::call_scenario("07700900131", "0", &media, "0", "*1", None);
    let run = sipp::run(dir.path(), &text, udp, 1, "u1").await;
    assert!(run.success, "{}", run.output);
    let (_, open) = app.get(Role::Agent, "/api/v1/callbacks").await;
    let open = open.as_array().unwrap();
    assert_eq!(
        open.len(),
        1,
        "closed: a voicemail, no advisor rung: {open:?}"
    );
    assert_eq!(open[0]["kind"], "voicemail");
    let (_, list) = app.get(Role::Supervisor, "/api/v1/advisors").await;
    assert_eq!(list[0]["state"], "available", "the phone was never rung");

    clock.advance(Duration::from_secs(2 * 3600));
    let text = sipp::call_scenario("07700900132", "0", &media, "0", "*1", None);
    let call = tokio::spawn({
        let dir = dir.path().to_path_buf();
        async move { sipp::run(&dir, &text, udp, 1, "u1").await }
    });
    let answered = phone.next("call").await;
    assert_eq!(answered["answered"], true, "open: the advisor's phone rang");
    let run = call.await.unwrap();
    assert!(run.success, "{}", run.output);
    let (_, open) = app.get(Role::Agent, "/api/v1/callbacks").await;
    assert_eq!(open.as_array().unwrap().len(), 1, "no new voicemail");
    app.stop().await;
}

/// A music file whose pitch says where in it the caller is: a sweep from 300 Hz
/// rising 100 Hz a second, for eight seconds, at a steady level.
fn write_sweep(path: &Path) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    let mut phase = 0.0f64;
    for i in 0..8000 * 8 {
        let hz = 300.0 + 100.0 * f64::from(i) / 8000.0;
        phase += 2.0 * std::f64::consts::PI * hz / 8000.0;
        w.write_sample((phase.sin() * 8000.0) as i16).unwrap();
    }
    w.finalize().unwrap();
}

/// Per 100 ms of `samples`: the sweep's pitch there (by zero crossings), or `None`
/// where it is not the music (speech, silence).
fn music_pitch(samples: &[i16]) -> Vec<Option<f64>> {
    samples
        .chunks(800)
        .map(|c| {
            let peak = c.iter().map(|s| i32::from(*s).abs()).max().unwrap_or(0);
            let crossings = c.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
            let hz = crossings as f64 / 2.0 / (c.len() as f64 / 8000.0);
            ((6500..=9500).contains(&peak) && (280.0..=1120.0).contains(&hz)).then_some(hz)
        })
        .collect()
}

/// A waiting caller is told their place in the queue now and then, and the music
/// carries on where it was after each announcement (not from its start).
async fn a_waiting_caller_hears_their_place_and_the_music_resumes(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let music = dir.path().join("sweep.wav");
    write_sweep(&music);
    let app = common::spawn_app_with(backend, |s| {
        common::listen_for_calls(s, "127.0.0.1/32");
        s.sip.ring_ms = 200;
        s.ivr.digit_timeout_seconds = 4;
        s.queues.voicemail_seconds = 2;
        s.queues.position_every_seconds = 3;
        s.queues.music_on_hold = music.clone();
        s.queues.services.insert(
            "waste".into(),
            contactd::configuration::ServiceQueue {
                max_wait_seconds: 18,
                max_length: 10,
                priority_seconds: 0,
                hours: None,
            },
        );
    })
    .await;
    let udp = app.sip_addr(SipTransport::Udp);
    let media = sipp::tone_file(dir.path(), contactd_sip::g711::Codec::Pcmu, 60);
    let text = sipp::call_scenario("07700900133", "0", &media, "0", "*1", None);
    let run = sipp::run(dir.path(), &text, udp, 1, "u1").await;
    assert!(run.success, "{}", run.output);
    let (_, _, right) = the_recording(&app).await;
    let pitch = music_pitch(&right);
    // Stretches of music, as (first, last) windows of 100 ms: a window is the music
    // when a neighbour's pitch is within 30 Hz of its own (a window of speech can
    // look like a tone, but not like the sweep's next step).
    let near = |i: usize, j: usize| match (pitch[i], pitch.get(j).copied().flatten()) {
        (Some(a), Some(b)) => (a - b).abs() < 30.0,
        _ => false,
    };
    let mut stretches: Vec<(usize, usize)> = Vec::new();
    for i in 0..pitch.len() {
        if !(near(i, i + 1) || (i > 0 && near(i, i - 1))) {
            continue;
        }
        match stretches.last_mut() {
            Some((_, last)) if *last + 1 == i => *last = i,
            _ => stretches.push((i, i)),
        }
    }
    stretches.retain(|(a, b)| b - a >= 5);
    assert!(
        stretches.len() >= 3,
        "music, an announcement, music, another, music: {stretches:?}"
    );
    let prompt_len = |name: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("config/prompts/{name}.wav"));
        hound::WavReader::open(path).unwrap().duration() as usize
    };
    // "You are number", a pause, "one", a pause, "in the queue...".
    let announcement =
        prompt_len("position_before") + prompt_len("digit_1") + prompt_len("position_after") + 4000;
    for pair in stretches.windows(2).take(2) {
        let ((_, end), (start, _)) = (pair[0], pair[1]);
        let between = (start - end - 1) * 800;
        assert!(
            between <= announcement + 2400 && between + 2400 >= announcement,
            "the break in the music is the announcement ({} ms), not {} ms",
            announcement / 8,
            between / 8
        );
        let (before, after) = (pitch[end].unwrap(), pitch[start].unwrap());
        assert!(
            (-40.0..=60.0).contains(&(after - before)),
            "the music resumes where it was: {before:.0} Hz before, {after:.0} Hz after"
        );
    }
    app.stop().await;
}

/// Whether the daemon counts `username`'s phone as answering its checks, once it
/// says `answering` (bounded wait: the checks run every second here).
async fn until_the_phone_answering_is(app: &TestApp, username: &str, answering: bool) {
    for _ in 0..300 {
        let phones = devices(app, username).await;
        if phones.len() == 1 && phones[0]["answering"] == answering {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{username}'s phone never showed answering = {answering}");
}

/// A phone that stops answering while its registration is still in date (a "ghost
/// agent") is found out by the daemon's OPTIONS checks within seconds and is not
/// rung: the caller leaves a voicemail. Once it answers again, it is rung again.
async fn a_phone_that_stops_answering_is_not_rung_until_it_answers_again(backend: Backend) {
    let app = common::spawn_app_with(backend, |s| {
        common::listen_for_calls(s, "127.0.0.1/32");
        s.sip.registrar = true;
        s.sip.phone_check_seconds = 1;
        s.sip.ring_ms = 200;
        s.ivr.digit_timeout_seconds = 4;
        s.queues.voicemail_seconds = 2;
        s.queues.wrap_up_seconds = 0;
        s.queues.services.insert(
            "waste".into(),
            contactd::configuration::ServiceQueue {
                max_wait_seconds: 3,
                max_length: 10,
                priority_seconds: 0,
                hours: None,
            },
        );
    })
    .await;
    let (_, password) = add_advisor_for(&app, "quinn", "SHA-256", "waste").await;
    let dir = tempfile::tempdir().unwrap();
    let udp = app.sip_addr(SipTransport::Udp);
    let mut phone = AnsweringPhone::register(udp, "quinn", &password, dir.path(), 2, "PCMU").await;
    until_the_phone_answering_is(&app, "quinn", true).await;
    let pid = phone.child.id().unwrap().to_string();
    let signal = |sig: &str| {
        let done = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(done.success());
    };
    // Frozen: registered, but answering nothing.
    signal("-STOP");
    until_the_phone_answering_is(&app, "quinn", false).await;
    let media = sipp::tone_file(dir.path(), contactd_sip::g711::Codec::Pcmu, 40);
    let text = sipp::call_scenario("07700900141", "0", &media, "0", "*1", None);
    let run = sipp::run(dir.path(), &text, udp, 1, "u1").await;
    assert!(run.success, "{}", run.output);
    let (_, open) = app.get(Role::Agent, "/api/v1/callbacks").await;
    assert_eq!(open.as_array().unwrap().len(), 1, "a voicemail: {open}");
    let (_, list) = app.get(Role::Supervisor, "/api/v1/advisors").await;
    assert_eq!(list[0]["state"], "available", "never rung, so not set away");

    signal("-CONT");
    until_the_phone_answering_is(&app, "quinn", true).await;
    let text = sipp::call_scenario("07700900142", "0", &media, "0", "*1", None);
    let call = tokio::spawn({
        let dir = dir.path().to_path_buf();
        async move { sipp::run(&dir, &text, udp, 1, "u1").await }
    });
    let answered = phone.next("call").await;
    assert_eq!(answered["answered"], true, "rung again once it answers");
    let run = call.await.unwrap();
    assert!(run.success, "{}", run.output);
    app.stop().await;
}

/// A phone outside the council's network registers over TLS (checking the daemon's
/// certificate against the council's CA) and takes a call over it; the connection it
/// opened is kept while it is registered, however quiet (not even re-opened: its
/// source port stays the same), because it is the only way to the phone. Strangers get nothing from the TLS port: a handshake never finished
/// is closed within the limit, and plain SIP sent to it gets no SIP answer.
async fn a_phone_registers_over_tls_and_takes_a_call_through_it(backend: Backend) {
    use std::io::{Read, Write};
    let certificates = common::tls::TestCertificates::new();
    let app = queue_app_with(backend, |s| {
        s.sip.listen.push(contactd::configuration::SipListenSetting(
            contactd_sip::SipListen::parse("tls:127.0.0.1:0").unwrap(),
        ));
        s.sip.tls_certificate = Some(certificates.certificate.clone());
        s.sip.tls_key = Some(certificates.key.clone());
        // Connections without a call are idle after a second (and handshakes bounded
        // by that too).
        s.sip.tcp_idle_seconds = 1;
    })
    .await;
    let tls = app.sip_addr(SipTransport::Tls);

    // A stranger opens a connection and never says hello: closed within the limit.
    let mut silent = std::net::TcpStream::connect(tls).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 512];
    assert_eq!(
        silent.read(&mut buf).unwrap(),
        0,
        "a handshake never begun is closed"
    );
    // Plain SIP to the TLS port is not SIP to us.
    let mut plain = std::net::TcpStream::connect(tls).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    plain
        .write_all(b"OPTIONS sip:contactd@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK1\r\nFrom: <sip:x@127.0.0.1>;tag=1\r\nTo: <sip:contactd@127.0.0.1>\r\nCall-ID: plain\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("SIP/2.0"),
        "no SIP answer on a connection that is not TLS"
    );

    let (advisor, password) = add_advisor_for(&app, "tess", "SHA-256", "waste").await;
    let dir = tempfile::tempdir().unwrap();
    let how = Behaviour {
        mode: "answer",
        talk_seconds: 4,
        codec: "PCMU",
        tone_hz: 1000.0,
    };
    let registrar = RegistrarAt {
        addr: tls,
        transport: SipTransport::Tls,
        trusting: Some(&certificates.ca),
    };
    let mut phone =
        AnsweringPhone::take_calls_at(how, registrar, "tess", &password, dir.path()).await;
    let bound = devices(&app, "tess").await;
    assert_eq!(bound.len(), 1, "{bound:?}");
    assert_eq!(bound[0]["transport"], "tls", "{bound:?}");
    let connection = bound[0]["source"].clone();

    // The caller comes in from the trunk over UDP and spends seconds in the menu,
    // long past the idle second: the phone's connection must still be there.
    let feed = follow_call_events(&app, &advisor).await;
    let media = sipp::tone_file(dir.path(), contactd_sip::g711::Codec::Pcmu, 40);
    let text = sipp::call_scenario("07700900151", "0", &media, "0", "*1", None);
    let udp = app.sip_addr(SipTransport::Udp);
    let caller = tokio::spawn({
        let dir = dir.path().to_path_buf();
        async move { sipp::run(&dir, &text, udp, 1, "u1").await }
    });
    until_the_advisor_is_on_a_call(&app).await;
    assert_eq!(
        devices(&app, "tess").await[0]["source"],
        connection,
        "on the connection it registered on: never closed, never opened again"
    );
    let run = caller.await.unwrap();
    assert!(run.success, "{}", run.output);
    let call = phone.next("call").await;
    assert_eq!(call["answered"], true, "rung over TLS: {call}");
    let events = tokio::time::timeout(Duration::from_secs(30), feed)
        .await
        .expect("the feed shows the call's end")
        .unwrap();
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["offered", "answered", "ended"]);
    let _ = phone.child.wait().await;
    let wav = hound::WavReader::open(dir.path().join("advisor-heard.wav")).unwrap();
    let rate = wav.spec().sample_rate;
    let heard: Vec<i16> = wav.into_samples::<i16>().map(Result::unwrap).collect();
    assert!(
        has_tone(&heard, rate, 440.0),
        "the advisor hears the caller"
    );
    let (_, left, right) = the_recording(&app).await;
    assert!(has_tone(&left, 8000, 440.0), "the caller on the left");
    assert!(has_tone(&right, 8000, 1000.0), "the advisor on the right");

    // A keep-alive over TLS (RFC 5626: CRLF CRLF, answered CRLF), from OpenSSL's
    // client checking the daemon's certificate against the test CA.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut openssl = tokio::process::Command::new("openssl")
        .args(["s_client", "-quiet", "-verify_return_error", "-CAfile"])
        .arg(&certificates.ca)
        .args(["-connect", &tls.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl runs (scripts/test installs it)");
    let mut to_daemon = openssl.stdin.take().unwrap();
    to_daemon.write_all(b"\r\n\r\n").await.unwrap();
    to_daemon.flush().await.unwrap();
    let mut pong = [0u8; 2];
    let mut from_daemon = openssl.stdout.take().unwrap();
    tokio::time::timeout(Duration::from_secs(20), from_daemon.read_exact(&mut pong))
        .await
        .expect("a pong in time")
        .unwrap();
    assert_eq!(&pong, b"\r\n", "the keep-alive is answered over TLS");
    app.stop().await;
}

/// An advisor with a desk phone and a softphone: both ring, both answer at once, and
/// the caller is bridged to one of them only. The other is CANCELed or, having
/// answered too, sent ACK and BYE by the daemon (its call ends long before it would
/// have hung up itself); the call record has one leg, and the advisor is available
/// again afterwards, never left reserved.
async fn two_phones_answering_one_offer_give_one_bridge(backend: Backend) {
    let app = queue_app(backend).await;
    let (advisor, password) = add_advisor_for(&app, "uma", "SHA-256", "waste").await;
    let udp = app.sip_addr(SipTransport::Udp);
    let (desk_dir, soft_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Each talks for 6 s of media when it is the one bridged; the tones tell them apart.
    let phone = |tone_hz: f64| Behaviour {
        mode: "answer",
        talk_seconds: 6,
        codec: "PCMU",
        tone_hz,
    };
    let mut desk =
        AnsweringPhone::take_calls(phone(1000.0), udp, "uma", &password, desk_dir.path()).await;
    let mut soft =
        AnsweringPhone::take_calls(phone(1400.0), udp, "uma", &password, soft_dir.path()).await;
    assert_eq!(devices(&app, "uma").await.len(), 2);

    let caller_dir = tempfile::tempdir().unwrap();
    let media = sipp::tone_file(caller_dir.path(), contactd_sip::g711::Codec::Pcmu, 40);
    let text = sipp::call_scenario("07700900161", "0", &media, "0", "*1", None);
    let run = sipp::run(caller_dir.path(), &text, udp, 1, "u1").await;
    assert!(run.success, "one bridge, then goodbye: {}", run.output);
    let (desk_call, soft_call) = (desk.next("call").await, soft.next("call").await);
    let _ = (desk.child.wait().await, soft.child.wait().await);

    let heard = |dir: &Path| {
        let wav = hound::WavReader::open(dir.join("advisor-heard.wav")).unwrap();
        let rate = wav.spec().sample_rate;
        let samples: Vec<i16> = wav.into_samples::<i16>().map(Result::unwrap).collect();
        has_tone(&samples, rate, 440.0)
    };
    let (desk_heard, soft_heard) = (heard(desk_dir.path()), heard(soft_dir.path()));
    assert!(
        desk_heard != soft_heard,
        "exactly one phone is bridged to the caller: desk {desk_call}, soft {soft_call}"
    );
    let (winner, loser, winner_hz, loser_hz) = if desk_heard {
        (&desk_call, &soft_call, 1000.0, 1400.0)
    } else {
        (&soft_call, &desk_call, 1400.0, 1000.0)
    };
    assert_eq!(winner["answered"], true, "{winner}");
    assert_eq!(
        loser["ended_by_peer"], true,
        "the other phone's call is ended by the daemon (CANCEL, or ACK and BYE), not left up: {loser}"
    );
    let (_, left, right) = the_recording(&app).await;
    assert!(has_tone(&left, 8000, 440.0));
    assert!(
        has_tone(&right, 8000, winner_hz),
        "the bridged phone on the right"
    );
    assert!(
        !has_tone(&right, 8000, loser_hz),
        "the other phone never reaches the recording"
    );
    let legs = legs_of_the_call(&app).await;
    assert_eq!(
        legs,
        [(advisor.clone(), "ended".to_string(), true, None)],
        "one offer, one leg"
    );
    let (_, list) = app.get(Role::Supervisor, "/api/v1/advisors").await;
    assert_eq!(list[0]["state"], "available", "{list}");
    app.stop().await;
}

/// Polls `GET /api/v1/queues` (bounded) until the waste queue holds `callers`; that
/// queue as listed then.
async fn until_waiting(app: &TestApp, callers: u64) -> Value {
    let mut last = Value::Null;
    for _ in 0..1200 {
        let (status, queues) = app.get(Role::Agent, "/api/v1/queues").await;
        assert_eq!(status, 200, "{queues}");
        last = queues[0].clone();
        if last["waiting"] == callers {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{callers} callers never waited in the queue: {last}");
}

/// A caller gives up while waiting; meanwhile another joins; the first rings back
/// (within the rejoin window) and is still served first, as their wait counts from
/// when they first joined. The queue board shows it all, naming nobody.
async fn a_caller_who_rings_back_keeps_their_place_in_the_queue(backend: Backend) {
    let clock = TestClock::new();
    let app = queue_app_on(backend, clock.clone(), |s| {
        s.queues.services.get_mut("waste").unwrap().max_wait_seconds = 120;
    })
    .await;
    let udp = app.sip_addr(SipTransport::Udp);
    let (ada, password) = add_advisor_for(&app, "ada", "SHA-256", "waste").await;
    let dir = tempfile::tempdir().unwrap();
    let _phone = AnsweringPhone::register(udp, "ada", &password, dir.path(), 2, "PCMU").await;
    let state = format!("/api/v1/advisors/{ada}/state");
    let (status, _) = app
        .put(Role::Supervisor, &state, json!({"state": "away"}))
        .await;
    assert_eq!(status, 200);
    let (status, board) = app.get(Role::Agent, "/api/v1/queues").await;
    assert_eq!(status, 200, "{board}");
    assert_eq!(board[0]["service"], "waste");
    assert_eq!(board[0]["open"], true);
    assert_eq!(board[0]["waiting"], 0);
    assert_eq!(board[0]["advisors"]["away"], 1, "{board}");
    let (status, _) = app.get(Role::Quality, "/api/v1/queues").await;
    assert_eq!(status, 403, "quality staff review recordings, not queues");

    // The first caller joins, waits, and gives up.
    let media = sipp::tone_file(dir.path(), contactd_sip::g711::Codec::Pcmu, 60);
    let first = "07700900201";
    let leaving = sipp::leaving_scenario(first, &media, "*1", &sipp::pause(20_000));
    let gives_up = {
        let dir = dir.path().to_path_buf();
        tokio::spawn(async move { sipp::run(&dir, &leaving, udp, 1, "u1").await })
    };
    let waiting = until_waiting(&app, 1).await;
    assert!(
        waiting.get("caller").is_none() && waiting.get("number").is_none(),
        "{waiting}"
    );
    let run = gives_up.await.unwrap();
    assert!(run.success, "{}", run.output);
    until_waiting(&app, 0).await;

    // Two minutes on, a second caller joins, then the first rings back.
    clock.advance(Duration::from_secs(120));
    let calling = |number: &'static str| {
        let dir = dir.path().to_path_buf();
        let text = sipp::call_scenario(number, "0", &media, "0", "*1", None);
        tokio::spawn(async move { sipp::run(&dir, &text, udp, 1, "u1").await })
    };
    let _second = calling("07700900202");
    until_waiting(&app, 1).await;
    let _again = calling(first);
    let board = until_waiting(&app, 2).await;
    assert!(
        board["longest_wait_seconds"].as_i64().unwrap() >= 120,
        "the longest wait counts from when the first caller first joined: {board}"
    );

    // Ada comes back: the first caller is offered to her before the second.
    let events = follow_call_events(&app, &ada).await;
    let (status, _) = app
        .put(Role::Supervisor, &state, json!({"state": "available"}))
        .await;
    assert_eq!(status, 200);
    let events = tokio::time::timeout(Duration::from_secs(120), events)
        .await
        .expect("the offer is answered and ends")
        .unwrap();
    let offered = &events.iter().find(|(kind, _)| kind == "offered").unwrap().1;
    use sqlx::Row;
    let from: String = sqlx::query("SELECT from_address FROM contacts WHERE id = $1")
        .bind(offered["contact_id"].as_str().unwrap())
        .fetch_one(app.store.pool())
        .await
        .unwrap()
        .try_get("from_address")
        .unwrap();
    assert_eq!(from, "+447700900201", "the caller who rang back goes first");
    app.stop().await;
}

/// Session timers (RFC 4028) with sipp as the caller, two calls at once, each first
/// refused 422 for asking 30 s: one where the caller refreshes, once, with an UPDATE
/// that also holds the call (sendonly) and stops its media — the hold outlasts five
/// media timeouts, and the daemon ends the call when the next refresh does not come;
/// one where the daemon refreshes, with an UPDATE at half the interval; and one
/// where it refreshes with a re-INVITE, the caller not allowing UPDATE.
async fn session_timers_have_one_refresher_and_a_refresh_that_never_comes_ends_the_call(
    backend: Backend,
) {
    let app = queue_app_with(backend, |s| {
        s.sip.media_timeout_seconds = 10;
        s.queues.services.get_mut("waste").unwrap().max_wait_seconds = 300;
    })
    .await;
    let udp = app.sip_addr(SipTransport::Udp);
    // Each caller keeps one block of the scenario (see tests/sip/uac_session_timer.xml).
    const BLOCKS: [&str; 3] = ["they refresh", "we refresh", "we re-invite"];
    let caller = |number: &str, block: &str, seconds: u32| {
        let dir = tempfile::tempdir().unwrap();
        let media = sipp::tone_file(dir.path(), contactd_sip::g711::Codec::Pcmu, seconds);
        let (refresher, allow) = match block {
            "they refresh" => ("uac", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE"),
            "we refresh" => ("uas", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE"),
            _ => ("uas", "INVITE, ACK, BYE, CANCEL, OPTIONS"),
        };
        let mut text = sipp::scenario(
            "uac_session_timer.xml",
            &[
                ("CALLER", number),
                ("REFRESHER", refresher),
                ("ALLOW", allow),
                ("MEDIA", media.to_str().unwrap()),
            ],
        );
        for other in BLOCKS.iter().filter(|b| **b != block) {
            text = sipp::replace_block(&text, other, "");
        }
        (dir, text)
    };
    // Their media stops 9 s in, just after the hold.
    let (they_dir, they) = caller("07700900211", "they refresh", 9);
    let (we_dir, we) = caller("07700900212", "we refresh", 60);
    let (reinvite_dir, reinvite) = caller("07700900213", "we re-invite", 60);
    let they_refresh = async {
        let started = std::time::Instant::now();
        let run = sipp::run(they_dir.path(), &they, udp, 1, "u1").await;
        (run, started.elapsed())
    };
    let ((they, lasted), we, reinvite) = tokio::join!(
        they_refresh,
        sipp::run(we_dir.path(), &we, udp, 1, "u1"),
        sipp::run(reinvite_dir.path(), &reinvite, udp, 1, "u1"),
    );
    assert!(
        they.success,
        "422 then 90 s with refresher=uac; the hold by UPDATE; our BYE: {}",
        they.output
    );
    assert!(
        lasted >= Duration::from_secs(66),
        "held without media for well over the 10 s media timeout, ended only 60 s after \
         the refresh (RFC 4028 §10): {lasted:?}"
    );
    assert!(
        we.success,
        "422 then 90 s with refresher=uas; our UPDATE refresh: {}",
        we.output
    );
    assert!(
        reinvite.success,
        "no UPDATE allowed: our refresh is a re-INVITE: {}",
        reinvite.output
    );
    app.stop().await;
}

/// Talking to an advisor, the caller (sipp) keys 4 in the media at payload type 96
/// and 7 by SIP INFO, over and over; the advisor's PJSIP phone, which agreed
/// telephone-event at 101, receives both as RFC 4733 events at its own type.
async fn keys_the_caller_presses_reach_the_advisor_at_the_advisors_payload_type(backend: Backend) {
    let app = queue_app(backend).await;
    let (_, password) = add_advisor_for(&app, "kai", "SHA-256", "waste").await;
    let dir = tempfile::tempdir().unwrap();
    let udp = app.sip_addr(SipTransport::Udp);
    let mut phone = AnsweringPhone::register(udp, "kai", &password, dir.path(), 60, "PCMU").await;
    let media = sipp::tone_file(dir.path(), contactd_sip::g711::Codec::Pcmu, 60);
    let caller = "07700900221";
    // Once past the menu, 20 rounds of 4 then 7, 0.7 s apart: the later ones reach
    // the advisor (those keyed before the bridge were not meant for them, and are
    // not passed on).
    let keying: String = std::iter::once(sipp::pause(8_000))
        .chain((0..20).map(|n| {
            format!(
                "{}{}{}{}",
                sipp::pause(700),
                sipp::rtp_key('4'),
                sipp::pause(700),
                sipp::info_key(caller, '7', n + 2)
            )
        }))
        .collect();
    let text = sipp::leaving_scenario(caller, &media, "*1", &keying);
    let run = sipp::run(dir.path(), &text, udp, 1, "u1").await;
    assert!(run.success, "{}", run.output);
    let call = phone.next("call").await;
    assert_eq!(call["answered"], true, "{call}");
    assert_eq!(call["ended_by_peer"], true, "the caller hung up: {call}");
    let digits = call["digits"].as_str().unwrap();
    assert!(
        digits.contains('4') && digits.contains('7') && digits.chars().all(|d| "47".contains(d)),
        "both kinds of key, and nothing else: {call}"
    );
    app.stop().await;
}

/// Announcements of the caller's place are due every 2 s, but while an advisor's
/// phone rings for them (8 s, never answered) the caller hears the music and only
/// the music: an announcement would be cut off by the advisor answering. Where the
/// ringing was is read from the recording's own metadata.
async fn no_announcement_starts_while_an_advisors_phone_rings(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let music = dir.path().join("sweep.wav");
    write_sweep(&music);
    let app = queue_app_with(backend, |s| {
        s.queues.ring_seconds = 8;
        s.queues.unanswered_before_away = 1;
        s.queues.position_every_seconds = 2;
        s.queues.voicemail_seconds = 2;
        s.queues.music_on_hold = music.clone();
        s.queues.services.get_mut("waste").unwrap().max_wait_seconds = 14;
    })
    .await;
    let udp = app.sip_addr(SipTransport::Udp);
    let (_, password) = add_advisor_for(&app, "lou", "SHA-256", "waste").await;
    let how = Behaviour {
        mode: "ignore",
        talk_seconds: 0,
        codec: "PCMU",
        tone_hz: 1000.0,
    };
    let _phone = AnsweringPhone::take_calls(how, udp, "lou", &password, dir.path()).await;
    let media = sipp::tone_file(dir.path(), contactd_sip::g711::Codec::Pcmu, 60);
    let text = sipp::call_scenario("07700900231", "0", &media, "0", "*1", None);
    let run = sipp::run(dir.path(), &text, udp, 1, "u1").await;
    assert!(run.success, "{}", run.output);

    let metadata = recording_metadata(&app).await;
    let leg = &metadata["legs"][0];
    assert_eq!(leg["outcome"], "no_answer", "{metadata}");
    let (rang_from, rang_to) = (
        leg["offered_ms"].as_i64().unwrap() as usize,
        leg["ended_ms"].as_i64().unwrap() as usize,
    );
    assert!(rang_to - rang_from >= 7_500, "{metadata}");
    let (_, _, right) = the_recording(&app).await;
    let pitch = music_pitch(&right);
    // 100 ms windows well inside the ringing: each the music, each following on
    // from the one before (or the music starting over from its lowest note).
    let inside = (rang_from + 400) / 100..(rang_to - 400) / 100;
    let breaks: Vec<usize> = inside
        .clone()
        .filter(|&i| match (pitch[i], pitch[i + 1]) {
            (Some(a), Some(b)) => !((b - a).abs() < 30.0 || a - b > 500.0),
            _ => true,
        })
        .collect();
    assert!(
        breaks.len() <= 2,
        "nothing but music while the phone rang ({inside:?}); breaks at {breaks:?}"
    );
    // After the ringing, announcements come again (the one held back first).
    let after = (rang_to / 100)..(rang_to / 100 + 40).min(pitch.len() - 1);
    assert!(
        after.filter(|&i| pitch[i].is_none()).count() >= 10,
        "the held-back announcement follows the ringing"
    );
    app.stop().await;
}

/// A phone behind NAT: its Contact is a private address no one can reach, and its
/// NAT mapping changes (it re-registers from a new source port). The daemon offers the
/// next call to the address and port the REGISTER last came from, where the phone
/// (sipp as UAS) declines it; nothing is sent to the old port.
async fn a_phone_behind_nat_is_reached_at_the_port_it_last_registered_from(backend: Backend) {
    let app = queue_app_with(backend, |s| {
        // sipp as a UAS would take an OPTIONS check for a call of its scenario.
        s.sip.phone_check_seconds = 0;
        s.queues.voicemail_seconds = 2;
        s.queues.services.get_mut("waste").unwrap().max_wait_seconds = 4;
    })
    .await;
    let udp = app.sip_addr(SipTransport::Udp);
    let (advisor, password) = add_advisor_for(&app, "nat", "MD5", "waste").await;
    let dir = tempfile::tempdir().unwrap();
    let register = sipp::scenario(
        "uac_register.xml",
        &[
            ("USER", "nat"),
            ("PASSWORD", &password),
            ("EXPIRES", "600"),
            ("FINAL", "200"),
        ],
    )
    .replace(
        "Contact: <sip:nat@[local_ip]:[local_port]>",
        "Contact: <sip:nat@192.168.1.50:5060>",
    );
    let (before, after) = (sipp::free_udp_port(), sipp::free_udp_port());
    for port in [before, after] {
        let at = sipp::SippAt {
            local: "127.0.0.1",
            port: Some(port),
        };
        let run = sipp::run_at(at, dir.path(), &register, udp).await;
        assert!(run.success, "registered from port {port}: {}", run.output);
    }
    let phones = devices(&app, "nat").await;
    assert_eq!(phones.len(), 1, "one phone, re-registered: {phones:?}");
    assert_eq!(phones[0]["contact"], "sip:nat@192.168.1.50:5060");
    assert_eq!(phones[0]["source"], format!("127.0.0.1:{after}"));

    let phone = {
        let dir = dir.path().to_path_buf();
        let declining = sipp::scenario("uas_decline.xml", &[]);
        tokio::spawn(async move {
            let at = sipp::SippAt {
                local: "127.0.0.1",
                port: Some(after),
            };
            sipp::serve(at, &dir, &declining).await
        })
    };
    let media = sipp::tone_file(dir.path(), contactd_sip::g711::Codec::Pcmu, 40);
    let text = sipp::call_scenario("07700900241", "0", &media, "0", "*1", None);
    let run = sipp::run(dir.path(), &text, udp, 1, "u1").await;
    assert!(run.success, "{}", run.output);
    let phone = phone.await.unwrap();
    assert!(
        phone.success,
        "the offer reached the phone at its new port: {}",
        phone.output
    );
    assert_eq!(
        legs_of_the_call(&app).await,
        [(advisor, "declined".to_string(), false, None)],
        "declined by the phone, not unreachable"
    );
    app.stop().await;
}

on_both_backends!(
    a_phone_registers_with_md5_and_is_unreachable_once_it_expires,
    a_softphone_registers_with_sha256_over_udp_and_tcp,
    wrong_passwords_get_403_and_the_source_is_locked_out,
    only_supervisors_and_admins_manage_advisors_and_input_is_checked,
    strangers_may_register_but_never_call_in,
    a_caller_reaches_the_advisor_of_their_service_and_each_hears_the_other,
    an_advisor_who_declines_or_does_not_answer_is_passed_and_the_next_answers,
    no_advisor_means_a_voicemail_or_a_callback_that_staff_close,
    an_advisor_holding_the_caller_plays_them_music,
    a_blind_transfer_reaches_the_second_advisor_and_the_recording_carries_on,
    an_advisor_phone_that_vanishes_is_ended_after_the_media_timeout,
    shutdown_ends_both_legs_of_a_bridged_call_after_the_grace,
    outside_opening_hours_the_caller_is_told_and_may_leave_a_voicemail,
    a_waiting_caller_hears_their_place_and_the_music_resumes,
    a_phone_that_stops_answering_is_not_rung_until_it_answers_again,
    a_phone_registers_over_tls_and_takes_a_call_through_it,
    two_phones_answering_one_offer_give_one_bridge,
    a_caller_who_rings_back_keeps_their_place_in_the_queue,
    session_timers_have_one_refresher_and_a_refresh_that_never_comes_ends_the_call,
    keys_the_caller_presses_reach_the_advisor_at_the_advisors_payload_type,
    no_announcement_starts_while_an_advisors_phone_rings,
    register_floods_get_503_and_phones_still_register,
    a_phone_behind_nat_is_reached_at_the_port_it_last_registered_from,
);
