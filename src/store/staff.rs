//! Staff users and their bearer tokens. Only a SHA-256 of each token is stored: tokens
//! are 256-bit random values, so a fast hash is enough and a stolen database holds
//! nothing that authenticates.

use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Store, StoreError, StoreResult, new_id, parsed};
use crate::domain::{Role, StaffIdentity, Timestamp};

/// The prefix makes a leaked token recognisable to secret scanners.
const TOKEN_PREFIX: &str = "cd_";

fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Store {
    pub async fn add_staff_user(&self, name: &str, role: Role) -> StoreResult<StaffIdentity> {
        let id = new_id();
        let result = sqlx::query(
            "INSERT INTO staff_users (id, name, role, disabled, created_at) VALUES ($1, $2, $3, 0, $4) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&id)
        .bind(name)
        .bind(role.as_str())
        .bind(Timestamp::now().millis())
        .execute(self.pool())
        .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "a staff user named {name:?} already exists"
            )));
        }
        Ok(StaffIdentity {
            user_id: id,
            name: name.to_string(),
            role,
        })
    }

    /// Creates a token for `user` and returns it; this is the only time it is seen.
    pub async fn create_token(&self, user: &str) -> StoreResult<String> {
        let row = sqlx::query("SELECT id FROM staff_users WHERE name = $1 AND disabled = 0")
            .bind(user)
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound)?;
        let user_id: String = row.try_get("id")?;
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let token = format!("{TOKEN_PREFIX}{}", hex::encode(secret));
        sqlx::query(
            "INSERT INTO api_tokens (id, user_id, token_sha256, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(new_id())
        .bind(user_id)
        .bind(token_digest(&token))
        .bind(Timestamp::now().millis())
        .execute(self.pool())
        .await?;
        Ok(token)
    }

    /// The staff member a presented token belongs to, if it is live.
    pub async fn authenticate(&self, token: &str) -> StoreResult<Option<StaffIdentity>> {
        if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT u.id, u.name, u.role FROM api_tokens t JOIN staff_users u ON u.id = t.user_id \
             WHERE t.token_sha256 = $1 AND t.revoked_at IS NULL AND u.disabled = 0",
        )
        .bind(token_digest(token))
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(StaffIdentity {
                user_id: r.try_get("id")?,
                name: r.try_get("name")?,
                role: parsed(&r, "role", str::parse)?,
            })
        })
        .transpose()
    }
}
