//! The append-only audit log: every read and write of a customer record or request,
//! who did it, when and from where. The database refuses UPDATE and DELETE on the
//! table (triggers in the migrations), so not even a bug here can rewrite history.

use serde::Serialize;
use sqlx::{AnyConnection, Row};
use utoipa::ToSchema;

use super::{StoreResult, new_id};
use crate::domain::{Actor, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    Create,
    Update,
    Merge,
    Search,
    Note,
    StatusChange,
    Intake,
    Download,
    LegalHold,
    Purge,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Create => "create",
            Action::Update => "update",
            Action::Merge => "merge",
            Action::Search => "search",
            Action::Note => "note",
            Action::StatusChange => "status_change",
            Action::Intake => "intake",
            Action::Download => "download",
            Action::LegalHold => "legal_hold",
            Action::Purge => "purge",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Customer,
    Request,
    Recording,
    StaffUser,
    Attachment,
    Advisor,
    Callback,
}

impl Entity {
    pub fn as_str(self) -> &'static str {
        match self {
            Entity::Customer => "customer",
            Entity::Request => "request",
            Entity::Recording => "recording",
            Entity::StaffUser => "staff_user",
            Entity::Attachment => "attachment",
            Entity::Advisor => "advisor",
            Entity::Callback => "callback",
        }
    }
}

/// Appends one entry. Runs on the caller's connection so that a write and its audit
/// entry commit together.
pub async fn record(
    conn: &mut AnyConnection,
    actor: &Actor,
    action: Action,
    entity: Entity,
    entity_id: &str,
    detail: Option<&str>,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO audit_log (id, at, actor, actor_role, source, action, entity, entity_id, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(new_id())
    .bind(Timestamp::now().millis())
    .bind(actor.label())
    .bind(actor.role().map(|r| r.as_str()))
    .bind(actor.source())
    .bind(action.as_str())
    .bind(entity.as_str())
    .bind(entity_id)
    .bind(detail)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Several entries by one actor, written in one statement: intake records a new
/// customer, a new request and the contact together, and each statement on SQLite
/// waits its turn at the one writer.
pub struct Batch<'a> {
    actor: &'a Actor,
    entries: Vec<(Action, Entity, String, Option<String>)>,
}

impl<'a> Batch<'a> {
    pub fn new(actor: &'a Actor) -> Self {
        Batch {
            actor,
            entries: Vec::new(),
        }
    }

    pub fn add(&mut self, action: Action, entity: Entity, entity_id: &str, detail: Option<&str>) {
        self.entries.push((
            action,
            entity,
            entity_id.to_string(),
            detail.map(str::to_string),
        ));
    }

    pub async fn write(self, conn: &mut AnyConnection) -> StoreResult<()> {
        if self.entries.is_empty() {
            return Ok(());
        }
        let rows: Vec<String> = (0..self.entries.len())
            .map(|i| {
                let b = i * 9;
                format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6,
                    b + 7,
                    b + 8,
                    b + 9
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO audit_log (id, at, actor, actor_role, source, action, entity, entity_id, detail) VALUES {}",
            rows.join(", ")
        );
        let now = Timestamp::now().millis();
        let (label, role, source) = (
            self.actor.label(),
            self.actor.role().map(|r| r.as_str()),
            self.actor.source(),
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (action, entity, entity_id, detail) in &self.entries {
            query = query
                .bind(new_id())
                .bind(now)
                .bind(label.clone())
                .bind(role)
                .bind(source)
                .bind(action.as_str())
                .bind(entity.as_str())
                .bind(entity_id.clone())
                .bind(detail.clone());
        }
        query.execute(&mut *conn).await?;
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: String,
    pub at: Timestamp,
    pub actor: String,
    pub actor_role: Option<String>,
    pub source: Option<String>,
    pub action: String,
    pub entity: String,
    pub entity_id: String,
    pub detail: Option<String>,
}

/// What an admin filters the audit log by.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub entity: Option<String>,
    pub entity_id: Option<String>,
    pub actor: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

pub async fn search(conn: &mut AnyConnection, q: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
    // NULL parameters switch a condition off, so there is one query string.
    let rows = sqlx::query(
        "SELECT id, at, actor, actor_role, source, action, entity, entity_id, detail FROM audit_log \
         WHERE ($1 IS NULL OR entity = $1) AND ($2 IS NULL OR entity_id = $2) \
           AND ($3 IS NULL OR actor = $3) \
         ORDER BY id DESC LIMIT $4 OFFSET $5",
    )
    .bind(q.entity.as_deref())
    .bind(q.entity_id.as_deref())
    .bind(q.actor.as_deref())
    .bind(q.limit)
    .bind(q.offset)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(AuditEntry {
                id: r.try_get("id")?,
                at: Timestamp::from_millis(r.try_get("at")?),
                actor: r.try_get("actor")?,
                actor_role: r.try_get("actor_role")?,
                source: r.try_get("source")?,
                action: r.try_get("action")?,
                entity: r.try_get("entity")?,
                entity_id: r.try_get("entity_id")?,
                detail: r.try_get("detail")?,
            })
        })
        .collect()
}
