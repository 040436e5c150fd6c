//! The store: one repository layer over sqlx's `Any` driver, two backends (SQLite, the
//! embedded default; PostgreSQL, for several daemons sharing one database).
//!
//! - [`customers`]: the central record, its children, consents and history
//! - [`requests`]: service requests, reference numbers and timelines
//! - [`recordings`]: call recordings' metadata, expiry and legal hold; [`call_legs`]:
//!   each call's legs with advisors, read with its recording
//! - [`contacts`]: inbound contacts, idempotent on (channel, external id)
//! - [`messages`]: every message sent and received (the outbox), opted-out numbers
//! - [`mail`], [`attachments`]: received mail's originals, positions and attachments
//! - [`schedule`]: what the scheduler is rebuilt from, and sends begun under a fence
//! - [`appointments`], [`subscriptions`]: what reminders are of
//! - [`staff`]: staff users and their API tokens
//! - [`services`]: the service catalogue, seeded from configuration
//! - [`secrets`]: keys the hub makes once (the reply-token key)
//! - [`audit`]: the append-only audit log
//!
//! Rules that hold both backends together (see ARCHITECTURE.md): column types BIGINT,
//! INTEGER, TEXT only; times are epoch milliseconds set here; `$n` placeholders; every
//! write transaction starts with a write, so SQLite takes its write lock up front
//! (waiting on busy_timeout) instead of failing to upgrade a read snapshot.
//!
//! Functions that must run inside a caller's transaction take `&mut AnyConnection`;
//! `Store` methods own their transaction.

pub mod advisors;
pub mod appointments;
pub mod attachments;
pub mod audit;
pub mod call_legs;
pub mod callbacks;
pub mod contacts;
pub mod customers;
pub mod mail;
pub mod messages;
pub mod recordings;
pub mod requests;
pub mod schedule;
pub mod secrets;
pub mod services;
pub mod staff;
pub mod subscriptions;

use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Executor, Row};

use crate::configuration::{Backend, DatabaseSettings};
use crate::domain::Actor;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    /// The actor may not see this (special category data without the right role).
    #[error("restricted")]
    Restricted,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored value is not valid: {0}")]
    Corrupt(String),
    /// A failure shared by several callers (a group commit that did not commit).
    #[error("database error: {0}")]
    Failed(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite admits one writer at a time and makes the others wait in its busy
    /// handler, which sleeps in growing steps: under load a writer could wait seconds.
    /// Taking turns here first makes writers queue in order, without sleeping.
    write_turn: Option<Arc<tokio::sync::Mutex<()>>>,
}

