//! Secrets the daemon makes for itself, shared by every instance on one database
//! (the key that signs reply tokens): made on first use, never shown.

use sqlx::Row;

use super::{Store, StoreResult};
use crate::domain::Timestamp;

impl Store {
    /// The secret called `name`, made (32 random bytes) if there is none yet. Two
    /// instances starting at once agree: the first insert wins, both read it back.
    pub async fn hub_secret(&self, name: &str) -> StoreResult<Vec<u8>> {
        let mut tx = self.begin().await?;
        let fresh: [u8; 32] = rand::random();
        sqlx::query(
            "INSERT INTO hub_secrets (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(hex::encode(fresh))
        .bind(Timestamp::now().millis())
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query("SELECT value FROM hub_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        let value: String = row.try_get("value")?;
        hex::decode(&value)
            .map_err(|e| super::StoreError::Corrupt(format!("hub secret {name}: {e}")))
    }
}
