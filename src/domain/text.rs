//! Free text from outside, bounded in length and stripped of control characters, so
//! nothing unbounded or invisible reaches the record.

use std::fmt;

/// Trimmed, non-empty text of at most `MAX` characters; newlines allowed only where
/// `MULTILINE` says so.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Text<const MAX: usize, const MULTILINE: bool>(String);

/// A name, a title, an address line: one line, at most 200 characters.
pub type ShortText = Text<200, false>;
/// A note or a contact's content: at most 20,000 characters.
pub type LongText = Text<20_000, true>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {0} characters")]
    TooLong(usize),
    #[error("must not contain control characters")]
    Control,
}

impl<const MAX: usize, const MULTILINE: bool> Text<MAX, MULTILINE> {
    pub fn parse(input: &str) -> Result<Self, TextError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(TextError::Empty);
        }
        if s.chars().count() > MAX {
            return Err(TextError::TooLong(MAX));
        }
        let allowed = |c: char| MULTILINE && matches!(c, '\n' | '\r' | '\t');
        if s.chars().any(|c| c.is_control() && !allowed(c)) {
            return Err(TextError::Control);
        }
        Ok(Text(s.to_string()))
    }

    /// Cuts `input` down to a valid value instead of refusing it: for text the daemon
    /// derives itself (a summary from a message's first line).
    pub fn truncate_from(input: &str) -> Option<Self> {
        let cleaned: String = input
            .chars()
            .map(|c| {
                if c.is_control() && !(MULTILINE && c == '\n') {
                    ' '
                } else {
                    c
                }
            })
            .collect();
        let cut: String = cleaned.trim().chars().take(MAX).collect();
        Self::parse(&cut).ok()
    }

    /// An identifier as given if it is a valid value, else `prefix` and its SHA-256:
    /// for keys from outside (a SIP dialog, a staff system's id) that must stay unique
    /// whatever their length.
    pub fn key(prefix: &str, id: &str) -> Self {
        Self::parse(&format!("{prefix}{id}")).unwrap_or_else(|_| {
            use sha2::Digest;
            let digest = hex::encode(sha2::Sha256::digest(id.as_bytes()));
            Text(format!("{prefix}sha256:{digest}"))
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn from_stored(s: String) -> Self {
        Text(s)
    }
}

impl<const MAX: usize, const MULTILINE: bool> fmt::Display for Text<MAX, MULTILINE> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<const MAX: usize, const MULTILINE: bool> serde::Serialize for Text<MAX, MULTILINE> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de, const MAX: usize, const MULTILINE: bool> serde::Deserialize<'de>
    for Text<MAX, MULTILINE>
{
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl<const MAX: usize, const MULTILINE: bool> utoipa::PartialSchema for Text<MAX, MULTILINE> {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX))
            .into()
    }
}

impl<const MAX: usize, const MULTILINE: bool> utoipa::ToSchema for Text<MAX, MULTILINE> {
    fn name() -> std::borrow::Cow<'static, str> {
        if MULTILINE {
            "LongText".into()
        } else {
            "ShortText".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert_eq!(ShortText::parse("  Jo ").unwrap().as_str(), "Jo");
        assert_eq!(ShortText::parse("   "), Err(TextError::Empty));
        assert_eq!(
            ShortText::parse(&"x".repeat(201)),
            Err(TextError::TooLong(200))
        );
        assert_eq!(ShortText::parse("a\nb"), Err(TextError::Control));
        assert!(LongText::parse("a\nb").is_ok());
        assert_eq!(
            ShortText::truncate_from(&"y".repeat(500))
                .unwrap()
                .as_str()
                .len(),
            200
        );
    }
}
