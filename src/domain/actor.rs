//! Who is acting: recorded on every history row and audit entry.

use super::{Channel, Role};

/// A staff member, as established by their bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffIdentity {
    pub user_id: String,
    pub name: String,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Staff {
        staff: StaffIdentity,
        /// The client address the request came from.
        source: String,
    },
    /// A channel adapter delivering a resident's contact.
    Channel(Channel),
    /// The daemon itself (sweeps, start-up seeding) or an operator at the command line.
    System,
}

impl Actor {
    /// The stable label written to history and audit rows, e.g. `staff:alice`.
    pub fn label(&self) -> String {
        match self {
            Actor::Staff { staff, .. } => format!("staff:{}", staff.name),
            Actor::Channel(c) => format!("channel:{c}"),
            Actor::System => "system".to_string(),
        }
    }

    pub fn role(&self) -> Option<Role> {
        match self {
            Actor::Staff { staff, .. } => Some(staff.role),
            _ => None,
        }
    }

    pub fn source(&self) -> Option<&str> {
        match self {
            Actor::Staff { source, .. } => Some(source),
            _ => None,
        }
    }
}
