//! Calls from user agents nobody here wrote: Debian's baresip and linphonec, and PJSIP
//! (PyPI pjsua2-python), over UDP and TCP. Each plays a 440 Hz tone, keys `*` then `1`
//! (RFC 4733), and records what it hears. The call must complete with audio both ways
//! and the keys taken: the request opened for the chosen service, the caller's tone
//! on the recording's left, our prompts in the caller's ears. baresip and linphone
//! name their machine's interface address in their SDP while their RTP leaves from
//! 127.0.0.1, so they are also callers whose SDP and RTP source differ.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{TestApp, spawn_app_with};
use contactd::configuration::Backend;
use contactd_sip::config::SipTransport;
use sqlx::Row;

on_both_backends!(
    baresip_calls_over_udp_and_tcp_complete_with_audio_and_keys,
    pjsip_calls_over_udp_and_tcp_complete_with_audio_and_keys,
    linphone_calls_over_udp_and_tcp_complete_with_audio_and_keys,
);

/// Which independent caller places a call.
#[derive(Clone, Copy)]
enum Peer {
    Baresip,
    Pjsip,
    Linphone,
}

/// baresip's configuration: a sine source, ALSA's null device as the speaker, and
/// `sndfile` keeping both directions as WAV files.
fn baresip_config(dir: &Path) {
    let config = format!(
        "poll_method epoll\nsip_listen 127.0.0.1:0\n\
         audio_player alsa,null\naudio_alert alsa,null\naudio_source ausine,440\n\
         ausrc_srate 48000\nausrc_channels 2\nauplay_srate 48000\n\
         module_path /usr/lib/baresip/modules\n\
         module stdio.so\nmodule g711.so\nmodule ausine.so\nmodule alsa.so\nmodule sndfile.so\n\
         module_app account.so\nmodule_app menu.so\n\
         snd_path {}\nrtp_timeout 0\n",
        dir.join("heard").display()
    );
    std::fs::create_dir_all(dir.join("heard")).unwrap();
    std::fs::write(dir.join("config"), config).unwrap();
    std::fs::write(
        dir.join("accounts"),
        "<sip:07700900123@127.0.0.1>;regint=0;audio_codecs=PCMU/8000/1\n",
    )
    .unwrap();
}

/// A console user agent (baresip, linphonec) driven through its standard input.
struct Console {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Console {
    fn spawn(command: &mut Command, what: &str) -> Console {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{what} runs (scripts/test installs it): {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // baresip ends its status lines with \r: split on both.
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            while reader.read_until(b'\n', &mut buf).unwrap_or(0) > 0 {
                for part in String::from_utf8_lossy(&buf).split('\r') {
                    let _ = tx.send(part.to_string());
                }
                buf.clear();
            }
        });
        Console { child, lines }
    }

    fn wait_for(&self, needle: &str, within: Duration) -> bool {
        let deadline = std::time::Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    }

    /// Types `text` at the console, a piece at a time.
    fn type_in(&mut self, pieces: &[&str]) {
        let stdin = self.child.stdin.as_mut().unwrap();
        for piece in pieces {
            stdin.write_all(piece.as_bytes()).unwrap();
            stdin.flush().unwrap();
            std::thread::sleep(Duration::from_millis(400));
        }
    }
}

impl Console {
    /// Once the console says `connected`, types `keys`; then waits for it to say
    /// `ended`: the daemon logs the call, reads back the new reference, says goodbye
    /// and hangs up.
    fn key_through_the_call(&mut self, connected: &str, keys: &[&str], ended: &str) {
        assert!(
            self.wait_for(connected, Duration::from_secs(20)),
            "the call never said {connected:?}"
        );
        self.type_in(keys);
        assert!(
            self.wait_for(ended, Duration::from_secs(60)),
            "the daemon never ended the call ({ended:?})"
        );
    }

