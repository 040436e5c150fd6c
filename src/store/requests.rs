//! Service requests: numbering (the number behind each resident-facing reference),
//! the status life-cycle with its retention clock, notes, and the timeline.

use sqlx::{AnyConnection, Row};

use super::audit::{self, Action, Entity};
use super::services::{Service, active_service};
use super::{
    Store, StoreError, StoreResult, customers, flag, new_id, parsed, parsed_opt, timestamp_opt,
};
use crate::configuration::ServiceCode;
use crate::domain::request::{Contact, NewRequest, ServiceRequest, TimelineEvent, TimelineKind};
use crate::domain::{
    Actor, Channel, EmailAddress, PhoneNumber, Reference, RequestStatus, ShortText, Timestamp,
};

/// Filters for the request list; every given condition must hold.
#[derive(Debug, Clone, Default)]
pub struct RequestQuery {
    pub status: Option<RequestStatus>,
    pub service: Option<ServiceCode>,
    pub customer_id: Option<String>,
    pub phone: Option<PhoneNumber>,
    pub email: Option<EmailAddress>,
    pub limit: i64,
    pub offset: i64,
}

/// Whether the reader may see special category (health) data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialCategoryAccess {
    Allowed,
    Denied,
}

/// What intake or staff supply to open a request.
pub(crate) struct Opening<'a> {
    pub customer_id: Option<&'a str>,
    pub service: &'a Service,
    pub summary: &'a ShortText,
    pub special_category: bool,
    pub identity_review: bool,
    pub opened_via: Channel,
}

const REQUEST_COLUMNS: &str = "id, number, customer_id, service_code, status, summary, special_category, \
     identity_review, opened_via, retention_days, retain_until, closed_at, created_at, updated_at";

impl Store {
    /// Refuses special category data to those without access, recording the refusal
    /// (in its own transaction, so the refusal stays on record).
    pub(crate) async fn check_access(
        &self,
        actor: &Actor,
        request: &ServiceRequest,
        access: SpecialCategoryAccess,
    ) -> StoreResult<()> {
        if request.special_category && access == SpecialCategoryAccess::Denied {
            let why = Some("refused: special category");
            self.audit(actor, Action::Read, Entity::Request, &request.id, why)
                .await?;
            return Err(StoreError::Restricted);
        }
        Ok(())
    }

    /// Before a change: the request exists and the actor may see it. Checked before
    /// the write transaction, since a request's category never changes after opening.
    pub(crate) async fn authorise_change(
        &self,
        actor: &Actor,
        reference: Reference,
        access: SpecialCategoryAccess,
    ) -> StoreResult<()> {
        let request = read_by_reference(&mut *self.pool().acquire().await?, reference).await?;
        self.check_access(actor, &request, access).await
    }

    /// Whether a request has this reference (for a caller keying one).
    pub async fn request_exists(&self, reference: Reference) -> StoreResult<bool> {
        let row = sqlx::query("SELECT id FROM service_requests WHERE number = $1")
            .bind(reference.number())
            .fetch_optional(self.pool())
            .await?;
        Ok(row.is_some())
    }

    /// Reads a request by reference and audits the read (and a refused read).
    pub async fn get_request(
        &self,
        actor: &Actor,
        reference: Reference,
        access: SpecialCategoryAccess,
    ) -> StoreResult<ServiceRequest> {
        let mut conn = self.pool().acquire().await?;
        let request = read_by_reference(&mut conn, reference).await?;
        self.check_access(actor, &request, access).await?;
        self.audit(actor, Action::Read, Entity::Request, &request.id, None)
            .await?;
        Ok(request)
    }

    /// A page of requests and the total matching, each returned request audited.
    pub async fn list_requests(
        &self,
        actor: &Actor,
        q: &RequestQuery,
        access: SpecialCategoryAccess,
    ) -> StoreResult<(Vec<ServiceRequest>, i64)> {
        const FILTER: &str = "WHERE ($1 IS NULL OR r.status = $1) AND ($2 IS NULL OR r.service_code = $2) \
             AND ($3 IS NULL OR r.customer_id = $3) \
             AND ($4 IS NULL OR r.customer_id IN (SELECT p.customer_id FROM customer_phones p WHERE p.e164 = $4)) \
             AND ($5 IS NULL OR r.customer_id IN (SELECT e.customer_id FROM customer_emails e WHERE e.address = $5)) \
             AND ($6 = 1 OR r.special_category = 0)";
        let mut conn = self.pool().acquire().await?;
        let bind = |sql: String| {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(q.status.map(|s| s.as_str()))
                .bind(q.service.as_ref().map(|s| s.as_str().to_string()))
                .bind(q.customer_id.clone())
                .bind(q.phone.as_ref().map(|p| p.as_str().to_string()))
                .bind(q.email.as_ref().map(|e| e.as_str().to_string()))
                .bind(i64::from(access == SpecialCategoryAccess::Allowed))
        };
        let total: i64 = bind(format!(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM service_requests r {FILTER}"
        ))
        .fetch_one(&mut *conn)
        .await?
        .try_get("n")?;
        let rows = bind(format!(
            "SELECT {REQUEST_COLUMNS} FROM service_requests r {FILTER} \
             ORDER BY r.created_at DESC, r.id DESC LIMIT $7 OFFSET $8"
        ))
        .bind(q.limit)
        .bind(q.offset)
        .fetch_all(&mut *conn)
        .await?;
        let requests = rows.iter().map(from_row).collect::<StoreResult<Vec<_>>>()?;
        let mut tx = self.begin().await?;
        for r in &requests {
            audit::record(&mut tx, actor, Action::Search, Entity::Request, &r.id, None).await?;
        }
        tx.commit().await?;
        Ok((requests, total))
    }

