//! RTP (RFC 3550) packets: the fixed 12-byte header, CSRCs, a header extension and
//! padding are understood on the way in; we send the plain 12-byte form.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("shorter than an RTP header")]
    TooShort,
    #[error("not RTP version 2")]
    Version,
    #[error("header fields run past the packet")]
    Truncated,
}

impl<'a> RtpPacket<'a> {
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtpError> {
        if buf.len() < 12 {
            return Err(RtpError::TooShort);
        }
        if buf[0] >> 6 != 2 {
            return Err(RtpError::Version);
        }
        let padding = buf[0] & 0x20 != 0;
        let extension = buf[0] & 0x10 != 0;
        let csrc_count = usize::from(buf[0] & 0x0F);
        let mut start = 12 + 4 * csrc_count;
        if extension {
            let words = buf.get(start + 2..start + 4).ok_or(RtpError::Truncated)?;
            start += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
        }
        let mut end = buf.len();
        if padding {
            let pad = usize::from(*buf.last().expect("non-empty"));
            end = end.checked_sub(pad).ok_or(RtpError::Truncated)?;
        }
        if start > end {
            return Err(RtpError::Truncated);
        }
        Ok(RtpPacket {
            marker: buf[1] & 0x80 != 0,
            payload_type: buf[1] & 0x7F,
            sequence: u16::from_be_bytes([buf[2], buf[3]]),
            timestamp: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
            ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
            payload: &buf[start..end],
        })
    }

    /// Writes the packet into `out` (cleared first).
    pub fn write(&self, out: &mut Vec<u8>) {
        out.clear();
        out.push(0x80);
        out.push((u8::from(self.marker) << 7) | (self.payload_type & 0x7F));
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(self.payload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let p = RtpPacket {
            marker: true,
            payload_type: 8,
            sequence: 65535,
            timestamp: 160,
            ssrc: 7,
            payload: &[1, 2, 3],
        };
        let mut buf = Vec::new();
        p.write(&mut buf);
        assert_eq!(RtpPacket::parse(&buf).unwrap(), p);
    }

    #[test]
    fn csrc_extension_and_padding() {
        let mut buf = vec![0xB1, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        buf.extend_from_slice(&[9, 9, 9, 9]); // one CSRC
        buf.extend_from_slice(&[0xBE, 0xDE, 0, 1, 5, 5, 5, 5]); // extension, 1 word
        buf.extend_from_slice(&[42, 43]); // payload
        buf.extend_from_slice(&[0, 0, 3]); // 3 bytes of padding
        let p = RtpPacket::parse(&buf).unwrap();
        assert_eq!(p.payload, &[42, 43]);
    }

    #[test]
    fn hostile_packets_are_refused() {
        assert_eq!(RtpPacket::parse(&[0x80; 5]), Err(RtpError::TooShort));
        assert_eq!(RtpPacket::parse(&[0x40; 12]), Err(RtpError::Version));
        assert_eq!(
            RtpPacket::parse(&[0x8F, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(RtpError::Truncated)
        );
        let mut padded = vec![0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 200];
        assert_eq!(RtpPacket::parse(&padded), Err(RtpError::Truncated));
        padded[12] = 1;
        assert!(RtpPacket::parse(&padded).unwrap().payload.is_empty());
    }
}
