//! Appointments on a request, and the reminders (outbox messages) that belong to
//! each version of one.

use serde::Serialize;
use sqlx::{AnyConnection, Row};
use utoipa::ToSchema;

use super::{StoreError, StoreResult, new_id};
use crate::domain::Timestamp;
use crate::domain::message::status;

/// An appointment as staff see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Appointment {
    pub id: String,
    pub request_id: String,
    pub starts_at: Timestamp,
    pub place: String,
    pub notes: Option<String>,
    /// `booked` or `cancelled`.
    pub status: String,
    /// Moves so far plus one: reminders belong to one version.
    pub version: i64,
    pub created_by: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

pub const BOOKED: &str = "booked";
pub const CANCELLED: &str = "cancelled";

const COLUMNS: &str =
    "id, request_id, starts_at, place, notes, status, version, created_by, created_at, updated_at";

pub(crate) async fn insert(
    conn: &mut AnyConnection,
    request_id: &str,
    starts_at: Timestamp,
    place: &str,
    notes: Option<&str>,
    by: &str,
) -> StoreResult<Appointment> {
    let id = new_id();
    let now = Timestamp::now().millis();
    sqlx::query(
        "INSERT INTO appointments (id, request_id, starts_at, place, notes, status, version, created_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8, $8)",
    )
    .bind(&id)
    .bind(request_id)
    .bind(starts_at.millis())
    .bind(place)
    .bind(notes)
    .bind(BOOKED)
    .bind(by)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    read(conn, &id).await
}

/// Moves an appointment (a new version); `Conflict` if it was cancelled.
pub(crate) async fn reschedule(
    conn: &mut AnyConnection,
    id: &str,
    starts_at: Timestamp,
    place: &str,
    notes: Option<&str>,
) -> StoreResult<Appointment> {
    let done = sqlx::query(
        "UPDATE appointments SET starts_at = $1, place = $2, notes = $3, version = version + 1, updated_at = $4 \
         WHERE id = $5 AND status = $6",
    )
    .bind(starts_at.millis())
    .bind(place)
    .bind(notes)
    .bind(Timestamp::now().millis())
    .bind(id)
    .bind(BOOKED)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        read(conn, id).await?;
        return Err(StoreError::Conflict("the appointment was cancelled".into()));
    }
    read(conn, id).await
}

/// Cancels an appointment; `Conflict` if it already was.
pub(crate) async fn cancel(conn: &mut AnyConnection, id: &str) -> StoreResult<Appointment> {
    let done = sqlx::query(
        "UPDATE appointments SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4",
    )
    .bind(CANCELLED)
    .bind(Timestamp::now().millis())
    .bind(id)
    .bind(BOOKED)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        read(conn, id).await?;
        return Err(StoreError::Conflict(
            "the appointment was already cancelled".into(),
        ));
    }
    read(conn, id).await
}

/// Reminders of `appointment` not yet sent are cancelled: their ids.
pub(crate) async fn cancel_reminders(
    conn: &mut AnyConnection,
    appointment: &str,
) -> StoreResult<Vec<String>> {
    let rows = sqlx::query(
        "UPDATE messages SET status = $1, status_rank = $2, updated_at = $3 \
         WHERE appointment_id = $4 AND status = $5 RETURNING id",
    )
    .bind(status::CANCELLED)
    .bind(status::FINAL_RANK)
    .bind(Timestamp::now().millis())
    .bind(appointment)
    .bind(status::PENDING)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok(r.try_get("id")?))
        .collect::<StoreResult<_>>()
}

pub(crate) async fn read(conn: &mut AnyConnection, id: &str) -> StoreResult<Appointment> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM appointments WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    from_row(&row)
}

pub(crate) async fn of_request(
    conn: &mut AnyConnection,
    request_id: &str,
) -> StoreResult<Vec<Appointment>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM appointments WHERE request_id = $1 ORDER BY starts_at, id"
    )))
    .bind(request_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(from_row).collect()
}

fn from_row(r: &sqlx::any::AnyRow) -> StoreResult<Appointment> {
    Ok(Appointment {
        id: r.try_get("id")?,
        request_id: r.try_get("request_id")?,
        starts_at: Timestamp::from_millis(r.try_get("starts_at")?),
        place: r.try_get("place")?,
        notes: r.try_get("notes")?,
        status: r.try_get("status")?,
        version: r.try_get("version")?,
        created_by: r.try_get("created_by")?,
        created_at: Timestamp::from_millis(r.try_get("created_at")?),
        updated_at: Timestamp::from_millis(r.try_get("updated_at")?),
    })
}
