//! One call's media: an RTP socket (and its RTCP neighbour, drained and ignored), a
//! 20 ms clock that sends our audio, plays the caller's out of the jitter buffer and
//! hands both to the recorder, and keypad events.
//!
//! Calls are told apart by our own local port, never by the sender's address: one
//! load generator can send every call's audio from a single port.
//!
//! Where audio goes, and whose audio is heard, is decided by symmetric RTP latching:
//! the call's media is tied to the trunk network that signalled it. We send to the
//! SDP's address only if it lies in that network; otherwise (a softphone behind NAT
//! naming its LAN address, say) nothing is sent until the caller's first packet
//! arrives from that network, and from then on we send to, and listen to, that one
//! source only. Packets from anywhere else, audio and keypad events alike, are
//! dropped and counted. The media starts only once the call is confirmed (ACK), so
//! nothing is ever sent for an INVITE that was never completed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::call::FrameSink;
use crate::config::TrunkNetwork;
use crate::dtmf::{self, DtmfDetector};
use crate::jitter::{JitterBuffer, PLAYOUT_DELAY};
use crate::rtp::RtpPacket;
use crate::sdp::{Direction, Negotiated};
use crate::{FRAME_SAMPLES, Frame};

pub enum MediaCommand {
    Play(Arc<[i16]>, oneshot::Sender<()>),
    /// Plays this over and over (music on hold) until stopped, bridged, or a prompt
    /// takes its place.
    PlayLoop(Arc<[i16]>),
    StopPlaying,
    /// From now on, what this leg hears goes to the other leg, and what it sends is
    /// what the other leg heard (see [`BridgeEnd`]); prompts wait until unbridged.
    Bridge(BridgeEnd),
    Unbridge,
    /// A re-INVITE changed the remote address, codec or direction (hold/resume).
    Renegotiated(Negotiated),
    /// Send a key press to this side (a digit the other side of a bridge keyed):
    /// RFC 4733 at this side's payload type, or tones if it agreed none.
    SendDigit(char),
}

/// Key presses waiting to be sent, at most; more are dropped (a flood of digits
/// must not build up a queue).
const KEYS_WAITING: usize = 32;

/// One leg's end of a bridge: 20 ms frames of linear audio each way, so each leg
/// encodes with its own codec (PCMU on one side, PCMA on the other is transcoding).
/// Both channels are short: a frame that finds the other side's queue full is
/// dropped (a stalled leg never builds up delay), and a leg with nothing to play
/// sends silence.
pub struct BridgeEnd {
    pub heard: mpsc::Sender<Frame>,
    pub to_send: mpsc::Receiver<Frame>,
}

/// Frames queued between legs at most (60 ms): beyond it, the oldest go, so the
/// delay through the bridge stays bounded whatever the two clocks do.
const BRIDGE_FRAMES: usize = 3;

impl BridgeEnd {
    /// The two ends of a new bridge.
    pub fn pair() -> (BridgeEnd, BridgeEnd) {
        let (a_heard, b_to_send) = mpsc::channel(BRIDGE_FRAMES + 1);
        let (b_heard, a_to_send) = mpsc::channel(BRIDGE_FRAMES + 1);
        (
            BridgeEnd {
                heard: a_heard,
                to_send: a_to_send,
            },
            BridgeEnd {
                heard: b_heard,
                to_send: b_to_send,
            },
        )
    }

    /// The frame to send now: the newest of those waiting beyond the bound.
    fn next_to_send(&mut self) -> Frame {
        let mut frame = None;
        while let Ok(f) = self.to_send.try_recv() {
            frame = Some(f);
            if self.to_send.len() < BRIDGE_FRAMES {
                break;
            }
        }
        frame.unwrap_or([0; FRAME_SAMPLES])
    }
}

/// Hands out RTP/RTCP port pairs from the configured range.
pub struct PortPool {
    ip: IpAddr,
    first: u16,
    pairs: u32,
    next: AtomicU32,
}

impl PortPool {
    pub fn new(ip: IpAddr, range: (u16, u16)) -> Self {
        let first = range.0 + range.0 % 2;
        let pairs = u32::from(range.1.saturating_sub(first) / 2).max(1);
        PortPool {
            ip,
            first,
            pairs,
            next: AtomicU32::new(0),
        }
    }

