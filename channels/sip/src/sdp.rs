//! SDP offer/answer (RFC 3264) for one audio stream: G.711 in either law and
//! telephone-event at whatever payload type the caller offered.

use std::net::IpAddr;

use crate::g711::Codec;

/// Whether the caller will send and wants to receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// Our side of an offer with this direction.
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }

    fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
}

/// What we accepted of a caller's offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Where to send audio; `None` while the caller is on hold (`c=0.0.0.0`).
    pub remote: Option<std::net::SocketAddr>,
    pub codec: Codec,
    pub audio_pt: u8,
    /// The caller's telephone-event payload type, honoured as offered.
    pub event_pt: Option<u8>,
    pub direction: Direction,
}

impl Negotiated {
    /// Whether this offer puts us on hold: sendonly, inactive, or the old way, a
    /// connection address of 0.0.0.0 (RFC 3264 §8.4, RFC 2543).
    pub fn holds(&self) -> bool {
        self.remote.is_none() || matches!(self.direction, Direction::SendOnly | Direction::Inactive)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("the SDP has no audio stream")]
    NoAudio,
    #[error("the SDP has no usable connection address")]
    NoConnection,
    #[error("no codec in common (we take PCMU and PCMA)")]
    NoCommonCodec,
    #[error("the offer's address family is not one we serve")]
    WrongFamily,
    #[error("the audio stream is disabled (port 0)")]
    Disabled,
    #[error("the SDP is malformed: {0}")]
    Malformed(&'static str),
}

/// The largest SDP body we read; real offers are well under 2 KiB.
pub const MAX_SDP_BYTES: usize = 8 * 1024;

pub fn negotiate(offer: &str) -> Result<Negotiated, SdpError> {
    if offer.len() > MAX_SDP_BYTES {
        return Err(SdpError::Malformed("too long"));
    }
    let mut session_ip: Option<IpAddr> = None;
    let mut media_ip: Option<IpAddr> = None;
    let mut audio: Option<(u16, Vec<u8>)> = None;
    let mut rtpmaps: Vec<(u8, String)> = Vec::new();
    let mut direction = Direction::SendRecv;
    let mut in_audio = false;
    let mut seen_audio = false;
    for line in offer.lines().map(str::trim) {
        let Some((kind, value)) = line.split_once('=') else {
            continue;
        };
        match kind {
            "m" => {
                in_audio = value.starts_with("audio ") && !seen_audio;
                if in_audio {
                    seen_audio = true;
                    let mut parts = value.split_whitespace().skip(1);
                    let port = parts
                        .next()
                        .and_then(|p| p.split('/').next()?.parse().ok())
                        .ok_or(SdpError::Malformed("m= port"))?;
                    let _proto = parts.next();
                    let pts = parts.filter_map(|p| p.parse().ok()).collect();
                    audio = Some((port, pts));
                }
            }
            "c" => {
                let ip = value
                    .split_whitespace()
                    .nth(2)
                    .and_then(|a| a.split('/').next()?.parse().ok());
                if in_audio {
                    media_ip = ip;
                } else if !seen_audio {
                    session_ip = ip;
                }
            }
            "a" if in_audio || !seen_audio => {
                if let Some(map) = value.strip_prefix("rtpmap:") {
                    let mut it = map.splitn(2, ' ');
                    if let (Some(pt), Some(enc)) =
                        (it.next().and_then(|p| p.parse().ok()), it.next())
                    {
                        rtpmaps.push((pt, enc.to_ascii_lowercase()));
                    }
                }
                direction = match value {
                    "sendrecv" => Direction::SendRecv,
                    "sendonly" => Direction::SendOnly,
                    "recvonly" => Direction::RecvOnly,
                    "inactive" => Direction::Inactive,
                    _ => direction,
                };
            }
            _ => {}
        }
    }
    let (port, pts) = audio.ok_or(SdpError::NoAudio)?;
    let ip = media_ip.or(session_ip).ok_or(SdpError::NoConnection)?;
    let name_of = |pt: u8| {
        rtpmaps
            .iter()
            .find(|(p, _)| *p == pt)
            .map(|(_, n)| n.as_str())
    };
    let codec_of = |pt: u8| match (pt, name_of(pt)) {
        (_, Some(n)) if n.starts_with("pcmu/8000") => Some(Codec::Pcmu),
        (_, Some(n)) if n.starts_with("pcma/8000") => Some(Codec::Pcma),
        (0, None) => Some(Codec::Pcmu),
        (8, None) => Some(Codec::Pcma),
        _ => None,
    };
    // The caller's order is their preference (RFC 3264 §6.1).
    let (audio_pt, codec) = pts
        .iter()
        .find_map(|&pt| codec_of(pt).map(|c| (pt, c)))
        .ok_or(SdpError::NoCommonCodec)?;
    let event_pt = pts
        .iter()
        .copied()
        .find(|&pt| name_of(pt).is_some_and(|n| n.starts_with("telephone-event/8000")));
    if port == 0 {
        return Err(SdpError::Disabled);
    }
    let held = ip.is_unspecified();
    Ok(Negotiated {
        remote: (!held).then(|| std::net::SocketAddr::new(ip, port)),
        codec,
        audio_pt,
        event_pt,
        direction,
    })
}

/// Our answer: one audio stream on `local_port` at `local_ip`.
/// The telephone-event payload type we offer on legs we place.
pub const OFFERED_EVENT_PT: u8 = 101;

/// Our offer for a leg we place (to an advisor's phone): PCMU and PCMA, and RFC 4733
/// telephone events; the phone's answer picks one ([`negotiate`] reads it).
pub fn offer(local_ip: IpAddr, local_port: u16, session_id: u64) -> String {
    let family = if local_ip.is_ipv4() { "IP4" } else { "IP6" };
    let ev = OFFERED_EVENT_PT;
    format!(
        "v=0\r\no=contactd {session_id} 1 IN {family} {local_ip}\r\ns=contactd\r\n\
         c=IN {family} {local_ip}\r\nt=0 0\r\nm=audio {local_port} RTP/AVP 0 8 {ev}\r\n\
         a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:{ev} telephone-event/8000\r\na=fmtp:{ev} 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
    )
}

pub fn answer(
    n: &Negotiated,
    local_ip: IpAddr,
    local_port: u16,
    session_id: u64,
    version: u64,
) -> String {
    let family = if local_ip.is_ipv4() { "IP4" } else { "IP6" };
    let mut pts = n.audio_pt.to_string();
    if let Some(ev) = n.event_pt {
        pts.push_str(&format!(" {ev}"));
    }
    let mut sdp = format!(
        "v=0\r\no=contactd {session_id} {version} IN {family} {local_ip}\r\ns=contactd\r\n\
         c=IN {family} {local_ip}\r\nt=0 0\r\nm=audio {local_port} RTP/AVP {pts}\r\n\
         a=rtpmap:{} {}/8000\r\n",
        n.audio_pt,
        n.codec.name()
    );
    if let Some(ev) = n.event_pt {
        sdp.push_str(&format!(
            "a=rtpmap:{ev} telephone-event/8000\r\na=fmtp:{ev} 0-15\r\n"
        ));
    }
    sdp.push_str(&format!(
        "a=ptime:20\r\na={}\r\n",
        n.direction.answer().attribute()
    ));
    sdp
}

/// Our side of one dialog's SDP: the origin's session id and version (bumped with
/// each new description, RFC 3264 §8) and the media as last agreed.
pub struct SdpSession {
    local_ip: IpAddr,
    local_port: u16,
    session_id: u64,
    version: u64,
    /// What the media runs on now.
    pub current: Negotiated,
}

/// What a re-INVITE or UPDATE within a call did to its media.
pub struct MidDialog {
    /// The body of our 2xx: an answer, or (to a re-INVITE without an offer) our offer
    /// of the media as it is now; `None` to an UPDATE without an offer, which only
    /// refreshes the session (RFC 3311 §5.2).
    pub body: Option<String>,
    /// The media as newly agreed, when an offer changed it (hold, resume, a new
    /// address or codec).
    pub changed: Option<Negotiated>,
}

impl SdpSession {
    pub fn new(local_ip: IpAddr, local_port: u16, session_id: u64, agreed: Negotiated) -> Self {
        SdpSession {
            local_ip,
            local_port,
            session_id,
            version: 1,
            current: agreed,
        }
    }

