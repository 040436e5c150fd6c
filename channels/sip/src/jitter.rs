//! The caller's audio on the call's own clock.
//!
//! Each 20 ms tick of the call has a frame number. A packet's frame number comes from
//! its RTP timestamp relative to the first packet of its stream (an SSRC change, or a
//! jump of more than a few seconds, starts a new stream at the current tick). Frames
//! are played out a few ticks late, so packets that arrive out of order or a little
//! late still take their place; a frame that never came is silence. Duplicates take
//! the place of nothing.

use std::collections::BTreeMap;

use crate::{FRAME_SAMPLES, Frame};

/// How many ticks a frame waits for its packet: 60 ms.
pub const PLAYOUT_DELAY: u64 = 3;
/// A timestamp jump larger than this (10 s) is a new stream, not a gap.
const MAX_JUMP_FRAMES: i64 = 500;
/// Frames held at most (a hostile sender cannot grow the buffer).
const MAX_HELD: usize = 64;

#[derive(Debug, Default)]
pub struct JitterBuffer {
    stream: Option<Stream>,
    held: BTreeMap<u64, Frame>,
    /// Frames that arrived after their playout tick (counted, then dropped).
    pub late: u64,
    /// Ticks played as silence because their packet never came (while a stream ran).
    pub missing: u64,
}

#[derive(Debug, Clone, Copy)]
struct Stream {
    ssrc: u32,
    first_timestamp: u32,
    first_frame: u64,
}

impl JitterBuffer {
    /// Files a decoded frame that arrived during tick `now`.
    pub fn insert(&mut self, now: u64, ssrc: u32, timestamp: u32, frame: Frame) {
        let frame_no = match self.stream {
            Some(s) if s.ssrc == ssrc => {
                let delta = i64::from(timestamp.wrapping_sub(s.first_timestamp) as i32)
                    / FRAME_SAMPLES as i64;
                let n = s.first_frame as i64 + delta;
                if (n - now as i64).abs() > MAX_JUMP_FRAMES {
                    self.restart(now, ssrc, timestamp)
                } else {
                    n.max(0) as u64
                }
            }
            _ => self.restart(now, ssrc, timestamp),
        };
        if frame_no + PLAYOUT_DELAY < now {
            self.late += 1;
            return;
        }
        if self.held.len() >= MAX_HELD {
            return;
        }
        self.held.entry(frame_no).or_insert(frame);
    }

    fn restart(&mut self, now: u64, ssrc: u32, timestamp: u32) -> u64 {
        self.stream = Some(Stream {
            ssrc,
            first_timestamp: timestamp,
            first_frame: now,
        });
        now
    }

    /// The caller's frame to record at tick `now` (that of tick `now - PLAYOUT_DELAY`).
    pub fn play_out(&mut self, now: u64) -> Frame {
        let Some(due) = now.checked_sub(PLAYOUT_DELAY) else {
            return [0; FRAME_SAMPLES];
        };
        // Anything older than `due` missed its turn.
        while let Some((&n, _)) = self.held.first_key_value() {
            if n >= due {
                break;
            }
            self.held.pop_first();
        }
        match self.held.remove(&due) {
            Some(f) => f,
            None => {
                if self.stream.is_some() {
                    self.missing += 1;
                }
                [0; FRAME_SAMPLES]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(v: i16) -> Frame {
        [v; FRAME_SAMPLES]
    }

    #[test]
    fn reorders_and_fills_gaps() {
        let mut j = JitterBuffer::default();
        // Packets for frames 0, 2, 1 arrive at ticks 0, 1, 1; frame 3 never comes.
        j.insert(0, 9, 1000, frame(1));
        j.insert(1, 9, 1320, frame(3));
        j.insert(1, 9, 1160, frame(2));
        j.insert(1, 9, 1160, frame(99)); // duplicate
        j.insert(4, 9, 1640, frame(5));
        let played: Vec<i16> = (3..8).map(|t| j.play_out(t)[0]).collect();
        assert_eq!(played, [1, 2, 3, 0, 5]);
        assert_eq!(j.missing, 1);
    }

    #[test]
    fn late_packets_are_dropped_and_ssrc_changes_restart() {
        let mut j = JitterBuffer::default();
        j.insert(0, 1, 0, frame(1));
        j.play_out(3);
        j.play_out(4);
        j.insert(10, 1, 160, frame(2)); // frame 1, due at tick 4: too late
        assert_eq!(j.late, 1);
        j.insert(10, 2, 777, frame(3)); // a new SSRC starts at tick 10
        assert_eq!(j.play_out(13)[0], 3);
    }

    #[test]
    fn wrapping_timestamps() {
        let mut j = JitterBuffer::default();
        j.insert(0, 1, u32::MAX - 159, frame(1));
        j.insert(1, 1, 0, frame(2));
        assert_eq!(j.play_out(3)[0], 1);
        assert_eq!(j.play_out(4)[0], 2);
    }
}
