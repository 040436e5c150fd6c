//! Files residents attached to their contacts: content-addressed bytes, and which
//! contact brought which file. Reading one is audited; a special-category request's
//! files are as restricted as the request.

use std::sync::Arc;

use serde::Serialize;
use sha2::Digest;
use sqlx::{AnyConnection, Row};
use utoipa::ToSchema;

use super::audit::{Action, Entity};
use super::requests::{self, SpecialCategoryAccess};
use super::{Store, StoreError, StoreResult, new_id};
use crate::domain::{Actor, Reference, Timestamp};

/// A file as a channel hands it to intake.
#[derive(Debug, Clone)]
pub struct NewAttachment {
    pub name: String,
    pub content_type: String,
    pub bytes: Arc<[u8]>,
}

/// An attachment as staff see it listed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Attachment {
    pub id: String,
    pub contact_id: String,
    pub name: String,
    pub content_type: String,
    pub size_bytes: i64,
    pub sha256: String,
    pub created_at: Timestamp,
}

/// Stores a contact's attachment, in the contact's transaction.
pub async fn insert(
    conn: &mut AnyConnection,
    contact_id: &str,
    a: &NewAttachment,
) -> StoreResult<String> {
    let sha = hex::encode(sha2::Sha256::digest(&a.bytes));
    sqlx::query(
        "INSERT INTO attachment_blobs (sha256, size_bytes, bytes) VALUES ($1, $2, $3) ON CONFLICT (sha256) DO NOTHING",
    )
    .bind(&sha)
    .bind(a.bytes.len() as i64)
    .bind(a.bytes.to_vec())
    .execute(&mut *conn)
    .await?;
    let id = new_id();
    sqlx::query(
        "INSERT INTO attachments (id, contact_id, name, content_type, size_bytes, sha256, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&id)
    .bind(contact_id)
    .bind(&a.name)
    .bind(&a.content_type)
    .bind(a.bytes.len() as i64)
    .bind(&sha)
    .bind(Timestamp::now().millis())
    .execute(&mut *conn)
    .await?;
    Ok(id)
}

fn from_row(r: &sqlx::any::AnyRow) -> StoreResult<Attachment> {
    Ok(Attachment {
        id: r.try_get("id")?,
        contact_id: r.try_get("contact_id")?,
        name: r.try_get("name")?,
        content_type: r.try_get("content_type")?,
        size_bytes: r.try_get("size_bytes")?,
        sha256: r.try_get("sha256")?,
        created_at: Timestamp::from_millis(r.try_get("created_at")?),
    })
}

const COLUMNS: &str =
    "a.id, a.contact_id, a.name, a.content_type, a.size_bytes, a.sha256, a.created_at";

impl Store {
    /// The files brought by a request's contacts.
    pub async fn attachments_of_request(
        &self,
        actor: &Actor,
        reference: Reference,
        access: SpecialCategoryAccess,
    ) -> StoreResult<Vec<Attachment>> {
        let request = self.get_request(actor, reference, access).await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM attachments a JOIN contacts c ON c.id = a.contact_id \
             WHERE c.request_id = $1 ORDER BY a.created_at, a.id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&request.id)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// One file and its bytes, for download: the actor must be allowed to see its
    /// request, and the download is audited.
    pub async fn attachment_for_download(
        &self,
        actor: &Actor,
        id: &str,
        access: SpecialCategoryAccess,
    ) -> StoreResult<(Attachment, Vec<u8>, Option<String>)> {
        let mut conn = self.pool().acquire().await?;
        let sql = format!(
            "SELECT {COLUMNS}, b.bytes, c.request_id FROM attachments a \
             JOIN attachment_blobs b ON b.sha256 = a.sha256 JOIN contacts c ON c.id = a.contact_id \
             WHERE a.id = $1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(StoreError::NotFound)?;
        let request_id: Option<String> = row.try_get("request_id")?;
        if let Some(request_id) = &request_id {
            let request = requests::read(&mut conn, request_id).await?;
            self.check_access(actor, &request, access).await?;
        }
        self.audit(actor, Action::Download, Entity::Attachment, id, None)
            .await?;
        Ok((from_row(&row)?, row.try_get("bytes")?, request_id))
    }
}
