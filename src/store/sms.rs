//! The SMS channel's records: messages sent and their status, opted-out numbers,
//! keyword messages.

use sqlx::{AnyConnection, Row};

use super::audit::{self, Action, Entity};
use super::requests::{self, Event};
use super::{Store, StoreError, StoreResult, customers, new_id, parsed};
use crate::domain::message::{MessagePurpose, SmsMessage};
use crate::domain::request::TimelineKind;
use crate::domain::{Actor, ConsentPurpose, PhoneNumber, Reference, Timestamp};

const COLUMNS: &str = "id, request_id, customer_id, to_number, body, purpose, provider_sid, status, error_code, \
     sent_by, created_at, updated_at";

/// A message about to be recorded.
pub struct NewMessage<'a> {
    pub request_id: Option<&'a str>,
    pub customer_id: Option<&'a str>,
    pub to: &'a PhoneNumber,
    pub body: &'a str,
    pub purpose: MessagePurpose,
    pub status: &'a str,
    pub status_rank: i64,
}

impl Store {
    pub async fn sms_suppressed(&self, number: &PhoneNumber) -> StoreResult<bool> {
        let row = sqlx::query("SELECT suppressed FROM sms_suppressions WHERE number = $1")
            .bind(number.as_str())
            .fetch_optional(self.pool())
            .await?;
        Ok(match row {
            Some(r) => super::flag(&r, "suppressed")?,
            None => false,
        })
    }

    /// Opts a number out of (or back into) texts, and notes it in the history of
    /// every record holding the number.
    pub async fn set_sms_suppressed(
        &self,
        actor: &Actor,
        number: &PhoneNumber,
        suppressed: bool,
        reason: &str,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let now = Timestamp::now().millis();
        sqlx::query(
            "INSERT INTO sms_suppressions (number, suppressed, reason, changed_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (number) DO UPDATE SET suppressed = $2, reason = $3, changed_at = $4",
        )
        .bind(number.as_str())
        .bind(i64::from(suppressed))
        .bind(reason)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for id in customers::ids_by_phone(&mut tx, number).await? {
            let value = serde_json::json!({ "number": number.as_str(), "suppressed": suppressed, "reason": reason });
            customers::insert_history(
                &mut tx,
                &id,
                "sms_opt_out",
                None,
                Some(&value),
                &actor.label(),
                now,
            )
            .await?;
            audit::record(
                &mut tx,
                actor,
                Action::Update,
                Entity::Customer,
                &id,
                Some(reason),
            )
            .await?;
        }
        tx.commit().await
    }

    /// Records a keyword message; `false` if this MessageSid was seen before.
    pub async fn record_keyword(
        &self,
        message_sid: &str,
        from: &str,
        keyword: &str,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "INSERT INTO sms_keyword_messages (message_sid, from_number, keyword, received_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (message_sid) DO NOTHING",
        )
        .bind(message_sid)
        .bind(from)
        .bind(keyword)
        .bind(Timestamp::now().millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether the resident holding `phone` has given `purpose` consent (latest word).
    pub async fn consent_given(
        &self,
        customer_id: &str,
        purpose: ConsentPurpose,
    ) -> StoreResult<bool> {
        let row = sqlx::query(
            "SELECT granted FROM consents WHERE customer_id = $1 AND purpose = $2 ORDER BY at DESC, id DESC LIMIT 1",
        )
        .bind(customer_id)
        .bind(purpose.as_str())
        .fetch_optional(self.pool())
        .await?;
        Ok(match row {
            Some(r) => super::flag(&r, "granted")?,
            None => false,
        })
    }

    /// Records a message (sent or held back) and puts it on the request's timeline.
    pub async fn record_message(
        &self,
        actor: &Actor,
        m: &NewMessage<'_>,
    ) -> StoreResult<SmsMessage> {
        let mut tx = self.begin().await?;
        let id = new_id();
        let now = Timestamp::now().millis();
        sqlx::query(
            "INSERT INTO sms_messages (id, request_id, customer_id, to_number, body, purpose, status, status_rank, \
             sent_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
        )
        .bind(&id)
        .bind(m.request_id)
        .bind(m.customer_id)
        .bind(m.to.as_str())
        .bind(m.body)
        .bind(m.purpose.as_str())
        .bind(m.status)
        .bind(m.status_rank)
        .bind(actor.label())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if let Some(request_id) = m.request_id {
            let event = requests::append(
                &mut tx,
                request_id,
                &Event {
                    kind: TimelineKind::Message,
                    actor,
                    contact_id: None,
                    body: None,
                    from: None,
                    to: None,
                },
            )
            .await?;
            sqlx::query("UPDATE timeline_events SET message_id = $1 WHERE id = $2")
                .bind(&id)
                .bind(&event)
                .execute(&mut *tx)
                .await?;
        }
        let message = read(&mut tx, &id).await?;
        tx.commit().await?;
        Ok(message)
    }

    /// After Twilio took the message: its MessageSid and first status, and any
    /// status report that raced ahead of this answer.
    pub async fn message_handed_over(
        &self,
        id: &str,
        sid: &str,
        status: &str,
        rank: i64,
    ) -> StoreResult<SmsMessage> {
        let mut tx = self.begin().await?;
        // The same key as the status callback takes: the two never interleave.
        super::lock_key(&mut tx, self.backend(), sid).await?;
        sqlx::query(
            "UPDATE sms_messages SET provider_sid = $1, status = $2, status_rank = $3, updated_at = $4 WHERE id = $5",
        )
        .bind(sid)
        .bind(status)
        .bind(rank)
        .bind(Timestamp::now().millis())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let early = sqlx::query(
            "SELECT status, status_rank, error_code FROM sms_early_reports WHERE provider_sid = $1",
        )
        .bind(sid)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(e) = early {
            sqlx::query(
                "UPDATE sms_messages SET status = $1, status_rank = $2, error_code = $3 WHERE id = $4 AND status_rank < $2",
            )
            .bind(e.try_get::<String, _>("status")?)
            .bind(e.try_get::<i64, _>("status_rank")?)
            .bind(e.try_get::<Option<i64>, _>("error_code")?)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM sms_early_reports WHERE provider_sid = $1")
                .bind(sid)
                .execute(&mut *tx)
                .await?;
        }
        let m = read(&mut tx, id).await?;
        tx.commit().await?;
        Ok(m)
    }

    pub async fn message_failed(
        &self,
        id: &str,
        status: &str,
        rank: i64,
        code: Option<i64>,
    ) -> StoreResult<SmsMessage> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE sms_messages SET status = $1, status_rank = $2, error_code = $3, updated_at = $4 WHERE id = $5")
            .bind(status)
            .bind(rank)
            .bind(code)
            .bind(Timestamp::now().millis())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let m = read(&mut tx, id).await?;
        tx.commit().await?;
        Ok(m)
    }

