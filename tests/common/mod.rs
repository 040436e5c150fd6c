//! `spawn_app()`: the real daemon on a random port, against a fresh database — a new
//! SQLite file, or a new PostgreSQL database — with one staff token per role.
#![allow(dead_code)]

pub mod daemon;
pub mod dns;
pub mod email;
pub mod imap;
pub mod notify;
pub mod raw_sip;
pub mod sipp;
pub mod tls;
pub mod twilio;

use std::collections::HashMap;
use std::net::SocketAddr;

use contactd::configuration::{Backend, DatabaseUrl, Settings};
use contactd::domain::Role;
use contactd::startup::Application;
use contactd::store::Store;
use serde_json::Value;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

/// A message committed to the outbox and due at `due`, as a cause (a reminder, an
/// acknowledgement) leaves it: its id.
pub async fn queue_pending(
    store: &Store,
    channel: contactd::domain::Channel,
    address: &str,
    subject: Option<&str>,
    body: &str,
    due: contactd::domain::Timestamp,
) -> String {
    use contactd::domain::message::{Direction, MessagePurpose, status};
    let mut tx = store.begin().await.unwrap();
    let id = contactd::store::messages::insert(
        &mut tx,
        &contactd::domain::Actor::System,
        &contactd::store::messages::NewMessage {
            channel,
            direction: Direction::Out,
            request_id: None,
            customer_id: None,
            contact_id: None,
            address,
            subject,
            body,
            html: None,
            purpose: MessagePurpose::Reply,
            internet_message_id: None,
            thread_ids: &[],
            thread_index: None,
            status: status::PENDING,
            status_rank: 0,
            due_at: Some(due),
            occurrence: None,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    id
}

/// The Redis the scheduler tests use, each under a key prefix of its own.
pub fn redis_url() -> url::Url {
    let url = std::env::var("CONTACTD_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_string());
    url::Url::parse(&url).expect("CONTACTD_TEST_REDIS_URL is a URL")
}

/// A Redis of the test's own, on a free port: stopped hard and started again empty
/// mid-run, as a production Redis without persistence restarts.
pub struct PrivateRedis {
    pub port: u16,
    child: std::process::Child,
}

impl PrivateRedis {
    pub fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        PrivateRedis::start_on(port)
    }

    fn start_on(port: u16) -> PrivateRedis {
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/test installs it)");
        // Ready when it answers.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start on {port}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        PrivateRedis { port, child }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Killed (SIGKILL: nothing saved) and started again on the same port, empty.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let port = self.port;
        let fresh = PrivateRedis::start_on(port);
        let old = std::mem::replace(self, fresh);
        std::mem::forget(old);
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deletes every scheduler key under `prefix`, as a Redis restarted without
/// persistence would have lost them.
pub async fn forget_redis_keys(prefix: &str) {
    let client = redis::Client::open(redis_url().as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for key in ["due", "lease", "fence", "epoch"] {
        let _: i64 = redis::cmd("DEL")
            .arg(format!("{{{prefix}}}:{key}"))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

/// The PostgreSQL server tests create their databases on (trust auth on loopback).
pub fn postgres_admin_url() -> String {
    std::env::var("CONTACTD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A database of its own for one test; dropped (forcibly) when the test ends.
pub struct TestDatabase {
    pub url: String,
    pg_name: Option<String>,
    _dir: tempfile::TempDir,
}

impl TestDatabase {
    pub async fn new(backend: Backend) -> TestDatabase {
        let dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Sqlite => TestDatabase {
                url: format!("sqlite://{}", dir.path().join("contactd.db").display()),
                pg_name: None,
                _dir: dir,
            },
            Backend::Postgres => {
                let name = format!("contactd_test_{}", uuid::Uuid::new_v4().simple());
                let admin = postgres_admin_url();
                let mut conn = connect_admin(&admin).await;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let base = admin.rsplit_once('/').expect("url has a database").0;
                TestDatabase {
                    url: format!("{base}/{name}"),
                    pg_name: Some(name),
                    _dir: dir,
                }
            }
        }
    }
}

async fn connect_admin(url: &str) -> sqlx::AnyConnection {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(url).await.unwrap_or_else(|e| {
        panic!("PostgreSQL is required for these tests and is not reachable at {url}: {e} (scripts/test starts it)")
    })
}

impl TestDatabase {
    /// A scratch directory that lives as long as the database.
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            let admin = postgres_admin_url();
            // Drop runs inside the test's runtime; a thread with its own runtime can block.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let mut conn = connect_admin(&admin).await;
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                });
            })
            .join();
        }
    }
}

/// Settings for a test: embedded defaults, a random port, the given database.
pub fn test_settings(db: &TestDatabase) -> Settings {
    let mut settings = Settings::load(None).expect("embedded defaults load");
    settings.http.listen = "127.0.0.1:0".parse().unwrap();
    settings.database.url = DatabaseUrl::parse(&db.url).unwrap();
    settings.data_dir = db.dir().join("data");
    settings.recordings.dir = db.dir().join("recordings");
    // The voice channel is off unless a test turns it on (see `spawn_app_with`).
    settings.sip.trunks = Vec::new();
    settings.shutdown.grace_seconds = 5;
    // The tests run at any hour: quiet hours only where a test sets its clock for them.
    settings.sms.quiet_hours = None;
    settings.email.quiet_hours = None;
    settings
}

/// Turns the voice channel on: UDP and TCP on random ports of 127.0.0.1, calls
/// accepted from `trunk`.
pub fn listen_for_calls(settings: &mut Settings, trunk: &str) {
    use contactd::configuration::{SipListenSetting, TrunkSetting};
    settings.sip.listen = vec![
        SipListenSetting(contactd_sip::SipListen::parse("udp:127.0.0.1:0").unwrap()),
        SipListenSetting(contactd_sip::SipListen::parse("tcp:127.0.0.1:0").unwrap()),
    ];
    settings.sip.trunks = vec![TrunkSetting(
        contactd_sip::TrunkNetwork::parse(trunk).unwrap(),
    )];
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
    pub store: Store,
    pub intake: contactd::intake::Intake,
    pub recorder: contactd::recordings::Recorder,
    pub renewals: contactd::renewals::Renewals,
    pub tokens: HashMap<Role, String>,
    /// Where the voice channel listens, when a test turned it on.
    pub sip: Vec<contactd_sip::SipListen>,
    /// Where the SMTP receiver listens, when a test turned email on.
    pub smtp: Option<SocketAddr>,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<()>>,
    pub db: TestDatabase,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// `spawn_app` with the settings adjusted first.
pub async fn spawn_app_with(backend: Backend, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with_clock(
        backend,
        std::sync::Arc::new(contactd::scheduler::SystemClock),
        adjust,
    )
    .await
}

/// `spawn_app_with`, the outbox and reminders on `clock` (a test clock, moved
/// forward instead of waited for).
pub async fn spawn_app_with_clock(
    backend: Backend,
    clock: std::sync::Arc<dyn contactd::scheduler::Clock>,
    adjust: impl FnOnce(&mut Settings),
) -> TestApp {
    let db = TestDatabase::new(backend).await;
    let mut settings = test_settings(&db);
    adjust(&mut settings);
    let app = Application::build_with_clock(settings, clock)
        .await
        .expect("daemon starts");
    let sip = app.sip_listening();
    let smtp = app.smtp_addr();
    let addr = app.local_addr();
    let store = app.store().clone();
    let intake = app.intake().clone();
    let recorder = app.recorder().clone();
    let renewals = app.renewals().clone();
    let shutdown = app.shutdown_token();
    let server = tokio::spawn(async move {
        app.run_until_stopped().await.expect("daemon runs");
    });
    let mut tokens = HashMap::new();
    for role in Role::ALL {
        let name = format!("{role}-user");
        store.add_staff_user(&name, *role).await.unwrap();
        tokens.insert(*role, store.create_token(&name).await.unwrap());
    }
    TestApp {
        addr,
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        store,
        intake,
        recorder,
        renewals,
        tokens,
        sip,
        smtp,
        shutdown,
        server: Some(server),
        db,
    }
}

impl TestApp {
    /// Where the voice channel listens on `transport`.
    pub fn sip_addr(&self, transport: contactd_sip::config::SipTransport) -> SocketAddr {
        self.sip
            .iter()
            .find(|l| l.transport == transport)
            .expect("listening")
            .addr
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn token(&self, role: Role) -> &str {
        &self.tokens[&role]
    }

    pub async fn get(&self, role: Role, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(self.url(path))
            .bearer_auth(self.token(role))
            .send()
            .await
            .unwrap();
        decode(r).await
    }

    pub async fn post(&self, role: Role, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, role, path, body).await
    }

    pub async fn patch(&self, role: Role, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::PATCH, role, path, body).await
    }

    pub async fn put(&self, role: Role, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::PUT, role, path, body).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        role: Role,
        path: &str,
        body: Value,
    ) -> (u16, Value) {
        let r = self
            .client
            .request(method, self.url(path))
            .bearer_auth(self.token(role))
            .json(&body)
            .send()
            .await
            .unwrap();
        decode(r).await
    }

    /// Rows in a table, straight from the database.
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM {table}"
        )))
        .fetch_one(self.store.pool())
        .await
        .unwrap()
        .try_get("n")
        .unwrap()
    }

    /// What `/metrics` says now (no token is configured in tests).
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// One reading of /metrics, if the daemon has recorded it.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        self.metrics()
            .await
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    }

    /// Waits (up to 30 s) until the metric `name` satisfies `wanted`: for what the
    /// daemon reports on its own time (the IMAP poller's sign-ins).
    pub async fn until_metric(&self, name: &str, wanted: impl Fn(f64) -> bool) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let got = self.metric(name).await;
            if got.is_some_and(&wanted) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} is {got:?}, not what was awaited"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Waits (up to 30 s) until `table` (with any WHERE) has `n` rows: for work the
    /// daemon does on its own time (the outbox, the IMAP poller).
    pub async fn until_count(&self, table: &str, n: i64) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let got = self.count(table).await;
            if got == n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{table}: {got} rows, expected {n}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub async fn create_customer(&self, body: Value) -> Value {
        let (status, customer) = self.post(Role::Agent, "/api/v1/customers", body).await;
        assert_eq!(status, 201, "{customer}");
        customer
    }

    /// Starts a graceful shutdown, as SIGTERM would, without waiting for it.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    pub async fn stop(mut self) {
        self.wait_stopped().await;
    }

    /// Shuts down (if not already begun) and waits until the daemon has stopped;
    /// the test's database stays for inspection.
    pub async fn wait_stopped(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn decode(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// Generates `mod NAME { sqlite, postgres }` tests running `NAME(backend)` on both.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(contactd::configuration::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(contactd::configuration::Backend::Postgres).await
                }
            }
        )*
    };
}
