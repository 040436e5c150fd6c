//! One call's media: an RTP socket (and its RTCP neighbour, drained and ignored), a
//! 20 ms clock that sends our audio, plays the caller's out of the jitter buffer and
//! hands both to the recorder, and keypad events.
//!
//! Calls are told apart by our own local port, never by the sender's address: one
//! load generator can send every call's audio from a single port.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::call::FrameSink;
use crate::dtmf::DtmfDetector;
use crate::jitter::{JitterBuffer, PLAYOUT_DELAY};
use crate::rtp::RtpPacket;
use crate::sdp::{Direction, Negotiated};
use crate::{FRAME_SAMPLES, Frame};

pub enum MediaCommand {
    Play(Arc<[i16]>, oneshot::Sender<()>),
    StopPlaying,
    /// A re-INVITE changed the remote address, codec or direction (hold/resume).
    Renegotiated(Negotiated),
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
    pub late: u64,
    pub missing: u64,
}

struct Outgoing {
    playing: Option<(Arc<[i16]>, usize, oneshot::Sender<()>)>,
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
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
        }
        frame
    }
}

/// Runs until `stop` is cancelled; then plays out what the jitter buffer still holds.
pub async fn run(
    rtp: UdpSocket,
    rtcp: UdpSocket,
    mut negotiated: Negotiated,
    mut commands: mpsc::UnboundedReceiver<MediaCommand>,
    digits: mpsc::UnboundedSender<char>,
    mut sink: Option<Box<dyn FrameSink>>,
    stop: CancellationToken,
) -> MediaStats {
    let mut out = Outgoing {
        playing: None,
        ssrc: rand::random(),
        sequence: rand::random(),
        timestamp: rand::random(),
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
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = clock.tick() => {
                tick += 1;
                let sent = out.next_frame();
                let may_send = matches!(negotiated.direction.answer(), Direction::SendRecv | Direction::SendOnly);
                if let (Some(remote), true) = (negotiated.remote, may_send) {
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
                let caller = jitter.play_out(tick);
                if let Some(s) = sink.as_mut() {
                    s.frame(&caller, &sent);
                }
            }
            r = rtp.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                if !from_peer(&negotiated, from) {
                    continue;
                }
                let Ok(p) = RtpPacket::parse(&buf[..n]) else { continue };
                stats.packets_in += 1;
                if Some(p.payload_type) == negotiated.event_pt {
                    if let Some(d) = dtmf.packet(p.ssrc, p.timestamp, p.payload) {
                        let _ = digits.send(d);
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
                Some(MediaCommand::StopPlaying) => {
                    if let Some((_, _, done)) = out.playing.take() {
                        let _ = done.send(());
                    }
                }
                Some(MediaCommand::Renegotiated(n)) => negotiated = n,
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
    stats
}

/// Audio is taken from the address the caller's SDP named (any port: a NAT may change
/// it), so nobody else can inject audio into a call.
fn from_peer(n: &Negotiated, from: SocketAddr) -> bool {
    match n.remote {
        Some(r) => r.ip() == from.ip() || r.ip().is_unspecified(),
        None => true,
    }
}
