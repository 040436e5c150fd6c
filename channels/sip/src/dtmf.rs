//! Keypad digits: RFC 4733 telephone-event packets and SIP INFO bodies.
//!
//! A key press is sent as many RTP packets sharing one timestamp (updates, then three
//! copies of the end packet); it is one digit, reported on the first packet seen.
//! Each leg of a bridge has its own telephone-event payload type: a caller's key,
//! however it came (RFC 4733 at the caller's type, or SIP INFO), is sent on to the
//! advisor afresh as a [`KeyPress`] at the advisor's type, or as its two tones in
//! the audio to a phone that agreed no telephone-event.

/// Keys a call holds that nobody has read yet, at most; more are dropped (a caller
/// keying while they wait, or a flood of events, cannot grow memory).
pub const KEYS_HELD: usize = 64;

/// The digit of RFC 4733 event code 0..=15.
pub fn event_digit(event: u8) -> Option<char> {
    const DIGITS: &[u8; 16] = b"0123456789*#ABCD";
    DIGITS.get(usize::from(event)).map(|&b| b as char)
}

/// A key press we send: updates every 20 ms for 100 ms, then the end packet three
/// times (RFC 4733 §2.5.1), all with the timestamp the press began at.
#[derive(Debug, Clone)]
pub struct KeyPress {
    digit: char,
    event: u8,
    /// Packets (or 20 ms frames) sent so far.
    sent: u8,
}

/// Updates sent for a press (100 ms), then copies of its end packet.
const PRESS_PACKETS: u8 = 5;
const END_COPIES: u8 = 3;
/// -10 dBm0, a key's usual level.
const VOLUME: u8 = 10;

impl KeyPress {
    pub fn new(digit: char) -> Option<KeyPress> {
        const DIGITS: &str = "0123456789*#ABCD";
        let event = DIGITS.find(digit.to_ascii_uppercase())? as u8;
        Some(KeyPress {
            digit: digit.to_ascii_uppercase(),
            event,
            sent: 0,
        })
    }

    /// The next telephone-event payload, and whether it starts the press (the
    /// marker bit); `None` once the press has been sent.
    pub fn next_packet(&mut self) -> Option<([u8; 4], bool)> {
        let n = self.sent;
        if n >= PRESS_PACKETS + END_COPIES {
            return None;
        }
        self.sent += 1;
        let end = n >= PRESS_PACKETS;
        let duration = 160 * u16::from(n.min(PRESS_PACKETS - 1) + 1);
        let flags = if end { 0x80 } else { 0 } | VOLUME;
        let [hi, lo] = duration.to_be_bytes();
        Some(([self.event, flags, hi, lo], n == 0))
    }

    /// The next 20 ms of the press as audio (its two tones for 100 ms, then a
    /// 60 ms gap), for a phone without telephone-event; `None` once sent.
    pub fn next_tones(&mut self) -> Option<crate::Frame> {
        let n = self.sent;
        if n >= PRESS_PACKETS + END_COPIES {
            return None;
        }
        self.sent += 1;
        let mut frame = [0i16; crate::FRAME_SAMPLES];
        if n < PRESS_PACKETS {
            let (low, high) = tones(self.digit);
            for (i, s) in frame.iter_mut().enumerate() {
                let t = (usize::from(n) * crate::FRAME_SAMPLES + i) as f64 / 8000.0;
                let v = (2.0 * std::f64::consts::PI * low * t).sin()
                    + (2.0 * std::f64::consts::PI * high * t).sin();
                *s = (v * 5000.0) as i16;
            }
        }
        Some(frame)
    }
}

/// A key's row and column frequencies (Hz).
fn tones(digit: char) -> (f64, f64) {
    const ROWS: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
    const COLUMNS: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
    const PAD: [&str; 4] = ["123A", "456B", "789C", "*0#D"];
    PAD.iter()
        .enumerate()
        .find_map(|(r, row)| row.find(digit).map(|c| (ROWS[r], COLUMNS[c])))
        .unwrap_or((ROWS[0], COLUMNS[0]))
}

