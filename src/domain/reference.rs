//! Resident-facing service request references, e.g. `SR-1000002`.
//!
//! A reference is the request's number followed by a Damm check digit. Damm catches
//! every single-digit error and every adjacent transposition, so a resident who
//! mistypes a reference on a keypad or in a text is refused instead of being attached
//! to somebody else's request.

use std::fmt;
use std::str::FromStr;

/// Damm's totally anti-symmetric quasigroup of order 10.
const DAMM: [[u8; 10]; 10] = [
    [0, 3, 1, 7, 5, 9, 8, 6, 4, 2],
    [7, 0, 9, 2, 1, 5, 4, 8, 6, 3],
    [4, 2, 0, 6, 8, 7, 1, 3, 5, 9],
    [1, 7, 5, 0, 9, 8, 3, 4, 2, 6],
    [6, 1, 2, 3, 0, 4, 5, 9, 7, 8],
    [3, 6, 7, 4, 2, 0, 9, 5, 8, 1],
    [5, 8, 6, 9, 7, 2, 0, 1, 3, 4],
    [8, 9, 4, 5, 3, 6, 2, 0, 1, 7],
    [9, 4, 3, 8, 6, 1, 7, 2, 0, 5],
    [2, 5, 8, 1, 4, 3, 6, 7, 9, 0],
];

fn damm_interim(digits: impl Iterator<Item = u8>) -> u8 {
    digits.fold(0, |interim, d| DAMM[interim as usize][d as usize])
}

/// The smallest request number handed out, so that every reference has 7 digits
/// (6 + check) until the council has taken 900,000 requests.
pub const FIRST_REQUEST_NUMBER: i64 = 100_000;

/// A reference whose check digit has been verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reference {
    number: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("a reference looks like SR-1234567")]
    Malformed,
    #[error("the reference's check digit does not match; it has been mistyped")]
    BadCheckDigit,
}

impl Reference {
    /// The reference of request number `number` (from the store's sequence).
    pub fn from_number(number: i64) -> Self {
        assert!(number > 0, "request numbers are positive");
        Reference { number }
    }

    pub fn number(self) -> i64 {
        self.number
    }

    fn check_digit(number: i64) -> u8 {
        damm_interim(number.to_string().bytes().map(|b| b - b'0'))
    }

    /// Accepts `SR-1234567`, `sr 1234567`, `SR1234567` and bare digits (keyed on a phone).
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let s = input.trim();
        let digits = match s.get(..2) {
            Some(p) if p.eq_ignore_ascii_case("SR") => s[2..].trim_start_matches(['-', ' ']),
            _ => s,
        };
        if !(2..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ReferenceError::Malformed);
        }
        if damm_interim(digits.bytes().map(|b| b - b'0')) != 0 {
            return Err(ReferenceError::BadCheckDigit);
        }
        let number: i64 = digits[..digits.len() - 1]
            .parse()
            .map_err(|_| ReferenceError::Malformed)?;
        if number <= 0 {
            return Err(ReferenceError::Malformed);
        }
        Ok(Reference { number })
    }
}

impl Reference {
    /// The first well-formed `SR-…` reference in free text (a text message, a
    /// subject line). Bare numbers are not taken: too many other numbers look alike.
    pub fn find_in(text: &str) -> Option<Reference> {
        let bytes = text.as_bytes();
        let mut i = 0;
        while i + 2 < bytes.len() {
            if bytes[i].eq_ignore_ascii_case(&b'S')
                && bytes[i + 1].eq_ignore_ascii_case(&b'R')
                && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric())
            {
                let mut j = i + 2;
                if j < bytes.len() && matches!(bytes[j], b'-' | b' ') {
                    j += 1;
                }
                let start = j;
                while j < bytes.len() && bytes[j].is_ascii_digit() {
                    j += 1;
                }
                let boundary = j == bytes.len() || !bytes[j].is_ascii_alphanumeric();
                if j > start
                    && boundary
                    && let Ok(r) = Reference::parse(&text[start..j])
                {
                    return Some(r);
                }
            }
            i += 1;
        }
        None
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SR-{}{}", self.number, Self::check_digit(self.number))
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

super::string_domain_type!(
    Reference,
    "A service request reference with check digit",
    "SR-1000002"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for n in [1, 99, FIRST_REQUEST_NUMBER, 123_456, 9_999_999] {
            let r = Reference::from_number(n);
            assert_eq!(Reference::parse(&r.to_string()), Ok(r));
        }
        assert_eq!(Reference::from_number(100_000).to_string(), "SR-1000002");
    }

    #[test]
    fn accepts_keypad_and_loose_forms() {
        let r = Reference::from_number(123_456);
        let digits = r.to_string()[3..].to_string();
        assert_eq!(Reference::parse(&digits), Ok(r));
        assert_eq!(Reference::parse(&format!("sr {digits}")), Ok(r));
        assert_eq!(Reference::parse(&format!("SR{digits}")), Ok(r));
    }

    #[test]
    fn every_single_digit_error_and_adjacent_swap_is_refused() {
        let good = Reference::from_number(483_920).to_string()[3..].to_string();
        let bytes = good.as_bytes();
        for i in 0..bytes.len() {
            for d in b'0'..=b'9' {
                if d == bytes[i] {
                    continue;
                }
                let mut typo = bytes.to_vec();
                typo[i] = d;
                let typo = String::from_utf8(typo).unwrap();
                assert!(Reference::parse(&typo).is_err(), "{typo} accepted");
            }
            if i + 1 < bytes.len() && bytes[i] != bytes[i + 1] {
                let mut swap = bytes.to_vec();
                swap.swap(i, i + 1);
                let swap = String::from_utf8(swap).unwrap();
                assert_eq!(Reference::parse(&swap), Err(ReferenceError::BadCheckDigit));
            }
        }
    }

    #[test]
    fn found_in_text() {
        let r = Reference::from_number(123_456);
        assert_eq!(
            Reference::find_in(&format!("About {r}, still no bin")),
            Some(r)
        );
        assert_eq!(
            Reference::find_in(&format!("ref {}", r.to_string().to_lowercase())),
            Some(r)
        );
        assert_eq!(Reference::find_in("call 1234567 please"), None);
        assert_eq!(Reference::find_in("SR-1234568 is mistyped"), None);
        assert_eq!(Reference::find_in("USR-1000002"), None);
    }

    #[test]
    fn rejects_garbage() {
        for s in ["", "SR-", "SR-12a4", "hello", "SR-0", "SR--1000009x"] {
            assert!(Reference::parse(s).is_err(), "{s:?} accepted");
        }
    }
}
