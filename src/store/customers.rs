//! The central customer record: one row per resident plus its lists (phones, emails,
//! addresses, representatives), consents kept as an append-only history, and a
//! history row for every field that changes.
//!
//! Every change takes the record's row lock first (`lock`), so concurrent edits queue
//! and each history row's "old value" is the value it actually replaced.

use serde_json::Value;
use sqlx::{AnyConnection, Row};

use super::audit::{self, Action, Entity};
use super::{Store, StoreError, StoreResult, new_id, parsed, parsed_opt};
use crate::configuration::ServiceCode;
use crate::domain::customer::{
    Address, Consent, ConsentChange, Customer, CustomerDetails, HistoryEntry, Representative, Uprn,
};
use crate::domain::text::{LongText, ShortText};
use crate::domain::{Actor, CalendarDate, EmailAddress, PhoneNumber, Postcode, Timestamp};

/// What staff search the record by; every given condition must hold.
#[derive(Debug, Clone, Default)]
pub struct CustomerQuery {
    /// Matches the start of given name, family name or "given family".
    pub name: Option<String>,
    pub phone: Option<PhoneNumber>,
    pub email: Option<EmailAddress>,
    pub postcode: Option<Postcode>,
    pub limit: i64,
    pub offset: i64,
}

/// Why an update was not made: the store failed, or the caller's edit refused the
/// current record.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError<E> {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("update rejected")]
    Rejected(E),
}

/// Tables whose rows follow a resident when their duplicate record is merged into
/// another: everything that happened to or for them.
pub const MOVED_ON_MERGE: [&str; 5] = [
    "consents",
    "service_requests",
    "contacts",
    "messages",
    "subscriptions",
];

/// Tables whose `customer_id` rows stay with the merged-away record: its own details
/// (copied into the survivor) and its history, which say what that record was.
/// A test checks these two lists against the schema, so a new table cannot be missed.
pub const KEPT_ON_MERGE: [&str; 5] = [
    "customer_phones",
    "customer_emails",
    "customer_addresses",
    "customer_representatives",
    "customer_history",
];

impl Store {
    pub async fn create_customer(
        &self,
        actor: &Actor,
        details: &CustomerDetails,
    ) -> StoreResult<Customer> {
        let mut tx = self.begin().await?;
        let id = insert(&mut tx, actor, details).await?;
        audit::record(&mut tx, actor, Action::Create, Entity::Customer, &id, None).await?;
        let customer = read(&mut tx, &id).await?;
        tx.commit().await?;
        Ok(customer)
    }

    /// Reads a record (merged ones too: they say where they went) and audits the read.
    pub async fn get_customer(&self, actor: &Actor, id: &str) -> StoreResult<Customer> {
        let customer = read(&mut *self.pool().acquire().await?, id).await?;
        self.audit(actor, Action::Read, Entity::Customer, id, None)
            .await?;
        Ok(customer)
    }

    /// Applies `edit` to the current details under the record's lock, keeps history
    /// for each changed field and audits the write. `edit` may refuse.
    pub async fn update_customer<E>(
        &self,
        actor: &Actor,
        id: &str,
        edit: impl FnOnce(CustomerDetails) -> Result<CustomerDetails, E>,
    ) -> Result<Customer, UpdateError<E>> {
        let mut tx = self.begin().await?;
        lock(&mut tx, id).await?;
        let before = read(&mut tx, id).await?;
        if let Some(to) = &before.merged_into {
            return Err(StoreError::Conflict(format!("this record was merged into {to}")).into());
        }
        let after = edit(before.details.clone()).map_err(UpdateError::Rejected)?;
        let changed = record_changes(&mut tx, actor, id, &before.details, &after).await?;
        if !changed.is_empty() {
            write_details(&mut tx, id, &after).await?;
            let detail = format!("fields: {}", changed.join(", "));
            audit::record(
                &mut tx,
                actor,
                Action::Update,
                Entity::Customer,
                id,
                Some(&detail),
            )
            .await?;
        }
        let customer = read(&mut tx, id).await?;
        tx.commit().await?;
        Ok(customer)
    }

