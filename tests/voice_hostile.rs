//! The voice channel attacked as an outsider would attack a council's public SIP
//! endpoint, with hand-written SIP and RTP: strangers with crafted headers, INVITEs
//! never ACKed, Call-IDs reused, audio and keypresses from the wrong port, silent
//! callers, floods of INVITEs and idle connections. Each test asserts what the daemon
//! answered and what it stored.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::raw_sip::{self, Dialog, TcpPeer, UdpPeer, WAIT, header, status};
use common::{TestApp, sipp, spawn_app_with};
use contactd::configuration::{Backend, Settings};
use contactd::domain::Role;
use contactd_sip::config::SipTransport;
use serde_json::json;
use sqlx::Row;

on_both_backends!(
    strangers_are_refused_whatever_their_headers_claim,
    headers_that_cannot_be_read_strictly_get_400,
    an_invite_never_acked_leaves_nothing_behind,
    a_second_caller_reusing_a_call_id_is_a_new_call,
    media_latches_to_the_callers_source_and_drops_every_other,
    a_silent_caller_is_hung_up,
    a_vanished_caller_is_let_go_without_waiting_out_the_bye,
    tcp_calls_keep_their_transport_and_unsafe_offers_get_488,
    tcp_connections_are_bounded_and_idle_ones_closed,
    invite_floods_from_one_source_get_503,
    a_keyed_reference_attaches_only_for_its_owner,
);

/// The trunk is 127.0.0.1 alone: 127.0.0.2 is a stranger on the same machine.
const STRANGER: &str = "127.0.0.2";

async fn app_with(backend: Backend, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with(backend, |s| {
        common::listen_for_calls(s, "127.0.0.1/32");
        s.sip.ring_ms = 50;
        s.ivr.digit_timeout_seconds = 2;
        adjust(s);
    })
    .await
}

async fn nothing_stored(app: &TestApp) {
    for table in ["contacts", "service_requests", "recordings", "customers"] {
        assert_eq!(app.count(table).await, 0, "{table} should be empty");
    }
}

/// INVITE → 200 → ACK over UDP from `peer`; returns the dialog and the daemon's
/// media address.
async fn answered_call(peer: &UdpPeer, caller: &str, sdp: &str) -> (Dialog, SocketAddr) {
    let mut dialog = Dialog::new(
        &format!("call-{}", uuid::Uuid::new_v4().simple()),
        "UDP",
        peer.local(),
        peer.target,
    );
    peer.send(&dialog.invite(caller, "", sdp)).await;
    let ok = peer.final_response().await;
    assert_eq!(status(&ok), 200, "{ok}");
    dialog.learn(&ok);
    peer.send(&dialog.ack()).await;
    (dialog, raw_sip::sdp_media(raw_sip::body(&ok)))
}