    /// A status report from Twilio: applied only if it moves the message forward,
    /// so duplicates and late arrivals change nothing. `false` if nothing changed.
    pub async fn apply_message_status(
        &self,
        sid: &str,
        status: &str,
        rank: i64,
        code: Option<i64>,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        super::lock_key(&mut tx, self.backend(), sid).await?;
        let now = Timestamp::now().millis();
        let done = sqlx::query(
            "UPDATE sms_messages SET status = $1, status_rank = $2, error_code = COALESCE($3, error_code), updated_at = $4 \
             WHERE provider_sid = $5 AND status_rank < $2",
        )
        .bind(status)
        .bind(rank)
        .bind(code)
        .bind(now)
        .bind(sid)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            let known = sqlx::query("SELECT id FROM sms_messages WHERE provider_sid = $1")
                .bind(sid)
                .fetch_optional(&mut *tx)
                .await?;
            if known.is_none() {
                // Ahead of our own record of the send: kept until the send is recorded.
                sqlx::query(
                    "INSERT INTO sms_early_reports (provider_sid, status, status_rank, error_code, received_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (provider_sid) DO UPDATE SET \
                     status = excluded.status, status_rank = excluded.status_rank, \
                     error_code = COALESCE(excluded.error_code, sms_early_reports.error_code) \
                     WHERE sms_early_reports.status_rank < excluded.status_rank",
                )
                .bind(sid)
                .bind(status)
                .bind(rank)
                .bind(code)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// The request of the latest text we sent to `number` since `since`.
    pub async fn recent_message_request(
        &self,
        number: &PhoneNumber,
        since: Timestamp,
    ) -> StoreResult<Option<Reference>> {
        let row = sqlx::query(
            "SELECT r.number FROM sms_messages m JOIN service_requests r ON r.id = m.request_id \
             WHERE m.to_number = $1 AND m.created_at >= $2 ORDER BY m.created_at DESC, m.id DESC LIMIT 1",
        )
        .bind(number.as_str())
        .bind(since.millis())
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| Ok(Reference::from_number(r.try_get("number")?)))
            .transpose()
    }

    /// Whether request `reference` belongs to a resident holding `number`.
    pub async fn request_belongs_to(
        &self,
        reference: Reference,
        number: &PhoneNumber,
    ) -> StoreResult<bool> {
        let row = sqlx::query(
            "SELECT r.id FROM service_requests r JOIN customer_phones p ON p.customer_id = r.customer_id \
             WHERE r.number = $1 AND p.e164 = $2",
        )
        .bind(reference.number())
        .bind(number.as_str())
        .fetch_optional(self.pool())
        .await?;
        Ok(row.is_some())
    }
}

pub(crate) async fn read(conn: &mut AnyConnection, id: &str) -> StoreResult<SmsMessage> {
    let sql = format!("SELECT {COLUMNS} FROM sms_messages WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
    from_row(&row)
}

fn from_row(r: &sqlx::any::AnyRow) -> StoreResult<SmsMessage> {
    Ok(SmsMessage {
        id: r.try_get("id")?,
        request_id: r.try_get("request_id")?,
        customer_id: r.try_get("customer_id")?,
        to: r.try_get("to_number")?,
        body: r.try_get("body")?,
        purpose: parsed(r, "purpose", str::parse)?,
        provider_sid: r.try_get("provider_sid")?,
        status: r.try_get("status")?,
        error_code: r.try_get("error_code")?,
        sent_by: r.try_get("sent_by")?,
        created_at: Timestamp::from_millis(r.try_get("created_at")?),
        updated_at: Timestamp::from_millis(r.try_get("updated_at")?),
    })
}