    pub async fn record_consent(
        &self,
        actor: &Actor,
        id: &str,
        change: &ConsentChange,
    ) -> StoreResult<Customer> {
        let mut tx = self.begin().await?;
        lock(&mut tx, id).await?;
        let before = current_consents(&mut tx, id).await?;
        insert_consent(&mut tx, actor, id, change).await?;
        let after = current_consents(&mut tx, id).await?;
        // The consents table is itself the full record of when and how; the history
        // row puts the change beside every other change to the record.
        let of = |list: &[Consent]| {
            list.iter()
                .find(|c| c.purpose == change.purpose)
                .map(|c| serde_json::to_value(c).expect("consent serialises"))
        };
        let field = format!("consents.{}", change.purpose);
        let now = Timestamp::now().millis();
        let label = actor.label();
        insert_history(
            &mut tx,
            id,
            &field,
            of(&before).as_ref(),
            of(&after).as_ref(),
            &label,
            now,
        )
        .await?;
        let detail = format!(
            "consent {} {}",
            change.purpose,
            if change.granted { "given" } else { "withdrawn" }
        );
        audit::record(
            &mut tx,
            actor,
            Action::Update,
            Entity::Customer,
            id,
            Some(&detail),
        )
        .await?;
        let customer = read(&mut tx, id).await?;
        tx.commit().await?;
        Ok(customer)
    }

    pub async fn customer_history(
        &self,
        actor: &Actor,
        id: &str,
    ) -> StoreResult<Vec<HistoryEntry>> {
        let mut conn = self.pool().acquire().await?;
        exists(&mut conn, id).await?;
        let rows = sqlx::query(
            "SELECT field, old_value, new_value, changed_by, changed_at FROM customer_history \
             WHERE customer_id = $1 ORDER BY changed_at, id",
        )
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
        self.audit(actor, Action::Read, Entity::Customer, id, Some("history"))
            .await?;
        let json = |s: Option<String>| {
            s.map(|s| serde_json::from_str(&s).unwrap_or(Value::String(s)))
                .unwrap_or(Value::Null)
        };
        rows.into_iter()
            .map(|r| {
                Ok(HistoryEntry {
                    field: r.try_get("field")?,
                    old_value: json(r.try_get("old_value")?),
                    new_value: json(r.try_get("new_value")?),
                    changed_by: r.try_get("changed_by")?,
                    changed_at: Timestamp::from_millis(r.try_get("changed_at")?),
                })
            })
            .collect()
    }

