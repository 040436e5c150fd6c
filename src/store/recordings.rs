//! Recordings' metadata: registered when a call is answered, completed at hangup (or
//! by repair after a crash), linked to the call's contact, purged at expiry.

use sqlx::{AnyConnection, Row};

use super::audit::{self, Action, Entity};
use super::requests::{self, Event, SpecialCategoryAccess};
use super::{Store, StoreError, StoreResult, flag, new_id, parsed, timestamp_opt};
use crate::domain::recording::{Recording, RecordingStatus};
use crate::domain::request::TimelineKind;
use crate::domain::{Actor, Channel, Reference, Timestamp};

const COLUMNS: &str = "id, call_id, contact_id, request_id, path, status, started_at, ended_at, duration_ms, \
     size_bytes, sha256, expires_at, legal_hold, legal_hold_reason, repaired, purged_at, failure";

/// What a finished file tells the store.
pub struct Completion<'a> {
    pub ended_at: Timestamp,
    pub duration_ms: i64,
    pub size_bytes: i64,
    pub sha256: &'a str,
    pub repaired: bool,
    /// Set when the recording stopped early (a write failed mid-call).
    pub failure: Option<&'a str>,
}

impl Store {
    /// Registers a recording as the call is answered, before any audio is written, so
    /// that a crash always leaves a row for repair to find.
    pub async fn register_recording(
        &self,
        id: &str,
        call_id: &str,
        path: &str,
        started_at: Timestamp,
        expires_at: Timestamp,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO recordings (id, call_id, path, status, started_at, expires_at, legal_hold, repaired) \
             VALUES ($1, $2, $3, $4, $5, $6, 0, 0)",
        )
        .bind(id)
        .bind(call_id)
        .bind(path)
        .bind(RecordingStatus::Recording.as_str())
        .bind(started_at.millis())
        .bind(expires_at.millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// Marks a recording complete and, if its call became a contact on a request,
    /// puts it on that contact and the request's timeline: in one transaction, so a
    /// complete recording is never seen without the request it belongs to.
    pub async fn complete_recording(
        &self,
        id: &str,
        call_id: &str,
        c: &Completion<'_>,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE recordings SET status = $1, ended_at = $2, duration_ms = $3, size_bytes = $4, sha256 = $5, \
             repaired = $6, failure = $7 WHERE id = $8 AND status = $9",
        )
        .bind(RecordingStatus::Complete.as_str())
        .bind(c.ended_at.millis())
        .bind(c.duration_ms)
        .bind(c.size_bytes)
        .bind(c.sha256)
        .bind(i64::from(c.repaired))
        .bind(c.failure)
        .bind(id)
        .bind(RecordingStatus::Recording.as_str())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        // The contact and request the call became, if intake got that far.
        let call = sqlx::query(
            "SELECT id, request_id FROM contacts WHERE channel = $1 AND external_id = $2 AND request_id IS NOT NULL",
        )
        .bind(Channel::Phone.as_str())
        .bind(call_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(r) = call {
            let contact_id: String = r.try_get("id")?;
            let request_id: String = r.try_get("request_id")?;
            sqlx::query("UPDATE recordings SET contact_id = $1, request_id = $2 WHERE id = $3")
                .bind(&contact_id)
                .bind(&request_id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let actor = Actor::Channel(Channel::Phone);
            requests::append(
                &mut tx,
                &request_id,
                &Event {
                    kind: TimelineKind::Recording,
                    actor: &actor,
                    contact_id: Some(&contact_id),
                    body: Some(id),
                    from: None,
                    to: None,
                    message_id: None,
                },
            )
            .await?;
        }
        tx.commit().await
    }

    /// Recordings a crash left unfinished: (id, call id, path).
    pub async fn unfinished_recordings(&self) -> StoreResult<Vec<(String, String, String)>> {
        let rows = sqlx::query("SELECT id, call_id, path FROM recordings WHERE status = $1")
            .bind(RecordingStatus::Recording.as_str())
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("call_id")?, r.try_get("path")?)))
            .collect()
    }

    /// Complete recordings past expiry and not on legal hold; and how many expired
    /// ones are being kept for a hold.
    pub async fn expired_recordings(&self, now: Timestamp) -> StoreResult<(Vec<Recording>, i64)> {
        let sql = format!(
            "SELECT {COLUMNS} FROM recordings WHERE status = $1 AND expires_at <= $2 AND legal_hold = 0 ORDER BY expires_at"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(RecordingStatus::Complete.as_str())
            .bind(now.millis())
            .fetch_all(self.pool())
            .await?;
        let held: i64 = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM recordings WHERE status = $1 AND expires_at <= $2 AND legal_hold = 1",
        )
        .bind(RecordingStatus::Complete.as_str())
        .bind(now.millis())
        .fetch_one(self.pool())
        .await?
        .try_get("n")?;
        Ok((rows.iter().map(from_row).collect::<StoreResult<_>>()?, held))
    }

    /// Records that a recording being written could not be recovered, and why.
    pub async fn mark_recording_lost(&self, id: &str, why: &str) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE recordings SET status = $1, ended_at = $2, failure = $3 WHERE id = $4 AND status = $5",
        )
        .bind(RecordingStatus::Lost.as_str())
        .bind(Timestamp::now().millis())
        .bind(why)
        .bind(id)
        .bind(RecordingStatus::Recording.as_str())
        .execute(&mut *tx)
        .await?;
        audit::record(
            &mut tx,
            &Actor::System,
            Action::Update,
            Entity::Recording,
            id,
            Some(&format!("lost: {why}")),
        )
        .await?;
        tx.commit().await
    }

    /// Purges an expired recording: the row is marked purged, then `delete` removes
    /// the file, and only if it succeeds is the change committed. A hold placed since
    /// the sweep read the row wins (its row lock waits for us, or we see it): then
    /// nothing is deleted and `Ok(false)` is returned.
    pub async fn purge_recording<E>(
        &self,
        actor: &Actor,
        id: &str,
        delete: impl FnOnce() -> Result<(), E>,
    ) -> StoreResult<Result<bool, E>> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE recordings SET status = $1, purged_at = $2 WHERE id = $3 AND status = $4 AND legal_hold = 0",
        )
        .bind(RecordingStatus::Purged.as_str())
        .bind(Timestamp::now().millis())
        .bind(id)
        .bind(RecordingStatus::Complete.as_str())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(Ok(false));
        }
        if let Err(e) = delete() {
            return Ok(Err(e));
        }
        audit::record(
            &mut tx,
            actor,
            Action::Purge,
            Entity::Recording,
            id,
            Some("retention period over"),
        )
        .await?;
        tx.commit().await?;
        Ok(Ok(true))
    }

    pub async fn recordings_of_request(
        &self,
        actor: &Actor,
        reference: Reference,
        access: SpecialCategoryAccess,
    ) -> StoreResult<Vec<Recording>> {
        let mut conn = self.pool().acquire().await?;
        let request = requests::read_by_reference(&mut conn, reference).await?;
        self.check_access(actor, &request, access).await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM recordings WHERE request_id = $1 ORDER BY started_at, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&request.id)
            .fetch_all(&mut *conn)
            .await?;
        self.audit(
            actor,
            Action::Read,
            Entity::Request,
            &request.id,
            Some("recordings"),
        )
        .await?;
        let mut recordings = rows.iter().map(from_row).collect::<StoreResult<Vec<_>>>()?;
        let calls: Vec<&str> = recordings
            .iter()
            .filter_map(|r| r.contact_id.as_deref())
            .collect();
        let mut legs = super::call_legs::legs_of(&mut conn, &calls).await?;
        for r in &mut recordings {
            if let Some(contact_id) = &r.contact_id {
                r.legs = legs.remove(contact_id).unwrap_or_default();
            }
        }
        Ok(recordings)
    }

    /// A recording for download, with the access audited; refused for special
    /// category requests to those without access.
    pub async fn recording_for_download(
        &self,
        actor: &Actor,
        id: &str,
        access: SpecialCategoryAccess,
    ) -> StoreResult<Recording> {
        let mut conn = self.pool().acquire().await?;
        let recording = read(&mut conn, id).await?;
        if let Some(request_id) = &recording.request_id {
            let request = requests::read(&mut conn, request_id).await?;
            self.check_access(actor, &request, access).await?;
        }
        self.audit(actor, Action::Download, Entity::Recording, id, None)
            .await?;
        Ok(recording)
    }

    pub async fn set_legal_hold(
        &self,
        actor: &Actor,
        id: &str,
        hold: bool,
        reason: Option<&str>,
    ) -> StoreResult<Recording> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE recordings SET legal_hold = $1, legal_hold_reason = $2 WHERE id = $3",
        )
        .bind(i64::from(hold))
        .bind(reason)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        let detail = match (hold, reason) {
            (true, Some(r)) => format!("hold: {r}"),
            (true, None) => "hold".to_string(),
            (false, _) => "released".to_string(),
        };
        audit::record(
            &mut tx,
            actor,
            Action::LegalHold,
            Entity::Recording,
            id,
            Some(&detail),
        )
        .await?;
        let recording = read(&mut tx, id).await?;
        tx.commit().await?;
        Ok(recording)
    }

    /// Registers a recording file found with no row (a crash between creating the file
    /// and registering it).
    pub async fn register_orphan_recording(
        &self,
        path: &str,
        started_at: Timestamp,
        expires_at: Timestamp,
    ) -> StoreResult<String> {
        let id = new_id();
        self.register_recording(&id, &id, path, started_at, expires_at)
            .await?;
        Ok(id)
    }

    pub async fn recording_paths(&self) -> StoreResult<Vec<String>> {
        let rows = sqlx::query("SELECT path FROM recordings")
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(|r| Ok(r.try_get("path")?)).collect()
    }
}

