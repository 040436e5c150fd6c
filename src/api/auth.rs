//! Bearer-token authentication and the one table of what each role may do.

use std::marker::PhantomData;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use super::AppState;
use super::error::ApiError;
use crate::domain::{Actor, Role, StaffIdentity};
use crate::store::requests::SpecialCategoryAccess;

/// Something a route does that not every role may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    ReadCustomer,
    WriteCustomer,
    MergeCustomers,
    ReadRequest,
    WriteRequest,
    RecordContact,
    ReadCatalogue,
    ReadAudit,
    ListenToRecordings,
    HoldRecordings,
    /// See the outbox's dead letters and sends that need checking.
    WatchOutbox,
    /// Add advisors, see their phones, rotate their phones' credentials.
    ManageAdvisors,
    /// Follow the feed of calls offered to and taken by advisors.
    WatchCalls,
}

/// Who may do what. Special category (health) data is further limited to supervisors
/// and admins (`Authorized::special_category`). Recordings are listened to by quality
/// staff and supervisors only (every listen audited). Quality staff review calls, so they read requests but do not
/// edit residents' records; merging records is a supervisor's decision; only admins
/// read the audit log.
pub fn allows(role: Role, p: Permission) -> bool {
    use Permission::*;
    use Role::*;
    match p {
        ReadCustomer | WriteCustomer | WriteRequest | RecordContact | WatchCalls => {
            matches!(role, Admin | Agent | Supervisor)
        }
        MergeCustomers => matches!(role, Admin | Supervisor),
        ReadRequest | ReadCatalogue => true,
        ReadAudit => role == Admin,
        ListenToRecordings => matches!(role, Quality | Supervisor),
        HoldRecordings | WatchOutbox | ManageAdvisors => matches!(role, Supervisor | Admin),
    }
}

/// A staff member whose token is valid and whose role holds permission `N`. As a
/// request-parts extractor it runs before any body is read, so an unauthorised caller
/// learns nothing about what a valid body would be, and no route can forget a check.
pub struct Authorized<N> {
    pub actor: Actor,
    need: PhantomData<N>,
}

/// A permission named as a type, for [`Authorized`].
pub trait Needs {
    const PERMISSION: Permission;
}

/// The permission markers: `Authorized<can::WriteCustomer>`.
pub mod can {
    use super::{Needs, Permission};

    macro_rules! markers {
        ($($name:ident),+) => {
            $(
                pub struct $name;
                impl Needs for $name {
                    const PERMISSION: Permission = Permission::$name;
                }
            )+
        };
    }
    markers!(
        ReadCustomer,
        WriteCustomer,
        MergeCustomers,
        ReadRequest,
        WriteRequest,
        RecordContact,
        ReadCatalogue,
        ReadAudit,
        ListenToRecordings,
        HoldRecordings,
        WatchOutbox,
        ManageAdvisors,
        WatchCalls
    );
}

impl<N> Authorized<N> {
    /// What this actor may see of special category data.
    pub fn special_category(&self) -> SpecialCategoryAccess {
        match self.actor.role() {
            Some(Role::Admin | Role::Supervisor) => SpecialCategoryAccess::Allowed,
            _ => SpecialCategoryAccess::Denied,
        }
    }
}

impl<N: Needs + Send + Sync> FromRequestParts<AppState> for Authorized<N> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(ApiError::unauthorized)?;
        let identity: StaffIdentity = state
            .store
            .authenticate(token)
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        if !allows(identity.role, N::PERMISSION) {
            return Err(ApiError::forbidden(format!(
                "the {} role may not do this",
                identity.role
            )));
        }
        let source = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string())
            .unwrap_or_else(|| "unknown".to_string());
        Ok(Authorized {
            actor: Actor::Staff {
                staff: identity,
                source,
            },
            need: PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_admins_read_the_audit_log() {
        for role in Role::ALL {
            assert_eq!(allows(*role, Permission::ReadAudit), *role == Role::Admin);
        }
    }

    #[test]
    fn quality_staff_do_not_edit_records() {
        assert!(!allows(Role::Quality, Permission::WriteCustomer));
        assert!(allows(Role::Quality, Permission::ReadRequest));
    }
}
