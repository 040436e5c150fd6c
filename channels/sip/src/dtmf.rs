//! Keypad digits: RFC 4733 telephone-event packets and SIP INFO bodies.
//!
//! A key press is sent as many RTP packets sharing one timestamp (updates, then three
//! copies of the end packet); it is one digit, reported on the first packet seen.

/// The digit of RFC 4733 event code 0..=15.
pub fn event_digit(event: u8) -> Option<char> {
    const DIGITS: &[u8; 16] = b"0123456789*#ABCD";
    DIGITS.get(usize::from(event)).map(|&b| b as char)
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
    fn info_bodies() {
        assert_eq!(info_digit("Signal=5\r\nDuration=160\r\n"), Some('5'));
        assert_eq!(info_digit("Signal= #\r\n"), Some('#'));
        assert_eq!(info_digit("11"), Some('#'));
        assert_eq!(info_digit("7"), Some('7'));
        assert_eq!(info_digit("Signal=hello"), None);
    }
}