    /// Waits (bounded) for the program to exit by itself.
    fn exited(&mut self, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the user agent did not exit");
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Root-mean-square level and dominant frequency (by zero crossings) of one channel.
fn level_and_pitch(path: &Path, channel: usize) -> (f64, f64) {
    let mut reader = hound::WavReader::open(path).unwrap();
    let spec = reader.spec();
    let samples: Vec<i16> = reader
        .samples::<i16>()
        .map(Result::unwrap)
        .skip(channel)
        .step_by(spec.channels as usize)
        .collect();
    level_and_pitch_of(&samples, spec.sample_rate)
}

/// Level over the whole channel; pitch over its voiced 20 ms frames only, so a gap
/// where a loaded peer's sound source stalled does not pull the tone's frequency down.
fn level_and_pitch_of(samples: &[i16], rate: u32) -> (f64, f64) {
    let rms_of = |s: &[i16]| {
        (s.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / s.len().max(1) as f64).sqrt()
    };
    let rms = rms_of(samples);
    let frame = (rate as usize / 50).max(1);
    let (mut crossings, mut voiced) = (0usize, 0usize);
    for chunk in samples.chunks(frame).filter(|c| c.len() == frame) {
        if rms_of(chunk) > 300.0 {
            crossings += chunk
                .windows(2)
                .filter(|w| (w[0] < 0) != (w[1] < 0))
                .count();
            voiced += chunk.len() - 1;
        }
    }
    let seconds = voiced as f64 / f64::from(rate);
    (rms, crossings as f64 / 2.0 / seconds.max(0.001))
}

/// A call from baresip: dial, key `*1` once established, wait for our hang-up.
fn baresip_call(dir: &Path, uri: &str) -> std::path::PathBuf {
    baresip_config(dir);
    let mut baresip = Console::spawn(
        Command::new("baresip")
            .arg("-f")
            .arg(dir)
            .arg("-e")
            .arg(format!("/dial {uri}")),
        "baresip",
    );
    // In a call, each key typed at baresip's console is sent as RFC 4733.
    baresip.key_through_the_call("Call established", &["*", "1"], "terminated");
    std::fs::read_dir(dir.join("heard"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .expect("baresip kept what it heard")
}

/// A call from linphonec: IPv4, WAV files for its sound card, dial, key `*` and `1`
/// once connected, wait for our hang-up.
fn linphone_call(dir: &Path, uri: &str) -> std::path::PathBuf {
    let tone = tone_wav(dir);
    let heard = dir.join("heard.wav");
    let tcp = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        dir.join("linphonerc"),
        format!(
            "[sip]\nsip_port={}\nsip_tcp_port={tcp}\nauto_net_state_mon=0\n[rtp]\naudio_rtp_port={}\n",
            common::sipp::free_udp_port(),
            common::sipp::free_udp_port()
        ),
    )
    .unwrap();
    let mut linphone = Console::spawn(
        Command::new("linphonec")
            .arg("-c")
            .arg(dir.join("linphonerc"))
            .env("HOME", dir),
        "linphonec",
    );
    linphone.type_in(&[
        "ipv6 disable\n",
        "soundcard use files\n",
        &format!("play {}\n", tone.display()),
        &format!("record {}\n", heard.display()),
        &format!("call {uri}\n"),
    ]);
    linphone.key_through_the_call("connected", &["*\n", "1\n"], "ended");
    // linphone finishes its recording's header as it exits.
    linphone.type_in(&["quit\n"]);
    linphone.exited(Duration::from_secs(20));
    heard
}

/// Forty seconds of a 440 Hz tone, 8 kHz mono, for callers that play a file.
fn tone_wav(dir: &Path) -> std::path::PathBuf {
    let tone = dir.join("tone.wav");
    let mut w = hound::WavWriter::create(
        &tone,
        hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        },
    )
    .unwrap();
    for i in 0..8000 * 40 {
        let s = (2.0 * std::f64::consts::PI * 440.0 * f64::from(i) / 8000.0).sin() * 8000.0;
        w.write_sample(s as i16).unwrap();
    }
    w.finalize().unwrap();
    tone
}

/// A call from PJSIP, driven by tests/peers/pjsua_caller.py.
fn pjsip_call(dir: &Path, uri: &str, transport: SipTransport) -> std::path::PathBuf {
    let tone = tone_wav(dir);
    let heard = dir.join("heard.wav");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/pjsua_caller.py");
    let kind = transport.as_str();
    let out = Command::new("python3")
        .arg(script)
        .args([uri, kind])
        .arg(&tone)
        .arg(&heard)
        .arg("*1")
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "PJSIP's caller gave no result (pip install pjsua2-python; scripts/test installs it): {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert_eq!(result["connected"], true, "{result}");
    assert_eq!(
        result["disconnected_by_peer"], true,
        "the daemon hangs up: {result}"
    );
    heard
}

/// The same for what a caller recorded, read leniently: a user agent's own WAV writer
/// may leave its header's sizes stale (the samples after the `data` tag count).
fn heard_level_and_pitch(path: &Path) -> (f64, f64) {
    let bytes = std::fs::read(path).unwrap();
    let channels = usize::from(u16::from_le_bytes([bytes[22], bytes[23]])).max(1);
    let rate = u32::from_le_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]);
    let data = bytes
        .windows(4)
        .position(|w| w == b"data")
        .expect("a data chunk")
        + 8;
    let samples: Vec<i16> = bytes[data..]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .step_by(channels)
        .collect();
    level_and_pitch_of(&samples, rate)
}

