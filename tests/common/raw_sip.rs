//! Hand-written SIP and RTP from the test itself, for what no well-behaved user agent
//! sends: crafted headers, INVITEs never ACKed, audio from the wrong port, a source
//! outside the trunks (any 127.0.0.0/8 address other than 127.0.0.1 is a stranger to
//! a daemon trusting 127.0.0.1/32).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

/// How long a test waits for any one message before failing.
pub const WAIT: Duration = Duration::from_secs(10);

/// A SIP peer over UDP, bound to `ip` (a port of its own).
pub struct UdpPeer {
    pub socket: UdpSocket,
    pub target: SocketAddr,
}

impl UdpPeer {
    pub async fn bind(ip: &str, target: SocketAddr) -> UdpPeer {
        let socket = UdpSocket::bind((ip, 0)).await.expect("bind udp");
        UdpPeer { socket, target }
    }

    pub fn local(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    pub async fn send(&self, message: &str) {
        self.socket
            .send_to(message.as_bytes(), self.target)
            .await
            .unwrap();
    }

    /// The next SIP message, or `None` after `wait`.
    pub async fn recv(&self, wait: Duration) -> Option<String> {
        let mut buf = vec![0u8; 65536];
        match tokio::time::timeout(wait, self.socket.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            _ => None,
        }
    }

    /// Reads until a final response (skipping 1xx), failing after [`WAIT`].
    pub async fn final_response(&self) -> String {
        loop {
            let m = self.recv(WAIT).await.expect("a response in time");
            if m.starts_with("SIP/2.0 1") || !m.starts_with("SIP/2.0") {
                continue;
            }
            return m;
        }
    }

    /// Reads until a request with `method` arrives (answering nothing), failing after
    /// `wait`.
    pub async fn request(&self, method: &str, wait: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = self.recv(left).await?;
            if m.starts_with(&format!("{method} ")) {
                return Some(m);
            }
        }
    }
}

/// A SIP peer over TCP from `ip`.
pub struct TcpPeer {
    pub stream: TcpStream,
    buffer: Vec<u8>,
}

impl TcpPeer {
    pub async fn connect(ip: &str, target: SocketAddr) -> std::io::Result<TcpPeer> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(format!("{ip}:0").parse().unwrap())?;
        let stream = socket.connect(target).await?;
        Ok(TcpPeer {
            stream,
            buffer: Vec::new(),
        })
    }

    pub fn local(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }

    pub async fn send(&mut self, message: &str) -> std::io::Result<()> {
        self.stream.write_all(message.as_bytes()).await
    }

    /// Sends an RFC 5626 keep-alive (CRLF CRLF); whether the single-CRLF answer
    /// comes back within `wait`.
    pub async fn ping(&mut self, wait: Duration) -> bool {
        if self.stream.write_all(b"\r\n\r\n").await.is_err() {
            return false;
        }
        let mut pong = [0u8; 2];
        matches!(
            tokio::time::timeout(wait, self.stream.read_exact(&mut pong)).await,
            Ok(Ok(_)) if &pong == b"\r\n"
        )
    }

    /// The next whole SIP message, or `None` when the connection closed or `wait` passed.
    pub async fn recv(&mut self, wait: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(m) = self.take_message() {
                return Some(m);
            }
            let mut chunk = [0u8; 8192];
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(n)) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn take_message(&mut self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.buffer).into_owned();
        let end = text.find("\r\n\r\n")? + 4;
        let length = text[..end]
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim().eq_ignore_ascii_case("content-length") || k.trim() == "l")
                    .then(|| v.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        if text.len() < end + length {
            return None;
        }
        let message = text[..end + length].to_string();
        self.buffer.drain(..end + length);
        Some(message)
    }

    pub async fn final_response(&mut self) -> String {
        loop {
            let m = self.recv(WAIT).await.expect("a response in time");
            if m.starts_with("SIP/2.0 1") || !m.starts_with("SIP/2.0") {
                continue;
            }
            return m;
        }
    }

    /// Whether the daemon closes the connection within `wait` (reading and dropping
    /// anything it sends first).
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let mut chunk = [0u8; 8192];
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