    pub async fn add_note(
        &self,
        actor: &Actor,
        reference: Reference,
        body: &str,
        access: SpecialCategoryAccess,
    ) -> StoreResult<TimelineEvent> {
        self.authorise_change(actor, reference, access).await?;
        let mut tx = self.begin().await?;
        let id = lock(&mut tx, reference).await?;
        let event_id = append(
            &mut tx,
            &id,
            &Event {
                kind: TimelineKind::Note,
                actor,
                contact_id: None,
                body: Some(body),
                from: None,
                to: None,
                message_id: None,
            },
        )
        .await?;
        audit::record(&mut tx, actor, Action::Note, Entity::Request, &id, None).await?;
        let event = timeline_of(&mut tx, &id)
            .await?
            .into_iter()
            .find(|e| e.id == event_id)
            .ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        Ok(event)
    }

    /// Gives a request whose sender intake could not identify its customer.
    pub async fn assign_customer(
        &self,
        actor: &Actor,
        reference: Reference,
        customer_id: &str,
        access: SpecialCategoryAccess,
    ) -> StoreResult<ServiceRequest> {
        self.authorise_change(actor, reference, access).await?;
        let mut tx = self.begin().await?;
        let id = lock(&mut tx, reference).await?;
        let customer = customers::read(&mut tx, customer_id).await?;
        if let Some(to) = customer.merged_into {
            return Err(StoreError::Conflict(format!(
                "customer was merged into {to}"
            )));
        }
        sqlx::query(
            "UPDATE service_requests SET customer_id = $1, identity_review = 0, updated_at = $2 WHERE id = $3",
        )
        .bind(customer_id)
        .bind(Timestamp::now().millis())
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        let body = format!("customer {customer_id}");
        append(
            &mut tx,
            &id,
            &Event {
                kind: TimelineKind::CustomerAssigned,
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
            Entity::Request,
            &id,
            Some(&body),
        )
        .await?;
        let updated = read(&mut tx, &id).await?;
        tx.commit().await?;
        Ok(updated)
    }

    pub async fn timeline(
        &self,
        actor: &Actor,
        reference: Reference,
        access: SpecialCategoryAccess,
    ) -> StoreResult<Vec<TimelineEvent>> {
        let mut conn = self.pool().acquire().await?;
        let request = read_by_reference(&mut conn, reference).await?;
        self.check_access(actor, &request, access).await?;
        let events = timeline_of(&mut conn, &request.id).await?;
        self.audit(
            actor,
            Action::Read,
            Entity::Request,
            &request.id,
            Some("timeline"),
        )
        .await?;
        Ok(events)
    }
}

/// Opens a request on the caller's transaction: takes the next number, writes the row
/// and its "opened" timeline event.
pub(crate) async fn open(
    conn: &mut AnyConnection,
    actor: &Actor,
    o: &Opening<'_>,
) -> StoreResult<ServiceRequest> {
    let number: i64 = sqlx::query("INSERT INTO request_numbers DEFAULT VALUES RETURNING n")
        .fetch_one(&mut *conn)
        .await?
        .try_get("n")?;
    let reference = Reference::from_number(number);
    let id = new_id();
    let now = Timestamp::now().millis();
    sqlx::query(
        "INSERT INTO service_requests (id, number, reference, customer_id, service_code, status, summary, \
         special_category, identity_review, opened_via, retention_days, created_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)",
    )
    .bind(&id)
    .bind(number)
    .bind(reference.to_string())
    .bind(o.customer_id)
    .bind(o.service.code.as_str())
    .bind(RequestStatus::Open.as_str())
    .bind(o.summary.as_str())
    .bind(i64::from(o.special_category || o.service.special_category))
    .bind(i64::from(o.identity_review))
    .bind(o.opened_via.as_str())
    .bind(o.service.retention_days)
    .bind(actor.label())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    append(
        conn,
        &id,
        &Event {
            kind: TimelineKind::Opened,
            actor,
            contact_id: None,
            body: Some(o.summary.as_str()),
            from: None,
            to: None,
            message_id: None,
        },
    )
    .await?;
    read(conn, &id).await
}

/// Takes the request's row lock; returns its id.
/// Opens a request for a customer, in the caller's transaction (staff opening one).
pub(crate) async fn create(
    tx: &mut AnyConnection,
    actor: &Actor,
    new: &NewRequest,
) -> StoreResult<ServiceRequest> {
    // The customer's lock also keeps a concurrent merge from moving it under us.
    customers::lock(tx, &new.customer_id).await?;
    let customer = customers::read(tx, &new.customer_id).await?;
    if let Some(to) = customer.merged_into {
        return Err(StoreError::Conflict(format!(
            "customer was merged into {to}"
        )));
    }
    let service = active_service(tx, &new.service)
        .await?
        .ok_or_else(|| StoreError::Conflict(format!("unknown service {}", new.service)))?;
    let request = open(
        tx,
        actor,
        &Opening {
            customer_id: Some(&new.customer_id),
            service: &service,
            summary: &new.summary,
            special_category: new.special_category,
            identity_review: false,
            opened_via: new.opened_via,
        },
    )
    .await?;
    audit::record(
        tx,
        actor,
        Action::Create,
        Entity::Request,
        &request.id,
        None,
    )
    .await?;
    Ok(request)
}

/// Moves a request along its life-cycle in the caller's transaction: (before,
/// after). Closing starts the retention clock; reopening stops it. A move the
/// life-cycle does not allow is a `Conflict`. The caller checked the actor may.
pub(crate) async fn change_status(
    tx: &mut AnyConnection,
    actor: &Actor,
    reference: Reference,
    to: RequestStatus,
    note: Option<&str>,
) -> StoreResult<(ServiceRequest, ServiceRequest)> {
    let id = lock(tx, reference).await?;
    let request = read(tx, &id).await?;
    if !request.status.may_become(to) {
        return Err(StoreError::Conflict(format!(
            "a {} request cannot become {}",
            request.status, to
        )));
    }
    let now = Timestamp::now();
    let (closed_at, retain_until) = if to.is_closed() {
        (
            Some(now.millis()),
            Some(now.plus_days(request.retention_days).millis()),
        )
    } else {
        (None, None)
    };
    sqlx::query(
        "UPDATE service_requests SET status = $1, closed_at = $2, retain_until = $3, updated_at = $4 \
         WHERE id = $5",
    )
    .bind(to.as_str())
    .bind(closed_at)
    .bind(retain_until)
    .bind(now.millis())
    .bind(&id)
    .execute(&mut *tx)
    .await?;
    append(
        tx,
        &id,
        &Event {
            kind: TimelineKind::StatusChange,
            actor,
            contact_id: None,
            body: note,
            from: Some(request.status),
            to: Some(to),
            message_id: None,
        },
    )
    .await?;
    let detail = format!("{} -> {}", request.status, to);
    audit::record(
        tx,
        actor,
        Action::StatusChange,
        Entity::Request,
        &id,
        Some(&detail),
    )
    .await?;
    let updated = read(tx, &id).await?;
    Ok((request, updated))
}

pub(crate) async fn lock(conn: &mut AnyConnection, reference: Reference) -> StoreResult<String> {
    let row = sqlx::query(
        "UPDATE service_requests SET version = version + 1 WHERE number = $1 RETURNING id",
    )
    .bind(reference.number())
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    Ok(row.try_get("id")?)
}

pub(crate) struct Event<'a> {
    pub kind: TimelineKind,
    pub actor: &'a Actor,
    pub contact_id: Option<&'a str>,
    pub body: Option<&'a str>,
    pub from: Option<RequestStatus>,
    pub to: Option<RequestStatus>,
    /// The message this event shows (sent messages are on the timeline as themselves).
    pub message_id: Option<&'a str>,
}

