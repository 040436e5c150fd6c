//! Contacts as they arrived (an email's raw message, before the parser or intake made
//! anything of it), bounces of the mail we sent, and the IMAP poller's places.

use sha2::Digest;

use super::{Store, StoreResult};
use crate::domain::message::status;
use crate::domain::{Channel, Timestamp};

/// A contact exactly as it arrived.
#[derive(Debug, Clone)]
pub struct Original {
    /// The contact's key (an email's Message-ID, or the hash of its bytes).
    pub key: String,
    /// How it came: the SMTP envelope and client, or the mailbox it was fetched from.
    pub envelope: String,
    pub raw: std::sync::Arc<[u8]>,
}

/// Stores `original` (of a contact, or of a bounce when `contact_id` is None), unless
/// one with its key is already stored.
pub async fn insert_original(
    conn: &mut sqlx::AnyConnection,
    channel: Channel,
    contact_id: Option<&str>,
    original: &Original,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO contact_originals (message_key, channel, contact_id, envelope, sha256, size_bytes, raw, received_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (message_key) DO NOTHING",
    )
    .bind(&original.key)
    .bind(channel.as_str())
    .bind(contact_id)
    .bind(&original.envelope)
    .bind(hex::encode(sha2::Sha256::digest(&original.raw)))
    .bind(original.raw.len() as i64)
    .bind(original.raw.to_vec())
    .bind(Timestamp::now().millis())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl Store {
    /// Stores the original of something that is no contact (a bounce).
    pub async fn store_original(&self, channel: Channel, original: &Original) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        insert_original(&mut tx, channel, None, original).await?;
        tx.commit().await
    }

    /// A delivery failure came back for message `id` (named by the bounce address
    /// we sent it from): it failed, whatever the relay said before. `false` if no
    /// message of ours has that id.
    pub async fn message_bounced(&self, id: &str, why: &str) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE messages SET status = $1, status_rank = $2, last_error = $3, updated_at = $4 \
             WHERE id = $5 AND direction = 'out'",
        )
        .bind(status::FAILED)
        .bind(status::FINAL_RANK)
        .bind(why)
        .bind(Timestamp::now().millis())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Where the poller is in `mailbox` (an account and folder): (UIDVALIDITY, last UID).
    pub async fn mailbox_position(&self, mailbox: &str) -> StoreResult<Option<(u32, u32)>> {
        use sqlx::Row;
        let row =
            sqlx::query("SELECT uid_validity, last_uid FROM mailbox_positions WHERE mailbox = $1")
                .bind(mailbox)
                .fetch_optional(self.pool())
                .await?;
        row.map(|r| {
            let validity: i64 = r.try_get("uid_validity")?;
            let last: i64 = r.try_get("last_uid")?;
            Ok((validity as u32, last as u32))
        })
        .transpose()
    }

    /// Moves the poller's place forward (never back, within one UIDVALIDITY).
    pub async fn save_mailbox_position(
        &self,
        mailbox: &str,
        uid_validity: u32,
        uid: u32,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO mailbox_positions (mailbox, uid_validity, last_uid, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (mailbox) DO UPDATE SET uid_validity = $2, last_uid = $3, updated_at = $4 \
             WHERE mailbox_positions.uid_validity <> $2 OR mailbox_positions.last_uid < $3",
        )
        .bind(mailbox)
        .bind(i64::from(uid_validity))
        .bind(i64::from(uid))
        .bind(Timestamp::now().millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }
}
