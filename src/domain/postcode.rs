//! UK postcodes, normalised to upper case with one space before the inward code.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Postcode(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid UK postcode")]
pub struct PostcodeError;

impl Postcode {
    pub fn parse(input: &str) -> Result<Self, PostcodeError> {
        let compact: String = input
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let n = compact.len();
        if !(5..=7).contains(&n) || !compact.is_ascii() {
            return Err(PostcodeError);
        }
        let (outward, inward) = compact.split_at(n - 3);
        let inward_ok = {
            let b = inward.as_bytes();
            b[0].is_ascii_digit() && b[1].is_ascii_alphabetic() && b[2].is_ascii_alphabetic()
        };
        let outward_ok = outward.as_bytes()[0].is_ascii_alphabetic()
            && outward.bytes().all(|b| b.is_ascii_alphanumeric())
            && outward.bytes().any(|b| b.is_ascii_digit());
        if !inward_ok || !outward_ok {
            return Err(PostcodeError);
        }
        Ok(Postcode(format!("{outward} {inward}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn from_stored(s: String) -> Self {
        Postcode(s)
    }
}

impl fmt::Display for Postcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Postcode {
    type Err = PostcodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

super::string_domain_type!(Postcode, "A UK postcode", "M60 2LA");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        assert_eq!(Postcode::parse("m602la").unwrap().as_str(), "M60 2LA");
        assert_eq!(Postcode::parse(" SW1A 1AA ").unwrap().as_str(), "SW1A 1AA");
        for s in ["", "12345", "M60", "M60 2L1", "ABCDEFGH"] {
            assert!(Postcode::parse(s).is_err(), "{s:?} accepted");
        }
    }
}
