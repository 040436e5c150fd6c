//! Start-up and the serving loop: connect and migrate the store, sync the catalogue,
//! bind the listener, tell systemd we are ready, serve until shutdown, then drain
//! in-flight requests for at most the grace period.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::configuration::{Settings, redact};
use crate::intake::Intake;
use crate::scheduler::{SchedulerError, SchedulerLink};
use crate::store::{Store, StoreError};
use crate::telemetry;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("database.url: cannot use {url}: {source}")]
    Database { url: String, source: StoreError },
    #[error("data_dir: cannot create {dir}: {source}")]
    DataDir { dir: String, source: std::io::Error },
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error("http.listen: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Connects to the configured database and brings its schema up to date.
pub async fn open_store(settings: &Settings) -> Result<Store, StartupError> {
    let fail = |source| StartupError::Database {
        url: redact(settings.database.url.expose()),
        source,
    };
    let store = Store::connect(&settings.database).await.map_err(fail)?;
    store.migrate().await.map_err(fail)?;
    store
        .sync_services(&settings.services)
        .await
        .map_err(fail)?;
    Ok(store)
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
    settings: Settings,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Application, StartupError> {
        std::fs::create_dir_all(&settings.data_dir).map_err(|source| StartupError::DataDir {
            dir: settings.data_dir.display().to_string(),
            source,
        })?;
        let store = open_store(&settings).await?;
        let redis = match settings.scheduler.redis_url.get() {
            Some(url) => {
                let link = SchedulerLink::connect(url).await?;
                tracing::info!(url = %redact(url.as_str()), "scheduler: redis");
                Some(link)
            }
            None => {
                tracing::info!("scheduler: embedded (on the database); no redis_url configured");
                None
            }
        };
        let listener = TcpListener::bind(settings.http.listen)
            .await
            .map_err(|source| StartupError::Bind {
                addr: settings.http.listen,
                source,
            })?;
        let state = AppState {
            intake: Intake::new(store.clone(), settings.intake.default_service.clone()),
            store,
            metrics: telemetry::metrics_handle(),
            redis,
            shutdown: CancellationToken::new(),
        };
        Ok(Application {
            listener,
            state,
            settings,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Cancelling this token starts a graceful shutdown (signals cancel it too).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.state.shutdown.clone()
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    pub fn intake(&self) -> &Intake {
        &self.state.intake
    }

    /// Serves until the shutdown token is cancelled, then gives in-flight requests the
    /// grace period to finish. Returns once everything is closed.
    pub async fn run_until_stopped(self) -> Result<(), StartupError> {
        let token = self.state.shutdown.clone();
        let addr = self.local_addr();
        let store = self.state.store.clone();
        let grace = self.settings.grace_period();
        let router = api::router(
            self.state,
            self.settings.http.max_body_bytes,
            Duration::from_secs(self.settings.http.request_timeout_seconds),
        );
        let server = axum::serve(
            self.listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(token.clone().cancelled_owned());
        let mut server = tokio::spawn(async move { server.await });

        tracing::info!(backend = ?store.backend(), "http listening on {addr}");
        systemd_ready(token.clone());

        tokio::select! {
            result = &mut server => {
                // The server stopped by itself: only an I/O failure does that.
                if let Ok(Err(e)) = result {
                    tracing::error!(error = %e, "http server failed");
                }
            }
            _ = token.cancelled() => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
                match tokio::time::timeout(grace, &mut server).await {
                    Ok(_) => tracing::info!("in-flight requests finished"),
                    Err(_) => {
                        tracing::warn!(grace_seconds = grace.as_secs(), "grace period over; closing remaining connections");
                        server.abort();
                    }
                }
            }
        }
        store.close().await;
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// READY=1 once listening; WATCHDOG=1 at half the watchdog interval while the runtime
/// is alive. Without NOTIFY_SOCKET (not under systemd) these do nothing.
fn systemd_ready(token: CancellationToken) {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
    if let Some(interval) = sd_notify::watchdog_enabled() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval / 2);
            loop {
                tokio::select! {
                    _ = tick.tick() => { let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]); }
                    _ = token.cancelled() => return,
                }
            }
        });
    }
}

/// `contactd serve`: signals wired, run to completion.
pub async fn serve(settings: Settings) -> Result<(), StartupError> {
    let app = Application::build(settings).await?;
    crate::shutdown::cancel_on_signals(app.shutdown_token()).map_err(StartupError::Signals)?;
    app.run_until_stopped().await
}