/// The value of header `name` in a message.
pub fn header(message: &str, name: &str) -> Option<String> {
    message.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

pub fn status(message: &str) -> u16 {
    message
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The body of a message.
pub fn body(message: &str) -> &str {
    message.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

/// The audio address an SDP body names.
pub fn sdp_media(sdp: &str) -> SocketAddr {
    let ip = sdp
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .expect("c= line")
        .trim();
    let port = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split_whitespace().next())
        .expect("m= line");
    format!("{ip}:{port}").parse().unwrap()
}

/// An offer of PCMU and telephone-event 101 at `media`.
pub fn offer(media: SocketAddr) -> String {
    let family = if media.is_ipv4() { "IP4" } else { "IP6" };
    let ip = media.ip();
    format!(
        "v=0\r\no=test 1 1 IN {family} {ip}\r\ns=-\r\nc=IN {family} {ip}\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
         a=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n",
        media.port()
    )
}

/// One call's dialog as the caller sees it.
pub struct Dialog {
    pub call_id: String,
    pub from_tag: String,
    pub to_tag: String,
    pub transport: &'static str,
    /// Where we (the caller) are.
    pub local: SocketAddr,
    /// The daemon's SIP address.
    pub target: SocketAddr,
}

impl Dialog {
    pub fn new(
        call_id: &str,
        transport: &'static str,
        local: SocketAddr,
        target: SocketAddr,
    ) -> Self {
        Dialog {
            call_id: call_id.into(),
            from_tag: format!("f{}", uuid::Uuid::new_v4().simple()),
            to_tag: String::new(),
            transport,
            local,
            target,
        }
    }

    /// An INVITE with `extra` headers (each ending in CRLF) and `sdp`.
    pub fn invite(&self, caller: &str, extra: &str, sdp: &str) -> String {
        self.request(
            "INVITE",
            1,
            caller,
            extra,
            "application/sdp",
            sdp,
            &uuid::Uuid::new_v4().simple().to_string(),
        )
    }

    /// ACK (for a 2xx: its own branch) once `to_tag` is known.
    pub fn ack(&self) -> String {
        self.request(
            "ACK",
            1,
            "07700900123",
            "",
            "",
            "",
            &uuid::Uuid::new_v4().simple().to_string(),
        )
    }

    pub fn bye(&self) -> String {
        self.request(
            "BYE",
            2,
            "07700900123",
            "",
            "",
            "",
            &uuid::Uuid::new_v4().simple().to_string(),
        )
    }

    /// Learns the daemon's tag from a response.
    pub fn learn(&mut self, response: &str) {
        let to = header(response, "To").expect("To");
        self.to_tag = to
            .split(';')
            .find_map(|p| p.trim().strip_prefix("tag=").map(str::to_string))
            .expect("a To tag");
    }

    /// A 200 answering a request the daemon sent (e.g. its BYE).
    pub fn ok_to(request: &str) -> String {
        let mut out = String::from("SIP/2.0 200 OK\r\n");
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            for line in request.lines() {
                if let Some((k, _)) = line.split_once(':')
                    && k.trim().eq_ignore_ascii_case(name)
                {
                    out.push_str(line);
                    out.push_str("\r\n");
                }
            }
        }
        out.push_str("Content-Length: 0\r\n\r\n");
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn request(
        &self,
        method: &str,
        cseq: u32,
        caller: &str,
        extra: &str,
        content_type: &str,
        body: &str,
        branch: &str,
    ) -> String {
        let to_tag = if self.to_tag.is_empty() {
            String::new()
        } else {
            format!(";tag={}", self.to_tag)
        };
        let content_type = if content_type.is_empty() {
            String::new()
        } else {
            format!("Content-Type: {content_type}\r\n")
        };
        format!(
            "{method} sip:1000@{target} SIP/2.0\r\n\
             Via: SIP/2.0/{transport} {local};branch=z9hG4bK{branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: \"Caller\" <sip:{caller}@{local}>;tag={from_tag}\r\n\
             To: <sip:1000@{target}>{to_tag}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:caller@{local};transport={lower}>\r\n\
             {extra}{content_type}Content-Length: {len}\r\n\r\n{body}",
            target = self.target,
            transport = self.transport,
            lower = self.transport.to_ascii_lowercase(),
            local = self.local,
            from_tag = self.from_tag,
            call_id = self.call_id,
            len = body.len(),
        )
    }
}

/// An RTP packet: PCMU (payload type 0) or an RFC 4733 event (101).
pub fn rtp(payload_type: u8, sequence: u16, timestamp: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, payload_type & 0x7f];
    p.extend_from_slice(&sequence.to_be_bytes());
    p.extend_from_slice(&timestamp.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// 20 ms of a tone at `hz`, µ-law, starting at sample `start`.
pub fn tone_frame(hz: f64, start: u32) -> Vec<u8> {
    (0..160u32)
        .map(|i| {
            let t = f64::from(start + i) / 8000.0;
            let s = (2.0 * std::f64::consts::PI * hz * t).sin() * 8000.0;
            contactd_sip::g711::Codec::Pcmu.encode(s as i16)
        })
        .collect()
}

/// The packets of one key press (RFC 4733 event `event`: 0-9, 10 = `*`, 11 = `#`).
pub fn key_press(event: u8, sequence: &mut u16, timestamp: u32, ssrc: u32) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (i, end) in [(1u16, false), (2, false), (3, true), (3, true), (3, true)] {
        let duration = i * 400;
        let flags = if end { 0x80 | 10 } else { 10 };
        let payload = [event, flags, (duration >> 8) as u8, duration as u8];
        out.push(rtp(101, *sequence, timestamp, ssrc, &payload));
        *sequence = sequence.wrapping_add(1);
    }
    out
}

/// A call placed over UDP from 127.0.0.1 and confirmed: INVITE, 200, ACK.
pub struct ConfirmedCall {
    pub trunk: UdpPeer,
    pub dialog: Dialog,
    /// Our RTP socket (the address our offer named).
    pub media: UdpSocket,
    /// Where the daemon takes this call's RTP.
    pub daemon_media: SocketAddr,
}

impl ConfirmedCall {
    /// Places the call to `sip` from `caller` and returns once the daemon's first RTP
    /// packet arrives: the call is confirmed, its media (and recording) started.
    pub async fn place(sip: SocketAddr, caller: &str) -> ConfirmedCall {
        let trunk = UdpPeer::bind("127.0.0.1", sip).await;
        let media = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut dialog = Dialog::new(
            &format!("call-{}", uuid::Uuid::new_v4().simple()),
            "UDP",
            trunk.local(),
            sip,
        );
        trunk
            .send(&dialog.invite(caller, "", &offer(media.local_addr().unwrap())))
            .await;
        let ok = trunk.final_response().await;
        assert_eq!(status(&ok), 200, "{ok}");
        dialog.learn(&ok);
        trunk.send(&dialog.ack()).await;
        let daemon_media = sdp_media(body(&ok));
        let mut buf = [0u8; 2048];
        tokio::time::timeout(WAIT, media.recv_from(&mut buf))
            .await
            .expect("media once the call is confirmed")
            .unwrap();
        ConfirmedCall {
            trunk,
            dialog,
            media,
            daemon_media,
        }
    }

    pub async fn hang_up(&self) {
        self.trunk.send(&self.dialog.bye()).await;
    }
}
