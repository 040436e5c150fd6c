//! Advisors, their SIP credentials (as HA1, never the password) and where their phones
//! are registered. Times of registrations come from the caller's clock, so a test can
//! let a registration expire without waiting.

use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;

use super::audit::{self, Action, Entity};
use super::{Store, StoreError, StoreResult, new_id};
use crate::domain::{Actor, Timestamp};

/// An advisor as supervisors see them, with the devices registered now.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Advisor {
    pub id: String,
    pub name: String,
    /// The username the advisor's phones register with.
    pub sip_username: String,
    /// `SHA-256`, or `MD5` for older phones.
    pub digest_algorithm: String,
    /// Service codes whose queues this advisor answers.
    pub skills: Vec<String>,
    pub created_at: Timestamp,
    pub credential_set_at: Timestamp,
    /// Registered devices whose registration has not expired.
    pub devices: Vec<Device>,
}

/// One registered phone.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Device {
    pub contact: String,
    /// The address its REGISTER came from (where it is reached).
    pub source: String,
    /// `udp` or `tcp`.
    pub transport: String,
    pub user_agent: Option<String>,
    pub registered_at: Timestamp,
    pub expires_at: Timestamp,
    /// False once it stopped answering the daemon's checks (OPTIONS) though its
    /// registration lasts: it is not rung until it answers or registers again.
    pub answering: bool,
}

/// A new advisor's details, parsed.
pub struct NewAdvisor<'a> {
    pub name: &'a str,
    pub sip_username: &'a str,
    pub skills: &'a [String],
    pub credential: &'a SipCredential,
}

/// A credential as stored: the algorithm, the realm it was hashed for, and HA1.
pub struct SipCredential {
    pub algorithm: String,
    pub realm: String,
    pub ha1: String,
}

/// One binding to write, as the registrar asked.
pub struct BindingWrite<'a> {
    pub contact: &'a str,
    /// 0 removes it.
    pub expires_seconds: u32,
}

/// A REGISTER to apply, all of it or nothing.
pub struct RegisterWrite<'a> {
    pub username: &'a str,
    pub call_id: &'a str,
    pub cseq: u32,
    pub source: &'a str,
    pub transport: &'a str,
    pub user_agent: Option<&'a str>,
    /// None: remove every binding of the username.
    pub bindings: Option<&'a [BindingWrite<'a>]>,
    pub max_devices: usize,
    pub now: Timestamp,
}

/// Why a REGISTER was not applied.
#[derive(Debug)]
pub enum RegisterRefusal {
    UnknownUsername,
    /// Same Call-ID, CSeq not above the stored one.
    OutOfOrder,
    TooManyDevices,
    Store(StoreError),
}

impl From<sqlx::Error> for RegisterRefusal {
    fn from(e: sqlx::Error) -> Self {
        RegisterRefusal::Store(e.into())
    }
}

impl From<StoreError> for RegisterRefusal {
    fn from(e: StoreError) -> Self {
        RegisterRefusal::Store(e)
    }
}

const COLUMNS: &str =
    "id, name, sip_username, digest_algorithm, skills, created_at, credential_set_at";

