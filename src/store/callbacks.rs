//! Callbacks owed to callers who could not reach an advisor: a voicemail (a stretch
//! of the call's own recording) or a request to be called back. Each is on its
//! request's timeline; staff list the open ones and close each with what they did.

use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;

use super::audit::{self, Action, Entity};
use super::requests::{self, Event};
use super::{Store, StoreError, StoreResult, new_id};
use crate::domain::request::TimelineKind;
use crate::domain::{Actor, Channel, Timestamp};

/// What the caller left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallbackKind {
    /// A message, in the call's recording between the two offsets.
    Voicemail,
    /// Only a wish to be called back on their number.
    Callback,
}

impl CallbackKind {
    fn as_str(self) -> &'static str {
        match self {
            CallbackKind::Voicemail => "voicemail",
            CallbackKind::Callback => "callback",
        }
    }

    fn parse(s: &str) -> Option<CallbackKind> {
        match s {
            "voicemail" => Some(CallbackKind::Voicemail),
            "callback" => Some(CallbackKind::Callback),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Callback {
    pub id: String,
    pub kind: CallbackKind,
    pub request_id: String,
    pub reference: String,
    pub contact_id: Option<String>,
    /// The number to call back (E.164), when the caller's number was known.
    pub number: Option<String>,
    /// The call's recording, where the voicemail is.
    pub recording_id: Option<String>,
    /// Where the voicemail starts and ends in that recording.
    pub voicemail_from_ms: Option<i64>,
    pub voicemail_to_ms: Option<i64>,
    /// `open` or `closed`.
    pub status: String,
    /// When the caller first joined the queue: open callbacks are listed in this
    /// order, the longest-waiting caller first.
    pub queued_at: Timestamp,
    pub created_at: Timestamp,
    pub closed_at: Option<Timestamp>,
    pub closed_by: Option<String>,
    pub outcome: Option<String>,
}

/// A callback as the voice channel records it.
pub struct NewCallback<'a> {
    pub kind: CallbackKind,
    pub request_id: &'a str,
    pub contact_id: &'a str,
    pub number: Option<&'a str>,
    pub recording_id: Option<&'a str>,
    /// Offsets in the recording (voicemail only).
    pub voicemail_ms: Option<(i64, i64)>,
    /// When the caller first joined the queue.
    pub queued_at: Timestamp,
}

const OPEN: &str = "open";
const CLOSED: &str = "closed";

const COLUMNS: &str = "c.id, c.kind, c.request_id, r.reference, c.contact_id, c.number, c.recording_id, \
     c.voicemail_from_ms, c.voicemail_to_ms, c.status, COALESCE(c.queued_at, c.created_at) AS queued_at, c.created_at, c.closed_at, c.closed_by, c.outcome";

impl Store {
    /// Records a callback and puts it on its request's timeline, in one transaction.
    pub async fn record_callback(&self, new: &NewCallback<'_>) -> StoreResult<String> {
        let id = new_id();
        let actor = Actor::Channel(Channel::Phone);
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO callbacks (id, request_id, contact_id, kind, number, recording_id, \
             voicemail_from_ms, voicemail_to_ms, status, queued_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&id)
        .bind(new.request_id)
        .bind(new.contact_id)
        .bind(new.kind.as_str())
        .bind(new.number)
        .bind(new.recording_id)
        .bind(new.voicemail_ms.map(|v| v.0))
        .bind(new.voicemail_ms.map(|v| v.1))
        .bind(OPEN)
        .bind(new.queued_at.millis())
        .bind(Timestamp::now().millis())
        .execute(&mut *tx)
        .await?;
        let body = match new.kind {
            CallbackKind::Voicemail => "the caller left a voicemail: call them back",
            CallbackKind::Callback => "the caller asked to be called back",
        };
        requests::append(
            &mut tx,
            new.request_id,
            &Event {
                kind: TimelineKind::Callback,
                actor: &actor,
                contact_id: Some(new.contact_id),
                body: Some(body),
                from: None,
                to: None,
                message_id: None,
            },
        )
        .await?;
        audit::record(&mut tx, &actor, Action::Create, Entity::Callback, &id, None).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Callbacks, oldest first, open ones only unless `all`; the read is audited
    /// (each carries a resident's number).
    pub async fn callbacks(&self, actor: &Actor, all: bool) -> StoreResult<Vec<Callback>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM callbacks c JOIN service_requests r ON r.id = c.request_id \
             WHERE ($1 OR c.status = $2) ORDER BY COALESCE(c.queued_at, c.created_at), c.id LIMIT 500"
        )))
        .bind(all)
        .bind(OPEN)
        .fetch_all(self.pool())
        .await?;
        let callbacks = rows
            .iter()
            .map(callback_of)
            .collect::<StoreResult<Vec<_>>>()?;
        self.audit(actor, Action::Read, Entity::Callback, "*", Some("list"))
            .await?;
        Ok(callbacks)
    }

    /// When the caller on `number` first joined a queue, if a callback to them is
    /// still open (the earliest, if several): ringing back, they keep that place.
    /// Not audited: it reads no more than the caller just told us, their number.
    pub async fn open_callback_queued_at(&self, number: &str) -> StoreResult<Option<Timestamp>> {
        let row = sqlx::query(
            "SELECT MIN(COALESCE(queued_at, created_at)) AS since FROM callbacks \
             WHERE number = $1 AND status = $2",
        )
        .bind(number)
        .bind(OPEN)
        .fetch_one(self.pool())
        .await?;
        Ok(row
            .try_get::<Option<i64>, _>("since")?
            .map(Timestamp::from_millis))
    }

    /// Closes an open callback with what staff did; `Conflict` if already closed.
    pub async fn close_callback(
        &self,
        actor: &Actor,
        id: &str,
        outcome: &str,
    ) -> StoreResult<Callback> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE callbacks SET status = $1, closed_at = $2, closed_by = $3, outcome = $4 \
             WHERE id = $5 AND status = $6",
        )
        .bind(CLOSED)
        .bind(Timestamp::now().millis())
        .bind(actor.label())
        .bind(outcome)
        .bind(id)
        .bind(OPEN)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM callbacks c JOIN service_requests r ON r.id = c.request_id WHERE c.id = $1"
        )))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(
                "the callback is already closed".into(),
            ));
        }
        let callback = callback_of(&row)?;
        let body = format!("callback closed: {outcome}");
        requests::append(
            &mut tx,
            &callback.request_id,
            &Event {
                kind: TimelineKind::Note,
                actor,
                contact_id: None,
                body: Some(&body),
                from: None,
                to: None,
                message_id: None,
            },
        )
        .await?;
        audit::record(
            &mut tx,
            actor,
            Action::Update,
            Entity::Callback,
            id,
            Some("closed"),
        )
        .await?;
        tx.commit().await?;
        Ok(callback)
    }
}

fn callback_of(r: &sqlx::any::AnyRow) -> StoreResult<Callback> {
    let kind: String = r.try_get("kind")?;
    Ok(Callback {
        id: r.try_get("id")?,
        kind: CallbackKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("callbacks.kind = {kind:?}")))?,
        request_id: r.try_get("request_id")?,
        reference: r.try_get("reference")?,
        contact_id: r.try_get("contact_id")?,
        number: r.try_get("number")?,
        recording_id: r.try_get("recording_id")?,
        voicemail_from_ms: r.try_get("voicemail_from_ms")?,
        voicemail_to_ms: r.try_get("voicemail_to_ms")?,
        status: r.try_get("status")?,
        queued_at: Timestamp::from_millis(r.try_get("queued_at")?),
        created_at: Timestamp::from_millis(r.try_get("created_at")?),
        closed_at: r
            .try_get::<Option<i64>, _>("closed_at")?
            .map(Timestamp::from_millis),
        closed_by: r.try_get("closed_by")?,
        outcome: r.try_get("outcome")?,
    })
}
