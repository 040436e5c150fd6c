//! Staff users and their bearer tokens. Only a SHA-256 of each token is stored: tokens
//! are 256-bit random values, so a fast hash is enough and a stolen database holds
//! nothing that authenticates.

use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::audit::{self, Action, Entity};
use super::{Store, StoreError, StoreResult, new_id, parsed};
use crate::domain::{Actor, Role, StaffIdentity, Timestamp};

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

    /// Creates a token for `user` that lives until revoked; see [`Store::create_token_until`].
    pub async fn create_token(&self, user: &str) -> StoreResult<String> {
        self.create_token_until(user, None).await
    }

    /// Creates a token for `user`, valid until `expires` (if given), and returns it;
    /// this is the only time it is seen.
    pub async fn create_token_until(
        &self,
        user: &str,
        expires: Option<Timestamp>,
    ) -> StoreResult<String> {
        let row = sqlx::query("SELECT id FROM staff_users WHERE name = $1 AND disabled = 0")
            .bind(user)
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound)?;
        let user_id: String = row.try_get("id")?;
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let token = format!("{TOKEN_PREFIX}{}", hex::encode(secret));
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO api_tokens (id, user_id, token_sha256, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(new_id())
        .bind(&user_id)
        .bind(token_digest(&token))
        .bind(Timestamp::now().millis())
        .bind(expires.map(Timestamp::millis))
        .execute(&mut *tx)
        .await?;
        let detail = match expires {
            Some(at) => format!("token created, expires {at}"),
            None => "token created, no expiry".into(),
        };
        operator_changed(&mut tx, Action::Create, &user_id, &detail).await?;
        tx.commit().await?;
        Ok(token)
    }

    /// Revokes one token (given as the secret itself); false if no live token matched.
    pub async fn revoke_token(&self, token: &str) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "SELECT user_id FROM api_tokens WHERE token_sha256 = $1 AND revoked_at IS NULL",
        )
        .bind(token_digest(token))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        let user_id: String = row.try_get("user_id")?;
        sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE token_sha256 = $2")
            .bind(Timestamp::now().millis())
            .bind(token_digest(token))
            .execute(&mut *tx)
            .await?;
        operator_changed(&mut tx, Action::Update, &user_id, "token revoked").await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Revokes every live token of `user`; returns how many.
    pub async fn revoke_tokens_of(&self, user: &str) -> StoreResult<u64> {
        let mut tx = self.begin().await?;
        let user_id = user_id(&mut tx, user).await?;
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
        )
        .bind(Timestamp::now().millis())
        .bind(&user_id)
        .execute(&mut *tx)
        .await?;
        let detail = format!("{} token(s) revoked", done.rows_affected());
        operator_changed(&mut tx, Action::Update, &user_id, &detail).await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// Disables (or enables again) a staff user: a disabled user's tokens stop working
    /// at once.
    pub async fn set_staff_disabled(&self, user: &str, disabled: bool) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let user_id = user_id(&mut tx, user).await?;
        sqlx::query("UPDATE staff_users SET disabled = $1 WHERE id = $2")
            .bind(i64::from(disabled))
            .bind(&user_id)
            .execute(&mut *tx)
            .await?;
        let detail = if disabled {
            "user disabled"
        } else {
            "user enabled"
        };
        operator_changed(&mut tx, Action::Update, &user_id, detail).await?;
        tx.commit().await
    }

    /// The staff member a presented token belongs to, if it is live.
    pub async fn authenticate(&self, token: &str) -> StoreResult<Option<StaffIdentity>> {
        if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT u.id, u.name, u.role FROM api_tokens t JOIN staff_users u ON u.id = t.user_id \
             WHERE t.token_sha256 = $1 AND t.revoked_at IS NULL AND u.disabled = 0 \
             AND (t.expires_at IS NULL OR t.expires_at > $2)",
        )
        .bind(token_digest(token))
        .bind(Timestamp::now().millis())
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

async fn user_id(conn: &mut sqlx::AnyConnection, name: &str) -> StoreResult<String> {
    let row = sqlx::query("SELECT id FROM staff_users WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
    Ok(row.try_get("id")?)
}

/// Staff accounts and tokens are changed by an operator at the command line: the
/// audit says so, on the staff user's row.
async fn operator_changed(
    conn: &mut sqlx::AnyConnection,
    action: Action,
    user_id: &str,
    detail: &str,
) -> StoreResult<()> {
    audit::record(
        conn,
        &Actor::System,
        action,
        Entity::StaffUser,
        user_id,
        Some(detail),
    )
    .await
}
