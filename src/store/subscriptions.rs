//! Subscriptions a resident renews, and the reminders (outbox messages) of each
//! expiry.

use serde::Serialize;
use sqlx::{AnyConnection, Row};
use utoipa::ToSchema;

use super::{StoreError, StoreResult, new_id};
use crate::domain::Timestamp;
use crate::domain::message::status;

/// A subscription as staff see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Subscription {
    pub id: String,
    pub customer_id: String,
    /// A kind configured under `[renewals.kinds]` (e.g. `garden_waste`).
    pub kind: String,
    pub description: Option<String>,
    pub expires_at: Timestamp,
    /// `active` or `cancelled`.
    pub status: String,
    pub created_by: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

pub const ACTIVE: &str = "active";
pub const CANCELLED: &str = "cancelled";

const COLUMNS: &str =
    "id, customer_id, kind, description, expires_at, status, created_by, created_at, updated_at";

pub(crate) async fn insert(
    conn: &mut AnyConnection,
    customer_id: &str,
    kind: &str,
    description: Option<&str>,
    expires_at: Timestamp,
    by: &str,
) -> StoreResult<Subscription> {
    let id = new_id();
    sqlx::query(
        "INSERT INTO subscriptions (id, customer_id, kind, description, expires_at, status, created_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
    )
    .bind(&id)
    .bind(customer_id)
    .bind(kind)
    .bind(description)
    .bind(expires_at.millis())
    .bind(ACTIVE)
    .bind(by)
    .bind(Timestamp::now().millis())
    .execute(&mut *conn)
    .await?;
    read(conn, &id).await
}

/// A new expiry (renewed); `Conflict` if the subscription was cancelled.
pub(crate) async fn renew(
    conn: &mut AnyConnection,
    id: &str,
    expires_at: Timestamp,
) -> StoreResult<Subscription> {
    let done = sqlx::query(
        "UPDATE subscriptions SET expires_at = $1, updated_at = $2 WHERE id = $3 AND status = $4",
    )
    .bind(expires_at.millis())
    .bind(Timestamp::now().millis())
    .bind(id)
    .bind(ACTIVE)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        read(conn, id).await?;
        return Err(StoreError::Conflict(
            "the subscription was cancelled".into(),
        ));
    }
    read(conn, id).await
}

/// Cancels a subscription; `Conflict` if it already was.
pub(crate) async fn cancel(conn: &mut AnyConnection, id: &str) -> StoreResult<Subscription> {
    let done = sqlx::query(
        "UPDATE subscriptions SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4",
    )
    .bind(CANCELLED)
    .bind(Timestamp::now().millis())
    .bind(id)
    .bind(ACTIVE)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        read(conn, id).await?;
        return Err(StoreError::Conflict(
            "the subscription was already cancelled".into(),
        ));
    }
    read(conn, id).await
}

/// Locks an active subscription for the rest of the transaction (a renewal run on
/// another instance waits here, then finds the reminder already queued); false if
/// it is no longer active.
pub(crate) async fn lock_active(conn: &mut AnyConnection, id: &str) -> StoreResult<bool> {
    let done =
        sqlx::query("UPDATE subscriptions SET status = status WHERE id = $1 AND status = $2")
            .bind(id)
            .bind(ACTIVE)
            .execute(&mut *conn)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Reminders of `subscription` not yet sent are cancelled: their ids.
pub(crate) async fn cancel_reminders(
    conn: &mut AnyConnection,
    subscription: &str,
) -> StoreResult<Vec<String>> {
    let rows = sqlx::query(
        "UPDATE messages SET status = $1, status_rank = $2, updated_at = $3 \
         WHERE subscription_id = $4 AND status = $5 RETURNING id",
    )
    .bind(status::CANCELLED)
    .bind(status::FINAL_RANK)
    .bind(Timestamp::now().millis())
    .bind(subscription)
    .bind(status::PENDING)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok(r.try_get("id")?))
        .collect::<StoreResult<_>>()
}

/// Whether a message with this schedule key exists (the occurrence was queued).
pub(crate) async fn reminder_queued(conn: &mut AnyConnection, key: &str) -> StoreResult<bool> {
    Ok(
        sqlx::query("SELECT 1 AS one FROM messages WHERE schedule_key = $1")
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?
            .is_some(),
    )
}

/// Active subscriptions expiring after `after` and up to `until`, oldest expiry
/// first, at most `limit` after the id `from` (a run pages through them).
pub(crate) async fn expiring(
    conn: &mut AnyConnection,
    after: Timestamp,
    until: Timestamp,
    from: &str,
    limit: i64,
) -> StoreResult<Vec<Subscription>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM subscriptions \
         WHERE status = $1 AND expires_at > $2 AND expires_at <= $3 AND id > $4 \
         ORDER BY id LIMIT $5"
    )))
    .bind(ACTIVE)
    .bind(after.millis())
    .bind(until.millis())
    .bind(from)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(from_row).collect()
}

pub(crate) async fn read(conn: &mut AnyConnection, id: &str) -> StoreResult<Subscription> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM subscriptions WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    from_row(&row)
}

pub(crate) async fn of_customer(
    conn: &mut AnyConnection,
    customer_id: &str,
) -> StoreResult<Vec<Subscription>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM subscriptions WHERE customer_id = $1 ORDER BY expires_at, id"
    )))
    .bind(customer_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(from_row).collect()
}

fn from_row(r: &sqlx::any::AnyRow) -> StoreResult<Subscription> {
    Ok(Subscription {
        id: r.try_get("id")?,
        customer_id: r.try_get("customer_id")?,
        kind: r.try_get("kind")?,
        description: r.try_get("description")?,
        expires_at: Timestamp::from_millis(r.try_get("expires_at")?),
        status: r.try_get("status")?,
        created_by: r.try_get("created_by")?,
        created_at: Timestamp::from_millis(r.try_get("created_at")?),
        updated_at: Timestamp::from_millis(r.try_get("updated_at")?),
    })
}