/// A write transaction (holding this process's SQLite write turn, where there is one).
/// Dereferences to the connection, so store functions take it as `&mut AnyConnection`.
pub struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WriteTx {
    pub async fn commit(self) -> StoreResult<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

impl std::ops::Deref for WriteTx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

impl Store {
    /// Connects (creating an SQLite file and its directory if needed). An unreachable
    /// database is an error naming the (redacted) URL.
    pub async fn connect(settings: &DatabaseSettings) -> StoreResult<Store> {
        sqlx::any::install_default_drivers();
        let backend = settings.url.backend();
        let mut url = settings.url.expose().to_string();
        if let Some(path) = settings.url.sqlite_path() {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Conflict(format!("cannot create {}: {e}", dir.display()))
                })?;
            }
            if !url.contains("mode=") {
                url.push_str(if url.contains('?') {
                    "&mode=rwc"
                } else {
                    "?mode=rwc"
                });
            }
        }
        let options: AnyConnectOptions = url.parse()?;
        let pool = AnyPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_secs(settings.connect_timeout_seconds))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the one writer; synchronous=FULL
                        // makes a commit survive power loss, since a contact is
                        // acknowledged to its sender once committed; busy_timeout makes
                        // writers queue rather than fail; foreign keys are off unless asked.
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                             PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                        )
                        .await?;
                    } else {
                        // An instance that stalls (stopped, starved) inside a
                        // transaction would hold its row locks, and every other
                        // instance's outbox with them: the server ends such a session.
                        // Our transactions do no waiting of their own, so 10 s idle
                        // inside one means the client is gone.
                        conn.execute("SET idle_in_transaction_session_timeout = '10s'")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let write_turn =
            (backend == Backend::Sqlite).then(|| Arc::new(tokio::sync::Mutex::new(())));
        Ok(Store {
            pool,
            backend,
            write_turn,
        })
    }

    pub async fn migrate(&self) -> StoreResult<()> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// For readiness: the database answers a query.
    pub async fn ping(&self) -> StoreResult<()> {
        let row = sqlx::query("SELECT 1").fetch_one(&self.pool).await?;
        let one: i64 = row
            .try_get(0)
            .or_else(|_| row.try_get::<i32, _>(0).map(i64::from))?;
        if one == 1 {
            Ok(())
        } else {
            Err(StoreError::Corrupt("SELECT 1 did not return 1".into()))
        }
    }

    /// Begins a write transaction. Never call this while holding another.
    pub async fn begin(&self) -> StoreResult<WriteTx> {
        let turn = match &self.write_turn {
            Some(turn) => Some(turn.clone().lock_owned().await),
            None => None,
        };
        Ok(WriteTx {
            tx: self.pool.begin().await?,
            _turn: turn,
        })
    }

    /// Appends one audit entry in a transaction of its own (for reads).
    pub async fn audit(
        &self,
        actor: &Actor,
        action: audit::Action,
        entity: audit::Entity,
        entity_id: &str,
        detail: Option<&str>,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        audit::record(&mut tx, actor, action, entity, entity_id, detail).await?;
        tx.commit().await
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A fresh, time-ordered id: rows sort by creation when ordered by id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Reads an INTEGER column holding 0/1 as a bool (SQLite hands back integers where
/// Rust asks for bool, so booleans are stored and read as integers on both backends).
pub(crate) fn flag(row: &sqlx::any::AnyRow, column: &str) -> StoreResult<bool> {
    Ok(row.try_get::<i64, _>(column)? != 0)
}

/// Reads a nullable epoch-milliseconds column.
pub(crate) fn timestamp_opt(
    row: &sqlx::any::AnyRow,
    column: &str,
) -> StoreResult<Option<crate::domain::Timestamp>> {
    Ok(row
        .try_get::<Option<i64>, _>(column)?
        .map(crate::domain::Timestamp::from_millis))
}

/// Parses a stored text column into a domain type, reporting a corrupt row rather
/// than panicking if someone edited the database by hand.
pub(crate) fn parsed<T, E: std::fmt::Display>(
    row: &sqlx::any::AnyRow,
    column: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> StoreResult<T> {
    let s: String = row.try_get(column)?;
    parse(&s).map_err(|e| StoreError::Corrupt(format!("{column} = {s:?}: {e}")))
}

pub(crate) fn parsed_opt<T, E: std::fmt::Display>(
    row: &sqlx::any::AnyRow,
    column: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> StoreResult<Option<T>> {
    let s: Option<String> = row.try_get(column)?;
    s.map(|s| parse(&s).map_err(|e| StoreError::Corrupt(format!("{column} = {s:?}: {e}"))))
        .transpose()
}

/// Serialises PostgreSQL transactions that would otherwise race to create the same
/// thing (two first contacts from one new number must not make two records). SQLite
/// needs nothing: a write transaction there already excludes every other writer.
pub(crate) async fn lock_key(
    conn: &mut AnyConnection,
    backend: Backend,
    key: &str,
) -> StoreResult<()> {
    if backend == Backend::Postgres {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(key.as_bytes());
        let id = i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
        sqlx::query("SELECT CAST(1 AS BIGINT) FROM (SELECT pg_advisory_xact_lock($1)) AS l")
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
    }
    Ok(())
}