async fn one_call(app: &TestApp, peer: Peer, transport: SipTransport, calls_before: i64) {
    let dir = tempfile::tempdir().unwrap();
    let addr = app.sip_addr(transport);
    let uri = match transport {
        SipTransport::Udp => format!("sip:1000@{addr}"),
        stream => format!("sip:1000@{addr};transport={}", stream.as_str()),
    };
    let path = dir.path().to_path_buf();
    let heard = tokio::task::spawn_blocking(move || match peer {
        Peer::Baresip => baresip_call(&path, &uri),
        Peer::Pjsip => pjsip_call(&path, &uri, transport),
        Peer::Linphone => linphone_call(&path, &uri),
    })
    .await
    .unwrap();

    // The keys chose waste from the menu.
    let mut rows = Vec::new();
    for _ in 0..200 {
        rows = sqlx::query(
            "SELECT r.service_code, c.content FROM contacts c \
             JOIN service_requests r ON r.id = c.request_id ORDER BY c.created_at",
        )
        .fetch_all(app.store.pool())
        .await
        .unwrap();
        if rows.len() as i64 > calls_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let last = rows.last().expect("the call became a contact");
    let service: String = last.get("service_code");
    let content: String = last.get("content");
    assert_eq!(service, "waste", "{content}");

    // Audio both ways: baresip's tone on our recording's left, our prompts in
    // what baresip heard.
    let mut recordings = Vec::new();
    for _ in 0..200 {
        recordings = sqlx::query(
            "SELECT path FROM recordings WHERE status = 'complete' ORDER BY started_at",
        )
        .fetch_all(app.store.pool())
        .await
        .unwrap();
        if recordings.len() as i64 > calls_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recording = app
        .db
        .dir()
        .join("recordings")
        .join(recordings.last().unwrap().get::<String, _>("path"));
    let (caller_level, caller_pitch) = level_and_pitch(&recording, 0);
    assert!(
        caller_level > 1000.0,
        "the caller is silent on the recording"
    );
    assert!(
        (400.0..480.0).contains(&caller_pitch),
        "the caller's tone is at {caller_pitch} Hz"
    );
    let (heard_level, _) = heard_level_and_pitch(&heard);
    assert!(
        heard_level > 300.0,
        "the caller heard nothing ({heard_level})"
    );
}

async fn calls_from(backend: Backend, peer: Peer) {
    let app = spawn_app_with(backend, |s| {
        common::listen_for_calls(s, "127.0.0.1/32");
        s.ivr.digit_timeout_seconds = 4;
    })
    .await;
    one_call(&app, peer, SipTransport::Udp, 0).await;
    one_call(&app, peer, SipTransport::Tcp, 1).await;
}

async fn baresip_calls_over_udp_and_tcp_complete_with_audio_and_keys(backend: Backend) {
    calls_from(backend, Peer::Baresip).await
}

async fn pjsip_calls_over_udp_and_tcp_complete_with_audio_and_keys(backend: Backend) {
    calls_from(backend, Peer::Pjsip).await
}

async fn linphone_calls_over_udp_and_tcp_complete_with_audio_and_keys(backend: Backend) {
    calls_from(backend, Peer::Linphone).await
}
