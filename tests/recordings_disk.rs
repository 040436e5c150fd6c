//! Recordings on disks that fail: a recordings filesystem that fills during a call (a
//! small tmpfs the test mounts), and a recordings directory that cannot be written at
//! all. The daemon must say so (/readyz), keep what was written, mark the row, and
//! never tell a caller a call is recorded when it is not.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::raw_sip::{self, ConfirmedCall, Dialog, UdpPeer, status};
use common::{TestApp, spawn_app_with};
use contactd::configuration::{Backend, WhenUnrecordable};
use contactd_sip::config::SipTransport;
use sqlx::Row;

on_both_backends!(
    a_recordings_filesystem_filling_mid_call_is_reported_and_kept,
    an_unwritable_recordings_directory_is_found_at_start,
);

/// A tmpfs of `kib` KiB mounted for the test, unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(kib: u32) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recordings");
        std::fs::create_dir(&path).unwrap();
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={kib}k,mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs (it needs root, as CI has): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { path, _dir: dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

async fn readiness(app: &TestApp) -> (u16, String) {
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// A call that talks (440 Hz) for `seconds`, then hangs up.
async fn talking_call(app: &TestApp, seconds: u32) {
    let call = ConfirmedCall::place(app.sip_addr(SipTransport::Udp), "07700900123").await;
    let mut clock = tokio::time::interval(Duration::from_millis(20));
    for i in 0..seconds * 50 {
        clock.tick().await;
        let p = raw_sip::rtp(
            0,
            i as u16,
            i * 160,
            7,
            &raw_sip::tone_frame(440.0, i * 160),
        );
        call.media.send_to(&p, call.daemon_media).await.unwrap();
    }
    call.hang_up().await;
}

async fn rows(app: &TestApp) -> Vec<(String, Option<String>)> {
    sqlx::query("SELECT status, failure FROM recordings ORDER BY started_at")
        .fetch_all(app.store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("status"), r.get("failure")))
        .collect()
}

async fn await_rows(
    app: &TestApp,
    test: impl Fn(&[(String, Option<String>)]) -> bool,
) -> Vec<(String, Option<String>)> {
    for _ in 0..400 {
        let r = rows(app).await;
        if test(&r) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "recordings never reached the expected state: {:?}",
        rows(app).await
    );
}

async fn a_recordings_filesystem_filling_mid_call_is_reported_and_kept(backend: Backend) {
    let disk = SmallDisk::mount(96);
    let dir = disk.path.clone();
    let app = spawn_app_with(backend, move |s| {
        common::listen_for_calls(s, "127.0.0.1/32");
        s.recordings.dir = dir;
        s.recordings.min_free_mb = 0;
    })
    .await;
    assert_eq!(readiness(&app).await.0, 200);

    // 96 KiB hold about three seconds of stereo audio: the disk fills mid-call.
    talking_call(&app, 6).await;
    let first = await_rows(&app, |r| r.len() == 1 && r[0].0 != "recording").await;
    let (state, failure) = &first[0];
    assert_eq!(state, "complete", "what was written is kept");
    assert!(
        failure
            .as_deref()
            .is_some_and(|f| f.contains("write failed")),
        "the row says why it is short: {failure:?}"
    );
    let (code, body) = readiness(&app).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("recordings"), "{body}");
    let wav = std::fs::read_dir(&disk.path).unwrap().count();
    assert!(wav > 0);

    // The next caller is not told the call is recorded, and it is not.
    talking_call(&app, 1).await;
    for _ in 0..400 {
        if app.count("contacts").await >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let contents: Vec<String> = sqlx::query("SELECT content FROM contacts")
        .fetch_all(app.store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get("content"))
        .collect();
    assert_eq!(contents.len(), 2, "{contents:?}");
    assert!(
        contents.iter().any(|c| c.contains("not recorded")),
        "{contents:?}"
    );
    assert_eq!(
        rows(&app).await.len(),
        1,
        "no recording row for the unrecorded call"
    );
    app.stop().await;
    drop(disk);
}

async fn an_unwritable_recordings_directory_is_found_at_start(backend: Backend) {
    // A path below a regular file can never be a directory, even for root.
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    let dir = file.join("recordings");
    let app = spawn_app_with(backend, move |s| {
        common::listen_for_calls(s, "127.0.0.1/32");
        s.recordings.dir = dir;
        s.recordings.when_unavailable = WhenUnrecordable::Refuse;
    })
    .await;
    let (code, body) = readiness(&app).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("recordings"), "{body}");
    // Configured to refuse: calls get 503 rather than an unrecorded call.
    let udp = app.sip_addr(SipTransport::Udp);
    let trunk = UdpPeer::bind("127.0.0.1", udp).await;
    let d = Dialog::new("refused", "UDP", trunk.local(), udp);
    trunk
        .send(&d.invite("07700900123", "", &raw_sip::offer(trunk.local())))
        .await;
    let answer = trunk.final_response().await;
    assert_eq!(status(&answer), 503, "{answer}");
    assert_eq!(app.count("contacts").await, 0);
}
