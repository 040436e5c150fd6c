//! The central customer record ("tell us once"): what one resident has told the council.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::text::{LongText, ShortText};
use super::{
    CalendarDate, Channel, ConsentPurpose, EmailAddress, PhoneNumber, Postcode, RepresentativeKind,
    Timestamp,
};
use crate::configuration::ServiceCode;

/// How many phones, emails, addresses or representatives one record may hold. A
/// bound, so that one request cannot grow a record without limit.
pub const MAX_LIST: usize = 20;

/// Everything about a resident that staff edit. A PATCH overlays some of these keys;
/// history is kept per key.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerDetails {
    #[serde(default)]
    pub title: Option<ShortText>,
    #[serde(default)]
    pub given_name: Option<ShortText>,
    #[serde(default)]
    pub family_name: Option<ShortText>,
    #[serde(default)]
    pub date_of_birth: Option<CalendarDate>,
    #[serde(default)]
    pub addresses: Vec<Address>,
    /// Normalised to E.164 on the way in (`07700 900123` becomes `+447700900123`).
    #[serde(default)]
    pub phones: Vec<PhoneNumber>,
    #[serde(default)]
    pub emails: Vec<EmailAddress>,
    #[serde(default)]
    pub preferred_channel: Option<Channel>,
    #[serde(default)]
    pub language: Option<ShortText>,
    #[serde(default)]
    pub accessibility_needs: Option<LongText>,
    /// People who may act for the resident, and for what.
    #[serde(default)]
    pub representatives: Vec<Representative>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub line1: ShortText,
    #[serde(default)]
    pub line2: Option<ShortText>,
    #[serde(default)]
    pub town: Option<ShortText>,
    pub postcode: Postcode,
    /// The Unique Property Reference Number of the property, when known.
    #[serde(default)]
    pub uprn: Option<Uprn>,
}

/// A Unique Property Reference Number: up to 12 digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Uprn(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a UPRN is 1 to 12 digits")]
pub struct UprnError;

impl Uprn {
    pub fn parse(s: &str) -> Result<Self, UprnError> {
        let s = s.trim();
        if (1..=12).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Uprn(s.to_string()))
        } else {
            Err(UprnError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn from_stored(s: String) -> Self {
        Uprn(s)
    }
}

impl std::fmt::Display for Uprn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

super::string_domain_type!(Uprn, "Unique Property Reference Number", "100012345678");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Representative {
    pub name: ShortText,
    pub kind: RepresentativeKind,
    #[serde(default)]
    pub phone: Option<PhoneNumber>,
    #[serde(default)]
    pub email: Option<EmailAddress>,
    /// The services they may act on; empty means all of the resident's business.
    #[serde(default)]
    pub services: Vec<ServiceCode>,
    /// The authority lapses after this day, when given.
    #[serde(default)]
    pub valid_until: Option<CalendarDate>,
}

/// A list field that holds more than [`MAX_LIST`] entries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: at most {MAX_LIST} entries")]
pub struct TooMany {
    pub field: &'static str,
}

impl CustomerDetails {
    /// The checks serde cannot make: list bounds; duplicates are dropped rather than
    /// refused, because "the same number twice" is not a resident's error.
    pub fn normalise(mut self) -> Result<Self, TooMany> {
        fn dedup<T: PartialEq + Clone>(v: &mut Vec<T>) {
            let mut seen: Vec<T> = Vec::with_capacity(v.len());
            v.retain(|x| {
                let new = !seen.contains(x);
                if new {
                    seen.push(x.clone());
                }
                new
            });
        }
        dedup(&mut self.phones);
        dedup(&mut self.emails);
        dedup(&mut self.addresses);
        for (field, len) in [
            ("phones", self.phones.len()),
            ("emails", self.emails.len()),
            ("addresses", self.addresses.len()),
            ("representatives", self.representatives.len()),
        ] {
            if len > MAX_LIST {
                return Err(TooMany { field });
            }
        }
        Ok(self)
    }

    /// The lower-case "given family" key that name search matches against.
    pub fn name_key(&self) -> String {
        let parts = [&self.given_name, &self.family_name];
        parts
            .iter()
            .filter_map(|p| p.as_ref().map(|t| t.as_str().to_lowercase()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A customer record as staff see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Customer {
    pub id: String,
    #[serde(flatten)]
    pub details: CustomerDetails,
    /// The current state of each consent the resident has given or withdrawn.
    pub consents: Vec<Consent>,
    /// The resident's numbers that have opted out of texts (STOP).
    pub sms_opted_out: Vec<PhoneNumber>,
    /// Set when this record was merged into another; the other is the live one.
    pub merged_into: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Consent for one purpose, given or withdrawn, when and how.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Consent {
    pub purpose: ConsentPurpose,
    pub granted: bool,
    /// How the resident told us.
    pub method: Channel,
    pub note: Option<String>,
    pub recorded_by: String,
    pub at: Timestamp,
}

/// A resident giving or withdrawing a consent.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentChange {
    pub purpose: ConsentPurpose,
    pub granted: bool,
    pub method: Channel,
    #[serde(default)]
    pub note: Option<ShortText>,
}

/// One changed field of a customer record: who, when, old and new value.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HistoryEntry {
    pub field: String,
    #[schema(value_type = Object)]
    pub old_value: serde_json::Value,
    #[schema(value_type = Object)]
    pub new_value: serde_json::Value,
    pub changed_by: String,
    pub changed_at: Timestamp,
}
