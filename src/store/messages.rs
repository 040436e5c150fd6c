//! Messages sent and received on every text channel, the outbox's states, delivery
//! statuses, and SMS opt-outs and keyword messages.

use sqlx::{AnyConnection, Row};

use super::audit::{self, Action, Entity};
use super::requests::{self, Event};
use super::{Store, StoreError, StoreResult, customers, new_id, parsed};
use crate::domain::message::{
    Direction, Message, MessagePurpose, MessageState, Occurrence, status,
};
use crate::domain::request::TimelineKind;
use crate::domain::{Actor, Channel, ConsentPurpose, PhoneNumber, Timestamp};

const COLUMNS: &str = "id, channel, direction, request_id, customer_id, address, subject, body, purpose, \
     provider_sid, status, error_code, sent_by, created_at, updated_at, next_attempt_at, attempts, last_error, \
     appointment_id, subscription_id";

/// A message about to be recorded: sent (into the outbox) or received.
pub struct NewMessage<'a> {
    pub channel: Channel,
    pub direction: Direction,
    pub request_id: Option<&'a str>,
    pub customer_id: Option<&'a str>,
    pub contact_id: Option<&'a str>,
    /// The resident's end.
    pub address: &'a str,
    pub subject: Option<&'a str>,
    pub body: &'a str,
    pub html: Option<&'a str>,
    pub purpose: MessagePurpose,
    pub internet_message_id: Option<&'a str>,
    /// In-Reply-To, then References: the Message-IDs this one answers.
    pub thread_ids: &'a [String],
    /// Outlook's Thread-Index (base64).
    pub thread_index: Option<&'a str>,
    pub status: &'a str,
    pub status_rank: i64,
    /// When the outbox may send it (pending messages only).
    pub due_at: Option<Timestamp>,
    /// A reminder: what it is of, and which occurrence (unique).
    pub occurrence: Option<&'a Occurrence>,
}

/// A send of unknown outcome, to ask its provider about.
#[derive(Debug, Clone)]
pub struct UnknownSend {
    pub id: String,
    pub channel: Channel,
    pub address: String,
    pub body: String,
    /// When the send began.
    pub began: Timestamp,
}

/// A pending message claimed by a dispatcher: everything needed to send it.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    pub channel: Channel,
    pub request_id: Option<String>,
    pub address: String,
    pub subject: Option<String>,
    pub body: String,
    pub html: Option<String>,
    pub internet_message_id: Option<String>,
    pub thread_ids: Vec<String>,
    pub thread_index: Option<String>,
    pub purpose: MessagePurpose,
    pub attempts: i64,
    pub customer_id: Option<String>,
    /// When it was due (how late it goes is measured from here).
    pub due_at: Option<Timestamp>,
    /// When this send's lease runs out: past it, the send is not made.
    pub lease_until: Timestamp,
}

/// Records a message in the caller's transaction, and puts it on its request's
/// timeline. Outbound messages go into the outbox this way, with their cause.
pub async fn insert(
    conn: &mut AnyConnection,
    actor: &Actor,
    m: &NewMessage<'_>,
) -> StoreResult<String> {
    let id = new_id();
    let now = Timestamp::now().millis();
    let thread = (!m.thread_ids.is_empty()).then(|| m.thread_ids.join(" "));
    sqlx::query(
        "INSERT INTO messages (id, channel, direction, request_id, customer_id, contact_id, address, subject, body, html, \
         purpose, internet_message_id, thread_ids, status, status_rank, sent_by, next_attempt_at, created_at, updated_at, \
         thread_index, appointment_id, subscription_id, schedule_key) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $18, $19, $20, $21, $22)",
    )
    .bind(&id)
    .bind(m.channel.as_str())
    .bind(m.direction.as_str())
    .bind(m.request_id)
    .bind(m.customer_id)
    .bind(m.contact_id)
    .bind(m.address)
    .bind(m.subject)
    .bind(m.body)
    .bind(m.html)
    .bind(m.purpose.as_str())
    .bind(m.internet_message_id)
    .bind(thread)
    .bind(m.status)
    .bind(m.status_rank)
    .bind(actor.label())
    .bind(m.due_at.map(Timestamp::millis))
    .bind(now)
    .bind(m.thread_index)
    .bind(m.occurrence.and_then(Occurrence::appointment_id))
    .bind(m.occurrence.and_then(Occurrence::subscription_id))
    .bind(m.occurrence.map(|o| o.key.as_str()))
    .execute(&mut *conn)
    .await?;
    // A received message is on the timeline as its contact; a sent one as itself.
    if let (Some(request_id), Direction::Out) = (m.request_id, m.direction) {
        requests::append(
            conn,
            request_id,
            &Event {
                kind: TimelineKind::Message,
                actor,
                contact_id: None,
                body: None,
                from: None,
                to: None,
                message_id: Some(&id),
            },
        )
        .await?;
    }
    Ok(id)
}