    /// Binds the next free pair; a pair in use by anything else is skipped.
    pub async fn bind(&self) -> std::io::Result<(UdpSocket, UdpSocket)> {
        for _ in 0..self.pairs.min(256) {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % self.pairs;
            let port = self.first + (i * 2) as u16;
            let Ok(rtp) = UdpSocket::bind((self.ip, port)).await else {
                continue;
            };
            let Ok(rtcp) = UdpSocket::bind((self.ip, port + 1)).await else {
                continue;
            };
            return Ok((rtp, rtcp));
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "no free RTP port pair in the range",
        ))
    }
}

/// What a finished media session observed.
#[derive(Debug, Default, Clone, Copy)]
pub struct MediaStats {
    pub ticks: u64,
    pub packets_in: u64,
    /// Packets from a source other than the latched one (or outside the trunk).
    pub wrong_source: u64,
    pub late: u64,
    pub missing: u64,
}

/// The rules one call's media runs by.
#[derive(Debug, Clone)]
pub struct MediaPolicy {
    /// The trunk network that signalled the call: media comes from and goes to it only.
    pub network: TrunkNetwork,
    /// Silence from a caller who should be sending for this long ends the call.
    pub timeout: Duration,
    /// For log lines (the call's SIP Call-ID).
    pub call_id: String,
    /// Cancelled by the media when the caller has been silent for `timeout`.
    pub on_silence: CancellationToken,
}

/// Where the caller's media comes from, once we know.
struct Latch {
    network: TrunkNetwork,
    source: Option<SocketAddr>,
    warned: bool,
}

impl Latch {
    /// Whether a packet from `from` belongs to the call; the first one from the
    /// trunk's network fixes the source.
    fn accept(&mut self, from: SocketAddr, sdp: Option<SocketAddr>, call_id: &str) -> bool {
        match self.source {
            Some(s) => s == from,
            None if self.network.contains(from.ip()) => {
                self.source = Some(from);
                if sdp != Some(from) && !self.warned {
                    self.warned = true;
                    tracing::warn!(%call_id, sdp = ?sdp, source = %from, "the caller's media comes from another address than its SDP names; sending to the source");
                }
                true
            }
            None => false,
        }
    }

    /// Where to send: the latched source, else the SDP's address if it is in the
    /// trunk's network; nowhere while the caller is on hold.
    fn target(&self, sdp: Option<SocketAddr>) -> Option<SocketAddr> {
        let sdp = sdp?;
        self.source
            .or_else(|| self.network.contains(sdp.ip()).then_some(sdp))
    }
}

struct Outgoing {
    playing: Option<(Arc<[i16]>, usize, oneshot::Sender<()>)>,
    looping: Option<(Arc<[i16]>, usize)>,
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    /// Key presses to send, and the one being sent with its RTP timestamp.
    keys: std::collections::VecDeque<char>,
    pressing: Option<(dtmf::KeyPress, u32)>,
}

impl Outgoing {
    /// The next 20 ms we send: the prompt playing, or silence.
    fn next_frame(&mut self) -> Frame {
        let mut frame = [0i16; FRAME_SAMPLES];
        if let Some((audio, pos, _)) = &mut self.playing {
            let end = (*pos + FRAME_SAMPLES).min(audio.len());
            frame[..end - *pos].copy_from_slice(&audio[*pos..end]);
            *pos = end;
            if *pos >= audio.len()
                && let Some((_, _, done)) = self.playing.take()
            {
                let _ = done.send(());
            }
        } else if let Some((audio, pos)) = &mut self.looping {
            for s in frame.iter_mut() {
                *s = audio[*pos];
                *pos = (*pos + 1) % audio.len();
            }
        }
        frame
    }
}

