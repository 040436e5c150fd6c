//! The outbox's due times as the scheduler sees them: claims with a lease and a
//! fencing token on pending messages (the embedded scheduler, when no Redis is
//! configured), and the pending messages Redis is rebuilt from.

use sqlx::Row;

use super::{Store, StoreResult};
use crate::domain::Timestamp;
use crate::domain::message::status;

/// A pending message as the scheduler holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueEntry {
    pub id: String,
    pub due: Timestamp,
    /// The newest fence that has claimed it; a rebuilt scheduler must start above it.
    pub fence: i64,
}

impl Store {
    /// Claims up to `max` pending messages due by `now` and not claimed by anyone
    /// whose lease still runs: each gets a new fence and a lease to `until`.
    pub async fn claim_due(
        &self,
        now: Timestamp,
        until: Timestamp,
        max: usize,
    ) -> StoreResult<Vec<(String, i64)>> {
        let mut tx = self.begin().await?;
        let candidates = sqlx::query(
            "SELECT id FROM messages WHERE status = $1 AND next_attempt_at <= $2 \
             AND (claimed_until IS NULL OR claimed_until < $2) ORDER BY next_attempt_at, id LIMIT $3",
        )
        .bind(status::PENDING)
        .bind(now.millis())
        .bind(max as i64)
        .fetch_all(&mut *tx)
        .await?;
        let mut claimed = Vec::with_capacity(candidates.len());
        for row in candidates {
            let id: String = row.try_get("id")?;
            // Another instance may have claimed it since the SELECT: the WHERE
            // guards the claim (PostgreSQL re-checks it on the locked row).
            let fence = sqlx::query(
                "UPDATE messages SET claim_fence = claim_fence + 1, claimed_until = $1 \
                 WHERE id = $2 AND status = $3 AND (claimed_until IS NULL OR claimed_until < $4) \
                 RETURNING claim_fence",
            )
            .bind(until.millis())
            .bind(&id)
            .bind(status::PENDING)
            .bind(now.millis())
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = fence {
                claimed.push((id, row.try_get("claim_fence")?));
            }
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Extends a claim held with `fence` whose lease still runs; false if it ran
    /// out or a newer claim exists.
    pub async fn renew_claim(
        &self,
        id: &str,
        fence: i64,
        now: Timestamp,
        until: Timestamp,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE messages SET claimed_until = $1 WHERE id = $2 AND claim_fence = $3 \
             AND status = $4 AND claimed_until >= $5",
        )
        .bind(until.millis())
        .bind(id)
        .bind(fence)
        .bind(status::PENDING)
        .bind(now.millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Lets go of a claim held with `fence` (and, if still pending, makes it due at
    /// `again`); false if the fence is not the current one.
    pub async fn release_claim(
        &self,
        id: &str,
        fence: i64,
        again: Option<Timestamp>,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE messages SET claimed_until = NULL, \
             next_attempt_at = CASE WHEN status = $1 THEN COALESCE($2, next_attempt_at) ELSE next_attempt_at END \
             WHERE id = $3 AND claim_fence = $4",
        )
        .bind(status::PENDING)
        .bind(again.map(Timestamp::millis))
        .bind(id)
        .bind(fence)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Claims whose lease ran out before their send began: free to claim again.
    pub async fn reap_claims(&self, now: Timestamp) -> StoreResult<u64> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE messages SET claimed_until = NULL WHERE status = $1 AND claimed_until < $2",
        )
        .bind(status::PENDING)
        .bind(now.millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// Makes a pending message due at `due` (a reminder moved).
    pub async fn reschedule(&self, id: &str, due: Timestamp) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE messages SET next_attempt_at = $1 WHERE id = $2 AND status = $3")
            .bind(due.millis())
            .bind(id)
            .bind(status::PENDING)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// When the next unclaimed pending message falls due.
    pub async fn next_unclaimed_due(&self) -> StoreResult<Option<Timestamp>> {
        let row = sqlx::query(
            "SELECT CAST(MIN(next_attempt_at) AS BIGINT) AS due FROM messages \
             WHERE status = $1 AND claimed_until IS NULL",
        )
        .bind(status::PENDING)
        .fetch_one(self.pool())
        .await?;
        Ok(row
            .try_get::<Option<i64>, _>("due")?
            .map(Timestamp::from_millis))
    }

    /// Pending messages due by `by` (every one, with `None`): what a scheduler that
    /// lost its state is rebuilt from.
    pub async fn pending_due(&self, by: Option<Timestamp>) -> StoreResult<Vec<DueEntry>> {
        let rows = sqlx::query(
            "SELECT id, next_attempt_at, claim_fence FROM messages WHERE status = $1 \
             AND next_attempt_at IS NOT NULL AND next_attempt_at <= $2 ORDER BY next_attempt_at",
        )
        .bind(status::PENDING)
        .bind(by.map_or(i64::MAX, Timestamp::millis))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DueEntry {
                    id: r.try_get("id")?,
                    due: Timestamp::from_millis(r.try_get("next_attempt_at")?),
                    fence: r.try_get("claim_fence")?,
                })
            })
            .collect()
    }
}
