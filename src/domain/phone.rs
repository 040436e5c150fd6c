//! Phone numbers, always held in E.164 (`+447700900123`).
//!
//! Residents and channels give numbers in every national format; the central record
//! and the exact-match lookup in intake only work if all of them become one form.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneNumber(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid phone number (UK national or international format)")]
pub struct PhoneNumberError;

impl PhoneNumber {
    /// Parses national UK formats (`07700 900123`, `(0161) 234 5000`) and international
    /// ones (`+44 7700 900123`, `00447700900123`) into E.164.
    pub fn parse(input: &str) -> Result<Self, PhoneNumberError> {
        let s = input.trim();
        if s.is_empty() || s.len() > 40 {
            return Err(PhoneNumberError);
        }
        let s = match s.strip_prefix("00") {
            Some(rest) => format!("+{rest}"),
            None => s.to_string(),
        };
        let parsed = phonenumber::parse(Some(phonenumber::country::Id::GB), &s)
            .map_err(|_| PhoneNumberError)?;
        if !phonenumber::is_valid(&parsed) && !plausible_uk(&parsed) {
            return Err(PhoneNumberError);
        }
        Ok(PhoneNumber(
            parsed.format().mode(phonenumber::Mode::E164).to_string(),
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A UK mobile, which can receive texts: Ofcom's 071–075 and 077–079 ranges and
    /// the Isle of Man's 07624; not 070 (personal numbers) nor other 076 (pagers).
    pub fn is_uk_mobile(&self) -> bool {
        let Some(national) = self.0.strip_prefix("+447") else {
            return false;
        };
        national.starts_with(['1', '2', '3', '4', '5', '7', '8', '9'])
            || national.starts_with("624")
    }

    /// A value already normalised by `parse` and read back from the store.
    pub(crate) fn from_stored(s: String) -> Self {
        PhoneNumber(s)
    }
}

/// libphonenumber refuses Ofcom's drama ranges (07700 900xxx, 0161 496 0xxx), which
/// councils use for test and training records; a UK number of the right shape is
/// accepted even where the metadata does not know its range.
fn plausible_uk(n: &phonenumber::PhoneNumber) -> bool {
    let national = n.national().to_string();
    n.code().value() == 44
        && (9..=10).contains(&national.len())
        && national.starts_with(['1', '2', '3', '5', '7', '8', '9'])
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for PhoneNumber {
    type Err = PhoneNumberError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

super::string_domain_type!(PhoneNumber, "A phone number in E.164", "+447700900123");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mobiles_are_told_from_landlines_pagers_and_personal_numbers() {
        let mobile = |s: &str| PhoneNumber::parse(s).unwrap().is_uk_mobile();
        assert!(mobile("07700 900123"));
        assert!(mobile("07624 123456"));
        assert!(!mobile("0161 496 0000"));
        assert!(!mobile("07012 345678"));
        assert!(!mobile("07623 123456"));
        assert!(!mobile("+33 6 12 34 56 78"));
    }

    #[test]
    fn uk_formats_become_e164() {
        for s in [
            "07700 900123",
            "07700900123",
            "+44 7700 900123",
            "+447700900123",
            "00447700900123",
            "+44 (0)7700 900123",
        ] {
            assert_eq!(
                PhoneNumber::parse(s).unwrap().as_str(),
                "+447700900123",
                "{s}"
            );
        }
        assert_eq!(
            PhoneNumber::parse("0161 234 5000").unwrap().as_str(),
            "+441612345000"
        );
    }

    #[test]
    fn rubbish_is_refused() {
        for s in ["", "hello", "123", "0770090012345678901", "+44"] {
            assert!(PhoneNumber::parse(s).is_err(), "{s:?} accepted");
        }
    }
}