/// Runs until `stop` is cancelled; then plays out what the jitter buffer still holds.
pub async fn run(
    (rtp, rtcp): (UdpSocket, UdpSocket),
    mut negotiated: Negotiated,
    mut commands: mpsc::UnboundedReceiver<MediaCommand>,
    digits: mpsc::Sender<char>,
    mut sink: Option<Box<dyn FrameSink>>,
    stop: CancellationToken,
    policy: MediaPolicy,
) -> MediaStats {
    let silent = policy.on_silence.clone();
    let mut out = Outgoing {
        playing: None,
        looping: None,
        ssrc: rand::random(),
        sequence: rand::random(),
        timestamp: rand::random(),
        keys: std::collections::VecDeque::new(),
        pressing: None,
    };
    let mut jitter = JitterBuffer::default();
    let mut dtmf = DtmfDetector::default();
    let mut stats = MediaStats::default();
    let mut clock = tokio::time::interval(Duration::from_millis(20));
    // A stalled task catches up at once: the recording keeps real time.
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut buf = vec![0u8; 2048];
    let mut rtcp_buf = vec![0u8; 2048];
    let mut packet = Vec::with_capacity(12 + FRAME_SAMPLES);
    let mut payload = [0u8; FRAME_SAMPLES];
    let mut tick: u64 = 0;
    let mut commands_open = true;
    let mut latch = Latch {
        network: policy.network,
        source: None,
        warned: false,
    };
    let silence_ticks = (policy.timeout.as_millis() / 20).max(1) as u64;
    let mut last_heard: u64 = 0;
    let mut flushed = MediaStats::default();
    let mut bridge: Option<BridgeEnd> = None;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = clock.tick() => {
                tick += 1;
                let caller = jitter.play_out(tick);
                let mut sent = match bridge.as_mut() {
                    Some(b) => {
                        let _ = b.heard.try_send(caller);
                        b.next_to_send()
                    }
                    None => out.next_frame(),
                };
                // A key press being sent takes this packet's place (or its audio).
                if out.pressing.is_none() {
                    out.pressing = out.keys.pop_front().and_then(|d| dtmf::KeyPress::new(d).map(|k| (k, out.timestamp)));
                }
                let mut event = None;
                if let Some((press, began)) = out.pressing.as_mut() {
                    let next = match negotiated.event_pt {
                        Some(pt) => press.next_packet().map(|(payload, first)| event = Some((pt, payload, first, *began))),
                        None => press.next_tones().map(|tones| sent = tones),
                    };
                    if next.is_none() {
                        out.pressing = None;
                    }
                }
                let may_send = matches!(negotiated.direction.answer(), Direction::SendRecv | Direction::SendOnly);
                if let (Some(remote), true, Some((pt, event, first, began))) = (latch.target(negotiated.remote), may_send, event) {
                    RtpPacket {
                        marker: first,
                        payload_type: pt,
                        sequence: out.sequence,
                        timestamp: began,
                        ssrc: out.ssrc,
                        payload: &event,
                    }
                    .write(&mut packet);
                    let _ = rtp.try_send_to(&packet, remote);
                } else if let (Some(remote), true) = (latch.target(negotiated.remote), may_send) {
                    for (p, s) in payload.iter_mut().zip(sent.iter()) {
                        *p = negotiated.codec.encode(*s);
                    }
                    RtpPacket {
                        marker: tick == 1,
                        payload_type: negotiated.audio_pt,
                        sequence: out.sequence,
                        timestamp: out.timestamp,
                        ssrc: out.ssrc,
                        payload: &payload,
                    }
                    .write(&mut packet);
                    let _ = rtp.try_send_to(&packet, remote);
                }
                out.sequence = out.sequence.wrapping_add(1);
                out.timestamp = out.timestamp.wrapping_add(FRAME_SAMPLES as u32);
                if let Some(s) = sink.as_mut() {
                    s.frame(&caller, &sent);
                }
                // A side that holds us (sendonly) may well send nothing for as long as the
                // hold lasts: only a two-way stream is expected to carry audio.
                let caller_sends = negotiated.direction == Direction::SendRecv;
                if caller_sends && tick.saturating_sub(last_heard) >= silence_ticks && !silent.is_cancelled() {
                    tracing::info!(call_id = %policy.call_id, "no media from the caller: ending the call");
                    silent.cancel();
                }
                if tick.is_multiple_of(50) {
                    flush_counters(&stats, &mut flushed);
                }
            }
            r = rtp.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                if !latch.accept(from, negotiated.remote, &policy.call_id) {
                    stats.wrong_source += 1;
                    continue;
                }
                let Ok(p) = RtpPacket::parse(&buf[..n]) else { continue };
                stats.packets_in += 1;
                last_heard = tick;
                if Some(p.payload_type) == negotiated.event_pt {
                    if let Some(d) = dtmf.packet(p.ssrc, p.timestamp, p.payload) {
                        let _ = digits.try_send(d);
                    }
                } else if p.payload_type == negotiated.audio_pt && p.payload.len() == FRAME_SAMPLES {
                    let mut frame = [0i16; FRAME_SAMPLES];
                    for (s, b) in frame.iter_mut().zip(p.payload) {
                        *s = negotiated.codec.decode(*b);
                    }
                    jitter.insert(tick, p.ssrc, p.timestamp, frame);
                }
            }
            _ = rtcp.recv_from(&mut rtcp_buf) => {}
            c = commands.recv(), if commands_open => match c {
                Some(MediaCommand::Play(audio, done)) => {
                    if let Some((_, _, old)) = out.playing.replace((audio, 0, done)) {
                        let _ = old.send(());
                    }
                }
                Some(MediaCommand::PlayLoop(audio)) => {
                    if !audio.is_empty() {
                        out.looping = Some((audio, 0));
                    }
                }
                Some(MediaCommand::StopPlaying) => {
                    out.looping = None;
                    if let Some((_, _, done)) = out.playing.take() {
                        let _ = done.send(());
                    }
                }
                Some(MediaCommand::Bridge(end)) => {
                    out.looping = None;
                    bridge = Some(end);
                }
                Some(MediaCommand::Unbridge) => bridge = None,
                Some(MediaCommand::SendDigit(d)) => {
                    if out.keys.len() < KEYS_WAITING {
                        out.keys.push_back(d);
                    }
                }
                Some(MediaCommand::Renegotiated(n)) => {
                    // Media moved: learn the new source from its first packets.
                    if n.remote.is_some() && n.remote != negotiated.remote {
                        latch.source = None;
                    }
                    if negotiated.direction != Direction::SendRecv {
                        // Coming back from hold: the silence clock starts now.
                        last_heard = tick;
                    }
                    negotiated = n;
                }
                None => commands_open = false,
            },
        }
    }
    // The caller's last few frames are still waiting for their turn.
    for t in tick + 1..=tick + PLAYOUT_DELAY {
        let caller = jitter.play_out(t);
        if let Some(s) = sink.as_mut() {
            s.frame(&caller, &[0; FRAME_SAMPLES]);
        }
    }
    stats.ticks = tick + PLAYOUT_DELAY;
    stats.late = jitter.late;
    stats.missing = jitter.missing;
    flush_counters(&stats, &mut flushed);
    stats
}