/// Tracks telephone-event packets of one stream and reports each key once.
#[derive(Debug, Default)]
pub struct DtmfDetector {
    last: Option<(u32, u32)>,
}

impl DtmfDetector {
    /// `ssrc`/`timestamp` identify a key press; returns its digit the first time.
    pub fn packet(&mut self, ssrc: u32, timestamp: u32, payload: &[u8]) -> Option<char> {
        let event = *payload.first()?;
        if payload.len() < 4 {
            return None;
        }
        if self.last == Some((ssrc, timestamp)) {
            return None;
        }
        self.last = Some((ssrc, timestamp));
        event_digit(event)
    }
}

/// The digit of a SIP INFO body: `application/dtmf-relay` (`Signal=5`) or
/// `application/dtmf` (`5`).
pub fn info_digit(body: &str) -> Option<char> {
    let value = body
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            k.trim().eq_ignore_ascii_case("signal").then_some(v.trim())
        })
        .unwrap_or(body.trim());
    let mut chars = value.chars();
    let c = chars.next()?.to_ascii_uppercase();
    if chars.next().is_some() {
        return match value {
            "10" => Some('*'),
            "11" => Some('#'),
            _ => None,
        };
    }
    "0123456789*#ABCD".contains(c).then_some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_press_one_digit() {
        let mut d = DtmfDetector::default();
        let start = [5, 0x0A, 0, 160];
        let end = [5, 0x8A, 3, 32];
        assert_eq!(d.packet(1, 1000, &start), Some('5'));
        assert_eq!(d.packet(1, 1000, &start), None);
        for _ in 0..3 {
            assert_eq!(d.packet(1, 1000, &end), None);
        }
        assert_eq!(d.packet(1, 2000, &[11, 0x80, 0, 0]), Some('#'));
        assert_eq!(
            d.packet(1, 3000, &[99, 0, 0, 0]),
            None,
            "not a keypad event"
        );
        assert_eq!(d.packet(1, 4000, &[1]), None, "truncated");
    }

    #[test]
    fn a_press_we_send_is_read_back_as_one_digit() {
        let mut press = KeyPress::new('#').unwrap();
        let mut detector = DtmfDetector::default();
        let mut packets = Vec::new();
        while let Some(p) = press.next_packet() {
            packets.push(p);
        }
        assert_eq!(packets.len(), 8, "five updates, three ends");
        assert!(
            packets[0].1 && packets[1..].iter().all(|p| !p.1),
            "marker once"
        );
        assert_eq!(packets[0].0, [11, 10, 0, 160]);
        assert_eq!(packets[4].0, [11, 10, 3, 32]);
        assert!(packets[5..].iter().all(|p| p.0 == [11, 0x8A, 3, 32]));
        let digits: Vec<char> = packets
            .iter()
            .filter_map(|(payload, _)| detector.packet(7, 1234, payload))
            .collect();
        assert_eq!(digits, ['#']);
        assert!(KeyPress::new('x').is_none());
    }

    #[test]
    fn a_press_as_tones_is_the_key_row_and_column() {
        let mut press = KeyPress::new('5').unwrap();
        let frames: Vec<crate::Frame> = std::iter::from_fn(|| press.next_tones()).collect();
        assert_eq!(frames.len(), 8);
        assert!(frames[..5].iter().all(|f| f.iter().any(|s| s.abs() > 5000)));
        assert!(frames[5..].iter().all(|f| f.iter().all(|s| *s == 0)));
        assert_eq!(tones('5'), (770.0, 1336.0));
        assert_eq!(tones('#'), (941.0, 1477.0));
    }

    #[test]
    fn info_bodies() {
        assert_eq!(info_digit("Signal=5\r\nDuration=160\r\n"), Some('5'));
        assert_eq!(info_digit("Signal= #\r\n"), Some('#'));
        assert_eq!(info_digit("11"), Some('#'));
        assert_eq!(info_digit("7"), Some('7'));
        assert_eq!(info_digit("Signal=hello"), None);
    }
}
