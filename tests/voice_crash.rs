//! kill -9 in the middle of a recorded call, then start again: the recording is
//! repaired to the audio written before the crash, registered, and playable. And in
//! the middle of an offer to an advisor: the state is reconciled at start.

mod common;

use std::time::Duration;

use common::daemon::start;
use common::{TestDatabase, sipp};
use contactd::configuration::Backend;
use contactd_sip::g711::Codec;
use sqlx::{Connection, Row};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    killed_mid_call_then_restarted(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    killed_mid_call_then_restarted(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_offer_sqlite() {
    killed_mid_offer_then_restarted(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_offer_postgres() {
    killed_mid_offer_then_restarted(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_answer_sqlite() {
    killed_at_answer_with_wreckage_then_restarted(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_answer_postgres() {
    killed_at_answer_with_wreckage_then_restarted(Backend::Postgres).await
}

/// SIGKILL as soon as the call is up, before a byte of audio reached the disk, with
/// other wreckage beside it (a garbage part file, a row whose file is gone): the
/// daemon starts again, the empty recording is a playable empty file, the rest are
/// marked lost with their reasons.
async fn killed_at_answer_with_wreckage_then_restarted(backend: Backend) {
    use common::raw_sip::ConfirmedCall;
    let db = TestDatabase::new(backend).await;
    let notify = db.dir().join("notify.sock");
    let _socket = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    let mut daemon = start(&db, &notify);
    let sip: std::net::SocketAddr = daemon.sip_udp.clone().unwrap().parse().unwrap();
    // Once the call's first media arrives, it is confirmed and its recording started.
    let _call = ConfirmedCall::place(sip, "07700900123").await;
    daemon.child.kill().unwrap(); // SIGKILL
    daemon.child.wait().unwrap();

    // Wreckage: a part file that is no recording, and a row whose file is gone.
    let recordings = db.dir().join("recordings");
    let garbage = recordings.join("2020/01/01/garbage.wav.part");
    std::fs::create_dir_all(garbage.parent().unwrap()).unwrap();
    std::fs::write(&garbage, b"this is not a recording at all, just junk").unwrap();
    let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    sqlx::query(
        "INSERT INTO recordings (id, call_id, path, status, started_at, expires_at, legal_hold, repaired) \
         VALUES ('vanished', 'x', '2020/01/02/vanished.wav', 'recording', 0, 1, 0, 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    let mut again = start(&db, &notify);
    let rows =
        sqlx::query("SELECT id, path, status, failure, duration_ms FROM recordings ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        rows.len(),
        3,
        "the call, the garbage file, the vanished row"
    );
    for row in &rows {
        let id: String = row.get("id");
        let status: String = row.get("status");
        let failure: Option<String> = row.get("failure");
        let path: String = row.get("path");
        if id == "vanished" {
            assert_eq!(status, "lost");
            assert!(failure.unwrap().contains("recordings.dir"));
        } else if path.contains("garbage") {
            assert_eq!(status, "lost");
            assert!(failure.unwrap().contains("not"), "a reason is given");
        } else {
            assert_eq!(status, "complete", "the call's recording");
            let wav = hound::WavReader::open(recordings.join(&path))
                .expect("an empty recording is still a playable file");
            assert_eq!(wav.spec().channels, 2);
        }
    }
    conn.close().await.unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(again.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(again.child.wait().unwrap().code(), Some(0));
}

/// The unfinished recording file, once it holds `bytes` or more.
async fn part_file_with(dir: &std::path::Path, bytes: u64) -> std::path::PathBuf {
    for _ in 0..600 {
        let found = walk(dir).into_iter().find(|p| {
            p.to_string_lossy().ends_with(".wav.part")
                && std::fs::metadata(p)
                    .map(|m| m.len() >= bytes)
                    .unwrap_or(false)
        });
        if let Some(p) = found {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no recording of {bytes} bytes appeared within 30 s");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

async fn killed_mid_call_then_restarted(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let notify = db.dir().join("notify.sock");
    let _socket = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    let mut daemon = start(&db, &notify);
    let sip = daemon
        .sip_udp
        .clone()
        .expect("the voice channel is on")
        .parse()
        .unwrap();

    // A caller sending ten seconds of tone.
    let dir = tempfile::tempdir().unwrap();
    let media = sipp::tone_file(dir.path(), Codec::Pcmu, 10);
    let text = sipp::call_scenario("07700900888", "0", &media, "0", "1", None);
    let dir_path = dir.path().to_path_buf();
    let caller = tokio::spawn(async move { sipp::run(&dir_path, &text, sip, 1, "u1").await });

    // About two seconds of stereo audio on disk, then the plug is pulled.
    let recordings = db.dir().join("recordings");
    let part = part_file_with(&recordings, 44 + 2 * 8000 * 4).await;
    daemon.child.kill().unwrap(); // SIGKILL
    daemon.child.wait().unwrap();
    caller.abort();
    let on_disk = std::fs::metadata(&part).unwrap().len();

    // start() returns once the daemon serves, which is after repair has run.
    let mut again = start(&db, &notify);
    let final_path = std::path::PathBuf::from(part.to_string_lossy().trim_end_matches(".part"));
    assert!(!part.exists(), "the unfinished file was repaired");
    let wav = hound::WavReader::open(&final_path).expect("the repaired recording is a valid WAV");
    let spec = wav.spec();
    assert_eq!((spec.channels, spec.sample_rate), (2, 8000));
    let frames = wav.duration() as u64;
    assert_eq!(
        frames,
        (on_disk - 44) / 4,
        "every whole frame written before the crash is kept"
    );
    assert!(frames >= 2 * 8000);
    let left: Vec<i16> = wav
        .into_samples::<i16>()
        .map(Result::unwrap)
        .step_by(2)
        .collect();
    let crossings = left[4000..12000]
        .windows(2)
        .filter(|w| (w[0] < 0) != (w[1] < 0))
        .count();
    assert!(
        (crossings as f64 - 880.0).abs() < 20.0,
        "the caller's tone survived: {crossings} crossings in 1 s"
    );

    let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    let row = sqlx::query("SELECT status, repaired, duration_ms, sha256 FROM recordings")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(row.try_get::<String, _>("status").unwrap(), "complete");
    assert_eq!(row.try_get::<i64, _>("repaired").unwrap(), 1);
    assert_eq!(
        row.try_get::<i64, _>("duration_ms").unwrap() as u64,
        frames * 1000 / 8000
    );
    assert_eq!(
        row.try_get::<String, _>("sha256").unwrap(),
        contactd_recordings::wav::hash_file(&final_path).unwrap()
    );
    conn.close().await.unwrap();

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(again.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(again.child.wait().unwrap().code(), Some(0));
}

/// SIGKILL while an advisor's phone (PJSIP) rings with a caller: started again, the
/// leg left ringing is ended as interrupted (no dialog outlived the daemon), the
/// advisor rung is available, not stuck ringing, and another set away by staff
/// before the crash is still away.
async fn killed_mid_offer_then_restarted(backend: Backend) {
    use common::daemon::{contactd, output, start_with};
    let db = TestDatabase::new(backend).await;
    let notify = db.dir().join("notify.sock");
    let _socket = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    let env = [
        ("CONTACTD__SIP__REGISTRAR", "true".to_string()),
        ("CONTACTD__SIP__PHONE_CHECK_SECONDS", "0".to_string()),
        ("CONTACTD__QUEUES__RING_SECONDS", "120".to_string()),
        (
            "CONTACTD__QUEUES__SERVICES",
            "{waste={max_wait_seconds=300,max_length=10}}".to_string(),
        ),
    ];
    let run = |args: &[&str]| {
        let (code, stdout, stderr) = output(contactd(&db, args).envs(env.clone()));
        assert_eq!(code, 0, "contactd {args:?}: {stdout}{stderr}");
        stdout
    };
    let add = |username: &str| {
        let out = run(&[
            "advisors",
            "add",
            username,
            "--sip-username",
            username,
            "--skill",
            "waste",
        ]);
        let id = out
            .split('(')
            .nth(1)
            .unwrap()
            .split(')')
            .next()
            .unwrap()
            .to_string();
        (id, out.lines().last().unwrap().trim().to_string())
    };
    let (val, val_password) = add("val");
    let (wes, _) = add("wes");
    run(&["user", "add", "sue", "--role", "supervisor"]);
    let token = run(&["token", "create", "--user", "sue"])
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();

    let mut daemon = start_with(&db, &notify, &env);
    let api = |addr: &str, path: &str| format!("http://{addr}/api/v1{path}");
    let client = reqwest::Client::new();
    let away = client
        .put(api(&daemon.addr, &format!("/advisors/{wes}/state")))
        .bearer_auth(&token)
        .json(&serde_json::json!({"state": "away"}))
        .send()
        .await
        .unwrap();
    assert_eq!(away.status(), 200);

    // Val's phone rings and rings (PJSIP, letting the call ring).
    let sip: std::net::SocketAddr = daemon.sip_udp.clone().unwrap().parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/pjsua_phone.py");
    let tone = sipp::tone_file(dir.path(), Codec::Pcmu, 5);
    let mut phone = tokio::process::Command::new("python3")
        .arg(script)
        .args([
            &format!("sip:{sip}"),
            "val",
            &val_password,
            "udp",
            "3600",
            "ignore",
        ])
        .arg(&tone)
        .arg(dir.path().join("heard.wav"))
        .args(["5", "PCMU"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(phone.stdout.take().unwrap()).lines();
        // PJSIP logs to its standard output too; its report is the JSON line.
        let registered = async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && v["event"] == "registered"
                {
                    return v;
                }
            }
            panic!("the phone ended without registering");
        };
        let registered = tokio::time::timeout(Duration::from_secs(60), registered)
            .await
            .expect("the phone registers in time");
        assert_eq!(registered["status"], 200, "{registered}");
        // Its log lines keep coming: read and dropped, so it never blocks on them.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    }
    let media = sipp::tone_file(dir.path(), Codec::Pcmu, 60);
    let text = sipp::call_scenario("07700900171", "0", &media, "0", "*1", None);
    let dir_path = dir.path().to_path_buf();
    let caller = tokio::spawn(async move { sipp::run(&dir_path, &text, sip, 1, "u1").await });
    let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    let leg_is = |outcome: &'static str| {
        sqlx::query("SELECT COUNT(*) AS n FROM call_legs WHERE advisor_id = $1 AND outcome = $2")
            .bind(val.clone())
            .bind(outcome)
    };
    let mut ringing = false;
    for _ in 0..600 {
        let n: i64 = leg_is("ringing")
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .try_get("n")
            .unwrap();
        if n == 1 {
            ringing = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ringing, "val's phone rings");
    daemon.child.kill().unwrap(); // SIGKILL, mid-offer
    daemon.child.wait().unwrap();
    caller.abort();

    let again = start_with(&db, &notify, &env);
    let row = sqlx::query("SELECT outcome, ended_at FROM call_legs WHERE advisor_id = $1")
        .bind(val.clone())
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(row.try_get::<String, _>("outcome").unwrap(), "interrupted");
    assert!(row.try_get::<Option<i64>, _>("ended_at").unwrap().is_some());
    let list: serde_json::Value = client
        .get(api(&again.addr, "/advisors"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let state_of = |id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == id)
            .map(|a| a["state"].clone())
            .unwrap()
    };
    assert_eq!(state_of(&val), "available", "never stuck ringing: {list}");
    assert_eq!(state_of(&wes), "away", "still away after the crash: {list}");
    let _ = phone.kill().await;
}