    /// A new description of the media as it is now (our offer in a re-INVITE, or
    /// the answer to an offerless one).
    pub fn describe(&mut self) -> String {
        self.version += 1;
        answer(
            &self.current,
            self.local_ip,
            self.local_port,
            self.session_id,
            self.version,
        )
    }

    /// Answers a re-INVITE's or UPDATE's body. An offer in another address family
    /// than ours, or one we cannot take, is refused (488) and changes nothing.
    pub fn mid_dialog(&mut self, body: &[u8], is_update: bool) -> Result<MidDialog, SdpError> {
        if body.is_empty() {
            return Ok(MidDialog {
                body: (!is_update).then(|| self.describe()),
                changed: None,
            });
        }
        let offer = negotiate(&String::from_utf8_lossy(body))?;
        if offer
            .remote
            .is_some_and(|r| r.is_ipv4() != self.local_ip.is_ipv4())
        {
            return Err(SdpError::WrongFamily);
        }
        self.current = offer.clone();
        Ok(MidDialog {
            body: Some(self.describe()),
            changed: Some(offer),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIPP: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n\
        t=0 0\r\nm=audio 6000 RTP/AVP 0 8 96\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
        a=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-15\r\na=ptime:20\r\na=sendrecv\r\n";

    #[test]
    fn takes_the_callers_first_codec_and_their_event_type() {
        let n = negotiate(SIPP).unwrap();
        assert_eq!(
            (n.codec, n.audio_pt, n.event_pt),
            (Codec::Pcmu, 0, Some(96))
        );
        assert_eq!(n.remote, Some("127.0.0.1:6000".parse().unwrap()));
        let pcma_first = SIPP
            .replace("RTP/AVP 0 8 96", "RTP/AVP 8 0 101")
            .replace("96 telephone", "101 telephone");
        let n = negotiate(&pcma_first).unwrap();
        assert_eq!((n.codec, n.event_pt), (Codec::Pcma, Some(101)));
        let a = answer(&n, "127.0.0.1".parse().unwrap(), 20000, 1, 1);
        assert!(a.contains("m=audio 20000 RTP/AVP 8 101\r\n"), "{a}");
        assert!(a.contains("a=rtpmap:101 telephone-event/8000"));
    }

    #[test]
    fn no_common_codec() {
        let g729 = SIPP.replace("RTP/AVP 0 8 96", "RTP/AVP 18").replace(
            "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n",
            "a=rtpmap:18 G729/8000\r\n",
        );
        assert_eq!(negotiate(&g729), Err(SdpError::NoCommonCodec));
    }

    #[test]
    fn hold_and_garbage() {
        let hold = SIPP.replace("a=sendrecv", "a=sendonly");
        let n = negotiate(&hold).unwrap();
        assert_eq!(n.direction, Direction::SendOnly);
        assert!(answer(&n, "127.0.0.1".parse().unwrap(), 1, 1, 2).contains("a=recvonly"));
        let old_hold = SIPP.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0");
        assert_eq!(negotiate(&old_hold).unwrap().remote, None);
        let disabled = SIPP.replace("m=audio 6000", "m=audio 0");
        assert_eq!(negotiate(&disabled), Err(SdpError::Disabled));
        assert_eq!(negotiate("hello"), Err(SdpError::NoAudio));
        assert_eq!(
            negotiate(&"a=x\r\n".repeat(3000)),
            Err(SdpError::Malformed("too long"))
        );
    }
}