pub(crate) async fn append(
    conn: &mut AnyConnection,
    request_id: &str,
    e: &Event<'_>,
) -> StoreResult<String> {
    let id = new_id();
    let now = Timestamp::now().millis();
    sqlx::query(
        "INSERT INTO timeline_events (id, request_id, kind, at, actor, contact_id, body, from_status, to_status, message_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&id)
    .bind(request_id)
    .bind(e.kind.as_str())
    .bind(now)
    .bind(e.actor.label())
    .bind(e.contact_id)
    .bind(e.body)
    .bind(e.from.map(|s| s.as_str()))
    .bind(e.to.map(|s| s.as_str()))
    .bind(e.message_id)
    .execute(&mut *conn)
    .await?;
    // The request's updated_at follows (a trigger: migration 0011).
    Ok(id)
}

pub(crate) async fn read(conn: &mut AnyConnection, id: &str) -> StoreResult<ServiceRequest> {
    let sql = format!("SELECT {REQUEST_COLUMNS} FROM service_requests WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
    from_row(&row)
}

pub(crate) async fn read_by_reference(
    conn: &mut AnyConnection,
    reference: Reference,
) -> StoreResult<ServiceRequest> {
    let sql = format!("SELECT {REQUEST_COLUMNS} FROM service_requests WHERE number = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(reference.number())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
    from_row(&row)
}

fn from_row(r: &sqlx::any::AnyRow) -> StoreResult<ServiceRequest> {
    Ok(ServiceRequest {
        id: r.try_get("id")?,
        reference: Reference::from_number(r.try_get("number")?),
        customer_id: r.try_get("customer_id")?,
        service: parsed(r, "service_code", ServiceCode::parse)?,
        status: parsed(r, "status", str::parse)?,
        summary: r.try_get("summary")?,
        special_category: flag(r, "special_category")?,
        identity_review: flag(r, "identity_review")?,
        opened_via: parsed(r, "opened_via", str::parse)?,
        created_at: Timestamp::from_millis(r.try_get("created_at")?),
        updated_at: Timestamp::from_millis(r.try_get("updated_at")?),
        closed_at: timestamp_opt(r, "closed_at")?,
        retention_days: r.try_get("retention_days")?,
        retain_until: timestamp_opt(r, "retain_until")?,
    })
}

async fn timeline_of(
    conn: &mut AnyConnection,
    request_id: &str,
) -> StoreResult<Vec<TimelineEvent>> {
    let rows = sqlx::query(
        "SELECT t.id, t.kind, t.at, t.actor, t.body, t.from_status, t.to_status, t.contact_id, t.message_id \
         FROM timeline_events t WHERE t.request_id = $1 ORDER BY t.at, t.id",
    )
    .bind(request_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut events = Vec::with_capacity(rows.len());
    for r in &rows {
        let contact_id: Option<String> = r.try_get("contact_id")?;
        let contact: Option<Contact> = match contact_id {
            Some(cid) => Some(super::contacts::read(conn, &cid).await?),
            None => None,
        };
        let message_id: Option<String> = r.try_get("message_id")?;
        let message = match message_id {
            Some(mid) => Some(super::messages::read(conn, &mid).await?),
            None => None,
        };
        events.push(TimelineEvent {
            id: r.try_get("id")?,
            kind: parsed(r, "kind", |s| TimelineKind::parse(s).ok_or("unknown kind"))?,
            at: Timestamp::from_millis(r.try_get("at")?),
            actor: r.try_get("actor")?,
            body: r.try_get("body")?,
            from_status: parsed_opt(r, "from_status", str::parse)?,
            to_status: parsed_opt(r, "to_status", str::parse)?,
            contact,
            message,
        });
    }
    Ok(events)
}

/// Whether `sender` (an E.164 number or a normalised email address) belongs to the
/// request's resident, or to a representative of theirs whose authority has not run
/// out on `now`'s date.
/// Flags a request for staff: someone who is not its resident added to it.
pub(crate) async fn hold_for_review(conn: &mut AnyConnection, request_id: &str) -> StoreResult<()> {
    sqlx::query("UPDATE service_requests SET identity_review = 1, updated_at = $1 WHERE id = $2")
        .bind(Timestamp::now().millis())
        .bind(request_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(crate) async fn sender_owns(
    conn: &mut AnyConnection,
    request_id: &str,
    sender: &str,
    now: Timestamp,
) -> StoreResult<bool> {
    // Dates are stored as YYYY-MM-DD, so text order is date order.
    let today = now.utc_date().to_string();
    let row = sqlx::query(
        "SELECT r.id FROM service_requests r WHERE r.id = $1 AND r.customer_id IS NOT NULL AND ( \
           EXISTS (SELECT 1 FROM customer_phones p WHERE p.customer_id = r.customer_id AND p.e164 = $2) \
           OR EXISTS (SELECT 1 FROM customer_emails e WHERE e.customer_id = r.customer_id AND e.address = $2) \
           OR EXISTS (SELECT 1 FROM customer_representatives rep WHERE rep.customer_id = r.customer_id \
                      AND (rep.phone = $2 OR rep.email = $2) AND (rep.valid_until IS NULL OR rep.valid_until >= $3)))",
    )
    .bind(request_id)
    .bind(sender)
    .bind(today)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.is_some())
}
