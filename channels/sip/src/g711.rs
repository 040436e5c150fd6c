//! G.711 µ-law (PCMU) and A-law (PCMA), ITU-T G.711 segment encoding.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Pcmu,
    Pcma,
}

impl Codec {
    /// The static RTP payload type (RFC 3551).
    pub fn static_payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    pub fn decode(self, byte: u8) -> i16 {
        match self {
            Codec::Pcmu => ulaw_to_linear(byte),
            Codec::Pcma => alaw_to_linear(byte),
        }
    }

    pub fn encode(self, sample: i16) -> u8 {
        match self {
            Codec::Pcmu => linear_to_ulaw(sample),
            Codec::Pcma => linear_to_alaw(sample),
        }
    }
}

const BIAS: i32 = 0x84;
const CLIP: i32 = 32635;

pub fn linear_to_ulaw(sample: i16) -> u8 {
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    // The segment is the position of the highest set bit among bits 7..=14.
    let mut exponent = 7;
    let mut mask = 0x4000;
    while exponent > 0 && s & mask == 0 {
        exponent -= 1;
        mask >>= 1;
    }
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !((sign | (exponent << 4) | mantissa) as u8)
}

pub fn ulaw_to_linear(byte: u8) -> i16 {
    let u = !byte;
    let exponent = i32::from((u >> 4) & 0x07);
    let mantissa = i32::from(u & 0x0F);
    let magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
    (if u & 0x80 != 0 { -magnitude } else { magnitude }) as i16
}

/// Upper bounds of the A-law segments, on 13-bit magnitudes.
const ALAW_SEGMENT_ENDS: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

pub fn linear_to_alaw(sample: i16) -> u8 {
    let mut v = i32::from(sample) >> 3;
    let mask = if v >= 0 {
        0xD5
    } else {
        v = -v - 1;
        0x55
    };
    let Some(segment) = ALAW_SEGMENT_ENDS.iter().position(|&end| v <= end) else {
        return 0x7F ^ mask;
    };
    let segment = segment as i32;
    let mantissa = if segment < 2 {
        (v >> 1) & 0x0F
    } else {
        (v >> segment) & 0x0F
    };
    ((segment << 4) | mantissa) as u8 ^ mask
}

pub fn alaw_to_linear(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let exponent = i32::from((a >> 4) & 0x07);
    let mantissa = i32::from(a & 0x0F) << 4;
    let magnitude = match exponent {
        0 => mantissa + 8,
        1 => mantissa + 0x108,
        e => (mantissa + 0x108) << (e - 1),
    };
    (if a & 0x80 != 0 { magnitude } else { -magnitude }) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_are_close() {
        for codec in [Codec::Pcmu, Codec::Pcma] {
            for s in (-32000i32..32000).step_by(97) {
                let back = i32::from(codec.decode(codec.encode(s as i16)));
                let tolerance = (s.abs() / 16).max(16);
                assert!((back - s).abs() <= tolerance, "{codec:?} {s} -> {back}");
            }
        }
    }

    #[test]
    fn known_values() {
        // Silence codes.
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert!(alaw_to_linear(0xD5).abs() <= 8);
        // Every code decodes and re-encodes to itself.
        for b in 0..=255u8 {
            assert_eq!(
                linear_to_ulaw(ulaw_to_linear(b)),
                if b == 0x7F { 0xFF } else { b },
                "ulaw {b:#x}"
            );
            assert_eq!(linear_to_alaw(alaw_to_linear(b)), b, "alaw {b:#x}");
        }
    }
}