/// Whether the number has opted out of texts.
pub async fn sms_suppressed(conn: &mut AnyConnection, number: &str) -> StoreResult<bool> {
    let row = sqlx::query("SELECT suppressed FROM sms_suppressions WHERE number = $1")
        .bind(number)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        Some(r) => super::flag(&r, "suppressed")?,
        None => false,
    })
}

/// Whether the resident has given `purpose` consent (their latest word).
pub async fn consent_given(
    conn: &mut AnyConnection,
    customer_id: &str,
    purpose: ConsentPurpose,
) -> StoreResult<bool> {
    let row = sqlx::query(
        "SELECT granted FROM consents WHERE customer_id = $1 AND purpose = $2 ORDER BY at DESC, id DESC LIMIT 1",
    )
    .bind(customer_id)
    .bind(purpose.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match row {
        Some(r) => super::flag(&r, "granted")?,
        None => false,
    })
}

/// The request of the latest message we sent to `address` on `channel` since `since`.
pub async fn recent_outbound_request(
    conn: &mut AnyConnection,
    channel: Channel,
    address: &str,
    since: Timestamp,
) -> StoreResult<Option<String>> {
    let row = sqlx::query(
        "SELECT request_id FROM messages WHERE channel = $1 AND direction = 'out' AND address = $2 \
         AND created_at >= $3 AND request_id IS NOT NULL ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .bind(channel.as_str())
    .bind(address)
    .bind(since.millis())
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| r.try_get("request_id"))
        .transpose()
        .map_err(Into::into)
}

/// A message found by its Message-ID: its request, and whether we sent it.
pub struct ThreadMatch {
    pub request_id: String,
    pub direction: Direction,
    /// Who it was sent to, or received from.
    pub address: String,
}

/// The messages (with a request) among `ids`: ours first, then received ones.
pub async fn by_internet_ids(
    conn: &mut AnyConnection,
    ids: &[String],
) -> StoreResult<Vec<ThreadMatch>> {
    let mut found = Vec::new();
    for id in ids {
        let rows = sqlx::query(
            "SELECT request_id, direction, address FROM messages WHERE internet_message_id = $1 AND request_id IS NOT NULL",
        )
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
        for r in rows {
            found.push(ThreadMatch {
                request_id: r.try_get("request_id")?,
                direction: parsed(&r, "direction", str::parse)?,
                address: r.try_get("address")?,
            });
        }
    }
    found.sort_by_key(|m| m.direction != Direction::Out);
    Ok(found)
}

/// Acknowledgements sent to `address` since `since` (all requests, and this one).
pub async fn acknowledgements_since(
    conn: &mut AnyConnection,
    address: &str,
    since: Timestamp,
) -> StoreResult<i64> {
    let row = sqlx::query(
        "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM messages WHERE direction = 'out' AND address = $1 \
         AND purpose = 'acknowledgement' AND created_at >= $2",
    )
    .bind(address)
    .bind(since.millis())
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.try_get("n")?)
}

