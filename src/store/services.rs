//! The service catalogue. Configuration is the source; start-up writes it to the
//! database so that requests can reference services by key.

use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;

use super::{Store, StoreResult, flag, parsed};
use crate::configuration::{ServiceCode, ServiceDefinition};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Service {
    pub code: ServiceCode,
    pub name: String,
    pub retention_days: i64,
    pub special_category: bool,
    /// Services removed from configuration stay for their old requests, inactive.
    pub active: bool,
}

/// Retention in days for a period in years, counting leap days generously so a
/// request is never deleted a day early.
pub fn retention_days(years: u32) -> i64 {
    i64::from(years) * 366
}

impl Store {
    pub async fn sync_services(&self, definitions: &[ServiceDefinition]) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE services SET active = 0")
            .execute(&mut *tx)
            .await?;
        for d in definitions {
            sqlx::query(
                "INSERT INTO services (code, name, retention_days, special_category, active) \
                 VALUES ($1, $2, $3, $4, 1) \
                 ON CONFLICT (code) DO UPDATE SET name = $2, retention_days = $3, \
                 special_category = $4, active = 1",
            )
            .bind(d.code.as_str())
            .bind(&d.name)
            .bind(retention_days(d.retention_years))
            .bind(i64::from(d.special_category))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn services(&self) -> StoreResult<Vec<Service>> {
        let rows = sqlx::query(
            "SELECT code, name, retention_days, special_category, active FROM services ORDER BY code",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }
}

pub(crate) async fn active_service(
    conn: &mut sqlx::AnyConnection,
    code: &ServiceCode,
) -> StoreResult<Option<Service>> {
    let row = sqlx::query(
        "SELECT code, name, retention_days, special_category, active FROM services \
         WHERE code = $1 AND active = 1",
    )
    .bind(code.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

fn from_row(r: &sqlx::any::AnyRow) -> StoreResult<Service> {
    Ok(Service {
        code: parsed(r, "code", ServiceCode::parse)?,
        name: r.try_get("name")?,
        retention_days: r.try_get("retention_days")?,
        special_category: flag(r, "special_category")?,
        active: flag(r, "active")?,
    })
}
