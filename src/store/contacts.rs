//! Inbound contacts. A contact is claimed by inserting its (channel, external id)
//! first thing in intake's transaction: the unique key makes a redelivery, or a
//! simultaneous second delivery, find the first one instead of making another.

use sqlx::{AnyConnection, Row};

use super::audit::{Action, Entity};
use super::{Store, StoreError, StoreResult, customers, new_id, parsed};
use crate::domain::request::Contact;
use crate::domain::{Actor, Channel, IdentityMatch, Timestamp};

/// The parts of a contact known before intake has matched it.
pub(crate) struct Arrival<'a> {
    pub channel: Channel,
    pub external_id: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub received_at: Timestamp,
    pub content: &'a str,
}

/// Inserts the contact unless (channel, external id) is already stored. Returns the
/// new contact's id, or `None` for a redelivery.
pub(crate) async fn claim(
    conn: &mut AnyConnection,
    a: &Arrival<'_>,
) -> StoreResult<Option<String>> {
    let row = sqlx::query(
        "INSERT INTO contacts (id, channel, external_id, from_address, to_address, received_at, content, \
         identity, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8) \
         ON CONFLICT (channel, external_id) DO NOTHING RETURNING id",
    )
    .bind(new_id())
    .bind(a.channel.as_str())
    .bind(a.external_id)
    .bind(a.from)
    .bind(a.to)
    .bind(a.received_at.millis())
    .bind(a.content)
    .bind(Timestamp::now().millis())
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| Ok(r.try_get("id")?)).transpose()
}

/// Records what intake decided about a claimed contact.
pub(crate) async fn settle(
    conn: &mut AnyConnection,
    contact_id: &str,
    customer_id: Option<&str>,
    request_id: &str,
    identity: IdentityMatch,
    candidates: &[String],
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE contacts SET customer_id = $1, request_id = $2, identity = $3, candidate_customer_ids = $4 \
         WHERE id = $5",
    )
    .bind(customer_id)
    .bind(request_id)
    .bind(identity.as_str())
    .bind(candidates.join(","))
    .bind(contact_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(crate) async fn find_by_external(
    conn: &mut AnyConnection,
    channel: Channel,
    external_id: &str,
) -> StoreResult<Option<Contact>> {
    let row = sqlx::query("SELECT id FROM contacts WHERE channel = $1 AND external_id = $2")
        .bind(channel.as_str())
        .bind(external_id)
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        Some(r) => Ok(Some(read(conn, &r.try_get::<String, _>("id")?).await?)),
        None => Ok(None),
    }
}

pub(crate) async fn read(conn: &mut AnyConnection, id: &str) -> StoreResult<Contact> {
    let r = sqlx::query(
        "SELECT id, channel, external_id, from_address, to_address, received_at, content, customer_id, \
         request_id, identity FROM contacts WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    from_row(&r)
}

fn from_row(r: &sqlx::any::AnyRow) -> StoreResult<Contact> {
    Ok(Contact {
        id: r.try_get("id")?,
        channel: parsed(r, "channel", str::parse)?,
        external_id: r.try_get("external_id")?,
        from: r.try_get("from_address")?,
        to: r.try_get("to_address")?,
        received_at: Timestamp::from_millis(r.try_get("received_at")?),
        content: r.try_get("content")?,
        customer_id: r.try_get("customer_id")?,
        request_id: r.try_get("request_id")?,
        identity: parsed(r, "identity", str::parse)?,
    })
}

impl Store {
    /// A resident's contact history, newest first (contacts on special category
    /// requests are left out for those without access to them).
    pub async fn customer_contacts(
        &self,
        actor: &Actor,
        customer_id: &str,
        include_special_category: bool,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Vec<Contact>> {
        let mut conn = self.pool().acquire().await?;
        customers::exists(&mut conn, customer_id).await?;
        let rows = sqlx::query(
            "SELECT c.id, c.channel, c.external_id, c.from_address, c.to_address, c.received_at, c.content, \
             c.customer_id, c.request_id, c.identity FROM contacts c \
             LEFT JOIN service_requests r ON r.id = c.request_id \
             WHERE c.customer_id = $1 AND ($2 = 1 OR COALESCE(r.special_category, 0) = 0) \
             ORDER BY c.received_at DESC, c.id DESC LIMIT $3 OFFSET $4",
        )
        .bind(customer_id)
        .bind(i64::from(include_special_category))
        .bind(limit)
        .bind(offset)
        .fetch_all(&mut *conn)
        .await?;
        self.audit(
            actor,
            Action::Read,
            Entity::Customer,
            customer_id,
            Some("contacts"),
        )
        .await?;
        rows.iter().map(from_row).collect()
    }
}