/// A request's thread, for a message about to join it: every Message-ID sent or
/// received on it, oldest first (for References), and the latest Outlook
/// Thread-Index (to extend).
pub async fn thread_of(
    conn: &mut AnyConnection,
    request_id: &str,
) -> StoreResult<(Vec<String>, Option<String>)> {
    let rows = sqlx::query(
        "SELECT internet_message_id, thread_index FROM messages WHERE request_id = $1 \
         AND (internet_message_id IS NOT NULL OR thread_index IS NOT NULL) ORDER BY created_at, id",
    )
    .bind(request_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut ids = Vec::with_capacity(rows.len());
    let mut latest_index = None;
    for r in &rows {
        if let Some(id) = r.try_get::<Option<String>, _>("internet_message_id")? {
            ids.push(id);
        }
        if let Some(index) = r.try_get::<Option<String>, _>("thread_index")? {
            latest_index = Some(index);
        }
    }
    Ok((ids, latest_index))
}

impl Store {
    /// Begins the send of a pending message: `dispatching`, with a lease. With a
    /// scheduler's claim, only if no newer claim has begun it (`fence`); without one
    /// (a staff member's reply, sent while they wait) whatever the fence. None: the
    /// message is not pending (sent, cancelled, begun by another) or the claim is stale.
    pub async fn begin_send(
        &self,
        id: &str,
        fence: Option<i64>,
        now: Timestamp,
        lease: std::time::Duration,
    ) -> StoreResult<Option<Claimed>> {
        let mut tx = self.begin().await?;
        let now = now.millis();
        let begun = sqlx::query(
            "UPDATE messages SET status = $1, lease_until = $2, attempts = attempts + 1, updated_at = $3, \
             claim_fence = COALESCE($7, claim_fence), claimed_until = NULL \
             WHERE id = $4 AND status = $5 AND claim_fence <= $6",
        )
        .bind(status::DISPATCHING)
        .bind(now + lease.as_millis() as i64)
        .bind(now)
        .bind(id)
        .bind(status::PENDING)
        .bind(fence.unwrap_or(i64::MAX))
        .bind(fence)
        .execute(&mut *tx)
        .await?;
        if begun.rows_affected() == 0 {
            return Ok(None);
        }
        let id = id.to_string();
        let r = sqlx::query(
            "SELECT id, channel, request_id, customer_id, address, subject, body, html, internet_message_id, thread_ids, thread_index, purpose, attempts, next_attempt_at \
             FROM messages WHERE id = $1",
        )
        .bind(&id)
        .fetch_one(&mut *tx)
        .await?;
        let thread: Option<String> = r.try_get("thread_ids")?;
        let c = Claimed {
            id,
            channel: parsed(&r, "channel", str::parse)?,
            request_id: r.try_get("request_id")?,
            address: r.try_get("address")?,
            subject: r.try_get("subject")?,
            body: r.try_get("body")?,
            html: r.try_get("html")?,
            internet_message_id: r.try_get("internet_message_id")?,
            thread_ids: thread
                .map(|t| t.split(' ').map(str::to_string).collect())
                .unwrap_or_default(),
            thread_index: r.try_get("thread_index")?,
            purpose: parsed(&r, "purpose", str::parse)?,
            attempts: r.try_get("attempts")?,
            customer_id: r.try_get("customer_id")?,
            due_at: r
                .try_get::<Option<i64>, _>("next_attempt_at")?
                .map(Timestamp::from_millis),
            lease_until: Timestamp::from_millis(now + lease.as_millis() as i64),
        };
        tx.commit().await?;
        Ok(Some(c))
    }

    /// A send that failed before anything left: pending again, due at `at`.
    pub async fn retry_message_later(
        &self,
        id: &str,
        at: Timestamp,
        error: &str,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE messages SET status = $1, next_attempt_at = $2, lease_until = NULL, last_error = $3, updated_at = $4 \
             WHERE id = $5 AND status = $6",
        )
        .bind(status::PENDING)
        .bind(at.millis())
        .bind(error)
        .bind(Timestamp::now().millis())
        .bind(id)
        .bind(status::DISPATCHING)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// A begun send put off until `at` (quiet hours): pending again, the attempt
    /// not counted.
    pub async fn defer_message(&self, id: &str, at: Timestamp) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE messages SET status = $1, next_attempt_at = $2, lease_until = NULL, attempts = attempts - 1, updated_at = $3 \
             WHERE id = $4 AND status = $5",
        )
        .bind(status::PENDING)
        .bind(at.millis())
        .bind(Timestamp::now().millis())
        .bind(id)
        .bind(status::DISPATCHING)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// When the appointment a reminder is for begins, if it is an appointment's.
    pub async fn appointment_start_of(&self, message_id: &str) -> StoreResult<Option<Timestamp>> {
        let row = sqlx::query(
            "SELECT a.starts_at FROM messages m JOIN appointments a ON a.id = m.appointment_id WHERE m.id = $1",
        )
        .bind(message_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(match row {
            Some(r) => Some(Timestamp::from_millis(r.try_get("starts_at")?)),
            None => None,
        })
    }

    /// Claims whose lease ran out (a dispatcher died mid-send) become `unknown`: the
    /// message may have gone, so it is never resent blind. Returns how many.
    pub async fn expire_message_leases(&self, now: Timestamp) -> StoreResult<u64> {
        let mut tx = self.begin().await?;
        let now = now.millis();
        let done = sqlx::query(
            "UPDATE messages SET status = $1, last_error = 'the send was interrupted', updated_at = $2 \
             WHERE status = $3 AND lease_until < $2",
        )
        .bind(status::UNKNOWN)
        .bind(now)
        .bind(status::DISPATCHING)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// When the next pending message falls due, if any is pending.
    pub async fn next_message_due(&self) -> StoreResult<Option<Timestamp>> {
        let row = sqlx::query(
            "SELECT CAST(MIN(next_attempt_at) AS BIGINT) AS due FROM messages WHERE status = $1",
        )
        .bind(status::PENDING)
        .fetch_one(self.pool())
        .await?;
        Ok(row
            .try_get::<Option<i64>, _>("due")?
            .map(Timestamp::from_millis))
    }

    pub async fn message(&self, id: &str) -> StoreResult<Message> {
        let mut conn = self.pool().acquire().await?;
        read(&mut conn, id).await
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

    /// After Twilio took the message: its MessageSid and first status, and any
    /// status report that raced ahead of this answer.
    pub async fn message_handed_over(
        &self,
        id: &str,
        sid: &str,
        status: &str,
        rank: i64,
    ) -> StoreResult<Message> {
        let mut tx = self.begin().await?;
        // The same key as the status callback takes: the two never interleave.
        super::lock_key(&mut tx, self.backend(), sid).await?;
        sqlx::query(
            "UPDATE messages SET provider_sid = $1, status = $2, status_rank = $3, updated_at = $4, lease_until = NULL \
             WHERE id = $5",
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
                "UPDATE messages SET status = $1, status_rank = $2, error_code = $3 WHERE id = $4 AND status_rank < $2",
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

    /// Settles a message that was not handed over: refused, held back, or unknown.
    pub async fn message_failed(
        &self,
        id: &str,
        status: &str,
        rank: i64,
        code: Option<i64>,
        error: Option<&str>,
    ) -> StoreResult<Message> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE messages SET status = $1, status_rank = $2, error_code = $3, updated_at = $4, \
                     last_error = COALESCE($6, last_error), lease_until = NULL WHERE id = $5",
        )
        .bind(status)
        .bind(rank)
        .bind(code)
        .bind(Timestamp::now().millis())
        .bind(id)
        .bind(error)
        .execute(&mut *tx)
        .await?;
        let m = read(&mut tx, id).await?;
        tx.commit().await?;
        Ok(m)
    }

    /// A send whose outcome is not known: never resent blind. Its lease's end is
    /// kept, since it says when the send began (what to look for at the provider).
    pub async fn message_unknown(&self, id: &str, error: &str) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE messages SET status = $1, status_rank = 0, updated_at = $2, last_error = $3 WHERE id = $4",
        )
        .bind(status::UNKNOWN)
        .bind(Timestamp::now().millis())
        .bind(error)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// Sends of unknown outcome on `channels` to ask their provider about: marked
    /// unknown between `from` and `until` (a provider's list needs a moment to show a
    /// new message), with when each send began.
    pub async fn unknown_to_reconcile(
        &self,
        channels: &[Channel],
        from: Timestamp,
        until: Timestamp,
        lease: std::time::Duration,
    ) -> StoreResult<Vec<UnknownSend>> {
        let mut found = Vec::new();
        for channel in channels {
            let rows = sqlx::query(
                "SELECT id, address, body, lease_until FROM messages \
                 WHERE status = $1 AND channel = $2 AND direction = $3 AND lease_until IS NOT NULL \
                 AND updated_at >= $4 AND updated_at <= $5 ORDER BY updated_at LIMIT 50",
            )
            .bind(status::UNKNOWN)
            .bind(channel.as_str())
            .bind(Direction::Out.as_str())
            .bind(from.millis())
            .bind(until.millis())
            .fetch_all(self.pool())
            .await?;
            for r in rows {
                let lease_until: i64 = r.try_get("lease_until")?;
                found.push(UnknownSend {
                    id: r.try_get("id")?,
                    channel: *channel,
                    address: r.try_get("address")?,
                    body: r.try_get("body")?,
                    began: Timestamp::from_millis(lease_until - lease.as_millis() as i64),
                });
            }
        }
        Ok(found)
    }

    /// Provider ids of messages on `channel` handed over but not settled, with no
    /// news since `quiet_since`: the oldest hundred.
    pub async fn unsettled_sends(
        &self,
        channel: Channel,
        quiet_since: Timestamp,
    ) -> StoreResult<Vec<String>> {
        let rows = sqlx::query(
            "SELECT provider_sid FROM messages WHERE channel = $1 AND direction = $2 \
             AND provider_sid IS NOT NULL AND status_rank < $3 AND status <> $4 AND updated_at < $5 \
             ORDER BY updated_at LIMIT 100",
        )
        .bind(channel.as_str())
        .bind(Direction::Out.as_str())
        .bind(status::FINAL_RANK)
        .bind(status::UNKNOWN)
        .bind(quiet_since.millis())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok(r.try_get("provider_sid")?))
            .collect()
    }

    /// A message whose provider was asked about it at `at`: not asked again for a while.
    pub async fn message_checked(&self, sid: &str, at: Timestamp) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE messages SET updated_at = $1 WHERE provider_sid = $2 AND updated_at < $1",
        )
        .bind(at.millis())
        .bind(sid)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// A send of unknown outcome that the provider says never arrived: pending
    /// again, due at `at`. False if it was no longer unknown.
    pub async fn requeue_unknown(&self, id: &str, at: Timestamp) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE messages SET status = $1, next_attempt_at = $2, lease_until = NULL, updated_at = $3 \
             WHERE id = $4 AND status = $5",
        )
        .bind(status::PENDING)
        .bind(at.millis())
        .bind(Timestamp::now().millis())
        .bind(id)
        .bind(status::UNKNOWN)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
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
            "UPDATE messages SET status = $1, status_rank = $2, error_code = COALESCE($3, error_code), updated_at = $4 \
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
            let known = sqlx::query("SELECT id FROM messages WHERE provider_sid = $1")
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
}