/// Adds what was counted since the last flush to the process-wide metrics (once a
/// second per call rather than per packet).
fn flush_counters(stats: &MediaStats, flushed: &mut MediaStats) {
    let received = stats.packets_in - flushed.packets_in;
    let dropped = stats.wrong_source - flushed.wrong_source;
    let lost = stats.missing.saturating_sub(flushed.missing);
    if received > 0 {
        metrics::counter!("contactd_rtp_packets_received_total").increment(received);
    }
    if dropped > 0 {
        metrics::counter!("contactd_rtp_packets_dropped_total", "reason" => "wrong_source")
            .increment(dropped);
    }
    if lost > 0 {
        metrics::counter!("contactd_rtp_packets_lost_total").increment(lost);
    }
    flushed.packets_in = stats.packets_in;
    flushed.wrong_source = stats.wrong_source;
    flushed.missing = stats.missing;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_source_in_the_trunk_network_is_latched() {
        let network = TrunkNetwork::parse("192.0.2.0/24").unwrap();
        let mut latch = Latch {
            network,
            source: None,
            warned: false,
        };
        let lan: SocketAddr = "10.1.1.5:4000".parse().unwrap();
        let real: SocketAddr = "192.0.2.7:30000".parse().unwrap();
        let other: SocketAddr = "192.0.2.7:30002".parse().unwrap();
        // The SDP names a LAN address: nothing is sent until the caller is heard.
        assert_eq!(latch.target(Some(lan)), None);
        assert!(!latch.accept("198.51.100.1:5000".parse().unwrap(), Some(lan), "c"));
        assert!(latch.accept(real, Some(lan), "c"));
        assert!(latch.warned);
        assert_eq!(latch.target(Some(lan)), Some(real));
        assert!(
            !latch.accept(other, Some(lan), "c"),
            "a second port is not the caller"
        );
        assert_eq!(latch.target(None), None, "on hold nothing is sent");
    }

    #[test]
    fn an_sdp_address_in_the_trunk_is_used_until_the_caller_is_heard() {
        let network = TrunkNetwork::parse("192.0.2.0/24").unwrap();
        let latch = Latch {
            network,
            source: None,
            warned: false,
        };
        let sdp: SocketAddr = "192.0.2.9:6000".parse().unwrap();
        assert_eq!(latch.target(Some(sdp)), Some(sdp));
        let outside: SocketAddr = "203.0.113.1:6000".parse().unwrap();
        assert_eq!(latch.target(Some(outside)), None);
    }
}
