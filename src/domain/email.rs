//! Email addresses, normalised so that the same mailbox always matches one record.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid email address")]
pub struct EmailAddressError;

impl EmailAddress {
    /// Trims, accepts `Name <addr>` and lower-cases the whole address. Lower-casing the
    /// local part is technically lossy, but no mail system a resident uses treats case
    /// there as significant, and matching records is worth more than that purity.
    pub fn parse(input: &str) -> Result<Self, EmailAddressError> {
        let s = input.trim();
        let s = match (s.rfind('<'), s.ends_with('>')) {
            (Some(i), true) => &s[i + 1..s.len() - 1],
            _ => s,
        };
        let s = s.trim().to_lowercase();
        if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(EmailAddressError);
        }
        let (local, domain) = s.rsplit_once('@').ok_or(EmailAddressError)?;
        let domain_ok = domain.contains('.')
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        if local.is_empty() || local.len() > 64 || local.contains(['<', '>', '@']) || !domain_ok {
            return Err(EmailAddressError);
        }
        Ok(EmailAddress(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn from_stored(s: String) -> Self {
        EmailAddress(s)
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for EmailAddress {
    type Err = EmailAddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

super::string_domain_type!(
    EmailAddress,
    "A normalised email address",
    "resident@example.org"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        assert_eq!(
            EmailAddress::parse("  Jo Bloggs <Jo.Bloggs@Example.ORG> ")
                .unwrap()
                .as_str(),
            "jo.bloggs@example.org"
        );
    }

    #[test]
    fn refuses() {
        for s in [
            "",
            "jo",
            "jo@",
            "@example.org",
            "jo@example",
            "jo bloggs@example.org",
            "a@b@c.org",
        ] {
            assert!(EmailAddress::parse(s).is_err(), "{s:?} accepted");
        }
    }
}