pub(crate) async fn read(conn: &mut AnyConnection, id: &str) -> StoreResult<Recording> {
    let sql = format!("SELECT {COLUMNS} FROM recordings WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
    from_row(&row)
}

fn from_row(r: &sqlx::any::AnyRow) -> StoreResult<Recording> {
    Ok(Recording {
        id: r.try_get("id")?,
        call_id: r.try_get("call_id")?,
        contact_id: r.try_get("contact_id")?,
        request_id: r.try_get("request_id")?,
        status: parsed(r, "status", str::parse)?,
        started_at: Timestamp::from_millis(r.try_get("started_at")?),
        ended_at: timestamp_opt(r, "ended_at")?,
        duration_ms: r.try_get("duration_ms")?,
        size_bytes: r.try_get("size_bytes")?,
        sha256: r.try_get("sha256")?,
        expires_at: Timestamp::from_millis(r.try_get("expires_at")?),
        legal_hold: flag(r, "legal_hold")?,
        legal_hold_reason: r.try_get("legal_hold_reason")?,
        repaired: flag(r, "repaired")?,
        failure: r.try_get("failure")?,
        purged_at: timestamp_opt(r, "purged_at")?,
        // Read with the request's recordings (see recordings_of_request).
        legs: Vec::new(),
        path: r.try_get("path")?,
    })
}
