//! Bearer-token authentication and the one table of what each role may do.

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
}

/// Who may do what. Quality staff review calls, so they read requests but do not
/// edit residents' records; merging records is a supervisor's decision; only admins
/// read the audit log.
pub fn allows(role: Role, p: Permission) -> bool {
    use Permission::*;
    use Role::*;
    match p {
        ReadCustomer | WriteCustomer | WriteRequest | RecordContact => {
            matches!(role, Admin | Agent | Supervisor)
        }
        MergeCustomers => matches!(role, Admin | Supervisor),
        ReadRequest | ReadCatalogue => true,
        ReadAudit => role == Admin,
    }
}

/// Special category (health) data: supervisors and admins only.
pub fn special_category_access(role: Role) -> SpecialCategoryAccess {
    match role {
        Role::Admin | Role::Supervisor => SpecialCategoryAccess::Allowed,
        Role::Agent | Role::Quality => SpecialCategoryAccess::Denied,
    }
}

/// An authenticated staff member. Handlers turn it into an [`Actor`] by naming the
/// permission they need, so no route can forget to check one.
pub struct Staff {
    identity: StaffIdentity,
    source: String,
}

impl Staff {
    pub fn require(self, p: Permission) -> Result<Actor, ApiError> {
        if !allows(self.identity.role, p) {
            return Err(ApiError::forbidden(format!(
                "the {} role may not do this",
                self.identity.role
            )));
        }
        Ok(Actor::Staff {
            staff: self.identity,
            source: self.source,
        })
    }

    pub fn role(&self) -> Role {
        self.identity.role
    }
}

impl FromRequestParts<AppState> for Staff {
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
        let identity = state
            .store
            .authenticate(token)
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        let source = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string())
            .unwrap_or_else(|| "unknown".to_string());
        Ok(Staff { identity, source })
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