impl Store {
    /// A customer's messages, sent, scheduled and received, newest first (those on
    /// special-category requests only for roles that may see them). Audited.
    pub async fn customer_messages(
        &self,
        actor: &Actor,
        customer_id: &str,
        include_special_category: bool,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Vec<Message>> {
        let mut conn = self.pool().acquire().await?;
        customers::exists(&mut conn, customer_id).await?;
        let columns = COLUMNS
            .split(", ")
            .map(|c| format!("m.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {columns} FROM messages m LEFT JOIN service_requests r ON r.id = m.request_id \
             WHERE m.customer_id = $1 AND ($2 = 1 OR COALESCE(r.special_category, 0) = 0) \
             ORDER BY m.created_at DESC, m.id DESC LIMIT $3 OFFSET $4"
        )))
        .bind(customer_id)
        .bind(i64::from(include_special_category))
        .bind(limit)
        .bind(offset)
        .fetch_all(&mut *conn)
        .await?;
        drop(conn);
        self.audit(
            actor,
            Action::Read,
            Entity::Customer,
            customer_id,
            Some("messages"),
        )
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Messages staff must look at: dead letters, and sends whose outcome is not
    /// known (to be checked with the provider before anything is sent again),
    /// oldest first. Each one's customer is audited as read.
    pub async fn outbox_attention(&self, actor: &Actor, limit: i64) -> StoreResult<Vec<Message>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM messages WHERE status IN ($1, $2) ORDER BY updated_at, id LIMIT $3"
        )))
        .bind(status::DEAD)
        .bind(status::UNKNOWN)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let messages = rows.iter().map(from_row).collect::<StoreResult<Vec<_>>>()?;
        let mut tx = self.begin().await?;
        for m in &messages {
            if let Some(customer) = &m.customer_id {
                audit::record(
                    &mut tx,
                    actor,
                    Action::Read,
                    Entity::Customer,
                    customer,
                    Some("outbox attention"),
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(messages)
    }
}

pub(crate) async fn read(conn: &mut AnyConnection, id: &str) -> StoreResult<Message> {
    let sql = format!("SELECT {COLUMNS} FROM messages WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
    from_row(&row)
}

fn from_row(r: &sqlx::any::AnyRow) -> StoreResult<Message> {
    let status: String = r.try_get("status")?;
    Ok(Message {
        id: r.try_get("id")?,
        channel: parsed(r, "channel", str::parse)?,
        direction: parsed(r, "direction", str::parse)?,
        subject: r.try_get("subject")?,
        request_id: r.try_get("request_id")?,
        customer_id: r.try_get("customer_id")?,
        to: r.try_get("address")?,
        body: r.try_get("body")?,
        purpose: parsed(r, "purpose", str::parse)?,
        provider_sid: r.try_get("provider_sid")?,
        state: MessageState::of_status(&status),
        due_at: (status == status::PENDING)
            .then(|| r.try_get::<Option<i64>, _>("next_attempt_at"))
            .transpose()?
            .flatten()
            .map(Timestamp::from_millis),
        attempts: r.try_get("attempts")?,
        last_error: r.try_get("last_error")?,
        appointment_id: r.try_get("appointment_id")?,
        subscription_id: r.try_get("subscription_id")?,
        status,
        error_code: r.try_get("error_code")?,
        sent_by: r.try_get("sent_by")?,
        created_at: Timestamp::from_millis(r.try_get("created_at")?),
        updated_at: Timestamp::from_millis(r.try_get("updated_at")?),
    })
}
