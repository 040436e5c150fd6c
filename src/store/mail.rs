//! Received mail as it arrived (before the parser or intake make anything of it),
//! and bounces of the mail we sent.

use sha2::Digest;

use super::{Store, StoreResult};
use crate::domain::Timestamp;
use crate::domain::message::status;

/// A message exactly as the receiver took it.
pub struct RawMail<'a> {
    /// The contact's key: its Message-ID, or the hash of its bytes.
    pub key: &'a str,
    pub message_id: Option<&'a str>,
    pub mail_from: Option<&'a str>,
    pub rcpt_to: &'a [String],
    pub peer: &'a str,
    pub raw: &'a [u8],
}

impl Store {
    /// Stores `mail` unless a message with its key was stored before; returns the
    /// hash of its bytes.
    pub async fn store_inbound_mail(&self, mail: &RawMail<'_>) -> StoreResult<String> {
        let hash = hex::encode(sha2::Sha256::digest(mail.raw));
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO inbound_mail (message_key, sha256, message_id, mail_from, rcpt_to, peer, size_bytes, raw, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (message_key) DO NOTHING",
        )
        .bind(mail.key)
        .bind(&hash)
        .bind(mail.message_id)
        .bind(mail.mail_from)
        .bind(mail.rcpt_to.join(" "))
        .bind(mail.peer)
        .bind(mail.raw.len() as i64)
        .bind(mail.raw.to_vec())
        .bind(Timestamp::now().millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(hash)
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
}

impl Store {
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