impl Store {
    pub async fn add_advisor(&self, actor: &Actor, new: &NewAdvisor<'_>) -> StoreResult<Advisor> {
        let id = new_id();
        let now = Timestamp::now().millis();
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "INSERT INTO advisors (id, name, sip_username, digest_algorithm, ha1, realm, skills, created_at, credential_set_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (sip_username) DO NOTHING",
        )
        .bind(&id)
        .bind(new.name)
        .bind(new.sip_username)
        .bind(&new.credential.algorithm)
        .bind(&new.credential.ha1)
        .bind(&new.credential.realm)
        .bind(new.skills.join(","))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "the SIP username {:?} is taken",
                new.sip_username
            )));
        }
        let detail = format!(
            "sip_username={} algorithm={}",
            new.sip_username, new.credential.algorithm
        );
        audit::record(
            &mut tx,
            actor,
            Action::Create,
            Entity::Advisor,
            &id,
            Some(&detail),
        )
        .await?;
        tx.commit().await?;
        self.advisor(&id, Timestamp::now()).await
    }

    /// Replaces an advisor's credential (rotation, or a move between algorithms).
    pub async fn set_advisor_credential(
        &self,
        actor: &Actor,
        id: &str,
        credential: &SipCredential,
    ) -> StoreResult<Advisor> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE advisors SET digest_algorithm = $1, ha1 = $2, realm = $3, credential_set_at = $4 WHERE id = $5",
        )
        .bind(&credential.algorithm)
        .bind(&credential.ha1)
        .bind(&credential.realm)
        .bind(Timestamp::now().millis())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        let detail = format!("credential rotated, algorithm={}", credential.algorithm);
        audit::record(
            &mut tx,
            actor,
            Action::Update,
            Entity::Advisor,
            id,
            Some(&detail),
        )
        .await?;
        tx.commit().await?;
        self.advisor(id, Timestamp::now()).await
    }

    /// The id of the advisor with this SIP username.
    pub async fn advisor_id_by_username(&self, username: &str) -> StoreResult<String> {
        sqlx::query("SELECT id FROM advisors WHERE sip_username = $1")
            .bind(username)
            .fetch_optional(self.pool())
            .await?
            .map(|r| r.try_get("id"))
            .transpose()?
            .ok_or(StoreError::NotFound)
    }

    /// The credential phones of `username` must prove.
    pub async fn sip_credential(&self, username: &str) -> StoreResult<Option<SipCredential>> {
        let row = sqlx::query(
            "SELECT digest_algorithm, ha1, realm FROM advisors WHERE sip_username = $1",
        )
        .bind(username)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(SipCredential {
                algorithm: r.try_get("digest_algorithm")?,
                ha1: r.try_get("ha1")?,
                realm: r.try_get("realm")?,
            })
        })
        .transpose()
    }

    /// Applies a REGISTER (RFC 3261 §10.3 steps 6–8) in one transaction and returns
    /// the contacts bound now with their expiry.
    pub async fn register_sip(
        &self,
        r: &RegisterWrite<'_>,
    ) -> Result<Vec<(String, Timestamp)>, RegisterRefusal> {
        let mut tx = self.begin().await?;
        let advisor: String = sqlx::query("SELECT id FROM advisors WHERE sip_username = $1")
            .bind(r.username)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(RegisterRefusal::UnknownUsername)?
            .try_get("id")?;
        let now = r.now.millis();
        sqlx::query("DELETE FROM sip_registrations WHERE advisor_id = $1 AND expires_at <= $2")
            .bind(&advisor)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        match r.bindings {
            None => {
                // RFC 3261 §10.3 step 6: `*` removes every binding, unless one was
                // made by this Call-ID with a higher CSeq.
                let newer = sqlx::query(
                    "SELECT 1 FROM sip_registrations WHERE advisor_id = $1 AND call_id = $2 AND cseq >= $3",
                )
                .bind(&advisor)
                .bind(r.call_id)
                .bind(i64::from(r.cseq))
                .fetch_optional(&mut *tx)
                .await?;
                if newer.is_some() {
                    return Err(RegisterRefusal::OutOfOrder);
                }
                sqlx::query("DELETE FROM sip_registrations WHERE advisor_id = $1")
                    .bind(&advisor)
                    .execute(&mut *tx)
                    .await?;
            }
            Some(bindings) => {
                for b in bindings {
                    let existing = sqlx::query(
                        "SELECT call_id, cseq FROM sip_registrations WHERE advisor_id = $1 AND contact = $2",
                    )
                    .bind(&advisor)
                    .bind(b.contact)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(row) = existing {
                        let call_id: String = row.try_get("call_id")?;
                        let cseq: i64 = row.try_get("cseq")?;
                        if call_id == r.call_id && i64::from(r.cseq) <= cseq {
                            return Err(RegisterRefusal::OutOfOrder);
                        }
                    }
                    if b.expires_seconds == 0 {
                        sqlx::query(
                            "DELETE FROM sip_registrations WHERE advisor_id = $1 AND contact = $2",
                        )
                        .bind(&advisor)
                        .bind(b.contact)
                        .execute(&mut *tx)
                        .await?;
                        continue;
                    }
                    let expires = now + i64::from(b.expires_seconds) * 1000;
                    sqlx::query(
                        "INSERT INTO sip_registrations (advisor_id, contact, source, transport, call_id, cseq, user_agent, registered_at, expires_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                         ON CONFLICT (advisor_id, contact) DO UPDATE SET source = excluded.source, \
                         transport = excluded.transport, call_id = excluded.call_id, cseq = excluded.cseq, \
                         user_agent = excluded.user_agent, registered_at = excluded.registered_at, \
                         expires_at = excluded.expires_at",
                    )
                    .bind(&advisor)
                    .bind(b.contact)
                    .bind(r.source)
                    .bind(r.transport)
                    .bind(r.call_id)
                    .bind(i64::from(r.cseq))
                    .bind(r.user_agent)
                    .bind(now)
                    .bind(expires)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        let rows = sqlx::query(
            "SELECT contact, expires_at FROM sip_registrations WHERE advisor_id = $1 ORDER BY registered_at, contact",
        )
        .bind(&advisor)
        .fetch_all(&mut *tx)
        .await?;
        if rows.len() > r.max_devices {
            // Dropping the transaction undoes this REGISTER's changes.
            return Err(RegisterRefusal::TooManyDevices);
        }
        let bound = rows
            .iter()
            .map(|row| {
                Ok((
                    row.try_get::<String, _>("contact")?,
                    Timestamp::from_millis(row.try_get("expires_at")?),
                ))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        tx.commit().await?;
        Ok(bound)
    }

    /// Every advisor, with the devices registered at `now`.
    /// Every advisor with their phones registered at `now`: two queries, however
    /// many advisors (queues read this for every caller waiting).
    pub async fn advisors(&self, now: Timestamp) -> StoreResult<Vec<Advisor>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM advisors ORDER BY name, id"
        )))
        .fetch_all(self.pool())
        .await?;
        let mut advisors = rows
            .iter()
            .map(advisor_of)
            .collect::<StoreResult<Vec<_>>>()?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT advisor_id, {DEVICE_COLUMNS} FROM sip_registrations \
             WHERE expires_at > $1 ORDER BY registered_at, contact"
        )))
        .bind(now.millis())
        .fetch_all(self.pool())
        .await?;
        let mut devices: std::collections::HashMap<String, Vec<Device>> =
            std::collections::HashMap::new();
        for r in &rows {
            devices
                .entry(r.try_get("advisor_id")?)
                .or_default()
                .push(device_of(r)?);
        }
        for a in &mut advisors {
            a.devices = devices.remove(&a.id).unwrap_or_default();
        }
        Ok(advisors)
    }

    pub async fn advisor(&self, id: &str, now: Timestamp) -> StoreResult<Advisor> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM advisors WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or(StoreError::NotFound)?;
        let mut advisor = advisor_of(&row)?;
        advisor.devices = self.devices(id, now).await?;
        Ok(advisor)
    }

    /// Records that the advisor is away since `since`, or (`None`) no longer away.
    pub async fn set_advisor_away(&self, id: &str, since: Option<Timestamp>) -> StoreResult<()> {
        sqlx::query("UPDATE advisors SET away_since = $1 WHERE id = $2")
            .bind(since.map(|t| t.millis()))
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The advisors recorded as away.
    pub async fn advisors_away(&self) -> StoreResult<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM advisors WHERE away_since IS NOT NULL")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| r.try_get("id").map_err(Into::into))
            .collect()
    }

    async fn devices(&self, advisor_id: &str, now: Timestamp) -> StoreResult<Vec<Device>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DEVICE_COLUMNS} FROM sip_registrations \
             WHERE advisor_id = $1 AND expires_at > $2 ORDER BY registered_at, contact"
        )))
        .bind(advisor_id)
        .bind(now.millis())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(device_of).collect()
    }
}

const DEVICE_COLUMNS: &str = "contact, source, transport, user_agent, registered_at, expires_at";

fn device_of(r: &sqlx::any::AnyRow) -> StoreResult<Device> {
    Ok(Device {
        contact: r.try_get("contact")?,
        source: r.try_get("source")?,
        transport: r.try_get("transport")?,
        user_agent: r.try_get("user_agent")?,
        registered_at: Timestamp::from_millis(r.try_get("registered_at")?),
        expires_at: Timestamp::from_millis(r.try_get("expires_at")?),
        // Known to the daemon, not the database (see advisors::Advisors).
        answering: true,
    })
}

fn advisor_of(r: &sqlx::any::AnyRow) -> StoreResult<Advisor> {
    let skills: String = r.try_get("skills")?;
    Ok(Advisor {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        sip_username: r.try_get("sip_username")?,
        digest_algorithm: r.try_get("digest_algorithm")?,
        skills: skills
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        created_at: Timestamp::from_millis(r.try_get("created_at")?),
        credential_set_at: Timestamp::from_millis(r.try_get("credential_set_at")?),
        devices: Vec::new(),
    })
}
