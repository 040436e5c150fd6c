//! The legs of calls with advisors, as the call record keeps them: a row when an
//! advisor's phone starts ringing, updated when they answer and when the leg ends
//! (and how). They are read with the call's recording, as its metadata.

use std::collections::HashMap;

use sqlx::Row;

use super::{Store, StoreResult, new_id, parsed, timestamp_opt};
use crate::domain::Timestamp;
use crate::domain::recording::{CallLeg, LegOutcome};

impl Store {
    /// `advisor_id`'s phone is ringing with the call `contact_id`, placed by the
    /// daemon `daemon`; the leg's id.
    pub async fn leg_offered(
        &self,
        contact_id: &str,
        advisor_id: &str,
        daemon: &str,
        at: Timestamp,
    ) -> StoreResult<String> {
        let id = new_id();
        sqlx::query(
            "INSERT INTO call_legs (id, contact_id, advisor_id, offered_at, outcome, daemon) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(contact_id)
        .bind(advisor_id)
        .bind(at.millis())
        .bind(LegOutcome::Ringing.as_str())
        .bind(daemon)
        .execute(self.pool())
        .await?;
        Ok(id)
    }

    pub async fn leg_answered(&self, leg_id: &str, at: Timestamp) -> StoreResult<()> {
        sqlx::query("UPDATE call_legs SET answered_at = $1, outcome = $2 WHERE id = $3")
            .bind(at.millis())
            .bind(LegOutcome::OnCall.as_str())
            .bind(leg_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Ends, as interrupted at `at`, every leg `daemon` left ringing or up (it was
    /// killed: none of its dialogs outlived it); how many.
    pub async fn interrupt_open_legs(&self, daemon: &str, at: Timestamp) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE call_legs SET ended_at = $1, outcome = $2 \
             WHERE daemon = $3 AND ended_at IS NULL",
        )
        .bind(at.millis())
        .bind(LegOutcome::Interrupted.as_str())
        .bind(daemon)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// The leg is over: how, and for a transfer, where to.
    pub async fn leg_ended(
        &self,
        leg_id: &str,
        at: Timestamp,
        outcome: LegOutcome,
        transferred_to: Option<&str>,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE call_legs SET ended_at = $1, outcome = $2, transferred_to = $3 WHERE id = $4",
        )
        .bind(at.millis())
        .bind(outcome.as_str())
        .bind(transferred_to)
        .bind(leg_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

impl Store {
    /// One call's legs, in the order offered: what its recording's metadata says
    /// (a system read, made as the recording is finished).
    pub async fn legs_of_call(&self, contact_id: &str) -> StoreResult<Vec<CallLeg>> {
        let mut conn = self.pool().acquire().await?;
        let mut legs = legs_of(&mut conn, &[contact_id]).await?;
        Ok(legs.remove(contact_id).unwrap_or_default())
    }
}

/// The legs of these calls (by contact id), each call's in the order offered.
pub(crate) async fn legs_of(
    conn: &mut sqlx::AnyConnection,
    contact_ids: &[&str],
) -> StoreResult<HashMap<String, Vec<CallLeg>>> {
    let mut legs: HashMap<String, Vec<CallLeg>> = HashMap::new();
    for contact_id in contact_ids {
        let rows = sqlx::query(
            "SELECT advisor_id, offered_at, answered_at, ended_at, outcome, transferred_to \
             FROM call_legs WHERE contact_id = $1 ORDER BY offered_at, id",
        )
        .bind(*contact_id)
        .fetch_all(&mut *conn)
        .await?;
        for r in &rows {
            legs.entry(contact_id.to_string())
                .or_default()
                .push(CallLeg {
                    advisor_id: r.try_get("advisor_id")?,
                    offered_at: Timestamp::from_millis(r.try_get("offered_at")?),
                    answered_at: timestamp_opt(r, "answered_at")?,
                    ended_at: timestamp_opt(r, "ended_at")?,
                    outcome: parsed(r, "outcome", str::parse)?,
                    transferred_to: r.try_get("transferred_to")?,
                });
        }
    }
    Ok(legs)
}