    /// Live (unmerged) records matching every condition, each read audited.
    pub async fn search_customers(
        &self,
        actor: &Actor,
        q: &CustomerQuery,
    ) -> StoreResult<Vec<Customer>> {
        let mut conn = self.pool().acquire().await?;
        let name = q
            .name
            .as_ref()
            .map(|n| format!("{}%", escape_like(&n.to_lowercase())));
        let rows = sqlx::query(
            "SELECT c.id FROM customers c WHERE c.merged_into IS NULL \
             AND ($1 IS NULL OR c.name_key LIKE $1 ESCAPE '\\' \
                  OR LOWER(COALESCE(c.family_name, '')) LIKE $1 ESCAPE '\\') \
             AND ($2 IS NULL OR EXISTS (SELECT 1 FROM customer_phones p WHERE p.customer_id = c.id AND p.e164 = $2)) \
             AND ($3 IS NULL OR EXISTS (SELECT 1 FROM customer_emails e WHERE e.customer_id = c.id AND e.address = $3)) \
             AND ($4 IS NULL OR EXISTS (SELECT 1 FROM customer_addresses a WHERE a.customer_id = c.id AND a.postcode = $4)) \
             ORDER BY c.name_key, c.id LIMIT $5 OFFSET $6",
        )
        .bind(name)
        .bind(q.phone.as_ref().map(PhoneNumber::as_str))
        .bind(q.email.as_ref().map(EmailAddress::as_str))
        .bind(q.postcode.as_ref().map(Postcode::as_str))
        .bind(q.limit)
        .bind(q.offset)
        .fetch_all(&mut *conn)
        .await?;
        let mut found = Vec::with_capacity(rows.len());
        for r in rows {
            let id: String = r.try_get("id")?;
            found.push(read(&mut conn, &id).await?);
        }
        let mut tx = self.begin().await?;
        for c in &found {
            audit::record(
                &mut tx,
                actor,
                Action::Search,
                Entity::Customer,
                &c.id,
                None,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(found)
    }

    /// Merges `duplicate` into `survivor`: the survivor keeps its own fields and gains
    /// the duplicate's phones, emails, addresses and representatives; consents,
    /// requests and contacts move over; the duplicate is kept, pointing at the
    /// survivor, so that nothing that named it is left dangling.
    pub async fn merge_customers(
        &self,
        actor: &Actor,
        survivor: &str,
        duplicate: &str,
    ) -> StoreResult<Customer> {
        if survivor == duplicate {
            return Err(StoreError::Conflict(
                "a record cannot be merged into itself".into(),
            ));
        }
        let mut tx = self.begin().await?;
        // Lock in a fixed order so two opposite merges cannot deadlock.
        let (first, second) = if survivor < duplicate {
            (survivor, duplicate)
        } else {
            (duplicate, survivor)
        };
        lock(&mut tx, first).await?;
        lock(&mut tx, second).await?;
        let keep = read(&mut tx, survivor).await?;
        let gone = read(&mut tx, duplicate).await?;
        if keep.merged_into.is_some() || gone.merged_into.is_some() {
            return Err(StoreError::Conflict(
                "one of these records has already been merged".into(),
            ));
        }
        let mut merged = keep.details.clone();
        merged.phones.extend(gone.details.phones.iter().cloned());
        merged.emails.extend(gone.details.emails.iter().cloned());
        merged
            .addresses
            .extend(gone.details.addresses.iter().cloned());
        merged
            .representatives
            .extend(gone.details.representatives.iter().cloned());
        for (mine, theirs) in [
            (&mut merged.title, &gone.details.title),
            (&mut merged.given_name, &gone.details.given_name),
            (&mut merged.family_name, &gone.details.family_name),
            (&mut merged.language, &gone.details.language),
        ] {
            if mine.is_none() {
                mine.clone_from(theirs);
            }
        }
        if merged.date_of_birth.is_none() {
            merged.date_of_birth = gone.details.date_of_birth;
        }
        if merged.preferred_channel.is_none() {
            merged.preferred_channel = gone.details.preferred_channel;
        }
        if merged.accessibility_needs.is_none() {
            merged
                .accessibility_needs
                .clone_from(&gone.details.accessibility_needs);
        }
        let merged = merged.normalise().map_err(|e| {
            StoreError::Conflict(format!("the merged record would be too large: {e}"))
        })?;
        record_changes(&mut tx, actor, survivor, &keep.details, &merged).await?;
        write_details(&mut tx, survivor, &merged).await?;
        for table in MOVED_ON_MERGE {
            let sql = format!("UPDATE {table} SET customer_id = $1 WHERE customer_id = $2");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(survivor)
                .bind(duplicate)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("UPDATE customers SET merged_into = $1, updated_at = $2 WHERE id = $3")
            .bind(survivor)
            .bind(Timestamp::now().millis())
            .bind(duplicate)
            .execute(&mut *tx)
            .await?;
        let now = Timestamp::now().millis();
        for (on, field, value) in [
            (survivor, "merged_from", duplicate),
            (duplicate, "merged_into", survivor),
        ] {
            insert_history(
                &mut tx,
                on,
                field,
                None,
                Some(&Value::from(value)),
                &actor.label(),
                now,
            )
            .await?;
        }
        let detail = format!("merged {duplicate} into {survivor}");
        audit::record(
            &mut tx,
            actor,
            Action::Merge,
            Entity::Customer,
            survivor,
            Some(&detail),
        )
        .await?;
        audit::record(
            &mut tx,
            actor,
            Action::Merge,
            Entity::Customer,
            duplicate,
            Some(&detail),
        )
        .await?;
        let customer = read(&mut tx, survivor).await?;
        tx.commit().await?;
        Ok(customer)
    }
}

/// Creates a record and its "created" history row on the caller's transaction.
pub(crate) async fn insert(
    conn: &mut AnyConnection,
    actor: &Actor,
    details: &CustomerDetails,
) -> StoreResult<String> {
    let id = new_id();
    let now = Timestamp::now().millis();
    let d = details;
    let text = |t: &Option<ShortText>| t.as_ref().map(|t| t.as_str().to_string());
    sqlx::query(
        "INSERT INTO customers (id, title, given_name, family_name, name_key, date_of_birth, \
         preferred_channel, language, accessibility_needs, version, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, $10)",
    )
    .bind(&id)
    .bind(text(&d.title))
    .bind(text(&d.given_name))
    .bind(text(&d.family_name))
    .bind(d.name_key())
    .bind(d.date_of_birth.map(|x| x.to_string()))
    .bind(d.preferred_channel.map(|c| c.as_str()))
    .bind(text(&d.language))
    .bind(d.accessibility_needs.as_ref().map(LongText::as_str))
    .bind(now)
    .execute(&mut *conn)
    .await?;
    // A new record has no lists to clear.
    insert_lists(conn, &id, details).await?;
    let snapshot = serde_json::to_value(details).expect("details serialise");
    insert_history(
        conn,
        &id,
        "created",
        None,
        Some(&snapshot),
        &actor.label(),
        now,
    )
    .await?;
    Ok(id)
}

/// Takes the record's row lock for the rest of the transaction (a write, so SQLite
/// takes its write lock here too). Unknown ids are `NotFound`.
pub(crate) async fn lock(conn: &mut AnyConnection, id: &str) -> StoreResult<()> {
    let done = sqlx::query("UPDATE customers SET version = version + 1 WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub(crate) async fn exists(conn: &mut AnyConnection, id: &str) -> StoreResult<()> {
    sqlx::query("SELECT id FROM customers WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .map(|_| ())
        .ok_or(StoreError::NotFound)
}

/// The ids of live records holding this phone number (E.164 exact match).
pub(crate) async fn ids_by_phone(
    conn: &mut AnyConnection,
    phone: &PhoneNumber,
) -> StoreResult<Vec<String>> {
    ids_by(
        conn,
        "SELECT DISTINCT c.id FROM customers c JOIN customer_phones p ON p.customer_id = c.id \
         WHERE p.e164 = $1 AND c.merged_into IS NULL ORDER BY c.id",
        phone.as_str(),
    )
    .await
}

/// The ids of live records holding this (normalised) email address.
pub(crate) async fn ids_by_email(
    conn: &mut AnyConnection,
    email: &EmailAddress,
) -> StoreResult<Vec<String>> {
    ids_by(
        conn,
        "SELECT DISTINCT c.id FROM customers c JOIN customer_emails e ON e.customer_id = c.id \
         WHERE e.address = $1 AND c.merged_into IS NULL ORDER BY c.id",
        email.as_str(),
    )
    .await
}

async fn ids_by(
    conn: &mut AnyConnection,
    sql: &'static str,
    key: &str,
) -> StoreResult<Vec<String>> {
    let rows = sqlx::query(sql).bind(key).fetch_all(&mut *conn).await?;
    rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
}

/// Writes one history row per top-level field that differs; returns their names.
async fn record_changes(
    conn: &mut AnyConnection,
    actor: &Actor,
    id: &str,
    before: &CustomerDetails,
    after: &CustomerDetails,
) -> StoreResult<Vec<String>> {
    let (Value::Object(old), Value::Object(new)) = (
        serde_json::to_value(before).expect("details serialise"),
        serde_json::to_value(after).expect("details serialise"),
    ) else {
        unreachable!("CustomerDetails serialises to an object");
    };
    let now = Timestamp::now().millis();
    let mut changed = Vec::new();
    for (field, new_value) in &new {
        let old_value = old.get(field).unwrap_or(&Value::Null);
        if old_value != new_value {
            insert_history(
                conn,
                id,
                field,
                Some(old_value),
                Some(new_value),
                &actor.label(),
                now,
            )
            .await?;
            changed.push(field.clone());
        }
    }
    Ok(changed)
}

pub(crate) async fn insert_history(
    conn: &mut AnyConnection,
    id: &str,
    field: &str,
    old: Option<&Value>,
    new: Option<&Value>,
    by: &str,
    at: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO customer_history (id, customer_id, field, old_value, new_value, changed_by, changed_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(new_id())
    .bind(id)
    .bind(field)
    .bind(old.map(Value::to_string))
    .bind(new.map(Value::to_string))
    .bind(by)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(crate) async fn insert_consent(
    conn: &mut AnyConnection,
    actor: &Actor,
    id: &str,
    change: &ConsentChange,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO consents (id, customer_id, purpose, granted, method, note, recorded_by, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(new_id())
    .bind(id)
    .bind(change.purpose.as_str())
    .bind(i64::from(change.granted))
    .bind(change.method.as_str())
    .bind(change.note.as_ref().map(ShortText::as_str))
    .bind(actor.label())
    .bind(Timestamp::now().millis())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Replaces the record's fields and lists with `d`.
async fn write_details(conn: &mut AnyConnection, id: &str, d: &CustomerDetails) -> StoreResult<()> {
    let text = |t: &Option<ShortText>| t.as_ref().map(|t| t.as_str().to_string());
    sqlx::query(
        "UPDATE customers SET title = $1, given_name = $2, family_name = $3, name_key = $4, \
         date_of_birth = $5, preferred_channel = $6, language = $7, accessibility_needs = $8, \
         updated_at = $9 WHERE id = $10",
    )
    .bind(text(&d.title))
    .bind(text(&d.given_name))
    .bind(text(&d.family_name))
    .bind(d.name_key())
    .bind(d.date_of_birth.map(|x| x.to_string()))
    .bind(d.preferred_channel.map(|c| c.as_str()))
    .bind(text(&d.language))
    .bind(d.accessibility_needs.as_ref().map(LongText::as_str))
    .bind(Timestamp::now().millis())
    .bind(id)
    .execute(&mut *conn)
    .await?;
    for table in [
        "customer_phones",
        "customer_emails",
        "customer_addresses",
        "customer_representatives",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE customer_id = $1"
        )))
        .bind(id)
        .execute(&mut *conn)
        .await?;
    }
    insert_lists(conn, id, d).await
}

/// A record's phones, emails, addresses and representatives, in order.
async fn insert_lists(conn: &mut AnyConnection, id: &str, d: &CustomerDetails) -> StoreResult<()> {
    let text = |t: &Option<ShortText>| t.as_ref().map(|t| t.as_str().to_string());
    insert_strings(
        conn,
        "INSERT INTO customer_phones (customer_id, position, e164) VALUES ($1, $2, $3)",
        id,
        d.phones.iter().map(PhoneNumber::as_str),
    )
    .await?;
    insert_strings(
        conn,
        "INSERT INTO customer_emails (customer_id, position, address) VALUES ($1, $2, $3)",
        id,
        d.emails.iter().map(EmailAddress::as_str),
    )
    .await?;
    for (i, a) in d.addresses.iter().enumerate() {
        sqlx::query(
            "INSERT INTO customer_addresses (customer_id, position, line1, line2, town, postcode, uprn) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(i as i64)
        .bind(a.line1.as_str())
        .bind(text(&a.line2))
        .bind(text(&a.town))
        .bind(a.postcode.as_str())
        .bind(a.uprn.as_ref().map(Uprn::as_str))
        .execute(&mut *conn)
        .await?;
    }
    for (i, r) in d.representatives.iter().enumerate() {
        let services: Vec<&str> = r.services.iter().map(ServiceCode::as_str).collect();
        sqlx::query(
            "INSERT INTO customer_representatives \
             (customer_id, position, name, kind, phone, email, scope_services, valid_until) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(i as i64)
        .bind(r.name.as_str())
        .bind(r.kind.as_str())
        .bind(r.phone.as_ref().map(PhoneNumber::as_str))
        .bind(r.email.as_ref().map(EmailAddress::as_str))
        .bind(services.join(","))
        .bind(r.valid_until.map(|x| x.to_string()))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Writes one row per value of a single-column list, numbered by position.
async fn insert_strings(
    conn: &mut AnyConnection,
    sql: &'static str,
    id: &str,
    values: impl Iterator<Item = &str>,
) -> StoreResult<()> {
    for (position, value) in values.enumerate() {
        sqlx::query(sql)
            .bind(id)
            .bind(position as i64)
            .bind(value)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Reads a single-column list (selected `AS v`).
async fn read_strings(
    conn: &mut AnyConnection,
    sql: &'static str,
    id: &str,
) -> StoreResult<Vec<String>> {
    let rows = sqlx::query(sql).bind(id).fetch_all(&mut *conn).await?;
    rows.iter().map(|r| Ok(r.try_get("v")?)).collect()
}

fn short(s: &str) -> Result<ShortText, String> {
    Ok(ShortText::from_stored(s.to_string()))
}

pub(crate) async fn read(conn: &mut AnyConnection, id: &str) -> StoreResult<Customer> {
    let row = sqlx::query(
        "SELECT id, title, given_name, family_name, date_of_birth, preferred_channel, language, \
         accessibility_needs, merged_into, created_at, updated_at FROM customers WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)?;

    let phones = read_strings(
        conn,
        "SELECT e164 AS v FROM customer_phones WHERE customer_id = $1 ORDER BY position",
        id,
    )
    .await?
    .into_iter()
    .map(PhoneNumber::from_stored)
    .collect();
    let emails = read_strings(
        conn,
        "SELECT address AS v FROM customer_emails WHERE customer_id = $1 ORDER BY position",
        id,
    )
    .await?
    .into_iter()
    .map(EmailAddress::from_stored)
    .collect();
    let addresses = sqlx::query(
        "SELECT line1, line2, town, postcode, uprn FROM customer_addresses \
         WHERE customer_id = $1 ORDER BY position",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        Ok(Address {
            line1: parsed(r, "line1", short)?,
            line2: parsed_opt(r, "line2", short)?,
            town: parsed_opt(r, "town", short)?,
            postcode: Postcode::from_stored(r.try_get("postcode")?),
            uprn: r
                .try_get::<Option<String>, _>("uprn")?
                .map(Uprn::from_stored),
        })
    })
    .collect::<StoreResult<Vec<_>>>()?;
    let representatives = sqlx::query(
        "SELECT name, kind, phone, email, scope_services, valid_until FROM customer_representatives \
         WHERE customer_id = $1 ORDER BY position",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        let scope: String = r.try_get("scope_services")?;
        Ok(Representative {
            name: parsed(r, "name", short)?,
            kind: parsed(r, "kind", str::parse)?,
            phone: r.try_get::<Option<String>, _>("phone")?.map(PhoneNumber::from_stored),
            email: r.try_get::<Option<String>, _>("email")?.map(EmailAddress::from_stored),
            services: scope
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| ServiceCode::parse(s).map_err(|e| StoreError::Corrupt(e.to_string())))
                .collect::<StoreResult<_>>()?,
            valid_until: parsed_opt(r, "valid_until", CalendarDate::parse)?,
        })
    })
    .collect::<StoreResult<Vec<_>>>()?;

    let details = CustomerDetails {
        title: parsed_opt(&row, "title", short)?,
        given_name: parsed_opt(&row, "given_name", short)?,
        family_name: parsed_opt(&row, "family_name", short)?,
        date_of_birth: parsed_opt(&row, "date_of_birth", CalendarDate::parse)?,
        addresses,
        phones,
        emails,
        preferred_channel: parsed_opt(&row, "preferred_channel", str::parse)?,
        language: parsed_opt(&row, "language", short)?,
        accessibility_needs: parsed_opt(&row, "accessibility_needs", |s| {
            Ok::<_, String>(LongText::from_stored(s.to_string()))
        })?,
        representatives,
    };
    Ok(Customer {
        id: row.try_get("id")?,
        details,
        consents: current_consents(conn, id).await?,
        sms_opted_out: read_strings(
            conn,
            "SELECT p.e164 AS v FROM customer_phones p JOIN sms_suppressions s ON s.number = p.e164 \
             WHERE p.customer_id = $1 AND s.suppressed = 1 ORDER BY p.position",
            id,
        )
        .await?
        .into_iter()
        .map(PhoneNumber::from_stored)
        .collect(),
        merged_into: row.try_get("merged_into")?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
        updated_at: Timestamp::from_millis(row.try_get("updated_at")?),
    })
}

/// The latest consent row per purpose.
async fn current_consents(conn: &mut AnyConnection, id: &str) -> StoreResult<Vec<Consent>> {
    let rows = sqlx::query(
        "SELECT purpose, granted, method, note, recorded_by, at FROM consents \
         WHERE customer_id = $1 ORDER BY at DESC, id DESC",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let mut current: Vec<Consent> = Vec::new();
    for r in &rows {
        let purpose = parsed(r, "purpose", str::parse)?;
        if current.iter().any(|c| c.purpose == purpose) {
            continue;
        }
        current.push(Consent {
            purpose,
            granted: super::flag(r, "granted")?,
            method: parsed(r, "method", str::parse)?,
            note: r.try_get("note")?,
            recorded_by: r.try_get("recorded_by")?,
            at: Timestamp::from_millis(r.try_get("at")?),
        });
    }
    current.sort_by_key(|c| c.purpose.as_str());
    Ok(current)
}

/// Escapes LIKE's wildcards in user input so `%` searches for a percent sign.
fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}
