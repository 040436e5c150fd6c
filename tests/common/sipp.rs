//! sipp (Debian's sip-tester) as the independent caller in voice tests: scenarios
//! live in tests/sip/, their audio is made here, and each run gets its own directory
//! and ports.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use contactd_sip::g711::Codec;

/// Fills a scenario template from tests/sip/ with `(placeholder, value)` pairs.
pub fn scenario(name: &str, fills: &[(&str, &str)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sip")
        .join(name);
    let mut text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for (k, v) in fills {
        text = text.replace(&format!("{{{{{k}}}}}"), v);
    }
    assert!(!text.contains("{{"), "unfilled placeholder in {name}");
    text
}

/// A caller (tests/sip/uac_call.xml) who offers `codecs`, streams `media` with
/// `payload`, keys `dtmf`, and, if `again` is given, keys again that many ms later.
pub fn call_scenario(
    caller: &str,
    codecs: &str,
    media: &Path,
    payload: &str,
    dtmf: &str,
    again: Option<(&str, u32)>,
) -> String {
    let media = media.to_str().unwrap();
    let after = again.map(|(_, ms)| ms.to_string()).unwrap_or_default();
    let text = scenario(
        "uac_call.xml",
        &[
            ("CALLER", caller),
            ("CODECS", codecs),
            ("MEDIA", media),
            ("PAYLOAD", payload),
            ("DTMF", dtmf),
            ("DTMF_AGAIN", again.map(|(d, _)| d).unwrap_or_default()),
            ("SECOND_AFTER_MS", &after),
        ],
    );
    if again.is_some() {
        return text;
    }
    replace_block(&text, "again", "")
}

/// `text` with the block between `<!--name-->` and `<!--/name-->` replaced by `with`
/// (a scenario's variants live in one file, marked so).
pub fn replace_block(text: &str, name: &str, with: &str) -> String {
    let (open, close) = (format!("<!--{name}-->"), format!("<!--/{name}-->"));
    let start = text.find(&open).expect("marker");
    let end = text.find(&close).expect("marker") + close.len();
    format!("{}{with}{}", &text[..start], &text[end..])
}

/// A caller like [`call_scenario`]'s who, after keying `dtmf` and then doing
/// `meanwhile` (scenario steps: [`pause`], [`info_key`]...), hangs up (BYE) instead
/// of waiting for the daemon to.
pub fn leaving_scenario(caller: &str, media: &Path, dtmf: &str, meanwhile: &str) -> String {
    let text = call_scenario(caller, "0", media, "0", dtmf, None);
    let leaving = format!(
        r#"{meanwhile}
  <send retrans="500">
    <![CDATA[
      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Resident" <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1000 BYE
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200"/>"#
    );
    replace_block(&text, "daemon hangs up", &leaving)
}

/// A scenario step: wait `ms`.
pub fn pause(ms: u32) -> String {
    format!("<pause milliseconds=\"{ms}\"/>\n")
}

/// Scenario steps: key `digit` in the media (RFC 4733, payload type 96 as
/// [`call_scenario`] offers it).
pub fn rtp_key(digit: char) -> String {
    format!("<nop><action><exec play_dtmf=\"{digit}\"/></action></nop>\n")
}

/// Scenario steps: key `digit` by SIP INFO (application/dtmf-relay), as `caller`,
/// with CSeq `cseq` (below 1000, the BYE's), answered 200.
pub fn info_key(caller: &str, digit: char, cseq: u32) -> String {
    format!(
        r#"<send retrans="500">
    <![CDATA[
      INFO sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Resident" <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} INFO
      Max-Forwards: 70
      Content-Type: application/dtmf-relay
      Content-Length: [len]

      Signal={digit}
      Duration=160
    ]]>
  </send>
  <recv response="200"/>
"#
    )
}

/// `seconds` of a 440 Hz tone as headerless G.711 (what sipp 3.6's rtp_stream sends).
pub fn tone_file(dir: &Path, codec: Codec, seconds: u32) -> PathBuf {
    let samples = 8000 * seconds as usize;
    let bytes: Vec<u8> = (0..samples)
        .map(|i| {
            let s = (2.0 * std::f64::consts::PI * 440.0 * i as f64 / 8000.0).sin() * 8000.0;
            codec.encode(s as i16)
        })
        .collect();
    let path = dir.join(format!("tone440.{}", codec.name().to_lowercase()));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A UDP port nobody is using right now (for sipp's own signalling and media), with
/// the three above it free too (media takes the port and the next ones).
///
/// Chosen at random below the kernel's ephemeral range (32768 up) and the daemon's RTP
/// range (20000 up): no socket bound to port 0 anywhere in the test run can take it
/// between this check and sipp's bind.
pub fn free_udp_port() -> u16 {
    loop {
        let port = 10_000 + 2 * (rand_u16() % 4_999);
        let free = (0..4).all(|i| std::net::UdpSocket::bind(("127.0.0.1", port + i)).is_ok());
        if free {
            return port;
        }
    }
}

fn rand_u16() -> u16 {
    (uuid::Uuid::new_v4().as_u128() & 0xffff) as u16
}

pub struct SippRun {
    pub success: bool,
    pub output: String,
}

/// Runs one sipp client scenario (`calls` calls) against `target`, in `dir`. A port
/// taken between choosing it and sipp's bind (two tests choosing alike) is chosen
/// again.
pub async fn run(
    dir: &Path,
    scenario_text: &str,
    target: SocketAddr,
    calls: u32,
    transport: &str,
) -> SippRun {
    run_from("127.0.0.1", dir, scenario_text, target, calls, transport).await
}

/// `run`, with sipp on the local address `local` (another 127.0.0.0/8 address is
/// another source to the daemon).
pub async fn run_from(
    local: &str,
    dir: &Path,
    scenario_text: &str,
    target: SocketAddr,
    calls: u32,
    transport: &str,
) -> SippRun {
    for _ in 0..3 {
        let at = SippAt { local, port: None };
        let run = run_once(at, dir, scenario_text, Some(target), calls, transport).await;
        if !run.output.contains("Address already in use") {
            return run;
        }
    }
    panic!("sipp found its ports taken three times");
}

/// Where sipp runs: its local address, and its SIP port (a free one when `None`).
#[derive(Clone, Copy)]
pub struct SippAt<'a> {
    pub local: &'a str,
    pub port: Option<u16>,
}

/// `run`, with sipp at `at` (over UDP): a phone behind NAT is one whose source
/// port the test chooses.
pub async fn run_at(
    at: SippAt<'_>,
    dir: &Path,
    scenario_text: &str,
    target: SocketAddr,
) -> SippRun {
    run_once(at, dir, scenario_text, Some(target), 1, "u1").await
}

/// sipp as a server (UAS) at `at`, taking one call as `scenario_text` says.
pub async fn serve(at: SippAt<'_>, dir: &Path, scenario_text: &str) -> SippRun {
    run_once(at, dir, scenario_text, None, 1, "u1").await
}

async fn run_once(
    at: SippAt<'_>,
    dir: &Path,
    scenario_text: &str,
    target: Option<SocketAddr>,
    calls: u32,
    transport: &str,
) -> SippRun {
    let file = dir.join(format!("scenario-{}.xml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&file, scenario_text).unwrap();
    let _ = std::fs::remove_file(dir.join("sipp_errors.log"));
    let mut cmd = tokio::process::Command::new("sipp");
    cmd.current_dir(dir).arg("-sf").arg(&file);
    if let Some(target) = target {
        cmd.args(["-s", "1000", &target.to_string()]);
    }
    cmd.args([
        "-m",
        &calls.to_string(),
        "-l",
        &calls.to_string(),
        "-r",
        &calls.to_string(),
    ])
    .args([
        "-i",
        at.local,
        "-p",
        &at.port.unwrap_or_else(free_udp_port).to_string(),
        "-mp",
        &free_udp_port().to_string(),
    ])
    .args([
        "-t",
        transport,
        "-nostdin",
        "-timeout",
        "90",
        "-timeout_error",
    ])
    .args(["-trace_err", "-error_file"])
    .arg(dir.join("sipp_errors.log"))
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("sipp finishes within two minutes")
        .unwrap_or_else(|e| {
            panic!("sipp (Debian package sip-tester) is required for the voice tests: {e}")
        });
    let errors = std::fs::read_to_string(dir.join("sipp_errors.log")).unwrap_or_default();
    SippRun {
        success: out.status.success(),
        output: format!(
            "{}\n{}\n{errors}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}
