//! Domain types. Everything from outside is parsed into one of these at the boundary
//! (API, channel adapter, configuration), so the inside never re-validates.
//!
//! - [`reference`]: resident-facing request references with a check digit
//! - [`phone`], [`email`], [`postcode`]: normalised contact details
//! - [`time`]: UTC timestamps (epoch milliseconds in the store) and calendar dates
//! - [`customer`]: the central customer record, consents, representatives, history
//! - [`request`]: service requests, contacts and timelines
//! - [`message`]: text messages sent, and their purposes
//! - [`recording`]: call recordings' metadata
//! - [`text`]: bounded free text
//! - [`actor`]: who is doing something (a staff user, a channel, the daemon itself)
//! - the small closed vocabularies below: channels, roles, statuses, consent purposes

pub mod actor;
pub mod customer;
pub mod email;
pub mod message;
pub mod phone;
pub mod postcode;
pub mod recording;
pub mod reference;
pub mod request;
pub mod text;
pub mod thread;
pub mod time;

pub use actor::{Actor, StaffIdentity};
pub use email::EmailAddress;
pub use phone::PhoneNumber;
pub use postcode::Postcode;
pub use reference::Reference;
pub use text::{LongText, ShortText};
pub use time::{CalendarDate, OpeningHours, QuietHours, Timestamp};

/// A value outside one of the closed vocabularies below.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value {0:?}")]
pub struct UnknownValue(pub String);

/// Serde, `FromStr`/`Display` and an OpenAPI string schema for a newtype whose
/// `parse` is the only way in.
macro_rules! string_domain_type {
    ($ty:ident, $description:literal, $example:literal) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                $ty::parse(&s).map_err(serde::de::Error::custom)
            }
        }
        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description(Some($description))
                    .examples([$example])
                    .into()
            }
        }
        impl utoipa::ToSchema for $ty {}
    };
}
pub(crate) use string_domain_type;

/// A closed vocabulary stored and sent as snake_case text.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }
        impl std::str::FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownValue(s.to_string())),
                }
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(crate) use text_enum;

text_enum! {
    /// How a contact reached the council, or how a resident prefers to be reached.
    Channel {
        Phone = "phone",
        Email = "email",
        Sms = "sms",
        Web = "web",
        FaceToFace = "face_to_face",
        Letter = "letter",
    }
}

text_enum! {
    /// A staff role. What each may do is decided in one table, `api::auth`.
    Role {
        Admin = "admin",
        Agent = "agent",
        Quality = "quality",
        Supervisor = "supervisor",
    }
}

text_enum! {
    /// The life-cycle of a service request.
    RequestStatus {
        Open = "open",
        InProgress = "in_progress",
        AwaitingCustomer = "awaiting_customer",
        Resolved = "resolved",
        Cancelled = "cancelled",
    }
}

impl RequestStatus {
    pub fn is_closed(self) -> bool {
        matches!(self, RequestStatus::Resolved | RequestStatus::Cancelled)
    }

    /// Whether staff may move a request from `self` to `to`. Closed requests only
    /// move by being reopened; reopening is only from a closed state.
    pub fn may_become(self, to: RequestStatus) -> bool {
        if self == to {
            return false;
        }
        if self.is_closed() {
            return to == RequestStatus::Open;
        }
        true
    }
}

text_enum! {
    /// What a resident's consent is for. Service updates, satisfaction surveys and
    /// marketing are separate promises in the privacy notice, so they are kept apart.
    ConsentPurpose {
        ServiceUpdates = "service_updates",
        SatisfactionSurveys = "satisfaction_surveys",
        Marketing = "marketing",
    }
}

text_enum! {
    /// Who a representative is to the resident they act for.
    RepresentativeKind {
        Councillor = "councillor",
        Mp = "mp",
        FamilyMember = "family_member",
        Friend = "friend",
        Advocate = "advocate",
        Other = "other",
    }
}

text_enum! {
    /// How intake matched a contact's sender to the central record.
    IdentityMatch {
        /// Exactly one record holds the sender's phone number or email address.
        Matched = "matched",
        /// No record held it; a new one was created.
        Created = "created",
        /// More than one record holds it: flagged for staff, never merged by guess.
        Ambiguous = "ambiguous",
        /// The sender's address was withheld or unusable: flagged for staff.
        Unidentified = "unidentified",
    }
}