/// Waits (bounded) for a row count to reach `n`.
async fn await_count(app: &TestApp, table: &str, n: i64) {
    for _ in 0..400 {
        if app.count(table).await >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{table} did not reach {n} rows");
}

async fn strangers_are_refused_whatever_their_headers_claim(backend: Backend) {
    let app = app_with(backend, |_| {}).await;
    let udp = app.sip_addr(SipTransport::Udp);
    let stranger = UdpPeer::bind(STRANGER, udp).await;
    // A Via (and received/rport) claiming the trunk, and an asserted identity.
    let dialog = Dialog::new("spoof-1", "UDP", "127.0.0.1:5060".parse().unwrap(), udp);
    let invite = dialog
        .invite(
            "07700900123",
            "P-Asserted-Identity: <sip:+447700900999@trunk>\r\n",
            &raw_sip::offer("127.0.0.1:4000".parse().unwrap()),
        )
        .replace(";rport", ";received=127.0.0.1;rport=5060");
    stranger.send(&invite).await;
    let answer = stranger.final_response().await;
    assert_eq!(status(&answer), 403, "{answer}");
    for method in ["SUBSCRIBE", "MESSAGE", "REGISTER", "OPTIONS", "NOTIFY"] {
        let req = dialog
            .invite("07700900123", "", "")
            .replacen("INVITE", method, 1)
            .replace("CSeq: 1 INVITE", &format!("CSeq: 1 {method}"));
        stranger.send(&req).await;
        let answer = stranger.final_response().await;
        assert_eq!(status(&answer), 403, "{method}: {answer}");
    }
    // TCP from outside the trunks is closed at accept, before a byte is read.
    let tcp = app.sip_addr(SipTransport::Tcp);
    let mut conn = TcpPeer::connect(STRANGER, tcp).await.unwrap();
    let _ = conn
        .send(&invite.replace("SIP/2.0/UDP", "SIP/2.0/TCP"))
        .await;
    assert!(
        conn.closed_within(WAIT).await,
        "a stranger's TCP connection stays open"
    );

    // The trunk itself: keep-alives answered, methods we do not serve refused.
    let trunk = UdpPeer::bind("127.0.0.1", udp).await;
    let d = Dialog::new("trunk-1", "UDP", trunk.local(), udp);
    let options = d
        .invite("07700900123", "", "")
        .replacen("INVITE", "OPTIONS", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 OPTIONS");
    trunk.send(&options).await;
    assert_eq!(status(&trunk.final_response().await), 200);
    let subscribe = options.replace("OPTIONS", "SUBSCRIBE");
    trunk.send(&subscribe).await;
    assert_eq!(status(&trunk.final_response().await), 405);
    nothing_stored(&app).await;
}

async fn headers_that_cannot_be_read_strictly_get_400(backend: Backend) {
    let app = app_with(backend, |_| {}).await;
    let udp = app.sip_addr(SipTransport::Udp);
    let trunk = UdpPeer::bind("127.0.0.1", udp).await;
    for bad in [
        "P-Asserted-Identity: \"Smith, J <sip:+447700900111@evil>\r\n",
        "P-Asserted-Identity: <sip:+447700900111@evil\r\n",
        "P-Asserted-Identity: <http://example.com/>\r\n",
    ] {
        let d = Dialog::new(
            &format!("bad-{}", uuid::Uuid::new_v4().simple()),
            "UDP",
            trunk.local(),
            udp,
        );
        let sdp = raw_sip::offer(trunk.local());
        trunk.send(&d.invite("07700900123", bad, &sdp)).await;
        let answer = trunk.final_response().await;
        assert_eq!(status(&answer), 400, "{bad}: {answer}");
    }
    nothing_stored(&app).await;
}

async fn an_invite_never_acked_leaves_nothing_behind(backend: Backend) {
    let app = app_with(backend, |s| s.sip.ack_timeout_seconds = 1).await;
    let udp = app.sip_addr(SipTransport::Udp);
    let trunk = UdpPeer::bind("127.0.0.1", udp).await;
    let media = UdpPeer::bind("127.0.0.1", udp).await;
    let d = Dialog::new("never-acked", "UDP", trunk.local(), udp);
    trunk
        .send(&d.invite("07700900123", "", &raw_sip::offer(media.local())))
        .await;
    let ok = trunk.final_response().await;
    assert_eq!(status(&ok), 200, "{ok}");
    let port = raw_sip::sdp_media(raw_sip::body(&ok));
    // No media before the ACK that never comes.
    let mut buf = [0u8; 2048];
    assert!(
        tokio::time::timeout(
            Duration::from_millis(1500),
            media.socket.recv_from(&mut buf)
        )
        .await
        .is_err(),
        "RTP was sent to a caller who never confirmed the call"
    );
    // Its ports are given back once Timer H has passed.
    let mut freed = false;
    for _ in 0..100 {
        if std::net::UdpSocket::bind(port).is_ok() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(freed, "the un-ACKed call's RTP port {port} was never freed");
    nothing_stored(&app).await;
}

async fn a_second_caller_reusing_a_call_id_is_a_new_call(backend: Backend) {
    let app = app_with(backend, |_| {}).await;
    let udp = app.sip_addr(SipTransport::Udp);
    for caller in ["07700900123", "07700900456"] {
        let trunk = UdpPeer::bind("127.0.0.1", udp).await;
        let media = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut d = Dialog::new("the-same-call-id", "UDP", trunk.local(), udp);
        let offer = raw_sip::offer(media.local_addr().unwrap());
        trunk.send(&d.invite(caller, "", &offer)).await;
        let ok = trunk.final_response().await;
        assert_eq!(status(&ok), 200, "{ok}");
        d.learn(&ok);
        trunk.send(&d.ack()).await;
        // The call's media starts once it is confirmed: then hang up.
        let mut buf = [0u8; 2048];
        tokio::time::timeout(WAIT, media.recv_from(&mut buf))
            .await
            .expect("media once confirmed")
            .unwrap();
        trunk.send(&d.bye()).await;
        loop {
            let m = trunk.recv(WAIT).await.expect("an answer to BYE");
            if m.starts_with("SIP/2.0 200") && m.contains("BYE") {
                break;
            }
        }
    }
    await_count(&app, "contacts", 2).await;
    let rows = sqlx::query("SELECT from_address FROM contacts ORDER BY from_address")
        .fetch_all(app.store.pool())
        .await
        .unwrap();
    let from: Vec<String> = rows.iter().map(|r| r.get("from_address")).collect();
    assert_eq!(from, ["+447700900123", "+447700900456"]);
}

async fn media_latches_to_the_callers_source_and_drops_every_other(backend: Backend) {
    let app = app_with(backend, |s| s.ivr.digit_timeout_seconds = 4).await;
    let udp = app.sip_addr(SipTransport::Udp);
    let trunk = UdpPeer::bind("127.0.0.1", udp).await;
    // The SDP names a LAN address, as a softphone without STUN does; the audio
    // comes from `caller`, and `intruder` (another port on the trunk) tries to join.
    let lan: SocketAddr = "10.9.9.9:4000".parse().unwrap();
    let (dialog, daemon_media) = answered_call(&trunk, "07700900123", &raw_sip::offer(lan)).await;
    let caller = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let intruder = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();

    // Nothing is sent to the LAN address, nor anywhere, until the caller is heard.
    let mut buf = [0u8; 2048];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), caller.recv_from(&mut buf))
            .await
            .is_err()
    );
    // The caller speaks (440 Hz) and keys * then 1 (waste); the intruder keys * 2
    // (highways) first and talks over them at 1 kHz.
    let (mut seq, mut ts, ssrc) = (1u16, 0u32, 0x1234u32);
    let (mut iseq, mut its, issrc) = (1u16, 0u32, 0x9999u32);
    for i in 0..10u32 {
        let p = raw_sip::rtp(0, seq, ts, ssrc, &raw_sip::tone_frame(440.0, i * 160));
        caller.send_to(&p, daemon_media).await.unwrap();
        seq += 1;
        ts += 160;
    }
    for event in [10u8, 2] {
        for p in raw_sip::key_press(event, &mut iseq, its, issrc) {
            intruder.send_to(&p, daemon_media).await.unwrap();
        }
        its += 800;
    }
    for event in [10u8, 1] {
        for p in raw_sip::key_press(event, &mut seq, ts, ssrc) {
            caller.send_to(&p, daemon_media).await.unwrap();
        }
        ts += 800;
    }
    // Keep talking until the daemon hangs up (it ends the call after logging it).
    let mut from_daemon = 0u32;
    let mut bye = None;
    // Paced by a clock, as a phone sends: a busy machine delays packets, it does not
    // reorder the test.
    let mut clock = tokio::time::interval(Duration::from_millis(20));
    for i in 0..1500u32 {
        clock.tick().await;
        let p = raw_sip::rtp(0, seq, ts, ssrc, &raw_sip::tone_frame(440.0, i * 160));
        caller.send_to(&p, daemon_media).await.unwrap();
        let q = raw_sip::rtp(0, iseq, its, issrc, &raw_sip::tone_frame(1000.0, i * 160));
        intruder.send_to(&q, daemon_media).await.unwrap();
        seq = seq.wrapping_add(1);
        iseq = iseq.wrapping_add(1);
        ts = ts.wrapping_add(160);
        its = its.wrapping_add(160);
        while caller.try_recv_from(&mut buf).is_ok() {
            from_daemon += 1;
        }
        let mut sip = [0u8; 65536];
        if let Ok((n, _)) = trunk.socket.try_recv_from(&mut sip) {
            let m = String::from_utf8_lossy(&sip[..n]).into_owned();
            if m.starts_with("BYE ") {
                trunk.send(&Dialog::ok_to(&m)).await;
                bye = Some(m);
                break;
            }
        }
    }
    assert!(bye.is_some(), "the daemon never ended the call");
    assert!(
        from_daemon > 50,
        "the caller heard nothing ({from_daemon} packets)"
    );
    let mut to_intruder = 0;
    while let Ok(Ok(_)) =
        tokio::time::timeout(Duration::from_millis(10), intruder.recv_from(&mut buf)).await
    {
        to_intruder += 1;
    }
    assert_eq!(
        to_intruder, 0,
        "audio went to a source that was not latched"
    );
    drop(dialog);

    // The caller's keys chose waste; the intruder's were never keyed.
    await_count(&app, "contacts", 1).await;
    let row = sqlx::query(
        "SELECT r.service_code, c.content FROM contacts c JOIN service_requests r ON r.id = c.request_id",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    let (service, content): (String, String) = (row.get("service_code"), row.get("content"));
    assert_eq!(service, "waste", "{content}");

    // Only the caller's tone is in the recording.
    let mut rows = Vec::new();
    for _ in 0..200 {
        rows = sqlx::query("SELECT path FROM recordings WHERE status = 'complete'")
            .fetch_all(app.store.pool())
            .await
            .unwrap();
        if !rows.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let path = app
        .db
        .dir()
        .join("recordings")
        .join(rows[0].get::<String, _>("path"));
    let reference: String = sqlx::query("SELECT r.number FROM service_requests r")
        .fetch_one(app.store.pool())
        .await
        .map(|r| contactd::domain::Reference::from_number(r.get("number")).to_string())
        .unwrap();
    assert_reference_read_back(&path, &reference);
    let mut reader = hound::WavReader::open(&path).unwrap();
    let left: Vec<i16> = reader
        .samples::<i16>()
        .map(Result::unwrap)
        .step_by(2)
        .collect();
    // Every frame with sound in it is the caller's 440 Hz, never the intruder's 1 kHz
    // (frames of silence are what a busy machine's late packets leave).
    let pitches: Vec<f64> = left
        .chunks(160)
        .filter(|f| f.iter().map(|&s| i64::from(s).abs()).sum::<i64>() / 160 > 2000)
        .map(|f| f.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count() as f64 / 2.0 / 0.02)
        .collect();
    assert!(pitches.len() > 100, "the caller is hardly in the recording");
    let odd = pitches
        .iter()
        .filter(|p| !(350.0..550.0).contains(*p))
        .count();
    assert!(
        odd * 20 < pitches.len(),
        "{odd} of {} voiced frames are not the caller's tone",
        pitches.len()
    );
}

/// A caller who vanished (no media, and no answer to our BYE) is let go once the BYE
/// has been retransmitted for a few seconds, not after the whole transaction
/// timeout (32 s): the call is logged within the usual wait.
async fn a_vanished_caller_is_let_go_without_waiting_out_the_bye(backend: Backend) {
    let app = app_with(backend, |s| s.sip.media_timeout_seconds = 1).await;
    let udp = app.sip_addr(SipTransport::Udp);
    let trunk = UdpPeer::bind("127.0.0.1", udp).await;
    let (_dialog, _) = answered_call(&trunk, "07700900124", &raw_sip::offer(trunk.local())).await;
    let bye = trunk.request("BYE", WAIT).await.expect("hung up");
    let again = trunk
        .request("BYE", WAIT)
        .await
        .expect("the BYE is retransmitted");
    assert_eq!(
        raw_sip::header(&bye, "Call-ID"),
        raw_sip::header(&again, "Call-ID")
    );
    // Never answered: the call ends anyway, and is logged.
    await_count(&app, "contacts", 1).await;
}

async fn a_silent_caller_is_hung_up(backend: Backend) {
    let app = app_with(backend, |s| s.sip.media_timeout_seconds = 1).await;
    let udp = app.sip_addr(SipTransport::Udp);
    let trunk = UdpPeer::bind("127.0.0.1", udp).await;
    let (_dialog, _) = answered_call(&trunk, "07700900123", &raw_sip::offer(trunk.local())).await;
    let bye = trunk
        .request("BYE", WAIT)
        .await
        .expect("a silent caller is hung up");
    trunk.send(&Dialog::ok_to(&bye)).await;
    await_count(&app, "contacts", 1).await;
    let row = sqlx::query("SELECT content FROM contacts")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    let content: String = row.get("content");
    assert!(content.contains("hung up"), "{content}");
}

async fn tcp_calls_keep_their_transport_and_unsafe_offers_get_488(backend: Backend) {
    let app = app_with(backend, |_| {}).await;
    let tcp = app.sip_addr(SipTransport::Tcp);
    let mut conn = TcpPeer::connect("127.0.0.1", tcp).await.unwrap();
    let mut d = Dialog::new("tcp-call", "TCP", conn.local(), tcp);
    conn.send(&d.invite("07700900123", "", &raw_sip::offer(conn.local())))
        .await
        .unwrap();
    let ok = conn.final_response().await;
    assert_eq!(status(&ok), 200, "{ok}");
    let contact = header(&ok, "Contact").unwrap();
    assert!(
        contact.to_ascii_lowercase().contains("transport=tcp"),
        "Contact on TCP must say so: {contact}"
    );
    d.learn(&ok);
    conn.send(&d.ack()).await.unwrap();
    conn.send(&d.bye()).await.unwrap();
    let answer = conn.final_response().await;
    assert_eq!(status(&answer), 200, "BYE over TCP: {answer}");

    // Offers that would send media nowhere sensible, or that we cannot serve.
    let udp = app.sip_addr(SipTransport::Udp);
    let trunk = UdpPeer::bind("127.0.0.1", udp).await;
    for offer in [
        raw_sip::offer("[2001:db8::1]:4000".parse().unwrap()),
        raw_sip::offer(trunk.local())
            .replace(&format!("m=audio {} ", trunk.local().port()), "m=audio 0 "),
    ] {
        let d = Dialog::new(
            &format!("offer-{}", uuid::Uuid::new_v4().simple()),
            "UDP",
            trunk.local(),
            udp,
        );
        trunk.send(&d.invite("07700900123", "", &offer)).await;
        let answer = trunk.final_response().await;
        assert_eq!(status(&answer), 488, "{offer}: {answer}");
    }
}

async fn tcp_connections_are_bounded_and_idle_ones_closed(backend: Backend) {
    let app = app_with(backend, |s| {
        s.sip.max_tcp_connections = 2;
        s.sip.max_tcp_connections_per_source = 2;
        s.sip.tcp_idle_seconds = 1;
    })
    .await;
    let tcp = app.sip_addr(SipTransport::Tcp);
    let mut first = TcpPeer::connect("127.0.0.1", tcp).await.unwrap();
    let mut second = TcpPeer::connect("127.0.0.1", tcp).await.unwrap();
    // Give the two a moment to be counted: a keep-alive each, answered in order.
    for c in [&mut first, &mut second] {
        let d = Dialog::new("ka", "TCP", c.local(), tcp);
        let options = d
            .invite("07700900123", "", "")
            .replacen("INVITE", "OPTIONS", 1)
            .replace("CSeq: 1 INVITE", "CSeq: 1 OPTIONS");
        c.send(&options).await.unwrap();
        assert_eq!(status(&c.final_response().await), 200);
    }
    // At the limit: not ready, and a third connection is refused.
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(
        r.status(),
        503,
        "at the SIP TCP limit the daemon is not ready"
    );
    let mut third = TcpPeer::connect("127.0.0.1", tcp).await.unwrap();
    assert!(
        third.closed_within(WAIT).await,
        "a third connection is refused"
    );
    // Silent connections carrying no call are closed.
    assert!(
        first.closed_within(WAIT).await,
        "an idle connection stays open"
    );
    assert!(
        second.closed_within(WAIT).await,
        "an idle connection stays open"
    );
    // And the source may connect again.
    let mut again = TcpPeer::connect("127.0.0.1", tcp).await.unwrap();
    let d = Dialog::new("ka2", "TCP", again.local(), tcp);
    let options = d
        .invite("07700900123", "", "")
        .replacen("INVITE", "OPTIONS", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 OPTIONS");
    again.send(&options).await.unwrap();
    assert_eq!(status(&again.final_response().await), 200);
    // A keep-alive (RFC 5626 CRLF CRLF) is answered with CRLF, but holds no place:
    // a connection with no call or registration on it is still closed when idle.
    assert!(again.ping(WAIT).await, "a keep-alive gets its pong");
    assert!(
        again.closed_within(WAIT).await,
        "keep-alives alone do not keep a connection"
    );
}

async fn invite_floods_from_one_source_get_503(backend: Backend) {
    let app = app_with(backend, |s| {
        s.sip.invites_per_second = 2;
        s.sip.ack_timeout_seconds = 1;
    })
    .await;
    let udp = app.sip_addr(SipTransport::Udp);
    let trunk = UdpPeer::bind("127.0.0.1", udp).await;
    let mut statuses = Vec::new();
    for i in 0..8 {
        let d = Dialog::new(&format!("flood-{i}"), "UDP", trunk.local(), udp);
        trunk
            .send(&d.invite("07700900123", "", &raw_sip::offer(trunk.local())))
            .await;
        let answer = trunk.final_response().await;
        if status(&answer) == 503 {
            assert!(header(&answer, "Retry-After").is_some(), "{answer}");
        }
        statuses.push(status(&answer));
    }
    assert!(statuses.contains(&503), "{statuses:?}");
    assert!(
        statuses.iter().filter(|s| **s == 200).count() >= 4,
        "a burst of twice the rate: {statuses:?}"
    );
    // The flood never confirmed a call: nothing of it is kept.
    nothing_stored(&app).await;
}

async fn a_keyed_reference_attaches_only_for_its_owner(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        common::listen_for_calls(s, "127.0.0.1/32");
        s.ivr.digit_timeout_seconds = 4;
    })
    .await;
    // Somebody else's request; the caller keys its reference.
    let other = app
        .create_customer(json!({"given_name": "Sam", "phones": ["07700 900999"]}))
        .await;
    let (_, theirs) = app
        .post(
            Role::Agent,
            "/api/v1/requests",
            json!({"customer_id": other["id"], "service": "waste", "summary": "Missed bin"}),
        )
        .await;
    let reference = theirs["reference"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let media = sipp::tone_file(dir.path(), contactd_sip::g711::Codec::Pcmu, 3);
    let keys = format!("{}#", &reference[3..]);
    let text = sipp::call_scenario("07700900123", "0 8", &media, "0", &keys, None);
    let run = sipp::run(dir.path(), &text, app.sip_addr(SipTransport::Udp), 1, "u1").await;
    assert!(run.success, "sipp: {}", run.output);

    await_count(&app, "contacts", 1).await;
    let row = sqlx::query(
        "SELECT r.id, r.identity_review, c.content FROM contacts c JOIN service_requests r ON r.id = c.request_id",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    let (request_id, review, content): (String, i64, String) = (
        row.get("id"),
        row.get("identity_review"),
        row.get("content"),
    );
    assert_ne!(
        request_id,
        theirs["id"].as_str().unwrap(),
        "joined someone else's request"
    );
    assert_eq!(review, 1, "flagged for staff to join");
    assert!(
        content.contains(&reference),
        "the keyed reference is noted: {content}"
    );
    let (_, timeline) = app
        .get(
            Role::Supervisor,
            &format!("/api/v1/requests/{reference}/timeline"),
        )
        .await;
    assert!(
        !timeline.to_string().contains("Phone call"),
        "the other resident's timeline gained the call: {timeline}"
    );
}

/// The right channel (what the daemon played) holds "your reference is" and then each
/// digit of `reference` in order: the prompts are written to the recording sample for
/// sample.
fn assert_reference_read_back(recording: &std::path::Path, reference: &str) {
    let prompts =
        contactd::channels::voice::prompts::Prompts::load(std::path::Path::new("")).unwrap();
    let mut reader = hound::WavReader::open(recording).unwrap();
    let right: Vec<i16> = reader
        .samples::<i16>()
        .map(Result::unwrap)
        .skip(1)
        .step_by(2)
        .collect();
    let find_from = |start: usize, prompt: &[i16]| {
        let probe = &prompt[..prompt.len().min(800)];
        (start..right.len().saturating_sub(probe.len()))
            .find(|&i| &right[i..i + probe.len()] == probe)
    };
    let mut at =
        find_from(0, &prompts.your_reference_is).expect("\"your reference is\" was played");
    for d in reference.chars().filter_map(|c| c.to_digit(10)) {
        at = find_from(at + 1, &prompts.digits[d as usize])
            .unwrap_or_else(|| panic!("digit {d} of {reference} was not read back"));
    }
}
